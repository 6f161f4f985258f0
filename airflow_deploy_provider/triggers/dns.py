"""Trigger that waits for a Route53 change to reach every Route53 DNS server (``INSYNC``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

#: Errors after which polling the change again cannot help.
FATAL_ERRORS = {"NoSuchChange", "AccessDenied", "AccessDeniedException", "InvalidInput"}


class Route53ChangeTrigger(BaseTrigger):
    """
    Polls ``GetChange`` every ``poll_interval`` seconds until the change is ``INSYNC`` or ``deadline`` (epoch
    seconds, so that a restarted triggerer keeps the original limit) passes. Fires ``{"ok": bool, "status": str,
    "change_id": str, "reason": str, "polls": int, "state": state}``; ``state`` is handed back unchanged to the
    task.
    """

    def __init__(self, *, change_id: str, aws_conn_id: str | None, deadline: float, poll_interval: float = 10.0,
                 state: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.change_id = change_id
        self.aws_conn_id = aws_conn_id
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.state = state or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "change_id": self.change_id, "aws_conn_id": self.aws_conn_id, "deadline": self.deadline,
            "poll_interval": self.poll_interval, "state": self.state,
        })

    def _event(self, ok: bool, status: str, reason: str, polls: int) -> TriggerEvent:
        return TriggerEvent({"ok": ok, "status": status, "change_id": self.change_id, "reason": reason,
                             "polls": polls, "state": self.state})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from botocore.exceptions import BotoCoreError, ClientError

        from airflow_deploy_provider.hooks.route53 import Route53WeightHook

        status, last_error, polls = "UNKNOWN", "", 0
        hook = Route53WeightHook(aws_conn_id=self.aws_conn_id)
        async with await hook.get_async_conn() as client:
            while True:
                polls += 1
                try:
                    response = await client.get_change(Id=self.change_id)
                    status = response["ChangeInfo"]["Status"]
                    last_error = ""
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    if code in FATAL_ERRORS:
                        yield self._event(False, status, f"GetChange {self.change_id} failed: {exc}", polls)
                        return
                    last_error = f"{code or type(exc).__name__}: {exc}"
                except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if last_error:
                    self.log.warning("Route53 change %s: GetChange failed (will retry): %s", self.change_id,
                                     last_error)
                else:
                    self.log.info("Route53 change %s is %s", self.change_id, status)
                if status == "INSYNC":
                    yield self._event(True, status, "change is INSYNC", polls)
                    return
                left = self.deadline - time.time()
                if left <= 0:
                    reason = f"Route53 change {self.change_id} is still {status} at the deadline"
                    yield self._event(False, status, reason + (f" (last error: {last_error})" if last_error else ""),
                                      polls)
                    return
                await asyncio.sleep(min(self.poll_interval, left))
