"""What the triggers share: writing to the ledger from the triggerer, and ending a task without a worker."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import TaskSuccessEvent, TriggerEvent


async def record(ledger: dict[str, Any] | None, kind: str, message: str, data: dict[str, Any]) -> None:
    """Add an event to a deployment's ledger history (``ledger``: ``deployment_id``, ``ledger_conn_id``,
    ``task_id``); the database call runs in a thread, off the triggerer's event loop."""
    if not ledger:
        return
    from airflow_deploy_provider.ledger.hook import get_ledger

    def write() -> None:
        get_ledger(ledger["ledger_conn_id"]).record_event(ledger["deployment_id"], kind, message,
                                                          task_id=ledger.get("task_id"), data=data)

    await asyncio.to_thread(write)


def success(payload: dict[str, Any], end_task: bool) -> TriggerEvent:
    """On success, end the task from the trigger (no worker is started again just to finish it), or hand the
    payload back to the task when it waits inline."""
    if end_task:
        return TaskSuccessEvent(xcoms={"return_value": payload})
    return TriggerEvent(payload)
