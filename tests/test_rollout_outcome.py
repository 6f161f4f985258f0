"""The outcome of a multi-region rollout: per-region rows in the ledger event and a per-region table in the
notification, from the regional deployments the ledger holds for the rollout."""

from __future__ import annotations

from pathlib import Path


def test_rollout_outcome_lists_every_region(dags_folder: Path, airflow_db, ledger, slack):
    from airflow.dag_processing.dagbag import DagBag

    rollout = "deploy_pay_production/run-7"
    ledger.start_deployment(id=rollout, service="pay", environment="production", version="2.0.0", kind="rollout")
    for region, status in (("us-west-2", "succeeded"), ("eu-west-1", "rolled_back")):
        ledger.start_deployment(id=f"{region}/x", service="pay", environment="production", version="2.0.0",
                                region=region, parent_id=rollout)
        ledger.finish_deployment(f"{region}/x", status)
    notification = {"slack_conn_id": "slack_test", "channel": "#deploys", "events": ["failure"]}
    (dags_folder / "outcome.py").write_text(
        "from airflow.sdk import DAG\n"
        "from airflow_deploy_provider.operators.lifecycle import FinishDeploymentOperator\n"
        "with DAG('outcome', schedule=None):\n"
        "    FinishDeploymentOperator(task_id='handle_failure', service='pay', environment='production',\n"
        f"        deployment_id={rollout!r}, outcome='failed', notification={notification!r},\n"
        "        regions=['us-west-2', 'eu-west-1', 'ap-southeast-1', 'us-east-1'])\n")
    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}
    bag.dags["outcome"].test()

    (event,) = [e for e in ledger.events(rollout, kind="phase") if "regions" in e.data]
    assert [row[:2] for row in event.data["regions"]] == [
        ["region", "outcome"], ["us-west-2", "succeeded"], ["eu-west-1", "rolled_back"],
        ["ap-southeast-1", "not started"], ["us-east-1", "not started"]]
    assert ledger.get(rollout).status == "failed"
    import json

    (text,) = [json.dumps(r["json"]) for r in slack.requests if "pay" in json.dumps(r["json"])]
    for region in ("us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1"):
        assert region in text
    assert "not started" in text and "rolled_back" in text


def test_rollout_previous_version_is_the_last_complete_rollout(ledger):
    from airflow_deploy_provider.operators.lifecycle import StartDeploymentOperator

    for run, version, status in (("r1", "1.0.0", "succeeded"), ("r2", "1.5.0", "failed")):
        rollout = f"deploy_pay_production/{run}"
        ledger.start_deployment(id=rollout, service="pay", environment="production", version=version, kind="rollout")
        ledger.start_deployment(id=f"{run}/us-west-2", service="pay", environment="production", version=version,
                                region="us-west-2", parent_id=rollout)
        ledger.finish_deployment(f"{run}/us-west-2", "succeeded")
        ledger.finish_deployment(rollout, status)
    start = StartDeploymentOperator(task_id="start_deployment", service="pay", environment="production",
                                    kind="rollout", image_repository="pay", tag_template="{version}", version="2.0.0")
    release = start.resolve()
    # 1.5.0 reached a region but the rollout failed: 1.0.0 is what the last complete rollout deployed
    assert (release["version"], release["previous_version"]) == ("2.0.0", "1.0.0")


def test_commit_time_is_read_as_iso_8601_or_refused(ledger):
    """The start of the lead time for changes: an ISO 8601 time (UTC when it names no zone), or a clear refusal."""
    import pytest

    from airflow_deploy_provider.operators.lifecycle import StartDeploymentOperator

    def start(commit_time: str) -> StartDeploymentOperator:
        return StartDeploymentOperator(task_id="start_deployment", service="pay", environment="development",
                                       image_repository="pay", version="1.0.0", commit_time=commit_time)

    assert start("2026-11-20T10:00:00Z").resolve()["commit_time"] == "2026-11-20T10:00:00+00:00"
    assert start("2026-11-20T10:00:00").resolve()["commit_time"] == "2026-11-20T10:00:00+00:00"
    assert start("").resolve()["commit_time"] is None
    with pytest.raises(ValueError, match="commit_time 'yesterday' is not an ISO 8601 time such as"):
        start("yesterday").resolve()
