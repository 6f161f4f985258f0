"""The webhook routes: GitHub and GitLab pushes deploy, Alertmanager alerts roll back.

Every request goes through the same steps, and any of them can end it without creating anything:

1. the body is read, at most 1 MiB (413 beyond);
2. the sender is authenticated (401): GitHub's HMAC signature of the raw body, GitLab's token, Alertmanager's
   bearer token, all from the webhook connection (503 while it does not exist);
3. the body is parsed and validated (400 for malformed JSON or fields);
4. the event is matched to DAGs (202 ``ignored`` when there is none: another event, branch or repository);
5. the runs are created (201 ``triggered``), unless they exist (200 ``duplicate``: a re-delivery).

Each outcome is logged with its reason, the delivery id and, once authenticated, what it was about; never a
secret nor the payload.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_deploy_provider.plugins import payloads, runs, services, signatures
from airflow_deploy_provider.plugins.payloads import Alert, PushEvent, WebhookRejection, ignored

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

GITLAB_PUSH_EVENTS = ("Push Hook", "System Hook")


def answer(status_code: int, status: str, **fields: Any) -> JSONResponse:
    return JSONResponse({"status": status, **fields}, status_code=status_code)


def rejection_answer(source: str, delivery_id: str | None, exc: WebhookRejection) -> JSONResponse:
    level = logging.INFO if exc.status_code == 202 else logging.WARNING
    # The delivery header is not validated yet when the signature is wrong: only a plausible one is logged.
    shown = delivery_id if delivery_id and payloads.DELIVERY_PATTERN.fullmatch(delivery_id) else "-"
    log.log(level, "deploy webhook %s delivery %s: %s %d: %s", source, shown, exc.status, exc.status_code,
            exc.reason)
    return answer(exc.status_code, exc.status, reason=exc.reason)


async def handle(source: str, delivery_id: str | None, request: Request,
                 authenticate: Callable[[bytes, signatures.WebhookSettings], None],
                 process: Callable[[bytes, signatures.WebhookSettings], JSONResponse]) -> JSONResponse:
    """The steps every webhook shares; ``process`` (parsing, matching, creating runs) runs in a worker thread:
    it reads files and the metadata database."""
    try:
        body = await signatures.read_body(request)
        settings = await run_in_threadpool(signatures.load_settings)
        authenticate(body, settings)
        return await run_in_threadpool(process, body, settings)
    except WebhookRejection as exc:
        return rejection_answer(source, delivery_id, exc)


def summarize(source: str, delivery_id: str, subject: str, outcomes: list[runs.RunOutcome],
              skipped: list[str]) -> JSONResponse:
    """The answer once DAGs were found: 201 when a run was created, 200 when all existed, else the first
    reason nothing was created."""
    created = [o for o in outcomes if o.status == "created"]
    duplicates = [o for o in outcomes if o.status == "duplicate"]
    failed = [o for o in outcomes if o.status in ("missing", "rejected")]
    for o in outcomes:
        level = logging.WARNING if o in failed else logging.INFO
        log.log(level, "deploy webhook %s delivery %s (%s): %s %s %s%s", source, delivery_id, subject, o.dag_id,
                o.run_id, o.status, f": {o.reason}" if o.reason else "")
    details: dict[str, Any] = {"runs": [o.as_dict() for o in outcomes]}
    if skipped:
        details["ignored"] = skipped
    if created:
        return answer(201, "triggered", **details)
    if duplicates:
        return answer(200, "duplicate", **details)
    if any(o.status == "rejected" for o in failed):
        # The DAG refused what the webhook sends (its params): a configuration problem to show the sender.
        return answer(422, "rejected", reason="; ".join(f"{o.dag_id}: {o.reason}" for o in failed), **details)
    reasons = "; ".join(o.reason or o.status for o in failed) or "; ".join(skipped) or "nothing to do"
    log.info("deploy webhook %s delivery %s (%s): ignored: %s", source, delivery_id, subject, reasons)
    return answer(202, "ignored", reason=reasons, **details)


# ---------------------------------------------------------------------------------------------------- push


def deploy_push(event: PushEvent, settings: signatures.WebhookSettings,
                lookup: services.ServiceLookup | None = None) -> JSONResponse:
    """Start the deployment DAGs of the services the repository deploys, for the environments that
    auto-deploy the pushed branch."""
    lookup = lookup or services.ServiceLookup()
    subject = f"{event.repository} {event.branch} {event.short_sha}"
    names = settings.services_for(event.repository)
    if not names:
        raise ignored(f"repository {event.repository} is not mapped to a service")
    outcomes: list[runs.RunOutcome] = []
    skipped: list[str] = []
    for name in names:
        config = lookup(name)
        if config is None:
            skipped.append(f"unknown service {name} (repository {event.repository})")
            continue
        dag_ids = services.push_dag_ids(config, event.branch)
        if not dag_ids:
            skipped.append(f"branch {event.branch} does not auto-deploy any environment of {name}")
            continue
        for dag_id in dag_ids:
            outcomes.append(runs.create_run(runs.RunRequest(
                dag_id=dag_id, run_id=event.run_id, conf=event.conf(), user=f"webhook:{event.source}",
                note=f"{event.source} push of {event.short_sha} to {event.branch} ({event.repository})",
                audit={"source": event.source, "delivery_id": event.delivery_id, "repository": event.repository,
                       "branch": event.branch, "commit": event.commit})))
    if not outcomes:
        raise ignored("; ".join(skipped))
    return summarize(event.source, event.delivery_id, subject, outcomes, skipped)


@router.post("/github", summary="GitHub push webhook")
async def github(request: Request) -> JSONResponse:
    """A GitHub webhook (content type ``application/json`` or form-encoded): ``push`` deploys, ``ping``
    answers ``pong``, other events are ignored."""
    event = request.headers.get("x-github-event")
    delivery_id = request.headers.get("x-github-delivery")

    def authenticate(body: bytes, settings: signatures.WebhookSettings) -> None:
        signatures.verify_github_signature(body, request.headers.get("x-hub-signature-256"), settings.github_secret)

    def process(body: bytes, settings: signatures.WebhookSettings) -> JSONResponse:
        checked_id = payloads.delivery(delivery_id, "X-GitHub-Delivery")
        data = payloads.parse_json(body, request.headers.get("content-type", "application/json"))
        if event == "ping":
            log.info("deploy webhook github delivery %s: ping", checked_id)
            return answer(200, "pong")
        if not event:
            raise WebhookRejection(400, "rejected", "the X-GitHub-Event header is missing")
        if event != "push":
            raise ignored("only push events are handled")
        return deploy_push(payloads.github_push(data, checked_id), settings)

    return await handle("github", delivery_id, request, authenticate, process)


@router.post("/gitlab", summary="GitLab push webhook")
async def gitlab(request: Request) -> JSONResponse:
    """A GitLab webhook: push events deploy, other events are ignored. The delivery id is the
    ``Idempotency-Key`` header (the same on every retry), else ``X-Gitlab-Event-UUID``."""
    event = request.headers.get("x-gitlab-event")
    delivery_id = request.headers.get("idempotency-key") or request.headers.get("x-gitlab-event-uuid")

    def authenticate(body: bytes, settings: signatures.WebhookSettings) -> None:
        signatures.verify_token(request.headers.get("x-gitlab-token"), settings.gitlab_token,
                                "GitLab token (extra 'gitlab_token')", "X-Gitlab-Token header")

    def process(body: bytes, settings: signatures.WebhookSettings) -> JSONResponse:
        checked_id = payloads.delivery(delivery_id, "Idempotency-Key or X-Gitlab-Event-UUID")
        data = payloads.parse_json(body)
        if event not in GITLAB_PUSH_EVENTS:
            raise ignored("only push events are handled")
        return deploy_push(payloads.gitlab_push(data, checked_id), settings)

    return await handle("gitlab", delivery_id, request, authenticate, process)


# ------------------------------------------------------------------------------------------- alertmanager


def rollback_request(dag_id: str, rule: str, alerts: list[Alert], group_key: str) -> runs.RunRequest:
    """One rollback run for the alerts of a notification that point at the same DAG. Its id is made of the
    group key and the earliest start: every later notification of the same incident has the same id."""
    first = min(alerts, key=lambda a: a.starts_at)
    digest = hashlib.sha256(f"{group_key}\0{first.starts_at.isoformat()}".encode()).hexdigest()[:16]
    run_id = f"alertmanager__{first.starts_at:%Y%m%dT%H%M%SZ}__{digest}"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(first.labels.items()) if k != "alertname")
    others = f" (and {len(alerts) - 1} more alert(s) of the group)" if len(alerts) > 1 else ""
    reason = (f"alert {first.name} firing since {first.starts_at.isoformat()} ({rule})"
              + (f": {first.summary}" if first.summary else "") + others + f"; labels: {labels}")
    return runs.RunRequest(
        dag_id=dag_id, run_id=run_id, user="webhook:alertmanager", note=reason[:1000],
        conf={"trigger": "alert", "reason": reason[:payloads.MESSAGE_MAX], "alert": first.describe(),
              "alerts": len(alerts)},
        audit={"source": "alertmanager", "alert": first.name, "rule": rule, "starts_at": first.starts_at.isoformat()})


def incident_requests(notification: payloads.AlertNotification,
                      targets: dict[str, tuple[str, list[Alert]]]) -> list[runs.RunRequest]:
    """A critical alert on production also opens the service's incident (``incident_<service>``: page,
    diagnosis, a person's choice of mitigation, the report), once per incident like the rollback."""
    requests: dict[str, runs.RunRequest] = {}
    for _rollback, alerts in targets.values():
        critical = [a for a in alerts if a.labels.get("severity") == "critical"
                    and a.labels.get("environment") == "production"]
        if not critical:
            continue
        first = min(critical, key=lambda a: a.starts_at)
        dag_id = f"incident_{first.labels['service']}"
        digest = hashlib.sha256(f"{notification.group_key}\0{first.starts_at.isoformat()}".encode()).hexdigest()[:16]
        summary = (first.summary or f"alert {first.name} firing")[:480]
        requests.setdefault(dag_id, runs.RunRequest(
            dag_id=dag_id, run_id=f"alertmanager__{first.starts_at:%Y%m%dT%H%M%SZ}__{digest}",
            user="webhook:alertmanager", note=f"alert {first.name}: {summary}"[:1000],
            conf={"summary": summary if len(summary) >= 5 else f"alert {first.name}", "severity": "critical",
                  "started_at": first.starts_at.isoformat(), "trigger": "alert"},
            audit={"source": "alertmanager", "alert": first.name, "starts_at": first.starts_at.isoformat()}))
    return list(requests.values())


def rollback_alerts(notification: payloads.AlertNotification, settings: signatures.WebhookSettings,
                    delivery_id: str, lookup: Callable[[str], Any] | None = None) -> JSONResponse:
    if notification.status == "resolved" or not notification.alerts:
        raise WebhookRejection(202, "resolved", "resolved alerts trigger nothing")
    lookup = lookup or services.ServiceLookup()
    targets: dict[str, tuple[str, list[Alert]]] = {}
    skipped: list[str] = []
    for alert in notification.alerts:
        try:
            dag_id, rule = services.rollback_dag_id(alert, lookup)
        except WebhookRejection as exc:
            skipped.append(exc.reason)
            continue
        targets.setdefault(dag_id, (rule, []))[1].append(alert)
    if not targets:
        raise ignored("; ".join(skipped))
    outcomes = []
    for dag_id, (rule, alerts) in targets.items():
        request = rollback_request(dag_id, rule, alerts, notification.group_key)
        guard = runs.active_or_recent_run(dag_id, "alertmanager__", settings.alert_cooldown)
        outcomes.append(runs.create_run(request, guard=guard))
    for request in incident_requests(notification, targets):
        outcomes.append(runs.create_run(request))
    return summarize("alertmanager", delivery_id, f"{len(notification.alerts)} firing alert(s)", outcomes, skipped)


@router.post("/alertmanager", summary="Alertmanager webhook")
async def alertmanager(request: Request) -> JSONResponse:
    """An Alertmanager notification (webhook payload version 4, ``Authorization: Bearer <token>``): firing
    alerts that meet a service's rollback rules start its rollback DAG once per incident; resolved ones
    trigger nothing."""
    def authenticate(body: bytes, settings: signatures.WebhookSettings) -> None:
        signatures.verify_token(signatures.bearer_token(request.headers.get("authorization")),
                                settings.alertmanager_token, "Alertmanager token (extra 'alertmanager_token')",
                                "bearer token")

    def process(body: bytes, settings: signatures.WebhookSettings) -> JSONResponse:
        data = payloads.parse_json(body)
        notification = payloads.alertmanager_notification(data)
        # Alertmanager sends no delivery id: the group key's hash names the notification in the logs.
        delivery_id = hashlib.sha256(notification.group_key.encode()).hexdigest()[:12]
        try:
            return rollback_alerts(notification, settings, delivery_id)
        except WebhookRejection as exc:
            return rejection_answer("alertmanager", delivery_id, exc)

    return await handle("alertmanager", None, request, authenticate, process)
