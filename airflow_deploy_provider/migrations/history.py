"""The history table in the target database (default name ``deploy_schema_history``).

One row per run of a script (an attempt that is resumed keeps its row):

==================  ===========================================================================
column              meaning
==================  ===========================================================================
id                  bigserial; the order rows were created in
version             the migration's version
direction           ``up`` (a ``V`` file) or ``down`` (a ``U`` file)
description         from the file name (``add user email index``)
script              the file name
checksum            sha256 of the normalised file
phase               ``expand`` or ``contract``
status              ``running``, ``applied``, ``failed`` or ``reverted``
last_statement      number of the last statement completed (1-based; 0: none)
statements_total    statements in the script
duration_seconds    execution time, summed over resumed attempts
installed_by        who ran it (``who``, else the database user)
airflow_run         the Airflow run (``run``) of the latest attempt
started_at          first attempt's start
finished_at         when it completed (applied/reverted)
error               the last error (``failed``)
repairs             JSON list of checksum repairs: ``{at, by, run, from, to}``
==================  ===========================================================================

The state of a version is its latest ``up`` row: ``applied``; ``reverted`` (pending again; re-applying
adds a new row); ``running`` (a worker died: resumed from ``last_statement``) or ``failed`` (resumed the
same way). A revert adds a ``down`` row (``running`` then ``reverted``, or ``failed``) and marks the up row
``reverted`` in the same transaction as the down file's last statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATUSES = ("running", "applied", "failed", "reverted")

COLUMNS = (
    "id",
    "version",
    "direction",
    "description",
    "script",
    "checksum",
    "phase",
    "status",
    "last_statement",
    "statements_total",
    "duration_seconds",
    "installed_by",
    "airflow_run",
    "started_at",
    "finished_at",
    "error",
    "repairs",
)


@dataclass(frozen=True)
class HistoryRow:
    """One row of the history table."""

    id: int
    version: int
    direction: str
    description: str
    script: str
    checksum: str
    phase: str
    status: str
    last_statement: int
    statements_total: int
    duration_seconds: float | None
    installed_by: str
    airflow_run: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    repairs: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in COLUMNS}
        for key in ("started_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


class HistoryTable:
    """SQL of the history table ``name`` (``table`` or ``schema.table``); methods take a cursor."""

    def __init__(self, name: str) -> None:
        from psycopg2 import sql  # imported here: loading and planning files does not need the driver

        self.sql = sql
        self.name = name
        self.parts = tuple(p.strip('"') for p in name.split("."))
        if not 1 <= len(self.parts) <= 2 or not all(self.parts):
            raise ValueError(f"history table {name!r}: expected 'table' or 'schema.table'")
        self.ident = sql.Identifier(*self.parts)

    def qualified(self, schema: str) -> HistoryTable:
        """This table in ``schema`` when it has none (so a migration's ``SET search_path`` cannot move it)."""
        return self if len(self.parts) == 2 else HistoryTable(f"{schema}.{self.parts[0]}")

    def exists(self, cur: Any) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (".".join(f'"{p}"' for p in self.parts),))
        return bool(cur.fetchone()[0])

    def create(self, cur: Any) -> None:
        index = self.sql.Identifier(f"{self.parts[-1]}_live")
        cur.execute(
            self.sql.SQL("""
            CREATE TABLE IF NOT EXISTS {t} (
                id bigserial PRIMARY KEY,
                version integer NOT NULL,
                direction text NOT NULL DEFAULT 'up' CHECK (direction IN ('up', 'down')),
                description text NOT NULL,
                script text NOT NULL,
                checksum text NOT NULL,
                phase text NOT NULL CHECK (phase IN ('expand', 'contract')),
                status text NOT NULL CHECK (status IN ('running', 'applied', 'failed', 'reverted')),
                last_statement integer NOT NULL DEFAULT 0,
                statements_total integer NOT NULL,
                duration_seconds double precision NOT NULL DEFAULT 0,
                installed_by text NOT NULL DEFAULT '',
                airflow_run text NOT NULL DEFAULT '',
                started_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                error text,
                repairs jsonb NOT NULL DEFAULT '[]'
            )""").format(t=self.ident)
        )
        # At most one live (not reverted) row per version and direction: a retry resumes it.
        cur.execute(
            self.sql.SQL(
                "CREATE UNIQUE INDEX IF NOT EXISTS {i} ON {t} (version, direction) "
                "WHERE status IN ('running', 'applied', 'failed')"
            ).format(i=index, t=self.ident)
        )

    def rows(self, cur: Any) -> list[HistoryRow]:
        cur.execute(
            self.sql.SQL("SELECT {c} FROM {t} ORDER BY id").format(
                c=self.sql.SQL(", ").join(map(self.sql.Identifier, COLUMNS)), t=self.ident
            )
        )
        return [HistoryRow(*row) for row in cur.fetchall()]

    def insert(
        self,
        cur: Any,
        *,
        version: int,
        direction: str,
        description: str,
        script: str,
        checksum: str,
        phase: str,
        total: int,
        who: str,
        run: str,
    ) -> int:
        cur.execute(
            self.sql.SQL(
                "INSERT INTO {t} (version, direction, description, script, checksum, phase, status, "
                "statements_total, installed_by, airflow_run) VALUES (%s, %s, %s, %s, %s, %s, 'running', %s, "
                "COALESCE(NULLIF(%s, ''), current_user), %s) RETURNING id"
            ).format(t=self.ident),
            (version, direction, description, script, checksum, phase, total, who, run),
        )
        return cur.fetchone()[0]

    def restart(self, cur: Any, row_id: int, *, checksum: str, total: int, run: str) -> None:
        """A resumed row is ``running`` again (the checksum may change only when nothing had completed)."""
        cur.execute(
            self.sql.SQL(
                "UPDATE {t} SET status = 'running', error = NULL, checksum = %s, statements_total = %s, "
                "airflow_run = %s WHERE id = %s"
            ).format(t=self.ident),
            (checksum, total, run, row_id),
        )

    def progress(
        self, cur: Any, row_id: int, *, last_statement: int, seconds: float, final_status: str | None
    ) -> None:
        cur.execute(
            self.sql.SQL(
                "UPDATE {t} SET last_statement = %s, duration_seconds = duration_seconds + %s, "
                "status = COALESCE(%s, status), finished_at = CASE WHEN %s IS NULL THEN finished_at ELSE "
                "now() END WHERE id = %s"
            ).format(t=self.ident),
            (last_statement, seconds, final_status, final_status, row_id),
        )

    def mark_reverted(self, cur: Any, row_id: int) -> None:
        cur.execute(
            self.sql.SQL("UPDATE {t} SET status = 'reverted' WHERE id = %s").format(t=self.ident), (row_id,)
        )

    def fail(self, cur: Any, row_id: int, *, error: str, seconds: float) -> None:
        cur.execute(
            self.sql.SQL(
                "UPDATE {t} SET status = 'failed', error = %s, "
                "duration_seconds = duration_seconds + %s WHERE id = %s"
            ).format(t=self.ident),
            (error, seconds, row_id),
        )

    def repair(self, cur: Any, row_id: int, *, checksum: str, old: str, who: str, run: str) -> None:
        cur.execute(
            self.sql.SQL(
                "UPDATE {t} SET checksum = %s, repairs = repairs || jsonb_build_array(jsonb_build_object("
                "'at', now(), 'by', COALESCE(NULLIF(%s, ''), current_user), 'run', %s, 'from', %s, 'to', "
                "%s)) WHERE id = %s"
            ).format(t=self.ident),
            (checksum, who, run, old, checksum, row_id),
        )


def current_rows(rows: list[HistoryRow], direction: str = "up") -> dict[int, HistoryRow]:
    """The latest row of each version in ``direction``."""
    latest: dict[int, HistoryRow] = {}
    for row in rows:
        if row.direction == direction:
            latest[row.version] = row
    return latest
