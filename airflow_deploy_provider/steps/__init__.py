"""Pipeline steps around the deployment (build, scans, promotion, infrastructure, monitoring set-up, docs).

This package holds *how* a step runs on the worker (commands, HTTP requests, built-in steps, report parsing),
free of Airflow task code; :mod:`airflow_deploy_provider.operators.steps` decides *when*, and records the
result in the ledger. Pod-mode steps run through the cncf.kubernetes pod operator instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_deploy_provider.ledger.store import DeploymentLedger

#: Severity order, most severe first (scanners' own names are mapped onto these).
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
DEFAULT_BLOCK_ON = ("CRITICAL", "HIGH")
HOTFIX_BLOCK_ON = ("CRITICAL",)


class StepError(Exception):
    """A step could not run (missing tool, bad report, refused request): the step fails with this message."""


@dataclass
class Finding:
    """One finding of a report: a CVE, a leaked secret, a failed test, an SBOM component, a planned change."""

    tool: str
    kind: str  # cve | secret | test | component | change | request
    id: str
    severity: str = "UNKNOWN"
    title: str = ""
    location: str = ""
    passed: bool | None = None  # tests: whether it passed

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass
class StepResult:
    """What a step did. ``ok`` False fails the task; ``data`` is merged into the ledger event."""

    ok: bool
    summary: str
    exit_code: int | None = None
    findings: list[Finding] = field(default_factory=list)
    blocking: int = 0
    changed: bool | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Findings by severity (CVEs and secrets) or by outcome (tests)."""
        return dict(Counter(f.severity for f in self.findings if f.kind in ("cve", "secret")))

    def ledger_data(self, limit: int = 50) -> dict[str, Any]:
        """The event's data: counts, blocking, artifacts, and the first ``limit`` findings (most severe first)."""
        order = {s: i for i, s in enumerate(SEVERITIES)}
        top = sorted(self.findings, key=lambda f: order.get(f.severity, len(order)))[:limit]
        return {"ok": self.ok, "exit_code": self.exit_code, "summary": self.summary, "counts": self.counts(),
                "findings_total": len(self.findings), "blocking": self.blocking, "changed": self.changed,
                "artifacts": self.artifacts, "findings": [f.to_dict() for f in top], **self.data}


@dataclass
class StepContext:
    """Everything a step needs, resolved by the operator at run time."""

    step: str
    service: str
    environment: str
    region: str | None
    version: str
    image: str
    commit: str
    service_root: Path
    work_dir: Path
    reports_dir: Path
    runner: dict[str, Any]
    platform: dict[str, Any]
    deployment_id: str
    workflow: str = "deploy"  # deploy | hotfix
    previous_version: str | None = None
    previous_commit: str | None = None
    source_image: str | None = None  # promotion: the image that passed the previous environment
    timeout: float = 1800.0
    notification: dict[str, Any] | None = None
    ledger: DeploymentLedger | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("airflow_deploy_provider.steps"))

    @property
    def block_on(self) -> tuple[str, ...]:
        configured = self.runner.get("block_on")
        if configured:
            return tuple(configured)
        return HOTFIX_BLOCK_ON if self.workflow == "hotfix" else DEFAULT_BLOCK_ON

    def values(self) -> dict[str, str]:
        """Placeholders of commands, pod args, HTTP paths and bodies."""
        return {"image": self.image, "version": self.version, "commit": self.commit or "",
                "short_sha": (self.commit or "")[:7], "service": self.service, "environment": self.environment,
                "region": self.region or "", "reports": str(self.reports_dir),
                "previous_version": self.previous_version or "", "previous_commit": self.previous_commit or "",
                "source_image": self.source_image or "", "port": "", "url": "", "replica": "", "run_id": ""}

    def fill(self, parts: list[str]) -> list[str]:
        return fill(parts, self.values())


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""  # a placeholder that means nothing where it is used (``{port}`` in a build) is empty


def safe_name(text: str) -> str:
    """``text`` as one file or folder name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:100]


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a command on the worker: the worker's own, with the bin folder of Airflow's Python
    environment first on PATH (tools installed beside Airflow, such as detect-secrets or locust, are found
    even when the worker was started without activating its virtualenv), then ``extra``."""
    import os
    import sys

    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p != bindir]])
    return {**env, **extra}


def fill(parts: list[str], values: dict[str, Any]) -> list[str]:
    """Fill ``{placeholder}`` in each part; placeholders without a value here become empty (the config check
    has refused unknown names already)."""
    blank = _Blank(values)
    return [part.format_map(blank) for part in parts]
