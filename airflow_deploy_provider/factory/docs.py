"""The doc shown for every generated DAG in the Airflow UI, written from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG

from airflow_deploy_provider.config.types import format_duration

if TYPE_CHECKING:
    from airflow_deploy_provider.factory.builder import ServiceDagBuilder
    from airflow_deploy_provider.factory.plan import Plan

INTRO = {
    "development": "Builds the pushed commit, scans it and deploys it to development ({strategy}), then runs the "
                   "smoke tests and announces the result. Triggered by a push to `{branch}` or by hand.",
    "staging": "Promotes a version that passed development to staging after approval: validation, build "
               "promotion, {strategy} deployment with tests on the new version before the switch, post-deployment "
               "tests and monitoring set-up.",
    "production": "Deploys a version that passed staging to production: checklist, approvals, pre-deployment "
                  "actions, a {strategy} rollout with metric gates and automatic rollback, validation, monitoring "
                  "and communication.",
    "hotfix": "Fast track for a critical fix: one approver by severity, emergency build, staging skipped under a "
              "recorded override, one replica first, everything after it stays healthy, close monitoring.",
    "rollback": "Returns {environment} to the last stable version (or a chosen one), verifies it and writes the "
                "incident report.",
    "multi-region": "Rolls the version out region by region: canary region first, primary last, each watched for "
                    "its wait time, with GeoDNS weights shifted as regions come up.",
    "incident": "Outage recovery: acknowledge and page, incident channel and status page, diagnosis from the "
                "ledger and the metrics, a person's choice of mitigation, verification, and the post-incident "
                "report with the response times against the spec's targets.",
    "migrations": "Database work outside a deployment: contract migrations once the old version is retired, "
                  "checksum repair of edited files, or the last-resort restore from a verified backup. Each one "
                  "needs an explicit trigger; the database of {environment} is named in the tasks.",
}


def describe_dag(dag: DAG, b: ServiceDagBuilder, workflow: str) -> Plan:
    """Set ``dag.doc_md``: what the DAG does, its phases and steps, gates, and the expected duration."""
    from airflow_deploy_provider.factory.plan import plan_dag

    env = b.env
    plan = plan_dag(dag)
    strategy = env.strategy if env is not None else ""
    intro = INTRO[workflow].format(strategy=strategy, branch=(env.effective_branch if env else None) or "-",
                                   environment=b.environment)
    lines = [f"## {b.name}: {dag.dag_display_name.split(': ', 1)[-1]}", "", intro, ""]
    if b.svc.description:
        lines += [f"*{b.svc.description}*", ""]
    lines.append(f"**Expected duration:** {format_duration(plan.expected)}"
                 + (f" plus waiting for {', '.join(plan.waits)}" if plan.waits else ""))
    if env is not None:
        lines.append(f"**Strategy:** {env.strategy}, {env.replicas} replica(s); platform "
                     f"`{b.svc.platform.type}`; metrics `{b.svc.metric_provider}`")
    if env is not None and env.canary is not None and workflow in ("production", "multi-region"):
        a = env.canary.analysis
        lines += ["", "| step | traffic | watch |", "|---|---|---|"]
        for i, step in enumerate(env.canary.steps, start=1):
            lines.append(f"| {i} | {step.weight}% | {format_duration(step.pause) if step.pause else '-'} |")
        gates = ", ".join(f"`{m.name}` {('<= ' + str(m.max)) if m.max else ''}{(' >= ' + str(m.min)) if m.min else ''}"
                          for m in a.metrics)
        lines += ["", f"Gate every {format_duration(a.interval)}: {gates}; {a.threshold} failed check(s) "
                  f"tolerated; at least {a.min_requests} requests per check."]
        if env.auto_rollback is not None and env.auto_rollback.conditions:
            lines.append("Immediate rollback if " + " or ".join(f"`{c}`" for c in env.auto_rollback.conditions) + ".")
    if workflow == "multi-region" and b.config.multi_region is not None:
        mr = b.config.multi_region
        lines += ["", "| order | region | role | global weight | watched for |", "|---|---|---|---|---|"]
        for i, r in enumerate(mr.regions, start=1):
            lines.append(f"| {i} | {r.name} | {r.role} | {r.weight:g}% | {format_duration(r.wait_time)} |")
        fp = mr.failure_policy
        lines.append(f"\nOn a region's failure: {'halt the rollout' if fp.stop_on_region_failure else 'continue'}"
                     f"{', roll the region back and move its DNS weight' if fp.rollback_failed_region else ''}.")
    lines += ["", "### Steps", ""]
    group = "\0"
    for t in plan.tasks:
        if t.on_failure:
            continue
        if t.group != group:
            group = t.group
            if group:
                lines.append(f"- **{group}**")
        prefix = "  - " if t.group else "- "
        lines.append(f"{prefix}`{t.label}`: {t.description}")
    failure = [t for t in plan.tasks if t.on_failure]
    if failure:
        lines += ["", "On failure: " + "; ".join(f"`{t.task_id}` ({t.description})" for t in failure)]
    files = [p.name for p in b.config.environment_files.values()]
    lines += ["", f"Generated from `{b.config.deploy_dir}` ({', '.join(sorted(files))}); "
              f"configuration fingerprint `{b.config.fingerprint[:12]}`."]
    dag.doc_md = "\n".join(lines)
    return plan
