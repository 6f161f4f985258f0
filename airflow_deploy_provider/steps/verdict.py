"""Pass criteria of test suites with reports: load tests (Locust), performance benchmarks, test runs (JUnit)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_deploy_provider.steps import Finding

#: Failed requests a load test tolerates by default, in percent.
DEFAULT_REQUEST_FAILURES = 1.0


def _ms(value: Any) -> float | None:
    if value is None:
        return None
    return value.total_seconds() * 1000 if isinstance(value, timedelta) else float(value)


def judge_suite(fmt: str, findings: list[Finding], criteria: dict[str, Any] | None, exit_code: int,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict of a suite's report against its criteria: ``{"ok", "what", "stats"}``.

    With a report the report decides, not the exit status, except that an exit status other than 0 or 1
    (the tool itself failed: bad arguments, a crash) always fails.
    """
    criteria = criteria or {}
    if fmt == "locust":
        stats = _locust_stats(findings)
        problems = _locust_problems(stats, criteria, previous)
    elif fmt == "junit":
        stats = _junit_stats(findings)
        problems = _junit_problems(stats, criteria)
    else:
        stats = {"findings": len(findings)}
        problems = [] if exit_code == 0 else [f"exit status {exit_code}"]
    if exit_code not in (0, 1):
        problems.insert(0, f"the tool failed with exit status {exit_code}")
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
    return {"ok": not problems, "stats": stats,
            "what": f"{shown}; " + ("; ".join(problems) if problems else "criteria met")}


def _locust_stats(findings: list[Finding]) -> dict[str, Any]:
    row = next((f for f in findings if f.id == "Aggregated"), None) or (findings[-1] if findings else None)
    if row is None:
        return {"requests": 0, "failures": 0}
    stats: dict[str, Any] = {}
    for part in row.title.split():
        key, _, value = part.partition("=")
        stats[key] = float(value)
    for key in ("requests", "failures"):
        stats[key] = int(stats.get(key, 0))
    requests = stats["requests"]
    stats["failure_rate"] = round(100.0 * stats["failures"] / requests, 3) if requests else 0.0
    return stats


def _locust_problems(stats: dict[str, Any], criteria: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    problems = []
    least = criteria.get("min_requests") or 1
    if stats["requests"] < least:
        problems.append(f"{stats['requests']} requests, at least {least} needed for a verdict")
        return problems
    limit = criteria.get("max_failure_rate")
    limit = DEFAULT_REQUEST_FAILURES if limit is None else limit
    if stats["failure_rate"] > limit:
        problems.append(f"failure rate {stats['failure_rate']:g}% over {limit:g}%")
    for key in ("p95", "p99"):
        most = _ms(criteria.get(f"max_{key}"))
        if most is not None and stats.get(key, 0) > most:
            problems.append(f"{key} {stats[key]:g} ms over {most:g} ms")
    least_rps = criteria.get("min_rps")
    if least_rps is not None and stats.get("rps", 0) < least_rps:
        problems.append(f"{stats.get('rps', 0):g} requests/s, at least {least_rps:g} needed")
    growth = criteria.get("max_regression")
    if growth is not None and previous and previous.get("p95"):
        change = 100.0 * (stats.get("p95", 0) / previous["p95"] - 1)
        stats["p95_change"] = round(change, 1)
        if change > growth:
            problems.append(f"p95 {stats.get('p95', 0):g} ms is {change:.0f}% over the last passing run's "
                            f"{previous['p95']:g} ms (at most {growth:g}%)")
    return problems


def _junit_stats(findings: list[Finding]) -> dict[str, Any]:
    ran = [f for f in findings if f.kind == "test" and f.passed is not None]
    failed = sum(1 for f in ran if f.passed is False)
    return {"tests": len(ran), "failed": failed,
            "failure_rate": round(100.0 * failed / len(ran), 3) if ran else 0.0}


def _junit_problems(stats: dict[str, Any], criteria: dict[str, Any]) -> list[str]:
    least = criteria.get("min_requests") or 1
    if stats["tests"] < least:
        return [f"{stats['tests']} tests ran, at least {least} needed"]
    limit = criteria.get("max_failure_rate") or 0.0
    if stats["failure_rate"] > limit:
        return [f"{stats['failed']} of {stats['tests']} tests failed ({stats['failure_rate']:g}%, at most {limit:g}%)"]
    return []
