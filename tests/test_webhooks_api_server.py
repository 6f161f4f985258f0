"""The webhook plugin in a real ``airflow api-server`` (``tests/airflow_server.py``), discovered through its
``airflow.plugins`` entry point: a signed GitHub push creates the development run (seen through the REST API)
whose first task accepts the commit metadata, a forged one gets 401, and the status route needs an Airflow
login.

The package's own entry point is only installed with the package (``pip install``); here a distribution
folder declaring the same entry point (read from ``pyproject.toml``) is put on the api-server's
``PYTHONPATH``, which is how Airflow finds an installed package's plugins.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.airflow_server import AirflowServer
from tests.conftest import REPO
from tests.test_webhooks import plugin_entry_points

pytestmark = pytest.mark.slow

SECRET = "e2e-webhook-secret"
SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
DAG = "deploy_hooked_development"
HEALTH = "healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}\n"


def entry_point_distribution(folder: Path) -> Path:
    """A distribution (``.dist-info``) whose only content is the package's ``airflow.plugins`` entry point."""
    plugins = plugin_entry_points()
    info = folder / "airflow_deploy_provider_plugin_under_test-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: airflow-deploy-provider-plugin-under-test\n"
                                   "Version: 0.0.0\n")
    (info / "entry_points.txt").write_text(
        "[airflow.plugins]\n" + "".join(f"{name} = {target}\n" for name, target in plugins.items()))
    return folder


def push(delivery: str, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "ref": "refs/heads/develop", "after": SHA, "deleted": False,
        "repository": {"full_name": "acme/hooked"}, "pusher": {"name": "alice"},
        "head_commit": {"id": SHA, "message": "Ship it", "timestamp": "2024-06-01T08:00:00Z",
                        "author": {"name": "Alice"}}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature,
                  "Content-Type": "application/json"}


def test_webhooks_in_a_running_api_server(tmp_path):
    home = tmp_path / "airflow"
    dist = entry_point_distribution(tmp_path / "site")
    airflow = AirflowServer(home, users={"admin": "admin-password"}, env={
        "PYTHONPATH": os.pathsep.join([str(dist), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "AIRFLOW_CONN_DEPLOY_WEBHOOKS": json.dumps({"conn_type": "generic", "password": SECRET}),
        "AIRFLOW_CONN_DEPLOY_LEDGER": json.dumps({"conn_type": "deploy_ledger",
                                                  "host": f"sqlite:///{home / 'ledger.db'}"}),
    })
    # The service beside the DAG file: the api-server finds it there with no roots configured.
    deploy = airflow.dags_folder / "services" / "hooked" / ".deploy"
    deploy.mkdir(parents=True)
    (deploy / "service.yaml").write_text(
        "service: hooked\nplatform:\n  command: [python, -m, airflow_deploy_provider.demo.app, --port, \"{port}\", "
        "--version, \"{version}\"]\n")
    (deploy / "development.yaml").write_text("environment: development\nstrategy: recreate\nautoDeploy: true\n"
                                             + HEALTH)
    airflow.add_dag_file("deploy_dags.py", "from airflow_deploy_provider.factory import register_deploy_dags\n\n"
                         "register_deploy_dags(globals())\n")
    url = f"{airflow.api_url}/deploy"
    try:
        airflow.start()
        airflow.wait_for_dags([DAG])

        # Routes that are not webhooks need an Airflow login.
        assert requests.get(f"{url}/health", timeout=30).status_code == 401
        health = requests.get(f"{url}/health", timeout=30,
                              headers={"Authorization": f"Bearer {airflow.token('admin')}"})
        assert health.status_code == 200, health.text
        assert health.json()["connection"]["github_secret"] is True and SECRET not in health.text

        body, headers = push("forged-1", secret="not the secret")
        forged = requests.post(f"{url}/webhooks/github", data=body, headers=headers, timeout=30)
        assert forged.status_code == 401, forged.text
        assert airflow.dag_runs(DAG) == []

        body, headers = push("e2e-delivery-1")
        resp = requests.post(f"{url}/webhooks/github", data=body, headers=headers, timeout=30)
        assert resp.status_code == 201, resp.text + airflow.process_logs(20)
        again = requests.post(f"{url}/webhooks/github", data=body, headers=headers, timeout=30)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"

        (run,) = airflow.dag_runs(DAG)
        assert run["dag_run_id"] == "github__e2e-delivery-1"
        assert run["run_type"] == "manual" and run["triggered_by"] == "rest_api"
        assert run["triggering_user_name"] == "webhook:github"
        assert run["conf"]["commit"] == SHA and run["conf"]["committed_at"] == "2024-06-01T08:00:00+00:00"

        # The run's first task takes the conf as the DAG's params: version and image from the commit.
        start = "code_push.extract_commit_metadata"
        deadline = time.monotonic() + 60
        while (state := airflow.task_states(DAG, run["dag_run_id"]).get(start)) != "success":
            assert state not in ("failed", "upstream_failed"), airflow.explain(DAG, run["dag_run_id"])
            assert time.monotonic() < deadline, airflow.explain(DAG, run["dag_run_id"])
            time.sleep(1)
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        (deployment,) = DeploymentLedger.from_url(f"sqlite:///{home / 'ledger.db'}").deployments("hooked")
        assert (deployment.version, deployment.image, deployment.commit_sha, deployment.branch) == (
            SHA[:7], f"hooked:dev-{SHA[:7]}", SHA, "develop")
        assert deployment.commit_time.isoformat() == "2024-06-01T08:00:00+00:00"  # the lead time starts here
    finally:
        subprocess.run([sys.executable, "-m", "airflow_deploy_provider.cli", "local", "down"], env=airflow.env,
                       capture_output=True, timeout=120)
        airflow.stop()
