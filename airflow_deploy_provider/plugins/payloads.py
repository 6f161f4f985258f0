"""What the webhooks send, parsed and validated before any of it reaches a DAG run's conf.

Git hosts and Alertmanager are trusted only as far as their signature or token goes: every value that ends up
in a run's conf, a run id, an image tag or a log line is checked against a strict pattern, cut to a bounded
length or stripped of control characters here.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from airflow_deploy_provider.operators.lifecycle import BRANCH_PATTERN

#: Largest request body read (GitHub push payloads are capped at 25 MB, but a push of a few commits is a few
#: KiB; anything bigger is refused before it is parsed).
MAX_BODY_BYTES = 1024 * 1024

SHA_PATTERN = re.compile(r"^[0-9a-f]{40}$")
# owner/name, with GitLab's nested groups; the characters GitHub and GitLab allow in path segments.
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}(/[A-Za-z0-9_.-]{1,100}){1,20}$")
DELIVERY_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
SERVICE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,48}[a-z0-9]$")  # as ``ServiceName`` in the config models
ENVIRONMENT_PATTERN = re.compile(r"^(development|staging|production)$")
REGION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}[a-z0-9]$")
LABEL_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")  # Prometheus label names
ZERO_SHA = "0" * 40
AUTHOR_MAX = 250  # the development DAG's ``author`` param
MESSAGE_MAX = 2000  # its ``message`` and the rollback's ``reason`` params
LABELS_MAX = 30
LABEL_VALUE_MAX = 200


class WebhookRejection(Exception):
    """A request that creates nothing; the route answers ``status_code`` with ``{"status": ..., "reason": ...}``.

    :param status_code: HTTP status of the answer.
    :param status: ``rejected`` (4xx: the request is wrong), ``ignored`` (202: nothing to do for it),
        ``resolved`` (202: an Alertmanager notification of resolved alerts) or ``error`` (5xx: our side).
    :param reason: why, safe to show the sender and to log (no secret, no payload).
    """

    def __init__(self, status_code: int, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.status = status
        self.reason = reason


def malformed(reason: str) -> WebhookRejection:
    return WebhookRejection(400, "rejected", f"malformed payload: {reason}")


def ignored(reason: str) -> WebhookRejection:
    return WebhookRejection(202, "ignored", reason)


# ------------------------------------------------------------------------------------------------ helpers


def parse_json(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """The body as a JSON object. GitHub's ``application/x-www-form-urlencoded`` deliveries carry the JSON in
    the ``payload`` form field (the signature covers the raw body either way)."""
    try:
        text = body.decode("utf-8")
        if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = parse_qs(text, max_num_fields=10, strict_parsing=True)
            if len(fields.get("payload", [])) != 1:
                raise malformed("a form-encoded delivery needs exactly one 'payload' field")
            text = fields["payload"][0]
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise malformed("not valid JSON") from None
    if not isinstance(data, dict):
        raise malformed("expected a JSON object")
    return data


def get(data: Any, path: str, kind: type | tuple[type, ...] = str, *, required: bool = True) -> Any:
    """``data["a"]["b"]`` for ``path`` ``"a.b"``, checked to be of ``kind``; ``None`` when absent and not
    ``required``."""
    value = data
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        if required:
            raise malformed(f"'{path}' is missing")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise malformed(f"'{path}' has the wrong type")
    return value


def clean_text(value: Any, limit: int, *, multiline: bool = False) -> str | None:
    """Free text (author, commit message, alert summary) without control characters, at most ``limit``
    characters; ``None`` when empty."""
    if not isinstance(value, str):
        return None
    keep = "\n\t" if multiline else ""
    text = "".join(ch if ch in keep or unicodedata.category(ch)[0] != "C" else " " for ch in value)
    text = text.strip() if multiline else " ".join(text.split())
    return text[:limit] or None


def checked(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise malformed(f"{what} is not valid")
    return value


def parse_time(value: Any, what: str) -> datetime:
    """An RFC 3339 time as an aware UTC datetime (Alertmanager sends nanoseconds; they are cut to micro)."""
    if not isinstance(value, str) or len(value) > 40:
        raise malformed(f"{what} is not a time")
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise malformed(f"{what} is not a time") from None
    if moment.tzinfo is None:
        raise malformed(f"{what} has no time zone")
    return moment.astimezone(timezone.utc)


def run_id_part(value: str, limit: int = 100) -> str:
    """``value`` reduced to the characters Airflow allows in run ids (``[core] allowed_run_id_pattern``
    default ``^[A-Za-z0-9_.~:+-]+$``), without ``..``."""
    text = re.sub(r"[^A-Za-z0-9_:+-]+", "-", value).strip("-")
    return text[:limit] or "none"


# ---------------------------------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushEvent:
    """A push to a branch, from GitHub or GitLab, every field validated."""

    source: str
    """``github`` or ``gitlab``."""
    delivery_id: str
    repository: str
    branch: str
    commit: str
    author: str | None
    message: str | None
    commit_timestamp: str | None
    """ISO 8601, UTC."""
    pusher: str | None

    @property
    def short_sha(self) -> str:
        return self.commit[:7]  # as the start task's ``{short_sha}`` (image tag ``dev-<short sha>``)

    @property
    def run_id(self) -> str:
        """One delivery, one run: a re-delivery of the same webhook gets the same id."""
        return f"{self.source}__{run_id_part(self.delivery_id)}"

    def conf(self) -> dict[str, Any]:
        """The run's conf: the development DAG's params (``commit``, ``branch``, ``author``, ``message``,
        ``reason``) plus what the push tells beyond them."""
        return {
            "commit": self.commit, "short_sha": self.short_sha, "branch": self.branch, "author": self.author,
            "message": self.message, "committed_at": self.commit_timestamp,
            "reason": f"push to {self.branch} in {self.repository}" + (f" by {self.pusher}" if self.pusher else ""),
            "repository": self.repository, "source": self.source, "delivery_id": self.delivery_id,
        }


def _branch(ref: Any) -> str:
    if not isinstance(ref, str) or len(ref) > 300:
        raise malformed("'ref' is not valid")
    if not ref.startswith("refs/heads/"):
        raise ignored("not a branch push (tags and other refs are not deployed)")
    branch = ref.removeprefix("refs/heads/")
    if not re.fullmatch(BRANCH_PATTERN, branch):
        raise ignored("the branch name is not one a deployment accepts")
    return branch


def _timestamp(value: Any) -> str | None:
    return None if value is None else parse_time(value, "the commit timestamp").isoformat()


def delivery(value: str | None, header: str) -> str:
    if not value:
        raise WebhookRejection(400, "rejected", f"the {header} header is missing")
    if not DELIVERY_PATTERN.fullmatch(value):
        raise WebhookRejection(400, "rejected", f"the {header} header is not valid")
    return value


def github_push(data: dict[str, Any], delivery_id: str) -> PushEvent:
    """A GitHub ``push`` event."""
    repository = checked(get(data, "repository.full_name"), REPOSITORY_PATTERN, "'repository.full_name'")
    branch = _branch(data.get("ref"))
    if data.get("deleted") is True:
        raise ignored("the branch was deleted")
    commit = checked(get(data, "after"), SHA_PATTERN, "'after'")
    if commit == ZERO_SHA:
        raise ignored("the branch was deleted")
    head = get(data, "head_commit", dict, required=False) or {}
    if head and head.get("id") != commit:
        raise malformed("'head_commit.id' is not 'after'")
    author = get(head, "author.name", required=False) or get(head, "author.username", required=False)
    pusher = get(data, "pusher.name", required=False)
    return PushEvent(
        source="github", delivery_id=delivery_id, repository=repository, branch=branch, commit=commit,
        author=clean_text(author, AUTHOR_MAX), message=clean_text(head.get("message"), MESSAGE_MAX, multiline=True),
        commit_timestamp=_timestamp(head.get("timestamp")), pusher=clean_text(pusher, 100))


def gitlab_push(data: dict[str, Any], delivery_id: str) -> PushEvent:
    """A GitLab ``Push Hook`` (or a system hook's push event)."""
    if data.get("object_kind") != "push":
        raise ignored("not a push event")
    repository = checked(get(data, "project.path_with_namespace"), REPOSITORY_PATTERN,
                         "'project.path_with_namespace'")
    branch = _branch(data.get("ref"))
    commit = checked(get(data, "after"), SHA_PATTERN, "'after'")
    if commit == ZERO_SHA:
        raise ignored("the branch was deleted")
    commits = get(data, "commits", list, required=False) or []
    head = next((c for c in commits if isinstance(c, dict) and c.get("id") == commit), {})
    author = get(head, "author.name", required=False) or get(data, "user_name", required=False)
    return PushEvent(
        source="gitlab", delivery_id=delivery_id, repository=repository, branch=branch, commit=commit,
        author=clean_text(author, AUTHOR_MAX), message=clean_text(head.get("message"), MESSAGE_MAX, multiline=True),
        commit_timestamp=_timestamp(head.get("timestamp")),
        pusher=clean_text(get(data, "user_username", required=False), 100))


# ------------------------------------------------------------------------------------------- alertmanager


@dataclass(frozen=True)
class Alert:
    """One firing alert of an Alertmanager notification, validated."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    fingerprint: str | None = None

    @property
    def summary(self) -> str | None:
        return self.annotations.get("summary") or self.annotations.get("description")

    def describe(self) -> dict[str, Any]:
        """The alert as recorded in the rollback run's conf."""
        return {"name": self.name, "labels": dict(self.labels), "summary": self.summary,
                "startsAt": self.starts_at.isoformat(), "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class AlertNotification:
    """An Alertmanager webhook notification (payload version 4)."""

    group_key: str
    status: str
    alerts: list[Alert] = field(default_factory=list)
    """The firing alerts (resolved ones of a firing group are left out)."""


def _labels(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(f"'{what}' is not an object")
    out: dict[str, str] = {}
    for key, text in value.items():
        if len(out) >= LABELS_MAX:
            break
        if isinstance(key, str) and LABEL_NAME_PATTERN.fullmatch(key) and isinstance(text, str):
            cleaned = clean_text(text, LABEL_VALUE_MAX if what.endswith("labels") else MESSAGE_MAX)
            if cleaned is not None:
                out[key] = cleaned
    return out


def alertmanager_notification(data: dict[str, Any]) -> AlertNotification:
    version = data.get("version")
    if version != "4":
        raise ignored("unsupported Alertmanager payload version (4 is)")
    group_key = get(data, "groupKey")
    if not group_key or len(group_key) > 5000:
        raise malformed("'groupKey' is not valid")
    status = get(data, "status")
    if status not in ("firing", "resolved"):
        raise malformed("'status' is neither firing nor resolved")
    alerts = []
    for i, item in enumerate(get(data, "alerts", list)):
        if not isinstance(item, dict):
            raise malformed(f"'alerts[{i}]' is not an object")
        if item.get("status") != "firing":
            continue
        labels = _labels(item.get("labels"), f"alerts[{i}].labels")
        annotations = _labels(item.get("annotations"), f"alerts[{i}].annotations")
        fingerprint = item.get("fingerprint")
        alerts.append(Alert(
            name=labels.get("alertname") or "unnamed", labels=labels, annotations=annotations,
            starts_at=parse_time(item.get("startsAt"), f"'alerts[{i}].startsAt'"),
            fingerprint=fingerprint if isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{1,32}",
                                                                                   fingerprint) else None))
    return AlertNotification(group_key=group_key, status=status, alerts=alerts)
