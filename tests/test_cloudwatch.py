"""The CloudWatch metric provider and the metric gate against a real moto server: an ALB with a stable and a
canary target group (``tests/aws.py``) and ALB metrics put with ``put_metric_data`` a few seconds ago.

moto cannot compute percentiles (``Stat='p99'`` answers HTTP 500): the latency test alone stubs that call.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timedelta, timezone

import pytest

from airflow_deploy_provider.config.types import MetricInfo
from airflow_deploy_provider.metrics import cloudwatch
from airflow_deploy_provider.metrics.base import MetricQuery, MetricResult
from airflow_deploy_provider.metrics.cloudwatch import CloudWatchMetricProvider, period_seconds
from tests.aws import aws_connection, create_load_balancer, moto_server  # noqa: F401

REGION = "us-east-1"


@pytest.fixture
def alb(moto_server, monkeypatch):  # noqa: F811
    """A fresh moto state, the ``aws_test`` connection, and the ALB with its two target groups."""
    moto_server.reset()
    aws_connection(monkeypatch, moto_server, "aws_test", REGION)
    return create_load_balancer(moto_server)


def dims(alb, target_group_arn: str) -> list[dict[str, str]]:
    return [{"Name": "TargetGroup", "Value": target_group_arn.rsplit(":", 1)[1]},
            {"Name": "LoadBalancer", "Value": alb.dimension}]


def put_alb(server, alb, target_group_arn: str, requests: float | None = None, errors: float | None = None,
            age: float = 5.0) -> None:
    """ALB target-group metrics of one minute, ``age`` seconds ago."""
    at = datetime.now(timezone.utc) - timedelta(seconds=age)
    data = [{"MetricName": name, "Dimensions": dims(alb, target_group_arn), "Timestamp": at, "Value": value,
             "Unit": "Count"}
            for name, value in (("RequestCount", requests), ("HTTPCode_Target_5XX_Count", errors))
            if value is not None]
    server.client("cloudwatch").put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)


def provider(alb=None, platform_settings: dict | None = None, **settings) -> CloudWatchMetricProvider:
    """The provider as the DAG factory configures it on an ECS platform behind ``alb``."""
    platform = {"type": "ecs", "connection": "aws_test", "region": REGION, "cluster": "shop",
                "listener_rule_arn": alb.rule_arn if alb else None, "target_groups": None,
                **(platform_settings or {})}
    return CloudWatchMetricProvider({"provider": "cloudwatch", "connection": "aws_test", "queries": {},
                                     "min_window": 60, "platform": platform, "namespace": "production",
                                     **settings})


def measure(p: CloudWatchMetricProvider, metric: str, role: str | None = "canary", query: str | None = None,
            window: float = 30.0, version: str = "2.0.1", region: str | None = None) -> MetricResult:
    return asyncio.run(p.evaluate(MetricQuery(MetricInfo(metric, "percent", "low", ""), "checkout", "production",
                                              version, timedelta(seconds=window), region=region, query=query,
                                              role=role)))


def test_error_rate_availability_request_rate_and_sample_size_per_target_group(moto_server, alb):  # noqa: F811
    put_alb(moto_server, alb, alb.canary_tg, requests=600, errors=3)
    put_alb(moto_server, alb, alb.stable_tg, requests=1200, errors=600)  # a sick stable must not leak in
    p = provider(alb)
    canary = {m: measure(p, m) for m in ("error_rate", "availability", "request_rate")}
    assert canary["error_rate"].value == pytest.approx(0.5)
    assert canary["availability"].value == pytest.approx(99.5)
    assert canary["request_rate"].value == pytest.approx(10.0)  # 600 requests over the 60 s minimum window
    assert {r.sample_size for r in canary.values()} == {600}
    assert all(r.error is None for r in canary.values())
    stable = measure(p, "error_rate", role="stable")
    assert (stable.value, stable.sample_size) == (pytest.approx(50.0), 1200)
    assert measure(p, "error_rate", role=None).value == pytest.approx(50.0)  # no role: the stable group


def test_failing_canary(moto_server, alb):  # noqa: F811
    put_alb(moto_server, alb, alb.canary_tg, requests=500, errors=40)
    put_alb(moto_server, alb, alb.stable_tg, requests=5000, errors=5)
    result = measure(provider(alb), "error_rate")
    assert (result.value, result.sample_size, result.error) == (pytest.approx(8.0), 500, None)
    assert measure(provider(alb), "availability").value == pytest.approx(92.0)


def test_no_traffic_is_no_data_and_missing_5xx_is_no_errors(moto_server, alb):  # noqa: F811
    put_alb(moto_server, alb, alb.stable_tg, requests=1000, errors=1)
    p = provider(alb)
    for metric in ("error_rate", "availability", "request_rate"):
        idle = measure(p, metric)  # the canary group has no datapoints at all
        assert idle.no_data and idle.sample_size == 0 and "canary target group targetgroup/checkout-canary/" in \
            idle.error and idle.error.startswith("no data")
    put_alb(moto_server, alb, alb.canary_tg, requests=0, errors=0)  # datapoints, but zero requests
    zero = measure(p, "error_rate")
    assert zero.no_data and "no requests" in zero.error and zero.sample_size == 0
    assert measure(p, "request_rate").value == 0.0  # a rate of zero is a measurement

    moto_server.reset()
    alb2 = create_load_balancer(moto_server)
    put_alb(moto_server, alb2, alb2.canary_tg, requests=300)  # no HTTPCode_Target_5XX_Count series
    p = provider(alb2)
    clean = {m: measure(p, m) for m in ("error_rate", "availability")}
    assert clean["error_rate"].value == 0.0 and clean["availability"].value == 100.0
    assert clean["error_rate"].sample_size == 300


def test_window_is_one_period_of_at_least_min_window_in_whole_minutes(moto_server, alb):  # noqa: F811
    assert [period_seconds(timedelta(seconds=s)) for s in (1, 30, 60, 61, 90, 120, 600.5)] == \
        [60, 60, 60, 120, 120, 120, 660]
    put_alb(moto_server, alb, alb.canary_tg, requests=600, errors=6, age=100)  # outside the last minute
    assert measure(provider(alb), "error_rate", window=30).no_data
    wide = measure(provider(alb), "request_rate", window=90)  # one 120 s period
    assert (wide.value, wide.sample_size) == (pytest.approx(5.0), 600)
    assert measure(provider(alb, min_window=120), "error_rate", window=30).value == pytest.approx(1.0)


def test_target_groups_from_the_listener_rule_are_looked_up_once(moto_server, alb):  # noqa: F811
    put_alb(moto_server, alb, alb.canary_tg, requests=100, errors=2)
    p = provider(alb)
    assert measure(p, "error_rate").value == pytest.approx(2.0)
    canary = asyncio.run(p.target_group("canary", REGION))
    assert canary.arn == alb.canary_tg and canary.dimension.startswith("targetgroup/checkout-canary/")
    assert canary.load_balancer == alb.dimension and canary.load_balancer.startswith("app/checkout-alb/")
    # The rule goes away: the cached resolution keeps measuring; a new provider cannot resolve any more.
    moto_server.client("elbv2").delete_rule(RuleArn=alb.rule_arn)
    assert measure(p, "error_rate").value == pytest.approx(2.0)
    fresh = measure(provider(alb), "error_rate")
    assert fresh.no_data and "looking up the canary target group failed" in fresh.error
    assert "RuleNotFound" in fresh.error


def test_explicit_target_groups_win_over_the_listener_rule(moto_server, alb):  # noqa: F811
    put_alb(moto_server, alb, alb.stable_tg, requests=200, errors=20)
    put_alb(moto_server, alb, alb.canary_tg, requests=400, errors=4)
    swapped = provider(alb, platform_settings={"target_groups": {"stable": alb.canary_tg, "canary": alb.stable_tg}})
    assert measure(swapped, "error_rate").value == pytest.approx(10.0)
    assert measure(swapped, "error_rate", role="stable").value == pytest.approx(1.0)
    only_groups = provider(None, platform_settings={"target_groups": {"stable": alb.stable_tg,
                                                                      "canary": alb.canary_tg}})
    assert measure(only_groups, "error_rate").value == pytest.approx(1.0)
    assert measure(only_groups, "error_rate", role="blue").error.startswith("unknown role 'blue'")


def test_region_comes_from_the_query_then_the_platform(moto_server, alb):  # noqa: F811
    put_alb(moto_server, alb, alb.canary_tg, requests=100, errors=1)
    p = provider(alb)
    assert measure(p, "error_rate", region=REGION).value == pytest.approx(1.0)
    elsewhere = measure(p, "error_rate", region="eu-west-1")  # the rule exists in us-east-1 only
    assert elsewhere.no_data and "RuleNotFound" in elsewhere.error
    assert p.region(MetricQuery(MetricInfo("x", "count", "low", ""), "s", "e", "v", timedelta(0))) == REGION


def test_without_an_ecs_load_balancer_builtin_metrics_are_no_data(moto_server, alb):  # noqa: F811
    p = CloudWatchMetricProvider({"provider": "cloudwatch", "connection": "aws_test",
                                  "platform": {"type": "kubernetes", "namespace": "shop"}})
    result = measure(p, "error_rate")
    assert result.no_data and "custom query in metrics.queries" in result.error
    unknown = measure(provider(alb), "queue_depth")
    assert unknown.no_data and "no built-in CloudWatch query" in unknown.error


def test_custom_metric_stat_queries_fill_placeholders(moto_server, alb):  # noqa: F811
    cw = moto_server.client("cloudwatch")
    at = datetime.now(timezone.utc) - timedelta(seconds=5)

    def put(version: str, metric: str, values: list[float]) -> None:
        dimensions = [{"Name": "Service", "Value": "checkout"}, {"Name": "Version", "Value": version},
                      {"Name": "Region", "Value": REGION}]
        cw.put_metric_data(Namespace="Shop/production", MetricData=[
            {"MetricName": metric, "Dimensions": dimensions, "Timestamp": at, "Value": v} for v in values])

    put("2.0.1", "PaymentsFailed", [4, 6])
    put("2.0.0", "PaymentsFailed", [100])  # another version: not counted
    put("2.0.1", "CheckoutMs", [100, 200, 600])
    spec = {"namespace": "Shop/{environment}", "metric": "PaymentsFailed", "stat": "Sum", "scale": 0.5,
            "dimensions": {"Service": "{service}", "Version": "{version}", "Region": "{region}"}}
    p = provider(alb, queries={"payments_failed": json.dumps(spec)})
    failed = measure(p, "payments_failed")
    assert (failed.value, failed.sample_size, failed.error) == (pytest.approx(5.0), None, None)
    assert measure(p, "payments_failed", version="2.0.0").value == pytest.approx(50.0)
    average = measure(p, "checkout_ms", query=json.dumps({**spec, "metric": "CheckoutMs", "stat": "Average",
                                                             "scale": 1}))
    assert average.value == pytest.approx(300.0)
    assert measure(p, "checkout_ms", query=json.dumps({**spec, "metric": "CheckoutMs",
                                                       "stat": "Maximum"})).value == pytest.approx(300.0)  # *0.5
    assert measure(p, "payments_failed", version="9.9.9").error.startswith("no data: no datapoints of Shop/production")

    # {target_group} and {load_balancer}: the role's ALB dimensions.
    put_alb(moto_server, alb, alb.canary_tg, requests=321)
    alb_spec = {"namespace": "AWS/ApplicationELB", "metric": "RequestCount", "stat": "Sum",
                "dimensions": {"TargetGroup": "{target_group}", "LoadBalancer": "{load_balancer}"}}
    assert measure(p, "canary_requests", query=json.dumps(alb_spec)).value == pytest.approx(321.0)
    assert measure(p, "stable_requests", role="stable", query=json.dumps(alb_spec)).no_data


def test_bad_custom_queries_and_expressions_are_no_data_with_the_reason(alb):
    p = provider(alb)
    bad = measure(p, "x", query='{"namespace": "Shop", "metric": ')
    assert bad.no_data and "not valid JSON" in bad.error
    assert "needs \"namespace\" and \"metric\"" in measure(p, "x", query='{"namespace": "Shop"}').error
    assert "unknown keys: period" in measure(p, "x", query='{"namespace": "S", "metric": "M", "period": 5}').error
    # Any other text is an expression (moto evaluates no metric math: empty), with placeholders filled in.
    expression = measure(p, "x", query="SUM(SEARCH('{AWS/ApplicationELB} {service}', 'Sum', {interval}))")
    assert expression.no_data
    assert expression.error == ("no data: the expression returned no datapoints in the last 60s "
                                "(SUM(SEARCH('{AWS/ApplicationELB} checkout', 'Sum', 60)))")


def test_latency_percentile_in_milliseconds(moto_server, alb, monkeypatch):  # noqa: F811
    # moto answers a percentile Stat with HTTP 500: that one query is stubbed; RequestCount (the sample
    # size) still comes from moto.
    put_alb(moto_server, alb, alb.canary_tg, requests=600, errors=0)
    real = cloudwatch.get_metric_data
    percentiles = {"p99": [0.120, 0.250, 0.180], "p95": [0.080]}  # seconds, per returned period
    asked: list[dict] = []

    async def stub(client, queries, start, end):
        stubbed = [q for q in queries if q["MetricStat"]["Stat"].startswith("p")]
        out = await real(client, [q for q in queries if q not in stubbed], start, end)
        for q in stubbed:
            asked.append(q["MetricStat"])
            values = percentiles.get(q["MetricStat"]["Stat"])
            out[q["Id"]] = {"TargetResponseTime": values} if values else {}
        return out

    monkeypatch.setattr(cloudwatch, "get_metric_data", stub)
    p = provider(alb)
    p99 = measure(p, "latency_p99")
    assert (p99.value, p99.sample_size, p99.error) == (pytest.approx(250.0), 600, None)  # the worst period
    assert measure(p, "latency_p95").value == pytest.approx(80.0)
    assert asked[0] == {"Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "TargetResponseTime",
                                   "Dimensions": dims(alb, alb.canary_tg)}, "Period": 60, "Stat": "p99"}
    missing = measure(p, "latency_p50")
    assert missing.no_data and "no TargetResponseTime datapoints" in missing.error and missing.sample_size == 600


def test_client_config_defaults_and_the_connection_config_wins(moto_server, alb, monkeypatch):  # noqa: F811
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    monkeypatch.setenv("AIRFLOW_CONN_AWS_TUNED", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_server.endpoint, "region_name": REGION,
                  "config_kwargs": {"read_timeout": 7, "retries": {"total_max_attempts": 1}}}}))

    async def config(conn_id: str):
        async with cloudwatch._create_client(AwsBaseHook(aws_conn_id=conn_id, client_type="cloudwatch")) as c:
            return c.meta.config

    default, tuned = asyncio.run(config("aws_test")), asyncio.run(config("aws_tuned"))
    assert (default.connect_timeout, default.read_timeout, default.retries) == \
        (5, 20, {"total_max_attempts": 3, "mode": "standard"})
    assert (tuned.connect_timeout, tuned.read_timeout, tuned.retries["total_max_attempts"]) == (5, 7, 1)


def test_unreachable_endpoint_is_no_data_with_the_reason(alb, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # One attempt (the connection's botocore config): the default retries would add seconds of backoff.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DOWN", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": REGION,
                  "config_kwargs": {"retries": {"total_max_attempts": 1}}}}))
    down = provider(alb, connection="aws_down", platform_settings={"connection": "aws_down"})
    builtin = measure(down, "error_rate")
    assert builtin.no_data and "looking up the canary target group failed: EndpointConnectionError" in builtin.error
    custom = measure(down, "x", query='{"namespace": "Shop", "metric": "Orders", "stat": "Sum"}')
    assert custom.no_data and custom.error.startswith("CloudWatch query failed: EndpointConnectionError")
    assert f"127.0.0.1:{port}" in custom.error


GATE = {
    "metrics": [{"name": "error_rate", "unit": "percent", "max": 1.0, "min": None, "query": None,
                 "max_ratio": None}],
    "conditions": [{"text": "error_rate > 5%", "metric": "error_rate", "op": ">", "threshold": 5.0,
                    "unit": "percent", "query": None}],
    "interval": 0.3, "duration": 0.6, "min_requests": 100, "failure_limit": 0, "failures_so_far": 0,
    "budget": "canary",
}


def run_gate(alb, deployment: str) -> dict:
    from airflow_deploy_provider.ledger.hook import get_ledger
    from airflow_deploy_provider.triggers.metric_gate import MetricGateTrigger

    get_ledger("deploy_ledger").start_deployment(id=deployment, service="checkout", environment="production",
                                                 version="2.0.1")
    trigger = MetricGateTrigger(
        gate=GATE, query={"service": "checkout", "environment": "production", "region": REGION,
                          "version": "2.0.1", "stable_version": "2.0.0", "role": "canary"},
        provider=provider(alb).settings, deployment_id=deployment, ledger_conn_id="deploy_ledger",
        label="step_1_10pct")

    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def test_gate_measures_the_canary_target_group(moto_server, alb, ledger):  # noqa: F811
    put_alb(moto_server, alb, alb.stable_tg, requests=1000, errors=500)
    put_alb(moto_server, alb, alb.canary_tg, requests=600, errors=3)
    event = run_gate(alb, "gate-cw/healthy")
    assert event["decision"] == "pass"
    assert all(h["readings"]["error_rate"]["value"] == pytest.approx(0.5) for h in event["history"])

    put_alb(moto_server, alb, alb.canary_tg, requests=400, errors=77)  # now 80 of 1000: 8%
    event = run_gate(alb, "gate-cw/failing")
    assert event["decision"] == "rollback" and "error_rate > 5%" in event["reason"]
    assert ledger.events("gate-cw/failing", kind="gate")
