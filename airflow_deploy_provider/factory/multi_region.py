"""Multi-region rollout: ``deploy_<service>_production`` runs ``deploy_<service>_production_<region>`` region by
region in the configured order, shifting GeoDNS weights as regions come up; ``rollback_<service>_production``
rolls every region back at once; ``hotfix_<service>`` hotfixes the canary region, then every other region."""

from __future__ import annotations

from airflow.sdk import DAG, TaskGroup, TriggerRule

from airflow_deploy_provider.config.models import MultiRegionFile
from airflow_deploy_provider.factory.builder import ServiceDagBuilder, chain_phases, phase
from airflow_deploy_provider.factory.hotfix import (
    creation_and_build,
    hotfix_params,
    lower_environments,
    start_hotfix,
)
from airflow_deploy_provider.factory.production import (
    approval_gate,
    checklist,
    production_params,
    production_tag,
    regional_expected,
)
from airflow_deploy_provider.factory.rollback import rollback_params
from airflow_deploy_provider.operators.dns import RegionDnsWeightOperator
from airflow_deploy_provider.operators.gate import MetricGateOperator
from airflow_deploy_provider.operators.region import (
    RegionalRunOperator,
    RegionFailureBranchOperator,
    RolloutVerdictOperator,
)
from airflow_deploy_provider.operators.validation import RecordIncidentOperator


def build(b: ServiceDagBuilder) -> DAG:
    mr = b.config.multi_region
    env = b.env
    assert mr is not None and env is not None
    schedule = b.promotion_schedule("staging")
    dag = b.dag(f"deploy_{b.name}_production", title="multi-region rollout to production",
                params=production_params(required=schedule is None), tags=["deploy", "multi-region"],
                schedule=schedule)
    policy = mr.failure_policy
    expected = {r.name: regional_expected(b, r.name) for r in mr.regions}  # before entering this DAG's context
    with dag:
        start = b.start(tag_template=production_tag(b), commit="{{ params.commit or '' }}", promote_from="staging")
        with phase("pre_deployment_checklist", "Staging passed, security scan clean, release notes, rollback plan, "
                   "on-call notified, maintenance window, database backup") as checks:
            checklist(b)
        with phase("approval_gate", "Approvals, maintenance window and rollback readiness for the whole "
                   "rollout") as gate:
            approval_gate(b)
        with phase("regional_rollout", "Canary region first, then each next region, staggered; primary last") \
                as rollout:
            previous_end: list = []
            main_ends = []
            dns, shares = _dns_settings(mr), _shares(mr)
            parent_id = "{{ dag.dag_id }}/{{ run_id }}"
            for i, region in enumerate(mr.regions, start=1):
                with TaskGroup(f"region_{i}_{region.name.replace('-', '_')}",
                               tooltip=f"{region.role} region {region.name}: {region.weight:g}% of global traffic"):
                    deploy = RegionalRunOperator(
                        task_id="deploy", trigger_dag_id=f"deploy_{b.name}_production_{region.name}",
                        trigger_run_id="{{ run_id }}__" + region.name,
                        conf={"version": b.release("version"), "commit": b.release("commit"),
                              "reason": "{{ params.reason }}", "parent_id": parent_id},
                        trigger_rule=TriggerRule.ALL_SUCCESS if policy.stop_on_region_failure or not previous_end
                        else TriggerRule.ALL_DONE)
                    deploy.expected_duration = expected[region.name]
                    tasks = [deploy]
                    if region.wait_time.total_seconds() > 0:
                        conditions = b.watch_conditions()
                        # The region's own platform and metric settings (its connection, AWS region, target
                        # groups), as its regional DAG has them.
                        rb = ServiceDagBuilder(b.config, "production", region=region.name,
                                               ledger_conn_id=b.ledger_conn_id, deferrable=b.deferrable)
                        tasks.append(MetricGateOperator(
                            task_id="observe", service=b.name, environment="production", region=region.name,
                            ledger_conn_id=b.ledger_conn_id, platform=rb.platform_settings(), deferrable=b.deferrable,
                            version=b.release("version"), metrics=b.gate_metrics(relative=False) or b.metrics_from_conditions(
                                conditions), conditions=conditions,
                            interval=env.canary.analysis.interval if env.canary else region.wait_time / 10,
                            duration=region.wait_time, min_requests=env.canary.analysis.min_requests
                            if env.canary else 0, failure_limit=env.canary.analysis.threshold if env.canary else 2,
                            budget=f"region-{region.name}", metrics_provider=rb.metrics_settings(),
                            rollback_on_failure=False))
                    if mr.dns is not None:
                        # Every region keeps serving (on the old version until its turn) with its configured
                        # share; once this region runs the new version healthy, the weights are (re)asserted,
                        # with regions that failed in this rollout drained.
                        tasks.append(RegionDnsWeightOperator(
                            task_id="shift_dns_weight", **b.common(), dns=dns, weights=shares,
                            failed_regions_of=parent_id, deferrable=b.deferrable))
                    chain_phases(*tasks)
                    handling = _failure_handling(b, region.name, tasks, dns, shares, parent_id)
                    main_ends.append(tasks[-1])
                if previous_end:
                    previous_end >> deploy
                # Halting: the next region needs this one's main path to succeed. Continuing: it starts once this
                # region is done, its failure handled (rolled back, drained) first.
                previous_end = [tasks[-1]] if policy.stop_on_region_failure else [tasks[-1], *handling]
        regions = [r.name for r in mr.regions]
        with phase("outcome", "Every region succeeded? Per-region outcome from the ledger") as outcome:
            verdict = RolloutVerdictOperator(task_id="all_regions_succeeded", **b.common(), regions=regions,
                                             trigger_rule=TriggerRule.ALL_DONE)
        with phase("communication", "Deployment log and announcement with the per-region outcome") as comms:
            log = b.finish_success("update_deployment_log", announce=False, regions=regions)
            announce = b.finish_success("internal_announcement", record=False, regions=regions)
            chain_phases(log, announce)
        failure = b.finish_failure(regions=regions)
        chain_phases(start, checks, gate, rollout)
        # The verdict waits for every region, failure handling included; the failure handler is a sibling of
        # the outcome record so that both stay leaves.
        rollout >> verdict
        main_ends >> verdict
        chain_phases(outcome, [comms, failure])
    return b.finalize(dag, "multi-region")


def _failure_handling(b: ServiceDagBuilder, region: str, tasks: list, dns: dict | None, shares: dict[str, float],
                      parent_id: str) -> list:
    """What runs when the region fails: a branch that reads the region's deployment in the ledger, then the
    region's rollback (when it runs the new version) and the move of its DNS weight to the healthy regions."""
    policy = b.config.multi_region.failure_policy
    if not policy.rollback_failed_region:
        return []  # later regions' DNS steps still drain it: the ledger knows it failed
    rollback = None
    if len(tasks) > 1:
        # A failure inside the regional run is rolled back by that run itself; one found afterwards (the
        # rollout's watch of the region, its DNS step) is rolled back here.
        rollback = RegionalRunOperator(
            task_id="rollback_region", trigger_dag_id=f"rollback_{b.name}_production_{region}",
            trigger_run_id="{{ run_id }}__rollback__" + region,
            conf={"reason": f"region {region} failed in the global rollout {{{{ run_id }}}}", "trigger": "manual"})
    drain = None
    if dns is not None:
        drain = RegionDnsWeightOperator(task_id="move_dns_weight", **b.common(), dns=dns, weights=shares,
                                        drain=[region], failed_regions_of=parent_id, deferrable=b.deferrable)
    chosen = [t for t in (rollback, drain) if t is not None]
    if not chosen:
        return []
    decide = RegionFailureBranchOperator(
        task_id="if_region_failed", **{**b.common(), "region": region}, trigger_rule=TriggerRule.ONE_FAILED,
        rollback_task_id=rollback.task_id if rollback else None, drain_task_id=drain.task_id if drain else None)
    tasks >> decide
    decide >> chosen
    return chosen


def _dns_settings(mr: MultiRegionFile) -> dict | None:
    """The GeoDNS settings handed to the DNS steps (snake_case keys, as the operator reads them)."""
    return mr.dns.model_dump(mode="python", by_alias=False) if mr.dns is not None else None


def _shares(mr: MultiRegionFile) -> dict[str, float]:
    """Each region's configured share of global traffic, in percent (adding up to 100)."""
    total = sum(r.weight for r in mr.regions) or 1.0
    return {r.name: r.weight * 100 / total for r in mr.regions}


def build_rollback(b: ServiceDagBuilder) -> DAG:
    """``rollback_<service>_production`` of a multi-region service: every region's rollback DAG at once, to the
    same version (time to recovery matters more than caution here), then the GeoDNS weights back to the
    configured shares with regions whose rollback failed drained."""
    mr = b.config.multi_region
    assert mr is not None
    regions = [r.name for r in mr.regions]
    dag = b.dag(f"rollback_{b.name}_production", title="roll back production in every region",
                params=rollback_params(), tags=["rollback", "multi-region"])
    parent_id = "{{ dag.dag_id }}/{{ run_id }}"
    with dag:
        with phase("rollback_decision", "A person's decision or an alert; the version before the current rollout "
                   "(or the one chosen)") as decision:
            b.start("record_decision", version="{{ params.target_version or '' }}", trigger="{{ params.trigger }}",
                    across_regions=True)
        with phase("regional_rollbacks", "Every region's rollback DAG at once, to the same version") as regional:
            for region in mr.regions:
                RegionalRunOperator(
                    task_id=f"rollback_{region.name.replace('-', '_')}",
                    trigger_dag_id=f"rollback_{b.name}_production_{region.name}",
                    trigger_run_id="{{ run_id }}__" + region.name,
                    conf={"target_version": b.release("version"), "reason": "{{ params.reason }}",
                          "trigger": "{{ params.trigger }}", "parent_id": parent_id})
        tail = [regional]
        if mr.dns is not None:
            with phase("global_traffic", "GeoDNS weights back to the configured shares; regions whose rollback "
                       "failed get none") as traffic:
                RegionDnsWeightOperator(
                    task_id="restore_dns_weights", **b.common(), dns=_dns_settings(mr), weights=_shares(mr),
                    failed_regions_of=parent_id, deferrable=b.deferrable,
                    trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
            tail.append(traffic)
        with phase("outcome", "Every region rolled back?") as outcome:
            RolloutVerdictOperator(task_id="all_regions_rolled_back", **b.common(), regions=regions,
                                   trigger_rule=TriggerRule.ALL_DONE)
        with phase("post_rollback", "Incident report, communication to stakeholders") as post:
            chain_phases(RecordIncidentOperator(task_id="incident_report", **b.common()),
                         b.finish_success("notify_stakeholders", regions=regions))
        failure = b.finish_failure(regions=regions)
        chain_phases(decision, *tail, outcome)
        if len(tail) > 1:
            regional >> outcome  # the verdict waits for every regional rollback, whatever the DNS step did
        chain_phases(outcome, [post, failure])
    return b.finalize(dag, "rollback")


def build_hotfix(b: ServiceDagBuilder) -> DAG:
    """``hotfix_<service>`` of a multi-region service: the fast-track approval and the emergency build once, then
    ``hotfix_<service>_<region>`` in the canary region(s) (one replica first, then all, closely watched), and
    once it holds there, in every other region at once: an emergency does not wait for a staggered rollout.
    A region whose hotfix fails rolls itself back; the others are not started when the canary region fails."""
    mr = b.config.multi_region
    assert mr is not None
    regions = [r.name for r in mr.regions]
    dag = b.dag(f"hotfix_{b.name}", title="hotfix to production in every region", params=hotfix_params(),
                tags=["hotfix", "multi-region"])
    parent_id = "{{ dag.dag_id }}/{{ run_id }}"
    first = [r for r in mr.regions if r.role == "canary"] or mr.regions[:1]
    with dag:
        start = start_hotfix(b, across_regions=True)
        creation, build_ = creation_and_build(b)
        with phase("expedited_deployment", "The canary region first, then every other region at once; each "
                   "region one replica first and close monitoring") as deploy:
            runs = {}
            for region in mr.regions:
                with TaskGroup(f"region_{region.name.replace('-', '_')}", tooltip=f"{region.role} region"):
                    run = RegionalRunOperator(
                        task_id="hotfix", trigger_dag_id=f"hotfix_{b.name}_{region.name}",
                        trigger_run_id="{{ run_id }}__" + region.name,
                        conf={"version": b.release("version"), "issue_id": "{{ params.issue_id }}",
                              "severity": "{{ params.severity }}", "reason": "{{ params.reason }}",
                              "commit": b.release("commit"), "parent_id": parent_id})
                    runs[region.name] = run
            for region in mr.regions:
                if region not in first:
                    [runs[r.name] for r in first] >> runs[region.name]
        with phase("outcome", "Every region runs the hotfix?") as outcome:
            RolloutVerdictOperator(task_id="all_regions_hotfixed", **b.common(), regions=regions,
                                   trigger_rule=TriggerRule.ALL_DONE)
        with phase("post_hotfix_actions", "Deploy the same version to lower environments, document the incident") \
                as post:
            chain_phases(RecordIncidentOperator(task_id="document_incident", **b.common()), lower_environments(b),
                         b.finish_success("notify_success", regions=regions))
        failure = b.finish_failure(regions=regions)
        chain_phases(start, creation, build_, deploy, outcome)
        chain_phases(outcome, [post, failure])
    return b.finalize(dag, "hotfix")

