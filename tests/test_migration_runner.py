"""The migration runner against a real PostgreSQL (the session's ``postgres`` server; one database per
test)."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from airflow_deploy_provider.migrations import (
    BackupError,
    ChecksumMismatch,
    LintRefused,
    MigrationFailed,
    MigrationLockTimeout,
    PreflightRefused,
    RevertRefused,
    backup_database,
    load_migrations,
    restore_database,
    verify_backup,
)
from airflow_deploy_provider.migrations.connection import ConnectionParams
from tests.conftest import SERVICES
from tests.migration_helpers import (
    FAST,
    Reports,
    fast_settings,
    make_runner,
    new_db,
    start_worker,
    wait_for,
    write_migrations,
)

SPEC = SERVICES / "checkout" / "migrations" / "V1__add_user_email_index.sql"


def test_the_spec_example_runs_with_a_warning(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(
        tmp_path / "m",
        {
            "V0__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email text);\n"
            "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 100) g;"
        },
    )
    shutil.copy(SPEC, folder / SPEC.name)
    migrations = load_migrations(folder, require_down=False)
    reports = Reports()
    with make_runner(db, reports=reports) as runner:
        plan = runner.plan(migrations)
        assert plan.versions == [0, 1] and plan.ok
        assert not db.exists("deploy_schema_history") and not db.exists(
            "users"
        )  # the dry run executed nothing

        result = runner.apply(migrations)

    assert result.applied == [0, 1]
    assert db.index_valid("idx_users_email") is True
    assert any(
        "removed BEGIN (line 2) and COMMIT (line 19)" in w and "runs alone in autocommit" in w
        for w in result.warnings
    )
    assert any("removed BEGIN" in m for m in reports.messages("warning"))
    assert [(r["version"], r["status"], r["last_statement"]) for r in db.history()] == [
        (0, "applied", 2),
        (1, "applied", 2),
    ]
    assert [(t.version, t.number, t.kind) for t in result.statements] == [
        (0, 1, "ddl"),
        (0, 2, "dml"),
        (1, 1, "concurrent"),
        (1, 2, "query"),
    ]
    assert [d["version"] for d in reports.of("applied")] == [0, 1]
    assert (
        db.query(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'airflow-deploy%'"
        )
        == []
    )


def test_a_file_failing_midway_leaves_nothing_half_applied(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(
        tmp_path / "m",
        {
            "V1__broken.sql": """
        CREATE TABLE accounts (id int PRIMARY KEY);
        INSERT INTO accounts VALUES (1);
        INSERT INTO missing_table VALUES (1);
    """
        },
    )
    migrations = load_migrations(folder, require_down=False)
    reports = Reports()
    runner = make_runner(db, reports=reports)
    with pytest.raises(MigrationFailed) as info:
        runner.apply(migrations)
    message = str(info.value)
    assert (
        'V1__broken.sql: statement 3 (line 3, dml) failed after 1 attempt(s): relation "missing_table" '
        "does not exist" in message
    )
    assert "its transaction (statements 1-3) was rolled back" in message
    assert (info.value.version, info.value.statement, info.value.sqlstate) == (1, 3, "42P01")
    assert not db.exists("accounts")
    (row,) = db.history()
    assert (row["status"], row["last_statement"]) == ("failed", 0) and "missing_table" in row["error"]
    assert runner.applied() == []
    assert reports.of("failed")[0]["statement"] == 3

    # Nothing had completed, so the fixed file simply runs (its new checksum is taken).
    write_migrations(
        folder,
        {"V1__broken.sql": "CREATE TABLE accounts (id int PRIMARY KEY);\nINSERT INTO accounts VALUES (1);\n"},
    )
    fixed = load_migrations(folder, require_down=False)
    assert runner.apply(fixed).applied == [1]
    (row,) = db.history()
    assert (row["status"], row["checksum"]) == ("applied", fixed.get(1).checksum)
    assert db.query("SELECT id FROM accounts") == [(1,)]
    runner.close()


def test_two_runs_never_migrate_the_same_database_at_once(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(
        tmp_path / "m", {"V1__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(1.2);"}
    )
    migrations = load_migrations(folder, require_down=False)
    first, second = make_runner(db, run="run-a"), make_runner(db, run="run-b")
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", first.apply(migrations)))
    thread.start()
    wait_for(lambda: first.holds_lock, what="the first run to take the lock")

    attempt = second.try_lock()
    assert not attempt.acquired
    assert (attempt.holder.pid, attempt.holder.application_name) == (first.pid, "airflow-deploy:run-a")
    with pytest.raises(MigrationLockTimeout) as info:
        second.lock(0.3)
    assert f"pid {first.pid} (application_name 'airflow-deploy:run-a'" in str(info.value)
    assert "gave up after 0.3s" in str(info.value)

    thread.join(10)
    assert outcome["result"].applied == [1]
    assert not first.holds_lock
    result = second.apply(migrations)  # takes the free lock, finds nothing pending
    assert result.applied == [] and result.statements == []
    assert len(db.history()) == 1
    first.close()
    second.close()


def test_an_edited_applied_file_stops_the_run_before_anything_executes(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(tmp_path / "m", {"V1__a.sql": "CREATE TABLE a (id int);\n"})
    runner = make_runner(db)
    runner.apply(load_migrations(folder, require_down=False))
    stored = db.history()[0]["checksum"]

    # Line endings and trailing whitespace are not changes.
    (folder / "V1__a.sql").write_bytes(b"CREATE TABLE a (id int);   \r\n\r\n")
    write_migrations(folder, {"V2__b.sql": "CREATE TABLE b (id int);"})
    assert runner.apply(load_migrations(folder, require_down=False)).applied == [2]

    write_migrations(
        folder, {"V1__a.sql": "CREATE TABLE a (id bigint);\n", "V3__c.sql": "CREATE TABLE c (id int);"}
    )
    edited = load_migrations(folder, require_down=False)
    current = edited.get(1).checksum
    with pytest.raises(ChecksumMismatch) as info:
        runner.apply(edited)
    assert f"V1__a.sql was applied with checksum {stored} but the file's checksum is now {current}" in str(
        info.value
    )
    assert not db.exists("c")  # nothing executed
    with pytest.raises(ChecksumMismatch):
        runner.verify_checksums(edited)

    repaired = runner.repair(edited)
    assert [(r["file"], r["stored"], r["current"]) for r in repaired] == [("V1__a.sql", stored, current)]
    runner.verify_checksums(edited)
    (repair,) = db.history()[0]["repairs"]
    assert (repair["from"], repair["to"], repair["by"], repair["run"]) == (
        stored,
        current,
        "tester",
        "test-run",
    )
    assert runner.apply(edited).applied == [3]
    runner.close()


def test_a_failed_concurrent_index_is_dropped_and_never_reported_as_success(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(
        tmp_path / "m",
        {
            "V0__users.sql": "CREATE TABLE users (id int PRIMARY KEY, email text);\n"
            "INSERT INTO users VALUES (1, 'a@x'), (2, 'a@x'), (3, 'b@x');",
            "V1__unique_email.sql": "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);",
        },
    )
    migrations = load_migrations(folder, require_down=False)
    reports = Reports()
    runner = make_runner(db, reports=reports)
    with pytest.raises(MigrationFailed) as info:
        runner.apply(migrations)
    message = str(info.value)
    assert "V1__unique_email.sql: statement 1 (line 1, concurrent) failed after 2 attempt(s)" in message
    assert "could not create unique index" in message and "Key (email)=(a@x) is duplicated" in message
    assert "the INVALID index users_email_key it left was dropped" in message
    assert db.index_valid("users_email_key") is None  # no INVALID index left behind
    dropped = [d for d in reports.of("invalid_index") if d["when"] == "after"]
    assert len(dropped) == 2 and all(d["index"] == "users_email_key" for d in dropped)
    assert [(r["version"], r["status"]) for r in db.history()] == [(0, "applied"), (1, "failed")]
    assert [r.version for r in runner.applied()] == [0]

    db.query("DELETE FROM users WHERE id = 2")
    result = runner.apply(migrations)
    assert result.applied == [1] and result.resumed == {1: 1}
    assert db.index_valid("users_email_key") is True
    runner.close()


def _hold_lock(db, table: str, release: threading.Event) -> threading.Thread:
    """Another application's transaction holding ACCESS EXCLUSIVE on ``table`` until ``release`` is set."""
    locked = threading.Event()

    def hold() -> None:
        conn = db.connect(autocommit=False, application_name="blocking-app")
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(10)
        conn.commit()
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(5)
    return thread


def test_lock_timeouts_are_retried_with_backoff(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(tmp_path / "m", {"V0__t.sql": "CREATE TABLE t (id int);"})
    runner = make_runner(db, fast_settings(max_retries=2, backoff_max_seconds=0.2))
    runner.apply(load_migrations(folder, require_down=False))
    write_migrations(
        folder, {"V1__add_c.sql": "ALTER TABLE t ADD COLUMN c int;\nINSERT INTO t VALUES (1, 1);"}
    )
    migrations = load_migrations(folder, require_down=False)

    # A blocker that outlasts the retries (its transaction stays open, for less than the pre-flight's 5 s
    # idle-in-transaction limit): the run fails clearly and changes nothing.
    release = threading.Event()
    blocker = _hold_lock(db, "t", release)
    blocker_pid = db.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'blocking-app'")[0][0]
    with pytest.raises(MigrationFailed) as info:
        runner.apply(migrations)
    release.set()
    message = str(info.value)
    assert "V1__add_c.sql: statement 1 (line 1, ddl) failed after 3 attempt(s)" in message
    assert "canceling statement due to lock timeout [SQLSTATE 55P03]" in message
    assert f"it waited for pid {blocker_pid} (blocking-app" in message
    assert "c" not in db.columns("t")
    assert db.history()[-1]["status"] == "failed"
    blocker.join()

    # A blocker that goes away within the retries: the run succeeds.
    reports = Reports()
    runner = make_runner(db, fast_settings(max_retries=6), reports=reports)
    release = threading.Event()
    blocker = _hold_lock(db, "t", release)
    threading.Timer(0.7, release.set).start()
    result = runner.apply(migrations)
    blocker.join()
    assert result.applied == [1] and result.retries >= 1
    assert "c" in db.columns("t") and db.query("SELECT c FROM t") == [(1,)]
    retry = reports.of("retry")[0]
    assert retry["reason"] == "55P03" and "retrying the transaction in" in retry["message"]
    assert any("blocking-app" in m for m in reports.messages("waiting"))
    runner.close()


def test_the_watchdog_cancels_a_statement_that_blocks_others(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(
        tmp_path / "m", {"V0__t.sql": "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);"}
    )
    reports = Reports()
    runner = make_runner(
        db, fast_settings(block_cancel_after_seconds=0.3, max_retries=1), reports=reports, run="watchdog-run"
    )
    runner.apply(load_migrations(folder, require_down=False))
    write_migrations(
        folder, {"V1__hold.sql": "LOCK TABLE t IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(1.5);"}
    )
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("result", runner.apply(load_migrations(folder, require_down=False)))
    )
    thread.start()
    wait_for(
        lambda: db.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'airflow-deploy:watchdog-run' "
            "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
        ),
        what="the migration to run",
    )

    reader = db.connect(application_name="app-reader")
    reader_pid = reader.get_backend_pid()
    started = time.monotonic()
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM t")  # blocked by the migration's lock until the watchdog cancels it
        assert cur.fetchone() == (1,)
    waited = time.monotonic() - started
    reader.close()
    thread.join(10)

    assert waited < 1.2  # far less than the 1.5 s the migration holds the lock
    (cancelled,) = reports.of("cancelled")
    assert [s["pid"] for s in cancelled["blocked"]] == [reader_pid]
    assert cancelled["file"] == "V1__hold.sql" and cancelled["statement"] == 2
    assert f"it blocked pid {reader_pid} (app-reader" in cancelled["message"]
    assert any(reader_pid in [s["pid"] for s in d["blocked"]] for d in reports.of("blocking"))
    retry = [d for d in reports.of("retry") if d["file"] == "V1__hold.sql"]
    assert retry and "was cancelled by the watchdog: it blocked pid" in retry[0]["message"]
    assert outcome["result"].applied == [1]  # the retry ran once the reader was served
    runner.close()


def test_preflight_refuses_when_an_idle_transaction_holds_a_lock_on_a_target_table(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(tmp_path / "m", {"V0__users.sql": "CREATE TABLE users (id int);"})
    runner = make_runner(db, fast_settings(idle_in_transaction_seconds=0))
    runner.apply(load_migrations(folder, require_down=False))
    write_migrations(folder, {"V1__nickname.sql": "ALTER TABLE users ADD COLUMN nickname text;"})
    migrations = load_migrations(folder, require_down=False)

    holder = db.connect(autocommit=False, application_name="forgetful-app")
    with holder.cursor() as cur:
        cur.execute("SELECT * FROM users")  # and then the application forgets to commit
    with pytest.raises(PreflightRefused) as info:
        runner.apply(migrations)
    message = str(info.value)
    assert (
        f"pid {holder.get_backend_pid()} (forgetful-app, user postgres, state idle in transaction)" in message
    )
    assert "holds AccessShareLock on users" in message and "'SELECT * FROM users'" in message
    (session,) = info.value.report.sessions
    assert session["pid"] == holder.get_backend_pid()
    assert "nickname" not in db.columns("users")
    assert [r["version"] for r in db.history()] == [0]

    holder.commit()
    holder.close()

    # A long-running (active) transaction holding a lock on the table is refused too.
    started = threading.Event()

    def long_transaction() -> None:
        conn = db.connect(autocommit=False, application_name="report-job")
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
            started.set()
            cur.execute("SELECT pg_sleep(1)")
        conn.commit()
        conn.close()

    thread = threading.Thread(target=long_transaction)
    thread.start()
    started.wait(5)
    time.sleep(0.4)
    with pytest.raises(
        PreflightRefused,
        match=r"\(report-job, user postgres, state active\) is in a transaction "
        r"running for \d",
    ):
        make_runner(db, fast_settings(long_running_seconds=0.3)).apply(migrations)
    thread.join()
    assert runner.apply(migrations).applied == [1]
    runner.close()


def test_down_migrations_run_in_reverse_order_and_refuse_contract_and_irreversible(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(
        tmp_path / "m",
        {
            "V1__a.sql": "CREATE TABLE a (id int PRIMARY KEY);",
            "U1__a.sql": "DROP TABLE a;",
            "V2__b.sql": "CREATE TABLE b (id int, a_id int REFERENCES a (id));",
            "U2__b.sql": "DROP TABLE b;",
        },
    )
    migrations = load_migrations(folder, require_down=True)
    reports = Reports()
    runner = make_runner(db, reports=reports)
    runner.apply(migrations)

    with pytest.raises(
        RevertRefused, match="reverting V1 would leave later applied migration\\(s\\) V2 in place"
    ):
        runner.revert(migrations, [1])
    result = runner.revert(migrations, [1, 2])  # U2 must run first: b references a
    assert result.reverted == [2, 1]
    assert [d["version"] for d in reports.of("reverted")] == [2, 1]
    assert not db.exists("a") and not db.exists("b")
    assert [(r["version"], r["direction"], r["status"]) for r in db.history()] == [
        (1, "up", "reverted"),
        (2, "up", "reverted"),
        (2, "down", "reverted"),
        (1, "down", "reverted"),
    ]
    assert runner.applied() == []

    write_migrations(
        folder,
        {
            "V3__c.sql": "-- phase: contract\nCREATE TABLE c (id int);",
            "U3__c.sql": "DROP TABLE c;",
            "V4__d.sql": "-- irreversible: a one-way data fix\nCREATE TABLE d (id int);",
        },
    )
    migrations = load_migrations(folder, require_down=True)
    assert runner.apply(migrations).applied == [1, 2, 3, 4]  # reverted versions are pending again
    with pytest.raises(RevertRefused) as info:
        runner.revert(migrations, [4])
    assert (
        "V4__d.sql has no down file (U4__<description>.sql): declared irreversible: a one-way data fix"
        in str(info.value)
    )
    with pytest.raises(RevertRefused) as info:
        runner.revert(migrations, [3, 4])
    assert "V3__c.sql is a contract migration: contract migrations are not reverted" in str(info.value)
    assert db.exists("c") and db.exists("d")
    runner.close()


def test_backup_verification_and_restore(postgres, tmp_path):
    db = new_db(postgres)
    db.query(
        "CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders VALUES (1, 9.5), (2, 3)"
    )
    # Trust authentication ignores the password; it proves the password stays off the command line.
    params = ConnectionParams(
        host="127.0.0.1", port=db.port, user="postgres", password="s3cret-pw", dbname=db.name
    )
    result = backup_database(params, tmp_path / "backups")

    assert result.path.is_file() and result.path.parent == tmp_path / "backups"
    assert result.path.name.startswith(f"{db.name}_") and result.path.name.endswith("Z.dump")
    assert result.verified and result.toc_entries >= 2 and result.size_bytes == result.path.stat().st_size > 0
    assert "s3cret-pw" not in " ".join(result.command) and "s3cret-pw" not in repr(params)
    assert result.to_dict()["location"] == str(result.path)
    assert verify_backup(result.path) == result.toc_entries

    broken = tmp_path / "broken.dump"
    broken.write_bytes(b"not a dump")
    with pytest.raises(BackupError, match="not readable by pg_restore"):
        verify_backup(broken)

    db.query("DROP TABLE orders")
    restored = restore_database(params, result.path)
    assert "s3cret-pw" not in " ".join(restored.command)
    assert db.query("SELECT id, total FROM orders ORDER BY id") == [(1, 9.5), (2, 3)]


def test_breaking_changes_are_refused_in_expand_and_allowed_in_contract(postgres, tmp_path):
    db = new_db(postgres)
    folder = write_migrations(tmp_path / "m", {"V0__users.sql": "CREATE TABLE users (id int, legacy text);"})
    runner = make_runner(db)
    runner.apply(load_migrations(folder, require_down=False))

    write_migrations(folder, {"V1__drop_legacy.sql": "-- cleanup\nALTER TABLE users DROP COLUMN legacy;"})
    with pytest.raises(LintRefused) as info:
        runner.apply(load_migrations(folder, require_down=False))
    assert "breaking changes are only allowed in contract migrations" in str(info.value)
    (finding,) = info.value.findings
    assert (finding.file, finding.line, finding.category) == ("V1__drop_legacy.sql", 2, "breaking")
    assert finding.rule in ("ban-drop-column", "drop-column")
    assert "legacy" in db.columns("users") and [r["version"] for r in db.history()] == [0]

    write_migrations(
        folder, {"V1__drop_legacy.sql": "-- phase: contract\nALTER TABLE users DROP COLUMN legacy;"}
    )
    migrations = load_migrations(folder, require_down=False)
    assert runner.apply(migrations, phase="expand").applied == []  # contract migrations wait for their phase
    result = runner.apply(migrations, phase="contract")
    assert result.applied == [1] and any(f.category == "breaking" for f in result.lint)
    assert "legacy" not in db.columns("users")
    runner.close()


WORKER_SETTINGS = {**FAST, "lock_deadline_seconds": 10.0}


def test_a_killed_worker_is_resumed_without_rerunning_completed_statements(postgres, tmp_path):
    db = new_db(postgres)
    db.query("CREATE TABLE test_control (sleep_seconds float8); INSERT INTO test_control VALUES (60)")
    folder = write_migrations(
        tmp_path / "m",
        {
            "V1__items.sql": """
        CREATE TABLE items (id int PRIMARY KEY, name text);
        INSERT INTO items VALUES (1, 'first');
        CREATE INDEX CONCURRENTLY items_name ON items (name);
        SELECT pg_sleep((SELECT sleep_seconds FROM test_control));
        INSERT INTO items VALUES (2, 'second');
    """
        },
    )
    worker = start_worker(db, folder, WORKER_SETTINGS, run="killed-run")
    try:
        wait_for(
            lambda: (
                db.query(
                    "SELECT 1 FROM deploy_schema_history h, pg_stat_activity a WHERE h.last_statement = 3 "
                    "AND a.application_name = 'airflow-deploy:killed-run' AND a.query LIKE 'SELECT pg_sleep%'"
                )
                if db.exists("deploy_schema_history")
                else None
            ),
            timeout=15,
            what="the worker to sleep in statement 4",
        )
    finally:
        worker.kill()
        worker.wait()
    (row,) = db.history()
    assert (row["status"], row["last_statement"]) == ("running", 3)
    db.query("UPDATE test_control SET sleep_seconds = 0")

    reports = Reports()
    with make_runner(db, reports=reports, run="resume-run") as runner:
        result = runner.apply(load_migrations(folder, require_down=False))  # waits for the dead worker's lock
    assert result.applied == [1] and result.resumed == {1: 4}
    assert [t.number for t in result.statements] == [4, 5]  # CREATE TABLE and INSERT 1 would fail if re-run
    assert db.query("SELECT id, name FROM items ORDER BY id") == [(1, "first"), (2, "second")]
    (row,) = db.history()
    assert (row["status"], row["last_statement"], row["airflow_run"]) == ("applied", 5, "resume-run")
    assert (
        "resuming at statement 4 of 5 (previous attempt running, run killed-run)"
        in reports.messages("resumed")[0]
    )


def test_an_invalid_index_left_by_a_killed_build_is_dropped_before_rerunning(postgres, tmp_path):
    db = new_db(postgres)
    db.query("CREATE TABLE t (id int, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
    folder = write_migrations(tmp_path / "m", {"V1__t_v.sql": "CREATE INDEX CONCURRENTLY t_v ON t (v);"})
    # An open writing transaction makes the build wait after it has created the (INVALID) index.
    writer = db.connect(autocommit=False, application_name="slow-writer")
    with writer.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (101, 101)")
    settings = {
        **WORKER_SETTINGS,
        "idle_in_transaction_seconds": 60,
        "timeouts": {"concurrent": {"lock_timeout": 30}},
    }
    worker = start_worker(db, folder, settings, run="killed-build")
    try:
        wait_for(
            lambda: (
                db.query(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'airflow-deploy:killed-build' "
                    "AND wait_event_type = 'Lock'"
                )
                and db.index_valid("t_v") is False
            ),
            timeout=15,
            what="the build to wait with an INVALID index",
        )
    finally:
        worker.kill()
        worker.wait()
    # The dead worker's session notices its client is gone (client_connection_check_interval) and ends.
    wait_for(
        lambda: (
            not db.query(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'airflow-deploy:killed-build'"
            )
        ),
        what="the worker's session to end",
    )
    assert db.index_valid("t_v") is False
    writer.commit()
    writer.close()

    reports = Reports()
    with make_runner(db, reports=reports) as runner:
        result = runner.apply(load_migrations(folder, require_down=False))
    assert result.applied == [1] and result.resumed == {1: 1}
    (dropped,) = reports.of("invalid_index")
    assert (dropped["index"], dropped["when"], dropped["action"]) == ("t_v", "before", "dropped")
    assert db.index_valid("t_v") is True
    assert db.history()[0]["status"] == "applied"


def test_a_deadlock_victim_group_is_retried_and_reported(postgres, tmp_path):
    db = new_db(postgres)
    db.query("CREATE TABLE a (id int PRIMARY KEY, v int); INSERT INTO a VALUES (1, 0), (2, 0)")
    folder = write_migrations(
        tmp_path / "m",
        {
            "V1__swap.sql": """
        UPDATE a SET v = 10 WHERE id = 1;
        SELECT pg_sleep(1);
        UPDATE a SET v = 10 WHERE id = 2;
    """
        },
    )
    reports = Reports()
    # Our session detects the deadlock first (100 ms against the other's 10 s): the migration is the victim.
    runner = make_runner(db, reports=reports, run="deadlock-run", options="-c deadlock_timeout=100ms")
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("result", runner.apply(load_migrations(folder, require_down=False)))
    )
    thread.start()
    wait_for(
        lambda: db.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'airflow-deploy:deadlock-run' "
            "AND query LIKE 'SELECT pg_sleep%'"
        ),
        what="the migration to hold row 1",
    )
    other = db.connect(autocommit=False, application_name="other-app")
    with other.cursor() as cur:
        cur.execute("SET deadlock_timeout = '10s'")
        cur.execute("UPDATE a SET v = 20 WHERE id = 2")
        cur.execute("UPDATE a SET v = 20 WHERE id = 1")  # waits for the migration, which then waits for us
    other.commit()
    other.close()
    thread.join(10)

    result = outcome["result"]
    assert result.applied == [1] and result.retries == 1
    (deadlock,) = [d for d in reports.of("deadlock") if d.get("file") == "V1__swap.sql"]
    assert deadlock["statement"] == 3 and "deadlock victim" in deadlock["message"]
    assert reports.of("retry")[0]["reason"] == "40P01"
    assert db.query("SELECT id, v FROM a ORDER BY id") == [(1, 10), (2, 10)]  # the retried group ran whole
    runner.close()


def test_a_custom_history_table_and_a_file_changing_search_path(postgres, tmp_path):
    db = new_db(postgres)
    db.query("CREATE SCHEMA audit; CREATE SCHEMA app")
    folder = write_migrations(
        tmp_path / "m",
        {
            "V1__app.sql": "SET search_path = app;\nCREATE TABLE things (id int);",
            "V2__more.sql": "CREATE TABLE more_things (id int);",
        },
    )
    migrations = load_migrations(folder, require_down=False)
    custom = make_runner(db, fast_settings(history_table="audit.schema_log"))
    default = make_runner(db)
    assert custom.lock_key != default.lock_key  # each history table has its own lock
    assert custom.apply(migrations).applied == [1, 2]
    assert db.exists("app.things") and db.exists("public.more_things")  # the SET did not leak into V2
    assert db.query("SELECT version, status FROM audit.schema_log ORDER BY id") == [
        (1, "applied"),
        (2, "applied"),
    ]
    assert not db.exists("deploy_schema_history")
    assert [r.version for r in custom.applied()] == [1, 2]
    custom.close()
    default.close()
