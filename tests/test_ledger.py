"""The deployment ledger on SQLite (the default) and on a real PostgreSQL, through Airflow connections."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text

from airflow_deploy_provider.ledger import schema
from airflow_deploy_provider.ledger.hook import DeploymentLedgerHook, get_ledger
from airflow_deploy_provider.ledger.store import REPLACED, DeploymentLedger

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def fill(ledger: DeploymentLedger) -> None:
    """A small history: staging and production deployments, one rolled back, one failed."""
    rows = [
        ("d/1", "staging", "1.0", "succeeded", 0),
        ("d/2", "production", "1.0", "succeeded", 1),
        ("d/3", "staging", "1.1", "succeeded", 2),
        ("d/4", "production", "1.1", "rolled_back", 3),
        ("d/5", "staging", "1.2", "failed", 4),
        ("d/6", "production", "1.1", "succeeded", 5),
        ("d/7", "production", "1.2", "running", 6),
    ]
    for id_, env, version, status, hour in rows:
        ledger.start_deployment(id=id_, service="shop", environment=env, version=version, image=f"shop:{version}",
                                started_at=T0 + timedelta(hours=hour))
        if status != "running":
            ledger.finish_deployment(id_, status, finished_at=T0 + timedelta(hours=hour, minutes=20))


def check_queries(ledger: DeploymentLedger) -> None:
    fill(ledger)
    assert ledger.last_stable_version("shop", "production") == "1.1"
    assert ledger.last_stable_version("shop", "production", exclude_version="1.1") == "1.0"
    assert ledger.versions_passed("shop", "staging") == ["1.1", "1.0"]  # 1.2 failed staging
    assert ledger.has_passed("shop", "staging", "1.1") and not ledger.has_passed("shop", "staging", "1.2")
    assert ledger.last_stable_version("shop", "development") is None
    assert [d.id for d in ledger.deployments("shop", "production")] == ["d/7", "d/6", "d/4", "d/2"]
    assert ledger.get("d/4").status == "rolled_back"
    assert ledger.get("d/2").duration_seconds == 20 * 60

    # A rollback of production 1.1 (d/6) to 1.0: it replaced d/6, which is then recorded as rolled back (what the
    # rollback's finish task does). A second rollback must not go back to 1.1; 1.1 still counts as having passed
    # (it completed before it was replaced), unlike 1.3, which was rolled back during its own rollout.
    ledger.finish_deployment("d/7", "failed")
    ledger.start_deployment(id="d/8", service="shop", environment="production", version="1.0", kind="rollback",
                            previous_version="1.1", started_at=T0 + timedelta(hours=7))
    assert ledger.replaced_by(ledger.get("d/8")).id == "d/6"
    ledger.finish_deployment("d/8", "succeeded", finished_at=T0 + timedelta(hours=7, minutes=5))
    ledger.record_event("d/6", REPLACED, "rolled back to 1.0 by d/8", data={"by": "d/8"})
    ledger.finish_deployment("d/6", "rolled_back", "rolled back to 1.0 by d/8", finished_at=ledger.get("d/6").finished_at)
    assert ledger.last_stable_version("shop", "production") == "1.0"
    assert ledger.last_stable_version("shop", "production", exclude_version="1.0") is None
    assert ledger.has_passed("shop", "production", "1.1")
    ledger.start_deployment(id="d/9", service="shop", environment="production", version="1.3",
                            started_at=T0 + timedelta(hours=8))
    ledger.finish_deployment("d/9", "rolled_back", "gate failed")
    assert not ledger.has_passed("shop", "production", "1.3")
    assert ledger.versions_passed("shop", "production") == ["1.0", "1.1"]
    assert ledger.replaced_by(ledger.get("d/2")) is None  # not a rollback: nothing replaced


def test_sqlite_queries(tmp_path):
    check_queries(DeploymentLedger.from_url(f"sqlite:///{tmp_path / 'l.db'}"))


def test_postgres_queries(postgres):
    check_queries(DeploymentLedger.from_url(postgres.create_database("ledger_queries")))


def test_writes_are_idempotent(tmp_path):
    ledger = DeploymentLedger.from_url(f"sqlite:///{tmp_path / 'l.db'}")
    first = ledger.start_deployment(id="x/1", service="s", environment="production", version="2.0")
    again = ledger.start_deployment(id="x/1", service="s", environment="production", version="9.9")
    assert again.version == first.version == "2.0"
    ledger.finish_deployment("x/1", "failed", "gate")
    # failed may still become rolled back; rolled back is final
    assert ledger.finish_deployment("x/1", "rolled_back", "abort").status == "rolled_back"
    assert ledger.finish_deployment("x/1", "succeeded").status == "rolled_back"
    assert ledger.get("x/1").outcome_reason == "abort"
    with pytest.raises(ValueError, match="unknown outcome"):
        ledger.finish_deployment("x/1", "great")
    with pytest.raises(KeyError):
        ledger.finish_deployment("nope", "failed")


def test_events_and_migration_runs(tmp_path):
    ledger = DeploymentLedger.from_url(f"sqlite:///{tmp_path / 'l.db'}")
    ledger.start_deployment(id="e/1", service="s", environment="staging", version="1")
    ledger.record_event("e/1", "gate", "check 1: pass", phase="canary", task_id="step_1",
                        data={"error_rate": 0.05, "requests": 120})
    ledger.record_event("e/1", "approval", "alice approved", data={"who": "alice", "group": "reviewers"})
    assert [(e.kind, e.data.get("requests")) for e in ledger.events("e/1")] == [("gate", 120), ("approval", None)]
    assert [e.message for e in ledger.events("e/1", kind="approval")] == ["alice approved"]
    run = ledger.record_migration(service="s", environment="staging", database="db", version="1", direction="up",
                                  status="applied", checksum="ab" * 32, statements_done=3)
    assert run > 0


def test_schema_is_versioned_and_upgrade_is_repeatable(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = DeploymentLedger.from_url(url)
    assert schema.upgrade(ledger.engine) == schema.SCHEMA_VERSION
    with ledger.engine.connect() as conn:
        assert conn.execute(text("select value from deploy_ledger_meta where key='schema_version'")).scalar() == \
            str(schema.SCHEMA_VERSION)
        assert {"deploy_deployments", "deploy_events", "deploy_migration_runs"} <= set(inspect(conn).get_table_names())


def test_concurrent_writers_on_sqlite(tmp_path):
    """Parallel tasks write to one SQLite file; WAL and the busy timeout keep every write."""
    ledger = DeploymentLedger.from_url(f"sqlite:///{tmp_path / 'l.db'}")
    ledger.start_deployment(id="c/1", service="s", environment="production", version="1")
    errors = []

    def write(n):
        try:
            for i in range(25):
                ledger.record_event("c/1", "gate", f"{n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ledger.events("c/1")) == 100


def test_hook_falls_back_to_sqlite_in_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_DEPLOY_LEDGER", raising=False)
    assert DeploymentLedgerHook().get_url() == f"sqlite:///{tmp_path / 'deploy_ledger.db'}"
    get_ledger().start_deployment(id="f/1", service="s", environment="staging", version="1")
    assert (tmp_path / "deploy_ledger.db").exists()


def test_hook_reads_connections(monkeypatch, tmp_path, postgres):
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "x.db")}))
    assert DeploymentLedgerHook("ledger_sqlite").get_url() == f"sqlite:///{tmp_path / 'x.db'}"
    url = postgres.create_database("ledger_hook")
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_PG", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": postgres.port, "login": "postgres",
        "schema": "ledger_hook"}))
    ledger = get_ledger("ledger_pg")
    ledger.start_deployment(id="p/1", service="s", environment="staging", version="3")
    assert DeploymentLedger.from_url(url).get("p/1").version == "3"
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_HTTP", json.dumps({"conn_type": "http", "host": "example.com"}))
    with pytest.raises(ValueError, match="needs a deploy_ledger, postgres or sqlite connection"):
        DeploymentLedgerHook("ledger_http").get_url()
