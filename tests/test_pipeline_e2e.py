"""The example service's pipeline for real on the local platform: the development DAG runs the unit tests,
builds and pushes the artifact, scans it, deploys exactly what was built, runs the smoke tests and notifies.

The service folder is copied into a fresh git repository (the build needs a commit; the release notes read the
history), and Slack is a local capture server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from airflow_deploy_provider.platforms.base import Target
from airflow_deploy_provider.platforms.local import platform as local
from airflow_deploy_provider.platforms.local.platform import LocalPlatform
from airflow_deploy_provider.platforms.local.state import free_port
from airflow_deploy_provider.steps import artifacts
from tests.conftest import SERVICES, CaptureServer

pytestmark = pytest.mark.slow


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "Dana Dev", "GIT_AUTHOR_EMAIL": "dana@example.com",
                               "GIT_COMMITTER_NAME": "Dana Dev", "GIT_COMMITTER_EMAIL": "dana@example.com",
                               "HOME": str(root), "PATH": "/usr/bin:/bin"}).stdout.strip()


class Storefront:
    def __init__(self, root: Path, dags_folder: Path):
        self.root = root / "storefront"
        shutil.copytree(SERVICES / "storefront", self.root)
        git(self.root, "init", "-q", "-b", "main")
        self.commit("Initial storefront")
        (dags_folder / "storefront.py").write_text(
            "from airflow_deploy_provider.factory import register_deploy_dags\n"
            f"register_deploy_dags(globals(), roots=[{str(root)!r}])\n")
        self.dags_folder = dags_folder

    def commit(self, message: str) -> str:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    def run(self, dag_id: str, **conf):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(self.dags_folder))
        assert bag.import_errors == {}
        run = bag.dags[dag_id].test(run_conf=conf)
        return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@pytest.fixture
def storefront(tmp_path, dags_folder, airflow_db, ledger, monkeypatch):
    slack = CaptureServer()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_DEPLOYMENTS", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack.port}", "password": "T000/B000/XXXX"}))
    monkeypatch.setenv("DEPLOY_REGISTRY_DIR", str(tmp_path / "registry"))
    s = Storefront(tmp_path / "services", dags_folder)
    s.slack = slack
    yield s
    for key in local.targets():
        local.down(key)
    slack.close()


def test_development_builds_scans_deploys_what_was_built_and_notifies(storefront, ledger):
    sha = git(storefront.root, "rev-parse", "HEAD")
    state, tasks = storefront.run("deploy_storefront_development", commit=sha, author="Dana Dev",
                                  message="Initial storefront", branch="develop")
    assert state == "success", tasks
    for task in ("build.run_unit_tests", "build.build_image", "build.push_image", "security_scan.scan_secrets",
                 "security_scan.generate_sbom", "deploy_to_dev.deploy_version", "smoke_tests.health_check",
                 "notification.notify_success"):
        assert tasks[task] == "success", (task, tasks)

    image = f"storefront:dev-{sha[:7]}"
    (deployment,) = ledger.deployments("storefront", "development")
    assert (deployment.status, deployment.version, deployment.image) == ("succeeded", sha[:7], image)
    steps = {e.data["step"]: e.data for e in ledger.events(deployment.id, kind="step")}
    assert steps["unit-tests"]["ok"] and steps["unit-tests"]["findings_total"] == 1  # the JUnit report's one test
    assert steps["build-image"]["artifacts"]["image"] == image
    digest = steps["build-image"]["artifacts"]["digest"]
    assert steps["push-image"]["artifacts"]["digest"] == digest
    assert steps["scan-secrets"]["blocking"] == 0
    sbom = steps["generate-sbom"]
    assert any(f["id"].startswith("pkg:pypi/aiohttp@3.14.5") for f in sbom["findings"]), sbom
    (scan,) = ledger.events(deployment.id, kind="scan")
    assert (scan.data["version"], scan.data["blocking"]) == (sha[:7], 0)

    # what runs is the artifact that was built: the replicas' working folder is its unpacked digest
    record = artifacts.lookup(image)
    assert record["digest"] == digest and record["pushed"]
    platform = LocalPlatform({"type": "local", "command": []}, Target("storefront", "development"))
    state_ = platform.state.read()
    pids = [r["pid"] for r in state_["roles"]["stable"]["replicas"]]
    assert pids and all(psutil.Process(pid).cwd() == str(artifacts.unpacked(image)) for pid in pids)
    assert artifacts.unpacked(image) != storefront.root
    health = requests.get(platform.endpoint("stable") + "/health", timeout=5).json()
    assert health["version"] == sha[:7]

    texts = storefront.slack.texts
    assert any("storefront" in t and sha[:7] in t and "succeeded" in t.lower() for t in texts), texts


def test_a_committed_secret_stops_the_build_before_anything_is_deployed(storefront, ledger):
    (storefront.root / "settings.py").write_text('AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'
                                                 'AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"\n')
    sha = storefront.commit("Add settings")
    state, tasks = storefront.run("deploy_storefront_development", commit=sha)
    assert state == "failed"
    assert tasks["security_scan.scan_secrets"] == "failed"
    assert tasks["deploy_to_dev.deploy_version"] == "upstream_failed"
    (deployment,) = ledger.deployments("storefront", "development")
    assert deployment.status == "failed"
    (scan,) = ledger.events(deployment.id, kind="scan")
    assert scan.data["blocking"] >= 1
    step = next(e for e in ledger.events(deployment.id, kind="step") if e.data["step"] == "scan-secrets")
    assert any(f["location"].startswith("settings.py:") for f in step.data["findings"])
    assert "wJalrXUtnFEMI" not in json.dumps(step.data)  # the finding names the place, never the secret
    assert not LocalPlatform({"type": "local", "command": []}, Target("storefront", "development")).state.read() \
        .get("roles", {}).get("stable")


def test_staging_promotes_the_built_artifact_signed_and_load_tested(storefront, ledger, monkeypatch):
    """Staging re-tags the development artifact (same digest, no rebuild), signs it, deploys it blue-green, and
    load-tests the switched traffic at a share of production's rate before blue is retired."""
    from tests.test_steps_security import signing_connection

    monkeypatch.setenv("AIRFLOW_CONN_COSIGN", signing_connection())
    with (storefront.root / ".deploy" / "service.yaml").open("a") as fh:
        fh.write("approvals:\n  staging: {enabled: false}\n")
    port = free_port()
    with (storefront.root / ".deploy" / "staging.yaml").open("a") as fh:  # a short watch on a known port
        fh.write(f"platform:\n  port: {port}\ntrafficSwitch:\n  testDuration: 3s\n"
                 "healthCheck:\n  initialDelay: 1s\n  interval: 1s\n")
    sha = storefront.commit("feat: staging for the storefront")
    state, tasks = storefront.run("deploy_storefront_development", commit=sha)
    assert state == "success", tasks
    # users on staging while it switches: the watch after the switch needs requests to judge
    load = subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.load",
                             f"http://127.0.0.1:{port}/api/cart", "--rps", "30", "--quiet"])
    try:
        state, tasks = storefront.run("deploy_storefront_staging", version=sha[:7])
    finally:
        load.terminate()
        load.wait(10)
    assert state == "success", tasks

    dev_image, staging_image = f"storefront:dev-{sha[:7]}", f"storefront:staging-{sha[:7]}"
    (deployment,) = ledger.deployments("storefront", "staging")
    assert deployment.image == staging_image
    steps = {e.data["step"]: e.data for e in ledger.events(deployment.id, kind="step")}
    assert steps["retag-image"]["artifacts"]["source"] == dev_image
    assert artifacts.lookup(staging_image)["digest"] == artifacts.lookup(dev_image)["digest"]  # not rebuilt
    assert steps["sign-image"]["ok"] and steps["sign-image"]["artifacts"]["digest"] == \
        artifacts.lookup(staging_image)["digest"]
    assert "release-notes" in steps and "document-config-changes" in steps

    (load,) = [e for e in ledger.events(deployment.id, kind="test") if e.data["suite"] == "load"]
    (result,) = load.data["results"]
    assert result["ok"] and result["stats"]["requests"] >= 20 and result["stats"]["failures"] == 0
    # the suites ran on the switched traffic, before blue was retired
    order = [(e.task_id or "").rsplit(".", 1)[-1] for e in ledger.events(deployment.id)]
    assert order.index("switch_traffic") < order.index("load_tests") < order.index("retire_blue")
