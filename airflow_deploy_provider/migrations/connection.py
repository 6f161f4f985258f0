"""Connection parameters of the target database, shared by the runner (psycopg2) and the backup (libpq
environment for ``pg_dump``/``pg_restore``).

The engine never reads Airflow connections itself: the operator builds :class:`ConnectionParams` from its
connection (:meth:`ConnectionParams.from_airflow_connection`, duck-typed: ``host``, ``port``, ``login``,
``password``, ``schema`` and ``extra_dejson`` like ``airflow.models.Connection``) and passes
:meth:`ConnectionParams.connector` to :class:`~airflow_deploy_provider.migrations.runner.MigrationRunner`.
The password goes to libpq as a keyword (psycopg2) or ``PGPASSWORD`` (command line tools): never on a
command line, and ``repr`` hides it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

#: libpq keywords the engine passes on (connection extras), and their environment variables.
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
}


@dataclass(frozen=True)
class ConnectionParams:
    """Where the target database is and how to log in."""

    host: str = "localhost"
    port: int = 5432
    user: str = ""
    password: str = field(default="", repr=False)
    dbname: str = "postgres"
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> ConnectionParams:
        """From ``postgresql://user:password@host:port/db?sslmode=require`` (SQLAlchemy driver suffixes such
        as ``postgresql+psycopg2`` are accepted)."""
        parts = urlsplit(url)
        if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise ValueError(f"not a PostgreSQL URL: {parts.scheme}://...")
        query = {k: v for k, v in parse_qsl(parts.query) if k in LIBPQ_ENV}
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            dbname=unquote(parts.path.lstrip("/")) or "postgres",
            options=query,
        )

    @classmethod
    def from_airflow_connection(cls, conn: Any) -> ConnectionParams:
        """From an Airflow ``Connection`` (postgres type): ``schema`` is the database, libpq extras kept."""
        extra = getattr(conn, "extra_dejson", None) or {}
        return cls(
            host=conn.host or "localhost",
            port=int(conn.port or 5432),
            user=conn.login or "",
            password=conn.password or "",
            dbname=conn.schema or "postgres",
            options={k: str(v) for k, v in extra.items() if k in LIBPQ_ENV},
        )

    def psycopg2_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname, **self.options}
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def connector(self, **extra: Any) -> Callable[[], Any]:
        """A connection factory for :class:`~airflow_deploy_provider.migrations.runner.MigrationRunner`."""

        def connect() -> Any:
            import psycopg2

            return psycopg2.connect(**{**self.psycopg2_kwargs(), **extra})

        return connect

    def libpq_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for ``pg_dump``/``pg_restore``: ``base`` (default: none of the caller's ``PG*``
        variables, so a stray ``PGPASSWORD`` cannot leak in) plus ``PGHOST``, ``PGPORT``, ``PGUSER``,
        ``PGPASSWORD``, ``PGDATABASE`` and the libpq extras."""
        env = {k: v for k, v in (base or {}).items() if not k.startswith("PG")}
        env.update({"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": self.dbname})
        if self.user:
            env["PGUSER"] = self.user
        if self.password:
            env["PGPASSWORD"] = self.password
        for key, value in self.options.items():
            env[LIBPQ_ENV[key]] = str(value)
        return env
