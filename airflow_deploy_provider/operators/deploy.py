"""Operators that change what runs: deploy, wait for the rollout, promote, roll back, scale, snapshot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_deploy_provider.operators.base import PlatformOperatorBase, check_choice, wait_for
from airflow_deploy_provider.operators.lifecycle import NotifyingMixin
from airflow_deploy_provider.platforms.base import ROLES, HealthCheckSpec, WorkloadSpec

STRATEGIES = ("recreate", "rolling", "bluegreen", "canary")


def health_check_spec(health_check: dict[str, Any] | None) -> HealthCheckSpec:
    """Accept seconds or timedeltas for the durations of a health check dict."""
    data = dict(health_check or {})
    for key in ("initial_delay", "timeout", "interval"):
        if isinstance(data.get(key), timedelta):
            data[key] = data[key].total_seconds()
    return HealthCheckSpec(**data)


class DeployVersionOperator(PlatformOperatorBase):
    """
    Starts a version on the platform in a role (``stable`` or ``canary``) without waiting for it to be ready;
    pair it with :class:`WaitForRolloutOperator`. Re-running it converges: a role already running the version
    is left as it is.

    Template fields: ``deployment_id``, ``version``, ``image``.

    :param role: ``stable`` (recreate and rolling update the stable version) or ``canary`` (the canary, or
        green in blue-green).
    :param version: version to run (templated).
    :param image: image to run (templated).
    :param replicas: replicas of the role.
    :param strategy: how ``stable`` is replaced: ``recreate``, ``rolling``, ``bluegreen`` or ``canary``.
    :param replica_resources: per-replica limits and requests, Kubernetes style.
    :param health_check: ``path``, ``initial_delay``, ``timeout``, ``interval``, ``failure_threshold``.
    :param progress_deadline: seconds the rollout may take.
    :param rolling: ``max_surge`` and ``max_unavailable`` of a rolling update (counts or percents).
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "image")
    ui_color = "#fce8b2"
    expected_duration = timedelta(seconds=5)

    def __init__(self, *, role: str = "stable", version: str, image: str, replicas: int = 1,
                 strategy: str = "recreate", replica_resources: dict[str, Any] | None = None,
                 health_check: dict[str, Any] | None = None, progress_deadline: float = 600.0,
                 rolling: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "role", role, ROLES)
        check_choice(self.task_id, "strategy", strategy, STRATEGIES)
        if not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"{self.task_id}: replicas must be a positive integer; got {replicas!r}")
        self.role = role
        self.version = version
        self.image = image
        self.replicas = replicas
        self.strategy = strategy
        self.replica_resources = replica_resources
        self.health_check = health_check_spec(health_check)
        self.progress_deadline = float(progress_deadline)
        self.rolling = rolling

    def describe(self) -> str:
        what = {"stable": f"{self.strategy} update of the stable version", "canary": "new version beside stable"}
        return f"start {self.replicas} replica(s): {what[self.role]}"

    def spec(self) -> WorkloadSpec:
        return WorkloadSpec(version=self.version, image=self.image, replicas=self.replicas, strategy=self.strategy,
                            resources=self.replica_resources, health_check=self.health_check,
                            progress_deadline=self.progress_deadline, rolling=self.rolling)

    def execute(self, context: Any) -> None:
        platform = self.get_platform()
        platform.deploy(self.spec(), self.role)  # type: ignore[arg-type]
        self.record("deploy", f"{self.role} role started {self.version} ({self.image}) with {self.replicas} replica(s)",
                    data={"role": self.role, "version": self.version, "image": self.image,
                          "replicas": self.replicas, "strategy": self.strategy})


class WaitForRolloutOperator(PlatformOperatorBase):
    """
    Waits until a role's replicas are all updated, available and passing their health check, like
    ``kubectl rollout status``. The wait runs in a trigger (no worker slot held). Fails with the platform's
    reason (for example ``CrashLoopBackOff``) or when the progress deadline passes.

    :param role: ``stable`` or ``canary``.
    :param version: the version expected to be running (templated).
    :param progress_deadline: seconds before the rollout counts as failed.
    :param poll_interval: seconds between observations.
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#fce8b2"

    def __init__(self, *, role: str = "stable", version: str, progress_deadline: float = 600.0,
                 poll_interval: float = 2.0, expected_ready_after: float = 15.0, deferrable: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        check_choice(self.task_id, "role", role, ROLES)
        if progress_deadline <= 0 or poll_interval <= 0:
            raise ValueError(f"{self.task_id}: progress_deadline and poll_interval must be positive")
        self.role = role
        self.version = version
        self.progress_deadline = float(progress_deadline)
        self.poll_interval = float(poll_interval)
        self.expected_duration = timedelta(seconds=expected_ready_after)

    def describe(self) -> str:
        return f"wait until every {self.role} replica runs the new version and is healthy (deadline " \
               f"{int(self.progress_deadline)}s)"

    def execute(self, context: Any) -> None:
        self.get_platform()  # fail fast, on the worker, when the platform is not available
        return wait_for_rollout(self, context, self.role, self.version, self.progress_deadline, "execute_complete",
                                end_task=self.deferrable, poll_interval=self.poll_interval)

    def execute_complete(self, context: Any, event: dict[str, Any] | str) -> None:
        if event == "success":  # the trigger recorded readiness and ended the task
            return
        check_rollout(self, self.role, self.version, event)


def wait_for_rollout(op: Any, context: Any, role: str, version: str, progress_deadline: float, method_name: str,
                     end_task: bool = False, poll_interval: float = 2.0) -> Any:
    """Wait in a :class:`RolloutStatusTrigger` until ``role`` runs ``version`` ready, then resume the task in
    ``method_name`` (or end it from the trigger with ``end_task``)."""
    from airflow_deploy_provider.triggers.rollout import RolloutStatusTrigger

    deferrable = getattr(op, "deferrable", True)
    trigger = RolloutStatusTrigger(
        platform=op.platform, service=op.service, environment=op.environment, region=op.region, role=role,
        version=version, deadline=time.time() + progress_deadline, poll_interval=poll_interval,
        end_task=end_task and deferrable,
        ledger={"deployment_id": op.deployment_id, "ledger_conn_id": op.ledger_conn_id, "task_id": op.task_id},
    )
    return wait_for(op, trigger, method_name, context, timedelta(seconds=progress_deadline + 120), deferrable)


def check_rollout(op: Any, role: str, version: str, event: dict[str, Any] | str) -> None:
    """Fail with the platform's reason (``ImagePullBackOff``, ``ProgressDeadlineExceeded``, ...) unless the
    rollout event says ready."""
    if event == "success":
        return
    assert isinstance(event, dict)
    status = event.get("status") or {}
    if event.get("state") != "ready":
        reason = status.get("reason") or event.get("state")
        message = f"{role} rollout of {version} failed: {reason}: {status.get('message', '')}".rstrip(": ")
        op.record("deploy", message, data={"role": role, "status": status, "state": event.get("state"),
                                           "reason": reason})
        raise AirflowException(message)


class PromoteVersionOperator(PlatformOperatorBase):
    """
    Completes a rollout: the new version becomes the stable one, takes all traffic, and the old version's
    replicas are terminated. Where the platform updates stable in place (Kubernetes), the task waits in a
    trigger for that rollout, then moves traffic back to stable and removes the canary.

    Template fields: ``deployment_id``, ``version``.

    :param version: the version being promoted (templated), checked against what the platform runs.
    :param progress_deadline: seconds the stable rollout may take.
    :param deferrable: wait in a trigger (default).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#ceead6"
    expected_duration = timedelta(seconds=10)

    def __init__(self, *, version: str, progress_deadline: float = 600.0, deferrable: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.progress_deadline = float(progress_deadline)
        self.deferrable = deferrable

    def describe(self) -> str:
        return "make the new version stable and terminate the old version's replicas"

    def execute(self, context: Any) -> None:
        platform = self.get_platform()
        split = platform.traffic()
        if split.canary_version is None and split.stable_version == self.version:
            self.log.info("%s is already the stable version (retry): nothing to promote", self.version)
            return
        if split.canary_version != self.version:
            raise AirflowFailException(f"cannot promote {self.version}: the platform's canary runs "
                                       f"{split.canary_version!r} (stable {split.stable_version!r})")
        if platform.promote() is False:
            self.log.info("stable is rolling out %s; waiting for it before traffic moves back", self.version)
            return wait_for_rollout(self, context, "stable", self.version, self.progress_deadline,
                                    "execute_complete")
        self._done(platform)

    def execute_complete(self, context: Any, event: dict[str, Any] | str) -> None:
        check_rollout(self, "stable", self.version, event)
        platform = self.get_platform()
        platform.complete_promotion()
        self._done(platform)

    def _done(self, platform: Any) -> None:
        after = platform.traffic()
        self.record("traffic", f"promoted {self.version}: stable now runs it with 100% of traffic",
                    data={"traffic": after.to_dict()})


class VerifyTrafficOperator(PlatformOperatorBase):
    """
    Reads the traffic split back from the router (or load balancer) and checks it: all traffic on the stable
    version, which runs ``version``.

    :param version: the version that must be stable (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")

    def __init__(self, *, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    def describe(self) -> str:
        return "read the load balancer's split back: 100% to the stable version"

    def execute(self, context: Any) -> dict[str, Any]:
        split = self.get_platform().traffic()
        if split.canary_weight != 0 or split.stable_version != self.version:
            raise AirflowException(f"load balancer is not settled: stable {split.stable_version!r} gets "
                                   f"{split.stable_weight}%, canary {split.canary_version!r} gets "
                                   f"{split.canary_weight}% (expected 100% to {self.version})")
        self.record("traffic", f"load balancer verified: 100% to {self.version}", data=split.to_dict())
        return split.to_dict()


class RollbackOperator(NotifyingMixin, PlatformOperatorBase):
    """
    Rolls a deployment back. Traffic goes back to the stable version first, then the new version's replicas
    are removed; stable is not touched. The ledger records the outcome ``rolled_back`` with the reason and
    the rollback is announced. Idempotent: a second run finds nothing left to undo.

    Runs when an upstream task failed (trigger rule ``one_failed``) in the canary and blue-green phases.

    :param version: the version being rolled back (templated).
    :param notification: where to announce it.
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#fad2cf"
    expected_duration = timedelta(seconds=5)

    def __init__(self, *, version: str, notification: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.notification = notification

    def describe(self) -> str:
        return "on failure: traffic back to stable, then remove the new version"

    def execute(self, context: Any) -> None:
        rollback(self, context, reason=None)


def rollback(op: Any, context: Any, reason: str | None) -> None:
    """Shared by :class:`RollbackOperator` and the gates: abort, record, announce."""
    platform = op.get_platform()
    before = platform.traffic()
    platform.abort()
    after = platform.traffic()
    deployment = op.ledger.get(op.deployment_id)
    if deployment is not None and deployment.status == "rolled_back":
        op.log.info("Already rolled back (%s); traffic is 100%% on %s", deployment.outcome_reason,
                    after.stable_version)
        return
    if before.canary_version is None and not op.ledger.events(op.deployment_id, kind="deploy"):
        # One-failed also fires on upstream_failed: a check before the deployment failed and nothing of this
        # version was ever started, so there is no rollback to record or announce.
        raise AirflowSkipException(f"nothing of {op.version} was deployed (a step before the deployment failed); "
                                   "nothing to roll back")
    if after.canary_weight != 0:
        raise AirflowException(f"rollback did not restore traffic: canary still gets {after.canary_weight}%")
    if reason is None:
        # The latest failure recorded by a step: a gate's rollback decision or a rollout that failed with the
        # platform's reason (ImagePullBackOff, ProgressDeadlineExceeded, ...).
        failure = next((e for e in reversed(op.ledger.events(op.deployment_id))
                        if (e.kind in ("gate", "rollback") and e.data.get("decision") == "rollback")
                        or (e.kind == "deploy" and e.data.get("state") in ("failed", "deadline"))), None)
        reason = failure.message if failure is not None else "a step of the rollout failed"
    record_rollback(op, context, f"rolled back {op.version}: traffic 100% to {after.stable_version}; {reason}",
                    reason, {"before": before.to_dict(), "after": after.to_dict()}, restored=after.stable_version)


def record_rollback(op: Any, context: Any, message: str, reason: str, data: dict[str, Any],
                    restored: str | None) -> None:
    """Record a rollback in the ledger (event and outcome ``rolled_back``) and announce it once."""
    from airflow_deploy_provider.notifications.slack import DeploymentMessage, run_url

    op.record("rollback", message, data={"decision": "rollback", "reason": reason, **data})
    deployment = op.ledger.finish_deployment(op.deployment_id, "rolled_back", reason)
    announcement = DeploymentMessage(
        event="rollback", kind=deployment.kind, service=op.service, environment=op.environment, region=op.region,
        version=op.version, previous_version=restored or deployment.previous_version, who=deployment.triggered_by,
        duration_seconds=deployment.duration_seconds, reason=reason,
        run_url=run_url(deployment.dag_id, deployment.run_id),
        details=[("Traffic", f"100% to {restored}")] if restored else [],
    )
    op.log.info("Rollback notification: %s", op.notify("rollback", announcement, context))


class ScaleOperator(PlatformOperatorBase):
    """
    Scales a role to ``replicas`` (the production pre-deployment "scale up": room for the canary beside
    stable).

    :param role: ``stable`` or ``canary``.
    :param replicas: target replica count.
    """

    def __init__(self, *, role: str = "stable", replicas: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "role", role, ROLES)
        if replicas < 0:
            raise ValueError(f"{self.task_id}: replicas must not be negative")
        self.role = role
        self.replicas = replicas

    def describe(self) -> str:
        return f"scale {self.role} to {self.replicas} replica(s)"

    def execute(self, context: Any) -> None:
        self.get_platform().scale(self.role, self.replicas)  # type: ignore[arg-type]
        self.record("scale", f"{self.role} scaled to {self.replicas} replica(s)",
                    data={"role": self.role, "replicas": self.replicas})


class SnapshotOperator(PlatformOperatorBase):
    """Records what runs now (versions, replicas, manifests) in the ledger, so a rollback can restore it."""

    def describe(self) -> str:
        return "snapshot the current state into the ledger"

    def execute(self, context: Any) -> dict[str, Any]:
        snapshot = self.get_platform().snapshot()
        self.record("snapshot", "snapshot of the current state recorded", data={"snapshot": snapshot})
        return snapshot


class AutoscalingOperator(PlatformOperatorBase):
    """
    Suspends autoscaling during the rollout (``enabled=False``) or resumes it afterwards (``enabled=True``).
    The resume task is a teardown: it runs even when the rollout fails.

    :param enabled: resume (True) or suspend (False).
    """

    def __init__(self, *, enabled: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.enabled = enabled

    def describe(self) -> str:
        return "re-enable autoscaling" if self.enabled else "disable autoscaling during the rollout"

    def execute(self, context: Any) -> None:
        done = self.get_platform().set_autoscaling(self.enabled)
        self.record("autoscaling", done, data={"enabled": self.enabled})


class DeploymentMarkerOperator(PlatformOperatorBase):
    """Sets the deployment start marker: a ledger event, and an annotation where the platform supports one."""

    template_fields: Sequence[str] = ("deployment_id", "version")

    def __init__(self, *, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    def describe(self) -> str:
        return "set the deployment start marker (ledger event and platform annotation)"

    def execute(self, context: Any) -> None:
        platform = self.get_platform()
        annotate = getattr(platform, "annotate", None)
        done = annotate({"deployment-id": self.deployment_id, "version": self.version}) if annotate else \
            f"platform {platform.type!r} keeps no annotations; marker recorded in the ledger only"
        self.record("marker", f"deployment of {self.version} started: {done}",
                    data={"marker": "start", "version": self.version})


class CapacityCheckOperator(PlatformOperatorBase):
    """
    Checks that the environment has room for the new version beside the running one.

    :param replicas: replicas the new version needs.
    :param replica_resources: per-replica requests and limits.
    """

    def __init__(self, *, replicas: int, replica_resources: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replicas = replicas
        self.replica_resources = replica_resources

    def describe(self) -> str:
        return f"check capacity for {self.replicas} more replica(s)"

    def execute(self, context: Any) -> dict[str, Any]:
        spec = WorkloadSpec(version="capacity-check", image="", replicas=self.replicas,
                            resources=self.replica_resources)
        result = self.get_platform().capacity(spec)
        self.record("check", f"capacity: {result.get('detail')}", data=result)
        if not result.get("fits"):
            raise AirflowFailException(f"not enough capacity: {result.get('detail')}")
        return result


class CleanupOperator(PlatformOperatorBase):
    """Removes artifacts of versions older than the last ``keep`` ones (old processes' files, old revisions)."""

    def __init__(self, *, keep: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep = keep

    def describe(self) -> str:
        return f"clean up old artifacts (keep the last {self.keep} versions)"

    def execute(self, context: Any) -> None:
        platform = self.get_platform()
        cleanup = getattr(platform, "cleanup", None)
        done = cleanup(self.keep) if cleanup else f"platform {platform.type!r} keeps no artifacts to clean up"
        self.record("cleanup", done)


class RestoreSnapshotOperator(NotifyingMixin, PlatformOperatorBase):
    """
    Rolls back a rollout that already completed: restores the snapshot taken before it (the previous version,
    replicas and manifests), records the deployment as rolled back and announces it. Runs when the watch after
    the rollout fails (trigger rule ``one_failed``).

    Template fields: ``deployment_id``, ``version``.

    :param version: the version being rolled back (templated).
    :param notification: where to announce it.
    :param progress_deadline: seconds the restored version's rollout may take.
    :param deferrable: wait for that rollout in a trigger (default).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#fad2cf"
    expected_duration = timedelta(seconds=30)

    def __init__(self, *, version: str, notification: dict[str, Any] | None = None,
                 progress_deadline: float = 600.0, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.notification = notification
        self.progress_deadline = float(progress_deadline)
        self.deferrable = deferrable

    def describe(self) -> str:
        return "on failure: restore the snapshot taken before the rollout (previous version)"

    def execute(self, context: Any) -> None:
        deployment = self.ledger.get(self.deployment_id)
        if deployment is not None and deployment.status == "rolled_back":
            raise AirflowSkipException(f"already rolled back ({deployment.outcome_reason}); nothing to restore")
        platform = self.get_platform()
        started = self.ledger.events(self.deployment_id, kind="restore")
        if not started and platform.traffic().stable_version != self.version:
            # One-failed also fires when the watch never ran because an earlier step failed: the new version
            # never became stable, so there is nothing to undo here.
            raise AirflowSkipException(f"{self.version} never became the stable version; nothing to restore")
        snapshots = self.ledger.events(self.deployment_id, kind="snapshot")
        if not snapshots:
            raise AirflowFailException("no snapshot of the previous state in the ledger; run the rollback DAG")
        snapshot = snapshots[-1].data["snapshot"]
        restored = (snapshot.get("stable") or {}).get("version")
        if not started:
            self.record("restore", f"restoring the state before {self.version} (stable {restored})",
                        data={"version": restored})
        if platform.restore(snapshot) is False and restored:
            return wait_for_rollout(self, context, "stable", restored, self.progress_deadline, "execute_complete")
        self._done(context, snapshot)

    def execute_complete(self, context: Any, event: dict[str, Any] | str) -> None:
        snapshots = self.ledger.events(self.deployment_id, kind="snapshot")
        snapshot = snapshots[-1].data["snapshot"]
        check_rollout(self, "stable", (snapshot.get("stable") or {}).get("version") or "", event)
        self._done(context, snapshot)

    def _done(self, context: Any, snapshot: dict[str, Any]) -> None:
        reason = next((e.message for e in reversed(self.ledger.events(self.deployment_id, kind="gate"))
                       if e.data.get("decision") in ("rollback", "fail")), "the watch after the rollout failed")
        restored = (snapshot.get("stable") or {}).get("version")
        record_rollback(self, context, f"restored the state before {self.version}: {reason}", reason,
                        {"snapshot": snapshot}, restored=restored)


class ResourceUsageOperator(PlatformOperatorBase):
    """
    Reports the replicas' resource use (CPU, memory) against their limits and fails when a replica uses more
    than ``max_share`` of its memory limit.

    :param role: ``stable`` or ``canary``.
    :param max_share: highest healthy share of the memory limit (0-1).
    """

    def __init__(self, *, role: str = "stable", max_share: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "role", role, ROLES)
        if not 0 < max_share <= 1:
            raise ValueError(f"{self.task_id}: max_share must be in (0, 1]")
        self.role = role
        self.max_share = max_share

    def describe(self) -> str:
        return f"monitor resource utilization (memory below {self.max_share:.0%} of the limit)"

    def execute(self, context: Any) -> dict[str, Any]:
        status = self.get_platform().status()
        usage = status.get("resources", {}).get(self.role, [])
        over = [u for u in usage if u.get("memory_share") is not None and u["memory_share"] > self.max_share]
        self.record("check", f"resource use of {len(usage)} replica(s); {len(over)} above {self.max_share:.0%} of "
                    "the memory limit", data={"usage": usage})
        if over:
            raise AirflowException(f"{len(over)} replica(s) use more than {self.max_share:.0%} of their memory limit")
        return {"replicas": len(usage)}
