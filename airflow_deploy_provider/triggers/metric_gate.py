"""Trigger that runs a metric gate: a check every interval for a duration, deciding pass or rollback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_deploy_provider.gates import (
    CheckOutcome,
    GateCondition,
    GateMetric,
    GateState,
    MetricReading,
    evaluate_check,
    find_breach,
)
from airflow_deploy_provider.triggers.common import success

MAX_EVENT_CHECKS = 60  # the event keeps the newest checks; the ledger keeps all of them


class MetricGateTrigger(BaseTrigger):
    """
    Measures the gate's metrics every ``interval`` seconds for ``duration`` seconds (see
    :mod:`airflow_deploy_provider.gates` for the rules) and fires ``{"decision": "pass" | "rollback", ...}``.

    Each check goes to the ledger as it happens. When ``abort_platform`` is given, a rollback decision moves
    all traffic back to stable right here, before the task resumes, so restoring traffic does not wait for a
    worker.

    :param gate: what to measure and how to decide: ``metrics``, ``conditions``, ``interval``, ``duration``,
        ``min_requests``, ``failure_limit``, ``failures_so_far``.
    :param query: ``service``, ``environment``, ``region``, ``version`` of the version under test, and
        ``stable_version`` for relative bounds.
    :param provider: metric provider settings (``provider`` and its options).
    :param deployment_id: ledger id of the deployment.
    :param ledger_conn_id: ledger connection.
    :param label: name of the gate in logs and the ledger (task id).
    :param abort_platform: platform settings; set to restore traffic at once on a rollback decision.
    :param end_task: on a pass, end the task from the trigger instead of resuming it on a worker.
    """

    def __init__(self, *, gate: dict[str, Any], query: dict[str, Any], provider: dict[str, Any], deployment_id: str,
                 ledger_conn_id: str, label: str, abort_platform: dict[str, Any] | None = None,
                 end_task: bool = False) -> None:
        super().__init__()
        self.gate = gate
        self.query = query
        self.provider = provider
        self.deployment_id = deployment_id
        self.ledger_conn_id = ledger_conn_id
        self.label = label
        self.abort_platform = abort_platform
        self.end_task = end_task

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "gate": self.gate, "query": self.query, "provider": self.provider, "deployment_id": self.deployment_id,
            "ledger_conn_id": self.ledger_conn_id, "label": self.label, "abort_platform": self.abort_platform,
            "end_task": self.end_task,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_deploy_provider.config.types import MetricInfo
        from airflow_deploy_provider.metrics.base import MetricQuery
        from airflow_deploy_provider.registry import get_metric_provider

        metrics = [GateMetric(**m) for m in self.gate["metrics"]]
        conditions = [GateCondition(**c) for c in self.gate.get("conditions", [])]
        interval = float(self.gate["interval"])
        duration = float(self.gate["duration"])
        min_requests = int(self.gate.get("min_requests", 0))
        state = GateState(failures=int(self.gate.get("failures_so_far", 0)),
                          failure_limit=int(self.gate.get("failure_limit", 0)))
        units = {m.name: (m.unit, m.query) for m in metrics}
        units.update({c.metric: (c.unit, c.query) for c in conditions if c.metric not in units})
        provider = get_metric_provider(self.provider)
        ledger = await asyncio.to_thread(self._ledger)
        history: list[dict[str, Any]] = []
        started = time.monotonic()
        deadline = started + duration
        # When the pause ends on a failing check the gate keeps checking; each extra check costs budget, and
        # this bounds the extension even with a very large threshold.
        hard_stop = deadline + interval * (state.failure_limit - state.failures + 2)
        number = 0
        window = timedelta(seconds=interval)
        # Rollback conditions are also measured between checks, several times per interval, over the same
        # sliding window: a breach is acted on within a fraction of an interval.
        ticks = max(1, int(self.gate.get("condition_checks_per_interval", 4))) if conditions else 1
        tick = interval / ticks
        condition_names = sorted({c.metric for c in conditions})
        k = 0

        relative = [m.name for m in metrics if m.max_ratio is not None]
        stable_version = self.query.get("stable_version") or None

        async def measure(name: str, version: str | None = None) -> tuple[str, MetricReading]:
            unit, custom_query = units[name]
            try:
                result = await provider.evaluate(MetricQuery(
                    metric=MetricInfo(name, unit, "low", ""), service=self.query["service"],
                    environment=self.query["environment"], region=self.query.get("region"),
                    version=version or self.query["version"], window=window, query=custom_query,
                    role="stable" if version else self.query.get("role")))
                return name, MetricReading(name, result.value, result.sample_size, result.error)
            except Exception as exc:  # a provider error is "no data": never a pass
                return name, MetricReading(name, None, None, f"provider error: {exc}")

        while True:
            k += 1
            await asyncio.sleep(max(0.0, started + k * tick - time.monotonic()))
            if k % ticks:
                readings = dict(await asyncio.gather(*(measure(n) for n in condition_names)))
                breach = find_breach(readings, conditions, min_requests)
                if breach is None:
                    continue
                outcome = CheckOutcome(number=number, passed=False, breach=breach,
                                       reasons=[f"rollback condition {breach} between checks"],
                                       readings={n: r.__dict__ for n, r in readings.items()})
                rollback_reason = f"rollback condition breached: {breach}"
                entry = self._entry(outcome, state, time.monotonic() - started, "rollback")
                entry["between_checks"] = True
                self.log.info("%s: %s (measured between checks)", self.label, rollback_reason)
                if self.abort_platform is not None:
                    entry["traffic_restored"] = await asyncio.to_thread(self._restore_traffic)
                history.append(entry)
                await asyncio.to_thread(ledger.record_event, self.deployment_id, "gate",
                                        f"{self.label}: {outcome.verdict} between checks - {rollback_reason}",
                                        task_id=self.label, data=entry)
                yield TriggerEvent(self._event("rollback", rollback_reason, state, history))
                return
            number += 1
            readings = dict(await asyncio.gather(*(measure(n) for n in units)))
            stable = dict(await asyncio.gather(*(measure(n, stable_version) for n in relative))) \
                if relative and stable_version else None
            outcome = evaluate_check(number, readings, metrics, conditions, min_requests, stable)
            rollback_reason = state.add(outcome)
            elapsed = time.monotonic() - started
            done = rollback_reason is None and time.monotonic() >= deadline - 1e-3 and outcome.passed
            decision = "rollback" if rollback_reason else ("pass" if done else "continue")
            entry = self._entry(outcome, state, elapsed, decision)
            history.append(entry)
            self.log.info("%s check %d: %s %s (failed checks %d/%d)", self.label, number, outcome.verdict,
                          "; ".join(outcome.reasons) or _values(outcome), state.failures, state.failure_limit)
            if rollback_reason and self.abort_platform is not None:
                entry["traffic_restored"] = await asyncio.to_thread(self._restore_traffic)
            await asyncio.to_thread(
                ledger.record_event, self.deployment_id, "gate",
                f"{self.label} check {number}: {outcome.verdict}" + (f" - {rollback_reason}" if rollback_reason else ""),
                task_id=self.label, data=entry)
            if rollback_reason:
                yield TriggerEvent(self._event("rollback", rollback_reason, state, history))
                return
            if done:
                # A pass needs nothing more from a worker: the task ends here (checks are in the ledger).
                yield success(self._event("pass", f"{state.checks} check(s) over {elapsed:.0f}s", state, history),
                              self.end_task)
                return
            if time.monotonic() >= hard_stop:
                reason = f"no passing check by the end of {self.label} (last: {'; '.join(outcome.reasons)})"
                if self.abort_platform is not None:
                    entry["traffic_restored"] = await asyncio.to_thread(self._restore_traffic)
                yield TriggerEvent(self._event("rollback", reason, state, history))
                return

    def _ledger(self):
        from airflow_deploy_provider.ledger.hook import get_ledger

        return get_ledger(self.ledger_conn_id)

    def _restore_traffic(self) -> dict[str, Any]:
        from airflow_deploy_provider.registry import get_platform

        platform = get_platform(self.abort_platform or {}, self.query["service"], self.query["environment"],
                                self.query.get("region"))
        split = platform.set_traffic(0)
        self.log.info("%s: traffic restored to stable %s", self.label, split.stable_version)
        return {"at": time.time(), **split.to_dict()}

    @staticmethod
    def _entry(outcome: CheckOutcome, state: GateState, elapsed: float, decision: str) -> dict[str, Any]:
        return {**outcome.to_dict(), "failures": state.failures, "failure_limit": state.failure_limit,
                "elapsed": round(elapsed, 3), "decision": decision, "at": time.time()}

    @staticmethod
    def _event(decision: str, reason: str, state: GateState, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {"decision": decision, "reason": reason, "failures": state.failures, "checks": state.checks,
                "history": history[-MAX_EVENT_CHECKS:]}


def _values(outcome: CheckOutcome) -> str:
    return ", ".join(f"{n}={r['value']:g}" if r.get("value") is not None else f"{n}=no data"
                     for n, r in outcome.readings.items())
