"""``deploy_<service>_staging``: the spec's staging workflow (blue-green by default)."""

from __future__ import annotations

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
from airflow_deploy_provider.factory.common import approval_task, migration_task
from airflow_deploy_provider.operators.deploy import CapacityCheckOperator
from airflow_deploy_provider.operators.validation import ConfigValidationOperator, PromotionCheckOperator


def build(b: ServiceDagBuilder) -> DAG:
    env = b.env
    assert env is not None
    schedule = b.promotion_schedule("development")
    params = {"version": version_param(required=schedule is None, description="Version that passed development; "
                                       "empty when development's success starts the run."),
              "commit": commit_param(), "reason": reason_param()}
    dag = b.dag(f"deploy_{b.name}_staging", title="deploy to staging", params=params, tags=["deploy"],
                schedule=schedule)
    with dag:
        start = b.start(tag_template="staging-{version}", commit="{{ params.commit or '' }}",
                        promote_from="development")
        with phase("manual_approval", "Reviewer checks development, verifies test coverage, approves the "
                   "promotion") as approval:
            # Without a development environment there is nothing a version must have passed first.
            verify = PromotionCheckOperator(task_id="verify_development_passed", **b.common(),
                                            version=b.release("version"), previous_environment="development") \
                if "development" in b.config.environments else None
            approve = approval_task(b, "staging")
            chain_phases(verify, approve)
        with phase("pre_deployment_validation", "Check capacity, migration compatibility, configuration, "
                   "dependency updates") as validation:
            CapacityCheckOperator(task_id="check_capacity", **b.on_platform(), replicas=env.replicas,
                                  replica_resources=b.resources())
            migration_task(b, task_id="check_migration_compatibility", dry_run=True)
            ConfigValidationOperator(task_id="validate_configuration", **b.common(), deploy_dir=str(b.config.deploy_dir),
                                     fingerprint=b.config.fingerprint)
        with phase("build_promotion", "Re-tag the image {service}:staging-{version}, sign it with Cosign, push") \
                as promotion:
            chain_phases(*b.steps(["retag-image", "sign-image", "push-image"]))
        with phase("infrastructure_update", "Apply Terraform changes, wait for stability, update DNS records") \
                as infrastructure:
            chain_phases(*b.steps(["terraform", "update-dns"]))
        with phase("post_deployment_testing", "Full test suite, load testing, DAST, performance benchmarking") \
                as testing:
            suites = [b.suite(name) for name in env.post_deployment_tests]
        bluegreen = env.strategy == "bluegreen"
        deploy_group = "blue_green_deployment" if bluegreen else f"{env.strategy}_deployment"
        with phase(deploy_group, "Deploy green, test it, switch traffic from blue to green") as deploy:
            migrate = migration_task(b)
            # blue-green: the suites run on the traffic before blue is retired (a failure switches back)
            head, tail = b.strategy_tasks(after_switch=suites if bluegreen else ())
            chain_phases(migrate, head)
        if bluegreen:
            testing = None  # wired inside the blue-green phase
        else:
            chain_phases(*suites)
            if suites and b.auto_rollback:
                with testing:
                    trigger_rollback(b, suites)
        with phase("monitoring_setup", "Configure alerts, set up dashboards, enable tracing, annotate the "
                   "deployment") as monitoring:
            b.steps(["configure-alerts", "setup-dashboards", "enable-tracing", "annotate-deployment"])
        with phase("notification_and_documentation", "Update release notes, notify stakeholders, document "
                   "configuration changes"):
            docs = b.steps(["release-notes", "document-config-changes"])
            success = b.finish_success("notify_stakeholders", publish=True)  # production runs on it
        failure = b.finish_failure()
        chain_phases(start, approval, validation, promotion, infrastructure, deploy, testing, monitoring, docs)
        before = docs or _last_present(monitoring, testing, deploy)
        chain_phases(before, [success, failure])  # siblings: both stay leaves, so a failure also fails the run
    return b.finalize(dag, "staging")


def trigger_rollback(b: ServiceDagBuilder, suites: list[Any]) -> Any:
    """After a rollout that already took the traffic, a failed suite starts the environment's rollback DAG
    (once per run: the rollback's run id derives from this run's)."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    op = TriggerDagRunOperator(
        task_id="trigger_rollback", trigger_dag_id=f"rollback_{b.name}_{b.environment}",
        trigger_run_id="after_tests__{{ run_id }}", skip_when_already_exists=True,
        conf={"reason": "post-deployment tests failed in {{ dag.dag_id }} {{ run_id }}", "trigger": "alert"},
        trigger_rule=TriggerRule.ONE_FAILED)
    suites >> op
    return op


def _last_present(*phases):
    return next(p for p in phases if p is not None and (not hasattr(p, "children") or p.children))
