"""Backfilled traffic for a real Prometheus in tests: a service's versions with known error rates, latencies
and request rates, as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``.

Series span ``now - 30 min`` to ``now + 30 min`` so that instant queries at "now" see steady traffic during a
test session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STEP = 5  # seconds between samples


@dataclass(frozen=True)
class Traffic:
    """One version's traffic: requests per second, share of 5xx, and the latency every request takes."""

    version: str
    rps: float
    error_share: float = 0.0
    latency: float = 0.08  # seconds; every request falls in the first bucket at or above it
    service: str = "checkout"
    namespace: str = "production"


# The versions tests ask about, and what a gate must decide for each.
SCENARIOS = {
    "1.0.0": Traffic("1.0.0", rps=40, error_share=0.002),  # stable: 0.2% errors
    "2.0.0": Traffic("2.0.0", rps=10, error_share=0.001),  # healthy canary
    "2.0.1": Traffic("2.0.1", rps=10, error_share=0.08),  # failing canary: 8% errors
    "2.0.2": Traffic("2.0.2", rps=0),  # canary with no traffic: series exist, never increase
    "2.0.4": Traffic("2.0.4", rps=10, error_share=0.001, latency=0.9),  # slow canary: p99 ~ 1 s
    "2.0.5": Traffic("2.0.5", rps=10, error_share=0.005),  # 0.5% errors: under 1%, but 2.5x stable
    # Another environment running the healthy version with errors: must not leak into production's gates.
    "staging:2.0.0": Traffic("2.0.0", rps=10, error_share=0.5, namespace="staging"),
    "staging:1.0.0": Traffic("1.0.0", rps=10, namespace="staging"),
    "staging:1.1.0": Traffic("1.1.0", rps=10, error_share=0.001, namespace="staging"),
}


def openmetrics(traffic: list[Traffic], now: float | None = None, span: int = 1800) -> str:
    now = time.time() if now is None else now
    start = int(now - span) // STEP * STEP
    times = range(start, int(now + span), STEP)
    lines = ["# HELP http_requests Requests served.", "# TYPE http_requests counter"]
    for t in traffic:
        labels = f'service="{t.service}",version="{t.version}",namespace="{t.namespace}"'
        for code, share in (("200", 1 - t.error_share), ("500", t.error_share)):
            for ts in times:
                lines.append(f'http_requests_total{{{labels},code="{code}"}} {t.rps * share * (ts - start):.3f} {ts}')
    lines += ["# HELP http_request_duration_seconds Request latency.", "# TYPE http_request_duration_seconds histogram"]
    for t in traffic:
        labels = f'service="{t.service}",version="{t.version}",namespace="{t.namespace}"'
        for le in (*BUCKETS, float("inf")):
            le_text = "+Inf" if le == float("inf") else f"{le:g}"
            for ts in times:
                count = t.rps * (ts - start) if t.latency <= le else 0.0
                lines.append(f'http_request_duration_seconds_bucket{{{labels},le="{le_text}"}} {count:.3f} {ts}')
        for ts in times:
            lines.append(f"http_request_duration_seconds_count{{{labels}}} {t.rps * (ts - start):.3f} {ts}")
        for ts in times:
            lines.append(f"http_request_duration_seconds_sum{{{labels}}} {t.rps * (ts - start) * t.latency:.3f} {ts}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
