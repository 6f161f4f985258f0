"""``rollback_<service>_<environment>``: the spec's rollback workflow."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_deploy_provider.factory.builder import (
    ServiceDagBuilder,
    chain_phases,
    phase,
    reason_param,
)
from airflow_deploy_provider.factory.common import migration_task
from airflow_deploy_provider.operators.deploy import DeployVersionOperator, VerifyTrafficOperator
from airflow_deploy_provider.operators.gate import MetricGateOperator
from airflow_deploy_provider.operators.lifecycle import VERSION_PATTERN
from airflow_deploy_provider.operators.validation import IdentifyStableVersionOperator, RecordIncidentOperator


def rollback_params() -> dict[str, Param]:
    return {
        "target_version": Param(None, type=["null", "string"], pattern=VERSION_PATTERN, title="Target version",
                                description="Version to go back to; default: the last stable version before the "
                                            "current one."),
        "reason": reason_param(required=True),
        "trigger": Param("manual", type="string", enum=["manual", "alert"], title="Trigger",
                         description="manual (a person) or alert (Alertmanager)."),
    }


def build(b: ServiceDagBuilder) -> DAG:
    env = b.env
    assert env is not None
    params = rollback_params()
    suffix = f"_{b.region}" if b.region else ""
    dag = b.dag(f"rollback_{b.name}_{b.environment}{suffix}", title=f"roll back {b.environment}"
                + (f" in {b.region}" if b.region else ""), params=params, tags=["rollback"])
    with dag:
        with phase("rollback_decision", "Automated trigger (error rate, availability, critical alerts) or a "
                   "person's decision") as decision:
            b.start("record_decision", version="{{ params.target_version or '' }}",
                    trigger="{{ params.trigger }}", parent_id="{{ dag_run.conf.get('parent_id', '') }}")
        with phase("execute_rollback", "Identify the last stable version, switch to it, verify it is healthy, "
                   "update the load balancer") as execute:
            identify = IdentifyStableVersionOperator(task_id="identify_stable_version", **b.on_platform(),
                                                     version=b.release("version"))
            switch = DeployVersionOperator(
                task_id="switch_to_stable_version", **b.on_platform(), role="stable", version=b.release("version"),
                image=b.release("image"), replicas=env.replicas, strategy="rolling", replica_resources=b.resources(),
                health_check=b.health, progress_deadline=env.progress_deadline.total_seconds())
            verify = b._wait("stable", "verify_healthy")
            lb = VerifyTrafficOperator(task_id="update_load_balancer", **b.on_platform(), version=b.release("version"))
            chain_phases(identify, switch, verify, lb)
        with phase("database_rollback", "Check for schema changes, run down migrations (backup restore is a "
                   "separate, confirmed last resort)") as database:
            check = migration_task(b, task_id="check_schema_changes", direction="down", dry_run=True)
            down = migration_task(b, task_id="run_down_migrations", direction="down")
            chain_phases(check, down)
        with phase("validation", "Smoke tests, error rate back to normal, customer-facing features, monitor") \
                as validation:
            smoke = b.suite("smoke", task_id="run_smoke_tests", role="stable")
            conditions = b.gate_conditions(b.svc.rollback.conditions)
            watch = b.svc.rollback.monitor_duration
            monitor = MetricGateOperator(
                task_id="verify_error_rate", **b.waiting(), version=b.release("version"),
                metrics=b.metrics_from_conditions(conditions), conditions=conditions, interval=watch / 15,
                duration=watch, failure_limit=2, budget="rollback-validation",
                metrics_provider=b.metrics_settings(), rollback_on_failure=False) if watch else None
            flows = b.suite("critical-user-flows", task_id="check_customer_features", role="stable") \
                if "critical-user-flows" in b.svc.validation else None
            chain_phases(smoke, [t for t in (monitor, flows) if t is not None])
        with phase("post_rollback", "Incident report, communication to stakeholders") as post:
            report = RecordIncidentOperator(task_id="incident_report", **b.common())
            success = b.finish_success("notify_stakeholders")
            chain_phases(report, success)
        failure = b.finish_failure()
        chain_phases(decision, execute, database, validation, post)
        chain_phases(validation, failure)  # a sibling of the post-rollback phase: both stay leaves
    return b.finalize(dag, "rollback")
