"""Settings of the migration engine (:class:`MigrationSettings`), every one with a default.

Durations are seconds (floats); ``0`` means "no limit" for PostgreSQL timeouts. Timeouts are set per
statement kind (see :mod:`airflow_deploy_provider.migrations.statements`):

========================  ============  =================  ==========================================
kind                      lock_timeout  statement_timeout  what
========================  ============  =================  ==========================================
``ddl``                   5 s           15 min             CREATE/ALTER/DROP/COMMENT/GRANT/TRUNCATE/LOCK
``dml``                   5 s           10 min             INSERT/UPDATE/DELETE/MERGE/COPY
``concurrent``            5 min         none               CREATE/DROP INDEX, REINDEX ... CONCURRENTLY
``maintenance``           5 s           none               VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH
``query``                 5 s           10 min             SELECT, DO blocks, CALL, anything else
``session``               5 s           1 min              SET, RESET, SAVEPOINT
========================  ============  =================  ==========================================

A short ``lock_timeout`` is what keeps a DDL statement from queueing behind a long transaction while
every later query queues behind it; the engine retries with exponential backoff instead. Concurrent
index builds take a lock that does not block reads or writes, and wait for older transactions to end,
so they get a long lock_timeout and no statement_timeout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from airflow_deploy_provider.migrations.statements import KINDS


@dataclass(frozen=True)
class Timeouts:
    """``lock_timeout`` and ``statement_timeout`` (seconds, 0 = none) for one statement kind."""

    lock_timeout: float
    statement_timeout: float


def default_timeouts() -> dict[str, Timeouts]:
    return {
        "ddl": Timeouts(lock_timeout=5, statement_timeout=15 * 60),
        "dml": Timeouts(lock_timeout=5, statement_timeout=10 * 60),
        "concurrent": Timeouts(lock_timeout=5 * 60, statement_timeout=0),
        "maintenance": Timeouts(lock_timeout=5, statement_timeout=0),
        "query": Timeouts(lock_timeout=5, statement_timeout=10 * 60),
        "session": Timeouts(lock_timeout=5, statement_timeout=60),
    }


@dataclass(frozen=True)
class MigrationSettings:
    """How the engine runs migrations.

    :param history_table: the history table in the target database (``name`` or ``schema.name``).
    :param lock_key: the advisory lock key (bigint); ``None`` derives it from the database and history table.
    :param lock_deadline_seconds: how long ``apply``/``revert``/``repair`` wait for the lock when the caller
        did not take it.
    :param lock_poll_seconds: interval of the blocking ``lock()``'s tries.
    :param timeouts: per statement kind (missing kinds take the defaults).
    :param max_retries: retries of a statement group after a lock timeout (55P03), a deadlock (40P01), or the
        watchdog cancelling it; the whole transaction group is retried.
    :param backoff_initial_seconds: first retry delay, multiplied by ``backoff_multiplier`` each retry up to
        ``backoff_max_seconds`` (with jitter between 50% and 100%).
    :param long_running_seconds: pre-flight refuses when a session whose transaction is older than this holds
        a lock on a table the pending statements touch.
    :param idle_in_transaction_seconds: pre-flight refuses when a session idle in transaction for at least
        this long holds such a lock (0: any).
    :param max_replication_lag_seconds: pre-flight refuses above this replica lag (``None``: not checked); the
        watchdog reports it while migrating.
    :param block_cancel_after_seconds: the watchdog cancels our statement when it has blocked another session
        that long (``None``: never).
    :param retry_after_block_cancel: a statement cancelled by the watchdog is retried (counts as a retry).
    :param watchdog_interval_seconds: how often the watchdog looks.
    :param invalid_index_retries: re-runs of a failed ``CREATE INDEX CONCURRENTLY`` after dropping the INVALID
        index it left (besides lock timeout/deadlock retries).
    :param client_connection_check_seconds: ``client_connection_check_interval`` of the engine's sessions
        (PostgreSQL 14+), so a killed worker's statement stops (and the lock is released) within seconds.
    :param allow_out_of_order: allow a pending version lower than an applied version of the same phase.
    :param refuse_breaking_in_expand: refuse breaking lint findings in expand migrations.
    :param use_squawk: lint with squawk too when its binary is found (``squawk_path`` or PATH).
    :param application_name: prefix of the engine's sessions' ``application_name`` (``<prefix>:<run>``).
    """

    history_table: str = "deploy_schema_history"
    lock_key: int | None = None
    lock_deadline_seconds: float = 300.0
    lock_poll_seconds: float = 1.0
    timeouts: dict[str, Timeouts] = field(default_factory=default_timeouts)
    max_retries: int = 5
    backoff_initial_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    backoff_max_seconds: float = 30.0
    long_running_seconds: float = 60.0
    idle_in_transaction_seconds: float = 5.0
    max_replication_lag_seconds: float | None = 30.0
    block_cancel_after_seconds: float | None = 10.0
    retry_after_block_cancel: bool = True
    watchdog_interval_seconds: float = 1.0
    invalid_index_retries: int = 1
    client_connection_check_seconds: float = 5.0
    allow_out_of_order: bool = False
    refuse_breaking_in_expand: bool = True
    use_squawk: bool = True
    squawk_path: str | None = None
    application_name: str = "airflow-deploy"

    def __post_init__(self) -> None:
        defaults = default_timeouts()
        unknown = set(self.timeouts) - set(KINDS)
        if unknown:
            raise ValueError(
                f"unknown statement kinds in timeouts: {sorted(unknown)} (kinds: {', '.join(KINDS)})"
            )
        merged = {
            kind: _timeouts(self.timeouts.get(kind, default), default) for kind, default in defaults.items()
        }
        object.__setattr__(self, "timeouts", merged)
        if self.max_retries < 0 or self.invalid_index_retries < 0:
            raise ValueError("max_retries and invalid_index_retries must be >= 0")

    def timeouts_for(self, kind: str) -> Timeouts:
        return self.timeouts.get(kind, self.timeouts["query"])

    def backoff(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (1-based)."""
        return min(
            self.backoff_initial_seconds * self.backoff_multiplier ** (retry - 1), self.backoff_max_seconds
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MigrationSettings:
        """Settings from a mapping (e.g. a config file); ``timeouts`` as ``{kind: {lock_timeout: s,
        statement_timeout: s}}``. Unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown migration settings: {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> MigrationSettings:
        return dataclasses.replace(self, **changes)


def _timeouts(value: Timeouts | dict[str, float], default: Timeouts) -> Timeouts:
    """A kind's timeouts from a ``Timeouts`` or a partial mapping (missing values keep the default)."""
    if isinstance(value, Timeouts):
        return value
    unknown = set(value) - {"lock_timeout", "statement_timeout"}
    if unknown:
        raise ValueError(f"unknown timeout settings: {sorted(unknown)}")
    return Timeouts(
        lock_timeout=float(value.get("lock_timeout", default.lock_timeout)),
        statement_timeout=float(value.get("statement_timeout", default.statement_timeout)),
    )
