"""Test suites with reports and pass criteria: a real Locust load test against the demo app, JUnit verdicts,
the regression check against the last passing run, and the configured rollback after a traffic switch."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from airflow_deploy_provider.platforms.local.state import free_port
from airflow_deploy_provider.steps import Finding
from airflow_deploy_provider.steps.reports import parse_junit, parse_locust
from airflow_deploy_provider.steps.verdict import judge_suite

LOCUSTFILE = Path(__file__).resolve().parent.parent / "dags" / "services" / "storefront" / "tests" / "load" / \
    "locustfile.py"


@pytest.fixture(scope="module")
def demo_app():
    """Two versions of the demo app: a healthy one and one failing 30% of requests."""
    apps, procs = {}, []
    for name, args in (("good", []), ("bad", ["--error-rate", "0.3"])):
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.app", "--port", str(port),
                                       "--version", name, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        apps[name] = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    for url in apps.values():
        while True:
            try:
                requests.get(url + "/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "demo app did not start"
                time.sleep(0.1)
    yield apps
    for p in procs:
        p.terminate()
        p.wait(10)


def locust(url: str, tmp_path: Path, users: int = 10, seconds: int = 4) -> tuple[int, str]:
    prefix = tmp_path / "load"
    proc = subprocess.run([str(Path(sys.executable).parent / "locust"), "--headless", "-f", str(LOCUSTFILE),
                           "--host", url, "--users", str(users), "--spawn-rate", str(users), "--run-time",
                           f"{seconds}s", "--csv", str(prefix), "--only-summary"],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, Path(f"{prefix}_stats.csv").read_text()


@pytest.mark.slow
def test_locust_load_test_is_judged_by_its_criteria(demo_app, tmp_path):
    criteria = {"max_failure_rate": 1.0, "max_p95": timedelta(milliseconds=500), "min_requests": 10}
    code, csv = locust(demo_app["good"], tmp_path / "good")
    findings = parse_locust(csv)
    verdict = judge_suite("locust", findings, criteria, code)
    assert verdict["ok"], verdict
    assert verdict["stats"]["requests"] >= 10 and verdict["stats"]["failures"] == 0
    # one user sends one request per second: 10 users for 4 s make about 40 requests
    assert 10 <= verdict["stats"]["requests"] <= 80

    code, csv = locust(demo_app["bad"], tmp_path / "bad")
    assert code == 1  # Locust's own verdict: some request failed
    verdict = judge_suite("locust", parse_locust(csv), criteria, code)
    assert not verdict["ok"]
    assert "failure rate" in verdict["what"] and verdict["stats"]["failure_rate"] > 1.0

    # the same failures pass a suite that tolerates them, whatever Locust's exit status
    assert judge_suite("locust", parse_locust(csv), {**criteria, "max_failure_rate": 90.0}, code)["ok"]


def locust_row(requests_: int, failures: int, p95: float) -> list[Finding]:
    return [Finding(tool="locust", kind="request", id="Aggregated",
                    title=f"requests={requests_} failures={failures} p50=5 p95={p95} p99={p95 * 2} rps=10")]


def test_latency_and_regression_criteria():
    criteria = {"max_p95": timedelta(milliseconds=200), "max_regression": 20.0}
    assert judge_suite("locust", locust_row(100, 0, 150), criteria, 0, previous={"p95": 140})["ok"]
    slower = judge_suite("locust", locust_row(100, 0, 190), criteria, 0, previous={"p95": 140})
    assert not slower["ok"] and "over the last passing run" in slower["what"]  # 36% slower
    over = judge_suite("locust", locust_row(100, 0, 250), criteria, 0)
    assert not over["ok"] and "p95 250 ms over 200 ms" in over["what"]
    empty = judge_suite("locust", locust_row(0, 0, 0), {}, 0)
    assert not empty["ok"] and "needed for a verdict" in empty["what"]  # measuring nothing never passes
    assert not judge_suite("locust", locust_row(100, 0, 10), {}, 2)["ok"]  # Locust itself failed


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.test_app" name="test_a"/>
<testcase classname="tests.test_app" name="test_b"><failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.test_app" name="test_c"><skipped message="later"/></testcase>
</testsuite></testsuites>"""


def test_junit_verdict_counts_failed_tests():
    findings = parse_junit(JUNIT)
    assert [(f.id, f.passed) for f in findings] == [("tests.test_app::test_a", True), ("tests.test_app::test_b", False),
                                                     ("tests.test_app::test_c", None)]
    verdict = judge_suite("junit", findings, None, 1)
    assert not verdict["ok"] and "1 of 2 tests failed" in verdict["what"]
    assert judge_suite("junit", findings, {"max_failure_rate": 50.0}, 1)["ok"]
    assert not judge_suite("junit", [], None, 0)["ok"]  # no test ran: no verdict


def test_staging_without_blue_green_triggers_the_rollback_dag_when_a_suite_fails(tmp_path):
    from airflow_deploy_provider.config.loader import load_service
    from airflow_deploy_provider.factory import build_service_dags
    from tests.conftest import UNGOVERNED, write_service

    root = write_service(tmp_path / "svc", {
        "service.yaml": "service: svc\nplatform:\n  command: [python, -m, http.server, '{port}']\n"
                        "tests:\n  load:\n    command: [locust, -f, x.py]\n" + UNGOVERNED,
        "staging.yaml": "environment: staging\nstrategy: rolling\nreplicas: 2\npostDeploymentTests: [smoke, load]\n",
    })
    dag = build_service_dags(load_service(root).config)["deploy_svc_staging"]
    trigger = dag.task_dict["post_deployment_testing.trigger_rollback"]
    assert trigger.trigger_dag_id == "rollback_svc_staging"
    assert set(trigger.upstream_task_ids) == {"post_deployment_testing.smoke_tests", "post_deployment_testing.load_tests"}
    assert str(trigger.trigger_rule.value) == "one_failed"
    assert "post_deployment_testing.load_tests" in dag.task_dict["post_deployment_testing.smoke_tests"].downstream_task_ids
