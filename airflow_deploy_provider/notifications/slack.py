"""Deployment notifications through the slack provider's incoming-webhook notifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

EVENT_TITLES = {
    "start": ":rocket: Deployment started",
    "success": ":white_check_mark: Deployment succeeded",
    "failure": ":x: Deployment failed",
    "rollback": ":rewind: Deployment rolled back",
    "approval": ":raising_hand: Approval",
    "checklist": ":clipboard: Pre-deployment checklist",
    "incident": ":rotating_light: Incident",
    "info": ":information_source: Deployment update",
}


@dataclass
class DeploymentMessage:
    """What a deployment notification says. ``table`` renders as a monospaced block (per-region results)."""

    event: str
    service: str
    environment: str
    version: str | None = None
    region: str | None = None
    previous_version: str | None = None
    who: str | None = None
    duration_seconds: float | None = None
    run_url: str | None = None
    reason: str | None = None
    kind: str = "deploy"
    details: list[tuple[str, str]] = field(default_factory=list)
    table: list[list[str]] | None = None

    @property
    def target(self) -> str:
        return f"{self.environment}/{self.region}" if self.region else self.environment

    def text(self) -> str:
        """One line, used as the notification's fallback text."""
        if self.event == "incident":
            return f"{self.service} in {self.target}: {self.reason or 'incident'}"
        verb = {"start": "started", "success": "succeeded", "failure": "FAILED", "rollback": "rolled back",
                "approval": "approval", "checklist": "checklist", "info": "update"}.get(self.event, self.event)
        what = "hotfix" if self.kind == "hotfix" else ("rollback" if self.kind == "rollback" else "deployment")
        line = f"{self.service} {self.version or '?'} {what} to {self.target} {verb}"
        if self.who:
            line += f" (by {self.who})"
        if self.duration_seconds is not None and self.event != "start":
            line += f" after {format_seconds(self.duration_seconds)}"
        if self.reason and self.event in ("failure", "rollback", "approval", "start", "checklist"):
            line += f": {self.reason}"
        return line

    def blocks(self) -> list[dict[str, Any]]:
        title = EVENT_TITLES.get(self.event, self.event)
        facts = [("Service", self.service), ("Environment", self.target), ("Version", self.version or "?")]
        if self.previous_version:
            facts.append(("Previous version", self.previous_version))
        if self.who:
            facts.append(("Who", self.who))
        if self.duration_seconds is not None and self.event != "start":
            facts.append(("Duration", format_seconds(self.duration_seconds)))
        facts.extend(self.details)
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": f"{title}: {self.service}"[:150]}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in facts[:10]]},
        ]
        if self.reason:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n{self.reason}"[:3000]}})
        if self.table:
            blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                       "text": "```\n" + render_table(self.table) + "\n```"}})
        if self.run_url:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{self.run_url}|Open the run>"}]})
        return blocks


class DeploymentNotifier(SlackWebhookNotifier):
    """
    Sends a deployment notification (start, success, failure, rollback, approval) to a Slack incoming webhook.

    Built on the slack provider's :class:`SlackWebhookNotifier`; the message is rendered from a
    :class:`DeploymentMessage`. Usable from operators and as a DAG or task callback.

    :param slack_webhook_conn_id: Slack incoming-webhook connection.
    :param message: the message; when omitted it is built from the callback context and ``event``.
    :param event: event name used when building the message from context.
    """

    def __init__(self, *, slack_webhook_conn_id: str, message: DeploymentMessage | None = None,
                 event: str = "info", **kwargs: Any) -> None:
        super().__init__(slack_webhook_conn_id=slack_webhook_conn_id, text="", **kwargs)
        self.message = message
        self.event = event

    def notify(self, context: Any) -> None:
        message = self.message or message_from_context(context, self.event)
        self.text = message.text()
        self.blocks = message.blocks()
        super().notify(context)


def message_from_context(context: Any, event: str) -> DeploymentMessage:
    """Best-effort message for a callback: the DAG's tags and params say which service and environment."""
    dag_run = context.get("dag_run")
    params = context.get("params") or {}
    dag = context.get("dag")
    tags = set(getattr(dag, "tags", []) or [])
    service = next((t.split(":", 1)[1] for t in tags if t.startswith("service:")), getattr(dag, "dag_id", "?"))
    environment = next((t.split(":", 1)[1] for t in tags if t.startswith("environment:")), "?")
    return DeploymentMessage(event=event, service=service, environment=environment,
                             version=params.get("version"), who=triggering_user(context),
                             run_url=run_url(getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None)))


def triggering_user(context: Any) -> str | None:
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    conf = getattr(dag_run, "conf", None) or {}
    return conf.get("triggered_by") or conf.get("author")


def run_url(dag_id: str | None, run_id: str | None) -> str | None:
    """Link to a DAG run in the Airflow UI (``[api] base_url``)."""
    if not dag_id or not run_id:
        return None
    from airflow.sdk import conf

    base = (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def render_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    return "\n".join("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)
