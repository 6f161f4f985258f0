"""Metric gates and traffic steps: the canary step, the blue-green switch, and watches after a rollout."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_deploy_provider.gates import GateCondition, GateMetric
from airflow_deploy_provider.operators.base import PlatformOperatorBase, check_choice, wait_for
from airflow_deploy_provider.operators.deploy import rollback
from airflow_deploy_provider.operators.lifecycle import NotifyingMixin


def _seconds(value: timedelta | float | int | None) -> float:
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class MetricGateOperator(NotifyingMixin, PlatformOperatorBase):
    """
    Watches the new version's metrics for ``duration``: a check every ``interval`` against each metric's
    ``max``/``min`` and the rollback ``conditions``. The watch runs in :class:`MetricGateTrigger` and holds no
    worker slot. See :mod:`airflow_deploy_provider.gates` for the rules (no data and thin traffic never pass;
    failed checks count against ``failure_limit`` over the whole rollout; a condition breach ends it at once).

    On a rollback decision, with ``rollback_on_failure`` traffic goes back to stable immediately (in the
    trigger), the new version is removed and the deployment is recorded and announced as rolled back; the
    task then fails without retry. Without it the task only fails, leaving the decision to a person or a
    downstream task.

    Template fields: ``deployment_id``, ``version``.

    :param version: the version under test (templated); blank: the version the platform's stable role runs
        when the gate starts.
    :param stable_version: the stable version, for relative bounds (templated).
    :param role: where the version under test runs: ``canary`` (beside stable) or ``stable`` (after promotion);
        metric providers that measure per role (CloudWatch target groups) use it.
    :param metrics: gate metrics: ``name``, ``unit``, ``max``, ``min``, ``max_ratio``, ``query``.
    :param conditions: rollback conditions: ``text``, ``metric``, ``op``, ``threshold``, ``unit``, ``query``.
    :param interval: time between checks.
    :param duration: how long to watch.
    :param min_requests: requests per interval below which a check is inconclusive.
    :param failure_limit: failed checks tolerated (``canary.analysis.threshold``).
    :param budget: name of the failure budget shared by gates of one deployment (the canary steps share one).
    :param metrics_provider: metric provider settings (``provider``, ``connection``, ...).
    :param rollback_on_failure: restore traffic and remove the new version on a rollback decision.
    :param notification: where to announce a rollback.
    :param deferrable: wait in a trigger (default); ``False`` holds a worker slot while watching.
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "stable_version")
    ui_color = "#e6d5f5"

    def __init__(
        self,
        *,
        version: str,
        stable_version: str | None = None,
        role: str = "stable",
        metrics: list[dict[str, Any]],
        conditions: list[dict[str, Any]] | None = None,
        interval: timedelta | float = timedelta(minutes=1),
        duration: timedelta | float,
        min_requests: int = 0,
        failure_limit: int = 0,
        budget: str = "gate",
        metrics_provider: dict[str, Any],
        rollback_on_failure: bool = True,
        notification: dict[str, Any] | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.version = version
        self.stable_version = stable_version
        check_choice(self.task_id, "role", role, ("stable", "canary"))
        self.role = role
        self.metrics = [GateMetric(**m).__dict__ for m in metrics]  # validates the shape at parse time
        self.conditions = [GateCondition(**c).__dict__ for c in conditions or []]
        self.interval = _seconds(interval)
        self.duration = _seconds(duration)
        if self.interval <= 0:
            raise ValueError(f"{self.task_id}: interval must be positive")
        if self.duration and self.duration < self.interval:
            raise ValueError(f"{self.task_id}: duration {self.duration}s is shorter than the interval {self.interval}s")
        if not self.metrics and not self.conditions and self.duration:
            raise ValueError(f"{self.task_id}: a gate needs at least one metric or condition")
        if min_requests < 0 or failure_limit < 0:
            raise ValueError(f"{self.task_id}: min_requests and failure_limit must not be negative")
        self.min_requests = min_requests
        self.failure_limit = failure_limit
        self.budget = budget
        self.metrics_provider = metrics_provider
        self.rollback_on_failure = rollback_on_failure
        self.notification = notification
        self.expected_duration = timedelta(seconds=self.duration)

    def describe(self) -> str:
        if not self.duration:
            return "no watch"
        if self.budget == "business":  # tracked for the record; business metrics never fail a rollout
            names = ", ".join(m["name"] for m in self.metrics)
            return f"record {names} every {_fmt(self.interval)} for {_fmt(self.duration)} (tracked, never fails the run)"
        what = ", ".join(GateMetric(**m).describe() for m in self.metrics) or "rollback conditions only"
        text = f"watch {_fmt(self.duration)} every {_fmt(self.interval)}: {what}"
        if self.min_requests:
            text += f" (>= {self.min_requests} requests per check)"
        text += f"; tolerate {self.failure_limit} failed check(s)"
        if self.conditions:
            text += "; roll back at once if " + " or ".join(c["text"] for c in self.conditions)
        return text

    def gate_settings(self) -> dict[str, Any]:
        failures = sum(1 for e in self.ledger.events(self.deployment_id, kind="gate")
                       if e.data.get("budget") == self.budget and e.data.get("verdict") != "pass")
        return {"metrics": self.metrics, "conditions": self.conditions, "interval": self.interval,
                "duration": self.duration, "min_requests": self.min_requests, "failure_limit": self.failure_limit,
                "failures_so_far": failures, "budget": self.budget}

    def start_gate(self, context: Any) -> Any:
        from airflow_deploy_provider.triggers.metric_gate import MetricGateTrigger

        if self.version in ("", "None", None):  # what serves now (after an incident's mitigation, say)
            self.version = self.get_platform().traffic().stable_version or ""
            if not self.version:
                raise AirflowFailException(f"{self.task_id}: nothing serves in the stable role to watch")
        gate = self.gate_settings()
        if gate["failures_so_far"] > self.failure_limit:
            self._rollback_or_fail(context, f"failure budget already spent: {gate['failures_so_far']} failed checks")
        self.log.info("Gate: %s (failed checks so far: %d)", self.describe(), gate["failures_so_far"])
        trigger = MetricGateTrigger(
            gate=gate,
            query={"service": self.service, "environment": self.environment, "region": self.region,
                   "version": self.version, "role": self.role, "stable_version": None if self.stable_version in (None, "", "None")
                   else self.stable_version},
            provider=self.metrics_provider, deployment_id=self.deployment_id,
            ledger_conn_id=self.ledger_conn_id, label=self.task_id,
            abort_platform=self.platform if self.rollback_on_failure else None, end_task=self.deferrable,
        )
        timeout = timedelta(seconds=self.duration + self.interval * (self.failure_limit + 3) + 300)
        return wait_for(self, trigger, "gate_complete", context, timeout, self.deferrable)

    def execute(self, context: Any) -> Any:
        return self.start_gate(context)

    def gate_complete(self, context: Any, event: dict[str, Any] | str) -> dict[str, Any] | None:
        if event == "success":  # the gate passed and the trigger ended the task (checks are in the ledger)
            return None
        assert isinstance(event, dict)
        for check in event.get("history", []):
            values = ", ".join(
                f"{n}={r['value']:g}" if r.get("value") is not None else f"{n}=no data"
                for n, r in check.get("readings", {}).items())
            self.log.info("check %s: %-12s %s requests=%s %s", check.get("number"), check.get("verdict"), values,
                          check.get("requests"), "; ".join(check.get("reasons", [])))
        if event.get("decision") != "pass":
            self._rollback_or_fail(context, event.get("reason") or "gate failed")
        self.log.info("Gate passed: %s", event.get("reason"))
        return {"decision": "pass", "checks": event.get("checks"), "failures": event.get("failures")}

    def _rollback_or_fail(self, context: Any, reason: str) -> None:
        message = f"{self.task_id}: {reason}"
        if self.rollback_on_failure:
            rollback(self, context, reason=message)
            raise AirflowFailException(f"rolled back: {message}")
        self.ledger.record_event(self.deployment_id, "gate", message, task_id=self.task_id,
                                 data={"decision": "fail", "budget": self.budget, "verdict": "fail-final"})
        raise AirflowFailException(message)


class CanaryStepOperator(MetricGateOperator):
    """
    One step of a progressive canary: sends ``weight`` percent of traffic to the new version (read back from
    the router), then runs the metric gate for the step's pause. The last step (100) has no pause.

    Template fields: ``deployment_id``, ``version``, ``stable_version``.

    :param weight: percent of traffic for the new version, 1-100.
    :param pause: how long the gate watches this step; ``None`` for no watch.
    """

    ui_color = "#d7aefb"

    def __init__(self, *, weight: int, pause: timedelta | float | None, **kwargs: Any) -> None:
        kwargs.setdefault("budget", "canary")
        kwargs.setdefault("role", "canary")
        super().__init__(duration=_seconds(pause), **kwargs)
        if not 1 <= weight <= 100:
            raise ValueError(f"{self.task_id}: weight must be 1-100; got {weight}")
        self.weight = weight
        self.expected_duration = timedelta(seconds=self.duration + 2)

    def describe(self) -> str:
        shift = f"route {self.weight}% of traffic to the new version"
        return shift if not self.duration else f"{shift}, then {super().describe()}"

    def execute(self, context: Any) -> Any:
        platform = self.get_platform()
        split = platform.set_traffic(self.weight)
        if split.canary_version != self.version:
            raise AirflowException(f"router sends the canary's traffic to {split.canary_version!r}, not {self.version}")
        if split.stable_version is None:
            # First deployment: there is no stable version to share traffic with; the gate still watches the
            # new version before it is promoted.
            self.record("traffic", f"first deployment: {self.version} takes all traffic (step {self.weight}%)",
                        data={"weight": self.weight, "first_deployment": True, **split.to_dict()})
        elif abs(split.canary_weight - self.weight) >= max(1, split.granularity):
            raise AirflowException(f"router reports {split.canary_weight}% to {split.canary_version!r} after "
                                   f"setting {self.weight}%")
        else:
            # A router moving whole pods (the replica ratio) gets as close as its granularity allows.
            actual = "" if split.canary_weight == self.weight else \
                f" (effective {split.canary_weight}%: the router moves in steps of {split.granularity}%)"
            self.record("traffic", f"{self.weight}% of traffic to {self.version}{actual}, {split.stable_weight}% to "
                        f"{split.stable_version}", data={"weight": self.weight, **split.to_dict()})
        if not self.duration:
            return {"weight": self.weight}
        return self.start_gate(context)


class TrafficSwitchOperator(PlatformOperatorBase):
    """
    Blue-green switch: all traffic to green (the new version, ``to="green"``) or back to blue
    (``to="blue"``), read back from the router.

    Template fields: ``deployment_id``, ``version``.

    :param to: ``green`` or ``blue``.
    :param version: the green version (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#d7aefb"

    def __init__(self, *, to: str, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if to not in ("green", "blue"):
            raise ValueError(f"{self.task_id}: to must be 'green' or 'blue'; got {to!r}")
        self.to = to
        self.version = version

    def describe(self) -> str:
        return "switch all traffic from blue to green" if self.to == "green" else "switch traffic back to blue"

    def execute(self, context: Any) -> dict[str, Any]:
        weight = 100 if self.to == "green" else 0
        split = self.get_platform().set_traffic(weight)
        if split.canary_weight != weight and not (split.stable_version is None and self.to == "green"):
            raise AirflowException(f"router reports {split.canary_weight}% to green after switching to {self.to}")
        self.record("traffic", f"traffic switched to {self.to}: {split.to_dict()}", data=split.to_dict())
        return split.to_dict()


def _fmt(seconds: float) -> str:
    from airflow_deploy_provider.config.types import format_duration

    return format_duration(timedelta(seconds=seconds))
