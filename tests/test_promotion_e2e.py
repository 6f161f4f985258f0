"""Promotion through Airflow assets, in a real Airflow (``tests/airflow_server.py``): a development deployment
that succeeds updates ``deploy://<service>/development`` with its release; the staging DAG runs on that event and
deploys the same version (retagged ``staging-<version>``); its success does the same for production. Nobody
triggers staging or production.

In the same Airflow, ``promowin``'s production DAG is scheduled at the start of its maintenance window (every
minute here, 59 s long): its first scheduled run deploys the newest version that passed staging (from the
ledger), the next one finds nothing new and ends quietly as skipped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.airflow_server import AirflowServer

pytestmark = pytest.mark.slow

COMMIT = "5e6f7a8b9c0d"
SHORT = COMMIT[:7]
HEALTH = "healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}\n"


def service_files(name: str, *, development: bool = True, extra: str = "") -> dict[str, str]:
    """A service promoted by assets, approvals off; ``extra`` is appended to its service.yaml."""
    files = {
        "service.yaml": textwrap.dedent(f"""\
            service: {name}
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{{port}}", --version, "{{version}}"]
            approvals:
              staging: {{enabled: false}}
              production: {{enabled: false}}
            checklist: {{securityScanClean: false, releaseNotes: false, onCallNotified: false}}
            """) + extra,
        "development.yaml": "environment: development\nstrategy: recreate\nreplicas: 1\n" + HEALTH,
        "staging.yaml": "environment: staging\nstrategy: rolling\nreplicas: 1\n" + HEALTH,
        "production.yaml": "environment: production\nstrategy: rolling\nreplicas: 1\nmonitoring: {duration: 0s}\n"
                           + HEALTH,
    }
    if not development:
        del files["development.yaml"]
    return files


def test_a_development_success_is_promoted_to_staging_then_production(tmp_path):
    home = tmp_path / "airflow"
    # The scheduler creates asset-triggered runs only when it schedules at all (the harness turns that off).
    airflow = AirflowServer(home, config={"scheduler": {"use_job_schedule": True}})
    ledger_url = f"sqlite:///{home / 'ledger.db'}"
    airflow.env["AIRFLOW_CONN_DEPLOY_LEDGER"] = json.dumps({"conn_type": "deploy_ledger", "host": ledger_url})
    window = 'maintenanceWindow: {schedule: "* * * * *", duration: 59s, outsideWindow: refuse}\n'
    for service, files in (("promo", service_files("promo")),
                           ("promowin", service_files("promowin", development=False, extra=window))):
        deploy = home / "services" / service / ".deploy"
        deploy.mkdir(parents=True)
        for name, text in files.items():
            (deploy / name).write_text(text)
    from airflow_deploy_provider.ledger.store import DeploymentLedger

    ledger = DeploymentLedger.from_url(ledger_url)
    # promowin: 3.1.0 passed staging before this Airflow started (nobody triggers its production DAG)
    ledger.start_deployment(id="deploy_promowin_staging/earlier", service="promowin", environment="staging",
                            version="3.1.0", image="promowin:staging-3.1.0", dag_id="deploy_promowin_staging")
    ledger.finish_deployment("deploy_promowin_staging/earlier", "succeeded")
    airflow.add_dag_file("promo.py", "from airflow_deploy_provider.factory import register_deploy_dags\n"
                         f"register_deploy_dags(globals(), roots=[{str(home / 'services')!r}])\n")
    try:
        airflow.start()
        dags = ["deploy_promo_development", "deploy_promo_staging", "deploy_promo_production"]
        airflow.wait_for_dags([*dags, "deploy_promowin_production"])
        run_id = airflow.trigger(dags[0], conf={"commit": COMMIT, "author": "alice",
                                                "committed_at": "2026-11-20T10:00:00Z"})
        dev = airflow.wait_for_run(dags[0], run_id, timeout=300)
        assert dev["state"] == "success", airflow.explain(dags[0], run_id)

        runs = {}
        deadline = time.monotonic() + 300
        for dag_id in dags[1:]:
            while not airflow.dag_runs(dag_id):
                assert time.monotonic() < deadline, f"{dag_id} never ran:\n" + airflow.process_logs(40)
                time.sleep(1)
            (run,) = airflow.dag_runs(dag_id)
            runs[dag_id] = airflow.wait_for_run(dag_id, run["dag_run_id"], timeout=300)
            assert runs[dag_id]["state"] == "success", airflow.explain(dag_id, run["dag_run_id"])
            assert runs[dag_id]["run_type"] == "asset_triggered", runs[dag_id]

        rows = {d.environment: d for d in ledger.deployments("promo")}
        assert {env: (d.version, d.image, d.status) for env, d in rows.items()} == {
            "development": (SHORT, f"promo:dev-{SHORT}", "succeeded"),
            "staging": (SHORT, f"promo:staging-{SHORT}", "succeeded"),
            "production": (SHORT, f"promo:staging-{SHORT}", "succeeded")}
        assert rows["staging"].commit_sha == rows["production"].commit_sha == COMMIT
        # the commit time travels with the release: the lead time for changes starts there
        assert {env: d.commit_time.isoformat() for env, d in rows.items()} == {
            env: "2026-11-20T10:00:00+00:00" for env in rows}
        events = airflow.api("GET", "/assets/events", params={"limit": 10})["asset_events"]
        extras = {e["uri"]: e["extra"] for e in events}
        assert extras["deploy://promo/development"]["version"] == SHORT
        assert extras["deploy://promo/staging"]["image"] == f"promo:staging-{SHORT}"

        # promowin: scheduled at the window's start. A run that starts late in its minute (the first one can be
        # for the tick just before the DAG appeared) is refused: the rest of the rollout no longer fits.
        window_dag = "deploy_promowin_production"
        deadline = time.monotonic() + 240
        while True:
            every = airflow.dag_runs(window_dag)
            runs = sorted((r for r in every if r["state"] in ("success", "failed")), key=lambda r: r["run_after"])
            deployed = [d for d in ledger.deployments("promowin", "production") if d.status == "succeeded"]
            # the ledger records the success a few tasks before its run ends: that run may still be running
            deployed_after = next((r["run_after"] for r in every if deployed and r["dag_run_id"] == deployed[0].run_id),
                                  None)
            later = [r for r in runs if deployed_after is not None and r["run_after"] > deployed_after]
            if later:
                break
            assert time.monotonic() < deadline, f"{window_dag}: {airflow.dag_runs(window_dag)}\n" \
                + airflow.process_logs(40)
            time.sleep(2)
        assert {r["run_type"] for r in runs} == {"scheduled"}
        (deployed,) = deployed
        assert (deployed.version, deployed.image, deployed.trigger) == ("3.1.0", "promowin:staging-3.1.0", "scheduled")
        for run in runs:
            if run["dag_run_id"] == deployed.run_id or run in later:
                continue
            assert "does not fit in what is left of the maintenance window" in airflow.task_log(
                window_dag, run["dag_run_id"], "approval_gate.verify_maintenance_window"), run
        skipped = airflow.task_states(window_dag, later[0]["dag_run_id"])
        assert later[0]["state"] == "success" and skipped["start_deployment"] == "skipped", skipped
        assert "nothing to deploy: no version that passed staging is missing from production" in airflow.task_log(
            window_dag, later[0]["dag_run_id"], "start_deployment")
    finally:
        subprocess.run([sys.executable, "-m", "airflow_deploy_provider.cli", "local", "down"], env=airflow.env,
                       capture_output=True, timeout=120)
        airflow.stop()
