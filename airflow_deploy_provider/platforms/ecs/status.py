"""The rollout of an ECS service as a pure function of ``describe_services`` output and its stopped tasks,
shared by the synchronous platform and the trigger path."""

from __future__ import annotations

from typing import Any

from airflow_deploy_provider.platforms.base import RolloutStatus

VERSION_TAG = "deploy.airflow.apache.org/version"
VERSION_ENV = "DEPLOY_VERSION"
# Stopped-task reasons that do not heal by waiting: the rollout fails at once with the reason.
FATAL_STOP = ("CannotPullContainerError", "ResourceInitializationError", "CannotStartContainerError",
              "InvalidParameterException", "CannotCreateContainerError", "OutOfMemoryError")


def rollout_decision(role: str, service: dict[str, Any] | None, version: str | None,
                     stopped: list[dict[str, Any]] | None = None) -> RolloutStatus:
    """Observe one ECS service's rollout: done when its PRIMARY deployment runs the service's task definition
    with every desired task running, the deployment is ``COMPLETED`` and no other deployment is left."""
    if service is None or service.get("status") not in (None, "ACTIVE"):
        return RolloutStatus(role=role, version=None, desired=0, ready=0, failed=True, reason="NotDeployed",
                             message=f"no {role} ECS service")
    desired = int(service.get("desiredCount") or 0)
    deployments = service.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    running = int((primary or {}).get("runningCount") or 0)
    out = RolloutStatus(role=role, version=version, desired=desired, ready=running, updated=running,
                        available=running)
    name = service.get("serviceName", role)
    if primary is None or primary.get("taskDefinition") != service.get("taskDefinition"):
        out.message = f"service {name}: waiting for the deployment of {service.get('taskDefinition')}"
        return out
    if primary.get("rolloutState") == "FAILED":
        out.failed, out.reason = True, _reason_of(stopped) or "DeploymentFailed"
        out.message = f"service {name}: {primary.get('rolloutStateReason') or 'deployment failed'}" + \
            _stopped_text(stopped)
        return out
    for task in stopped or []:
        text = _task_reason(task)
        if any(text.startswith(r) or f" {r}" in text for r in FATAL_STOP):
            out.failed, out.reason = True, text.split(":", 1)[0].strip() or "TaskStopped"
            out.message = f"service {name}: task stopped: {text}"
            return out
    if running < desired:
        event = _latest_event(service)
        out.message = f"service {name}: {running} of {desired} tasks running" + (f" ({event})" if event else "")
        if event and "unable to place" in event:
            out.reason = "Unschedulable"
        elif stopped:
            out.reason = _reason_of(stopped)
            out.message += _stopped_text(stopped)
        return out
    if len(deployments) > 1:
        old = sum(int(d.get("runningCount") or 0) for d in deployments if d is not primary)
        out.message = f"service {name}: {old} task(s) of the previous deployment still running"
        return out
    if primary.get("rolloutState") not in (None, "COMPLETED"):
        out.message = f"service {name}: {primary.get('rolloutStateReason') or primary.get('rolloutState')}"
        return out
    out.done = True
    out.message = f"service {name} is stable ({running}/{desired} tasks running)"
    return out


def _task_reason(task: dict[str, Any]) -> str:
    reasons = [c.get("reason") for c in task.get("containers") or [] if c.get("reason")]
    return "; ".join(reasons) or task.get("stoppedReason") or ""


def _reason_of(stopped: list[dict[str, Any]] | None) -> str | None:
    for task in stopped or []:
        text = _task_reason(task)
        if text:
            return text.split(":", 1)[0].strip()
    return None


def _stopped_text(stopped: list[dict[str, Any]] | None) -> str:
    texts = [t for t in (_task_reason(task) for task in stopped or []) if t]
    return f"; stopped tasks: {'; '.join(dict.fromkeys(texts))}" if texts else ""


def _latest_event(service: dict[str, Any]) -> str | None:
    events = service.get("events") or []
    return events[0].get("message") if events else None
