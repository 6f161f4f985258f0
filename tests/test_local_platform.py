"""The local platform with real processes: router, replicas, health checks, traffic, metrics, clean-up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import requests

from airflow_deploy_provider.config.types import BUILTIN_METRICS
from airflow_deploy_provider.metrics.base import MetricQuery
from airflow_deploy_provider.metrics.local import LocalMetricProvider
from airflow_deploy_provider.platforms.base import HealthCheckSpec, Target, WorkloadSpec
from airflow_deploy_provider.platforms.local import platform as local
from airflow_deploy_provider.platforms.local.platform import LocalPlatform
from airflow_deploy_provider.platforms.local.state import state_root

APP = ["python", "-m", "airflow_deploy_provider.demo.app", "--port", "{port}", "--version", "{version}"]
# A replica may take seconds to start on a loaded 2-core CI machine: tolerate it without slowing the happy path.
FAST = HealthCheckSpec(initial_delay=0.2, interval=0.2, timeout=2, failure_threshold=15)
FAULTS = json.dumps({"9.9-bad": {"error_rate": 1.0}, "9.9-slow": {"latency_ms": 300}})


def spec(version: str, replicas: int = 2, strategy: str = "recreate", **kw) -> WorkloadSpec:
    return WorkloadSpec(version=version, image=f"shop:{version}", replicas=replicas, strategy=strategy,
                        health_check=kw.pop("health_check", FAST), **kw)


def wait_ready(platform: LocalPlatform, role: str, version: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = platform.rollout_status(role)
        if status.done and status.version == version:
            return
        assert not status.failed, status
        time.sleep(0.1)
    raise AssertionError(f"{role} {version} not ready: {platform.rollout_status(role)}")


def our_processes(key: str) -> list[psutil.Process]:
    """Processes this target started: the router (by its state folder) and replicas (by their log file)."""
    found = []
    folder = str(state_root() / key)
    for proc in psutil.process_iter(["cmdline", "open_files"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if folder in cmd or any(folder in f.path for f in proc.open_files()):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    return found


@pytest.fixture
def platform(request, tmp_path):
    name = f"lp{abs(hash(request.node.name)) % 10**6}"
    p = LocalPlatform({"type": "local", "command": APP, "env": {"DEMO_FAULTS": FAULTS},
                       "service_root": str(tmp_path)}, Target(name, "production"))
    yield p
    p.down()
    assert our_processes(p.target.key) == []


def test_deploy_route_and_read_back(platform):
    platform.deploy(spec("1.0"), "stable")
    wait_ready(platform, "stable", "1.0")
    url = platform.endpoint()
    assert requests.get(url + "/api").json()["version"] == "1.0"
    platform.deploy(spec("2.0"), "canary")
    wait_ready(platform, "canary", "2.0")
    split = platform.set_traffic(25)
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("1.0", "2.0", 25)
    answered = Counter(requests.get(url + "/api").headers["X-Deploy-Version"] for _ in range(200))
    assert answered == {"1.0": 150, "2.0": 50}  # exactly 25 of every 100 requests
    # preview reaches the canary only, active the stable version only
    assert {requests.get(platform.endpoint("canary") + "/").json()["version"] for _ in range(5)} == {"2.0"}
    assert {requests.get(platform.endpoint("stable") + "/").json()["version"] for _ in range(5)} == {"1.0"}


def test_abort_moves_traffic_before_stopping_the_canary(platform):
    platform.deploy(spec("1.0"), "stable")
    wait_ready(platform, "stable", "1.0")
    stable_pids = {r["pid"] for r in platform.state.read()["roles"]["stable"]["replicas"]}
    platform.deploy(spec("9.9-bad"), "canary")
    wait_ready(platform, "canary", "9.9-bad")
    platform.set_traffic(50)
    stop = time.monotonic() + 3
    errors = 0
    platform.abort()
    while time.monotonic() < stop:  # after the abort no request reaches the failing version
        resp = requests.get(platform.endpoint() + "/api")
        errors += resp.status_code >= 500
    assert errors == 0
    assert platform.traffic().canary_version is None
    assert {r["pid"] for r in platform.state.read()["roles"]["stable"]["replicas"]} == stable_pids
    assert all(psutil.pid_exists(p) for p in stable_pids)


def test_promote_makes_the_canary_stable_and_stops_the_old_version(platform):
    platform.deploy(spec("1.0"), "stable")
    wait_ready(platform, "stable", "1.0")
    old = [r["pid"] for r in platform.state.read()["roles"]["stable"]["replicas"]]
    platform.deploy(spec("2.0"), "canary")
    wait_ready(platform, "canary", "2.0")
    platform.set_traffic(100)
    platform.promote()
    split = platform.traffic()
    assert (split.stable_version, split.canary_version, split.canary_weight) == ("2.0", None, 0)
    time.sleep(0.2)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in old)
    platform.promote()  # again: nothing to do
    assert platform.traffic().stable_version == "2.0"


def test_rolling_update_has_no_downtime(platform):
    platform.deploy(spec("1.0"), "stable")
    wait_ready(platform, "stable", "1.0")
    platform.deploy(spec("1.1", strategy="rolling"), "stable")
    codes = Counter()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        resp = requests.get(platform.endpoint() + "/api")
        codes[(resp.status_code, resp.json().get("version"))] += 1
        status = platform.rollout_status("stable")
        if status.done and status.version == "1.1":
            break
    assert all(code == 200 for code, _ in codes), codes
    assert requests.get(platform.endpoint() + "/api").json()["version"] == "1.1"


def test_a_crashing_version_fails_its_rollout_with_the_reason(platform):
    failing = LocalPlatform({**platform.settings, "command": ["python", "-c", "import sys; print('boom'); "
                                                                            "sys.exit(3)", "{port}"]},
                            platform.target)
    failing.deploy(spec("1.0", replicas=1), "stable")
    deadline = time.monotonic() + 10
    while not (status := failing.rollout_status("stable")).failed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status.failed and status.reason == "ProcessExited" and "boom" in status.message


def test_health_check_failures_count_to_the_threshold(platform):
    sick = LocalPlatform({**platform.settings, "command": ["python", "-m", "http.server", "{port}",
                                                           "--bind", "127.0.0.1"]}, platform.target)
    sick.deploy(spec("1.0", replicas=1, health_check=HealthCheckSpec(initial_delay=0.1, interval=0.1, timeout=1,
                                                                      failure_threshold=3)), "stable")
    results = []
    for _ in range(30):
        status = sick.rollout_status("stable")
        results.append(status.failed)
        if status.failed:
            break
        time.sleep(0.15)
    assert status.reason == "HealthCheckFailed"  # /health answers 404 here
    assert results.count(False) >= 2  # it took the threshold, not the first failure


def test_state_survives_a_new_platform_object_and_scale(platform):
    platform.deploy(spec("1.0", replicas=1), "stable")
    wait_ready(platform, "stable", "1.0")
    again = LocalPlatform(platform.settings, platform.target)  # like a worker restart
    assert again.traffic().stable_version == "1.0"
    again.scale("stable", 3)
    wait_ready(again, "stable", "1.0")
    assert len(again.state.read()["roles"]["stable"]["replicas"]) == 3
    again.scale("stable", 1)
    assert len(again.state.read()["roles"]["stable"]["replicas"]) == 1
    assert again.rollout_status("stable").desired == 1


def test_snapshot_and_restore(platform):
    platform.deploy(spec("1.0"), "stable")
    wait_ready(platform, "stable", "1.0")
    snap = platform.snapshot()
    assert snap["stable"]["version"] == "1.0" and "pid" not in json.dumps(snap)
    platform.deploy(spec("2.0"), "stable")
    wait_ready(platform, "stable", "2.0")
    assert platform.restore(snap) is False  # a rolling update back to 1.0: the caller waits for it
    wait_ready(platform, "stable", "1.0")
    assert platform.traffic().stable_version == "1.0"
    assert requests.get(platform.endpoint() + "/").json()["version"] == "1.0"


def test_metrics_of_a_version(platform):
    platform.deploy(spec("1.0"), "stable")
    wait_ready(platform, "stable", "1.0")
    platform.deploy(spec("9.9-bad"), "canary")
    wait_ready(platform, "canary", "9.9-bad")
    platform.set_traffic(50)
    for _ in range(100):
        requests.get(platform.endpoint() + "/api")
    provider = LocalMetricProvider({})

    def measure(name, version):
        q = MetricQuery(BUILTIN_METRICS[name], platform.target.service, "production", version, timedelta(seconds=30))
        return asyncio.run(provider.evaluate(q))

    bad = measure("error_rate", "9.9-bad")
    assert (bad.value, bad.sample_size) == (100.0, 50)
    good = measure("availability", "1.0")
    assert (good.value, good.sample_size) == (100.0, 50)
    assert measure("latency_p99", "1.0").value < 1000
    nothing = measure("error_rate", "3.0")
    assert nothing.value is None and nothing.sample_size == 0  # no data is not a pass
    admin = platform.state.read()["router"]["ports"]["admin"]
    text = requests.get(f"http://127.0.0.1:{admin}/metrics").text
    assert 'deploy_router_requests_total{code="500",role="canary",version="9.9-bad"} 50.0' in text
    assert 'deploy_router_request_duration_seconds_bucket{le="0.1",role="stable",version="1.0"}' in text


def test_maintenance_mode_serves_the_page_and_survives_a_router_restart(platform):
    platform.deploy(spec("1.0", replicas=1), "stable")
    wait_ready(platform, "stable", "1.0")
    url = platform.endpoint()
    assert platform.maintenance().enabled is False
    state = platform.set_maintenance(True, "Payments are paused <for> a fix.", retry_after=120)
    assert (state.enabled, state.message) == (True, "Payments are paused <for> a fix.")
    for _ in range(3):
        page = requests.get(url + "/api/pay")
        assert (page.status_code, page.headers["Retry-After"]) == (503, "120")
        assert "Payments are paused &lt;for&gt; a fix." in page.text and "text/html" in page.headers["Content-Type"]
    api = requests.get(url + "/api/pay", headers={"Accept": "application/json"})
    assert api.status_code == 503 and api.json() == {"error": "maintenance", "message": "Payments are paused <for> a fix."}
    assert requests.get(url + "/health").status_code == 200  # monitors still reach the replicas
    assert requests.get(platform.endpoint("stable") + "/api").json()["version"] == "1.0"  # so do tests
    # the page is not the version's answer: its statistics stay clean
    admin = platform.state.read()["router"]["ports"]["admin"]
    stats = requests.get(f"http://127.0.0.1:{admin}/admin/stats", params={"version": "1.0", "window": 60}).json()
    assert (stats["requests"], stats["errors_5xx"]) == (2, 0)  # /health and the active port's /api
    # the same call again changes nothing; a new router (a machine restart) serves the page again
    assert platform.set_maintenance(True, "Payments are paused <for> a fix.", retry_after=120).since == state.since
    router = platform.state.read()["router"]["process"]
    os.killpg(router["pid"], 15)
    platform.deploy(spec("1.0", replicas=2), "stable")  # restarts the router from the kept state
    wait_ready(platform, "stable", "1.0")
    assert requests.get(url + "/api/pay").status_code == 503
    assert platform.set_maintenance(False).enabled is False
    assert requests.get(url + "/api/pay").status_code == 200
    assert platform.set_maintenance(False).enabled is False  # leaving twice is fine
    assert "deploy_router_maintenance 0.0" in requests.get(f"http://127.0.0.1:{admin}/metrics").text


def test_cli_local_status_and_down(platform):
    platform.deploy(spec("1.0", replicas=1), "stable")
    wait_ready(platform, "stable", "1.0")
    env = os.environ.copy()
    cli = [sys.executable, "-m", "airflow_deploy_provider.cli", "local"]
    out = subprocess.run([*cli, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and f"{platform.target.key}: http://127.0.0.1:" in out.stdout
    assert "stable  1.0" in out.stdout and "1/1 replicas alive, 100% of traffic" in out.stdout
    assert subprocess.run([*cli, "down", "nope-production"], capture_output=True, env=env).returncode == 2
    down = subprocess.run([*cli, "down", platform.target.key], capture_output=True, text=True, env=env, timeout=60)
    assert down.returncode == 0 and "stopped 2 process(es)" in down.stdout
    assert our_processes(platform.target.key) == []
    assert platform.target.key not in local.targets()


def test_router_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = LocalPlatform({"type": "local", "command": APP, "port": port, "service_root": str(tmp_path)},
                          Target("busyport", "production"))
        try:
            with pytest.raises(Exception, match=f"is port {port} free"):
                p.deploy(spec("1.0", replicas=1), "stable")
        finally:
            p.down()
    assert Path(state_root()).exists()
