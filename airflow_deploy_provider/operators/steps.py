"""Pipeline steps around the deployment: build, scans, promotion, infrastructure, monitoring set-up, docs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from airflow.sdk.exceptions import AirflowException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.steps import SEVERITIES, StepContext, StepError, StepResult, safe_name

#: Steps whose findings decide the verdict (scanners exit non-zero when they find anything at all).
SCAN_STEPS = ("scan-cves", "scan-secrets")


def reports_root() -> Path:
    """Where steps write their reports: ``$DEPLOY_REPORTS_DIR``, else ``$AIRFLOW_HOME/deploy-reports``."""
    from airflow_deploy_provider.platforms.local.state import airflow_home

    return Path(os.environ.get("DEPLOY_REPORTS_DIR") or airflow_home() / "deploy-reports")


def report_dir(service: str, environment: str, version: str, name: str) -> Path:
    """The report folder of one step or suite of a version (created; a retry writes the same folder)."""
    folder = reports_root() / service / environment / safe_name(version or "unversioned") / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def judge(ctx: StepContext, result: StepResult) -> StepResult:
    """The step's verdict from its findings where they decide it.

    - scans: every secret and every CVE of a severity in ``block_on`` blocks; nothing else does, whatever the
      scanner's exit status (pip-audit exits 1 on any finding, trivy 0 unless told otherwise);
    - test reports (JUnit): a failed test fails the step even when the runner exited 0.
    """
    if ctx.step in SCAN_STEPS and "report" in result.data:
        block = set(ctx.block_on)
        result.blocking = sum(1 for f in result.findings
                              if f.kind == "secret" or (f.kind == "cve" and f.severity in block))
        result.ok = result.blocking == 0
        counts = result.counts()
        shown = ", ".join(f"{counts[s]} {s.lower()}" for s in (*SEVERITIES,) if counts.get(s)) or "no findings"
        result.summary = f"{shown}; {result.blocking} blocking ({'/'.join(ctx.block_on)} CVEs and secrets block)"
    failed_tests = [f for f in result.findings if f.kind == "test" and f.passed is False]
    if failed_tests:
        result.ok = False
        result.summary += f"; {len(failed_tests)} failed test(s): " + ", ".join(f.id for f in failed_tests[:5])
    return result


class PipelineStepOperator(DeploymentBaseOperator):
    """
    Runs a declared pipeline step (``steps`` in ``service.yaml``) on the worker: a command, HTTP requests, or the
    step's built-in default (local builds and signatures, Terraform, DNS, release notes, configuration changes).
    A report the step writes is parsed into findings; scans block on the configured severities. The result
    (exit status, findings, artifacts) goes to the ledger as a ``step`` event; scans also record a ``scan``
    event for the production checklist. Steps of the ``pod`` mode use :class:`PodStepOperator` instead.

    Re-running the step converges: it writes the same report folder and the built-in steps are idempotent.

    Template fields: ``deployment_id``, ``version``, ``image``, ``commit``, ``previous_version``.

    :param step: step name (``build-image``, ``scan-cves``, ...).
    :param runner: the resolved runner (``command``, ``http`` or ``builtin``, with ``env``, ``secrets``,
        ``report``, ``block_on``, ``working_dir``, ``timeout``).
    :param platform: platform settings of the service (built-in steps act through it).
    :param version: version (templated).
    :param image: image of the release (templated).
    :param commit: commit sha (templated).
    :param previous_version: the version this one replaces (templated).
    :param service_root: the service folder.
    :param workflow: ``deploy`` or ``hotfix`` (a hotfix's scan blocks on critical CVEs only by default).
    :param notification: Slack settings, for steps that post (release notes, configuration changes).
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "image", "commit", "previous_version")
    ui_color = "#f1f3f4"

    def __init__(self, *, step: str, runner: dict[str, Any], platform: dict[str, Any], version: str = "",
                 image: str = "", commit: str = "", previous_version: str = "", service_root: str | None = None,
                 workflow: str = "deploy", notification: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        modes = [m for m in ("command", "http", "builtin") if runner.get(m)]
        if len(modes) != 1 or runner.get("image"):
            raise ValueError(f"{self.task_id}: step {step!r} needs exactly one of command, http or a built-in "
                             f"default on the worker; got {modes or 'none'}")
        self.step = step
        self.runner = runner
        self.mode = modes[0]
        self.platform = platform
        self.version = version
        self.image = image
        self.commit = commit
        self.previous_version = previous_version
        self.service_root = service_root
        self.workflow = workflow
        self.notification = notification
        timeout = runner.get("timeout", timedelta(minutes=30))
        self.step_timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.expected_duration = timedelta(seconds=min(120.0, self.step_timeout))

    def describe(self) -> str:
        if self.mode == "command":
            return f"{self.step}: {' '.join(self.runner['command'])}"
        if self.mode == "http":
            return f"{self.step}: " + ", ".join(f"{r['method']} {r['connection']}{r['path']}"
                                                 for r in self.runner["http"])
        return f"{self.step}: built-in ({self.runner['builtin'].rsplit(':', 1)[-1].replace('_', ' ')})"

    # ------------------------------------------------------------------------------------------------ run

    def step_context(self, context: Any) -> StepContext:
        root = Path(self.service_root or ".")
        version = str(self.version or "")
        reports = report_dir(self.service, self.environment, version, self.step)
        previous_commit, source_image = release_history(self, version, self.previous_version)
        return StepContext(
            step=self.step, service=self.service, environment=self.environment, region=self.region,
            version=version, image=str(self.image or ""), commit=str(self.commit or ""), service_root=root,
            work_dir=root / (self.runner.get("working_dir") or ""), reports_dir=reports, runner=self.runner,
            platform=self.platform, deployment_id=self.deployment_id, workflow=self.workflow,
            previous_version=self.previous_version or None, previous_commit=previous_commit,
            source_image=source_image, timeout=self.step_timeout, notification=self.notification,
            ledger=self.ledger, log=self.log)

    def execute(self, context: Any) -> dict[str, Any]:
        ctx = self.step_context(context)
        try:
            result = self.run_step(ctx)
        except StepError as exc:
            record_step_error(self, ctx, exc)
        return record_step_result(self, ctx, result, self.mode)

    def run_step(self, ctx: StepContext) -> StepResult:
        if self.mode == "command":
            from airflow_deploy_provider.steps.command import run_command

            return run_command(ctx, self.runner)
        if self.mode == "http":
            from airflow_deploy_provider.steps.http import run_requests

            return run_requests(ctx, self.runner)
        from airflow_deploy_provider.steps.defaults import builtin_function

        return builtin_function(self.runner["builtin"])(ctx)


def release_history(op: DeploymentBaseOperator, version: str,
                    previous_version: str | None) -> tuple[str | None, str | None]:
    """From the ledger: the commit of the version this one replaces, and the image this version had in an
    earlier environment (what a promotion re-tags)."""
    rows = op.ledger.deployments(op.service)  # one read for both questions
    previous = next((d for d in rows if previous_version and d.version == previous_version and d.commit_sha), None)
    source = next((d for d in rows if d.status == "succeeded" and d.version == version
                   and d.environment != op.environment and d.image), None)
    return previous.commit_sha if previous else None, source.image if source else None


def record_step_error(op: DeploymentBaseOperator, ctx: StepContext, exc: StepError) -> NoReturn:
    """A step that could not run (or whose report is unreadable): a failed ``step`` event, and the task fails."""
    op.record("step", f"{ctx.step}: FAILED, {exc}", data={"step": ctx.step, "ok": False, "version": ctx.version,
                                                          "error": str(exc)})
    raise AirflowException(f"step {ctx.step} failed: {exc}") from None


def record_step_result(op: DeploymentBaseOperator, ctx: StepContext, result: StepResult, mode: str) -> dict[str, Any]:
    """Judge a step's result, record it (a ``step`` event; scans also a ``scan`` event for the production
    checklist), log its blocking findings; fail the task when the step failed. Returns the task's XCom value.
    Shared by the worker steps and the pod steps."""
    result = judge(ctx, result)
    data = {"step": ctx.step, "version": ctx.version, "image": ctx.image, "mode": mode, **result.ledger_data()}
    op.record("step", f"{ctx.step}: {'ok' if result.ok else 'FAILED'}, {result.summary}", data=data)
    if ctx.step in SCAN_STEPS and "report" in result.data:
        op.record("scan", f"{ctx.step} of {ctx.version}: {result.summary}",
                  data={"step": ctx.step, "version": ctx.version, "image": ctx.image,
                        "blocking": result.blocking, "counts": result.counts(),
                        "block_on": list(ctx.block_on), "tool": result.data["report"]["format"]})
    for finding in result.findings[:20]:
        if finding.kind in ("cve", "secret") or finding.passed is False:
            op.log.info("%s %s %s %s", finding.severity, finding.id, finding.location, finding.title)
    if not result.ok:
        raise AirflowException(f"step {ctx.step} failed: {result.summary}")
    return {"step": ctx.step, "ok": True, "summary": result.summary, "exit_code": result.exit_code,
            "artifacts": result.artifacts, "changed": result.changed}
