"""``kubectl rollout status`` as a pure function of a Deployment and its pods (plain dicts), shared by the
synchronous platform and the async trigger path."""

from __future__ import annotations

import re
from typing import Any

from airflow_deploy_provider.platforms.base import RolloutStatus

PREFIX = "deploy.airflow.apache.org"
VERSION_ANNOTATION = f"{PREFIX}/version"  # the exact version, on Deployments and pod templates
VERSION_LABEL = f"{PREFIX}/version"  # the version as a label value, on pods
# Container states that do not heal by waiting: the rollout fails at once with the reason (the
# troubleshooting guide's first question). Others (ErrImagePull, Unschedulable) are reported and may resolve;
# the progress deadline decides.
FATAL_WAITING = {"ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff",
                 "RunContainerError"}


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63]
    return value.strip("._-") or "none"


def rollout_decision(role: str, deployment: dict[str, Any] | None, pods: list[dict[str, Any]],
                     version: str | None = None) -> RolloutStatus:
    """Observe one rollout. ``deployment`` and ``pods`` are API objects as dicts (camelCase keys)."""
    if deployment is None:
        return RolloutStatus(role=role, version=None, desired=0, ready=0, failed=True, reason="NotDeployed",
                             message=f"no {role} Deployment")
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    running = (meta.get("annotations") or {}).get(VERSION_ANNOTATION)
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    out = RolloutStatus(role=role, version=running, desired=desired, ready=ready, updated=updated,
                        available=available)
    name = meta.get("name", role)
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    stale = generation is not None and observed is not None and observed < generation
    # Conditions of a spec the controller has not seen yet belong to the previous rollout.
    for cond in [] if stale else status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            out.failed, out.reason = True, "ProgressDeadlineExceeded"
            out.message = f'deployment "{name}" exceeded its progress deadline: {cond.get("message", "")}'.strip()
            return out
    target = label_value(running) if running else None
    for pod in pods:
        pod_version = ((pod.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL)
        if target is not None and pod_version is not None and pod_version != target:
            continue  # an old version's pod on its way out
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FATAL_WAITING:
                out.failed, out.reason = True, waiting["reason"]
                out.message = f"pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message', '')}"
                return out
            if waiting.get("reason"):
                out.reason = waiting["reason"]
                out.message = f"pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message', '')}"
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                out.reason = cond.get("reason") or "Unschedulable"  # may resolve; the deadline decides
                out.message = f"pod {pod['metadata']['name']}: {out.reason}: {cond.get('message', '')}".strip()
    if stale:
        out.message = out.message or "waiting for the deployment spec update to be observed"
    elif version is not None and running != version:
        out.message = out.message or f"deployment runs {running!r}, not {version!r}"
    elif updated < desired:
        out.message = out.message or f"{updated} of {desired} new replicas updated"
    elif replicas > updated:
        out.message = out.message or f"{replicas - updated} old replicas pending termination"
    elif available < updated:
        out.message = out.message or f"{available} of {updated} updated replicas available"
    else:
        out.done = True
        out.reason = None
        out.message = f'deployment "{name}" successfully rolled out ({available}/{desired} available)'
    return out
