"""Metrics measured by the local platform's router (``metrics.provider: local``)."""

from __future__ import annotations

import json
from typing import Any

from airflow_deploy_provider.metrics.base import MetricProvider, MetricQuery, MetricResult
from airflow_deploy_provider.platforms.base import Target


class LocalMetricProvider(MetricProvider):
    """
    Reads the router's per-version statistics: ``error_rate`` (percent of 5xx), ``availability`` (percent of
    non-5xx), ``latency_p50/p90/p95/p99`` (ms) and ``request_rate`` (requests per second). No request in the
    window is no data. Custom metrics need a provider with a query language (Prometheus, CloudWatch).
    """

    type = "local"

    async def evaluate(self, query: MetricQuery) -> MetricResult:
        import aiohttp

        from airflow_deploy_provider.platforms.local.state import state_root

        name = query.metric.name
        key = Target(query.service, query.environment, query.region).key
        try:
            state = json.loads((state_root() / key / "state.json").read_text())
            port = state["router"]["ports"]["admin"]
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            return MetricResult(name, None, 0, f"no router for {key}: nothing deployed")
        url = f"http://127.0.0.1:{port}/admin/stats"
        params = {"version": query.version, "window": str(query.window.total_seconds())}
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, params=params) as resp:
                stats: dict[str, Any] = await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return MetricResult(name, None, None, f"router of {key} unreachable: {exc}")
        return value_of(name, stats)


def value_of(name: str, stats: dict[str, Any]) -> MetricResult:
    requests = int(stats.get("requests") or 0)
    if requests == 0:
        return MetricResult(name, None, 0, "no requests in the window")
    errors = int(stats.get("errors_5xx") or 0)
    if name == "error_rate":
        return MetricResult(name, 100.0 * errors / requests, requests)
    if name == "availability":
        return MetricResult(name, 100.0 * (requests - errors) / requests, requests)
    if name == "request_rate":
        return MetricResult(name, float(stats.get("rps") or 0.0), requests)
    if name.startswith("latency_"):
        value = (stats.get("latency_ms") or {}).get(name.removeprefix("latency_"))
        return MetricResult(name, float(value) if value is not None else None, requests,
                            None if value is not None else f"no {name} for this window")
    return MetricResult(name, None, requests, f"the local provider has no metric {name!r}; use Prometheus or "
                        "CloudWatch for custom metrics")
