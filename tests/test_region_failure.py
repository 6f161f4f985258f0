"""What a failed region of a multi-region rollout gets, decided from its regional deployment in the ledger, in
real Airflow runs (``dag.test()``): the decision task follows one_failed, which ``upstream_failed`` also sets
off, so the ledger tells "the rollout never got there" from "its own run rolled back" from "it failed the
rollout's watch after its run succeeded". Then the rollout's verdict over every region."""

from __future__ import annotations

from pathlib import Path

import pytest

PARENT_DAG = "region_failure"
REGION = "eu-west-1"

DAG_FILE = f"""
from airflow.sdk import DAG, TriggerRule, task
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow_deploy_provider.operators.region import RegionFailureBranchOperator, RolloutVerdictOperator

common = dict(service="pay", environment="production")
common["deployment_id"] = "{{{{ dag.dag_id }}}}/rollout"  # the tests seed the ledger under this id
with DAG({PARENT_DAG!r}, schedule=None, params={{"fail": "observe"}}):
    @task
    def deploy(params=None):
        if params["fail"] == "deploy":
            raise RuntimeError("the regional run failed")

    @task
    def observe():
        raise RuntimeError("the rollout's watch of the region failed")

    @task
    def fine():
        return None

    d = deploy()
    o = observe()
    rollback = EmptyOperator(task_id="rollback_region")
    drain = EmptyOperator(task_id="move_dns_weight")
    decide = RegionFailureBranchOperator(task_id="if_region_failed", **common, region={REGION!r},
                                         rollback_task_id="rollback_region", drain_task_id="move_dns_weight",
                                         trigger_rule=TriggerRule.ONE_FAILED)
    d >> o >> decide >> [rollback, drain]
    verdict = RolloutVerdictOperator(task_id="verdict", **common, regions=["us-west-2", {REGION!r}, "us-east-1"],
                                     trigger_rule=TriggerRule.ALL_DONE)
    [rollback, drain] >> verdict

with DAG("region_fine", schedule=None):
    ok = fine.override(task_id="deploy")()
    rollback = EmptyOperator(task_id="rollback_region")
    drain = EmptyOperator(task_id="move_dns_weight")
    decide = RegionFailureBranchOperator(task_id="if_region_failed", **common, region={REGION!r},
                                         rollback_task_id="rollback_region", drain_task_id="move_dns_weight",
                                         trigger_rule=TriggerRule.ONE_FAILED)
    ok >> decide >> [rollback, drain]
    verdict = RolloutVerdictOperator(task_id="verdict", **common, regions=["us-west-2", {REGION!r}],
                                     trigger_rule=TriggerRule.ALL_DONE)
    [rollback, drain] >> verdict
"""


@pytest.fixture
def run(dags_folder: Path, airflow_db, ledger):
    from airflow.dag_processing.dagbag import DagBag

    (dags_folder / "region_failure.py").write_text(DAG_FILE)
    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}

    def run(dag_id: str = PARENT_DAG, regional: str | None = None, fail: str = "observe") -> tuple[str, dict]:
        run_id = f"run-{fail}-{regional}"
        parent = f"{dag_id}/rollout"
        ledger.start_deployment(id=parent, service="pay", environment="production", version="2.0.0", kind="rollout")
        ledger.start_deployment(id=f"us-west-2/{run_id}", service="pay", environment="production", version="2.0.0",
                                region="us-west-2", parent_id=parent)
        ledger.finish_deployment(f"us-west-2/{run_id}", "succeeded")
        if regional is not None:
            ledger.start_deployment(id=f"{REGION}/{run_id}", service="pay", environment="production",
                                    version="2.0.0", region=REGION, parent_id=parent)
            if regional != "running":
                ledger.finish_deployment(f"{REGION}/{run_id}", regional)
        dr = bag.dags[dag_id].test(run_conf={"fail": fail})
        return parent, {ti.task_id: ti.state for ti in dr.get_task_instances()}

    return run


def test_region_never_reached_gets_nothing(run, ledger):
    parent, states = run(regional=None, fail="deploy")
    assert states["observe"] == "upstream_failed"
    assert states["if_region_failed"] == "success"
    assert (states["rollback_region"], states["move_dns_weight"]) == ("skipped", "skipped")
    assert ledger.events(parent, kind="region_failed") == []
    # the verdict names every region's outcome and fails the rollout
    assert states["verdict"] == "failed"


def test_region_that_rolled_itself_back_is_only_drained(run, ledger):
    from airflow_deploy_provider.operators.region import failed_regions, region_outcomes

    parent, states = run(regional="rolled_back", fail="deploy")
    assert (states["rollback_region"], states["move_dns_weight"]) == ("skipped", "success")
    (event,) = ledger.events(parent, kind="region_failed")
    assert event.data["region"] == REGION and event.data["status"] == "rolled_back"
    assert event.data["actions"] == ["move_dns_weight"]
    assert failed_regions(ledger, parent) == {REGION}
    assert region_outcomes(ledger, parent, ["us-west-2", REGION, "us-east-1"]) == {
        "us-west-2": "succeeded", REGION: "rolled_back", "us-east-1": "not started"}


def test_region_that_failed_after_its_run_is_rolled_back_and_drained(run, ledger):
    from airflow_deploy_provider.operators.region import failed_regions, region_outcomes

    parent, states = run(regional="succeeded", fail="observe")
    assert states["deploy"] == "success" and states["observe"] == "failed"
    assert (states["rollback_region"], states["move_dns_weight"]) == ("success", "success")
    # marked failed in the rollout at once: later regions' DNS steps drain it while its rollback runs
    assert failed_regions(ledger, parent) == {REGION}
    assert region_outcomes(ledger, parent, [REGION])[REGION] == "failed"
    assert states["verdict"] == "failed"


def test_region_still_running_is_drained_and_left_to_its_run(run, ledger):
    parent, states = run(regional="running", fail="deploy")
    assert (states["rollback_region"], states["move_dns_weight"]) == ("skipped", "success")


def test_healthy_region_gets_nothing(run, ledger):
    parent, states = run(dag_id="region_fine", regional="succeeded")
    assert states["deploy"] == "success"
    assert (states["if_region_failed"], states["rollback_region"], states["move_dns_weight"]) == (
        "skipped", "skipped", "skipped")
    assert ledger.events(parent, kind="region_failed") == []
    assert states["verdict"] == "success"  # every region succeeded
