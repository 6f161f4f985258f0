"""Generated DAGs run under ``dag.test()``: the ledger records, Slack hears, and nothing pretends."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from tests.conftest import write_service

SERVICE = {
    "service.yaml": textwrap.dedent("""\
        service: web
        platform:
          type: ecs
          cluster: shop
        notifications:
          slack:
            connection: slack_test
            channel: "#deploys"
        """),
    "development.yaml": "environment: development\nstrategy: recreate\n",
}


@pytest.fixture
def web_dags(tmp_path: Path, dags_folder: Path, airflow_db, ledger, monkeypatch):
    # The service's platform is not installed here (as a plugin platform may not be): its steps fail clearly.
    from airflow_deploy_provider import registry

    monkeypatch.delitem(registry.BUILTIN_PLATFORMS, "ecs")
    write_service(tmp_path / "services" / "web", SERVICE)
    (dags_folder / "web_dags.py").write_text(
        "from airflow_deploy_provider.factory import register_deploy_dags\n"
        f"register_deploy_dags(globals(), roots=[{str(tmp_path / 'services')!r}])\n")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}
    return bag


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_unimplemented_platform_fails_clearly_and_is_recorded(web_dags, slack, ledger):
    dag = web_dags.dags["deploy_web_development"]
    run = dag.test(run_conf={"commit": "3f2c9ab00d", "author": "alice", "message": "fix checkout"})

    assert str(run.state) == "failed"  # a failed deployment fails the run
    got = states(run)
    assert got["code_push.extract_commit_metadata"] == "success"
    assert got["deploy_to_dev.deploy_version"] == "failed"
    assert got["notification.notify_failure"] == "success"
    assert got["notification.notify_success"] == "upstream_failed"

    (deployment,) = ledger.deployments("web", "development")
    assert deployment.status == "failed"
    assert deployment.version == "3f2c9ab" and deployment.image == "web:dev-3f2c9ab"
    assert deployment.commit_sha == "3f2c9ab00d" and deployment.author == "alice"
    assert "deploy_to_dev.deploy_version" in deployment.outcome_reason

    texts = slack.texts
    assert len(texts) == 2, texts
    assert texts[0].startswith("web 3f2c9ab deployment to development started")
    assert "FAILED" in texts[1] and "deploy_to_dev.deploy_version" in texts[1]
    blocks = slack.requests[1]["json"]["blocks"]
    fields = " ".join(f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", []))
    assert "*Service*\nweb" in fields and "*Environment*\ndevelopment" in fields and "*Duration*" in fields
    link = [b for b in blocks if b["type"] == "context"][0]["elements"][0]["text"]
    assert "/dags/deploy_web_development/runs/" in link


def test_task_log_names_the_missing_platform(web_dags, slack, ledger, capfd):
    dag = web_dags.dags["deploy_web_development"]
    dag.test(run_conf={"commit": "4f2c9ab00d"})
    out, err = capfd.readouterr()
    assert "deployments on platform 'ecs' are not implemented" in out + err


def test_params_are_validated(web_dags):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    def with_conf(conf: dict) -> ParamsDict:
        params = copy.deepcopy(web_dags.dags["deploy_web_development"].params)
        params.update(conf)
        return params

    assert with_conf({"commit": "3f2c9ab"}).validate()["commit"] == "3f2c9ab"
    for bad in ({"commit": "not-a-sha"}, {"commit": "3f2c9ab", "version": "1.0; rm -rf /"},
                {"commit": "3f2c9ab", "branch": "../etc"}):
        with pytest.raises(ParamValidationError):
            with_conf(bad).validate()


def test_start_refuses_input_without_version_or_commit(web_dags, slack, ledger):
    dag = web_dags.dags["deploy_web_development"]
    run = dag.test(run_conf={})
    assert str(run.state) == "failed"
    assert states(run)["code_push.extract_commit_metadata"] == "failed"
    assert ledger.deployments("web") == []  # nothing recorded, nothing announced
    assert slack.requests == []
