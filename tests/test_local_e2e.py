"""Generated DAGs run end to end with ``dag.test()`` on the local platform, under live load.

A service of the demo app, with the spec's workflows at test speed: development (recreate), staging
(blue-green), production (canary 20% -> 50% -> 100% with metric gates), and rollback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import requests

from airflow_deploy_provider.platforms.base import Target
from airflow_deploy_provider.platforms.local import platform as local
from airflow_deploy_provider.platforms.local.platform import LocalPlatform
from airflow_deploy_provider.platforms.local.state import free_port
from tests.conftest import UNGOVERNED, write_service

pytestmark = pytest.mark.slow

FAULTS = {"6.6.6": {"error_rate": 0.5}, "7.7.7": {"latency_ms": 1100}, "8.8.8": {"error_rate": 1.0},
          "8.8.9": {"error_rate": 1.0, "paths": ["/api/cart"]}}  # fails live traffic, passes the tests


def service_files(ports: dict[str, int]) -> dict[str, str]:
    """One service with three environments, each with its own router port (its file's ``platform``)."""
    common_health = "healthCheck:\n  initialDelay: 300ms\n  interval: 200ms\n  timeout: 2s\n"
    files = {
        "service.yaml": textwrap.dedent(f"""\
            service: shop
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{{port}}", --version, "{{version}}"]
              env:
                DEMO_FAULTS: '{json.dumps(FAULTS)}'
            tests:
              integration:
                command: [python, -c, "import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1] + '/api').status != 200)", "{{url}}"]
                timeout: 30s
            rollback:
              monitorDuration: 2s
            """) + UNGOVERNED,
        "development.yaml": "environment: development\nstrategy: recreate\nreplicas: 1\n" + common_health,
        "staging.yaml": "environment: staging\nstrategy: bluegreen\nreplicas: 2\n" + common_health + textwrap.dedent("""\
            trafficSwitch:
              testDuration: 2s
              rollbackOnError: true
            postDeploymentTests: [smoke]
            """),
        "production.yaml": "environment: production\nstrategy: canary\nreplicas: 2\n" + common_health + textwrap.dedent("""\
            canary:
              steps:
                - weight: 20
                  pause: 2s
                - weight: 50
                  pause: 2s
                - weight: 100
              analysis:
                interval: 500ms
                threshold: 3
                minRequests: 3
                metrics:
                  - name: error_rate
                    max: 1
                  - name: latency_p99
                    max: 800
            autoRollback:
              enabled: true
              conditions:
                - error_rate > 5%
                - latency_p99 > 1000ms
            monitoring:
              duration: 2s
            """),
    }
    for env, port in ports.items():
        files[f"{env}.yaml"] += f"platform:\n  port: {port}\n"
    return files


class Shop:
    """The service, its DAGs, and live load on its production router."""

    def __init__(self, root: Path, dags_folder: Path):
        from airflow.dag_processing.dagbag import DagBag

        self.ports = {env: free_port() for env in ("development", "staging", "production")}
        write_service(root / "shop", service_files(self.ports))
        (dags_folder / "shop.py").write_text(
            "from airflow_deploy_provider.factory import register_deploy_dags\n"
            f"register_deploy_dags(globals(), roots=[{str(root)!r}])\n")
        self.bag = DagBag(str(dags_folder))
        assert self.bag.import_errors == {}
        self.loads: dict[str, subprocess.Popen] = {}

    def run(self, dag_id: str, **conf):
        run = self.bag.dags[dag_id].test(run_conf=conf)
        return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}

    def platform(self, env: str) -> LocalPlatform:
        return LocalPlatform({"type": "local", "command": []}, Target("shop", env))

    def start_load(self, env: str = "production", rps: float = 80) -> None:
        self.loads[env] = subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.load",
                                            f"http://127.0.0.1:{self.ports[env]}/api/cart", "--rps", str(rps), "--quiet"])

    def stop_load(self, env: str = "production") -> None:
        proc = self.loads.pop(env, None)
        if proc:
            proc.terminate()
            proc.wait(10)

    def close(self) -> None:
        for env in list(self.loads):
            self.stop_load(env)
        for key in local.targets():
            local.down(key)


@pytest.fixture
def shop(tmp_path, dags_folder, airflow_db, ledger, slack):
    s = Shop(tmp_path / "services", dags_folder)
    yield s
    s.close()
    leaked = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leaked == []


def traffic_weights(ledger, deployment_id: str) -> list[int]:
    return [e.data["weight"] for e in ledger.events(deployment_id, kind="traffic") if "weight" in e.data]


def only(ledger, env: str, version: str):
    (d,) = [d for d in ledger.deployments("shop", env) if d.version == version]
    return d


def bootstrap(shop: Shop, version: str = "1.0.0") -> None:
    shop.start_load()
    state, _ = shop.run("deploy_shop_production", version=version)
    assert state == "success"


def test_development_deploys_and_runs_smoke_tests(shop, ledger, slack):
    state, tasks = shop.run("deploy_shop_development", commit="a1b2c3d4e5f6", author="alice")
    assert state == "success", tasks
    deployment = only(ledger, "development", "a1b2c3d")
    assert deployment.status == "succeeded" and deployment.image == "shop:dev-a1b2c3d"
    assert shop.platform("development").traffic().stable_version == "a1b2c3d"
    assert requests.get(f"http://127.0.0.1:{shop.ports['development']}/api").json()["version"] == "a1b2c3d"
    tests = [e.data for e in ledger.events(deployment.id, kind="test")]
    assert tests and tests[0]["suite"] == "smoke" and all(r["ok"] for r in tests[0]["results"])
    assert len(slack.texts) == 2 and all("a1b2c3d deployment to development" in t for t in slack.texts)
    assert "succeeded" in slack.texts[-1]
    fields = [f["text"] for b in slack.requests[0]["json"]["blocks"] for f in b.get("fields", [])]
    assert "*Commit*\na1b2c3d by alice" in fields


def test_staging_blue_green_switches_after_testing_green(shop, ledger):
    for version in ("1.0.0", "1.1.0"):
        assert shop.run("deploy_shop_development", commit="abcdef1", version=version)[0] == "success"
    shop.start_load("staging")  # the watch after each switch needs live traffic
    assert shop.run("deploy_shop_staging", version="1.0.0")[0] == "success"
    blue_pids = {r["pid"] for r in shop.platform("staging").state.read()["roles"]["stable"]["replicas"]}
    state, tasks = shop.run("deploy_shop_staging", version="1.1.0")
    assert state == "success", tasks
    assert tasks["blue_green_deployment.integration_tests_on_green"] == "success"
    assert tasks["blue_green_deployment.switch_back_to_blue"] == "skipped"
    split = shop.platform("staging").traffic()
    assert (split.stable_version, split.canary_version) == ("1.1.0", None)
    time.sleep(0.3)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in blue_pids)
    # a version that never passed development is refused before anything changes
    state, tasks = shop.run("deploy_shop_staging", version="9.9.9")
    assert state == "failed" and tasks["manual_approval.verify_development_passed"] == "failed"
    assert shop.platform("staging").traffic().stable_version == "1.1.0"
    # nothing was deployed, so nothing is rolled back: the outcome is "failed", with no rollback announced
    assert tasks["blue_green_deployment.switch_back_to_blue"] == "skipped"
    refused = only(ledger, "staging", "9.9.9")
    assert refused.status == "failed" and "verify_development_passed" in refused.outcome_reason
    assert ledger.events(refused.id, kind="rollback") == []


def test_staging_stops_a_bad_green_before_or_after_the_switch(shop, ledger):
    for version in ("1.0.0", "8.8.8", "8.8.9"):
        assert shop.run("deploy_shop_development", commit="abcdef1", version=version)[0] == "success"
    shop.start_load("staging")
    assert shop.run("deploy_shop_staging", version="1.0.0")[0] == "success"
    # fails every request: the tests on green catch it, traffic never moves
    state, tasks = shop.run("deploy_shop_staging", version="8.8.8")
    assert state == "failed" and tasks["blue_green_deployment.integration_tests_on_green"] == "failed"
    assert tasks["blue_green_deployment.switch_traffic"] == "upstream_failed"
    assert not [e for e in ledger.events(only(ledger, "staging", "8.8.8").id, kind="traffic")]
    split = shop.platform("staging").traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("1.0.0", None, 0)
    # passes the tests but fails live traffic: switched, watched, switched back
    state, tasks = shop.run("deploy_shop_staging", version="8.8.9")
    assert state == "failed" and tasks["blue_green_deployment.watch_after_switch"] == "failed"
    assert tasks["blue_green_deployment.switch_traffic"] == "success"
    split = shop.platform("staging").traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("1.0.0", None, 0)
    assert only(ledger, "staging", "8.8.9").status == "rolled_back"


def test_production_canary_promotes_step_by_step(shop, ledger, slack):
    bootstrap(shop)
    stable_before = shop.platform("production").state.read()["roles"]["stable"]["replicas"]
    state, tasks = shop.run("deploy_shop_production", version="2.0.0")
    assert state == "success", tasks
    deployment = only(ledger, "production", "2.0.0")
    assert deployment.status == "succeeded" and deployment.previous_version == "1.0.0"
    assert traffic_weights(ledger, deployment.id) == [20, 50, 100]
    checks = [e.data for e in ledger.events(deployment.id, kind="gate")]
    assert len(checks) >= 8 and all(c["verdict"] == "pass" for c in checks)
    assert all(c["readings"]["error_rate"]["value"] == 0 for c in checks)
    split = shop.platform("production").traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("2.0.0", None, 0)
    time.sleep(0.3)
    assert not any(psutil.pid_exists(r["pid"]) and psutil.Process(r["pid"]).status() != psutil.STATUS_ZOMBIE
                   for r in stable_before)
    assert tasks["canary_deployment.rollback"] == "skipped"
    assert tasks["post_deployment_tasks.reenable_autoscaling"] == "success"
    assert any("2.0.0 deployment to production succeeded" in t for t in slack.texts)


def test_bad_canary_is_rolled_back_at_the_first_step(shop, ledger, slack):
    bootstrap(shop)
    platform = shop.platform("production")
    stable_pids = [r["pid"] for r in platform.state.read()["roles"]["stable"]["replicas"]]
    state, tasks = shop.run("deploy_shop_production", version="6.6.6")
    assert state == "failed"
    assert tasks["canary_deployment.step_1_20pct"] == "failed"
    assert tasks["canary_deployment.step_2_50pct"] == "upstream_failed"
    assert tasks["canary_deployment.rollback"] == "success"
    assert tasks["monitoring_and_alerting.restore_previous_version"] == "skipped"  # nothing was promoted
    deployment = only(ledger, "production", "6.6.6")
    assert deployment.status == "rolled_back" and "error_rate > 5%" in deployment.outcome_reason
    assert traffic_weights(ledger, deployment.id) == [20]
    # stable untouched, and all traffic back on it
    assert [r["pid"] for r in platform.state.read()["roles"]["stable"]["replicas"]] == stable_pids
    split = platform.traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("1.0.0", None, 0)
    versions = {requests.get(f"http://127.0.0.1:{shop.ports['production']}/api").headers["X-Deploy-Version"]
                for _ in range(30)}
    assert versions == {"1.0.0"}
    rollbacks = [t for t in slack.texts if "rolled back" in t]
    assert len(rollbacks) == 1 and "6.6.6" in rollbacks[0]
    assert len(ledger.events(deployment.id, kind="rollback")) == 1
    assert not any("6.6.6" in t and "FAILED" in t for t in slack.texts)  # announced once, as a rollback


def test_slow_canary_is_rolled_back_on_p99(shop, ledger):
    bootstrap(shop)
    state, tasks = shop.run("deploy_shop_production", version="7.7.7")
    assert state == "failed"
    deployment = only(ledger, "production", "7.7.7")
    assert deployment.status == "rolled_back" and "latency_p99" in deployment.outcome_reason
    assert shop.platform("production").traffic().stable_version == "1.0.0"


def test_canary_without_traffic_is_never_promoted(shop, ledger):
    bootstrap(shop)
    shop.stop_load()
    state, tasks = shop.run("deploy_shop_production", version="2.0.0")
    assert state == "failed"
    deployment = only(ledger, "production", "2.0.0")
    assert deployment.status == "rolled_back"
    checks = [e.data for e in ledger.events(deployment.id, kind="gate")]
    assert checks and all(c["verdict"] in ("inconclusive", "fail") for c in checks)
    assert len(checks) == 4  # threshold 3: the fourth failed check ends it
    assert traffic_weights(ledger, deployment.id) == [20]
    split = shop.platform("production").traffic()
    assert (split.stable_version, split.canary_version) == ("1.0.0", None)


def test_rollback_dag_restores_the_last_stable_version(shop, ledger):
    bootstrap(shop)
    assert shop.run("deploy_shop_production", version="2.0.0")[0] == "success"
    state, tasks = shop.run("rollback_shop_production", reason="customer reports")
    assert state == "success", tasks
    assert tasks["validation.run_smoke_tests"] == "success"
    assert tasks["validation.verify_error_rate"] == "success"
    rollback = [d for d in ledger.deployments("shop", "production") if d.kind == "rollback"][0]
    assert (rollback.version, rollback.previous_version, rollback.status) == ("1.0.0", "2.0.0", "succeeded")
    assert rollback.reason == "customer reports"
    assert shop.platform("production").traffic().stable_version == "1.0.0"
    assert ledger.last_stable_version("shop", "production") == "1.0.0"
    assert [e.kind for e in ledger.events(rollback.id, kind="incident")] == ["incident"]
    # the deployment it replaced is recorded as rolled back (no longer a stable version to go back to)
    replaced = [d for d in ledger.deployments("shop", "production") if d.version == "2.0.0"][0]
    assert replaced.status == "rolled_back" and replaced.outcome_reason.startswith(f"rolled back to 1.0.0 by {rollback.id}")
    # a chosen version that completed before (even though it was rolled back since)
    state, tasks = shop.run("rollback_shop_production", reason="back to 2.0.0", target_version="2.0.0")
    assert state == "success", tasks
    assert shop.platform("production").traffic().stable_version == "2.0.0"
    # a version that never succeeded here is refused before anything changes
    state, tasks = shop.run("rollback_shop_production", reason="typo", target_version="9.9.9")
    assert state == "failed" and tasks["rollback_decision.record_decision"] == "failed"
    assert shop.platform("production").traffic().stable_version == "2.0.0"


CRASHING_RUN = """
import sys
from airflow.dag_processing.dagbag import DagBag
DagBag(sys.argv[1]).dags["deploy_shop_production"].test(run_conf={"version": "2.0.0"})
"""


def test_crash_mid_canary_then_retry_converges(shop, ledger, dags_folder):
    bootstrap(shop)
    worker = subprocess.Popen([sys.executable, "-c", CRASHING_RUN, str(dags_folder)], env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    crashed_id = None
    while time.monotonic() < deadline and crashed_id is None:
        for d in ledger.deployments("shop", "production"):
            if d.version == "2.0.0" and 50 in traffic_weights(ledger, d.id):
                crashed_id = d.id
        time.sleep(0.1)
    assert crashed_id, "the canary never reached its second step"
    os.killpg(worker.pid, signal.SIGKILL)  # the worker dies mid-canary, with 50% on the canary
    worker.wait()
    platform = shop.platform("production")
    assert platform.traffic().canary_weight == 50

    state, tasks = shop.run("deploy_shop_production", version="2.0.0")  # the retry
    assert state == "success", tasks
    assert ledger.get(crashed_id).status == "failed" and "abandoned" in ledger.get(crashed_id).outcome_reason
    split = platform.traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("2.0.0", None, 0)
    data = platform.state.read()
    assert len(data["roles"]["stable"]["replicas"]) == 2 and data["roles"]["canary"] is None
    replicas = [p for p in psutil.process_iter(["cmdline"])
                if "airflow_deploy_provider.demo.app" in " ".join(p.info["cmdline"] or [])
                and "2.0.0" in (p.info["cmdline"] or [])]
    assert len(replicas) == 2  # converged: no duplicate replicas from the first attempt


def test_failure_after_promotion_restores_the_previous_version(shop, ledger):
    """The version passes the canary, is promoted, then starts failing during the post-rollout watch."""
    import threading

    bootstrap(shop)
    platform = shop.platform("production")

    def break_after_promotion() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for d in ledger.deployments("shop", "production"):
                if d.version == "2.0.0" and any("promoted" in (e.message or "")
                                                for e in ledger.events(d.id, kind="traffic")):
                    for rep in platform.state.read()["roles"]["stable"]["replicas"]:
                        requests.post(f"http://127.0.0.1:{rep['port']}/_demo/faults", json={"error_rate": 1.0},
                                      timeout=2)
                    return
            time.sleep(0.05)

    breaker = threading.Thread(target=break_after_promotion, daemon=True)
    breaker.start()
    state, tasks = shop.run("deploy_shop_production", version="2.0.0")
    breaker.join(5)
    assert state == "failed"
    assert tasks["canary_deployment.update_load_balancer"] == "success"  # it was promoted
    assert tasks["monitoring_and_alerting.watch_metrics"] == "failed"
    assert tasks["monitoring_and_alerting.restore_previous_version"] == "success"
    deployment = only(ledger, "production", "2.0.0")
    assert deployment.status == "rolled_back" and "watch_metrics" in deployment.outcome_reason
    split = platform.traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("1.0.0", None, 0)
    assert requests.get(f"http://127.0.0.1:{shop.ports['production']}/api").json()["version"] == "1.0.0"
