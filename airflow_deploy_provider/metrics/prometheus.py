"""Metrics from Prometheus (``metrics.provider: prometheus``), queried through an HTTP connection."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from airflow_deploy_provider.metrics.base import MetricProvider, MetricQuery, MetricResult

DEFAULT_CONN_ID = "prometheus_default"
DEFAULT_LABELS = {"service": "service", "version": "version", "code": "code", "namespace": "namespace"}
DEFAULT_SERIES = {"requests": "http_requests_total", "duration": "http_request_duration_seconds"}
PLACEHOLDER = re.compile(r"\{(service|version|namespace|interval|environment|region)\}")
QUERY_TIMEOUT = 10.0


def promql_duration(window: timedelta) -> str:
    """A window as a PromQL duration (``90s``, ``1500ms``)."""
    ms = int(round(window.total_seconds() * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class PrometheusMetricProvider(MetricProvider):
    """
    Runs PromQL instant queries against the Prometheus HTTP API (``/api/v1/query``) of the connection
    ``metrics.connection`` (an HTTP connection; default ``prometheus_default``), asynchronously, in the gate's
    trigger.

    Built-in metrics use the request counter (``metrics.series.requests``, default ``http_requests_total``)
    and the latency histogram (``metrics.series.duration``, default ``http_request_duration_seconds``),
    selected by the labels in ``metrics.labels`` (``service``, ``version``, ``code``, ``namespace``; a
    label mapped to ``""`` is not matched):

    * ``error_rate``: percent of requests answered 5xx; ``availability``: percent answered otherwise;
    * ``latency_p50`` ... ``latency_p99``: the quantile of the histogram, in milliseconds;
    * ``request_rate``: requests per second.

    A query in ``metrics.queries`` (or a custom metric's) replaces the built-in one; ``{service}``,
    ``{version}``, ``{namespace}``, ``{interval}`` are filled in. Every query covers at least
    ``metrics.min_window``. An empty result, NaN or an error is "no data", never a pass. The sample size
    (requests in the window) comes from the counter's ``increase()``.
    """

    type = "prometheus"

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self.conn_id = settings.get("connection") or DEFAULT_CONN_ID
        self.labels = {**DEFAULT_LABELS, **(settings.get("labels") or {})}
        self.series = {**DEFAULT_SERIES, **(settings.get("series") or {})}
        self.queries: dict[str, str] = dict(settings.get("queries") or {})
        self.namespace = settings.get("namespace") or ""
        self.min_window = timedelta(seconds=float(settings.get("min_window") or 60))

    # ------------------------------------------------------------------------------------------ queries

    def selector(self, query: MetricQuery, extra: str = "") -> str:
        values = {"service": query.service, "version": query.version, "namespace": self.namespace}
        matchers = [f'{self.labels[k]}="{_quote(v)}"' for k, v in values.items() if self.labels.get(k) and v]
        if extra:
            matchers.append(extra)
        return "{" + ", ".join(matchers) + "}"

    def promql(self, query: MetricQuery) -> str:
        """The PromQL of one measurement."""
        window = promql_duration(max(query.window, self.min_window))
        name = query.metric.name
        template = query.query or self.queries.get(name)
        if template:
            values = {"service": query.service, "version": query.version, "namespace": self.namespace,
                      "interval": window, "environment": query.environment, "region": query.region or ""}
            return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
        requests, sel = self.series["requests"], self.selector(query)
        errors = self.selector(query, f'{self.labels["code"]}=~"5.."')
        total = f"sum(rate({requests}{sel}[{window}]))"
        # "or vector(0)": no 5xx series at all means no errors, not no data; no traffic stays no data.
        failed = f"(sum(rate({requests}{errors}[{window}])) or vector(0))"
        if name == "error_rate":
            return f"100 * {failed} / {total}"
        if name == "availability":
            return f"100 * (1 - {failed} / {total})"
        if name == "request_rate":
            return total
        match = re.fullmatch(r"latency_p(\d{1,2}(?:\.\d+)?)", name)
        if match:
            quantile = float(match.group(1)) / 100
            return (f"1000 * histogram_quantile({quantile:g}, sum by (le) "
                    f"(rate({self.series['duration']}_bucket{sel}[{window}])))")
        raise ValueError(f"metric {name!r} has no built-in Prometheus query: give it one in metrics.queries")

    def sample_promql(self, query: MetricQuery) -> str:
        window = promql_duration(max(query.window, self.min_window))
        return f"sum(increase({self.series['requests']}{self.selector(query)}[{window}]))"

    # ------------------------------------------------------------------------------------------ the API

    async def _instant(self, http: Any, promql: str) -> tuple[float | None, str | None]:
        import aiohttp

        response = await http.run(endpoint="api/v1/query", data={"query": promql},
                                  extra_options={"check_response": False,
                                                 "timeout": aiohttp.ClientTimeout(total=QUERY_TIMEOUT)})
        try:
            body = await response.json(content_type=None)
        except ValueError:
            return None, f"Prometheus answered HTTP {response.status} without JSON"
        if body.get("status") != "success":
            return None, f"Prometheus: {body.get('errorType', 'error')}: {body.get('error', response.status)}"
        data = body.get("data") or {}
        result = data.get("result")
        if data.get("resultType") == "scalar":
            raw = result[1] if result else None
        elif not result:
            return None, "no data: the query returned no series"
        elif len(result) > 1:
            return None, f"the query returned {len(result)} series; aggregate it to one (for example with sum())"
        else:
            raw = result[0]["value"][1]
        value = float(raw) if raw is not None else math.nan
        if math.isnan(value) or math.isinf(value):
            return None, f"no data: the query returned {raw}"
        return value, None

    async def evaluate(self, query: MetricQuery) -> MetricResult:
        from airflow.providers.http.hooks.http import HttpAsyncHook

        name = query.metric.name
        try:
            promql = self.promql(query)
        except ValueError as exc:
            return MetricResult(name, None, None, str(exc))
        hook = HttpAsyncHook(method="GET", http_conn_id=self.conn_id, retry_limit=2, retry_delay=0.5)
        try:
            async with hook.session() as http:
                value, error = await self._instant(http, promql)
                sample = None
                if not (query.query or self.queries.get(name)):
                    count, _ = await self._instant(http, self.sample_promql(query))
                    sample = int(round(count)) if count is not None else 0
        except Exception as exc:  # unreachable, timeouts, bad connection: no data, never a pass
            return MetricResult(name, None, None, f"Prometheus query failed: {type(exc).__name__}: {exc}")
        if value is None:
            return MetricResult(name, None, sample, f"{error} ({promql})")
        return MetricResult(name, value, sample)
