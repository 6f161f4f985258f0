"""The metric gate's decision rules (airflow_deploy_provider/gates.py)."""

from __future__ import annotations

from airflow_deploy_provider.gates import (
    GateCondition,
    GateMetric,
    GateState,
    MetricReading,
    evaluate_check,
    find_breach,
)

METRICS = [GateMetric("error_rate", "percent", max=0.1), GateMetric("latency_p99", "ms", max=500.0)]
CONDITIONS = [GateCondition("error_rate > 1%", "error_rate", ">", 1.0, "percent"),
              GateCondition("latency_p99 > 1000ms", "latency_p99", ">", 1000.0, "ms")]


def readings(error_rate=0.0, p99=100.0, requests=100, **extra):
    out = {"error_rate": MetricReading("error_rate", error_rate, requests),
           "latency_p99": MetricReading("latency_p99", p99, requests)}
    out.update(extra)
    return out


def test_healthy_check_passes():
    outcome = evaluate_check(1, readings(), METRICS, CONDITIONS, min_requests=20)
    assert outcome.passed and outcome.verdict == "pass" and outcome.requests == 100


def test_bound_exceeded_fails_without_breach():
    outcome = evaluate_check(1, readings(error_rate=0.5), METRICS, CONDITIONS, 20)
    assert outcome.verdict == "fail" and outcome.breach is None
    assert "error_rate = 0.5 above max 0.1" in outcome.reasons


def test_condition_is_a_breach():
    outcome = evaluate_check(1, readings(p99=1500), METRICS, CONDITIONS, 20)
    assert outcome.verdict == "breach" and outcome.breach.startswith("latency_p99 > 1000ms")


def test_no_data_never_passes():
    outcome = evaluate_check(1, {"error_rate": MetricReading("error_rate", None, None, "no requests"),
                                 "latency_p99": MetricReading("latency_p99", 10.0, None)}, METRICS, CONDITIONS, 0)
    assert not outcome.passed and "error_rate: no requests" in outcome.reasons


def test_provider_error_never_passes():
    outcome = evaluate_check(1, readings(latency_p99=None) | {
        "latency_p99": MetricReading("latency_p99", None, None, "provider error: timeout")}, METRICS, CONDITIONS, 0)
    assert not outcome.passed and "latency_p99: provider error: timeout" in outcome.reasons


def test_thin_traffic_is_inconclusive_not_a_pass_and_not_a_breach():
    outcome = evaluate_check(1, readings(error_rate=50.0, requests=3), METRICS, CONDITIONS, min_requests=20)
    assert outcome.verdict == "inconclusive" and not outcome.passed and outcome.breach is None


def test_failure_budget_is_cumulative_and_breach_is_immediate():
    state = GateState(failures=4, failure_limit=5)  # four failed checks in earlier steps
    fail = evaluate_check(1, readings(error_rate=0.5), METRICS, CONDITIONS, 20)
    assert state.add(fail) is None  # the fifth is tolerated
    reason = state.add(fail)
    assert reason and "6 failed checks exceed the threshold of 5" in reason
    fresh = GateState(failures=0, failure_limit=5)
    assert "rollback condition breached" in fresh.add(evaluate_check(1, readings(error_rate=2.0), METRICS,
                                                                     CONDITIONS, 20))


def test_breach_between_checks_needs_conclusive_readings():
    assert find_breach(readings(error_rate=3.0), CONDITIONS, 20).startswith("error_rate > 1%")
    assert find_breach(readings(error_rate=3.0, requests=5), CONDITIONS, 20) is None
    assert find_breach(readings(), CONDITIONS, 20) is None


def test_metric_descriptions():
    assert GateMetric("error_rate", "percent", max=0.1).describe() == "error_rate <= 0.1%"
    assert GateMetric("availability", "percent", min=99.9).describe() == "availability >= 99.9%"
