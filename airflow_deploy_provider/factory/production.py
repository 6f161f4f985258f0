"""``deploy_<service>_production`` (and ``deploy_<service>_production_<region>``): the spec's production
workflow, canary by default."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, TriggerRule

from airflow_deploy_provider.factory.builder import (
    ServiceDagBuilder,
    chain_phases,
    commit_param,
    phase,
    reason_param,
    version_param,
)
from airflow_deploy_provider.factory.common import approval_task, health_check, migration_task
from airflow_deploy_provider.operators.deploy import (
    AutoscalingOperator,
    CleanupOperator,
    DeploymentMarkerOperator,
    ResourceUsageOperator,
    RestoreSnapshotOperator,
    ScaleOperator,
    SnapshotOperator,
)
from airflow_deploy_provider.operators.gate import MetricGateOperator
from airflow_deploy_provider.operators.steps import SCAN_STEPS
from airflow_deploy_provider.operators.validation import (
    ChecklistItemOperator,
    ChecklistReportOperator,
    ImageSignatureOperator,
    LogValidationOperator,
    RollbackReadinessOperator,
)
from airflow_deploy_provider.sensors.maintenance_window import MaintenanceWindowSensor

CHECKLIST_TASKS = {
    "staging_tests_passed": "staging_tests_passed",
    "security_scan_clean": "security_scan_clean",
    "release_notes": "release_notes_prepared",
    "rollback_plan": "rollback_plan_documented",
    "on_call_notified": "on_call_team_notified",
    "maintenance_window": "maintenance_window_scheduled",
    "database_backup": "database_backup_completed",
}
VALIDATION_TASKS = {
    "synthetic-transactions": "run_synthetic_transactions",
    "database-connectivity": "verify_database_connectivity",
    "external-integrations": "check_external_integrations",
    "caching-layers": "validate_caching_layers",
    "critical-user-flows": "test_critical_user_flows",
}


def production_params(required: bool = True) -> dict[str, Any]:
    """``required=False`` for a DAG that also runs by itself (staging's success, the maintenance window)."""
    return {"version": version_param(required=required, description="Version that passed staging" + (
        "" if required else "; empty for the one staging's success brought, or the newest that passed staging") + "."),
        "commit": commit_param(), "reason": reason_param()}


def production_tag(b: ServiceDagBuilder) -> str:
    """Production runs the image staging promoted and signed (``staging-{version}``); without a staging
    environment, the version's own tag."""
    return "staging-{version}" if "staging" in b.config.environments else "{version}"


def checklist(b: ServiceDagBuilder) -> list[Any]:
    items = b.svc.checklist
    tasks = []
    for item, task_id in CHECKLIST_TASKS.items():
        if not getattr(items, item):
            continue
        if item == "maintenance_window" and b.svc.maintenance_window is None:
            continue
        if item == "database_backup" and b.svc.migrations is None:
            continue
        settings: dict[str, Any] = {
            "staging_tests_passed": {"has_staging": "staging" in b.config.environments},
            "security_scan_clean": {"scan_steps": [s for s in SCAN_STEPS if s in b.svc.steps]},
            "release_notes": {"release_notes_location": items.release_notes_location,
                              "service_root": str(b.config.root)},
            "rollback_plan": {"rollback_dag_id": rollback_dag_id(b)},
            "on_call_notified": {"notification": b.notification()},
            "maintenance_window": {"window": b.svc.maintenance_window.model_dump(mode="python")
                                   if b.svc.maintenance_window else None},
            "database_backup": {"conn_id": b.svc.migrations.connection_for(b.environment),
                                "backup_location": b.svc.migrations.backup_location} if b.svc.migrations else {},
        }.get(item, {})
        tasks.append(ChecklistItemOperator(task_id=task_id, **b.common(), item=item, version=b.release("version"),
                                           settings=settings))
    signing = b.svc.steps.get("sign-image")
    if signing is not None:  # signing is configured: production refuses an unsigned image, whatever the items
        tasks.append(ImageSignatureOperator(
            task_id="verify_image_signature", **b.common(), version=b.release("version"), image=b.release("image"),
            platform_type=b.svc.platform.type,
            secrets=signing.model_dump(mode="python", exclude_none=True).get("secrets") or {}))
    if not tasks:
        return tasks
    # all_done: it also runs when the start skipped the run, so its version must render without a release
    version = "{{ (ti.xcom_pull(task_ids='%s') or {}).get('version', '') }}" % b.start_task_id
    report = ChecklistReportOperator(task_id="checklist_report", **b.common(), version=version,
                                     items=[t.item for t in tasks], notification=b.notification(), retries=2)
    tasks >> report
    return [*tasks, report]


def approval_gate(b: ServiceDagBuilder, expected_rollout: Any = None) -> list[Any]:
    tasks: list[Any] = [approval_task(b, "production")]
    window = b.svc.maintenance_window
    if window is not None:
        tasks.append(MaintenanceWindowSensor(task_id="verify_maintenance_window", **b.common(),
                                             window=window.model_dump(mode="python")))
    tasks.append(RollbackReadinessOperator(task_id="confirm_rollback_readiness", **b.common(),
                                           rollback_dag_id=rollback_dag_id(b)))
    tasks = [t for t in tasks if t is not None]
    chain_phases(*tasks)
    return tasks


#: Expected duration of regional DAGs already built in this process, for the global rollout's plan:
#: (config fingerprint, region) -> duration.
REGIONAL_EXPECTED: dict[tuple[str, str], timedelta] = {}


def regional_expected(b: ServiceDagBuilder, region: str) -> timedelta:
    """Expected duration of the regional DAG, built once if this process has not built it yet."""
    key = (b.config.fingerprint, region)
    if key not in REGIONAL_EXPECTED:
        from airflow_deploy_provider.factory.builder import ServiceDagBuilder as Builder

        build(Builder(b.config, "production", region=region), regional=True)
    return REGIONAL_EXPECTED[key]


def rollback_dag_id(b: ServiceDagBuilder) -> str:
    return f"rollback_{b.name}_{b.environment}" + (f"_{b.region}" if b.region else "")


def build(b: ServiceDagBuilder, *, regional: bool = False) -> DAG:
    env = b.env
    assert env is not None
    dag_id = f"deploy_{b.name}_production" + (f"_{b.region}" if b.region else "")
    title = f"deploy to production in {b.region}" if b.region else "deploy to production"
    tags = ["deploy"] + ([f"region:{b.region}"] if b.region else [])
    schedule = None if regional else b.promotion_schedule("staging")
    dag = b.dag(dag_id, title=title, params=production_params(required=schedule is None), tags=tags,
                schedule=schedule)
    with dag:
        start = b.start(tag_template=production_tag(b), commit="{{ params.commit or '' }}",
                        parent_id="{{ dag_run.conf.get('parent_id', '') }}", promote_from="staging",
                        parent_dag_id=f"deploy_{b.name}_production" if regional else None)
        with phase("pre_deployment_checklist", "Staging passed, security scan clean, image signed, release notes, "
                   "rollback plan, on-call notified, maintenance window, database backup") as checks:
            if not regional:  # a regional run is covered by the global rollout's checklist
                checklist(b)
        with phase("approval_gate", "Two approvals (tech lead + product), maintenance window, rollback "
                   "readiness") as gate:
            approval_gate(b)
        with phase("pre_deployment_actions", "Scale up, snapshot the current state, disable autoscaling, set the "
                   "deployment start marker; set up alerts, dashboards, tracing and the deployment annotation") \
                as actions:
            scale = ScaleOperator(task_id="scale_up", **b.on_platform(), role="stable", replicas=env.replicas)
            snapshot = SnapshotOperator(task_id="snapshot_current_state", **b.on_platform())
            disable = AutoscalingOperator(task_id="disable_autoscaling", **b.on_platform(), enabled=False)
            marker = DeploymentMarkerOperator(task_id="set_deployment_start_marker", **b.on_platform(),
                                              version=b.release("version"))
            # Monitoring set-up of the new version: alert rules and dashboards are in place before the canary
            # takes traffic, and the annotation marks the same moment as the start marker. Here a failed request
            # stops the run before the new version is deployed; after the rollout it would set off the watch's
            # restore of the previous version.
            monitoring_setup = b.steps(["configure-alerts", "setup-dashboards", "enable-tracing",
                                        "annotate-deployment"])
            chain_phases(scale, snapshot, disable, marker, monitoring_setup)
        deploy_group = {"canary": "canary_deployment", "bluegreen": "blue_green_deployment"}.get(
            env.strategy, f"{env.strategy}_deployment")
        with phase(deploy_group, "Progressive canary: each step shifts traffic and watches the metric gate; "
                   "then terminate the old version and update the load balancer") as deploy:
            migrate = migration_task(b, backup=True)
            head, tail = b.strategy_tasks()
            chain_phases(migrate, head)
        with phase("post_deployment_validation", "Synthetic transactions, database connectivity, external "
                   "integrations, caching layers, critical user flows") as validation:
            health = health_check(b, role="stable")
            checks_ = [b.suite(name, task_id=task_id, role="stable") for name, task_id in VALIDATION_TASKS.items()
                       if name in b.svc.validation]
            chain_phases(health, checks_)
        with phase("monitoring_and_alerting", "Watch real-time metrics, review error logs, monitor resource "
                   "utilization, track business metrics") as monitoring:
            monitoring_tasks(b)
        with phase("communication", "Status page, customers, internal announcement, deployment log") as comms:
            log = b.finish_success("update_deployment_log", announce=False)
            announce = b.finish_success("internal_announcement", record=False)
            chain_phases(log, announce)
        with phase("post_deployment_tasks", "Re-enable autoscaling, clean up old artifacts, update documentation") \
                as post:
            reenable = AutoscalingOperator(task_id="reenable_autoscaling", **b.on_platform(), enabled=True)
            cleanup = CleanupOperator(task_id="cleanup_old_artifacts", **b.on_platform())
            b.steps(["document-config-changes"])
            reenable.as_teardown(setups=disable)
            chain_phases(cleanup)
        failure = b.finish_failure()
        chain_phases(start, checks, gate, actions, deploy, validation, monitoring, comms, post)
        chain_phases(monitoring, failure)  # a sibling of the outcome record: both stay leaves, so a failure fails the run
    b.finalize(dag, "production")
    if b.region is not None:
        REGIONAL_EXPECTED[(b.config.fingerprint, b.region)] = b.plan.expected
    return dag


def monitoring_tasks(b: ServiceDagBuilder, duration: timedelta | None = None) -> list[Any]:
    """Watch metrics (with automatic rollback), error logs, resource use and business metrics."""
    env = b.env
    assert env is not None
    duration = env.monitoring_duration if duration is None else duration
    tasks: list[Any] = []
    if duration.total_seconds() > 0:
        conditions = b.watch_conditions()
        metrics = b.gate_metrics(relative=False) or b.metrics_from_conditions(conditions)
        interval = env.canary.analysis.interval if env.canary is not None else min(duration, duration / 10)
        watch = MetricGateOperator(
            task_id="watch_metrics", **b.waiting(), version=b.release("version"), metrics=metrics,
            conditions=conditions, interval=interval, duration=duration,
            min_requests=env.canary.analysis.min_requests if env.canary else 0,
            failure_limit=env.canary.analysis.threshold if env.canary else 2, budget="monitoring",
            metrics_provider=b.metrics_settings(), rollback_on_failure=False, notification=b.notification())
        tasks.append(watch)
        if b.auto_rollback:
            restore = RestoreSnapshotOperator(task_id="restore_previous_version", **b.waiting(),
                                              version=b.release("version"), notification=b.notification(),
                                              progress_deadline=env.progress_deadline.total_seconds(),
                                              trigger_rule=TriggerRule.ONE_FAILED)
            watch >> restore
        business = [c for c in b.svc.metrics.custom if c.business]
        if business:
            tasks.append(MetricGateOperator(
                task_id="track_business_metrics", **b.waiting(), version=b.release("version"),
                metrics=[{"name": c.name, "unit": c.unit, "query": c.query} for c in business], interval=interval,
                duration=duration, failure_limit=10_000, budget="business", metrics_provider=b.metrics_settings(),
                rollback_on_failure=False))
    tasks.append(LogValidationOperator(task_id="review_error_logs", **b.on_platform(), role="stable"))
    tasks.append(ResourceUsageOperator(task_id="monitor_resource_utilization", **b.on_platform(), role="stable"))
    return tasks
