"""Database migrations inside the generated DAGs, against a real PostgreSQL, on the local platform (``dag.test()``,
triggers run in-process):

* production deploys 1.0.0: the checklist takes and verifies a ``pg_dump`` backup, then the expand migrations
  (the spec's own ``V1__add_user_email_index.sql`` among them) run; the contract one does not;
* 1.1.0 brings V3 (a new column) while another session holds the migration lock: the task waits in a trigger,
  then applies V3;
* an edited applied file stops a deployment before anything executes; ``repair_<service>_migrations`` accepts it;
* the rollback to 1.0.0 reverts V3 only (what 1.0.0 ran with stays);
* ``migrate_<service>_contract`` is refused while the ledger shows the old version running again, and runs
  once the old version has been retired long enough;
* ``restore_<service>_production_database`` restores the backup, only when confirmed.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SERVICES, write_service
from tests.servers import free_port

pytestmark = pytest.mark.slow

V1 = (SERVICES / "checkout" / "migrations" / "V1__add_user_email_index.sql").read_text()
FILES = {
    "V0__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email text);\n"
                     "INSERT INTO users VALUES (1, 'ada@example.com');\n",
    "U0__users.sql": "DROP TABLE users;\n",
    "V1__add_user_email_index.sql": V1,
    "U1__add_user_email_index.sql": "DROP INDEX CONCURRENTLY IF EXISTS idx_users_email;\n",
    "V2__drop_legacy_flag.sql": "-- phase: contract\nALTER TABLE users DROP COLUMN legacy;\n",
    "U2__drop_legacy_flag.sql": "ALTER TABLE users ADD COLUMN legacy boolean;\n",
}
V3 = {"V3__add_nickname.sql": "ALTER TABLE users ADD COLUMN nickname text;\n",
      "U3__add_nickname.sql": "ALTER TABLE users DROP COLUMN nickname;\n"}


def service_files(port: int) -> dict[str, str]:
    return {
        "service.yaml": textwrap.dedent("""\
            service: shopdb
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{port}", --version, "{version}"]
            approvals:
              production: {enabled: false}
            checklist: {stagingTestsPassed: false, securityScanClean: false, releaseNotes: false,
                        rollbackPlan: false, onCallNotified: false}
            migrations:
              connection: shopdb_{environment}
              lockWait: 2m
              contractDelay: 3s
            rollback:
              monitorDuration: 0s
            """),
        "production.yaml": textwrap.dedent(f"""\
            environment: production
            strategy: rolling
            replicas: 1
            healthCheck: {{initialDelay: 100ms, interval: 200ms, timeout: 2s}}
            monitoring: {{duration: 0s}}
            platform:
              port: {port}
            """),
    }


class Shop:
    def __init__(self, root: Path, dags_folder: Path, db_url: str) -> None:
        from airflow.dag_processing.dagbag import DagBag

        self.root = write_service(root / "shopdb", service_files(free_port()))
        self.migrations = self.root / "migrations"
        self.migrations.mkdir()
        for name, text in FILES.items():
            (self.migrations / name).write_text(text)
        (dags_folder / "shopdb.py").write_text(
            "from airflow_deploy_provider.factory import register_deploy_dags\n"
            f"register_deploy_dags(globals(), roots=[{str(root)!r}])\n")
        self.bag = DagBag(str(dags_folder))
        assert self.bag.import_errors == {}
        self.db_url = db_url

    def run(self, dag_id: str, **conf) -> tuple[str, dict[str, str]]:
        run = self.bag.dags[dag_id].test(run_conf=conf)
        return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(self.db_url.replace("postgresql+psycopg2", "postgresql"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def columns(self) -> set[str]:
        return {r[0] for r in self.query("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'users'")}

    def history(self) -> dict[int, str]:
        """Version -> status of each up migration in the target database's history table."""
        return {v: s for v, s in self.query("SELECT version, status FROM deploy_schema_history "
                                            "WHERE direction = 'up' ORDER BY id")}


@pytest.fixture
def shop(tmp_path, dags_folder, airflow_db, ledger, postgres, monkeypatch):
    url = postgres.create_database(f"shopdb_{int(time.time() * 1000)}")
    dbname = url.rsplit("/", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_SHOPDB_PRODUCTION", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": postgres.port, "login": "postgres",
        "schema": dbname}))
    s = Shop(tmp_path / "services", dags_folder, url)
    yield s
    from airflow_deploy_provider.platforms.local import platform as local

    for key in local.targets():
        local.down(key)


def test_migrations_through_deploy_rollback_contract_and_restore(shop, ledger):
    from airflow_deploy_provider.migrations import ConnectionParams, MigrationRunner, MigrationSettings

    dag = "deploy_shopdb_production"
    state, tasks = shop.run(dag, version="1.0.0")
    assert state == "success", tasks
    assert tasks["pre_deployment_checklist.database_backup_completed"] == "success"
    first = f"{dag}/" + ledger.deployments("shopdb", "production")[0].run_id
    (backup,) = [e.data for e in ledger.events(first, kind="backup")]
    assert backup["verified"] and backup["toc_entries"] >= 0 and Path(backup["location"]).is_file()
    assert shop.history() == {0: "applied", 1: "applied"}  # the contract migration waits for its own DAG
    assert shop.query("SELECT indexname FROM pg_indexes WHERE indexname = 'idx_users_email'") == [
        ("idx_users_email",)]
    warnings = [e.message for e in ledger.events(first, kind="migration") if "BEGIN" in e.message]
    assert warnings, "the spec example's BEGIN/COMMIT is handled with a warning"
    runs = [(r.version, r.direction, r.status, r.deployment_id) for r in ledger.migration_runs("shopdb", "production")]
    assert runs == [("0", "up", "applied", first), ("1", "up", "applied", first)]

    # 1.1.0 with V3, while another session holds the migration lock for 3 s: the task waits, then applies
    for name, text in V3.items():
        (shop.migrations / name).write_text(text)
    holder = MigrationRunner(ConnectionParams.from_url(shop.db_url).connector(), MigrationSettings())
    assert holder.try_lock().acquired
    release = threading.Timer(3.0, holder.close)
    release.start()
    started = time.monotonic()
    state, tasks = shop.run(dag, version="1.1.0")
    release.join()
    assert state == "success", tasks
    second = f"{dag}/" + ledger.deployments("shopdb", "production")[0].run_id
    waited = [e.message for e in ledger.events(second, kind="migration") if "lock_wait" in e.message]
    assert waited and "another run is migrating this database" in waited[0]
    assert time.monotonic() - started >= 3
    assert shop.history() == {0: "applied", 1: "applied", 3: "applied"} and "nickname" in shop.columns()
    shop.query("INSERT INTO users (id, email, nickname) VALUES (2, 'bob@example.com', 'bob')")

    # an applied file edited: the next deployment stops before anything executes; the repair accepts it
    (shop.migrations / "V0__users.sql").write_text(FILES["V0__users.sql"] + "-- reviewed\n")
    state, tasks = shop.run(dag, version="1.1.1")
    assert state == "failed" and tasks["rolling_deployment.deploy_version"] == "upstream_failed", tasks
    failed = ledger.deployments("shopdb", "production")[0]
    (stopped,) = [e.message for e in ledger.events(failed.id, kind="migration") if e.message.startswith("stopped")]
    assert "V0" in stopped and "checksum" in stopped, stopped
    state, tasks = shop.run("repair_shopdb_migrations", confirm="repair shopdb production")
    assert (state, tasks["repair_production"]) == ("success", "success"), tasks
    assert shop.query("SELECT repairs::text FROM deploy_schema_history WHERE version = 0 AND direction = 'up'")[0][
        0] != "[]"

    # the rollback to 1.0.0 reverts what 1.1.0 brought (V3), newest first; V0 and V1 stay
    state, tasks = shop.run("rollback_shopdb_production", target_version="1.0.0", reason="nickname breaks login")
    assert state == "success", tasks
    assert shop.history() == {0: "applied", 1: "applied", 3: "reverted"} and "nickname" not in shop.columns()
    downs = [(r.version, r.status) for r in ledger.migration_runs("shopdb", "production") if r.direction == "down"]
    assert downs == [("3", "reverted")]

    # the contract migration: refused while the version from before the expand runs again (the rollback) ...
    state, tasks = shop.run("migrate_shopdb_contract")
    assert state == "failed" and tasks["readiness.check_old_version_retired"] == "failed", tasks
    assert "legacy" not in shop.columns()
    shop.query("ALTER TABLE users ADD COLUMN legacy boolean")
    # ... and after a deployment of 1.2.0 (re-applying V3) has run for contractDelay, it runs after a backup
    state, tasks = shop.run(dag, version="1.2.0")
    assert state == "success", tasks
    time.sleep(3)
    state, tasks = shop.run("migrate_shopdb_contract")
    assert state == "success", tasks
    assert shop.history()[2] == "applied" and "legacy" not in shop.columns()

    # restore the backup taken before 1.1.0's migrations: bob (added later) disappears, only when confirmed
    (backup,) = [e.data for e in ledger.events(second, kind="backup")]
    with pytest.raises(Exception, match="confirm"):
        shop.run("restore_shopdb_production_database", confirm="yes", backup=backup["location"])
    state, tasks = shop.run("restore_shopdb_production_database", confirm="restore shopdb production",
                            backup=backup["location"])
    assert state == "success", tasks
    assert shop.query("SELECT id FROM users ORDER BY id") == [(1,)]
    assert "nickname" not in shop.columns()


def test_the_example_service_migrates_its_database(dags_folder, airflow_db, ledger, postgres, monkeypatch):
    """``dags/services/accounts`` as shipped: its development DAG runs its migrations (the spec's example among
    them) against PostgreSQL on the local platform; the contract migration is left for its own DAG."""
    from airflow.dag_processing.dagbag import DagBag

    services = Path(__file__).parent.parent / "dags" / "services"
    url = postgres.create_database(f"accounts_{int(time.time() * 1000)}")
    monkeypatch.setenv("AIRFLOW_CONN_ACCOUNTS_DB_DEVELOPMENT", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": postgres.port, "login": "postgres",
        "schema": url.rsplit("/", 1)[1]}))
    (dags_folder / "examples.py").write_text(
        "from airflow_deploy_provider.factory import register_deploy_dags\n"
        f"register_deploy_dags(globals(), roots=[{str(services)!r}])\n")
    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}
    try:
        run = bag.dags["deploy_accounts_development"].test(run_conf={"commit": "0a1b2c3d4e5f", "author": "ada"})
        assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    finally:
        from airflow_deploy_provider.platforms.local import platform as local

        for key in local.targets():
            local.down(key)
    shop = Shop.__new__(Shop)
    shop.db_url = url
    assert shop.history() == {0: "applied", 1: "applied", 2: "applied"}
    assert shop.columns() == {"id", "login", "email", "created_at", "display_name"}
    assert shop.query("SELECT indexname FROM pg_indexes WHERE indexname = 'idx_users_email'")
    (deployment,) = ledger.deployments("accounts", "development")
    assert [(r.version, r.status) for r in ledger.migration_runs("accounts", "development")] == [
        ("0", "applied"), ("1", "applied"), ("2", "applied")]
    assert deployment.status == "succeeded"
