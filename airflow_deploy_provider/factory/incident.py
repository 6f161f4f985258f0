"""``incident_<service>``: the spec's outage recovery workflow, for production."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from airflow_deploy_provider.config.types import format_duration
from airflow_deploy_provider.factory.builder import ServiceDagBuilder, chain_phases, phase
from airflow_deploy_provider.factory.multi_region import _dns_settings, _shares
from airflow_deploy_provider.operators.deploy import ScaleOperator
from airflow_deploy_provider.operators.dns import RegionDnsWeightOperator, RestoreRegionTrafficOperator
from airflow_deploy_provider.operators.gate import MetricGateOperator
from airflow_deploy_provider.operators.incident import (
    ConfirmFixedOperator,
    IncidentChannelOperator,
    IncidentDiagnosisOperator,
    IncidentReportOperator,
    MaintenanceModeOperator,
    MitigationChoiceOperator,
    MitigationDoneOperator,
    OpenIncidentOperator,
    StatusPageOperator,
)
from airflow_deploy_provider.operators.region import RegionalRunOperator
from airflow_deploy_provider.registry import platform_class

MITIGATED = "mitigation.mitigation_in_place"
VERIFY_AFTER_ANY = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS  # joins the paths of the mitigations


def incident_params(regions: list[str]) -> dict[str, Param]:
    params = {
        "summary": Param(type="string", minLength=5, maxLength=500, title="Summary",
                         description="What is wrong, as customers see it."),
        "severity": Param("critical", type="string", enum=["critical", "major"], title="Severity"),
        "started_at": Param(None, type=["null", "string"], title="Problem started",
                            pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?$",
                            description="When the problem started (an alert's startsAt), ISO 8601; default: now."),
        "trigger": Param("manual", type="string", enum=["manual", "alert"], title="Trigger"),
    }
    if regions:
        params["region"] = Param(None, type=["null", "string"], enum=[None, *regions], title="Failing region",
                                 description="For 'Fail over': the region whose traffic moves to the others.")
    return params


def regional_builders(b: ServiceDagBuilder) -> dict[str, ServiceDagBuilder]:
    """Region -> a builder with the region's own platform and metric settings (its connection, router)."""
    mr = b.config.multi_region
    return {r.name: ServiceDagBuilder(b.config, "production", region=r.name, ledger_conn_id=b.ledger_conn_id,
                                      deferrable=b.deferrable) for r in (mr.regions if mr is not None else [])}


def maintenance_targets(b: ServiceDagBuilder, regional: dict[str, ServiceDagBuilder]) -> dict[str, dict[str, Any]]:
    """Where maintenance mode goes (region -> platform settings; ``""`` for a single-region service), or nothing
    when a target's platform has no maintenance mode: then it is not offered. The platform says so from its
    settings, so a new platform needs no change here."""
    targets = {region: rb.platform_settings() for region, rb in regional.items()} or {"": b.platform_settings()}
    for settings in targets.values():
        if platform_class(settings["type"]).maintenance_support(settings) is not None:
            return {}
    return targets


def build(b: ServiceDagBuilder) -> DAG:
    """Acknowledge, page, channel and status page; diagnosis; a person's choice of mitigation (roll back, scale
    up, fail over, maintenance mode); after a fail over or maintenance mode, a person's confirmation that the
    problem is fixed; verification; traffic restored gradually; the post-incident report with the SLA
    figures."""
    env = b.env
    assert env is not None
    settings = b.svc.incident
    mr = b.config.multi_region
    regional = regional_builders(b)
    dag = b.dag(f"incident_{b.name}", title="outage recovery", params=incident_params(list(regional)),
                tags=["incident"])
    step = {**b.common(), "notification": b.notification()}
    maintenance = maintenance_targets(b, regional)
    rollback_conditions = b.gate_conditions(b.svc.rollback.conditions)
    with dag:
        with phase("initial_response", "Acknowledge, open the incident record, page on-call, create the incident "
                   "channel, update the status page") as response:
            opened = OpenIncidentOperator(task_id="acknowledge_incident", **step, summary="{{ params.summary }}",
                                          severity="{{ params.severity }}",
                                          started_at="{{ params.started_at or '' }}", trigger="{{ params.trigger }}")
            channel = IncidentChannelOperator(task_id="create_incident_channel", **step,
                                              slack_conn_id=settings.slack_api)
            status = StatusPageOperator(task_id="update_status_page", **step, http_conn_id=settings.status_page,
                                        path=settings.status_page_path)
            opened >> [channel, status]
        with phase("diagnosis", "Recent deployments (ledger), the metric spike") as diagnosis:
            IncidentDiagnosisOperator(task_id="check_recent_deployments_and_metrics", **b.common(),
                                      metrics_provider=b.metrics_settings(), trigger_rule=TriggerRule.NONE_FAILED)
        with phase("mitigation", "A person chooses: roll back, scale up, fail over or maintenance mode") \
                as mitigation:
            tasks = {"Roll back": RegionalRunOperator(
                task_id="roll_back", trigger_dag_id=f"rollback_{b.name}_production",
                trigger_run_id="{{ run_id }}__rollback",
                conf={"reason": "incident: {{ params.summary }}", "trigger": "{{ params.trigger }}"})}
            if mr is None:
                tasks["Scale up"] = ScaleOperator(task_id="scale_up", **b.on_platform(), role="stable",
                                                  replicas=env.replicas * 2)
            elif mr.dns is not None:
                tasks["Fail over"] = RegionDnsWeightOperator(
                    task_id="fail_over", **b.common(), dns=_dns_settings(mr), weights=_shares(mr),
                    drain=["{{ params.region or '' }}"], require_drain=True, deferrable=b.deferrable)
            if maintenance:
                tasks["Maintenance mode"] = MaintenanceModeOperator(
                    task_id="enter_maintenance_mode", **step, targets=maintenance, enabled=True,
                    message=settings.maintenance_message)
            choose = MitigationChoiceOperator(
                task_id="choose_mitigation", **b.common(), notification=b.notification(),
                choices={option: f"mitigation.{task.task_id.rsplit('.', 1)[-1]}" for option, task in tasks.items()},
                responders=settings.responders, timeout=settings.mitigation_timeout)
            done = MitigationDoneOperator(task_id="mitigation_in_place", **step,
                                          platform=None if mr is not None else b.on_platform()["platform"],
                                          trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
            choose >> list(tasks.values()) >> done
        confirm = {"responders": settings.responders, "timeout": settings.fix_timeout, **step}
        # Tasks whose failure makes the incident unresolved, and those the report waits for.
        watched: list[Any] = []
        ends: list[Any] = [done]
        with phase("verification", "Smoke tests on the replicas, the error rate on live traffic; after maintenance "
                   "mode a person's confirmation of the fix first, and the page off between the two"):
            confirm_service = leave = None
            if maintenance:
                # A hold, not a fix: customers come back only once a person says the problem is gone.
                confirm_service = ConfirmFixedOperator(
                    task_id="confirm_service_fixed", option="Leave maintenance mode", **confirm,
                    body="Maintenance mode is on: customers see the maintenance page. Once the problem is fixed, "
                         "choose **Leave maintenance mode**: the smoke tests check the replicas behind the page, "
                         "then live traffic comes back and is watched; if that fails, maintenance mode goes back "
                         "on.")
                [tasks["Maintenance mode"], done] >> confirm_service
                watched.append(confirm_service)
                leave = MaintenanceModeOperator(task_id="leave_maintenance_mode", **step, targets=maintenance,
                                                enabled=False)
            checks = _verification(b, done, confirm_service, leave, regional, rollback_conditions)
            watched += checks
            ends += checks
            if leave is not None:
                MaintenanceModeOperator(
                    task_id="back_into_maintenance", **step, targets=maintenance, enabled=True, only_if_entered=True,
                    message=settings.maintenance_message, trigger_rule=TriggerRule.ONE_FAILED) \
                    << checks[checks.index(leave):]  # leaving, and what watches live traffic after it
        with phase("restoration", "After a fail over: a person confirms the region is fixed; its traffic comes "
                   "back in steps, each watched"):
            if "Fail over" in tasks:
                steps = _restoration(b, settings, tasks["Fail over"], done, confirm, regional, rollback_conditions)
                watched += steps
                ends.append(steps[-1])
        with phase("post_incident", "Report (timeline, SLA figures against the targets), status page resolved"):
            report = IncidentReportOperator(task_id="post_incident_report", **step, recovered=True,
                                            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
            resolved = StatusPageOperator(task_id="resolve_status_page", **step, http_conn_id=settings.status_page,
                                          path=settings.status_page_path, status="resolved")
            ends >> report  # every path ends here, whichever mitigation ran
            report >> resolved
        unresolved = IncidentReportOperator(task_id="report_unresolved", **step, recovered=False,
                                            trigger_rule=TriggerRule.ONE_FAILED)
        chain_phases(response, diagnosis, mitigation)
        [opened, choose, done, *watched] >> unresolved
    return b.finalize(dag, "incident")


def _verification(b: ServiceDagBuilder, done: Any, confirm: Any, leave: Any,
                  regional: dict[str, ServiceDagBuilder], conditions: list[dict[str, Any]]) -> list[Any]:
    """The verification tasks in order of the main path: smoke tests (single region) on the replicas; maintenance
    mode off (when it was chosen); the error rate watched on live traffic. Each runs after whichever mitigation
    ran: the tasks of the paths not taken are skipped and do not hold it up."""
    settings = b.svc.incident
    watch = settings.verify_duration
    out: list[Any] = []
    after = [done] if confirm is None else [done, confirm]
    if not regional:
        smoke = b.suite("smoke", task_id="run_smoke_tests", role="stable")  # the replicas, behind any page
        smoke.version = "{{ ti.xcom_pull(task_ids='%s') }}" % MITIGATED
        smoke.trigger_rule = VERIFY_AFTER_ANY
        after >> smoke
        out.append(smoke)
        after = [smoke]
    if leave is not None:
        # After the smoke tests; the confirmation upstream skips it on the other mitigations' paths.
        (after if confirm in after else [*after, confirm]) >> leave
        out.append(leave)
        after = [*after, leave]
    if not watch:
        return out
    gate = {"metrics": b.metrics_from_conditions(conditions), "conditions": conditions, "interval": watch / 10,
            "duration": watch, "failure_limit": 2, "budget": "incident-verification", "rollback_on_failure": False,
            "role": "stable", "trigger_rule": VERIFY_AFTER_ANY}
    if not regional:
        verify = MetricGateOperator(task_id="verify_error_rate", **b.waiting(), version=out[0].version,
                                    metrics_provider=b.metrics_settings(), **gate)
        after >> verify
        out.append(verify)
    elif leave is not None:
        # Multi-region: after maintenance mode each region's own traffic is watched (a rollback verifies
        # itself in each region; a fail over's restoration watches each step).
        with TaskGroup("regions", tooltip="Each region's error rate on live traffic after maintenance mode"):
            for region, rb in regional.items():
                verify = MetricGateOperator(
                    task_id=f"verify_{region.replace('-', '_')}", **rb.waiting(), version="",
                    metrics_provider=rb.metrics_settings(),
                    **{**gate, "trigger_rule": TriggerRule.ALL_SUCCESS, "budget": f"incident-verification-{region}"})
                leave >> verify
                out.append(verify)
    return out


def _restoration(b: ServiceDagBuilder, settings: Any, fail_over: Any, done: Any, confirm: dict[str, Any],
                 regional: dict[str, ServiceDagBuilder], conditions: list[dict[str, Any]]) -> list[Any]:
    """After a fail over: a person confirms the region is fixed, then its weight comes back in
    ``incident.restoreSteps``, each step watched for ``incident.restorePause``."""
    mr = b.config.multi_region
    assert mr is not None
    steps = settings.restore_steps
    pause = settings.restore_pause
    confirm_region = ConfirmFixedOperator(
        task_id="confirm_region_fixed", option="Restore traffic", **confirm,
        body="The traffic of **{{ params.region }}** is on the other regions. Once the region is fixed, choose "
             f"**Restore traffic**: it gets {', '.join(f'{s}%' for s in steps)} of its weight back in turn"
             + (f", each step watched for {format_duration(pause)}; a bad step sends its traffic back to the "
                "other regions." if pause else "."))
    [fail_over, done] >> confirm_region  # skipped unless the fail over ran
    targets = {region: {"platform": rb.platform_settings(), "metrics_provider": rb.metrics_settings()}
               for region, rb in regional.items()}
    out = [confirm_region]
    for percent in steps:
        out.append(RestoreRegionTrafficOperator(
            task_id=f"restore_traffic_{percent}", **b.common(), dns=_dns_settings(mr), weights=_shares(mr),
            region_to_restore="{{ params.region or '' }}", percent=percent, targets=targets,
            metrics=b.metrics_from_conditions(conditions), conditions=conditions, pause=pause,
            deferrable=b.deferrable))
        out[-2] >> out[-1]
    return out
