"""The ``airflow-deploy`` command, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import DATA, REPO, SERVICES, write_service

CLI = [sys.executable, "-m", "airflow_deploy_provider.cli"]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=os.environ.copy(), timeout=120)


def test_console_script_is_installed():
    exe = shutil.which("airflow-deploy") or str(Path(sys.executable).parent / "airflow-deploy")
    out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("airflow-deploy-provider ")


def test_validate_examples_exit_zero():
    result = run("validate", "dags/services")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 service(s) checked: 5 valid, 0 invalid; 0 error(s)" in result.stdout


def test_validate_reports_every_broken_service(tmp_path: Path):
    for case in ("01-weights-not-increasing",):
        shutil.copytree(DATA / "broken" / case, tmp_path / case)
        shutil.copy(DATA / "broken" / "_base" / "service.yaml", tmp_path / case / ".deploy" / "service.yaml")
    shutil.copytree(SERVICES / "hello", tmp_path / "hello")
    result = run("validate", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "01-weights-not-increasing/.deploy/production-config.yaml:10:15: error: canary.steps[2].weight:" \
        in result.stdout
    assert "1 valid, 1 invalid" in result.stderr


def test_validate_json(tmp_path: Path):
    write_service(tmp_path / "svc", {"service.yaml": "service: svc\nplatform:\n  command: [run, '{port}']\n",
                                     "dev.yaml": "environment: dev\nstrategy: recreate\n"})
    result = run("validate", "--format", "json", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    (issue,) = [i for i in report["issues"] if i["severity"] == "error"]
    assert issue == {"file": "svc/.deploy/dev.yaml", "line": 1, "column": 14, "path": "environment",
                     "message": "expected one of development, staging, production; got 'dev' (did you mean "
                                "'development'?)", "code": "environment-name", "severity": "error"}
    assert report["services"][0]["valid"] is False


def test_validate_strict_fails_on_warnings(tmp_path: Path):
    write_service(tmp_path / "svc", {"service.yaml": "service: svc\nplatform:\n  command: [run, '{port}']\n",
                                     "prod.yaml": "environment: production\nstrategy: recreate\n"})
    assert run("validate", str(tmp_path)).returncode == 0
    strict = run("validate", "--strict", str(tmp_path))
    assert strict.returncode == 1 and "recreate-downtime" in strict.stdout and "single-replica" in strict.stdout


def test_validate_usage_errors(tmp_path: Path):
    assert run("validate", str(tmp_path / "missing")).returncode == 2
    assert run("validate", str(tmp_path)).returncode == 1  # no services at all


def test_plan_shows_the_canary():
    result = run("plan", "dags/services/checkout", "--environment", "production", "--region", "us-east-1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Expected duration of a successful run: 1h" in out
    lines = [line.split() for line in out.splitlines()]
    steps = [line for line in lines if line and line[0].startswith("step_")]
    assert [s[0] for s in steps] == ["step_1_5pct", "step_2_25pct", "step_3_50pct", "step_4_100pct"]
    assert "route 5% of traffic to the new version, then watch 10m every 1m" in out
    assert "roll back at once if error_rate > 1% or latency_p99 > 1000ms or availability < 99.9%" in out
    assert "approval_gate.approve" in out  # waits are named
    assert "on failure:" in out and "canary_deployment.rollback" in out


def test_plan_multi_region_shows_order_waits_and_total():
    result = run("plan", "dags/services/checkout", "-e", "production")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "regions in rollout order: us-west-2 (canary, 10%, watch 30m), eu-west-1 (secondary, 25%, watch 15m), " \
           "ap-southeast-1 (secondary, 25%, watch 15m), us-east-1 (primary, 40%, watch 20m)" in out
    total = next(line for line in out.splitlines() if line.startswith("Expected duration"))
    assert total.startswith("Expected duration of a successful run: 5h") or total.startswith(
        "Expected duration of a successful run: 6h")


def test_plan_json():
    result = run("plan", "dags/services/hello", "-e", "production", "--format", "json")
    plan = json.loads(result.stdout)
    assert plan["dag_id"] == "deploy_hello_production"
    assert plan["expected_seconds"] > 10 * 60
    assert "canary_deployment.step_1_10pct" in plan["critical_path"]


def test_plan_errors(tmp_path: Path):
    assert run("plan", "dags/services", "-e", "production").returncode == 2  # several services
    assert "choose one with --service" in run("plan", "dags/services", "-e", "production").stderr
    assert run("plan", "dags/services", "-e", "staging", "-s", "hello").returncode == 2  # no staging file
    assert run("plan", "dags/services", "-e", "production", "-s", "hello").returncode == 0


def test_schema_is_valid_json_schema_that_editors_can_use():
    result = run("schema")
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    class StringDates(yaml.SafeLoader):  # editors see dates as strings
        pass

    StringDates.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
                                           for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for path in SERVICES.glob("*/.deploy/*.yaml"):
        data = yaml.load(path.read_text(), Loader=StringDates)
        assert list(validator.iter_errors(data)) == [], path
    bad = {"environment": "production", "strategy": "canary", "canry": {}}
    assert any("canry" in e.message for e in validator.iter_errors(bad))
    assert list(validator.iter_errors({"regions": [{"name": "x", "role": "boss", "weight": "10%"}]}))
    env_schema = json.loads(run("schema", "--kind", "environment").stdout)
    assert env_schema["properties"]["strategy"]["enum"] == ["recreate", "rolling", "bluegreen", "canary"]


def test_airflow_providers_list_shows_the_provider():
    out = subprocess.run([sys.executable, "-m", "airflow", "providers", "list", "-o", "json"], capture_output=True,
                         text=True, env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    providers = {p["package_name"]: p for p in json.loads(out.stdout)}
    assert "airflow-deploy-provider" in providers


@pytest.mark.parametrize("args", [[], ["frobnicate"]])
def test_bad_usage(args):
    assert run(*args).returncode == 2


def test_dora_reads_the_ledger_of_the_connection_or_the_url(tmp_path: Path):
    from airflow_deploy_provider.ledger.store import DeploymentLedger
    from tests.test_dora import build_history

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    build_history(DeploymentLedger.from_url(url))
    period = ("--since", "2024-05-01", "--until", "2024-05-30")
    # Without --ledger-url: the deploy_ledger connection, as the DAGs use it.
    env = dict(os.environ, AIRFLOW_CONN_DEPLOY_LEDGER=json.dumps({"conn_type": "deploy_ledger", "host": url}))
    result = subprocess.run([*CLI, "dora", *period, "--format", "json"], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    production = next(t for t in json.loads(result.stdout)["totals"] if t["environment"] == "production")
    assert production["deployment_frequency"]["count"] == 5
    assert production["verdicts"] == {"deployment_frequency": "high", "lead_time": "elite", "mttr": "pass",
                                      "change_failure_rate": "fail", "success_rate": "fail"}
    result = run("dora", "--ledger-url", url, *period, "--service", "checkout")
    assert result.returncode == 0, result.stderr
    assert "production (service checkout)" in result.stdout and "target < 30m: FAIL" in result.stdout
    result = run("dora", "--ledger-url", url, "--since", "2024-02-30")
    assert result.returncode == 2
    assert "airflow-deploy: --since: '2024-02-30' is not a date" in result.stderr
