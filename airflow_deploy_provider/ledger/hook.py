"""Hook that opens the deployment ledger from an Airflow connection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from airflow_deploy_provider.ledger.store import DeploymentLedger

DEFAULT_LEDGER_CONN_ID = "deploy_ledger"
SQLITE_FILE = "deploy_ledger.db"


class DeploymentLedgerHook(BaseHook):
    """
    Opens the deployment ledger (deployment history) through an Airflow connection.

    The connection may be of type ``deploy_ledger`` with a SQLAlchemy URL in ``host`` (or in the extra field
    ``sqlalchemy_url``), or an ordinary ``postgres`` or ``sqlite`` connection. When the connection does not
    exist, the ledger is a SQLite file in ``AIRFLOW_HOME``. Any other lookup error is raised: history must
    never be written silently to a different database.

    :param ledger_conn_id: connection id, default ``deploy_ledger``.
    """

    conn_name_attr = "ledger_conn_id"
    default_conn_name = DEFAULT_LEDGER_CONN_ID
    conn_type = "deploy_ledger"
    hook_name = "Deployment Ledger"

    def __init__(self, ledger_conn_id: str = DEFAULT_LEDGER_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger_conn_id = ledger_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["port", "login", "password", "schema"],
            "relabeling": {"host": "SQLAlchemy URL"},
            "placeholders": {"host": "postgresql+psycopg2://user:password@db:5432/deploy_ledger"},
        }

    def get_url(self) -> str:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.ledger_conn_id)
        except AirflowNotFoundException:
            return default_sqlite_url()
        extra = conn.extra_dejson or {}
        if extra.get("sqlalchemy_url"):
            return str(extra["sqlalchemy_url"])
        ctype = (conn.conn_type or "").lower()
        if ctype == "deploy_ledger":
            if not conn.host:
                raise ValueError(f"connection {self.ledger_conn_id!r} needs a SQLAlchemy URL in its host field")
            return conn.host
        if ctype == "sqlite":
            path = conn.host or conn.schema
            return f"sqlite:///{path}"
        if ctype in ("postgres", "postgresql"):
            from sqlalchemy.engine import URL

            return URL.create("postgresql+psycopg2", username=conn.login, password=conn.password,
                              host=conn.host, port=conn.port, database=conn.schema).render_as_string(
                hide_password=False)
        raise ValueError(f"connection {self.ledger_conn_id!r} has type {conn.conn_type!r}; the ledger needs a "
                         "deploy_ledger, postgres or sqlite connection")

    def get_ledger(self) -> DeploymentLedger:
        return DeploymentLedger.from_url(self.get_url())


def default_sqlite_url() -> str:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / SQLITE_FILE}"


def get_ledger(conn_id: str = DEFAULT_LEDGER_CONN_ID) -> DeploymentLedger:
    """The ledger behind ``conn_id`` (SQLite in ``AIRFLOW_HOME`` when the connection does not exist)."""
    return DeploymentLedgerHook(ledger_conn_id=conn_id).get_ledger()
