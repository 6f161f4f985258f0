"""Pre-flight checks, before anything executes (:func:`run_preflight`).

Refused (``PreflightReport.reasons``; the runner raises ``PreflightRefused``):

- a session holds a lock on a table the pending statements touch (tables named in the statements, and
  the tables of the indexes they drop or rebuild) and is idle in transaction for at least
  ``idle_in_transaction_seconds``, or its transaction is older than ``long_running_seconds``: our DDL would
  wait behind it and every query on the table would queue behind our DDL;
- the target is a standby (in recovery): migrations run on the primary;
- replication lag (``pg_stat_replication.replay_lag``; 0 on a primary without replicas) is above
  ``max_replication_lag_seconds``.

Warned (``warnings``): long transactions anywhere in the database when the plan builds indexes
concurrently (the build waits for them); tables the statements name that do not exist yet. Statements
whose tables cannot be read from their text (``DO`` blocks, functions) are not covered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_deploy_provider.migrations.settings import MigrationSettings

LOCK_HOLDERS = """
    SELECT a.pid, a.state, a.usename, a.application_name,
           extract(epoch FROM now() - a.xact_start)::float8,
           extract(epoch FROM now() - a.state_change)::float8,
           left(a.query, 500), l.relation::regclass::text, l.mode
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted AND l.relation = ANY(%s::oid[])
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND a.pid <> ALL(%s::int[])
    ORDER BY a.pid"""

LONG_TRANSACTIONS = """
    SELECT pid, state, usename, application_name, extract(epoch FROM now() - xact_start)::float8,
           left(query, 500)
    FROM pg_stat_activity
    WHERE datname = current_database() AND xact_start IS NOT NULL AND backend_xmin IS NOT NULL
      AND pid <> ALL(%s::int[]) AND now() - xact_start >= make_interval(secs => %s)
    ORDER BY xact_start"""


@dataclass
class PreflightReport:
    """What the pre-flight saw; ``ok`` when nothing refuses the run."""

    tables: list[str] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    in_recovery: bool = False
    replication_lag_seconds: float = 0.0
    replicas: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, ok=self.ok)

    def render(self) -> str:
        lines = [
            f"Pre-flight {'passed' if self.ok else 'refused'}: tables checked: "
            f"{', '.join(self.tables) or 'none'}"
            f"; replication lag {self.replication_lag_seconds:.1f}s ({self.replicas} replica(s))"
        ]
        lines += [f"  refused: {r}" for r in self.reasons]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _resolve(cur: Any, names: Iterable[str], *, index: bool) -> dict[str, int | None]:
    """Names -> table oids (``index``: the table of the index); ``None`` when it does not exist."""
    found: dict[str, int | None] = {}
    for name in names:
        query = (
            "SELECT indrelid::oid FROM pg_index WHERE indexrelid = to_regclass(%s)"
            if index
            else "SELECT to_regclass(%s)::oid"
        )
        try:
            cur.execute(query, (name,))
            row = cur.fetchone()
        except Exception:  # a name to_regclass cannot parse: not checked
            row = None
        found[name] = row[0] if row and row[0] else None
    return found


def run_preflight(
    cur: Any,
    *,
    tables: Iterable[str],
    indexes: Iterable[str],
    concurrent: bool,
    settings: MigrationSettings,
    own_pids: list[int],
) -> PreflightReport:
    """Check the database through ``cur`` (see the module docstring); ``own_pids``: the engine's sessions."""
    report = PreflightReport()
    by_table = _resolve(cur, dict.fromkeys(tables), index=False)
    by_index = _resolve(cur, dict.fromkeys(indexes), index=True)
    oids = sorted({oid for oid in [*by_table.values(), *by_index.values()] if oid})
    report.tables = sorted(name for name, oid in by_table.items() if oid)
    report.missing_tables = sorted(name for name, oid in by_table.items() if not oid)
    if oids:
        cur.execute(LOCK_HOLDERS, (oids, own_pids))
        holders: dict[int, dict[str, Any]] = {}
        for pid, state, user, app, xact_s, state_s, query, relation, mode in cur.fetchall():
            session = holders.setdefault(
                pid,
                {
                    "pid": pid,
                    "state": state,
                    "user": user,
                    "application_name": app,
                    "transaction_seconds": round(xact_s or 0.0, 3),
                    "state_seconds": round(state_s or 0.0, 3),
                    "query": query,
                    "locks": [],
                },
            )
            session["locks"].append(f"{mode} on {relation}")
        for session in holders.values():
            idle = (session["state"] or "").startswith("idle in transaction")
            if idle and session["state_seconds"] >= settings.idle_in_transaction_seconds:
                why = f"idle in transaction for {session['state_seconds']:.1f}s"
            elif session["transaction_seconds"] >= settings.long_running_seconds:
                why = f"in a transaction running for {session['transaction_seconds']:.1f}s"
            else:
                continue
            session["why"] = why
            report.sessions.append(session)
            report.reasons.append(
                f"pid {session['pid']} ({session['application_name'] or 'no application_name'}, user "
                f"{session['user']}, state {session['state']}) is {why} and holds "
                f"{', '.join(session['locks'])}; last query: {(session['query'] or '').strip()[:200]!r}"
            )
    cur.execute("SELECT pg_is_in_recovery()")
    report.in_recovery = bool(cur.fetchone()[0])
    if report.in_recovery:
        cur.execute("SELECT COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8")
        report.replication_lag_seconds = float(cur.fetchone()[0])
        report.reasons.append(
            f"the target database is a standby (in recovery, replay lag "
            f"{report.replication_lag_seconds:.1f}s): migrations must run on the primary"
        )
    else:
        cur.execute(
            "SELECT COALESCE(max(extract(epoch FROM replay_lag)), 0)::float8, count(*) "
            "FROM pg_stat_replication"
        )
        lag, replicas = cur.fetchone()
        report.replication_lag_seconds, report.replicas = float(lag), int(replicas)
        limit = settings.max_replication_lag_seconds
        if limit is not None and report.replication_lag_seconds > limit:
            report.reasons.append(
                f"replication lag {report.replication_lag_seconds:.1f}s is above the limit "
                f"{limit:g}s ({report.replicas} replica(s))"
            )
    if concurrent:
        cur.execute(LONG_TRANSACTIONS, (own_pids, settings.long_running_seconds))
        for pid, state, user, app, seconds, query in cur.fetchall():
            report.warnings.append(
                f"pid {pid} ({app or 'no application_name'}, user {user}, {state}) has a transaction open "
                f"for {seconds:.0f}s: concurrent index builds wait for it to end "
                f"({(query or '').strip()[:120]!r})"
            )
    return report
