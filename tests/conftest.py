"""Test environment: a private AIRFLOW_HOME (SQLite), a migrated metadata DB, and local capture servers.

Airflow reads its configuration when first imported, so the environment is set here, before any test
module imports Airflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
SERVICES = DAGS / "services"
DATA = Path(__file__).resolve().parent / "data"

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_HOME = Path(tempfile.mkdtemp(prefix=f"adp-airflow-{_WORKER}-"))
_DAGS_FOLDER = _HOME / "dags"
_DAGS_FOLDER.mkdir()
os.environ.update({
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACK_DEPTH": "1",
})
os.environ.pop("DEPLOY_SERVICE_ROOTS", None)


#: Modules that take minutes, longest first: collected before the others so that with ``--dist loadfile
#: --no-loadscope-reorder`` (``make test``) a worker starts on them at once, instead of one of them running alone
#: at the end of the suite (xdist otherwise orders files by their number of tests).
LONG_MODULES = ("test_multi_region_e2e.py", "test_local_e2e.py", "test_kubernetes_e2e.py",
                "test_kubernetes_rollback_e2e.py", "test_approvals_e2e.py", "test_checklist.py", "test_ecs_e2e.py",
                "test_promotion_e2e.py", "test_ui_browser.py", "test_incident_e2e.py", "test_pipeline_e2e.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated metadata database (needed by ``dag.test()``)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=300)
    return airflow_home


@pytest.fixture
def dags_folder(airflow_home: Path):
    """The configured DAGs folder, emptied after the test."""
    yield _DAGS_FOLDER
    for child in _DAGS_FOLDER.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink()


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch):
    """A ledger in a fresh SQLite file, reached through the ``deploy_ledger`` connection."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_DEPLOY_LEDGER", json.dumps({"conn_type": "deploy_ledger", "host": url}))
    from airflow_deploy_provider.ledger.store import DeploymentLedger

    return DeploymentLedger.from_url(url)


class CaptureServer:
    """An HTTP server on loopback that records every request's body (JSON or form fields): a Slack webhook
    stand-in, or with ``reply`` (path, payload -> JSON answer) a stand-in for an API such as Slack's Web API."""

    def __init__(self, status: int = 200, reply=None):
        self.requests: list[dict] = []
        self.status = status
        captured = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                from urllib.parse import parse_qsl

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                    payload = dict(parse_qsl(body.decode()))
                else:
                    try:
                        payload = json.loads(body or b"{}")
                    except ValueError:
                        payload = {"raw": body.decode(errors="replace")}
                captured.requests.append({"path": self.path, "json": payload})
                self.send_response(captured.status)
                if reply is not None:
                    answer = json.dumps(reply(self.path, payload)).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                self.end_headers()
                self.wfile.write(b"ok" if captured.status == 200 else b"error")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def texts(self) -> list[str]:
        return [r["json"].get("text", "") for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack(monkeypatch):
    """A Slack incoming-webhook stand-in, reachable through the connection ``slack_test``."""
    server = CaptureServer()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_TEST", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{server.port}", "password": "T000/B000/XXXX"}))
    yield server
    server.close()


def wait_ready(platform, role: str, version: str, timeout: float = 10.0):
    """Poll a platform until ``role`` runs ``version`` and its rollout is done; a failed rollout fails the test."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = platform.rollout_status(role)
        if status.done and status.version == version:
            return status
        assert not status.failed, status
        time.sleep(0.05)
    raise AssertionError(f"{role} {version} not ready: {platform.rollout_status(role)}")


def fast_canary(*extra_metrics: str) -> str:
    """A production environment's canary for tests (to append to its file): steps 10/50/100% with 1 s pauses,
    checks every 500 ms on at least 100 requests, error rate at most 1% (plus ``extra_metrics``, YAML flow
    mappings), rolled back at once above 5% errors, then watched for 1 s."""
    metrics = "".join(f"    - {m}\n" for m in ("{name: error_rate, max: 1%}", *extra_metrics))
    return ("canary:\n  steps:\n    - {weight: 10, pause: 1s}\n    - {weight: 50, pause: 1s}\n    - {weight: 100}\n"
            "  analysis:\n    interval: 500ms\n    threshold: 1\n    minRequests: 100\n    metrics:\n" + metrics
            + 'autoRollback:\n  enabled: true\n  conditions: ["error_rate > 5%"]\nmonitoring: {duration: 1s}\n')


# Test services announce to the ``slack`` fixture and skip the governance steps (approvals, production
# checklist), which have their own tests: appended to a test's ``service.yaml``.
UNGOVERNED = """\
notifications:
  slack: {connection: slack_test}
approvals:
  staging: {enabled: false}
  production: {enabled: false}
checklist:
  stagingTestsPassed: false
  securityScanClean: false
  releaseNotes: false
  rollbackPlan: false
  onCallNotified: false
"""


def write_service(root: Path, files: dict[str, str]) -> Path:
    """Write a service's ``.deploy`` files under ``root``; returns the service folder."""
    deploy = root / ".deploy"
    deploy.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (deploy / name).write_text(text)
    return root


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session."""
    from tests.servers import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()
