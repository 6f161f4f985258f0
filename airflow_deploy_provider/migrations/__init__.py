"""The database migration engine (PostgreSQL): ``V<n>__<description>.sql`` / ``U<n>__<description>.sql`` files
applied safely (lock, checksums, pre-flight, lint, per-statement timeouts and retries, resumable progress,
watchdog, concurrent index recovery), reverted, planned (dry run), and backed up.

Typical use (what ``MigrationOperator`` does)::

    from airflow_deploy_provider.migrations import (
        ConnectionParams, MigrationRunner, MigrationSettings, backup_database, load_migrations)

    params = ConnectionParams.from_airflow_connection(BaseHook.get_connection(conn_id))
    migrations = load_migrations(folder, require_down=environment == "production")
    with MigrationRunner(params.connector(), MigrationSettings(), report=log_and_ledger,
                         who="airflow", run=context["run_id"]) as runner:
        print(runner.plan(migrations, phase="expand").render())       # dry run
        if not runner.try_lock():                                      # or runner.lock(deadline_seconds)
            ...defer and retry...
        backup_database(params, backup_folder)                          # optional
        result = runner.apply(migrations, phase="expand")              # uses the lock already held
        runner.unlock()

Modules: :mod:`.files` (loading, headers, checksums), :mod:`.statements` (splitting, classification,
grouping), :mod:`.lint` (squawk + own rules), :mod:`.plan` (dry run), :mod:`.runner` (lock, apply, revert,
repair), :mod:`.preflight`, :mod:`.watchdog`, :mod:`.history` (the history table), :mod:`.settings`,
:mod:`.connection`, :mod:`.backup`, :mod:`.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_deploy_provider.migrations.backup import (
    BackupResult,
    RestoreResult,
    backup_database,
    restore_database,
    verify_backup,
)
from airflow_deploy_provider.migrations.connection import ConnectionParams
from airflow_deploy_provider.migrations.errors import (
    BackupError,
    ChecksumMismatch,
    LintRefused,
    MigrationError,
    MigrationFailed,
    MigrationFileError,
    MigrationLockTimeout,
    MigrationPlanError,
    PreflightRefused,
    RevertRefused,
    SqlSplitError,
)
from airflow_deploy_provider.migrations.files import (
    Migration,
    MigrationScript,
    MigrationSet,
    checksum,
    load_migrations,
)
from airflow_deploy_provider.migrations.history import HistoryRow
from airflow_deploy_provider.migrations.lint import LintFinding, LintReport, lint_migrations
from airflow_deploy_provider.migrations.plan import MigrationPlan, build_plan
from airflow_deploy_provider.migrations.preflight import PreflightReport
from airflow_deploy_provider.migrations.settings import MigrationSettings, Timeouts
from airflow_deploy_provider.migrations.statements import (
    Statement,
    StatementGroup,
    group_statements,
    split_statements,
)

if TYPE_CHECKING:
    from airflow_deploy_provider.migrations.runner import (
        ApplyResult,
        LockHolder,
        LockResult,
        MigrationRunner,
        RevertResult,
        StatementTiming,
    )

#: The runner needs psycopg2; it is imported on first use, so loading, linting and planning files (at DAG
#: parse time) work without the driver installed.
_RUNNER = ("ApplyResult", "LockHolder", "LockResult", "MigrationRunner", "RevertResult", "StatementTiming")


def __getattr__(name: str) -> Any:
    if name in _RUNNER:
        from airflow_deploy_provider.migrations import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApplyResult",
    "BackupError",
    "BackupResult",
    "ChecksumMismatch",
    "ConnectionParams",
    "HistoryRow",
    "LintFinding",
    "LintRefused",
    "LintReport",
    "LockHolder",
    "LockResult",
    "Migration",
    "MigrationError",
    "MigrationFailed",
    "MigrationFileError",
    "MigrationLockTimeout",
    "MigrationPlan",
    "MigrationPlanError",
    "MigrationRunner",
    "MigrationScript",
    "MigrationSet",
    "MigrationSettings",
    "PreflightRefused",
    "PreflightReport",
    "RestoreResult",
    "RevertRefused",
    "RevertResult",
    "SqlSplitError",
    "Statement",
    "StatementGroup",
    "StatementTiming",
    "Timeouts",
    "backup_database",
    "build_plan",
    "checksum",
    "group_statements",
    "lint_migrations",
    "load_migrations",
    "restore_database",
    "split_statements",
    "verify_backup",
]
