"""Steps that run as a command on the worker."""

from __future__ import annotations

import subprocess
from typing import Any

from airflow_deploy_provider.steps import StepContext, StepError, StepResult, worker_env
from airflow_deploy_provider.steps.reports import read_report
from airflow_deploy_provider.steps.secrets import secret_env

LOG_LINES = 300


def run_command(ctx: StepContext, runner: dict[str, Any]) -> StepResult:
    """Run the step's command in its working directory with its env and secrets; parse its report.

    The exit status decides ``ok``, except for scanners, which exit non-zero when they find something: their
    verdict comes from the parsed findings (see :func:`airflow_deploy_provider.operators.steps.judge`).
    """
    command = ctx.fill(runner["command"])
    env = worker_env({**(runner.get("env") or {}), **secret_env(runner.get("secrets") or {}),
                      "DEPLOY_REPORTS": str(ctx.reports_dir), "DEPLOY_VERSION": ctx.version, "DEPLOY_IMAGE": ctx.image})
    ctx.log.info("Running %s in %s", command, ctx.work_dir)
    try:
        proc = subprocess.run(command, cwd=ctx.work_dir, env=env, capture_output=True, text=True,
                              timeout=ctx.timeout)
    except FileNotFoundError:
        raise StepError(f"command {command[0]!r} not found on the worker") from None
    except subprocess.TimeoutExpired:
        raise StepError(f"timed out after {ctx.timeout:g}s") from None
    report = runner.get("report")
    # stdout is the report when the step writes it there; do not echo a whole JSON report into the log
    shown = proc.stderr if report and not report.get("path") else proc.stdout + proc.stderr
    for line in shown.splitlines()[-LOG_LINES:]:
        ctx.log.info("| %s", line)
    result = StepResult(ok=proc.returncode == 0, summary=f"exit status {proc.returncode}",
                        exit_code=proc.returncode, data={"command": command})
    if report:
        path = report.get("path")
        try:
            result.findings, where = read_report(report["format"], ctx.fill([path])[0] if path else None,
                                                 proc.stdout, ctx.work_dir)
        except StepError:
            if proc.returncode != 0:  # the tool failed before it wrote a report: say so, not "no report"
                raise StepError(f"exit status {proc.returncode}: "
                                f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ''}") from None
            raise
        result.data["report"] = {"format": report["format"], "location": where}
    return result
