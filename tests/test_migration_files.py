"""Migration files, statement splitting and classification, checksums, lint and the offline plan (no
database)."""

from __future__ import annotations

import pytest

from airflow_deploy_provider.migrations import (
    HistoryRow,
    MigrationFileError,
    MigrationSettings,
    SqlSplitError,
    build_plan,
    checksum,
    group_statements,
    lint_migrations,
    load_migrations,
    split_statements,
)
from airflow_deploy_provider.migrations.lint import find_squawk
from tests.conftest import SERVICES
from tests.migration_helpers import write_migrations

SPEC_EXAMPLE = (SERVICES / "checkout" / "migrations" / "V1__add_user_email_index.sql").read_text()


# --- file names and headers ---------------------------------------------------------------------------------


def test_a_misnamed_sql_file_is_an_error_naming_it(tmp_path):
    write_migrations(
        tmp_path, {"V1__ok.sql": "SELECT 1;", "add_users.sql": "SELECT 1;", "README.md": "notes"}
    )
    with pytest.raises(MigrationFileError, match=r"add_users\.sql: not a migration file name") as info:
        load_migrations(tmp_path, require_down=False)
    assert info.value.file == "add_users.sql"


@pytest.mark.parametrize(
    "name",
    [
        "V1_single_underscore.sql",
        "v1__lowercase.sql",
        "V__no_version.sql",
        "X1__other_prefix.sql",
        "V1__.sql",
        "V1__spaces here.sql",
    ],
)
def test_names_that_do_not_match(tmp_path, name):
    write_migrations(tmp_path, {name: "SELECT 1;"})
    with pytest.raises(MigrationFileError, match="not a migration file name"):
        load_migrations(tmp_path, require_down=False)


def test_duplicate_versions_are_an_error(tmp_path):
    write_migrations(tmp_path, {"V1__first.sql": "SELECT 1;", "V01__second.sql": "SELECT 2;"})
    with pytest.raises(MigrationFileError, match=r"duplicate version 1 \(also V01__second\.sql\)"):
        load_migrations(tmp_path, require_down=False)


def test_down_file_without_up_file(tmp_path):
    write_migrations(tmp_path, {"V1__a.sql": "SELECT 1;", "U1__a.sql": "SELECT 1;", "U2__b.sql": "SELECT 1;"})
    with pytest.raises(
        MigrationFileError, match=r"U2__b\.sql: down file for version 2, which has no up file"
    ):
        load_migrations(tmp_path, require_down=False)


def test_missing_down_files_only_matter_in_production(tmp_path):
    write_migrations(
        tmp_path,
        {
            "V1__a.sql": "CREATE TABLE a (id int);",
            "U1__a.sql": "DROP TABLE a;",
            "V2__b.sql": "CREATE TABLE b (id int);",
        },
    )
    assert load_migrations(tmp_path, require_down=False).versions == [1, 2]
    with pytest.raises(MigrationFileError, match=r"V2__b\.sql: has no down file U2__<description>\.sql"):
        load_migrations(tmp_path, require_down=True)


def test_irreversible_header_replaces_the_down_file_and_needs_a_reason(tmp_path):
    write_migrations(tmp_path, {"V1__a.sql": "-- irreversible: drops the legacy audit table\nDROP TABLE a;"})
    migration = load_migrations(tmp_path, require_down=True).get(1)
    assert migration.irreversible == "drops the legacy audit table" and migration.down is None

    write_migrations(tmp_path, {"V1__a.sql": "-- irreversible:\nDROP TABLE a;"})
    with pytest.raises(MigrationFileError, match=r"V1__a\.sql: line 1: '-- irreversible:' needs a reason"):
        load_migrations(tmp_path, require_down=True)


def test_irreversible_with_a_down_file_is_contradictory(tmp_path):
    write_migrations(
        tmp_path, {"V1__a.sql": "-- irreversible: data loss\nDROP TABLE a;", "U1__a.sql": "SELECT 1;"}
    )
    with pytest.raises(
        MigrationFileError, match="declares itself irreversible but has a down file U1__a.sql"
    ):
        load_migrations(tmp_path, require_down=False)


def test_phase_header(tmp_path):
    write_migrations(
        tmp_path,
        {
            "V1__a.sql": "-- adds things\n-- Phase: Contract\n\nALTER TABLE a DROP COLUMN b;",
            "V2__b.sql": "SELECT 1;\n-- phase: contract (not a header: after the first statement)",
        },
    )
    loaded = load_migrations(tmp_path, require_down=False)
    assert loaded.get(1).phase == "contract"
    assert loaded.get(2).phase == "expand"
    write_migrations(tmp_path, {"V3__c.sql": "-- phase: cleanup\nSELECT 1;"})
    with pytest.raises(
        MigrationFileError, match=r"V3__c\.sql: line 1: phase 'cleanup' is not one of expand, contract"
    ):
        load_migrations(tmp_path, require_down=False)


def test_every_problem_of_a_folder_is_reported(tmp_path):
    write_migrations(
        tmp_path, {"bad.sql": "SELECT 1;", "V1__a.sql": "SELECT 1;", "V2__b.sql": "SELECT 'open;"}
    )
    with pytest.raises(MigrationFileError) as info:
        load_migrations(tmp_path, require_down=True)
    message = str(info.value)
    assert "bad.sql: not a migration file name" in message
    assert "V1__a.sql: has no down file" in message
    assert "V2__b.sql: unterminated string starting at line 1" in message


def test_missing_folder(tmp_path):
    with pytest.raises(MigrationFileError, match="does not exist"):
        load_migrations(tmp_path / "nope", require_down=False)


def test_explicit_transaction_statements_are_removed_with_a_warning(tmp_path):
    write_migrations(tmp_path, {"V1__add_user_email_index.sql": SPEC_EXAMPLE})
    migration = load_migrations(tmp_path, require_down=False).get(1)
    assert [s.keywords[0] for s in migration.up.removed] == ["BEGIN", "COMMIT"]
    assert [s.kind for s in migration.up.statements] == ["concurrent", "query"]
    assert [s.number for s in migration.up.statements] == [1, 2]
    (warning,) = migration.warnings
    assert "removed BEGIN (line 2) and COMMIT (line 19)" in warning
    assert (
        "statement 1 (lines 5-6) runs alone in autocommit because CREATE INDEX CONCURRENTLY cannot run "
        "inside a transaction block"
    ) in warning
    assert "statement 2 (lines 9-17) runs in one transaction" in warning


@pytest.mark.parametrize(
    "statement", ["ROLLBACK;", "ABORT;", "PREPARE TRANSACTION 'x';", "COMMIT PREPARED 'x';", "DISCARD ALL;"]
)
def test_rollback_and_two_phase_commit_are_refused(tmp_path, statement):
    write_migrations(tmp_path, {"V1__a.sql": f"CREATE TABLE a (id int);\n{statement}\n"})
    with pytest.raises(MigrationFileError, match=r"V1__a\.sql: line 2: .* not supported in a migration file"):
        load_migrations(tmp_path, require_down=False)


def test_start_transaction_and_end_are_removed_too(tmp_path):
    write_migrations(
        tmp_path, {"V1__a.sql": "START TRANSACTION ISOLATION LEVEL READ COMMITTED;\nSELECT 1;\nEND;"}
    )
    migration = load_migrations(tmp_path, require_down=False).get(1)
    assert [s.sql for s in migration.up.statements] == ["SELECT 1"]
    assert "removed START (line 1) and END (line 3)" in migration.warnings[0]


def test_a_file_setting_timeouts_is_warned_about(tmp_path):
    write_migrations(tmp_path, {"V1__a.sql": "SET lock_timeout = '1min';\nALTER TABLE a ADD COLUMN b int;"})
    (warning,) = load_migrations(tmp_path, require_down=False).get(1).warnings
    assert "line 1" in warning and "is overridden" in warning


def test_checksum_ignores_line_endings_and_trailing_whitespace():
    text = "CREATE TABLE a (id int);\nSELECT 1;\n"
    assert checksum(text) == checksum("CREATE TABLE a (id int);   \r\nSELECT 1;\t\r\n\r\n")
    assert checksum(text) == checksum("\ufeff" + text)
    assert checksum(text) != checksum("CREATE TABLE a (id bigint);\nSELECT 1;\n")
    assert checksum(text) != checksum("  CREATE TABLE a (id int);\nSELECT 1;\n")  # leading whitespace counts


# --- splitting ----------------------------------------------------------------------------------------------


def test_split_the_spec_example():
    statements = split_statements(SPEC_EXAMPLE)
    assert [(s.kind, s.line, s.end_line) for s in statements] == [
        ("transaction", 2, 2),
        ("concurrent", 5, 6),
        ("query", 9, 17),
        ("transaction", 19, 19),
    ]
    assert statements[1].needs_own_transaction and statements[1].index_name == "idx_users_email"
    assert statements[1].tables == ("users",)
    assert "RAISE EXCEPTION 'Index creation failed';" in statements[2].sql
    assert statements[2].sql.endswith("END $$")


def test_split_dollar_quotes_with_tags_and_nested_bodies():
    sql = """
CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE $q$SELECT ';'$q$;
  RETURN $$a;b$$;
END;
$fn$;
DO $$ BEGIN PERFORM 1; END $$;
SELECT $1, a$b$ FROM t;
"""
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[0].sql.endswith("$fn$") and "RETURN $$a;b$$;" in statements[0].sql
    assert statements[1].sql == "DO $$ BEGIN PERFORM 1; END $$"
    assert statements[2].sql == "SELECT $1, a$b$ FROM t"  # $1 is a parameter, a$b$ an identifier
    assert [s.line for s in statements] == [2, 8, 9]


def test_split_comments_with_semicolons():
    sql = (
        "-- first; not a statement\nSELECT 1; /* a; /* nested; */ still comment; */ SELECT 2 -- tail;\n"
        ";\n-- end;"
    )
    statements = split_statements(sql)
    assert [s.sql for s in statements] == ["SELECT 1", "SELECT 2"]  # trailing comments are not part of it
    assert statements[0].line == 2


def test_split_strings_and_identifiers_with_semicolons():
    sql = (
        """INSERT INTO "odd;name" VALUES ('a;b', 'it''s;', E'back\\\\slash\\';', U&'d\\0061t;a');SELECT 2;"""
    )
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].tables == ('"odd;name"',)
    assert statements[0].sql.endswith("U&'d\\0061t;a')")
    assert statements[1].sql == "SELECT 2"


def test_split_sql_standard_function_bodies():
    sql = (
        "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql BEGIN ATOMIC "
        "SELECT CASE WHEN a > 0 THEN a END; SELECT a + b; END;\nSELECT add(1, 2);"
    )
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].sql.endswith("SELECT a + b; END")


def test_unterminated_constructs_name_their_line():
    with pytest.raises(SqlSplitError, match="unterminated dollar-quoted body \\$body\\$ starting at line 2"):
        split_statements("SELECT 1;\nDO $body$ BEGIN END;")
    with pytest.raises(SqlSplitError, match="unterminated /\\* comment starting at line 1"):
        split_statements("/* /* */ SELECT 1;")
    with pytest.raises(SqlSplitError, match="unterminated quoted identifier"):
        split_statements('SELECT "a;')


def test_a_statement_without_final_semicolon_and_empty_statements():
    assert [s.sql for s in split_statements(";;SELECT 1;;\n  SELECT 2  ")] == ["SELECT 1", "SELECT 2"]


# --- classification -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "alone"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", True),
        ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", True),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", True),
        ("REINDEX INDEX CONCURRENTLY i", True),
        ("REINDEX (VERBOSE) TABLE CONCURRENTLY t", True),
        ("REINDEX SCHEMA public", True),
        ("REINDEX TABLE t", False),
        ("ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", True),
        ("ALTER TABLE p DETACH PARTITION p1", False),
        ("VACUUM (ANALYZE) t", True),
        ("VACUUM", True),
        ("CREATE DATABASE x", True),
        ("DROP DATABASE x", True),
        ("CREATE TABLESPACE x LOCATION '/tmp'", True),
        ("DROP TABLESPACE x", True),
        ("ALTER SYSTEM SET work_mem = '8MB'", True),
        ("ALTER TYPE mood ADD VALUE 'happy'", True),
        ("ALTER TYPE mood RENAME VALUE 'a' TO 'b'", False),
        ("CLUSTER", True),  # PostgreSQL 15: "CLUSTER cannot run inside a transaction block"
        ("CLUSTER t USING i", False),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY v", False),
        ("CREATE INDEX i ON t (a)", False),
        ("ALTER TABLE t ADD COLUMN c int", False),
        ("DO $$ BEGIN PERFORM 1; END $$", False),
    ],
)
def test_statements_postgresql_refuses_in_a_transaction_run_alone(sql, alone):
    (statement,) = split_statements(sql)
    assert statement.needs_own_transaction is alone, statement
    if alone:
        assert "transaction block" in statement.reason or "committed" in statement.reason


@pytest.mark.parametrize(
    ("sql", "kind", "tables"),
    [
        (
            "ALTER TABLE IF EXISTS ONLY app.Users ADD COLUMN x int REFERENCES accounts (id)",
            "ddl",
            ("app.users", "accounts"),
        ),
        ('CREATE INDEX ON "Mixed" (a)', "ddl", ('"Mixed"',)),
        ("INSERT INTO logs (a) SELECT 1", "dml", ("logs",)),
        ("UPDATE ONLY users SET a = 1", "dml", ("users",)),
        ("DELETE FROM users WHERE a = 1", "dml", ("users",)),
        ("WITH x AS (SELECT 1) UPDATE users SET a = 2", "dml", ("users",)),
        ("TRUNCATE TABLE a, ONLY b", "ddl", ("a", "b")),
        ("LOCK TABLE users IN ACCESS EXCLUSIVE MODE", "ddl", ("users",)),
        ("DROP TABLE IF EXISTS a, b CASCADE", "ddl", ("a", "b")),
        ("CREATE TRIGGER trg BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()", "ddl", ("users",)),
        ("COMMENT ON COLUMN users.email IS 'x'", "ddl", ("users",)),
        ("VACUUM FULL users", "maintenance", ("users",)),
        ("VACUUM (ANALYZE, VERBOSE) users, orders", "maintenance", ("users", "orders")),
        ("SELECT pg_sleep(1)", "query", ()),
        ("SET search_path = app", "session", ()),
        ("CREATE INDEX CONCURRENTLY i ON s.t (a)", "concurrent", ("s.t",)),
    ],
)
def test_statement_kinds_and_tables(sql, kind, tables):
    (statement,) = split_statements(sql)
    assert (statement.kind, statement.tables) == (kind, tables)


def test_concurrent_index_names_are_qualified_by_their_table_schema():
    (statement,) = split_statements("CREATE UNIQUE INDEX CONCURRENTLY idx ON app.users (email)")
    assert (statement.index_name, statement.index_table) == ("app.idx", "app.users")
    (unnamed,) = split_statements("CREATE INDEX CONCURRENTLY ON users (email)")
    assert unnamed.index_name is None and unnamed.is_concurrent_index_build


def test_grouping():
    statements = split_statements(
        "CREATE TABLE a (id int); INSERT INTO a VALUES (1);"
        "CREATE INDEX CONCURRENTLY i ON a (id); VACUUM a; SELECT 1; SELECT 2;"
    )
    groups = group_statements(statements)
    assert [(g.transactional, [s.number for s in g.statements]) for g in groups] == [
        (True, [1, 2]),
        (False, [3]),
        (False, [4]),
        (True, [5, 6]),
    ]


# --- lint ---------------------------------------------------------------------------------------------------

LINTED = """\
CREATE TABLE fresh (id bigint PRIMARY KEY);
CREATE INDEX fresh_id ON fresh (id);
ALTER TABLE fresh ADD COLUMN name text NOT NULL;
ALTER TABLE users DROP COLUMN legacy;
ALTER TABLE users RENAME COLUMN a TO b;
ALTER TABLE users RENAME TO people;
ALTER TABLE users ADD COLUMN must text NOT NULL;
ALTER TABLE users ADD COLUMN fine text NOT NULL DEFAULT '';
ALTER TABLE users ALTER COLUMN email SET NOT NULL;
ALTER TABLE users ALTER COLUMN id TYPE bigint;
DROP TABLE old_things;
CREATE INDEX users_email ON users (email);
CREATE INDEX CONCURRENTLY users_name ON users (name);
ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES accounts (id);
ALTER TABLE users ADD CONSTRAINT fk2 FOREIGN KEY (a) REFERENCES accounts (id) NOT VALID;
ALTER TABLE users ADD CONSTRAINT u UNIQUE (email);
ALTER TABLE users ADD CONSTRAINT u2 UNIQUE USING INDEX users_email;
DROP INDEX users_email;
"""


def _lint(tmp_path, text, *, squawk):
    write_migrations(tmp_path, {"V1__lint.sql": text})
    migrations = list(load_migrations(tmp_path, require_down=False))
    return lint_migrations(migrations, use_squawk=squawk, pg_version="15.0")


def test_engine_lint_rules(tmp_path):
    report = _lint(tmp_path, LINTED, squawk=False)
    found = {(f.line, f.rule, f.category) for f in report.findings}
    assert found == {
        (4, "drop-column", "breaking"),
        (5, "rename-column", "breaking"),
        (6, "rename-table", "breaking"),
        (7, "add-required-column", "breaking"),
        (9, "set-not-null", "breaking"),
        (10, "change-column-type", "breaking"),
        (11, "drop-table", "breaking"),
        (12, "create-index-non-concurrent", "locking"),
        (14, "constraint-without-not-valid", "locking"),
        (16, "add-unique-constraint", "locking"),
        (18, "drop-index-non-concurrent", "locking"),
    }  # lines 1-3 change a table created in the same migrations; 8, 13, 15, 17 are safe
    assert all(f.file == "V1__lint.sql" and f.source == "engine" and f.message for f in report.findings)


@pytest.mark.skipif(find_squawk() is None, reason="squawk-cli is not installed")
def test_squawk_findings_are_categorised_and_not_duplicated(tmp_path):
    report = _lint(tmp_path, LINTED, squawk=True)
    assert report.squawk and not report.warnings
    by_line = {}
    for finding in report.findings:
        by_line.setdefault(finding.line, set()).add((finding.rule, finding.category, finding.source))
    assert ("ban-drop-column", "breaking", "squawk") in by_line[4]
    assert ("drop-column", "breaking", "engine") not in by_line[4]  # squawk reported it: not repeated
    assert ("renaming-column", "breaking", "squawk") in by_line[5]
    assert ("changing-column-type", "breaking", "squawk") in by_line[10]
    assert ("require-concurrent-index-creation", "locking", "squawk") in by_line[12]
    assert ("disallowed-unique-constraint", "locking", "squawk") in by_line[16]
    assert not any(c != "advice" for line in (1, 2, 3) for _, c, _ in by_line.get(line, ()))
    assert not any(
        r in ("prefer-robust-stmts", "require-lock-timeout", "require-statement-timeout")
        for f in report.findings
        for r in [f.rule]
    )


def test_lint_ignore_header(tmp_path):
    report = _lint(
        tmp_path,
        "-- lint-ignore: create-index-non-concurrent, require-concurrent-index-creation\n"
        "CREATE INDEX i ON users (email);\n",
        squawk=bool(find_squawk()),
    )
    assert not [f for f in report.findings if f.category != "advice"]
    assert any("ignored" in w for w in report.warnings)


# --- offline plan -------------------------------------------------------------------------------------------


def test_plan_without_history(tmp_path):
    write_migrations(
        tmp_path,
        {
            "V1__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email text);",
            "V2__add_user_email_index.sql": SPEC_EXAMPLE,
            "V3__drop_legacy.sql": "-- phase: contract\nALTER TABLE users DROP COLUMN email;",
        },
    )
    migrations = load_migrations(tmp_path, require_down=False)
    settings = MigrationSettings(use_squawk=False)
    plan = build_plan(migrations, [], settings=settings, phase="expand", database="app")
    assert plan.versions == [1, 2] and plan.ok
    assert plan.skipped == [
        {
            "version": 3,
            "file": "V3__drop_legacy.sql",
            "reason": "contract migration (this run applies expand migrations)",
        }
    ]
    v2 = plan.migrations[1]
    assert [(g.transactional, [s.number for s in g.statements]) for g in v2.groups] == [
        (False, [1]),
        (True, [2]),
    ]
    assert v2.groups[0].statements[0].statement_timeout == 0
    text = plan.render()
    assert (
        "group 1: alone in autocommit: CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
        in text
    )
    assert "#1 line 5 concurrent: CREATE INDEX CONCURRENTLY idx_users_email ON users(email)" in text
    assert "removed BEGIN (line 2) and COMMIT (line 19)" in text
    assert "Not run now: V3 V3__drop_legacy.sql" in text
    assert plan.to_dict()["migrations"][1]["groups"][0]["transactional"] is False

    contract = build_plan(migrations, [], settings=settings, phase="contract", database="app")
    assert contract.versions == [3] and not contract.ok
    assert (
        "contract migration V3__drop_legacy.sql would run before expand migration(s) V1__users.sql"
        in contract.problems[0]
    )
    everything = build_plan(migrations, [], settings=settings, database="app")
    assert everything.versions == [1, 2, 3] and everything.ok  # V3 is a contract: its drop is allowed


def _row(id_, version, status, *, phase="expand", last=1, checksum="x"):
    return HistoryRow(
        id=id_,
        version=version,
        direction="up",
        description="",
        script=f"V{version}__x.sql",
        checksum=checksum,
        phase=phase,
        status=status,
        last_statement=last,
        statements_total=2,
        duration_seconds=0.0,
        installed_by="",
        airflow_run="",
        started_at=None,
        finished_at=None,
        error=None,
        repairs=[],
    )


def test_plan_against_history(tmp_path):
    write_migrations(
        tmp_path,
        {
            "V1__a.sql": "SELECT 1;\nSELECT 2;",
            "V2__b.sql": "SELECT 1;\nSELECT 2;",
            "V3__c.sql": "SELECT 1;\nSELECT 2;",
        },
    )
    migrations = load_migrations(tmp_path, require_down=False)
    settings = MigrationSettings(use_squawk=False)
    v3 = migrations.get(3).checksum
    rows = [
        _row(1, 2, "applied", checksum=migrations.get(2).checksum),
        _row(2, 3, "failed", last=1, checksum=v3),
    ]
    plan = build_plan(migrations, rows, settings=settings)
    assert plan.versions == [1, 3] and plan.applied == [2]
    assert plan.order_problems == [
        "V1__a.sql is pending but V2, a later expand migration, is already applied "
        "(out of order; set allow_out_of_order to run it anyway)"
    ]
    assert plan.migrations[1].resume_from == 2 and plan.migrations[1].history_id == 2
    assert (
        "V3__c.sql failed after statement 1 of 2: resuming at statement 2" in plan.migrations[1].warnings[0]
    )
    assert build_plan(migrations, rows, settings=settings.replace(allow_out_of_order=True)).ok

    # A partially applied file that changed cannot be resumed: its completed statements are not the file's.
    rows[1] = _row(2, 3, "failed", last=1, checksum="0" * 64)
    (mismatch,) = build_plan(migrations, rows, settings=settings).checksum_mismatches
    assert (mismatch["file"], mismatch["status"], mismatch["stored"]) == ("V3__c.sql", "failed", "0" * 64)


def test_settings():
    settings = MigrationSettings.from_dict({"timeouts": {"ddl": {"lock_timeout": 2}}, "max_retries": 3})
    assert settings.timeouts_for("ddl").lock_timeout == 2
    assert settings.timeouts_for("ddl").statement_timeout == 900  # the rest keeps its default
    assert settings.timeouts_for("concurrent").statement_timeout == 0
    assert [settings.backoff(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 30.0]
    with pytest.raises(ValueError, match="unknown migration settings"):
        MigrationSettings.from_dict({"max_retry": 3})
    with pytest.raises(ValueError, match="unknown statement kinds"):
        MigrationSettings(timeouts={"indexes": {"lock_timeout": 1}})


def test_validate_warns_about_migration_files_and_keeps_the_service(tmp_path):
    """A bad file name or a missing down file is a warning at the ``migrations`` key (the service's DAGs, its
    rollback among them, stay); the migration tasks refuse to run such files."""
    from airflow_deploy_provider.config.loader import load_service

    deploy = tmp_path / "svc" / ".deploy"
    deploy.mkdir(parents=True)
    (deploy / "service.yaml").write_text("service: svc\nplatform:\n  command: [python, app.py, \"{port}\"]\n"
                                         "migrations: {connection: db}\n")
    (deploy / "production.yaml").write_text("environment: production\nstrategy: rolling\nreplicas: 2\n")
    folder = tmp_path / "svc" / "migrations"
    folder.mkdir()
    (folder / "V1__users.sql").write_text("CREATE TABLE users (id int);\n")

    def warnings() -> list[tuple[str, str]]:
        result = load_service(deploy)
        assert result.config is not None
        return [(i.code, i.message) for i in result.issues if i.path == "migrations.path"]

    ((code, message),) = warnings()
    assert code == "migration-down-missing" and "V1__users.sql" in message and "production refuses" in message
    (folder / "U1__users.sql").write_text("DROP TABLE users;\n")
    assert warnings() == []
    (folder / "add_column.sql").write_text("ALTER TABLE users ADD COLUMN x int;\n")
    ((code, message),) = warnings()
    assert code == "migration-files" and "add_column.sql" in message
