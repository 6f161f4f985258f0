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


GEO = {
    "service.yaml": textwrap.dedent("""\
        service: geo
        platform:
          command: [python, -m, airflow_deploy_provider.demo.app, --port, "{port}", --version, "{version}"]
        """),
    "production.yaml": "environment: production\nstrategy: rolling\nreplicas: 1\n",
    "multi-region.yaml": textwrap.dedent("""\
        environment: production
        regions:
          - {name: us-west-2, role: canary, weight: 50%}
          - {name: us-east-1, role: primary, weight: 50%}
        """),
}


def test_a_regional_dag_runs_only_for_a_running_rollout_of_its_version(tmp_path, dags_folder, airflow_db, ledger,
                                                                     capfd):
    """A regional DAG has no approval, checklist or window of its own (the rollout holds them): a run that is
    not part of a running rollout of the same version is refused before anything is recorded or deployed."""
    write_service(tmp_path / "services" / "geo", GEO)
    (dags_folder / "geo.py").write_text(
        "from airflow_deploy_provider.factory import register_deploy_dags\n"
        f"register_deploy_dags(globals(), roots=[{str(tmp_path / 'services')!r}])\n")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}
    rollout, finished = "deploy_geo_production/rollout_1", "deploy_geo_production/rollout_0"
    for id, version in ((rollout, "2.0.0"), (finished, "1.0.0")):
        ledger.start_deployment(id=id, service="geo", environment="production", version=version, kind="rollout",
                                dag_id="deploy_geo_production", run_id=id.split("/")[1])
    ledger.finish_deployment(finished, "succeeded")
    hotfix = {"issue_id": "INC-1", "severity": "critical", "reason": "checkout is down for everyone"}
    cases = [
        ("deploy", {"version": "2.0.0"}, "This run has no parent_id"),
        ("deploy", {"version": "2.0.0", "parent_id": "deploy_geo_production/nope"},
         "parent_id 'deploy_geo_production/nope' is not a deployment of deploy_geo_production"),
        ("deploy", {"version": "1.0.0", "parent_id": finished}, f"Its run {finished} is succeeded, not running"),
        ("deploy", {"version": "3.0.0", "parent_id": rollout}, f"Its run {rollout} deploys 2.0.0, not 3.0.0"),
        ("hotfix", {"version": "2.0.0", "parent_id": rollout, **hotfix},
         f"only as part of a run of hotfix_geo (its approval, checklist and maintenance window); trigger that DAG. "
         f"parent_id '{rollout}' is not a deployment of hotfix_geo"),
    ]
    # Two cases as real runs (the start task fails, nothing recorded); the refusal itself for every case.
    for kind, conf, message in (cases[0], cases[-1]):
        dag_id = "hotfix_geo_us-west-2" if kind == "hotfix" else "deploy_geo_production_us-west-2"
        capfd.readouterr()
        run = bag.dags[dag_id].test(run_conf=conf)
        out, err = capfd.readouterr()
        assert str(run.state) == "failed", conf
        assert states(run)["start_deployment"] == "failed", conf
        assert message in out + err, (conf, out[-3000:])
        assert sorted(d.id for d in ledger.deployments("geo", "production")) == [finished, rollout], conf
    for kind, conf, message in cases:
        start = bag.dags["hotfix_geo_us-west-2" if kind == "hotfix" else "deploy_geo_production_us-west-2"] \
            .task_dict["start_deployment"]
        start.parent_id, start.version = conf.get("parent_id"), conf["version"]
        with pytest.raises(ValueError) as refused:
            start._check_parent(conf["version"])
        assert message in str(refused.value), conf
    from airflow_deploy_provider.platforms.local.platform import targets

    assert not [t for t in targets() if t.startswith("geo-")]  # nothing deployed
