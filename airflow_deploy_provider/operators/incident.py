"""The outage-recovery workflow's steps: open the incident, page, channel and status page, diagnosis, the
mitigation a person chooses (maintenance mode among them), the confirmation that the problem behind a fail over
or maintenance mode is fixed, and the post-incident report with the spec's response targets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.operators.lifecycle import NotifyingMixin

#: The spec's outage targets, measured from when the problem started: detection, initial response,
#: mitigation, recovery.
SLA_TARGETS = {"detect": timedelta(minutes=1), "respond": timedelta(minutes=5), "mitigate": timedelta(minutes=15),
               "recover": timedelta(minutes=30)}
#: The mitigations a person can choose, and the task each one runs.
MITIGATIONS = {"Roll back": "roll_back", "Scale up": "scale_up", "Fail over": "fail_over",
               "Maintenance mode": "enter_maintenance_mode"}
#: What each mitigation does, for the person choosing.
MITIGATION_HELP = {
    "Roll back": "roll back to the last stable version",
    "Scale up": "double the stable replicas",
    "Fail over": "move the failing region's GeoDNS weight to the other regions (set the run's 'region' param)",
    "Maintenance mode": "customers get a maintenance page (HTTP 503) until you confirm the fix",
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _time(value: Any) -> datetime | None:
    if value in (None, "", "None"):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise AirflowFailException(f"{str(value)[:40]!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def stage_times(ledger: Any, deployment_id: str) -> dict[str, datetime]:
    """When each stage of the incident happened (``incident`` events with a ``stage``), first time wins."""
    times: dict[str, datetime] = {}
    for event in ledger.events(deployment_id, kind="incident"):
        stage, at = event.data.get("stage"), _time(event.data.get("at")) or event.at
        if stage and stage not in times:
            times[stage] = at
    return times


class _IncidentStep(NotifyingMixin, DeploymentBaseOperator):
    def __init__(self, *, notification: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.notification = notification

    def stage(self, stage: str, message: str, at: datetime | None = None, **data: Any) -> None:
        if stage in stage_times(self.ledger, self.deployment_id):
            return  # a retry: the stage is recorded once
        self.record("incident", message, data={"stage": stage, "at": (at or _now()).isoformat(), **data})

    def announce(self, message: str, context: Any, key: str) -> str:
        from airflow_deploy_provider.notifications.slack import DeploymentMessage, run_url

        dag_run = context.get("dag_run")
        incident = self.ledger.get(self.deployment_id)
        return self.notify("incident", DeploymentMessage(
            event="incident", kind="incident", service=self.service, environment=self.environment,
            region=self.region, version=incident.version if incident else None, reason=message,
            run_url=run_url(getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None))), context, key=key)



class OpenIncidentOperator(_IncidentStep):
    """
    Acknowledges the incident: opens its record in the ledger (kind ``incident``, the version running now, the
    summary), with when the problem started and when it was detected, then pages the on-call team (the
    service's notification channel).

    Template fields: ``deployment_id``, ``summary``, ``severity``, ``started_at``, ``trigger``.

    :param summary: what is wrong (templated).
    :param severity: ``critical`` or ``major`` (templated).
    :param started_at: when the problem started, ISO 8601 (an alert's ``startsAt``); default: now (templated).
    :param trigger: ``manual`` or ``alert`` (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "summary", "severity", "started_at", "trigger")
    ui_color = "#f28b82"

    def __init__(self, *, summary: str, severity: str = "critical", started_at: str = "", trigger: str = "manual",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.summary = summary
        self.severity = severity
        self.started_at = started_at
        self.trigger = trigger

    def describe(self) -> str:
        return "acknowledge the incident: open its record (ledger), page the on-call team"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.notifications.slack import triggering_user

        opened = _now()
        started = _time(self.started_at) or opened
        if self.ledger.get(self.deployment_id) is None:
            current = self.ledger.last_stable(self.service, self.environment)
            dag_run = context.get("dag_run")
            self.ledger.start_deployment(
                id=self.deployment_id, service=self.service, environment=self.environment, kind="incident",
                version=current.version if current else "unknown", image=current.image if current else None,
                trigger=str(self.trigger or "manual")[:20], triggered_by=triggering_user(context),
                reason=f"[{self.severity}] {self.summary}"[:2000], dag_id=getattr(dag_run, "dag_id", None),
                run_id=getattr(dag_run, "run_id", None))
        self.stage("started", f"problem started {started:%H:%M:%S} UTC", at=started)
        self.stage("detected", f"incident opened ({self.severity}): {self.summary}", at=opened,
                   severity=self.severity, summary=self.summary)
        sent = self.announce(f"INCIDENT ({self.severity}): {self.summary}. On-call: acknowledge and choose a "
                             "mitigation in the run.", context, key="incident:page")
        self.stage("responded", f"on-call paged ({sent})", channel=(self.notification or {}).get("channel"))
        return {"started_at": started.isoformat(), "opened_at": opened.isoformat()}


class IncidentChannelOperator(_IncidentStep):
    """
    Creates the incident's Slack channel (``#incident-<service>-<yyyymmdd-hhmm>``) through the slack provider's
    ``SlackHook`` and posts the summary there; skipped without a Slack API connection. A retry that finds the
    channel taken uses it.

    :param slack_conn_id: Slack API connection (bot token), or ``None``.
    """

    def __init__(self, *, slack_conn_id: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slack_conn_id = slack_conn_id

    def describe(self) -> str:
        return "create the incident channel in Slack" if self.slack_conn_id else \
            "create the incident channel (no incident.slackApi connection: skipped)"

    def execute(self, context: Any) -> dict[str, Any]:
        if not self.slack_conn_id:
            raise AirflowSkipException("no Slack API connection (incident.slackApi): no incident channel")
        from airflow.providers.slack.hooks.slack import SlackHook
        from slack_sdk.errors import SlackApiError

        incident = self.ledger.get(self.deployment_id)
        opened = incident.started_at if incident else _now()
        name = re.sub(r"[^a-z0-9-]", "-", f"incident-{self.service}-{opened:%Y%m%d-%H%M}".lower())[:80]
        client = SlackHook(slack_conn_id=self.slack_conn_id).client
        try:
            channel = client.conversations_create(name=name)["channel"]
        except SlackApiError as exc:
            if exc.response.get("error") != "name_taken":
                raise
            channel = next(c for c in client.conversations_list(limit=1000)["channels"] if c["name"] == name)
        client.chat_postMessage(channel=channel["id"], text=f"{self.service}: {incident.reason if incident else ''}")
        self.stage("channel", f"incident channel #{name} created", channel=name, channel_id=channel["id"])
        return {"channel": name, "id": channel["id"]}


class StatusPageOperator(_IncidentStep):
    """
    Posts the incident (or its resolution) to the status page through an HTTP connection (``HttpHook``);
    skipped without one.

    :param http_conn_id: the status page's connection, or ``None``.
    :param path: endpoint path.
    :param status: ``investigating`` or ``resolved``.
    """

    def __init__(self, *, http_conn_id: str | None, path: str = "/api/v1/incidents", status: str = "investigating",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_conn_id = http_conn_id
        self.path = path
        self.status = status

    def describe(self) -> str:
        return f"status page: {self.status}" + ("" if self.http_conn_id else " (no incident.statusPage: skipped)")

    def execute(self, context: Any) -> None:
        if not self.http_conn_id:
            raise AirflowSkipException("no status page connection (incident.statusPage)")
        from airflow.providers.http.hooks.http import HttpHook

        incident = self.ledger.get(self.deployment_id)
        body = {"id": self.deployment_id, "service": self.service, "environment": self.environment,
                "status": self.status, "summary": incident.reason if incident else None}
        HttpHook(method="POST", http_conn_id=self.http_conn_id).run(self.path, json=body)
        self.stage(f"status_page_{self.status}", f"status page: {self.status}")


class IncidentDiagnosisOperator(DeploymentBaseOperator):
    """
    Diagnosis for the people deciding: the service's deployments of the last ``lookback`` (from the ledger, the
    most likely cause first) and the metric spike (error rate and p99 latency of the running version over the
    last ``window`` against the ``window`` an hour earlier, from the metric provider). Recorded in the ledger
    and the task log.

    :param metrics_provider: the metric provider's settings.
    :param lookback: how far back deployments are listed.
    :param window: the measurement window.
    """

    def __init__(self, *, metrics_provider: dict[str, Any], lookback: timedelta = timedelta(hours=24),
                 window: timedelta = timedelta(minutes=5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics_provider = metrics_provider
        self.lookback = lookback
        self.window = window

    def describe(self) -> str:
        return "diagnosis: recent deployments (ledger) and the metric spike"

    def execute(self, context: Any) -> dict[str, Any]:
        import asyncio

        from airflow_deploy_provider.config.types import BUILTIN_METRICS
        from airflow_deploy_provider.metrics.base import MetricQuery
        from airflow_deploy_provider.registry import get_metric_provider

        since = _now() - self.lookback
        recent = [d for d in self.ledger.deployments(self.service, self.environment)
                  if d.kind != "incident" and d.started_at >= since]
        lines = [f"{d.started_at:%H:%M} {d.kind} {d.version} ({d.status})" for d in recent]
        incident = self.ledger.get(self.deployment_id)
        version = incident.version if incident else "unknown"
        provider = get_metric_provider(self.metrics_provider)

        async def measure() -> dict[str, Any]:
            out = {}
            for name in ("error_rate", "latency_p99"):
                result = await provider.evaluate(MetricQuery(
                    metric=BUILTIN_METRICS[name], service=self.service, environment=self.environment,
                    version=version, window=self.window, region=self.region, role="stable"))
                out[name] = result.value
            return out

        now = asyncio.run(measure())
        diagnosis = {"recent_deployments": lines, "version": version, "metrics": now,
                     "suspect": recent[0].id if recent else None}
        self.log.info("Recent deployments of %s in %s:\n  %s", self.service, self.environment,
                      "\n  ".join(lines) or "none")
        self.log.info("Metrics of %s over the last %s: %s", version, self.window, now)
        self.record("incident", f"diagnosis: {len(recent)} deployment(s) in the last "
                    f"{int(self.lookback.total_seconds() // 3600)}h; {version}: "
                    + ", ".join(f"{k} {v if v is not None else 'no data'}" for k, v in now.items()),
                    data={"stage": "diagnosed", "at": _now().isoformat(), **diagnosis})
        return diagnosis


class MitigationChoiceOperator(NotifyingMixin, DeploymentBaseOperator, HITLBranchOperator):
    """
    A person chooses the mitigation in the Airflow UI or through the REST API (Airflow's human-in-the-loop
    request); only the chosen mitigation's task runs. The choice, who made it and when go to the ledger.

    :param choices: option shown -> task id of the mitigation.
    :param responders: Airflow users who may choose; empty: any user.
    :param timeout: how long the request waits; then the run fails, nothing changed.
    """

    template_fields: Sequence[str] = ("deployment_id", "subject", "body")
    waits_for_people = True
    expected_duration = timedelta(0)

    def __init__(self, *, choices: dict[str, str], responders: list[str] | None = None,
                 timeout: timedelta = timedelta(minutes=15), notification: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Incident: choose the mitigation for {kwargs.get('service')}")
        kwargs.setdefault("body", "".join(f"- **{option}**: {MITIGATION_HELP.get(option, option)}\n"
                                          for option in choices)
                          + "\nThe diagnosis task's log lists the recent deployments and metrics.")
        super().__init__(options=list(choices), options_mapping=choices, multiple=False,
                         assigned_users=[{"id": u, "name": u} for u in responders or []] or None,
                         response_timeout=timeout,
                         params={"comment": Param("", type=["null", "string"], maxLength=2000, title="Comment")},
                         **kwargs)
        self.choices = choices
        self.notification = notification

    def describe(self) -> str:
        return "a person chooses the mitigation: " + ", ".join(self.choices)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" in event:
            self.record("incident", "no mitigation chosen in time", data={"stage": "no_choice"})
        chosen = (event.get("chosen_options") or ["?"])[0]
        user = event.get("responded_by_user") or {}
        who = user.get("id") if isinstance(user, dict) else str(user)
        comment = (event.get("params_input") or {}).get("comment")
        self.record("incident", f"mitigation chosen by {who}: {chosen}" + (f" ({comment})" if comment else ""),
                    data={"stage": "mitigation_chosen", "at": _now().isoformat(), "choice": chosen, "user": who})
        return super().execute_complete(context, event)


class IncidentReportOperator(_IncidentStep):
    """
    Closes the incident: the timeline (every ledger event of the incident), how long detection, response,
    mitigation and recovery took from the start of the problem against the spec's targets (detect < 1 min,
    respond < 5, mitigate < 15, recover < 30), written to the ledger and posted. The incident is ``resolved``
    when verification passed, else ``unresolved``.

    :param recovered: ``True`` for the report after a verified recovery (trigger rule all_success), ``False``
        for the one after a failure.
    """

    def __init__(self, *, recovered: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recovered = recovered

    def describe(self) -> str:
        return "post-incident report: timeline, SLA figures against the targets" + ("" if self.recovered else
                                                                                    " (unresolved)")

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.notifications.slack import format_seconds

        if self.ledger.get(self.deployment_id) is None:
            raise AirflowSkipException("no incident was opened")
        if self.recovered:
            self.stage("recovered", "service verified healthy")
        times = stage_times(self.ledger, self.deployment_id)
        started = times.get("started") or times.get("detected") or _now()
        mitigated = times.get("mitigated")
        marks = {"detect": times.get("detected"), "respond": times.get("responded"), "mitigate": mitigated,
                 "recover": times.get("recovered")}
        sla = {}
        for name, target in SLA_TARGETS.items():
            at = marks[name]
            took = (at - started).total_seconds() if at else None
            sla[name] = {"seconds": took, "target_seconds": target.total_seconds(),
                         "met": None if took is None else took <= target.total_seconds()}
        timeline = [{"at": e.at.isoformat(), "kind": e.kind, "message": e.message}
                    for e in self.ledger.events(self.deployment_id)]
        summary = "; ".join(
            f"{name} {format_seconds(v['seconds']) if v['seconds'] is not None else 'not reached'} "
            f"(target {format_seconds(v['target_seconds'])}{', MISSED' if v['met'] is False else ''})"
            for name, v in sla.items())
        status = "resolved" if self.recovered else "unresolved"
        self.record("incident", f"post-incident report ({status}): {summary}",
                    data={"stage": "report", "sla": sla, "timeline": timeline, "status": status})
        self.ledger.finish_deployment(self.deployment_id, status, summary)
        self.log.info("Post-incident report: %s\nTimeline:\n%s", summary,
                      "\n".join(f"  {t['at']}  {t['message']}" for t in timeline))
        self.announce(f"incident {status}: {summary}", context, key=f"incident:report:{status}")
        return {"status": status, "sla": sla}


class MitigationDoneOperator(_IncidentStep):
    """
    Marks the mitigation applied (after the chosen mitigation's task) for the report's timeline, and returns
    the version the service's stable replicas run now (what verification checks).

    :param platform: the deployment target's settings; ``None`` (a multi-region service): no version read.
    """

    def __init__(self, *, platform: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.platform = platform

    def describe(self) -> str:
        return "record that the mitigation is in place; read the version now running"

    def execute(self, context: Any) -> str | None:
        chosen = next((e.data.get("choice") for e in self.ledger.events(self.deployment_id, kind="incident")
                       if e.data.get("stage") == "mitigation_chosen"), None)
        version = None
        if self.platform is not None:
            from airflow_deploy_provider.registry import get_platform

            version = get_platform(self.platform, self.service, self.environment, self.region).traffic().stable_version
        self.stage("mitigated", f"mitigation in place: {chosen}" + (f"; {version} serves" if version else ""),
                   choice=chosen, version=version)
        return version


class MaintenanceModeOperator(_IncidentStep):
    """
    Turns maintenance mode on or off on every target of the service through the platform interface
    (:meth:`~airflow_deploy_provider.platforms.base.DeploymentPlatform.set_maintenance`): while it is on, live
    requests get HTTP 503 with ``message`` instead of the failing service. The state is read back and recorded
    in the ledger (``maintenance`` events, and the incident's timeline). Retry-safe: the platforms converge.

    With ``only_if_entered`` (the task that runs when leaving maintenance mode, or the watch after it, fails) it
    turns maintenance mode back on only when this incident put it on (another mitigation's failed verification
    skips it); every target gets it again, also those a failed leave had already turned off.

    Template fields: ``deployment_id``, ``message``.

    :param targets: region -> platform settings (``""`` for the service's only target).
    :param enabled: on (``True``) or off.
    :param message: the maintenance page's text (templated).
    :param retry_after: seconds clients are told to wait (``Retry-After``, where the platform sends headers).
    :param only_if_entered: act only when this incident turned maintenance mode on earlier.
    """

    template_fields: Sequence[str] = ("deployment_id", "message")
    ui_color = "#ffe082"

    def __init__(self, *, targets: dict[str, dict[str, Any]], enabled: bool, message: str = "",
                 retry_after: int = 300, only_if_entered: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not targets:
            raise ValueError(f"{self.task_id}: no target to put in maintenance mode")
        self.targets = targets
        self.enabled = enabled
        self.message = message
        self.retry_after = retry_after
        self.only_if_entered = only_if_entered

    def describe(self) -> str:
        if self.only_if_entered:
            return "maintenance mode back on when verification fails after leaving it"
        return "maintenance mode on: live requests get the maintenance page (HTTP 503)" if self.enabled else \
            "maintenance mode off: live requests reach the service again"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.registry import get_platform

        times = stage_times(self.ledger, self.deployment_id)
        if self.only_if_entered and "maintenance_on" not in times:
            raise AirflowSkipException("this incident did not use maintenance mode: nothing to put back")
        states = {}
        for region, settings in self.targets.items():
            platform = get_platform(settings, self.service, self.environment, region or None)
            state = platform.set_maintenance(self.enabled, self.message, self.retry_after)
            if state.enabled != self.enabled:  # read back: the router must say what was asked
                raise AirflowFailException(f"{platform.target.key}: maintenance mode reads back "
                                           f"{'on' if state.enabled else 'off'} after turning it "
                                           f"{'on' if self.enabled else 'off'} ({state.detail})")
            states[region] = state.to_dict()
            self.log.info("%s: maintenance mode %s (%s)", platform.target.key, "on" if state.enabled else "off",
                          state.detail)
        where = ", ".join(r for r in states if r) or self.service
        if self.only_if_entered and "maintenance_off" in times:
            stage, text = "maintenance_back_on", f"verification failed: maintenance mode back on ({where})"
        elif self.only_if_entered:  # nobody confirmed the fix, or leaving failed: the page stays
            stage, text = "maintenance_kept", f"maintenance mode stays on ({where}): the problem is not fixed"
        elif self.enabled:
            stage, text = "maintenance_on", f"maintenance mode on ({where}): customers see the maintenance page"
        else:
            stage, text = "maintenance_off", f"maintenance mode off ({where}): live traffic reaches the service"
        self.ledger.record_event(self.deployment_id, "maintenance", text, phase=self.task_group_id,
                                 task_id=self.task_id, data={"enabled": self.enabled, "targets": states})
        self.stage(stage, text)
        if stage in ("maintenance_on", "maintenance_back_on"):  # customers see the page (again): tell on-call
            self.announce(f"{text}. Confirm in the run once the problem is fixed.", context, key=f"incident:{stage}")
        return {"enabled": self.enabled, "targets": states}


class ConfirmFixedOperator(NotifyingMixin, DeploymentBaseOperator, HITLOperator):
    """
    Holds the run while a fail over or maintenance mode keeps customers away from the problem, until a person
    confirms in the Airflow UI (or through the REST API) that it is fixed; traffic comes back only then. Who
    confirmed, when and their comment go to the ledger. When ``timeout`` passes the task fails and the mitigation
    stays in place: clear the task to ask again.

    Template fields: ``deployment_id``, ``subject``, ``body``.

    :param option: the one answer (``Restore traffic``, ``Leave maintenance mode``).
    :param responders: Airflow users who may confirm; empty: any user.
    :param timeout: how long the request waits; ``None`` or 0: no limit.
    """

    template_fields: Sequence[str] = ("deployment_id", "subject", "body")
    waits_for_people = True
    expected_duration = timedelta(0)
    ui_color = "#ffe082"

    def __init__(self, *, option: str, responders: list[str] | None = None, timeout: timedelta | None = None,
                 notification: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Incident: is {kwargs.get('service')} fixed?")
        super().__init__(options=[option], multiple=False,
                         assigned_users=[{"id": u, "name": u} for u in responders or []] or None,
                         response_timeout=timeout or None,
                         params={"comment": Param("", type=["null", "string"], maxLength=2000, title="Comment")},
                         **kwargs)
        self.option = option
        self.notification = notification

    def describe(self) -> str:
        return f"a person confirms the problem is fixed: {self.option}"

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" in event:
            self.record("incident", f"nobody confirmed the fix in time: {self.option.lower()} did not happen",
                        data={"stage": "fix_not_confirmed"})
        result = super().execute_complete(context, event)
        user = event.get("responded_by_user") or {}
        who = user.get("id") if isinstance(user, dict) else str(user)
        comment = (event.get("params_input") or {}).get("comment")
        self.record("incident", f"fix confirmed by {who}: {self.option}" + (f" ({comment})" if comment else ""),
                    data={"stage": "fix_confirmed", "at": _now().isoformat(), "user": who, "option": self.option})
        return result
