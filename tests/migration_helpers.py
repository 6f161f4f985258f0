"""Helpers of the migration engine's tests: a fresh database per test, migration folders, fast settings, a
report collector, and a worker subprocess that can be killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from airflow_deploy_provider.migrations import ConnectionParams, MigrationRunner, MigrationSettings

REPO = Path(__file__).resolve().parent.parent


class Db:
    """One database of the test server, with small query helpers (autocommit connections)."""

    def __init__(self, postgres: Any, name: str) -> None:
        self.postgres = postgres
        self.name = name
        self.port = postgres.port

    @property
    def params(self) -> ConnectionParams:
        return ConnectionParams(host="127.0.0.1", port=self.port, user="postgres", dbname=self.name)

    def connect(self, *, autocommit: bool = True, application_name: str = "test-helper") -> Any:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=self.name,
            application_name=application_name,
        )
        conn.autocommit = autocommit
        return conn

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def exists(self, relation: str) -> bool:
        return self.query("SELECT to_regclass(%s) IS NOT NULL", (relation,))[0][0]

    def index_valid(self, name: str) -> bool | None:
        rows = self.query("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,))
        return rows[0][0] if rows else None

    def columns(self, table: str) -> list[str]:
        return [
            r[0]
            for r in self.query(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (table,),
            )
        ]

    def history(self) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT version, direction, status, last_statement, error, checksum, repairs, airflow_run "
            "FROM deploy_schema_history ORDER BY id"
        )
        keys = (
            "version",
            "direction",
            "status",
            "last_statement",
            "error",
            "checksum",
            "repairs",
            "airflow_run",
        )
        return [dict(zip(keys, row)) for row in rows]


def new_db(postgres: Any) -> Db:
    name = f"mig_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    return Db(postgres, name)


def write_migrations(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


class Reports:
    """A ``report`` callback that keeps everything."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [data for k, data in self.events if k == kind]

    def messages(self, kind: str) -> list[str]:
        return [d.get("message", "") for d in self.of(kind)]


#: Settings for tests: short timeouts and backoffs, a fast watchdog and a fast dead-client check.
FAST = {
    "lock_deadline_seconds": 5.0,
    "lock_poll_seconds": 0.05,
    "backoff_initial_seconds": 0.1,
    "backoff_multiplier": 2.0,
    "backoff_max_seconds": 0.5,
    "watchdog_interval_seconds": 0.1,
    "client_connection_check_seconds": 0.3,
    "timeouts": {
        "ddl": {"lock_timeout": 0.3},
        "dml": {"lock_timeout": 0.3},
        "concurrent": {"lock_timeout": 5},
    },
}


def fast_settings(**overrides: Any) -> MigrationSettings:
    return MigrationSettings.from_dict({**FAST, **overrides})


def make_runner(
    db: Db,
    settings: MigrationSettings | None = None,
    *,
    run: str = "test-run",
    reports: Reports | None = None,
    who: str = "tester",
    **connect: Any,
) -> MigrationRunner:
    return MigrationRunner(
        db.params.connector(**connect), settings or fast_settings(), report=reports, who=who, run=run
    )


WORKER = """
import json, sys
from airflow_deploy_provider.migrations import (
    ConnectionParams, MigrationRunner, MigrationSettings, load_migrations)
port, database, folder, settings, run = sys.argv[1:]
params = ConnectionParams(host="127.0.0.1", port=int(port), user="postgres", dbname=database)
settings = MigrationSettings.from_dict(json.loads(settings))
runner = MigrationRunner(params.connector(), settings, run=run, who="worker")
runner.apply(load_migrations(folder, require_down=False))
print("finished", flush=True)
"""


def start_worker(db: Db, folder: Path, settings: dict[str, Any], run: str) -> subprocess.Popen:
    """``apply`` in a subprocess (a worker that the test can kill -9)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(db.port), db.name, str(folder), json.dumps(settings), run],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
