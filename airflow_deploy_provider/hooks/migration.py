"""The target database of a service's migrations, reached through an Airflow connection (postgres type)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.hook import BaseHook

from airflow_deploy_provider.migrations import (
    BackupResult,
    ConnectionParams,
    MigrationSettings,
    RestoreResult,
    backup_database,
    restore_database,
)

if TYPE_CHECKING:
    from airflow_deploy_provider.migrations import MigrationRunner


def default_backup_folder(service: str, environment: str) -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "deploy-backups" / service / environment


class PostgresMigrationHook(BaseHook):
    """
    Runs the migration engine, ``pg_dump`` backups and restores against the database of an Airflow
    connection (``schema`` is the database name; the password travels to libpq tools in ``PGPASSWORD`` only).

    :param postgres_conn_id: the connection of the target database.
    """

    # Connections of the ``postgres`` type (the postgres provider's form, when installed); not registered as
    # a connection type of its own.
    conn_name_attr = "postgres_conn_id"
    default_conn_name = "postgres_default"
    hook_name = "Deployment migrations (PostgreSQL)"

    def __init__(self, postgres_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.postgres_conn_id = postgres_conn_id
        self._params: ConnectionParams | None = None

    def params(self) -> ConnectionParams:
        """The connection's parameters, looked up once per hook."""
        if self._params is None:
            self._params = ConnectionParams.from_airflow_connection(self.get_connection(self.postgres_conn_id))
        return self._params

    @property
    def database(self) -> str:
        return self.params().dbname

    def runner(self, settings: dict[str, Any] | None = None, *, report: Any = None, who: str = "",
               run: str = "") -> MigrationRunner:
        """A migration runner on this database (a context manager; it holds its own sessions)."""
        from airflow_deploy_provider.migrations import MigrationRunner

        return MigrationRunner(self.params().connector(), MigrationSettings.from_dict(settings or {}), report=report,
                               who=who, run=run)

    def backup(self, folder: Path) -> BackupResult:
        """``pg_dump -Fc`` into ``folder``, verified with ``pg_restore --list``."""
        folder.mkdir(parents=True, exist_ok=True)
        return backup_database(self.params(), folder)

    def restore(self, path: Path) -> RestoreResult:
        return restore_database(self.params(), path)
