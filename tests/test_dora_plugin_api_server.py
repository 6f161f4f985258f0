"""The DORA routes in a real ``airflow api-server`` (``tests/airflow_server.py``) that finds the plugin through
its ``airflow.plugins`` entry point: the UI learns of the page from the plugins endpoint, the metrics need a
token, and the page opens with the UI's cookie.

Only the api-server runs (no DAG runs are needed: the ledger is filled by the test).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import tests.airflow_server
from tests.airflow_server import AirflowServer
from tests.conftest import REPO
from tests.test_dora_plugin import EVIL, build_history
from tests.test_webhooks_api_server import entry_point_distribution

pytestmark = pytest.mark.slow


def test_dora_routes_in_a_running_api_server(tmp_path, monkeypatch):
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    from airflow_deploy_provider.ledger.store import DeploymentLedger

    monkeypatch.setattr(tests.airflow_server, "PROCESSES", ("api-server",))  # nothing to schedule here
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    build_history(DeploymentLedger.from_url(ledger_url), datetime.now(timezone.utc))
    dist = entry_point_distribution(tmp_path / "site")
    airflow = AirflowServer(tmp_path / "airflow", users={"admin": "admin-password"}, env={
        "PYTHONPATH": os.pathsep.join([str(dist), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "AIRFLOW_CONN_DEPLOY_LEDGER": json.dumps({"conn_type": "deploy_ledger", "host": ledger_url}),
    })
    url = f"{airflow.api_url}/deploy"
    with airflow:
        airflow.start()

        # What the UI reads to build its navigation.
        plugins = airflow.api("GET", "/plugins")["plugins"]
        (ours,) = [p for p in plugins if p["name"] == "airflow_deploy_provider"]
        assert [(v["name"], v["href"], v["url_route"], v["category"]) for v in ours["external_views"]] == [
            ("Deployments (DORA)", "deploy/dora", "deploy-dora", "browse")]

        assert requests.get(f"{url}/metrics", timeout=30).status_code == 401
        token = airflow.token("admin")
        resp = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code == 200, resp.text + airflow.process_logs(30)
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(resp.text) for s in family.samples}
        production = (("environment", "production"),)
        assert values[("deploy_success_rate", production)] == 0.75
        assert values[("deploy_mttr_seconds", production)] == 1200

        # The page in the UI's frame: the browser sends the UI's cookie.
        page = requests.get(f"{url}/dora", cookies={COOKIE_NAME_JWT_TOKEN: token}, timeout=30)
        assert page.status_code == 200, page.text[:2000]
        assert "Deployment success rate" in page.text and "75.0%" in page.text and "<svg" in page.text
        assert EVIL not in page.text
