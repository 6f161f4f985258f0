"""The ``terraform`` step: plan, apply only when the plan has changes, then check the service is still healthy.

The configuration is the folder ``workingDir`` of the service (default ``infra``). Each environment (and
region) has its own Terraform workspace, ``<environment>`` or ``<environment>-<region>``, so staging's state is
never production's: with the default local backend the state lives in the configuration's folder under
``terraform.tfstate.d/<workspace>/``; a configuration with its own ``backend`` block (S3, GCS, ...) keeps it
there instead. ``TF_WORKSPACE`` in the step's ``env`` chooses another workspace.

The release reaches the configuration as variables (declare those you use; Terraform ignores the others):
``service``, ``environment``, ``release_version`` (``version`` is a name Terraform reserves), and ``image``,
``commit``, ``region`` when known. Secrets come from Airflow connections through the step's ``secrets``
(``TF_VAR_db_password: {connection: ...}``, or a provider's own variable such as ``AWS_SECRET_ACCESS_KEY``).

A retry converges: the apply of a plan that already went through finds nothing left to change, and a
plan without changes skips the apply. The plan file (which holds variable values) is deleted once used; the
plan's text and the list of planned changes stay in the step's report folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

from airflow_deploy_provider.steps import Finding, StepContext, StepError, StepResult
from airflow_deploy_provider.steps.secrets import secret_env

LOG_LINES = 200
#: How long the stable role may take to be healthy again after an apply that changed something.
STABILITY_WAIT = 120.0
STABILITY_POLL = 2.0
#: How long Terraform gets to save its state and release its lock after an interrupt, before it is killed.
INTERRUPT_GRACE = 30.0
#: Severity of each kind of change: orders the ledger's list of changes (destroys first); nothing blocks.
ACTION_SEVERITY = {"delete": "HIGH", "replace": "HIGH", "update": "MEDIUM", "create": "LOW"}


def parse_plan(text: str) -> list[Finding]:
    """``terraform show -json <plan>`` -> one finding per resource the plan changes (``id`` its address, ``title``
    what happens to it: ``create``, ``update``, ``delete`` or ``replace``). No-ops and data reads are left out.
    Also the ``terraform-plan`` report format of command steps."""
    plan = json.loads(text)
    if not isinstance(plan, dict) or "format_version" not in plan:
        raise StepError("not the JSON of `terraform show -json <plan>` (no format_version)")
    out = []
    for change in plan.get("resource_changes") or []:
        actions = [a for a in (change.get("change") or {}).get("actions") or [] if a not in ("no-op", "read")]
        if not actions:
            continue
        action = "replace" if set(actions) == {"create", "delete"} else actions[0]
        out.append(Finding(tool="terraform", kind="change", id=change.get("address", "?"),
                           severity=ACTION_SEVERITY.get(action, "UNKNOWN"), title=action,
                           location=change.get("module_address") or ""))
    return out


def plan_counts(findings: list[Finding]) -> dict[str, int]:
    """Resources to add, change and destroy, counted like Terraform's own summary (a replace is one of each)."""
    counts = {"add": 0, "change": 0, "destroy": 0}
    for f in findings:
        if f.title in ("create", "replace"):
            counts["add"] += 1
        if f.title in ("delete", "replace"):
            counts["destroy"] += 1
        if f.title == "update":
            counts["change"] += 1
    return counts


def workspace(ctx: StepContext) -> str:
    return ctx.environment + (f"-{ctx.region}" if ctx.region else "")


def terraform_env(ctx: StepContext) -> dict[str, str]:
    """The environment of every Terraform command: non-interactive, no update check, the release as variables;
    then the step's ``env`` and ``secrets``, which may override any of it."""
    release = {"service": ctx.service, "environment": ctx.environment, "release_version": ctx.version,
               "image": ctx.image, "commit": ctx.commit, "region": ctx.region or ""}
    return {**os.environ, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
            # An empty value would override a variable's default: only what is known is passed.
            **{f"TF_VAR_{name}": value for name, value in release.items() if value},
            "TF_WORKSPACE": workspace(ctx),
            **(ctx.runner.get("env") or {}), **secret_env(ctx.runner.get("secrets") or {})}


def run_terraform(ctx: StepContext, args: list[str], env: dict[str, str], deadline: float,
                  ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run ``terraform <args>`` in the configuration's folder; a status outside ``ok_codes`` is a StepError with
    Terraform's last error lines. On the step's time limit Terraform is interrupted (it then saves its state
    and releases its lock) rather than killed."""
    command = ["terraform", *args]
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StepError(f"timed out after {ctx.timeout:g}s before terraform {args[0]}")
    ctx.log.info("Running %s in %s", " ".join(command), ctx.work_dir)
    try:
        proc = subprocess.Popen(command, cwd=ctx.work_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    except FileNotFoundError:
        raise StepError("terraform not found on the worker's PATH (install Terraform, or run the step as a pod "
                        "with 'image')") from None
    try:
        stdout, stderr = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise StepError(f"timed out after {ctx.timeout:g}s in terraform {args[0]}; Terraform was interrupted "
                        "(a state lock it could not release needs `terraform force-unlock`)") from None
    shown = stdout if args[0] != "show" else ""  # show's JSON is the report, not log material
    for line in (shown + stderr).splitlines()[-LOG_LINES:]:
        ctx.log.info("| %s", line)
    if proc.returncode not in ok_codes:
        errors = [line for line in stderr.splitlines() if line.strip() and not set(line.strip()) <= set("│╷╵")]
        detail = " ".join(line.strip("│ ").strip() for line in errors[:6]) or f"exit status {proc.returncode}"
        raise StepError(f"terraform {args[0]} failed: {detail[:600]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def init_workspace(ctx: StepContext, env: dict[str, str], deadline: float) -> None:
    """``init``, and create the environment's workspace when the backend does not have it yet.

    Both run without ``TF_WORKSPACE``: with it naming a workspace that does not exist yet, ``init`` on a remote
    backend (S3, GCS) stops to ask which workspace to use. Plan and apply name the workspace through
    ``TF_WORKSPACE``, so runs of several environments in one folder do not depend on the selected one.
    """
    name = env["TF_WORKSPACE"]
    bare = {k: v for k, v in env.items() if k != "TF_WORKSPACE"}
    run_terraform(ctx, ["init", "-input=false", "-no-color"], bare, deadline)
    listed = run_terraform(ctx, ["workspace", "list", "-no-color"], bare, deadline)
    names = {line.strip().lstrip("*").strip() for line in listed.stdout.splitlines()}
    if name not in names:
        run_terraform(ctx, ["workspace", "new", "-no-color", name], bare, deadline)


def plan_and_apply(ctx: StepContext) -> StepResult:
    """``init``, ``plan -detailed-exitcode`` (0: no changes, 2: changes), ``apply`` of that very plan only when it
    has changes, then the stable role's health (see :func:`wait_for_stability`)."""
    if not ctx.work_dir.is_dir():
        raise StepError(f"no Terraform configuration: {ctx.work_dir} is not a folder (set the step's workingDir)")
    deadline = time.monotonic() + ctx.timeout
    env = terraform_env(ctx)
    ctx.reports_dir.mkdir(parents=True, exist_ok=True)
    plan_file = ctx.reports_dir / "tfplan"
    try:
        init_workspace(ctx, env, deadline)
        plan = run_terraform(ctx, ["plan", "-input=false", "-no-color", "-detailed-exitcode", "-lock-timeout=60s",
                                   f"-out={plan_file}"], env, deadline, ok_codes=(0, 2))
        (ctx.reports_dir / "plan.txt").write_text(plan.stdout)
        shown = run_terraform(ctx, ["show", "-json", "-no-color", str(plan_file)], env, deadline)
        findings = parse_plan(shown.stdout)
        changes_file = ctx.reports_dir / "changes.json"
        changes_file.write_text(json.dumps([f.to_dict() for f in findings], indent=2))
        counts = plan_counts(findings)
        artifacts: dict[str, Any] = {"plan": str(ctx.reports_dir / "plan.txt"), "changes": str(changes_file)}
        data: dict[str, Any] = {"workspace": env["TF_WORKSPACE"], "plan": counts, "applied": False,
                                "report": {"format": "terraform-plan", "location": str(changes_file)}}
        if plan.returncode == 0:
            return StepResult(ok=True, summary=f"workspace {env['TF_WORKSPACE']}: no changes; apply skipped",
                              exit_code=0, findings=findings, changed=False, artifacts=artifacts, data=data)
        apply = run_terraform(ctx, ["apply", "-input=false", "-no-color", "-lock-timeout=60s", str(plan_file)], env,
                              deadline)
        (ctx.reports_dir / "apply.txt").write_text(apply.stdout)
        artifacts["apply"] = str(ctx.reports_dir / "apply.txt")
        data["applied"] = True
    finally:
        plan_file.unlink(missing_ok=True)  # it holds the variables' values, secrets included
    stability = wait_for_stability(ctx, deadline)
    data["stability"] = stability
    what = (f"{counts['add']} to add, {counts['change']} to change, {counts['destroy']} to destroy"
            if findings else "output changes only")
    return StepResult(ok=True, summary=f"workspace {env['TF_WORKSPACE']}: {what}; applied; {stability}",
                      exit_code=0, findings=findings, changed=True, artifacts=artifacts, data=data)


def wait_for_stability(ctx: StepContext, deadline: float, platform: Any = None,
                       poll: float = STABILITY_POLL) -> str:
    """After an apply that changed something: wait (at most :data:`STABILITY_WAIT` seconds) until the version
    serving traffic (the stable role) is healthy again, so a change that broke it (a security group, a
    database parameter) stops the run before the deployment.

    Terraform's own apply already waits for the resources it creates; the new version's rollout has its own
    wait in the deploy phase. Returns what was found; a failing or still unhealthy stable role is a StepError.
    """
    from airflow_deploy_provider.platforms.base import PlatformError

    if platform is None:
        from airflow_deploy_provider.registry import get_platform

        platform = get_platform(ctx.platform, ctx.service, ctx.environment, ctx.region)
    until = min(deadline, time.monotonic() + STABILITY_WAIT)
    while True:
        try:
            status = platform.rollout_status("stable")
        except (NotImplementedError, PlatformError) as exc:
            return f"stability not checked: {exc}"
        if status.reason == "NotDeployed" or status.version is None:
            return "nothing deployed yet: no running version to wait for"
        if status.done:
            return f"stable {status.version} healthy ({status.ready}/{status.desired} ready)"
        if status.failed:
            raise StepError(f"applied, but the stable role ({status.version}) is failing: "
                            f"{status.reason or ''} {status.message}".strip())
        if time.monotonic() + poll > until:
            raise StepError(f"applied, but the stable role ({status.version}) was not healthy within "
                            f"{STABILITY_WAIT:g}s: {status.ready}/{status.desired} ready {status.message}".strip())
        time.sleep(poll)
