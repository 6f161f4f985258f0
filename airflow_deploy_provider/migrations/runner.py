"""The migration runner: lock, plan, verify, pre-flight, apply (resumable), revert, repair.

``MigrationRunner(connect, settings, report=..., who=..., run=...)`` works on the database ``connect()``
opens (a psycopg2 connection factory, e.g. ``ConnectionParams.connector()``). Its main session holds the
migration lock and runs the statements; the watchdog has a second session. Both set ``application_name``
to ``<settings.application_name>:<run>`` (``...:watchdog``) so a lock holder is identifiable.

Lock: a session-level advisory lock whose key is derived from the database and the history table
(``settings.lock_key`` overrides it). :meth:`MigrationRunner.try_lock` does not wait and says who holds it
(so an Airflow operator can defer and retry until its deadline); :meth:`MigrationRunner.lock` waits until a
deadline and raises :class:`MigrationLockTimeout` naming the holder; :meth:`MigrationRunner.unlock` releases;
:meth:`MigrationRunner.locked` is the context manager. ``apply``/``revert``/``repair`` take the lock
themselves (waiting up to ``settings.lock_deadline_seconds``) unless the caller holds it. Because the lock is
held by the session that runs the statements, holding it proves no other run is executing: a history row
left ``running`` belongs to a dead worker and is resumed.

``apply(migrations, phase)``: under the lock, creates the history table if needed, plans
(:mod:`~airflow_deploy_provider.migrations.plan`), refuses changed applied files (``ChecksumMismatch``),
breaking changes in expand migrations (``LintRefused``) and order problems (``MigrationPlanError``), runs the
pre-flight (``PreflightRefused``), then runs each file group by group with the watchdog on:

- a transactional group runs in one transaction (``BEGIN`` ... ``COMMIT``) whose last statement records the
  progress, so a group and its progress commit together; a group that runs alone (autocommit) records its
  progress right after the statement. A later run resumes after the last completed statement;
- before each statement ``lock_timeout``/``statement_timeout`` are set for its kind; a lock timeout
  (55P03), a deadlock (40P01) or a cancel by the watchdog rolls the group back and retries it after an
  exponential backoff, up to ``max_retries``;
- ``CREATE INDEX CONCURRENTLY``: an INVALID index of that name (left by an interrupted build) is dropped
  before the statement runs; when the statement fails, the INVALID index it left is dropped
  (``DROP INDEX CONCURRENTLY IF EXISTS``) and the statement is retried (``invalid_index_retries``); an index
  that is not valid afterwards is never reported as success;
- a failure marks the history row ``failed`` with the error and raises :class:`MigrationFailed`.

``revert(migrations, versions)`` runs the down files of ``versions`` in reverse version order and marks the
rows ``reverted``; it refuses contract migrations, migrations without a down file (irreversible), versions
not applied, and leaving later applied versions in place. ``repair(migrations)`` stores the current
checksum of changed applied files (recorded in the row's ``repairs``).

Everything observed is passed to ``report(kind, data)`` (``data["message"]`` is a readable line) and kept
in ``runner.events``. Kinds: ``warning``, ``notice``, ``lock_wait``, ``locked``, ``lint``, ``preflight``,
``resumed``, ``statement``, ``retry``, ``invalid_index``, ``waiting``, ``blocking``, ``cancelled``,
``deadlock``, ``replication_lag``, ``failed``, ``applied``, ``reverted``, ``repaired``. ``report`` may be
called from the watchdog thread (calls are serialised).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2

from airflow_deploy_provider.migrations.errors import (
    ChecksumMismatch,
    LintRefused,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
    MigrationPlanError,
    PreflightRefused,
    RevertRefused,
)
from airflow_deploy_provider.migrations.files import Migration, MigrationScript, MigrationSet
from airflow_deploy_provider.migrations.history import HistoryRow, HistoryTable, current_rows
from airflow_deploy_provider.migrations.lint import LintFinding
from airflow_deploy_provider.migrations.plan import (
    MigrationPlan,
    PlannedGroup,
    build_plan,
    checksum_message,
    checksum_mismatches,
    planned_groups,
)
from airflow_deploy_provider.migrations.preflight import PreflightReport, run_preflight
from airflow_deploy_provider.migrations.settings import MigrationSettings
from airflow_deploy_provider.migrations.statements import Statement, StatementGroup
from airflow_deploy_provider.migrations.watchdog import Watchdog, describe_sessions

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
QUERY_CANCELED = "57014"


@dataclass(frozen=True)
class LockHolder:
    """The session holding the migration lock."""

    pid: int
    application_name: str
    user: str | None
    state: str | None
    query_start: datetime | None
    backend_start: datetime | None
    client_addr: str | None

    def describe(self) -> str:
        since = f", query started {self.query_start.isoformat()}" if self.query_start else ""
        return (
            f"pid {self.pid} (application_name {self.application_name!r}, user {self.user}, "
            f"state {self.state}{since})"
        )


@dataclass(frozen=True)
class LockResult:
    """Outcome of :meth:`MigrationRunner.try_lock`: ``acquired``, else who holds the lock."""

    acquired: bool
    key: int
    holder: LockHolder | None = None

    def __bool__(self) -> bool:
        return self.acquired


@dataclass(frozen=True)
class StatementTiming:
    version: int
    direction: str
    number: int
    line: int
    kind: str
    seconds: float
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ApplyResult:
    """What ``apply`` did: ``applied`` versions in order, ``resumed`` (version -> first statement run),
    per-statement timings, retries, warnings, lint findings, the plan and pre-flight report."""

    applied: list[int] = field(default_factory=list)
    resumed: dict[int, int] = field(default_factory=dict)
    statements: list[StatementTiming] = field(default_factory=list)
    retries: int = 0
    warnings: list[str] = field(default_factory=list)
    lint: list[LintFinding] = field(default_factory=list)
    plan: MigrationPlan | None = None
    preflight: PreflightReport | None = None
    duration_seconds: float = 0.0
    max_replication_lag_seconds: float = 0.0

    @property
    def versions(self) -> list[int]:
        return self.applied

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "resumed": self.resumed,
            "retries": self.retries,
            "statements": [s.to_dict() for s in self.statements],
            "warnings": self.warnings,
            "lint": [f.to_dict() for f in self.lint],
            "duration_seconds": self.duration_seconds,
            "max_replication_lag_seconds": self.max_replication_lag_seconds,
        }


@dataclass
class RevertResult:
    """What ``revert`` did: ``reverted`` versions in the order their down files ran."""

    reverted: list[int] = field(default_factory=list)
    statements: list[StatementTiming] = field(default_factory=list)
    retries: int = 0
    warnings: list[str] = field(default_factory=list)
    preflight: PreflightReport | None = None
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reverted": self.reverted,
            "retries": self.retries,
            "warnings": self.warnings,
            "statements": [s.to_dict() for s in self.statements],
            "duration_seconds": self.duration_seconds,
        }


def _ms(seconds: float) -> str:
    return f"{max(0, round(seconds * 1000))}ms"


def _first_line(exc: BaseException) -> str:
    text = (getattr(exc, "pgerror", None) or str(exc) or exc.__class__.__name__).strip()
    return text.splitlines()[0].removeprefix("ERROR:").strip()


class _Counter:
    """Retries of one run (shared by its scripts)."""

    def __init__(self) -> None:
        self.retries = 0


class MigrationRunner:
    """Runs the migrations of a :class:`MigrationSet` on one database (see the module docstring).

    :param connect: opens a new psycopg2 connection to the target database.
    :param settings: :class:`MigrationSettings` (defaults if ``None``).
    :param report: ``report(kind, data)`` receives everything the engine observes.
    :param who: recorded as ``installed_by`` (default: the database user).
    :param run: the Airflow run (recorded in the history and in ``application_name``).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        settings: MigrationSettings | None = None,
        *,
        report: Callable[[str, dict[str, Any]], None] | None = None,
        who: str = "",
        run: str = "",
    ) -> None:
        self.connect = connect
        self.settings = settings or MigrationSettings()
        self.who = who
        self.run = run
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._report = report
        self._emit_lock = threading.Lock()
        self._conn: Any = None
        self._pid: int | None = None
        self._database = ""
        self._server_version: str | None = None
        self._history = HistoryTable(self.settings.history_table)
        self._lock_key: int | None = None
        self._lock_held = False

    # --- sessions -----------------------------------------------------------------------------------------

    @property
    def application_name(self) -> str:
        return f"{self.settings.application_name}:{self.run or self.who or 'migrations'}"[:63]

    def _setup(self, conn: Any, name: str) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('application_name', %s, false)", (name[:63],))
            if conn.server_version >= 140000 and self.settings.client_connection_check_seconds:
                # A killed worker's statement stops within seconds (and its lock goes with its session).
                cur.execute(
                    "SELECT set_config('client_connection_check_interval', %s, false)",
                    (_ms(self.settings.client_connection_check_seconds),),
                )

    def _open(self, name: str) -> Any:
        conn = self.connect()
        conn.autocommit = True  # the engine issues BEGIN/COMMIT itself
        self._setup(conn, name)
        return conn

    def _session(self) -> Any:
        """The main session (opened on first use)."""
        if self._conn is not None and self._conn.closed:
            held, self._conn, self._lock_held = self._lock_held, None, False
            if held:
                raise MigrationError(
                    "the database session holding the migration lock was lost; the run stopped"
                )
        if self._conn is None:
            conn = self._open(self.application_name)
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_backend_pid(), current_database(), COALESCE(current_schema(), 'public'), "
                    "current_setting('server_version')"
                )
                self._pid, self._database, schema, version = cur.fetchone()
            self._server_version = version.split()[0]
            # Qualified once, so a migration's SET search_path cannot move the history table.
            self._history = self._history.qualified(schema)
            self._conn = conn
        return self._conn

    def _cursor(self) -> Any:
        return self._session().cursor()

    @property
    def pid(self) -> int | None:
        """The backend pid of the main session (``None`` before it is opened)."""
        return self._pid

    @property
    def database(self) -> str:
        """The target database's name (opens the main session when needed)."""
        self._session()
        return str(self._database)

    def close(self) -> None:
        """Release the lock (if held) and close the sessions."""
        with suppress(psycopg2.Error):
            self.unlock()
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> MigrationRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reporting ----------------------------------------------------------------------------------------

    def _emit(self, kind: str, /, **data: Any) -> None:
        with self._emit_lock:
            self.events.append((kind, data))
            level = (
                logging.WARNING
                if kind
                in (
                    "warning",
                    "failed",
                    "cancelled",
                    "deadlock",
                    "replication_lag",
                    "invalid_index",
                    "retry",
                    "blocking",
                )
                else logging.INFO
            )
            log.log(level, "%s: %s", kind, data.get("message", data))
            if self._report is not None:
                try:
                    self._report(kind, data)
                except Exception:  # a broken callback must not break a migration
                    log.exception("migration report callback failed for %s", kind)

    def _drain_notices(self, conn: Any, context: dict[str, Any]) -> None:
        for notice in conn.notices:
            self._emit("notice", message=notice.strip(), **context)
        del conn.notices[:]

    # --- lock ---------------------------------------------------------------------------------------------

    @property
    def lock_key(self) -> int:
        """The advisory lock key: ``settings.lock_key``, else derived from the database and history table."""
        if self._lock_key is None:
            if self.settings.lock_key is not None:
                self._lock_key = self.settings.lock_key
            else:
                self._session()
                seed = f"airflow-deploy-migrations:{self._database}:{self._history.name}".encode()
                self._lock_key = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big", signed=True)
        return self._lock_key

    def lock_holder(self) -> LockHolder | None:
        """The session holding the migration lock, if any (from pg_locks and pg_stat_activity)."""
        key = self.lock_key
        with self._cursor() as cur:
            # A bigint advisory key shows in pg_locks as classid (high 32 bits), objid (low), objsubid 1.
            cur.execute(
                """
                SELECT a.pid, a.application_name, a.usename, a.state, a.query_start, a.backend_start,
                       a.client_addr::text
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
                LIMIT 1""",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
            )
            row = cur.fetchone()
        return LockHolder(*row) if row else None

    def try_lock(self) -> LockResult:
        """Take the migration lock if it is free (never waits); otherwise say who holds it."""
        key = self.lock_key
        if self._lock_held:
            return LockResult(True, key)
        with self._cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            acquired = bool(cur.fetchone()[0])
        if acquired:
            self._lock_held = True
            self._emit(
                "locked",
                message=f"migration lock {key} of database {self._database} taken by "
                f"{self.application_name} (pid {self._pid})",
                key=key,
                pid=self._pid,
            )
            return LockResult(True, key)
        return LockResult(False, key, self.lock_holder())

    def lock(self, deadline_seconds: float) -> LockResult:
        """Wait up to ``deadline_seconds`` for the migration lock; raises :class:`MigrationLockTimeout`."""
        deadline = time.monotonic() + deadline_seconds
        reported: int | None = None
        while True:
            result = self.try_lock()
            if result.acquired:
                return result
            holder = result.holder
            if holder is not None and holder.pid != reported:
                reported = holder.pid
                self._emit(
                    "lock_wait",
                    message=f"waiting for the migration lock of database {self._database}, "
                    f"held by {holder.describe()}",
                    holder=holder.__dict__,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                who = holder.describe() if holder else "a session that has since ended"
                raise MigrationLockTimeout(
                    f"another migration run holds the migration lock of database {self._database} "
                    f"(history table {self._history.name}): {who}; gave up after {deadline_seconds:g}s",
                    holder,
                )
            time.sleep(min(self.settings.lock_poll_seconds, remaining))

    def unlock(self) -> None:
        """Release the migration lock (no-op when not held)."""
        if not self._lock_held:
            return
        self._lock_held = False
        if self._conn is not None and not self._conn.closed:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,))

    @property
    def holds_lock(self) -> bool:
        return self._lock_held

    @contextmanager
    def locked(self, deadline_seconds: float | None = None) -> Iterator[LockResult]:
        """Hold the migration lock for the block (waiting up to ``deadline_seconds``, default: the
        settings')."""
        if self._lock_held:
            yield LockResult(True, self.lock_key)
            return
        result = self.lock(
            self.settings.lock_deadline_seconds if deadline_seconds is None else deadline_seconds
        )
        try:
            yield result
        finally:
            with suppress(psycopg2.Error):
                self.unlock()

    # --- history ------------------------------------------------------------------------------------------

    def _ensure_history(self) -> None:
        with self._cursor() as cur:
            if not self._history.exists(cur):
                ddl = self.settings.timeouts_for("ddl")
                cur.execute(
                    "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, "
                    "false)",
                    (_ms(ddl.lock_timeout), _ms(ddl.statement_timeout)),
                )
                self._history.create(cur)

    def history(self) -> list[HistoryRow]:
        """Every row of the history table (empty when it does not exist yet)."""
        with self._cursor() as cur:
            return self._history.rows(cur) if self._history.exists(cur) else []

    def applied(self) -> list[HistoryRow]:
        """The rows of the versions currently applied, by version."""
        return [row for _, row in sorted(current_rows(self.history()).items()) if row.status == "applied"]

    # --- plan, checks -------------------------------------------------------------------------------------

    def plan(self, migrations: MigrationSet, phase: str | None = None) -> MigrationPlan:
        """The dry run: what :meth:`apply` would do (nothing is executed, nothing created)."""
        rows = self.history()
        return build_plan(
            migrations,
            rows,
            settings=self.settings,
            phase=phase,
            database=self._database,
            server_version=self._server_version,
            history_table=self._history.name,
        )

    def verify_checksums(self, migrations: MigrationSet) -> None:
        """Raise :class:`ChecksumMismatch` when an applied (or partially applied) file changed."""
        mismatches = checksum_mismatches(migrations, self.history())
        if mismatches:
            raise ChecksumMismatch("; ".join(checksum_message(m) for m in mismatches), mismatches)

    def repair(self, migrations: MigrationSet) -> list[dict[str, Any]]:
        """Store the current checksum of applied files that changed (the intended case: comments, formatting);
        each repair is recorded in the row's ``repairs`` and reported. Returns the repaired mismatches."""
        with self.locked():
            self._ensure_history()
            with self._cursor() as cur:
                mismatches = checksum_mismatches(migrations, self._history.rows(cur))
                for m in mismatches:
                    self._history.repair(
                        cur,
                        m["history_id"],
                        checksum=m["current"],
                        old=m["stored"],
                        who=self.who,
                        run=self.run,
                    )
                    self._emit(
                        "repaired",
                        message=f"{m['file']}: stored checksum {m['stored']} replaced by {m['current']}",
                        **m,
                    )
        return mismatches

    def preflight(self, plan: MigrationPlan) -> PreflightReport:
        """Check the database before the plan runs; raises :class:`PreflightRefused` (see
        :mod:`~airflow_deploy_provider.migrations.preflight`)."""
        return self._preflight([g for m in plan.migrations for g in m.groups])

    def _preflight(self, groups: Sequence[PlannedGroup]) -> PreflightReport:
        statements = [s for g in groups for s in g.statements]
        with self._cursor() as cur:
            report = run_preflight(
                cur,
                tables=[t for s in statements for t in s.tables],
                indexes=[i for s in statements for i in s.indexes],
                concurrent=any(s.concurrent for s in statements),
                settings=self.settings,
                own_pids=[self._pid or 0],
            )
        for warning in report.warnings:
            self._emit("warning", message=warning)
        self._emit("preflight", message=report.render(), **report.to_dict())
        if not report.ok:
            raise PreflightRefused("pre-flight refused the migration: " + "; ".join(report.reasons), report)
        return report

    # --- apply --------------------------------------------------------------------------------------------

    def apply(self, migrations: MigrationSet, phase: str | None = None) -> ApplyResult:
        """Apply the pending migrations (of ``phase``, or all); resumes interrupted or failed ones."""
        started = time.monotonic()
        result = ApplyResult()
        counter = _Counter()
        with self.locked():
            self._ensure_history()
            plan = self.plan(migrations, phase)
            result.plan, result.lint = plan, list(plan.lint.findings)
            for warning in [
                *plan.warnings,
                *plan.lint.warnings,
                *(w for m in plan.migrations for w in m.warnings),
            ]:
                result.warnings.append(warning)
                self._emit("warning", message=warning)
            for finding in plan.lint.findings:
                self._emit("lint", **{**finding.to_dict(), "message": str(finding)})
            if plan.checksum_mismatches:
                raise ChecksumMismatch(
                    "; ".join(checksum_message(m) for m in plan.checksum_mismatches), plan.checksum_mismatches
                )
            if plan.refused_findings:
                raise LintRefused(
                    "breaking changes are only allowed in contract migrations ('-- phase: contract'): "
                    + "; ".join(str(f) for f in plan.refused_findings),
                    plan.refused_findings,
                )
            if plan.order_problems:
                raise MigrationPlanError("; ".join(plan.order_problems), plan.order_problems)
            if plan.migrations:
                result.preflight = self.preflight(plan)
                rows = {r.id: r for r in self.history()}
                with self._watchdog() as dog:
                    for planned in plan.migrations:
                        migration = migrations.get(planned.version)
                        assert migration is not None
                        row = rows.get(planned.history_id) if planned.history_id else None
                        if row is not None:
                            result.resumed[migration.version] = planned.resume_from
                        timings = self._run_script(
                            migration, migration.up, "up", row, planned.resume_from, dog, counter
                        )
                        result.statements.extend(timings)
                        result.applied.append(migration.version)
                        self._emit(
                            "applied",
                            message=f"applied {migration.file} ({len(timings)} statement(s) run)",
                            version=migration.version,
                            file=migration.file,
                            phase=migration.phase,
                        )
                    result.max_replication_lag_seconds = dog.max_replication_lag
        result.retries = counter.retries
        result.duration_seconds = round(time.monotonic() - started, 3)
        return result

    @contextmanager
    def _watchdog(self) -> Iterator[Watchdog]:
        dog = Watchdog(
            lambda: self._open(f"{self.application_name[:54]}:watchdog"),
            target_pid=self._pid or 0,
            settings=self.settings,
            emit=self._emit,
        )
        with dog:
            yield dog

    def _run_script(
        self,
        migration: Migration,
        script: MigrationScript,
        direction: str,
        row: HistoryRow | None,
        start: int,
        dog: Watchdog,
        counter: _Counter,
        up_row_id: int | None = None,
    ) -> list[StatementTiming]:
        conn = self._session()
        with conn.cursor() as cur:
            # Each file starts from a clean session: a SET in one file does not leak into the next.
            cur.execute("RESET ALL")
        self._setup(conn, self.application_name)
        with conn.cursor() as cur:
            if row is not None:
                self._history.restart(
                    cur, row.id, checksum=script.checksum, total=len(script.statements), run=self.run
                )
                row_id = row.id
                self._emit(
                    "resumed",
                    message=f"{script.name}: resuming at statement {start} of "
                    f"{len(script.statements)} (previous attempt {row.status}, run {row.airflow_run or '?'})",
                    version=migration.version,
                    file=script.name,
                    statement=start,
                    previous_status=row.status,
                )
            else:
                row_id = self._history.insert(
                    cur,
                    version=migration.version,
                    direction=direction,
                    description=migration.description,
                    script=script.name,
                    checksum=script.checksum,
                    phase=migration.phase,
                    total=len(script.statements),
                    who=self.who,
                    run=self.run,
                )
        groups = [g for g in script.groups if g.last >= start]
        if not groups:  # everything had completed; only the final status was missing
            with conn.cursor() as cur:
                self._finish_step(cur, row_id, len(script.statements), 0.0, True, direction, up_row_id)
            return []
        timings: list[StatementTiming] = []
        for index, group in enumerate(groups):
            timings += self._run_group(
                migration,
                script,
                direction,
                row_id,
                group,
                start,
                final=index == len(groups) - 1,
                dog=dog,
                counter=counter,
                up_row_id=up_row_id,
                resuming=row is not None and index == 0,
            )
        return timings

    def _finish_step(
        self,
        cur: Any,
        row_id: int,
        last: int,
        seconds: float,
        final: bool,
        direction: str,
        up_row_id: int | None,
    ) -> None:
        status = ("applied" if direction == "up" else "reverted") if final else None
        self._history.progress(
            cur, row_id, last_statement=last, seconds=round(seconds, 3), final_status=status
        )
        if final and direction == "down" and up_row_id is not None:
            self._history.mark_reverted(cur, up_row_id)

    def _execute(
        self, cur: Any, statement: Statement, dog: Watchdog, context: dict[str, Any], *, local: bool
    ) -> float:
        timeouts = self.settings.timeouts_for(statement.kind)
        cur.execute(
            "SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', %s, %s)",
            (_ms(timeouts.lock_timeout), local, _ms(timeouts.statement_timeout), local),
        )
        dog.watch(statement, context)
        began = time.monotonic()
        try:
            cur.execute(statement.sql)  # no parameters: '%' in the SQL is not interpolated
        finally:
            dog.idle()
            self._drain_notices(cur.connection, context)
        return time.monotonic() - began

    def _run_group(
        self,
        migration: Migration,
        script: MigrationScript,
        direction: str,
        row_id: int,
        group: StatementGroup,
        start: int,
        *,
        final: bool,
        dog: Watchdog,
        counter: _Counter,
        up_row_id: int | None,
        resuming: bool,
    ) -> list[StatementTiming]:
        conn = self._session()
        statements = [s for s in group.statements if s.number >= start]
        attempt = 0
        index_retries = 0

        def timed(statement: Statement, seconds: float) -> None:
            timings.append(StatementTiming(migration.version, direction, statement.number, statement.line,
                                           statement.kind, round(seconds, 3), attempt))

        def progress(cur: Any, last: int) -> None:
            self._finish_step(cur, row_id, last, time.monotonic() - began, final, direction, up_row_id)

        while True:
            attempt += 1
            began = time.monotonic()
            timings: list[StatementTiming] = []
            statement = statements[0]
            context = {
                "version": migration.version,
                "file": script.name,
                "statement": statement.number,
                "line": statement.line,
                "direction": direction,
                "attempt": attempt,
            }
            invalid_before: set[str] = set()
            try:
                with conn.cursor() as cur:
                    if group.transactional:
                        cur.execute("BEGIN")
                        for statement in statements:
                            context.update(statement=statement.number, line=statement.line)
                            seconds = self._execute(cur, statement, dog, context, local=True)
                            timed(statement, seconds)
                        # The progress commits with the group: both or neither.
                        progress(cur, statements[-1].number)
                        cur.execute("COMMIT")
                    else:
                        if statement.is_concurrent_index_build:
                            if self._before_index_build(
                                cur, statement, context, resuming=resuming and attempt == 1
                            ):
                                self._finish_step(
                                    cur, row_id, statement.number, 0.0, final, direction, up_row_id
                                )
                                return []
                            invalid_before = self._invalid_indexes(cur, statement.index_table)
                        seconds = self._execute(cur, statement, dog, context, local=False)
                        if statement.is_concurrent_index_build:
                            self._check_index_valid(cur, statement)
                        timed(statement, seconds)
                        progress(cur, statement.number)
            except (psycopg2.Error, _InvalidIndex) as exc:
                elapsed = time.monotonic() - began
                cancel = dog.take_cancel()
                if conn.closed:
                    raise self._lost(migration, script, statement, exc) from exc
                dropped: list[str] = []
                try:
                    with conn.cursor() as cur:
                        if group.transactional:
                            cur.execute("ROLLBACK")
                        if statement.is_concurrent_index_build:
                            dropped = self._drop_failed_index(cur, statement, invalid_before, context)
                except psycopg2.Error as cleanup:
                    if conn.closed:
                        raise self._lost(migration, script, statement, cleanup) from exc
                    self._emit(
                        "warning",
                        message=f"{script.name}: cleaning up after statement {statement.number} "
                        f"failed too: {_first_line(cleanup)}",
                        **context,
                    )
                retryable = exc.pgcode in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED, SERIALIZATION_FAILURE) or (
                    exc.pgcode == QUERY_CANCELED
                    and cancel is not None
                    and self.settings.retry_after_block_cancel
                )
                why = self._why(exc, cancel, dog)
                if exc.pgcode == DEADLOCK_DETECTED:
                    self._emit(
                        "deadlock",
                        message=f"{script.name} statement {statement.number} (line "
                        f"{statement.line}) was chosen as a deadlock victim: {why}",
                        **context,
                    )
                if retryable and attempt <= self.settings.max_retries:
                    delay = self.settings.backoff(attempt) * random.uniform(0.5, 1.0)
                    counter.retries += 1
                    self._emit(
                        "retry",
                        message=f"{script.name} statement {statement.number} (line {statement.line}): "
                        f"{why}; retrying the {'transaction' if group.transactional else 'statement'}"
                        f" in {delay:.2f}s (retry {attempt} of {self.settings.max_retries})",
                        delay=round(delay, 3),
                        reason=exc.pgcode,
                        **context,
                    )
                    time.sleep(delay)
                    continue
                if dropped and not retryable and index_retries < self.settings.invalid_index_retries:
                    index_retries += 1
                    counter.retries += 1
                    self._emit(
                        "retry",
                        message=f"{script.name} statement {statement.number} (line {statement.line}): "
                        f"{why}; the INVALID index was dropped, retrying the build "
                        f"({index_retries} of {self.settings.invalid_index_retries})",
                        delay=0.0,
                        reason=exc.pgcode,
                        **context,
                    )
                    continue
                suffix = f"; the INVALID index {', '.join(dropped)} it left was dropped" if dropped else ""
                message = (
                    f"{script.name}: statement {statement.number} (line {statement.line}, {statement.kind}) "
                    f"failed after {attempt} attempt(s): {why}{suffix}"
                )
                if group.transactional:
                    message += (
                        f"; its transaction (statements {statements[0].number}-{statements[-1].number}) "
                        "was rolled back"
                    )
                with conn.cursor() as cur:
                    self._history.fail(cur, row_id, error=message, seconds=round(elapsed, 3))
                self._emit("failed", message=message, sqlstate=exc.pgcode, **context)
                raise MigrationFailed(
                    message,
                    version=migration.version,
                    statement=statement.number,
                    line=statement.line,
                    sqlstate=exc.pgcode,
                    file=script.name,
                ) from exc
            for timing in timings:
                self._emit(
                    "statement",
                    message=f"{script.name} statement {timing.number} (line {timing.line}, "
                    f"{timing.kind}) done in {timing.seconds:.3f}s",
                    **{**context, **timing.to_dict(), "file": script.name, "statement": timing.number},
                )
            return timings

    def _why(self, exc: Exception, cancel: dict[str, Any] | None, dog: Watchdog) -> str:
        text = _first_line(exc)
        detail = getattr(getattr(exc, "diag", None), "message_detail", None)
        if detail:
            text += f" ({detail})"
        code = getattr(exc, "pgcode", None)
        if code:
            text += f" [SQLSTATE {code}]"
        if cancel is not None:
            text = (
                f"was cancelled by the watchdog: it blocked {describe_sessions(cancel['blocked'])} for "
                f"{cancel['seconds']:.1f}s"
            )
        elif code in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED) and dog.last_blockers:
            text += f"; it waited for {describe_sessions(dog.last_blockers)}"
        return text

    def _lost(
        self, migration: Migration, script: MigrationScript, statement: Statement, exc: Exception
    ) -> MigrationFailed:
        self._lock_held = False
        self._conn = None
        message = (
            f"{script.name}: the database session was lost during statement {statement.number} (line "
            f"{statement.line}): {_first_line(exc)}; the history row stays 'running' and the next run resumes"
        )
        self._emit(
            "failed", message=message, version=migration.version, file=script.name, statement=statement.number
        )
        return MigrationFailed(
            message,
            version=migration.version,
            statement=statement.number,
            line=statement.line,
            file=script.name,
        )

    # --- concurrent index builds --------------------------------------------------------------------------

    def _index_valid(self, cur: Any, name: str) -> bool | None:
        """Whether index ``name`` is valid (``None``: no such index)."""
        cur.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,))
        row = cur.fetchone()
        return None if row is None else bool(row[0])

    def _invalid_indexes(self, cur: Any, table: str | None) -> set[str]:
        if not table:
            return set()
        cur.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = to_regclass(%s) "
            "AND NOT indisvalid",
            (table,),
        )
        return {r[0] for r in cur.fetchall()}

    def _drop_index(self, cur: Any, name: str) -> None:
        timeouts = self.settings.timeouts_for("concurrent")
        cur.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', '0', false)",
            (_ms(timeouts.lock_timeout),),
        )
        cur.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)
        )
        row = cur.fetchone()
        if row:
            cur.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {row[0]}")  # regclass text is quoted as needed

    def _before_index_build(
        self, cur: Any, statement: Statement, context: dict[str, Any], *, resuming: bool
    ) -> bool:
        """Drop an INVALID index the statement would (re)create; on resume, a valid one means the statement
        had completed before the worker died (returns True: skip it)."""
        if not statement.index_name:
            return False
        valid = self._index_valid(cur, statement.index_name)
        if valid is False:
            self._drop_index(cur, statement.index_name)
            self._emit(
                "invalid_index",
                message=f"index {statement.index_name} was INVALID (left by an interrupted "
                f"build); dropped it before running statement {statement.number}",
                index=statement.index_name,
                action="dropped",
                when="before",
                **context,
            )
        elif valid and resuming:
            self._emit(
                "warning",
                message=f"{context['file']}: index {statement.index_name} exists and is valid: "
                f"statement {statement.number} completed before the previous run stopped; "
                "not running it again",
                **context,
            )
            return True
        return False

    def _check_index_valid(self, cur: Any, statement: Statement) -> None:
        if statement.index_name and self._index_valid(cur, statement.index_name) is False:
            # Never reported as success: raise like PostgreSQL would, the failure path drops and retries.
            raise _InvalidIndex(f"index {statement.index_name} is INVALID after the build")

    def _drop_failed_index(
        self, cur: Any, statement: Statement, before: set[str], context: dict[str, Any]
    ) -> list[str]:
        """Drop the INVALID index a failed concurrent build left; returns what was dropped."""
        names = []
        if statement.index_name:
            if self._index_valid(cur, statement.index_name) is False:
                names.append(statement.index_name)
        else:
            names = sorted(self._invalid_indexes(cur, statement.index_table) - before)
        for name in names:
            self._drop_index(cur, name)
            self._emit(
                "invalid_index",
                message=f"the failed build left index {name} INVALID; dropped it "
                "(DROP INDEX CONCURRENTLY IF EXISTS)",
                index=name,
                action="dropped",
                when="after",
                **context,
            )
        return names

    # --- revert -------------------------------------------------------------------------------------------

    def revert(self, migrations: MigrationSet, versions: Sequence[int]) -> RevertResult:
        """Run the down files of ``versions`` (in reverse version order), marking their rows ``reverted``."""
        started = time.monotonic()
        result = RevertResult()
        counter = _Counter()
        wanted = sorted(set(versions), reverse=True)
        if not wanted:
            return result
        with self.locked():
            self._ensure_history()
            rows = self.history()
            self.verify_checksums(migrations)
            up, down = current_rows(rows), current_rows(rows, "down")
            problems = []
            for version in wanted:
                migration, row = migrations.get(version), up.get(version)
                if migration is None:
                    problems.append(f"V{version}: no migration file with this version in {migrations.folder}")
                elif row is None or row.status != "applied":
                    problems.append(f"{migration.file} is not applied ({row.status if row else 'never run'})")
                elif row.phase == "contract" or migration.phase == "contract":
                    problems.append(
                        f"{migration.file} is a contract migration: contract migrations are not reverted "
                        "(what they removed is gone); restore the backup or add a new migration"
                    )
                elif migration.down is None:
                    problems.append(
                        f"{migration.file} has no down file (U{version}__<description>.sql)"
                        + (
                            f": declared irreversible: {migration.irreversible}"
                            if migration.irreversible
                            else ""
                        )
                    )
            later = sorted(
                v for v, r in up.items() if r.status == "applied" and v > min(wanted) and v not in wanted
            )
            if later:
                problems.append(
                    f"reverting V{min(wanted)} would leave later applied migration(s) "
                    f"{', '.join(f'V{v}' for v in later)} in place: revert them too"
                )
            if problems:
                raise RevertRefused("cannot revert: " + "; ".join(problems))
            plans = []
            for version in wanted:
                migration = migrations.get(version)
                assert migration is not None and migration.down is not None
                resume_row = down.get(version)
                if not (
                    resume_row
                    and resume_row.id > up[version].id
                    and resume_row.status in ("running", "failed")
                ):
                    resume_row = None
                start = 1
                if resume_row is not None and resume_row.checksum == migration.down.checksum:
                    start = resume_row.last_statement + 1
                plans.append((migration, resume_row, start))
            result.preflight = self._preflight(
                [g for m, _, s in plans for g in planned_groups(m, self.settings, start=s, down=True)]
            )
            with self._watchdog() as dog:
                for migration, resume_row, start in plans:
                    assert migration.down is not None
                    timings = self._run_script(
                        migration,
                        migration.down,
                        "down",
                        resume_row,
                        start,
                        dog,
                        counter,
                        up_row_id=up[migration.version].id,
                    )
                    result.statements.extend(timings)
                    result.reverted.append(migration.version)
                    self._emit(
                        "reverted",
                        message=f"reverted {migration.file} with {migration.down.name}",
                        version=migration.version,
                        file=migration.down.name,
                    )
        result.retries = counter.retries
        result.duration_seconds = round(time.monotonic() - started, 3)
        return result


class _InvalidIndex(Exception):
    """A concurrent build that ended without error but left its index INVALID."""

    pgcode = "XX000"
    pgerror = None
