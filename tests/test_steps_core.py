"""The step framework: which runner a declared step uses, commands with secrets from connections, and the
verdict and ledger record of a step run on the worker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_deploy_provider.operators.steps import PipelineStepOperator
from airflow_deploy_provider.steps.defaults import resolve_runner

SECRET = "s3cr3t-value-never-logged"


def test_an_empty_entry_takes_the_steps_default_for_the_platform():
    assert resolve_runner("build-image", {}, "local")["builtin"].endswith("artifacts:build")
    assert resolve_runner("build-image", {}, "kubernetes")["image"].startswith("gcr.io/kaniko-project/executor")
    assert resolve_runner("configure-alerts", {}, "local") is None  # no default: the config check refuses it
    declared = {"command": ["trivy", "fs", "--format", "json", "."]}
    assert resolve_runner("scan-cves", declared, "local")["report"] == {"format": "trivy"}  # known tool
    own = {"command": ["./scan.sh"], "report": {"format": "junit", "path": "out.xml"}}
    assert resolve_runner("scan-cves", own, "local") == own


def step(task_id: str, runner: dict, tmp_path: Path, name: str = "unit-tests") -> PipelineStepOperator:
    from airflow_deploy_provider.ledger.hook import get_ledger

    get_ledger("deploy_ledger").start_deployment(id=f"svc/{task_id}", service="svc", environment="development",
                                                 version="1.0.0", image="svc:1.0.0")
    return PipelineStepOperator(task_id=task_id, step=name, runner=runner, platform={"type": "local"},
                                service="svc", environment="development", deployment_id=f"svc/{task_id}",
                                version="1.0.0", image="svc:1.0.0", commit="abcdef1234567",
                                service_root=str(tmp_path))


def test_a_command_gets_its_secret_from_a_connection_and_the_ledger_never_sees_it(tmp_path, ledger, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRY", json.dumps({"conn_type": "generic", "login": "bot",
                                                           "password": SECRET, "extra": {"token": "t0k"}}))
    monkeypatch.setenv("DEPLOY_REPORTS_DIR", str(tmp_path / "reports"))
    script = ("import hashlib, os, pathlib; pathlib.Path('seen').write_text("
              "hashlib.sha256(os.environ['REGISTRY_PASSWORD'].encode()).hexdigest() + ' ' + os.environ['TOKEN'] + "
              "' ' + os.environ['DEPLOY_VERSION'])")
    op = step("push", {"command": ["python", "-c", script, "{short_sha}"],
                       "secrets": {"REGISTRY_PASSWORD": {"connection": "registry", "field": "password"},
                                   "TOKEN": {"connection": "registry", "field": "extra.token"}}}, tmp_path)
    result = op.execute({})
    assert result["ok"] and result["exit_code"] == 0
    assert (tmp_path / "seen").read_text() == f"{hashlib.sha256(SECRET.encode()).hexdigest()} t0k 1.0.0"
    (event,) = ledger.events("svc/push", kind="step")
    assert event.data["ok"] and event.data["command"][-1] == "abcdef1"  # placeholders filled
    assert SECRET not in json.dumps(event.data)


def test_a_missing_secret_connection_fails_the_step_before_running_it(tmp_path, ledger, monkeypatch):
    monkeypatch.setenv("DEPLOY_REPORTS_DIR", str(tmp_path / "reports"))
    op = step("nosecret", {"command": ["python", "-c", "open('ran', 'w')"],
                           "secrets": {"TOKEN": {"connection": "nowhere", "field": "password"}}}, tmp_path)
    with pytest.raises(AirflowException, match="secret TOKEN: cannot read connection 'nowhere'"):
        op.execute({})
    assert not (tmp_path / "ran").exists()
    (event,) = ledger.events("svc/nosecret", kind="step")
    assert event.data["ok"] is False


def test_failed_tests_in_the_report_fail_the_step_even_when_the_runner_exits_zero(tmp_path, ledger, monkeypatch):
    monkeypatch.setenv("DEPLOY_REPORTS_DIR", str(tmp_path / "reports"))
    xml = ('<testsuite><testcase classname="t" name="ok"/><testcase classname="t" name="bad">'
           '<failure message="boom"/></testcase></testsuite>')
    runner = {"command": ["python", "-c", f"open('{{reports}}/r.xml', 'w').write({xml!r})"],
              "report": {"format": "junit", "path": "{reports}/r.xml"}}
    with pytest.raises(AirflowException, match="1 failed test"):
        step("junit", runner, tmp_path).execute({})
    (event,) = ledger.events("svc/junit", kind="step")
    assert event.data["findings_total"] == 2 and not event.data["ok"]


def test_a_report_that_does_not_parse_never_counts_as_clean(tmp_path, ledger, monkeypatch):
    monkeypatch.setenv("DEPLOY_REPORTS_DIR", str(tmp_path / "reports"))
    runner = {"command": ["python", "-c", "print('not xml')"], "report": {"format": "junit"}}
    with pytest.raises(AirflowException, match="junit report could not be read"):
        step("garbled", runner, tmp_path).execute({})
