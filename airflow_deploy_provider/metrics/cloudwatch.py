"""Metrics from Amazon CloudWatch (``metrics.provider: cloudwatch``), queried through an AWS connection."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_deploy_provider.metrics.base import MetricProvider, MetricQuery, MetricResult

DEFAULT_CONN_ID = "aws_default"
ALB_NAMESPACE = "AWS/ApplicationELB"
ROLES = ("stable", "canary")
PLACEHOLDER = re.compile(r"\{(service|version|environment|region|interval|target_group|load_balancer)\}")
LATENCY = re.compile(r"latency_p(\d{1,2}(?:\.\d+)?)")
ERROR_METRICS = ("error_rate", "availability")
# A gate check has to answer within its interval: short timeouts and a few retries (throttling is retried in
# "standard" mode). Options set in the connection's own botocore config (extra ``config_kwargs``) win.
CLIENT_DEFAULTS: dict[str, Any] = {"connect_timeout": 5, "read_timeout": 20,
                                   "retries": {"total_max_attempts": 3, "mode": "standard"}}
NO_PLATFORM = ("built-in CloudWatch metrics come from the ALB target groups of an ECS platform "
               "(platform.listener_rule_arn or platform.target_groups), and this platform has neither: "
               "give the metric a custom query in metrics.queries")


class NoData(Exception):
    """A measurement that cannot be made (no target group, no datapoints, a bad query): "no data"."""

    def __init__(self, message: str, sample_size: int | None = None):
        super().__init__(message)
        self.sample_size = sample_size


@dataclass(frozen=True)
class TargetGroup:
    """The ALB target group a role's tasks are registered in, with its CloudWatch dimension values."""

    role: str
    arn: str
    load_balancer_arn: str

    @property
    def dimension(self) -> str:
        """``targetgroup/<name>/<id>``: the ARN's resource part."""
        return self.arn.rsplit(":", 1)[-1]

    @property
    def load_balancer(self) -> str:
        """``app/<name>/<id>``: the load balancer ARN's resource part."""
        return self.load_balancer_arn.split(":loadbalancer/", 1)[-1]

    def dimensions(self) -> dict[str, str]:
        return {"TargetGroup": self.dimension, "LoadBalancer": self.load_balancer}


@dataclass(frozen=True)
class MetricSpec:
    """A custom query of one metric statistic: ``{"namespace", "metric", "dimensions", "stat", "scale"}``."""

    namespace: str
    metric: str
    dimensions: dict[str, str] = field(default_factory=dict)
    stat: str = "Average"
    scale: float = 1.0

    def describe(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dimensions.items())
        return f"{self.namespace} {self.metric} {self.stat}" + (f" ({dims})" if dims else "")


def period_seconds(window: timedelta) -> int:
    """One CloudWatch period covering ``window``: standard-resolution periods are multiples of 60 s."""
    return max(60, math.ceil(window.total_seconds() / 60) * 60)


def time_range(period: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or datetime.now(timezone.utc)
    return end - timedelta(seconds=period), end


def metric_stat(query_id: str, namespace: str, metric: str, dimensions: dict[str, str], stat: str,
                period: int) -> dict[str, Any]:
    """One ``MetricDataQueries`` entry of a ``MetricStat``."""
    return {"Id": query_id, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": metric,
                   "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
        "Period": period, "Stat": stat}}


def fill(template: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def parse_custom(text: str, values: dict[str, str]) -> MetricSpec | str:
    """A custom query: a JSON object is one metric statistic, any other text a metric math or Metrics Insights
    expression. Placeholders are filled in the JSON's strings after parsing (a value with quotes cannot break
    the JSON) and in the expression's text."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return fill(stripped, values)
    try:
        spec = json.loads(stripped)
    except ValueError as exc:
        raise NoData(f"custom CloudWatch query is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or not spec.get("namespace") or not spec.get("metric"):
        raise NoData('custom CloudWatch query needs "namespace" and "metric" '
                     '(and optionally "dimensions", "stat", "scale")')
    unknown = set(spec) - {"namespace", "metric", "dimensions", "stat", "scale"}
    if unknown:
        raise NoData(f"custom CloudWatch query has unknown keys: {', '.join(sorted(unknown))}")
    dims = spec.get("dimensions") or {}
    if not isinstance(dims, dict):
        raise NoData('"dimensions" of a custom CloudWatch query must be an object of name: value')
    try:
        scale = float(spec.get("scale", 1.0))
    except (TypeError, ValueError):
        raise NoData(f'"scale" of a custom CloudWatch query must be a number; got {spec["scale"]!r}') from None
    return MetricSpec(namespace=fill(str(spec["namespace"]), values), metric=fill(str(spec["metric"]), values),
                      dimensions={fill(str(k), values): fill(str(v), values) for k, v in dims.items()},
                      stat=str(spec.get("stat") or "Average"), scale=scale)


async def get_metric_data(client: Any, queries: list[dict[str, Any]], start: datetime,
                          end: datetime) -> dict[str, dict[str, list[float]]]:
    """Run ``GetMetricData`` (following ``NextToken``): query id -> series label -> values. A series may hold
    several datapoints when CloudWatch splits the range into more than one period."""
    out: dict[str, dict[str, list[float]]] = {q["Id"]: {} for q in queries}
    messages: list[dict[str, Any]] = []
    args: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end,
                            "ScanBy": "TimestampDescending"}
    while True:
        page = await client.get_metric_data(**args)
        for result in page.get("MetricDataResults", []):
            if result.get("StatusCode") in ("InternalError", "Forbidden"):
                detail = "; ".join(m.get("Value", "") for m in result.get("Messages", []))
                raise NoData(f"CloudWatch: {result['StatusCode']} for query {result.get('Id')}"
                             + (f": {detail}" if detail else ""))
            series = out.setdefault(result["Id"], {}).setdefault(result.get("Label") or result["Id"], [])
            series.extend(float(v) for v in result.get("Values", []))
        messages.extend(page.get("Messages", []))
        token = page.get("NextToken")
        if not token:
            break
        args["NextToken"] = token
    # Query-level messages (for example a Metrics Insights error) come without any datapoints: say why.
    errors = [m for m in messages if m.get("Code") not in (None, "", "MaxMetricsExceeded")]
    if errors and not any(values for series in out.values() for values in series.values()):
        raise NoData("CloudWatch: " + "; ".join(f"{m.get('Code')}: {m.get('Value', '')}" for m in errors))
    return out


def _values(data: dict[str, dict[str, list[float]]], query_id: str) -> list[float]:
    return [v for series in data.get(query_id, {}).values() for v in series]


def _create_client(hook: Any) -> Any:
    from botocore.config import Config

    config = Config(**CLIENT_DEFAULTS).merge(hook.config)
    return hook.get_client_type(region_name=hook.region_name, config=config, deferrable=True)


class CloudWatchMetricProvider(MetricProvider):
    """
    Runs ``GetMetricData`` against CloudWatch through the AWS connection ``metrics.connection`` (default: the
    platform's connection, else ``aws_default``), asynchronously (aiobotocore through the amazon provider's
    ``AwsBaseHook``), in the gate's trigger. Region: the query's, else the platform's, else the connection's.

    Built-in metrics come from the Application Load Balancer's per-target-group metrics (namespace
    ``AWS/ApplicationELB``, dimensions ``TargetGroup`` and ``LoadBalancer``) of the target group the measured
    version runs in (``MetricQuery.role``; none means stable):

    * ``error_rate``: percent of ``RequestCount`` answered ``HTTPCode_Target_5XX_Count``; ``availability``:
      100 minus that. No requests is no data (no traffic never passes a gate); requests without any 5XX
      datapoint are 0% errors;
    * ``latency_p50`` ... ``latency_p99``: that percentile of ``TargetResponseTime``, in milliseconds;
    * ``request_rate``: requests per second over the queried period.

    The sample size is the ``RequestCount`` sum. The target groups are the platform's ``target_groups``
    (``stable``, ``canary``) or else the forward action of its ``listener_rule_arn``, in order (stable first);
    the load balancer is the target group's. Both are looked up once per provider instance.

    A query in ``metrics.queries`` (or a custom metric's) replaces the built-in one: a JSON object
    ``{"namespace", "metric", "dimensions", "stat" (default Average), "scale" (default 1)}`` is one metric
    statistic; any other text is a metric math or Metrics Insights expression. ``{service}``, ``{version}``,
    ``{environment}``, ``{region}``, ``{interval}`` (seconds), ``{target_group}`` and ``{load_balancer}``
    are filled in. The value is scaled by ``scale``.

    Every query covers one period of at least ``metrics.min_window``, rounded up to whole minutes (ALB metrics
    have 1-minute resolution). When CloudWatch returns the range in several periods they are combined: sums
    and counts add up, an average is ``Sum / SampleCount`` over all of them, a minimum or maximum is the
    lowest or highest, a percentile is the highest (the worst period decides), an expression's values are
    averaged. No datapoints, throttling, missing permissions, a bad query or an unreachable endpoint are "no
    data" with the reason, never a pass and never an exception.
    """

    type = "cloudwatch"

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self.platform: dict[str, Any] = dict(settings.get("platform") or {})
        self.conn_id = settings.get("connection") or self.platform.get("connection") or DEFAULT_CONN_ID
        self.platform_conn_id = self.platform.get("connection") or self.conn_id
        self.queries: dict[str, str] = dict(settings.get("queries") or {})
        self.min_window = timedelta(seconds=float(settings.get("min_window") or 60))
        self._hooks: dict[tuple[str, str, str | None], Any] = {}
        self._targets: dict[tuple[str, str | None], TargetGroup] = {}

    # ------------------------------------------------------------------------------------------ AWS clients

    async def _client(self, service: str, conn_id: str, region: str | None) -> Any:
        """An aiobotocore client context (``async with await self._client(...) as client``)."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from asgiref.sync import sync_to_async

        key = (service, conn_id, region)
        if key not in self._hooks:
            self._hooks[key] = AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=region)
        # Creating the client reads the Airflow connection (blocking): off the event loop, like the hook's own
        # get_async_conn(), which cannot take a botocore config.
        return await sync_to_async(_create_client)(self._hooks[key])

    def region(self, query: MetricQuery) -> str | None:
        return query.region or self.platform.get("region") or None

    # ------------------------------------------------------------------------------------------ target groups

    async def target_group(self, role: str | None, region: str | None) -> TargetGroup:
        """The target group of a role (``None`` means stable), looked up once."""
        role = role or "stable"
        if role not in ROLES:
            raise NoData(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        cached = self._targets.get((role, region))
        if cached is not None:
            return cached
        explicit = (self.platform.get("target_groups") or {}).get(role)
        rule_arn = self.platform.get("listener_rule_arn")
        if not explicit and not rule_arn:
            raise NoData(NO_PLATFORM)
        # Concurrent checks may look the same group up twice on a cold cache: harmless reads, and no lock that
        # would tie the provider to one event loop.
        try:
            async with await self._client("elbv2", self.platform_conn_id, region) as elb:
                arn = explicit or await self._rule_target_group(elb, rule_arn, role)
                groups = (await elb.describe_target_groups(TargetGroupArns=[arn]))["TargetGroups"]
        except NoData:
            raise
        except Exception as exc:
            raise NoData(f"looking up the {role} target group failed: {type(exc).__name__}: {exc}") from None
        balancers = groups[0].get("LoadBalancerArns") if groups else None
        if not balancers:
            raise NoData(f"{role} target group {arn} is not attached to a load balancer: it has no ALB metrics")
        target = TargetGroup(role, arn, balancers[0])
        self._targets[(role, region)] = target
        return target

    @staticmethod
    async def _rule_target_group(elb: Any, rule_arn: str, role: str) -> str:
        rules = (await elb.describe_rules(RuleArns=[rule_arn]))["Rules"]
        action = next((a for a in (rules[0]["Actions"] if rules else []) if a.get("Type") == "forward"), None)
        if action is None:
            raise NoData(f"listener rule {rule_arn} has no forward action: no target groups to measure")
        groups = [g["TargetGroupArn"] for g in (action.get("ForwardConfig") or {}).get("TargetGroups") or []] \
            or [action["TargetGroupArn"]]
        index = ROLES.index(role)
        if index >= len(groups):
            raise NoData(f"listener rule {rule_arn} forwards to {len(groups)} target group(s): none for {role}")
        return groups[index]

    # ------------------------------------------------------------------------------------------ measuring

    async def evaluate(self, query: MetricQuery) -> MetricResult:
        name = query.metric.name
        period = period_seconds(max(query.window, self.min_window))
        region = self.region(query)
        template = query.query or self.queries.get(name)
        try:
            if template:
                return await self._custom(query, template, period, region)
            return await self._builtin(query, period, region)
        except NoData as exc:
            return MetricResult(name, None, exc.sample_size, str(exc))
        except Exception as exc:  # throttling, access denied, unreachable: no data, never a pass
            return MetricResult(name, None, None, f"CloudWatch query failed: {type(exc).__name__}: {exc}")

    async def _fetch(self, queries: list[dict[str, Any]], period: int,
                     region: str | None) -> dict[str, dict[str, list[float]]]:
        start, end = time_range(period)
        async with await self._client("cloudwatch", self.conn_id, region) as cloudwatch:
            return await get_metric_data(cloudwatch, queries, start, end)

    async def _builtin(self, query: MetricQuery, period: int, region: str | None) -> MetricResult:
        name = query.metric.name
        latency = LATENCY.fullmatch(name)
        if name not in (*ERROR_METRICS, "request_rate") and not latency:
            raise NoData(f"metric {name!r} has no built-in CloudWatch query: give it one in metrics.queries")
        target = await self.target_group(query.role, region)
        dims = target.dimensions()
        queries = [metric_stat("requests", ALB_NAMESPACE, "RequestCount", dims, "Sum", period)]
        if name in ERROR_METRICS:
            queries.append(metric_stat("errors", ALB_NAMESPACE, "HTTPCode_Target_5XX_Count", dims, "Sum", period))
        if latency:
            queries.append(metric_stat("latency", ALB_NAMESPACE, "TargetResponseTime", dims,
                                       f"p{latency.group(1)}", period))
        data = await self._fetch(queries, period, region)
        requests = _values(data, "requests")
        total = sum(requests)
        sample = int(round(total))
        where = f"{target.role} target group {target.dimension} in the last {period}s"
        if name in ERROR_METRICS:
            if total <= 0:
                raise NoData(f"no data: no requests to the {where}", sample)
            # No 5XX datapoint while requests were served: ALB publishes no 5XX count when there were none.
            percent = 100.0 * sum(_values(data, "errors")) / total
            return MetricResult(name, percent if name == "error_rate" else 100.0 - percent, sample)
        if latency:
            values = _values(data, "latency")
            if not values:
                raise NoData(f"no data: no TargetResponseTime datapoints for the {where}", sample)
            return MetricResult(name, 1000.0 * max(values), sample)  # seconds -> ms; the worst period
        if not requests:
            raise NoData(f"no data: no RequestCount datapoints for the {where}", sample)
        return MetricResult(name, total / period, sample)

    async def _custom(self, query: MetricQuery, template: str, period: int, region: str | None) -> MetricResult:
        name = query.metric.name
        values = {"service": query.service, "version": query.version, "environment": query.environment,
                  "region": region or "", "interval": str(period), "target_group": "", "load_balancer": ""}
        if "{target_group}" in template or "{load_balancer}" in template:
            target = await self.target_group(query.role, region)
            values.update(target_group=target.dimension, load_balancer=target.load_balancer)
        spec = parse_custom(template, values)
        if isinstance(spec, str):
            data = await self._fetch([{"Id": "value", "Expression": spec, "Period": period, "ReturnData": True}],
                                     period, region)
            series = {label: v for label, v in data.get("value", {}).items() if v}
            if not series:
                raise NoData(f"no data: the expression returned no datapoints in the last {period}s ({spec})")
            if len(series) > 1:
                raise NoData(f"the expression returned {len(series)} series; aggregate it to one "
                             f"(for example with SUM()) ({spec})")
            (points,) = series.values()
            return MetricResult(name, sum(points) / len(points))
        aggregated = await self._statistic(spec, period, region)
        if aggregated is None:
            raise NoData(f"no data: no datapoints of {spec.describe()} in the last {period}s")
        return MetricResult(name, aggregated * spec.scale)

    async def _statistic(self, spec: MetricSpec, period: int, region: str | None) -> float | None:
        """One statistic over the whole range, however many periods CloudWatch returns it in."""
        def stat(query_id: str, statistic: str) -> dict[str, Any]:
            return metric_stat(query_id, spec.namespace, spec.metric, spec.dimensions, statistic, period)

        if spec.stat == "Average":
            # The average of all datapoints, not the mean of per-period averages.
            data = await self._fetch([stat("total", "Sum"), stat("count", "SampleCount")], period, region)
            count = sum(_values(data, "count"))
            return sum(_values(data, "total")) / count if count > 0 else None
        data = await self._fetch([stat("value", spec.stat)], period, region)
        values = _values(data, "value")
        if not values:
            return None
        if spec.stat in ("Sum", "SampleCount"):
            return sum(values)
        if spec.stat == "Minimum":
            return min(values)
        return max(values)  # Maximum, percentiles and other extended statistics: the worst period
