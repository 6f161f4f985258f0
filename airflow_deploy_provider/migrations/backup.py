"""Backup before migrations (``pg_dump -Fc``, verified with ``pg_restore --list``) and restore.

:func:`backup_database` writes ``<folder>/<database>_<UTC timestamp>.dump`` and verifies it: ``pg_restore
--list`` must exit 0 and list a non-empty table of contents. :func:`restore_database` runs ``pg_restore
--clean --if-exists --single-transaction`` into the database (all or nothing); the operator must ask for
explicit confirmation before calling it.

Connection parameters reach the tools through the libpq environment (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGDATABASE``, ``PGPASSWORD``, ``PGSSLMODE``...; see :meth:`ConnectionParams.libpq_env`): the password is
never on a command line (visible in ``ps``) nor in the returned command or error messages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from airflow_deploy_provider.migrations.connection import ConnectionParams
from airflow_deploy_provider.migrations.errors import BackupError


@dataclass(frozen=True)
class BackupResult:
    """A verified backup: where, how big, how long, and its table of contents' entry count."""

    path: Path
    database: str
    size_bytes: int
    duration_seconds: float
    verified: bool
    toc_entries: int
    created_at: datetime
    command: tuple[str, ...]

    @property
    def location(self) -> str:
        return str(self.path)

    def to_dict(self) -> dict:
        return {
            "location": self.location,
            "database": self.database,
            "size_bytes": self.size_bytes,
            "duration_seconds": self.duration_seconds,
            "verified": self.verified,
            "toc_entries": self.toc_entries,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    database: str
    duration_seconds: float
    command: tuple[str, ...]


def _binary(name: str, given: str | None) -> str:
    found = given or shutil.which(name)
    if not found:
        raise BackupError(f"{name} is not installed (PostgreSQL client tools are needed for backups)")
    return found


def _redact(text: str, params: ConnectionParams) -> str:
    return text.replace(params.password, "***") if params.password else text


def _run(
    command: list[str], params: ConnectionParams, what: str, timeout: float
) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(
            command, env=params.libpq_env(_base_env()), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{what} did not finish within {timeout:g}s") from exc
    except OSError as exc:
        raise BackupError(f"{what} could not start: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(
            f"{what} failed (exit {done.returncode}): {_redact(done.stderr.strip(), params)[-2000:]}"
        )
    return done


def _base_env() -> dict[str, str]:
    import os

    # PATH/LANG/HOME for the tools; every PG* variable comes from the connection only.
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TZ", "TMPDIR")}


def verify_backup(path: Path, *, pg_restore: str | None = None, timeout: float = 600,
                  allow_empty: bool = False) -> int:
    """``pg_restore --list``: exit 0 and a non-empty table of contents (``allow_empty``: the database had
    nothing to dump); returns the entry count."""
    binary = _binary("pg_restore", pg_restore)
    try:
        done = subprocess.run(
            [binary, "--list", str(path)], capture_output=True, text=True, timeout=timeout, env=_base_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"pg_restore --list {path.name} did not run: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(
            f"backup {path} is not readable by pg_restore (exit {done.returncode}): "
            f"{done.stderr.strip()[-1000:]}"
        )
    entries = [line for line in done.stdout.splitlines() if line.strip() and not line.startswith(";")]
    if not entries and not allow_empty:
        raise BackupError(f"backup {path} has an empty table of contents")
    return len(entries)


def _user_objects(params: ConnectionParams) -> int:
    """Relations, types and functions outside the system schemas: what an empty dump would have missed."""
    conn = params.connector()()
    try:
        with conn.cursor() as cur:
            cur.execute("""
                SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%')
                     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))""")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def backup_database(
    params: ConnectionParams,
    folder: Path | str,
    *,
    pg_dump: str | None = None,
    pg_restore: str | None = None,
    timeout: float = 3600,
) -> BackupResult:
    """Dump ``params.dbname`` to ``folder`` in custom format and verify it (raises :class:`BackupError`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", params.dbname) or "database"
    path = folder / f"{safe}_{created.strftime('%Y%m%dT%H%M%S%fZ')}.dump"
    # The database comes from PGDATABASE; no connection string (and no password) on the command line.
    command = [_binary("pg_dump", pg_dump), "--format=custom", "--no-password", f"--file={path}"]
    began = time.monotonic()
    try:
        objects = _user_objects(params)
        _run(command, params, f"pg_dump of database {params.dbname}", timeout)
        entries = verify_backup(path, pg_restore=pg_restore, timeout=timeout, allow_empty=objects == 0)
    except BackupError:
        path.unlink(missing_ok=True)  # an unverified dump must not pass for a backup
        raise
    return BackupResult(
        path=path,
        database=params.dbname,
        size_bytes=path.stat().st_size,
        duration_seconds=round(time.monotonic() - began, 3),
        verified=True,
        toc_entries=entries,
        created_at=created,
        command=tuple(command),
    )


def restore_database(
    params: ConnectionParams, path: Path | str, *, pg_restore: str | None = None, timeout: float = 3600
) -> RestoreResult:
    """Restore ``path`` into ``params.dbname``: objects in the dump are dropped and recreated, in one
    transaction (a failure leaves the database as it was). Raises :class:`BackupError`."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"backup {path} does not exist")
    command = [
        _binary("pg_restore", pg_restore),
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        f"--dbname={params.dbname}",
        str(path),
    ]
    began = time.monotonic()
    _run(command, params, f"pg_restore of {path.name} into database {params.dbname}", timeout)
    return RestoreResult(
        path=path,
        database=params.dbname,
        duration_seconds=round(time.monotonic() - began, 3),
        command=tuple(command),
    )
