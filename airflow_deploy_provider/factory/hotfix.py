"""``hotfix_<service>``: the spec's hotfix fast track to production."""

from __future__ import annotations

import math
from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, TriggerRule

from airflow_deploy_provider.factory.builder import (
    ServiceDagBuilder,
    chain_phases,
    commit_param,
    issue_param,
    phase,
    reason_param,
    severity_param,
    version_param,
)
from airflow_deploy_provider.factory.common import approval_task
from airflow_deploy_provider.factory.production import monitoring_tasks
from airflow_deploy_provider.operators.deploy import (
    RollbackOperator,
    SnapshotOperator,
)
from airflow_deploy_provider.operators.gate import CanaryStepOperator
from airflow_deploy_provider.operators.lifecycle import EmergencyOverrideOperator
from airflow_deploy_provider.operators.validation import RecordIncidentOperator


def hotfix_params() -> dict:
    return {
        "version": version_param(description="Hotfix version (from the hotfix tag)."),
        "issue_id": issue_param(),
        "severity": severity_param(),
        "reason": reason_param(required=True, min_length=10),
        "commit": commit_param(),
    }


def start_hotfix(b: ServiceDagBuilder, **kwargs):
    return b.start(tag_template="hotfix-{issue_id}", commit="{{ params.commit or '' }}",
                   issue_id="{{ params.issue_id }}", severity="{{ params.severity }}", **kwargs)


def creation_and_build(b: ServiceDagBuilder) -> tuple:
    """The phases before anything is deployed: fast-track approval, critical tests, the emergency build."""
    with phase("hotfix_creation", "Fast-track review (one approver by severity), critical tests only") as creation:
        approve = approval_task(b, "hotfix", task_id="fast_track_approval", severity="{{ params.severity }}")
        critical = b.suite("critical", task_id="run_critical_tests") if "critical" in b.svc.tests else None
        chain_phases(approve, critical)
    with phase("emergency_build", "Build {service}:hotfix-{issue-id}, quick scan (blocking CVEs only), push") \
            as build_:
        chain_phases(*b.steps(["build-image", "scan-cves", "push-image"]))
    return creation, build_


def lower_environments(b: ServiceDagBuilder) -> list:
    """Runs of the lower environments' DAGs with the hotfix version (not waited for)."""
    return [
        TriggerDagRunOperator(
            task_id=f"deploy_to_{name}", trigger_dag_id=f"deploy_{b.name}_{name}",
            trigger_run_id="hotfix__{{ run_id }}",
            conf={"version": b.release("version"), "reason": "hotfix {{ params.issue_id }} propagated from production",
                  "commit": "{{ params.commit }}"},
            skip_when_already_exists=True, wait_for_completion=False)
        for name in b.svc.hotfix.lower_environments if name in b.config.environments
    ]


def build(b: ServiceDagBuilder) -> DAG:
    """``hotfix_<service>``, or for one region of a multi-region service ``hotfix_<service>_<region>``: the
    expedited deployment and close monitoring only (the global hotfix holds the approval, the build and the
    post-hotfix actions)."""
    env = b.env
    assert env is not None
    settings = b.svc.hotfix
    regional = b.region is not None
    dag = b.dag(f"hotfix_{b.name}" + (f"_{b.region}" if regional else ""),
                title="hotfix to production" + (f" in {b.region}" if regional else ""), params=hotfix_params(),
                tags=["hotfix"])
    with dag:
        start = start_hotfix(b, parent_id="{{ dag_run.conf.get('parent_id', '') }}" if regional else None,
                             parent_dag_id=f"hotfix_{b.name}" if regional else None)
        before = [] if regional else list(creation_and_build(b))
        with phase("expedited_deployment", "Skip staging (emergency override), one replica first, all after "
                   f"{int(settings.stability_period.total_seconds() // 60)} stable minutes, close monitoring") \
                as deploy:
            override = EmergencyOverrideOperator(task_id="record_emergency_override", **b.common(),
                                                 version=b.release("version"))
            snapshot = SnapshotOperator(task_id="snapshot_current_state", **b.on_platform())
            first = b._deploy("canary", "deploy_to_one_replica", replicas=settings.validation_replicas)
            wait_first = b._wait("canary", "wait_one_replica_ready")
            share = max(1, min(100, math.ceil(100 * settings.validation_replicas / max(env.replicas, 1))))
            analysis = env.canary.analysis if env.canary is not None else None
            conditions = b.watch_conditions()
            metrics = b.gate_metrics() or b.metrics_from_conditions(conditions)
            validate = CanaryStepOperator(
                task_id="validate_one_replica", **b.gating(), weight=share, pause=settings.stability_period,
                metrics=metrics, conditions=conditions,
                interval=analysis.interval if analysis else min(timedelta(minutes=1), settings.stability_period),
                min_requests=analysis.min_requests if analysis else 0,
                failure_limit=analysis.threshold if analysis else 1, metrics_provider=b.metrics_settings(),
                rollback_on_failure=True, notification=b.notification())
            promote = b.promote("deploy_to_all")
            wait_all = b._wait("stable", "wait_all_ready")
            rollback = RollbackOperator(task_id="rollback", **b.on_platform(), version=b.release("version"),
                                        notification=b.notification(), trigger_rule=TriggerRule.ONE_FAILED)
            chain_phases(override, snapshot, first, wait_first, validate, promote, wait_all)
            [first, wait_first, validate] >> rollback
        with phase("monitor_closely", f"Watch for {int(settings.monitor_duration.total_seconds() // 60)} minutes "
                   "with automatic rollback") as monitor:
            monitoring_tasks(b, duration=settings.monitor_duration)
        if regional:
            success = b.finish_success("notify_success")
            failure = b.finish_failure()
            chain_phases(start, deploy, monitor)
            chain_phases(monitor, [success, failure])
            return b.finalize(dag, "hotfix")
        with phase("post_hotfix_actions", "Deploy the same version to lower environments, document the incident") \
                as post:
            incident = RecordIncidentOperator(task_id="document_incident", **b.common())
            success = b.finish_success("notify_success")
            chain_phases(incident, lower_environments(b), success)
        failure = b.finish_failure()
        chain_phases(start, *before, deploy, monitor, post)
        chain_phases(monitor, failure)  # a sibling of the post-hotfix phase: both stay leaves
    return b.finalize(dag, "hotfix")
