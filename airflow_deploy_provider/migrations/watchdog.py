"""The watchdog: a second session, in a thread, watching the runner's session while statements run.

Every ``watchdog_interval_seconds`` it looks at:

- sessions our running statement blocks (``pg_blocking_pids``): reported as ``blocking``; once one has been
  blocked for ``block_cancel_after_seconds`` our statement is cancelled (``pg_cancel_backend``) and
  ``cancelled`` is reported with who was blocked (the runner then retries the group after a backoff, or
  fails);
- sessions our statement waits for: reported as ``waiting`` (and kept for the runner's error messages);
- ``pg_stat_database.deadlocks`` of the database: a rise is reported as ``deadlock``;
- replication lag (``pg_stat_replication.replay_lag`` on a primary): above ``max_replication_lag_seconds``
  it is reported as ``replication_lag`` (at most every 30 s).

The runner marks the statement it runs (:meth:`Watchdog.watch` / :meth:`Watchdog.idle`); the cancel happens
under the same mutex, so it can only hit the statement it was decided for (a cancel that reaches an idle
session is ignored by PostgreSQL).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from airflow_deploy_provider.migrations.settings import MigrationSettings
from airflow_deploy_provider.migrations.statements import Statement

log = logging.getLogger(__name__)

BLOCKED_BY_US = """
    SELECT pid, usename, application_name, state, left(query, 500),
           extract(epoch FROM now() - query_start)::float8
    FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))
    ORDER BY pid"""

BLOCKING_US = """
    SELECT pid, usename, application_name, state, left(query, 500),
           extract(epoch FROM now() - xact_start)::float8
    FROM pg_stat_activity
    WHERE pid = ANY(pg_blocking_pids(%s))
    ORDER BY pid"""

REPLICATION_LAG = """
    SELECT COALESCE(max(extract(epoch FROM replay_lag)), 0)::float8, count(*)
    FROM pg_stat_replication"""


def _sessions(rows: list[tuple]) -> list[dict[str, Any]]:
    return [
        {
            "pid": r[0],
            "user": r[1],
            "application_name": r[2],
            "state": r[3],
            "query": r[4],
            "seconds": round(r[5] or 0.0, 3),
        }
        for r in rows
    ]


def describe_sessions(sessions: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"pid {s['pid']} ({s['application_name'] or 'no application_name'}, user {s['user']}, "
        f"{s['state']}, {s['seconds']:.1f}s: {(s['query'] or '').strip()[:120]!r})"
        for s in sessions
    )


class Watchdog:
    """Watches session ``target_pid`` from its own session (``connect()``) in a daemon thread."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        target_pid: int,
        settings: MigrationSettings,
        emit: Callable[..., None],
    ) -> None:
        self._connect = connect
        self.target_pid = target_pid
        self.settings = settings
        self._emit = emit
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._seq = 0
        self._current: tuple[int, Statement, dict[str, Any]] | None = None
        self._first_seen: dict[int, float] = {}
        self._cancelled: dict[str, Any] | None = None
        self._waiting_reported: frozenset[int] = frozenset()
        self.last_blockers: list[dict[str, Any]] = []
        self._deadlocks: int | None = None
        self._lag_reported = 0.0
        self.max_replication_lag = 0.0
        self._failed = False

    # --- the runner's side --------------------------------------------------------------------------------

    def start(self) -> Watchdog:
        try:  # the deadlock baseline is taken now, so a deadlock in the first interval counts
            self._conn = self._connect()
            with self._conn.cursor() as cur:
                self._check_deadlocks(cur)
        except Exception as exc:
            self._emit("warning", message=f"migration watchdog: {exc}".strip())
            self._conn = None
        self._thread = threading.Thread(target=self._loop, name="migration-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def watch(self, statement: Statement, context: dict[str, Any]) -> None:
        """``statement`` starts running on the watched session."""
        with self._mutex:
            self._seq += 1
            self._current = (self._seq, statement, context)
            self._first_seen = {}
            self._cancelled = None
            self._waiting_reported = frozenset()
            self.last_blockers = []

    def idle(self) -> None:
        """The statement ended (waits for a cancel being sent, so it cannot reach the next statement)."""
        with self._mutex:
            self._current = None

    def take_cancel(self) -> dict[str, Any] | None:
        """What the watchdog cancelled since the last :meth:`watch` (``None``: nothing)."""
        with self._mutex:
            cancelled, self._cancelled = self._cancelled, None
            return cancelled

    # --- the thread ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.watchdog_interval_seconds):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                with self._conn.cursor() as cur:
                    self._tick(cur)
                self._failed = False
            except Exception as exc:  # the watchdog must never take the migration down
                if not self._failed:
                    self._emit("warning", message=f"migration watchdog: {exc}".strip())
                self._failed = True
                if self._conn is not None and not self._conn.closed:
                    self._conn.close()
                self._conn = None

    def _tick(self, cur: Any) -> None:
        with self._mutex:
            current = self._current
        if current is not None:
            self._check_blocking(cur, *current)
        self._check_deadlocks(cur)
        self._check_replication(cur)

    def _check_blocking(self, cur: Any, seq: int, statement: Statement, context: dict[str, Any]) -> None:
        cur.execute(BLOCKED_BY_US, (self.target_pid,))
        blocked = _sessions(cur.fetchall())
        now = time.monotonic()
        new = [s for s in blocked if s["pid"] not in self._first_seen]
        for session in new:
            self._first_seen[session["pid"]] = now
        if new:
            self._emit(
                "blocking",
                message=f"{context.get('file')} statement {statement.number} (line "
                f"{statement.line}) blocks {describe_sessions(new)}",
                blocked=new,
                **context,
            )
        limit = self.settings.block_cancel_after_seconds
        if blocked and limit is not None:
            longest = max(now - self._first_seen[s["pid"]] for s in blocked)
            if longest >= limit:
                with self._mutex:
                    if self._current is not None and self._current[0] == seq and self._cancelled is None:
                        cur.execute("SELECT pg_cancel_backend(%s)", (self.target_pid,))
                        self._cancelled = {"blocked": blocked, "seconds": round(longest, 3)}
                        cancelled = True
                    else:
                        cancelled = False
                if cancelled:
                    self._emit(
                        "cancelled",
                        message=f"cancelled {context.get('file')} statement {statement.number} (line "
                        f"{statement.line}): it blocked {describe_sessions(blocked)} for "
                        f"{longest:.1f}s (limit {limit:g}s)",
                        blocked=blocked,
                        seconds=round(longest, 3),
                        **context,
                    )
        cur.execute(BLOCKING_US, (self.target_pid,))
        blockers = _sessions(cur.fetchall())
        pids = frozenset(s["pid"] for s in blockers)
        if blockers:
            self.last_blockers = blockers
        if blockers and pids != self._waiting_reported:
            self._waiting_reported = pids
            self._emit(
                "waiting",
                message=f"{context.get('file')} statement {statement.number} (line "
                f"{statement.line}) waits for {describe_sessions(blockers)}",
                blockers=blockers,
                **context,
            )

    def _check_deadlocks(self, cur: Any) -> None:
        cur.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        row = cur.fetchone()
        count = int(row[0] or 0) if row else 0
        if self._deadlocks is not None and count > self._deadlocks:
            self._emit(
                "deadlock",
                message=f"{count - self._deadlocks} deadlock(s) in the database while migrating "
                f"(pg_stat_database.deadlocks {self._deadlocks} -> {count})",
                count=count - self._deadlocks,
                total=count,
            )
        self._deadlocks = count

    def _check_replication(self, cur: Any) -> None:
        cur.execute(REPLICATION_LAG)
        lag, replicas = cur.fetchone()
        lag = float(lag or 0.0)
        self.max_replication_lag = max(self.max_replication_lag, lag)
        limit = self.settings.max_replication_lag_seconds
        now = time.monotonic()
        if limit is not None and lag > limit and now - self._lag_reported >= 30:
            self._lag_reported = now
            self._emit(
                "replication_lag",
                message=f"replication lag {lag:.1f}s is above {limit:g}s ({replicas} replica(s))",
                seconds=lag,
                replicas=replicas,
            )
