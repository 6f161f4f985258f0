"""Metric gate semantics, kept free of Airflow so they can be reasoned about and tested alone.

A *check* measures every gate metric (and every rollback-condition metric) once over the last interval:

* a gate metric outside its ``max``/``min`` fails the check;
* a gate metric with no data or a provider error fails the check;
* when the new version served fewer than ``min_requests`` requests the check is *inconclusive*, which counts
  as failed: thin traffic never promotes;
* any rollback condition that holds is a *breach*: roll back at once.

Between checks the rollback conditions alone are measured several times per interval, over the same
sliding window: a breach is acted on at once, without waiting for the next check, so a version that starts
failing is caught well within one interval.

Failed checks are counted over the whole rollout; one more than ``threshold`` rolls back. A step only ends
on a passing check: when its pause is over and the last check failed, the gate keeps checking (each failure
still counts) until a check passes or the budget is spent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


@dataclass(frozen=True)
class GateMetric:
    """A gate metric with its bounds in the metric's unit."""

    name: str
    unit: str
    max: float | None = None
    min: float | None = None
    query: str | None = None
    max_ratio: float | None = None  # at most this many times the stable version's value

    def describe(self) -> str:
        unit = {"percent": "%", "ms": "ms"}.get(self.unit, "")
        bounds = []
        if self.max is not None:
            bounds.append(f"<= {self.max:g}{unit}")
        if self.min is not None:
            bounds.append(f">= {self.min:g}{unit}")
        if self.max_ratio is not None:
            bounds.append(f"<= {self.max_ratio:g}x stable")
        return f"{self.name} {' and '.join(bounds)}"


@dataclass(frozen=True)
class GateCondition:
    """A rollback condition with its threshold converted to the metric's unit."""

    text: str
    metric: str
    op: str
    threshold: float
    unit: str
    query: str | None = None

    def breached(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


@dataclass
class MetricReading:
    name: str
    value: float | None
    sample_size: int | None = None
    error: str | None = None


@dataclass
class CheckOutcome:
    """The decision of one check."""

    number: int
    passed: bool
    inconclusive: bool = False
    breach: str | None = None
    reasons: list[str] = field(default_factory=list)
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int | None = None

    @property
    def verdict(self) -> str:
        if self.breach:
            return "breach"
        if self.inconclusive:
            return "inconclusive"
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data


def evaluate_check(number: int, readings: dict[str, MetricReading], metrics: list[GateMetric],
                   conditions: list[GateCondition], min_requests: int,
                   stable: dict[str, MetricReading] | None = None) -> CheckOutcome:
    """Decide one check from its readings (``stable``: the stable version's readings of the same window, for
    relative bounds). A check on too little traffic is inconclusive: neither a pass nor a breach (a breach
    measured on a handful of requests is noise), but it counts as a failed check."""
    outcome = CheckOutcome(number=number, passed=True, readings={n: asdict(r) for n, r in readings.items()})
    samples = [r.sample_size for r in readings.values() if r.sample_size is not None]
    outcome.requests = min(samples) if samples else None
    if outcome.requests is not None and outcome.requests < min_requests:
        outcome.inconclusive = True
        outcome.passed = False
        outcome.reasons.append(f"inconclusive: {outcome.requests} request(s) in the interval, fewer than "
                               f"minRequests {min_requests}")
        return outcome
    for cond in conditions:
        reading = readings.get(cond.metric)
        if reading is not None and reading.value is not None and cond.breached(reading.value):
            outcome.breach = f"{cond.text} (measured {reading.value:g})"
            outcome.passed = False
            outcome.reasons.append(f"rollback condition {cond.text} holds: {cond.metric} = {reading.value:g}")
            break
    for metric in metrics:
        reading = readings.get(metric.name)
        if reading is None or reading.value is None:
            outcome.passed = False
            why = reading.error if reading is not None and reading.error else "no data"
            outcome.reasons.append(f"{metric.name}: {why}")
            continue
        if metric.max is not None and reading.value > metric.max:
            outcome.passed = False
            outcome.reasons.append(f"{metric.name} = {reading.value:g} above max {metric.max:g}")
        if metric.min is not None and reading.value < metric.min:
            outcome.passed = False
            outcome.reasons.append(f"{metric.name} = {reading.value:g} below min {metric.min:g}")
        if metric.max_ratio is not None and stable is not None:  # None: no stable version (first deployment)
            base = stable.get(metric.name)
            if base is None or base.value is None:
                outcome.passed = False
                outcome.reasons.append(f"{metric.name}: no stable value to compare with")
            elif base.value > 0 and reading.value > metric.max_ratio * base.value:
                outcome.passed = False
                outcome.reasons.append(f"{metric.name} = {reading.value:g} above {metric.max_ratio:g}x stable "
                                       f"({base.value:g})")
            if base is not None and base.value is not None:
                outcome.readings[f"stable:{metric.name}"] = asdict(base)
    return outcome


def find_breach(readings: dict[str, MetricReading], conditions: list[GateCondition], min_requests: int) -> str | None:
    """A rollback condition that holds on conclusive readings (the between-checks measurement)."""
    samples = [r.sample_size for r in readings.values() if r.sample_size is not None]
    if samples and min(samples) < min_requests:
        return None
    for cond in conditions:
        reading = readings.get(cond.metric)
        if reading is not None and reading.value is not None and cond.breached(reading.value):
            return f"{cond.text} (measured {reading.value:g})"
    return None


@dataclass
class GateState:
    """Running totals of a gate; ``failures`` includes the failed checks of earlier steps."""

    failures: int
    failure_limit: int
    checks: int = 0

    def add(self, outcome: CheckOutcome) -> str | None:
        """Count a check; returns a rollback reason when this check ends the rollout."""
        self.checks += 1
        if outcome.breach:
            return f"rollback condition breached: {outcome.breach}"
        if not outcome.passed:
            self.failures += 1
            if self.failures > self.failure_limit:
                return (f"{self.failures} failed checks exceed the threshold of {self.failure_limit} "
                        f"(last: {'; '.join(outcome.reasons)})")
        return None
