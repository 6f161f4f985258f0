"""Multi-region rollout: ``deploy_<service>_production`` runs ``deploy_<service>_production_<region>`` region by
region in the configured order, shifting GeoDNS weights as regions come up."""

from __future__ import annotations

from airflow.sdk import DAG, TaskGroup, TriggerRule

from airflow_deploy_provider.factory.builder import ServiceDagBuilder, chain_phases, phase
from airflow_deploy_provider.factory.production import (
    approval_gate,
    checklist,
    production_params,
    production_tag,
    regional_expected,
)
from airflow_deploy_provider.operators.dns import RegionDnsWeightOperator
from airflow_deploy_provider.operators.gate import MetricGateOperator
from airflow_deploy_provider.operators.region import RegionalRunOperator


def build(b: ServiceDagBuilder) -> DAG:
    mr = b.config.multi_region
    env = b.env
    assert mr is not None and env is not None
    dag = b.dag(f"deploy_{b.name}_production", title="multi-region rollout to production",
                params=production_params(), tags=["deploy", "multi-region"])
    policy = mr.failure_policy
    expected = {r.name: regional_expected(b, r.name) for r in mr.regions}  # before entering this DAG's context
    with dag:
        start = b.start(tag_template=production_tag(b), commit="{{ params.commit or '' }}")
        with phase("pre_deployment_checklist", "Staging passed, security scan clean, release notes, rollback plan, "
                   "on-call notified, maintenance window, database backup") as checks:
            checklist(b)
        with phase("approval_gate", "Approvals, maintenance window and rollback readiness for the whole "
                   "rollout") as gate:
            approval_gate(b)
        with phase("regional_rollout", "Canary region first, then each next region, staggered; primary last") \
                as rollout:
            previous_end = None
            dns = mr.dns.model_dump(mode="python", by_alias=False) if mr.dns is not None else None
            total = sum(r.weight for r in mr.regions) or 1.0
            shares = {r.name: r.weight * 100 / total for r in mr.regions}
            parent_id = "{{ dag.dag_id }}/{{ run_id }}"
            for i, region in enumerate(mr.regions, start=1):
                with TaskGroup(f"region_{i}_{region.name.replace('-', '_')}",
                               tooltip=f"{region.role} region {region.name}: {region.weight:g}% of global traffic"):
                    deploy = RegionalRunOperator(
                        task_id="deploy", trigger_dag_id=f"deploy_{b.name}_production_{region.name}",
                        trigger_run_id="{{ run_id }}__" + region.name,
                        conf={"version": "{{ params.version }}", "commit": "{{ params.commit }}",
                              "reason": "{{ params.reason }}", "parent_id": "{{ dag.dag_id }}/{{ run_id }}"},
                        wait_for_completion=True, deferrable=True, poke_interval=15,
                        allowed_states=["success"], failed_states=["failed"], skip_when_already_exists=True,
                        trigger_rule=TriggerRule.ALL_SUCCESS if policy.stop_on_region_failure or previous_end is None
                        else TriggerRule.ALL_DONE)
                    deploy.expected_duration = expected[region.name]
                    deploy.describe = _describe_region(region.name, b.name)
                    tasks = [deploy]
                    if region.wait_time.total_seconds() > 0:
                        conditions = b.gate_conditions()
                        tasks.append(MetricGateOperator(
                            task_id="observe", service=b.name, environment="production", region=region.name,
                            ledger_conn_id=b.ledger_conn_id, platform=b.platform_settings(), deferrable=b.deferrable,
                            version="{{ params.version }}", metrics=b.gate_metrics(relative=False) or b.metrics_from_conditions(
                                conditions), conditions=conditions,
                            interval=env.canary.analysis.interval if env.canary else region.wait_time / 10,
                            duration=region.wait_time, min_requests=env.canary.analysis.min_requests
                            if env.canary else 0, failure_limit=env.canary.analysis.threshold if env.canary else 2,
                            budget=f"region-{region.name}", metrics_provider=b.metrics_settings(),
                            rollback_on_failure=False))
                    if mr.dns is not None:
                        # Every region keeps serving (on the old version until its turn) with its configured
                        # share; once this region runs the new version healthy, the weights are (re)asserted,
                        # with regions that failed in this rollout drained.
                        tasks.append(RegionDnsWeightOperator(
                            task_id="shift_dns_weight", **b.common(), dns=dns, weights=shares,
                            failed_regions_of=parent_id, deferrable=b.deferrable))
                    chain_phases(*tasks)
                    if policy.rollback_failed_region and len(tasks) > 1:
                        # A failure inside the regional run is rolled back by that run itself; a failure while
                        # the region is observed afterwards rolls the region back here.
                        rollback = RegionalRunOperator(
                            task_id="rollback_region", trigger_dag_id=f"rollback_{b.name}_production_{region.name}",
                            trigger_run_id="{{ run_id }}__rollback__" + region.name,
                            conf={"reason": f"region {region.name} failed in the global rollout {{{{ run_id }}}}",
                                  "trigger": "manual"},
                            wait_for_completion=True, deferrable=True, poke_interval=15,
                            skip_when_already_exists=True, trigger_rule=TriggerRule.ONE_FAILED)
                        tasks[1:] >> rollback
                        if mr.dns is not None:
                            rollback >> RegionDnsWeightOperator(
                                task_id="move_dns_weight", **b.common(), dns=dns, weights=shares,
                                drain=[region.name], failed_regions_of=parent_id, deferrable=b.deferrable)
                if previous_end is not None:
                    previous_end >> deploy
                previous_end = tasks[-1]
        with phase("communication", "Deployment log and announcement with the per-region outcome") as comms:
            regions = [r.name for r in mr.regions]
            log = b.finish_success("update_deployment_log", announce=False, regions=regions)
            announce = b.finish_success("internal_announcement", record=False, regions=regions)
            chain_phases(log, announce)
        failure = b.finish_failure(regions=[r.name for r in mr.regions])
        chain_phases(start, checks, gate, rollout)
        # Only the last region's main path leads on (a region's rollback tasks end in their own states); the
        # failure handler is a sibling of the outcome record so that both stay leaves.
        chain_phases(previous_end, [comms, failure])
    return b.finalize(dag, "multi-region")


def _describe_region(region: str, service: str):
    def describe() -> str:
        return f"run the production workflow in {region} (deploy_{service}_production_{region}) and wait for it"

    return describe
