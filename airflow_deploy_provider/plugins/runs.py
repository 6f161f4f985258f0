"""Creating DAG runs from the api-server, through the public REST API's own "trigger DAG run" code.

The plugin runs inside the api-server, so it calls the function behind ``POST /api/v2/dags/{dag_id}/dagRuns``
in-process: the same checks (the DAG exists and is not stale, has no import errors, allows manual runs), the
same validation of the conf against the DAG's params, and the same run type (``manual``) and ``triggered_by``
(``rest_api``) as a run triggered over the API. The webhook's authentication replaces the route's user
check; the run names a fixed user (``webhook:github``, ...) as its triggering user, and an audit log entry
(``trigger_dag_run``) records it like the route's own action log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: Run states in which a run is still to finish.
ACTIVE_STATES = ("queued", "running")


@dataclass
class RunRequest:
    """A DAG run a webhook asks for.

    :param dag_id: the DAG.
    :param run_id: the run id; a second request with the same id creates nothing.
    :param conf: the run's conf (validated against the DAG's params).
    :param user: the run's triggering user name.
    :param note: the run's note, shown in the UI.
    :param audit: what the audit log entry records beside the run (no secrets, no payloads).
    """

    dag_id: str
    run_id: str
    conf: dict[str, Any]
    user: str
    note: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """What happened to a :class:`RunRequest`: ``created``, ``duplicate`` (not created: the run exists or a
    guard refused it), ``missing`` (no such DAG in Airflow) or ``rejected`` (Airflow refused it)."""

    dag_id: str
    run_id: str
    status: str
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dag_id": self.dag_id, "run_id": self.run_id, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        return out


def _user(name: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    class WebhookUser(BaseUser):
        """The identity of a webhook as Airflow's trigger code sees it (name and id: ``webhook:<source>``)."""

        def get_id(self) -> str:
            return name

        def get_name(self) -> str:
            return name

    return WebhookUser()


def _request() -> Any:
    """A request without headers: the trigger code takes a ``Referer`` for a click in the UI."""
    from starlette.requests import Request

    return Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""})


_dag_bag: Any = None


def _get_dag_bag() -> Any:
    """The api-server's kind of DAG bag (serialized DAGs from the metadata database, cached)."""
    global _dag_bag
    if _dag_bag is None:
        from airflow.api_fastapi.common.dagbag import create_dag_bag

        _dag_bag = create_dag_bag()
    return _dag_bag


Guard = Callable[["Session"], "str | None"]


def create_run(request: RunRequest, guard: Guard | None = None) -> RunOutcome:
    """Create the run unless it exists (or ``guard``, given the session, returns a reason not to)."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from fastapi import HTTPException
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    def outcome(status: str, reason: str | None = None) -> RunOutcome:
        return RunOutcome(request.dag_id, request.run_id, status, reason)

    with create_session(scoped=False) as session:
        if session.scalar(select(DagRun.id).where(DagRun.dag_id == request.dag_id,
                                                  DagRun.run_id == request.run_id)) is not None:
            return outcome("duplicate", "already delivered: the run exists")
        if guard is not None and (reason := guard(session)):
            return outcome("duplicate", reason)
        body = TriggerDAGRunPostBody(dag_run_id=request.run_id, logical_date=None, conf=request.conf,
                                     note=request.note)
        try:
            trigger_dag_run(dag_id=request.dag_id, body=body, dag_bag=_get_dag_bag(), user=_user(request.user),
                            session=session, request=_request())
            session.add(Log(event="trigger_dag_run", owner=request.user, owner_display_name=request.user,
                            dag_id=request.dag_id, run_id=request.run_id,
                            extra=json.dumps({**request.audit, "dag_run_id": request.run_id})))
            session.commit()
        except HTTPException as exc:
            session.rollback()
            if exc.status_code == 404:
                return outcome("missing", f"no DAG {request.dag_id} in Airflow")
            return outcome("rejected", str(exc.detail))
        except IntegrityError:  # the same delivery, handled at the same time by another worker
            session.rollback()
            return outcome("duplicate", "already delivered: the run exists")
    return outcome("created")


def active_or_recent_run(dag_id: str, run_id_prefix: str, cooldown: timedelta) -> Guard:
    """A guard: a run of ``dag_id`` that is queued or running, or one whose id starts with ``run_id_prefix``
    created less than ``cooldown`` ago (one alert-triggered rollback per incident, even when several alert
    groups report it)."""

    def guard(session: Session) -> str | None:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import or_, select

        since = datetime.now(timezone.utc) - cooldown
        run = session.execute(select(DagRun.run_id, DagRun.state).where(
            DagRun.dag_id == dag_id,
            or_(DagRun.state.in_(ACTIVE_STATES),
                DagRun.run_id.startswith(run_id_prefix, autoescape=True) & (DagRun.run_after >= since)),
        ).order_by(DagRun.run_after.desc()).limit(1)).first()
        if run is None:
            return None
        if str(run.state) in ACTIVE_STATES:
            return f"rollback run {run.run_id} is {run.state}"
        return (f"rollback run {run.run_id} was triggered by an alert less than "
                f"{cooldown.total_seconds() / 60:g} minutes ago")

    return guard
