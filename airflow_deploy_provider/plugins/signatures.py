"""Who may call the webhooks: secrets from an Airflow connection, GitHub's HMAC signature, GitLab's and
Alertmanager's tokens, and a bounded read of the request body.

The secrets live in one Airflow connection (default ``deploy_webhooks``, or ``[deploy] webhooks_conn_id``),
read on the api-server through Airflow's own connection lookup (secrets backend, environment variable or
metadata database), once per request so that a rotated secret takes effect at once. They are never logged
and never appear in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_deploy_provider.plugins.payloads import (
    MAX_BODY_BYTES,
    REPOSITORY_PATTERN,
    SERVICE_PATTERN,
    WebhookRejection,
)

if TYPE_CHECKING:
    from starlette.requests import Request

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "deploy_webhooks"
DEFAULT_ALERT_COOLDOWN = timedelta(minutes=60)


@dataclass(frozen=True)
class WebhookSettings:
    """What the webhook connection holds.

    :param github_secret: the connection's password: the GitHub webhook secret.
    :param gitlab_token: extra ``gitlab_token``: GitLab's secret token.
    :param alertmanager_token: extra ``alertmanager_token``: the bearer token Alertmanager sends.
    :param repositories: extra ``repositories``: repository (``owner/name``, lower case) -> service names,
        for repositories whose name is not their service's.
    :param alert_cooldown: extra ``alert_cooldown_minutes``: after an alert-triggered rollback of a DAG, later
        alerts for it trigger nothing for this long.
    """

    github_secret: str | None = field(default=None, repr=False)
    gitlab_token: str | None = field(default=None, repr=False)
    alertmanager_token: str | None = field(default=None, repr=False)
    repositories: dict[str, list[str]] = field(default_factory=dict)
    alert_cooldown: timedelta = DEFAULT_ALERT_COOLDOWN

    def services_for(self, repository: str) -> list[str]:
        """The services a repository deploys: the mapping's, else the one named like the repository."""
        mapped = self.repositories.get(repository.lower())
        if mapped is not None:
            return mapped
        name = repository.rsplit("/", 1)[-1].lower()
        return [name] if SERVICE_PATTERN.fullmatch(name) else []


def conn_id() -> str:
    from airflow.configuration import conf

    return conf.get("deploy", "webhooks_conn_id", fallback=DEFAULT_CONN_ID) or DEFAULT_CONN_ID


def _secret(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _repositories(value: Any, conn: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        log.warning("connection %s: extra 'repositories' is not an object; ignored", conn)
        return {}
    out: dict[str, list[str]] = {}
    for repository, services in value.items():
        names = [services] if isinstance(services, str) else services
        if (not isinstance(repository, str) or not REPOSITORY_PATTERN.fullmatch(repository)
                or not isinstance(names, list)
                or not all(isinstance(n, str) and SERVICE_PATTERN.fullmatch(n) for n in names)):
            log.warning("connection %s: repositories entry %r is not 'owner/name': service name(s); ignored",
                        conn, repository)
            continue
        out[repository.lower()] = list(names)
    return out


def load_settings() -> WebhookSettings:
    """The webhook connection's settings; a 503 when the connection does not exist (the webhooks are not set
    up: nothing can be verified, so nothing is accepted)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    conn = conn_id()
    try:
        connection = Connection.get_connection_from_secrets(conn)
    except AirflowNotFoundException:
        log.error("deploy webhooks: no connection %s (see docs/webhooks.md)", conn)
        raise WebhookRejection(503, "error", "webhooks are not configured") from None
    try:
        extra = connection.extra_dejson
    except Exception:  # an unreadable extra must not leak into the answer
        extra = {}
    if not isinstance(extra, dict):
        extra = {}
    cooldown = extra.get("alert_cooldown_minutes")
    if not isinstance(cooldown, (int, float)) or isinstance(cooldown, bool) or cooldown < 0:
        if cooldown is not None:
            log.warning("connection %s: alert_cooldown_minutes must be a number >= 0; using the default", conn)
        cooldown_td = DEFAULT_ALERT_COOLDOWN
    else:
        cooldown_td = timedelta(minutes=cooldown)
    return WebhookSettings(
        github_secret=_secret(connection.password), gitlab_token=_secret(extra.get("gitlab_token")),
        alertmanager_token=_secret(extra.get("alertmanager_token")),
        repositories=_repositories(extra.get("repositories"), conn), alert_cooldown=cooldown_td)


# ----------------------------------------------------------------------------------------------- verifying


def _not_configured(what: str) -> WebhookRejection:
    # The sender learns only that it cannot be verified; the log says what is missing where.
    log.error("deploy webhooks: no %s in connection %s (see docs/webhooks.md)", what, conn_id())
    return WebhookRejection(503, "error", "this webhook is not configured")


def verify_github_signature(body: bytes, header: str | None, secret: str | None) -> None:
    """GitHub's ``X-Hub-Signature-256: sha256=<hex>``: HMAC-SHA256 of the raw body with the webhook secret,
    compared in constant time."""
    if secret is None:
        raise _not_configured("GitHub secret (password)")
    if not header:
        raise WebhookRejection(401, "rejected", "the X-Hub-Signature-256 header is missing")
    scheme, _, signature = header.partition("=")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # compare_digest of the whole value: its time does not depend on where a forged signature differs.
    if scheme != "sha256" or not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        raise WebhookRejection(401, "rejected", "the signature does not match")


def verify_token(presented: str | None, expected: str | None, what: str, header: str) -> None:
    """A shared token (GitLab's ``X-Gitlab-Token``, Alertmanager's bearer token), compared in constant time."""
    if expected is None:
        raise _not_configured(what)
    if not presented:
        raise WebhookRejection(401, "rejected", f"the {header} is missing")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise WebhookRejection(401, "rejected", f"the {header} does not match")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, at most ``limit`` bytes: a 413 as soon as the announced length or what arrived is larger
    (a chunked body has no Content-Length), before anything is parsed."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise WebhookRejection(400, "rejected", "the Content-Length header is not valid")
        if int(length) > limit:
            raise WebhookRejection(413, "rejected", f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise WebhookRejection(413, "rejected", f"the body is larger than {limit} bytes")
    return bytes(body)
