"""Tables of the deployment ledger and their versioned creation.

The schema is created on first use and upgraded in place: each entry of :data:`MIGRATIONS` runs once, in
order, and the version reached is stored in ``deploy_ledger_meta``. Plain SQLAlchemy Core keeps it portable
between SQLite (the default) and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

meta = Table(
    "deploy_ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(250), nullable=False),
)

deployments = Table(
    "deploy_deployments",
    metadata,
    Column("id", String(500), primary_key=True),  # "<dag_id>/<run_id>"
    Column("service", String(100), nullable=False),
    Column("environment", String(20), nullable=False),
    Column("region", String(64), nullable=False, default=""),  # "" when not regional
    Column("kind", String(20), nullable=False),  # deploy | hotfix | rollback | rollout
    Column("version", String(128), nullable=False),
    Column("image", String(500)),
    Column("previous_version", String(128)),
    Column("commit_sha", String(40)),
    Column("commit_time", DateTime(timezone=True)),
    Column("branch", String(250)),
    Column("author", String(250)),
    Column("trigger", String(20)),  # manual | webhook | schedule | asset | alert | orchestrator
    Column("triggered_by", String(250)),
    Column("reason", Text),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("parent_id", String(500)),
    Column("config_fingerprint", String(64)),
    Column("status", String(20), nullable=False),  # running | succeeded | rolled_back | failed
    Column("outcome_reason", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_deploy_deployments_lookup", "service", "environment", "region", "status", "finished_at"),
)

events = Table(
    "deploy_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", String(500), ForeignKey("deploy_deployments.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(30), nullable=False),  # phase | gate | approval | traffic | rollback | checklist | ...
    Column("phase", String(100)),
    Column("task_id", String(250)),
    Column("message", Text),
    Column("data", Text),  # JSON
    Index("ix_deploy_events_deployment", "deployment_id", "at"),
)

migration_runs = Table(
    "deploy_migration_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", String(500)),
    Column("service", String(100), nullable=False),
    Column("environment", String(20), nullable=False),
    Column("database", String(250), nullable=False),
    Column("version", String(50), nullable=False),
    Column("description", String(250)),
    Column("direction", String(10), nullable=False),  # up | down
    Column("phase", String(20)),  # expand | contract
    Column("checksum", String(64)),
    Column("status", String(20), nullable=False),  # running | applied | failed | rolled_back
    Column("statements_done", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_deploy_migration_runs_lookup", "service", "environment", "database", "version"),
)


def _v1(conn: Connection) -> None:
    for table in (deployments, events, migration_runs):
        table.create(conn, checkfirst=True)


#: Ordered schema steps; append, never edit a released one.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "deployments, events and migration runs", _v1),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def upgrade(engine: Engine) -> int:
    """Bring the ledger schema to :data:`SCHEMA_VERSION`; safe to call concurrently and repeatedly."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(3):
        try:
            return _upgrade(engine)
        except DBAPIError:
            # Two processes creating the schema at once: one loses with "already exists"; retry sees it done.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _upgrade(engine: Engine) -> int:
    with engine.begin() as conn:
        meta.create(conn, checkfirst=True)
        current = _version(conn)
        for version, _, step in MIGRATIONS:
            if version > current:
                step(conn)
                if current == 0 and version == 1:
                    conn.execute(meta.insert().values(key="schema_version", value=str(version)))
                else:
                    conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))
                current = version
        return current


def _version(conn: Connection) -> int:
    if not inspect(conn).has_table(meta.name):
        return 0
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else 0
