"""The Prometheus metric provider and the metric gate against a real Prometheus server with backfilled series
(see ``tests/prometheus_series.py`` for what each version's traffic looks like)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from airflow_deploy_provider.config.types import MetricInfo
from airflow_deploy_provider.metrics.base import MetricQuery
from airflow_deploy_provider.metrics.prometheus import PrometheusMetricProvider
from tests.prometheus_series import SCENARIOS, openmetrics
from tests.servers import PrometheusServer, free_port


@pytest.fixture(scope="module")
def prometheus():
    server = PrometheusServer(openmetrics(list(SCENARIOS.values())))
    yield server
    server.stop()


@pytest.fixture
def prom_conn(prometheus, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_TEST", prometheus.connection_uri())
    return "prometheus_test"


def provider(conn: str, **settings) -> PrometheusMetricProvider:
    return PrometheusMetricProvider({"connection": conn, "namespace": "production", "min_window": 60, **settings})


def measure(p: PrometheusMetricProvider, metric: str, version: str, query: str | None = None,
            window: float = 30.0):
    return asyncio.run(p.evaluate(MetricQuery(MetricInfo(metric, "percent", "low", ""), "checkout", "production",
                                              version, timedelta(seconds=window), query=query)))


def test_default_queries_measure_error_rate_availability_latency_and_rate(prom_conn):
    p = provider(prom_conn)
    healthy = {m: measure(p, m, "2.0.0") for m in ("error_rate", "availability", "latency_p99", "request_rate")}
    assert healthy["error_rate"].value == pytest.approx(0.1, abs=1e-6)
    assert healthy["availability"].value == pytest.approx(99.9, abs=1e-6)
    assert healthy["latency_p99"].value == pytest.approx(99.5, abs=0.01)  # all requests in the 50-100 ms bucket
    assert healthy["request_rate"].value == pytest.approx(10.0, abs=1e-6)
    assert healthy["error_rate"].sample_size == 600  # 10 rps over the 1-minute minimum window
    assert measure(p, "error_rate", "2.0.1").value == pytest.approx(8.0, abs=1e-6)
    assert measure(p, "latency_p99", "2.0.4").value == pytest.approx(995.0, abs=0.1)
    assert measure(p, "latency_p50", "2.0.4").value == pytest.approx(750.0, abs=0.1)


def test_no_traffic_and_missing_series_are_no_data(prom_conn):
    p = provider(prom_conn)
    for metric in ("error_rate", "availability", "latency_p99"):
        flat = measure(p, metric, "2.0.2")  # series exist but never increase: 0/0 is NaN
        assert flat.no_data and "NaN" in flat.error and flat.sample_size == 0
        missing = measure(p, metric, "9.9.9")
        assert missing.no_data and "no series" in missing.error


def test_namespace_keeps_environments_apart(prom_conn):
    # staging runs 2.0.0 with 50% errors; production's gate must not see them, and staging's must.
    assert measure(provider(prom_conn), "error_rate", "2.0.0").value == pytest.approx(0.1, abs=1e-6)
    staging = PrometheusMetricProvider({"connection": prom_conn, "namespace": "staging"})
    result = asyncio.run(staging.evaluate(MetricQuery(MetricInfo("error_rate", "percent", "low", ""), "checkout",
                                                      "staging", "2.0.0", timedelta(seconds=60))))
    assert result.value == pytest.approx(50.0, abs=1e-6)
    # Without a namespace label the two environments' series add up.
    mixed = provider(prom_conn, labels={"namespace": ""})
    assert measure(mixed, "error_rate", "2.0.0").value == pytest.approx(25.05, abs=1e-6)


def test_query_templates_fill_placeholders(prom_conn):
    p = provider(prom_conn, queries={"error_rate": 'sum(rate(http_requests_total{service="{service}",'
                                                   'version="{version}",namespace="{namespace}",code="500"}'
                                                   '[{interval}])) * 60'})
    assert p.promql(MetricQuery(MetricInfo("error_rate", "percent", "low", ""), "checkout", "production", "2.0.1",
                                timedelta(seconds=90))).endswith('code="500"}[90s])) * 60')
    assert measure(p, "error_rate", "2.0.1").value == pytest.approx(48.0, abs=1e-6)  # 0.8 errors/s * 60
    custom = measure(p, "checkout_errors_per_minute", "2.0.1",
                     query='sum(increase(http_requests_total{version="{version}",code="500",'
                           'namespace="{namespace}"}[{interval}]))')
    assert custom.value == pytest.approx(48.0, abs=1e-6)


def test_label_and_series_names_are_configurable():
    p = provider("unused", labels={"service": "app", "version": "app_version", "code": "status",
                                   "namespace": "kubernetes_namespace"},
                 series={"requests": "requests_total", "duration": "latency_seconds"})
    q = MetricQuery(MetricInfo("error_rate", "percent", "low", ""), "checkout", "production", "2.0.0",
                    timedelta(seconds=120))
    assert p.promql(q) == (
        '100 * (sum(rate(requests_total{app="checkout", app_version="2.0.0", kubernetes_namespace="production", '
        'status=~"5.."}[120s])) or vector(0)) / sum(rate(requests_total{app="checkout", app_version="2.0.0", '
        'kubernetes_namespace="production"}[120s]))')
    lat = MetricQuery(MetricInfo("latency_p95", "ms", "low", ""), "checkout", "production", "2.0.0",
                      timedelta(seconds=10))
    assert p.promql(lat) == ('1000 * histogram_quantile(0.95, sum by (le) (rate(latency_seconds_bucket{app="checkout", '
                             'app_version="2.0.0", kubernetes_namespace="production"}[60s])))')


def test_errors_are_no_data_with_the_reason(prom_conn, monkeypatch):
    bad = measure(provider(prom_conn), "error_rate", "2.0.0", query="sum(rate(http_requests_total[")
    assert bad.no_data and "bad_data" in bad.error
    several = measure(provider(prom_conn), "x", "2.0.0", query="http_requests_total")
    assert several.no_data and "aggregate" in several.error
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DOWN", f"http://127.0.0.1:{free_port()}")
    down = measure(provider("prometheus_down"), "error_rate", "2.0.0")
    assert down.no_data and "Prometheus query failed" in down.error


GATE = {
    "metrics": [
        {"name": "error_rate", "unit": "percent", "max": 1.0, "min": None, "query": None, "max_ratio": None},
        {"name": "latency_p99", "unit": "ms", "max": 500.0, "min": None, "query": None, "max_ratio": None},
    ],
    "conditions": [{"text": "error_rate > 5%", "metric": "error_rate", "op": ">", "threshold": 5.0,
                    "unit": "percent", "query": None}],
    "interval": 0.3, "duration": 0.9, "min_requests": 100, "failure_limit": 1, "failures_so_far": 0,
    "budget": "canary",
}


def run_gate(conn: str, version: str, gate: dict | None = None, stable_version: str | None = "1.0.0") -> dict:
    from airflow_deploy_provider.ledger.hook import get_ledger
    from airflow_deploy_provider.triggers.metric_gate import MetricGateTrigger

    ledger = get_ledger("deploy_ledger")
    if ledger.get(f"gate-test/{version}") is None:
        ledger.start_deployment(id=f"gate-test/{version}", service="checkout", environment="production",
                                version=version)

    trigger = MetricGateTrigger(
        gate=gate or GATE, query={"service": "checkout", "environment": "production", "region": None,
                                  "version": version, "stable_version": stable_version},
        provider={"provider": "prometheus", "connection": conn, "namespace": "production", "min_window": 60},
        deployment_id=f"gate-test/{version}", ledger_conn_id="deploy_ledger", label="step_1_10pct")

    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def test_gate_promotes_a_healthy_canary(prom_conn, ledger):
    event = run_gate(prom_conn, "2.0.0")
    assert event["decision"] == "pass" and event["failures"] == 0 and event["checks"] >= 3
    checks = ledger.events("gate-test/2.0.0", kind="gate")
    assert checks and all(c.data["readings"]["error_rate"]["value"] == pytest.approx(0.1) for c in checks)


def test_gate_rolls_back_a_failing_canary_on_its_condition(prom_conn, ledger):
    event = run_gate(prom_conn, "2.0.1")
    assert event["decision"] == "rollback"
    assert "error_rate > 5%" in event["reason"]


def test_gate_never_promotes_a_canary_without_traffic(prom_conn, ledger):
    event = run_gate(prom_conn, "2.0.2")
    assert event["decision"] == "rollback"
    history = event["history"]
    assert history and all(not h["passed"] for h in history)
    assert any("no data" in json.dumps(h["readings"]) or "NaN" in json.dumps(h["readings"]) for h in history)


def test_gate_rolls_back_a_slow_canary(prom_conn, ledger):
    event = run_gate(prom_conn, "2.0.4")
    assert event["decision"] == "rollback"
    assert "latency_p99 = 995 above max 500" in json.dumps(event["history"])


def test_relative_bound_compares_canary_with_stable_over_the_same_window(prom_conn, ledger):
    gate = json.loads(json.dumps(GATE))
    gate["metrics"][0]["max_ratio"] = 1.5  # error rate at most 1.5x stable's (stable: 0.2%)
    assert run_gate(prom_conn, "2.0.0", gate)["decision"] == "pass"  # 0.1% < 0.3%
    event = run_gate(prom_conn, "2.0.5", gate)  # 0.5%: under the absolute 1%, but 2.5x stable
    assert event["decision"] == "rollback"
    text = json.dumps(event["history"])
    assert "above 1.5x stable (0.2)" in text and '"stable:error_rate"' in text
    # Without the relative bound the same canary passes: the absolute bound alone lets it through.
    assert run_gate(prom_conn, "2.0.5")["decision"] == "pass"
