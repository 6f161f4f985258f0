"""Report parsers: a tool's report (JSON or XML text) -> findings.

Each format's parser lives with the steps that produce it and is named here as ``module:function``
(``(text: str) -> list[Finding]``); a report that does not parse fails the step (an unreadable scan must never
count as a clean one).
"""

from __future__ import annotations

from pathlib import Path

from airflow_deploy_provider.steps import Finding, StepError

PARSERS = {
    "trivy": "airflow_deploy_provider.steps.scans:parse_trivy",
    "pip-audit": "airflow_deploy_provider.steps.scans:parse_pip_audit",
    "detect-secrets": "airflow_deploy_provider.steps.scans:parse_detect_secrets",
    "cyclonedx": "airflow_deploy_provider.steps.scans:parse_cyclonedx",
    "junit": "airflow_deploy_provider.steps.reports:parse_junit",
    "locust": "airflow_deploy_provider.steps.reports:parse_locust",
    "terraform-plan": "airflow_deploy_provider.steps.terraform:parse_plan",
}


def parse_report(fmt: str, text: str) -> list[Finding]:
    from airflow_deploy_provider.steps.defaults import builtin_function

    if fmt not in PARSERS:
        raise StepError(f"unknown report format {fmt!r}; known: {', '.join(PARSERS)}")
    try:
        return builtin_function(PARSERS[fmt])(text)
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error: the report is unreadable
        raise StepError(f"the {fmt} report could not be read: {type(exc).__name__}: {exc}") from exc


def read_report(fmt: str, path: str | None, stdout: str, work_dir: Path) -> tuple[list[Finding], str]:
    """Findings of a step's report (a file, or the standard output when ``path`` is None) and where it was."""
    if path is None:
        return parse_report(fmt, stdout), "stdout"
    file = Path(path) if Path(path).is_absolute() else work_dir / path
    if not file.is_file():
        raise StepError(f"the step wrote no {fmt} report at {file}")
    return parse_report(fmt, file.read_text(errors="replace")), str(file)


def parse_junit(text: str) -> list[Finding]:
    """JUnit XML (pytest ``--junitxml``): one finding per test case, ``passed`` False for failures/errors."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    out = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        failure = next((c for c in case if c.tag in ("failure", "error")), None)
        skipped = any(c.tag == "skipped" for c in case)
        out.append(Finding(tool="junit", kind="test", id=name, severity="HIGH" if failure is not None else "UNKNOWN",
                           title=(failure.get("message") or failure.tag)[:300] if failure is not None else
                           ("skipped" if skipped else "passed"),
                           passed=None if skipped else failure is None))
    return out


def parse_locust(text: str) -> list[Finding]:
    """Locust's ``--csv`` stats file (``<prefix>_stats.csv``): one finding per request name with its counts and
    latency percentiles in the title (``requests=... failures=... p50=... p95=... p99=... rps=...``)."""
    import csv
    import io

    out = []
    for row in csv.DictReader(io.StringIO(text)):
        name = row.get("Name") or ""
        requests_, failures = int(float(row.get("Request Count") or 0)), int(float(row.get("Failure Count") or 0))
        stats = {"requests": requests_, "failures": failures,
                 "p50": float(row.get("50%") or 0), "p95": float(row.get("95%") or 0),
                 "p99": float(row.get("99%") or 0), "rps": float(row.get("Requests/s") or 0)}
        out.append(Finding(tool="locust", kind="request", id=name or "Aggregated",
                           title=" ".join(f"{k}={v:g}" for k, v in stats.items()), passed=failures == 0))
    return out
