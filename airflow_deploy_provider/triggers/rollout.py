"""Trigger that watches a rollout until it is ready, fails or runs past its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_deploy_provider.triggers.common import record, success


class RolloutStatusTrigger(BaseTrigger):
    """
    Polls the platform's rollout status of a role, like ``kubectl rollout status``.

    Fires ``{"state": "ready" | "failed" | "deadline", "status": {...}}``.

    :param platform: platform settings (``type`` and its options).
    :param service: service name.
    :param environment: environment name.
    :param region: region, if any.
    :param role: ``stable`` or ``canary``.
    :param version: version that must be running.
    :param deadline: epoch seconds after which the rollout counts as failed.
    :param poll_interval: seconds between observations.
    :param ledger: ``deployment_id``, ``ledger_conn_id``, ``task_id``: where readiness is recorded.
    :param end_task: end the task from here when the rollout is ready.
    """

    def __init__(self, *, platform: dict[str, Any], service: str, environment: str, region: str | None, role: str,
                 version: str, deadline: float, poll_interval: float = 2.0, ledger: dict[str, Any] | None = None,
                 end_task: bool = False) -> None:
        super().__init__()
        self.platform = platform
        self.service = service
        self.environment = environment
        self.region = region
        self.role = role
        self.version = version
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.ledger = ledger
        self.end_task = end_task

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "platform": self.platform, "service": self.service, "environment": self.environment,
            "region": self.region, "role": self.role, "version": self.version, "deadline": self.deadline,
            "poll_interval": self.poll_interval, "ledger": self.ledger, "end_task": self.end_task,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_deploy_provider.registry import get_platform

        platform = get_platform(self.platform, self.service, self.environment, self.region)
        last: dict[str, Any] = {}
        while True:
            try:
                status = await platform.async_rollout_status(self.role)  # type: ignore[arg-type]
                last = status.to_dict()
                if status.version == self.version and status.done:
                    await record(self.ledger, "deploy", f"{self.role} role ready: {status.ready}/{status.desired} "
                                 f"replicas run {self.version}", {"role": self.role, "status": last})
                    yield success({"state": "ready", "status": last}, self.end_task)
                    return
                if status.failed:
                    yield TriggerEvent({"state": "failed", "status": last})
                    return
                self.log.info("%s rollout of %s: %s/%s ready %s", self.role, self.version, status.ready,
                              status.desired, status.message)
            except Exception as exc:  # a transient API error is not a failed rollout; the deadline bounds it
                self.log.warning("rollout status of %s not available: %s", self.role, exc)
                last = {**last, "message": f"status not available: {exc}"}
            if time.time() >= self.deadline:
                # Say what the rollout was stuck on (Unschedulable, ErrImagePull, ...) beside the deadline.
                seen = ": ".join(str(x) for x in (last.get("reason"), last.get("message")) if x)
                yield TriggerEvent({"state": "deadline", "status": {
                    **last, "reason": "ProgressDeadlineExceeded", "stuck_on": last.get("reason"),
                    "message": f"not ready within the progress deadline (last seen: {seen or 'no status'})"}})
                return
            await asyncio.sleep(min(self.poll_interval, max(0.05, self.deadline - time.time())))
