"""The deployment ledger: every deployment, its events and migration runs, and the questions asked of them.

Writes are idempotent so that a retried task converges: starting a deployment twice returns the first
record, and an outcome only moves forward (``running`` -> an outcome; ``failed`` -> ``rolled_back``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, exists, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from airflow_deploy_provider.ledger import schema
from airflow_deploy_provider.ledger.schema import deployments, events, migration_runs

OUTCOMES = ("succeeded", "rolled_back", "failed", "resolved", "unresolved")
#: Event kind on a deployment that completed and was later replaced by a rollback (its status: rolled_back).
REPLACED = "replaced"
# Which status may replace which: an outcome is final except that a failed run may still be rolled back.
# An incident (kind ``incident``) ends resolved or unresolved: never "succeeded", so no question about
# deployments (last stable version, versions passed, DORA) mistakes it for one.
_TRANSITIONS = {
    "running": {"succeeded", "rolled_back", "failed", "resolved", "unresolved"},
    "resolved": set(),
    "unresolved": {"resolved"},
    "failed": {"rolled_back"},
    "succeeded": {"rolled_back"},
    "rolled_back": set(),
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Deployment:
    """One row of the ledger."""

    id: str
    service: str
    environment: str
    region: str
    kind: str
    version: str
    image: str | None
    previous_version: str | None
    commit_sha: str | None
    commit_time: datetime | None
    branch: str | None
    author: str | None
    trigger: str | None
    triggered_by: str | None
    reason: str | None
    dag_id: str | None
    run_id: str | None
    parent_id: str | None
    config_fingerprint: str | None
    status: str
    outcome_reason: str | None
    started_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> Deployment:
        data = dict(row._mapping)
        for key in ("started_at", "finished_at", "commit_time"):
            if data.get(key) is not None and data[key].tzinfo is None:
                data[key] = data[key].replace(tzinfo=timezone.utc)  # SQLite drops the zone
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class LedgerEvent:
    id: int
    deployment_id: str
    at: datetime
    kind: str
    phase: str | None
    task_id: str | None
    message: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class MigrationRun:
    """One migration file applied (``up``) or reverted (``down``) in an environment's database."""

    id: int
    deployment_id: str | None
    service: str
    environment: str
    database: str
    version: str
    description: str | None
    direction: str
    phase: str | None
    checksum: str | None
    status: str
    statements_done: int
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class DeploymentLedger:
    """Access to the ledger database. Create one with :meth:`from_url` or through ``DeploymentLedgerHook``."""

    _engines: dict[str, Engine] = {}
    _upgraded: set[int] = set()
    _lock = threading.Lock()

    def __init__(self, engine: Engine):
        self.engine = engine
        if id(engine) not in self._upgraded:
            schema.upgrade(engine)
            self._upgraded.add(id(engine))

    @classmethod
    def from_url(cls, url: str) -> DeploymentLedger:
        with cls._lock:
            engine = cls._engines.get(url)
            if engine is None:
                engine = _make_engine(url)
                cls._engines[url] = engine
        return cls(engine)

    # ------------------------------------------------------------------------------------------ writes

    def start_deployment(
        self,
        *,
        id: str,
        service: str,
        environment: str,
        version: str,
        kind: str = "deploy",
        region: str | None = None,
        image: str | None = None,
        previous_version: str | None = None,
        commit_sha: str | None = None,
        commit_time: datetime | None = None,
        branch: str | None = None,
        author: str | None = None,
        trigger: str | None = None,
        triggered_by: str | None = None,
        reason: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        parent_id: str | None = None,
        config_fingerprint: str | None = None,
        started_at: datetime | None = None,
    ) -> Deployment:
        """Record a deployment as running; returns the existing record when ``id`` is already known."""
        existing = self.get(id)
        if existing is not None:
            return existing
        values = {
            "id": id, "service": service, "environment": environment, "region": region or "", "kind": kind,
            "version": version, "image": image, "previous_version": previous_version, "commit_sha": commit_sha,
            "commit_time": commit_time, "branch": branch, "author": author, "trigger": trigger,
            "triggered_by": triggered_by, "reason": reason, "dag_id": dag_id, "run_id": run_id,
            "parent_id": parent_id, "config_fingerprint": config_fingerprint, "status": "running",
            "started_at": started_at or utcnow(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(deployments).values(**values))
        except IntegrityError:
            pass  # a concurrent retry inserted it first
        found = self.get(id)
        assert found is not None
        return found

    def finish_deployment(self, id: str, status: str, reason: str | None = None,
                          finished_at: datetime | None = None) -> Deployment:
        """Record the outcome. A repeated call with the same outcome is a no-op; a final outcome is kept."""
        if status not in OUTCOMES:
            raise ValueError(f"unknown outcome {status!r}; expected one of {', '.join(OUTCOMES)}")
        current = self.get(id)
        if current is None:
            raise KeyError(f"no deployment {id!r} in the ledger")
        if current.status == status or status not in _TRANSITIONS[current.status]:
            return current
        with self.engine.begin() as conn:
            conn.execute(
                update(deployments)
                .where(and_(deployments.c.id == id, deployments.c.status == current.status))
                .values(status=status, outcome_reason=reason, finished_at=finished_at or utcnow())
            )
        found = self.get(id)
        assert found is not None
        return found

    def record_event(self, deployment_id: str, kind: str, message: str | None = None, *, phase: str | None = None,
                     task_id: str | None = None, data: dict[str, Any] | None = None,
                     at: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(
                deployment_id=deployment_id, at=at or utcnow(), kind=kind, phase=phase, task_id=task_id,
                message=message, data=json.dumps(data or {}, default=str, sort_keys=True),
            ))

    def record_migration(self, *, service: str, environment: str, database: str, version: str, direction: str,
                         status: str, deployment_id: str | None = None, description: str | None = None,
                         phase: str | None = None, checksum: str | None = None, statements_done: int = 0,
                         error: str | None = None, started_at: datetime | None = None,
                         finished_at: datetime | None = None) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(insert(migration_runs).values(
                deployment_id=deployment_id, service=service, environment=environment, database=database,
                version=version, description=description, direction=direction, phase=phase, checksum=checksum,
                status=status, statements_done=statements_done, error=error, started_at=started_at or utcnow(),
                finished_at=finished_at,
            ))
            return int(result.inserted_primary_key[0])

    # ------------------------------------------------------------------------------------------- reads

    def get(self, id: str) -> Deployment | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deployments).where(deployments.c.id == id)).first()
        return Deployment.from_row(row) if row else None

    def events(self, deployment_id: str, kind: str | None = None) -> list[LedgerEvent]:
        return self._events(events.c.deployment_id == deployment_id, kind)

    def migration_runs(self, service: str, environment: str, database: str | None = None) -> list[MigrationRun]:
        """Migration runs of a service's database in an environment, oldest first."""
        query = select(migration_runs).where(migration_runs.c.service == service,
                                             migration_runs.c.environment == environment)
        if database is not None:
            query = query.where(migration_runs.c.database == database)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(migration_runs.c.started_at, migration_runs.c.id)).all()
        return [MigrationRun(r.id, r.deployment_id, r.service, r.environment, r.database, r.version, r.description,
                             r.direction, r.phase, r.checksum, r.status, r.statements_done, r.error,
                             _aware(r.started_at), _aware(r.finished_at) if r.finished_at else None) for r in rows]

    def service_events(self, service: str, kind: str) -> list[LedgerEvent]:
        """Events of one kind across every deployment of a service (a build's scan results, ...), oldest first."""
        of_service = events.c.deployment_id.in_(select(deployments.c.id).where(deployments.c.service == service))
        return self._events(of_service, kind)

    def _events(self, where: Any, kind: str | None) -> list[LedgerEvent]:
        query = select(events).where(where)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(events.c.at, events.c.id)).all()
        return [LedgerEvent(r.id, r.deployment_id, _aware(r.at), r.kind, r.phase, r.task_id, r.message,
                            json.loads(r.data or "{}")) for r in rows]

    def deployments(self, service: str | None = None, environment: str | None = None, region: str | None = None,
                    status: Iterable[str] | None = None, since: datetime | None = None,
                    limit: int | None = None, parent_id: str | None = None) -> list[Deployment]:
        """Deployments, newest first; ``parent_id`` selects the regional deployments of a global rollout."""
        query = select(deployments)
        if parent_id is not None:
            query = query.where(deployments.c.parent_id == parent_id)
        if service is not None:
            query = query.where(deployments.c.service == service)
        if environment is not None:
            query = query.where(deployments.c.environment == environment)
        if region is not None:
            query = query.where(deployments.c.region == region)
        if status is not None:
            query = query.where(deployments.c.status.in_(list(status)))
        if since is not None:
            query = query.where(deployments.c.started_at >= since)
        query = query.order_by(deployments.c.started_at.desc(), deployments.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [Deployment.from_row(r) for r in conn.execute(query)]

    def last_stable(self, service: str, environment: str, region: str | None = None,
                    exclude_version: str | None = None) -> Deployment | None:
        """The most recent successful deployment: what "last stable version" means for rollbacks."""
        query = (
            select(deployments)
            .where(deployments.c.service == service, deployments.c.environment == environment,
                   deployments.c.region == (region or ""), deployments.c.status == "succeeded",
                   deployments.c.kind != "rollout")
            .order_by(deployments.c.finished_at.desc(), deployments.c.id.desc())
        )
        if exclude_version is not None:
            query = query.where(deployments.c.version != exclude_version)
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return Deployment.from_row(row) if row else None

    def across_regions(self, service: str, environment: str) -> list[Deployment]:
        """The rollouts and hotfixes of a multi-region service across its regions (not the regional
        deployments), finished ones only, newest first."""
        query = (
            select(deployments)
            .where(deployments.c.service == service, deployments.c.environment == environment,
                   deployments.c.region == "", deployments.c.kind.in_(("rollout", "hotfix")),
                   deployments.c.status != "running")
            .order_by(deployments.c.started_at.desc(), deployments.c.id.desc())
        )
        with self.engine.connect() as conn:
            return [Deployment.from_row(r) for r in conn.execute(query)]

    def replaced_by(self, rollback: Deployment) -> Deployment | None:
        """The deployment a rollback replaced: the latest successful deployment of the version it rolled back
        from (its ``previous_version``), in the same service, environment and region, started before it (for a
        rollback across the regions: the rollout)."""
        if not rollback.previous_version:
            return None
        query = (
            select(deployments)
            .where(deployments.c.service == rollback.service, deployments.c.environment == rollback.environment,
                   deployments.c.region == (rollback.region or ""), deployments.c.status == "succeeded",
                   deployments.c.version == rollback.previous_version,
                   deployments.c.id != rollback.id, deployments.c.started_at <= rollback.started_at)
            .order_by(deployments.c.finished_at.desc(), deployments.c.id.desc())
        )
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return Deployment.from_row(row) if row else None

    def last_stable_version(self, service: str, environment: str, region: str | None = None,
                            exclude_version: str | None = None) -> str | None:
        found = self.last_stable(service, environment, region, exclude_version)
        return found.version if found else None

    def versions_passed(self, service: str, environment: str) -> list[str]:
        """Versions whose deployment to ``environment`` completed successfully, newest first ("passed staging"),
        including those later replaced by a rollback."""
        query = (
            select(deployments.c.version, deployments.c.finished_at)
            .where(deployments.c.service == service, deployments.c.environment == environment, _completed())
            .order_by(deployments.c.finished_at.desc())
        )
        seen: list[str] = []
        with self.engine.connect() as conn:
            for version, _ in conn.execute(query):
                if version not in seen:
                    seen.append(version)
        return seen

    def has_passed(self, service: str, environment: str, version: str) -> bool:
        """Whether a deployment of ``version`` to ``environment`` completed successfully (even if a rollback
        replaced it later; one rolled back during its own rollout never passed)."""
        query = select(deployments.c.id).where(
            deployments.c.service == service, deployments.c.environment == environment,
            deployments.c.version == version, _completed()).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    # ---------------------------------------------------------------------------- reads for DORA metrics

    def top_level_between(self, since: datetime, until: datetime, service: str | None = None,
                          environment: str | None = None) -> list[Deployment]:
        """Deployments that finished in ``[since, until)``, or started in it and still run, oldest first; only
        top-level ones: the regional deployments of a rollout, hotfix or rollback across the regions (those
        with a ``parent_id``) are left out, their parent stands for them."""
        finished = and_(deployments.c.finished_at >= since, deployments.c.finished_at < until)
        running = and_(deployments.c.status == "running", deployments.c.started_at >= since,
                       deployments.c.started_at < until)
        # incidents are not deployments (the outage-recovery workflow records them here too)
        query = select(deployments).where(self._top_level(), or_(finished, running),
                                          deployments.c.kind != "incident")
        if service is not None:
            query = query.where(deployments.c.service == service)
        if environment is not None:
            query = query.where(deployments.c.environment == environment)
        query = query.order_by(deployments.c.started_at, deployments.c.id)
        with self.engine.connect() as conn:
            return [Deployment.from_row(r) for r in conn.execute(query)]

    def events_of(self, deployment_ids: Iterable[str], kinds: Iterable[str]) -> dict[str, list[LedgerEvent]]:
        """Events of some kinds of several deployments at once: deployment id -> its events, oldest first."""
        ids, wanted = list(dict.fromkeys(deployment_ids)), list(kinds)
        found: dict[str, list[LedgerEvent]] = {}
        for start in range(0, len(ids), 500):  # bounded IN lists
            where = and_(events.c.deployment_id.in_(ids[start:start + 500]), events.c.kind.in_(wanted))
            for e in self._events(where, None):
                found.setdefault(e.deployment_id, []).append(e)
        return found

    def commit_times(self, service: str, shas: Iterable[str]) -> dict[str, datetime]:
        """Commit sha -> the commit time recorded on a deployment of ``service`` with that sha (any
        environment; the earliest one when they differ). Shas no deployment has a commit time for are
        missing."""
        from sqlalchemy import func

        wanted = sorted(set(shas))
        found: dict[str, datetime] = {}
        for start in range(0, len(wanted), 500):
            query = (select(deployments.c.commit_sha, func.min(deployments.c.commit_time))
                     .where(deployments.c.service == service,
                            deployments.c.commit_sha.in_(wanted[start:start + 500]),
                            deployments.c.commit_time.is_not(None))
                     .group_by(deployments.c.commit_sha))
            with self.engine.connect() as conn:
                found.update({sha: _aware(at) for sha, at in conn.execute(query) if at is not None})
        return found

    def first_started(self, service: str, environment: str, versions: Iterable[str]) -> dict[str, datetime]:
        """Version -> when its first deployment to ``environment`` started (any outcome, regional ones
        too)."""
        from sqlalchemy import func

        wanted = sorted(set(versions))
        found: dict[str, datetime] = {}
        for start in range(0, len(wanted), 500):
            query = (select(deployments.c.version, func.min(deployments.c.started_at))
                     .where(deployments.c.service == service, deployments.c.environment == environment,
                            deployments.c.version.in_(wanted[start:start + 500]))
                     .group_by(deployments.c.version))
            with self.engine.connect() as conn:
                found.update({version: _aware(at) for version, at in conn.execute(query) if at is not None})
        return found

    def first_completed_after(self, service: str, environment: str, after: datetime) -> Deployment | None:
        """The first top-level deployment of any kind (rollbacks included) of ``service`` in ``environment``
        that completed successfully (succeeded, or was later replaced by a rollback) after ``after``."""
        query = (
            select(deployments)
            .where(deployments.c.service == service, deployments.c.environment == environment,
                   self._top_level(), _completed(), deployments.c.finished_at > after)
            .order_by(deployments.c.finished_at, deployments.c.id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return Deployment.from_row(row) if row else None

    @staticmethod
    def _top_level() -> Any:
        """Deployments that are not the regional part of a deployment across the regions."""
        return or_(deployments.c.parent_id.is_(None), deployments.c.parent_id == "")


def _completed():
    """Deployments that completed successfully: succeeded, or rolled back afterwards by a rollback."""
    replaced = exists().where(events.c.deployment_id == deployments.c.id, events.c.kind == REPLACED)
    return or_(deployments.c.status == "succeeded", and_(deployments.c.status == "rolled_back", replaced))


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised through every SQLite test
            cursor = dbapi_conn.cursor()
            # WAL lets parallel tasks read while one writes; foreign keys for the events' cascade.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)
