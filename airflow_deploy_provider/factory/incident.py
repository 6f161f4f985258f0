"""``incident_<service>``: the spec's outage recovery workflow, for production."""

from __future__ import annotations

from airflow.sdk import DAG, Param, TriggerRule

from airflow_deploy_provider.factory.builder import ServiceDagBuilder, chain_phases, phase
from airflow_deploy_provider.factory.multi_region import _dns_settings, _shares
from airflow_deploy_provider.operators.deploy import ScaleOperator
from airflow_deploy_provider.operators.dns import RegionDnsWeightOperator
from airflow_deploy_provider.operators.gate import MetricGateOperator
from airflow_deploy_provider.operators.incident import (
    IncidentChannelOperator,
    IncidentDiagnosisOperator,
    IncidentReportOperator,
    MitigationChoiceOperator,
    MitigationDoneOperator,
    OpenIncidentOperator,
    StatusPageOperator,
)
from airflow_deploy_provider.operators.region import RegionalRunOperator

MITIGATED = "mitigation.mitigation_in_place"


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


def build(b: ServiceDagBuilder) -> DAG:
    """Acknowledge, page, channel and status page; diagnosis; a person's choice of mitigation (roll back, scale
    up, fail over); verification; traffic restored; the post-incident report with the SLA figures."""
    env = b.env
    assert env is not None
    settings = b.svc.incident
    mr = b.config.multi_region
    regions = [r.name for r in mr.regions] if mr is not None else []
    dag = b.dag(f"incident_{b.name}", title="outage recovery", params=incident_params(regions),
                tags=["incident"])
    step = {**b.common(), "notification": b.notification()}
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
        with phase("mitigation", "A person chooses: roll back, scale up or fail over") as mitigation:
            tasks = {"Roll back": RegionalRunOperator(
                task_id="roll_back", trigger_dag_id=f"rollback_{b.name}_production",
                trigger_run_id="{{ run_id }}__rollback",
                conf={"reason": "incident: {{ params.summary }}", "trigger": "{{ params.trigger }}"})}
            if mr is None:
                tasks["Scale up"] = ScaleOperator(task_id="scale_up", **b.on_platform(), role="stable",
                                                  replicas=env.replicas * 2)
            else:
                if mr.dns is not None:
                    tasks["Fail over"] = RegionDnsWeightOperator(
                        task_id="fail_over", **b.common(), dns=_dns_settings(mr), weights=_shares(mr),
                        drain=["{{ params.region or '' }}"], deferrable=b.deferrable)
            choose = MitigationChoiceOperator(
                task_id="choose_mitigation", **b.common(), notification=b.notification(),
                choices={option: f"mitigation.{task.task_id.rsplit('.', 1)[-1]}" for option, task in tasks.items()},
                responders=settings.responders, timeout=settings.mitigation_timeout)
            done = MitigationDoneOperator(task_id="mitigation_in_place", **step,
                                          platform=None if mr is not None else b.on_platform()["platform"],
                                          trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
            choose >> list(tasks.values()) >> done
        with phase("verification", "Smoke tests, the error rate back to normal") as verification:
            checks = []
            if mr is None:
                smoke = b.suite("smoke", task_id="run_smoke_tests", role="stable")
                smoke.version = "{{ ti.xcom_pull(task_ids='%s') }}" % MITIGATED
                checks.append(smoke)
                watch = settings.verify_duration
                if watch:
                    conditions = b.gate_conditions(b.svc.rollback.conditions)
                    checks.append(MetricGateOperator(
                        task_id="verify_error_rate", **b.waiting(), version=smoke.version, role="stable",
                        metrics=b.metrics_from_conditions(conditions), conditions=conditions,
                        interval=watch / 10, duration=watch, failure_limit=2, budget="incident-verification",
                        metrics_provider=b.metrics_settings(), rollback_on_failure=False))
                chain_phases(*checks)
        with phase("restoration", "After a fail over: traffic back to the configured shares") as restoration:
            if mr is not None and "Fail over" in tasks:
                restore = RegionDnsWeightOperator(task_id="restore_traffic", **b.common(), dns=_dns_settings(mr),
                                                  weights=_shares(mr), deferrable=b.deferrable)
                tasks["Fail over"] >> restore
        with phase("post_incident", "Report (timeline, SLA figures against the targets), status page resolved") \
                as post:
            report = IncidentReportOperator(task_id="post_incident_report", **step, recovered=True,
                                            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
            resolved = StatusPageOperator(task_id="resolve_status_page", **step, http_conn_id=settings.status_page,
                                          path=settings.status_page_path, status="resolved")
            done >> report  # also when the restoration had nothing to do
            report >> resolved
        unresolved = IncidentReportOperator(task_id="report_unresolved", **step, recovered=False,
                                            trigger_rule=TriggerRule.ONE_FAILED)
        chain_phases(response, diagnosis, mitigation, verification, restoration, post)
        [opened, choose, done, *checks] >> unresolved
    return b.finalize(dag, "incident")
