"""The regions of a multi-region rollout: their runs, what a failed region needs, and the rollout's verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator

if TYPE_CHECKING:
    from airflow_deploy_provider.ledger.store import Deployment, DeploymentLedger

#: Ledger event kind (on the global rollout) that marks a region as failed in this rollout.
REGION_FAILED = "region_failed"


def regional_deployments(ledger: DeploymentLedger, parent_id: str) -> dict[str, Deployment]:
    """Region -> its latest regional deployment of the global rollout ``parent_id``."""
    found: dict[str, Deployment] = {}
    for d in ledger.deployments(parent_id=parent_id):  # newest first: keep the latest try
        if d.region:
            found.setdefault(d.region, d)
    return found


def _marked(ledger: DeploymentLedger, parent_id: str) -> set[str]:
    """Regions the rollout marked failed (event ``region_failed``)."""
    return {e.data["region"] for e in ledger.events(parent_id, kind=REGION_FAILED) if e.data.get("region")}


def failed_regions(ledger: DeploymentLedger, parent_id: str) -> set[str]:
    """Regions that failed in the global rollout: their regional deployment failed or was rolled back, or the
    rollout found them failing afterwards (a region that passed its own run and then failed the rollout's watch
    is marked at once, before its rollback has run)."""
    failed = {region for region, d in regional_deployments(ledger, parent_id).items()
              if d.status in ("failed", "rolled_back")}
    return failed | _marked(ledger, parent_id)


def _outcome(d: Deployment | None, marked: bool) -> str:
    if d is None:
        return "not started"
    if d.status == "succeeded" and marked:
        return "failed"  # failed the rollout's watch; its rollback did not (yet) succeed
    return d.status


def region_outcomes(ledger: DeploymentLedger, parent_id: str, regions: Sequence[str]) -> dict[str, str]:
    """Region -> ``succeeded``, ``rolled_back``, ``failed``, ``running`` or ``not started``."""
    rows, marked = regional_deployments(ledger, parent_id), _marked(ledger, parent_id)
    return {region: _outcome(rows.get(region), region in marked) for region in regions}


def region_table(ledger: DeploymentLedger, parent_id: str, regions: Sequence[str]) -> list[list[str]]:
    """One row per region of the rollout: its outcome, version and duration (with a header row)."""
    rows, marked = regional_deployments(ledger, parent_id), _marked(ledger, parent_id)
    table = [["region", "outcome", "version", "duration"]]
    for region in regions:
        d = rows.get(region)
        seconds = d.duration_seconds if d is not None else None
        table.append([region, _outcome(d, region in marked), (d.version or "") if d else "",
                      f"{seconds / 60:.1f} min" if seconds is not None else ""])
    return table


class RegionalRunOperator(TriggerDagRunOperator):
    """
    Triggers a region's DAG (``deploy_<service>_production_<region>``, its rollback or hotfix DAG) and waits for
    it in the triggerer (no worker slot held); the task fails when the regional run fails. A retry finds the run
    it started (the run id is fixed) and waits for it again instead of starting a second one.

    Conf values that render empty (an unset ``commit``) are left out, so the regional DAG's optional params
    stay unset instead of receiving the text ``None``, which their validation rightly refuses.

    Template fields: those of ``TriggerDagRunOperator`` (``trigger_dag_id``, ``trigger_run_id``, ``conf``...).
    """

    def __init__(self, *, poke_interval: float = 5, **kwargs: Any) -> None:
        for name, value in (("wait_for_completion", True), ("deferrable", True), ("allowed_states", ["success"]),
                            ("failed_states", ["failed"]), ("skip_when_already_exists", True)):
            kwargs.setdefault(name, value)
        super().__init__(poke_interval=poke_interval, **kwargs)

    def describe(self) -> str:
        return f"run {self.trigger_dag_id} and wait for it"

    def execute(self, context: Any) -> Any:
        self.conf = {k: v for k, v in (self.conf or {}).items() if v not in (None, "", "None")}
        return super().execute(context)


class RegionFailureBranchOperator(DeploymentBaseOperator, BranchMixIn):
    """
    Decides what a region that failed in the global rollout needs, from its regional deployment in the ledger,
    and follows only those tasks. It runs when a task of the region's group failed or could not run (trigger
    rule ``one_failed``, which ``upstream_failed`` also sets off), so the ledger, not the trigger rule, tells
    the cases apart:

    * no regional deployment: the rollout never reached the region (or its run never started); nothing changed
      there, so nothing is done;
    * failed or rolled back: the region's own run already handled its failure (its watch restored the previous
      version); its DNS weight is moved to the healthy regions;
    * still running: its run is left to finish and handle itself; its DNS weight is moved;
    * succeeded: the region runs the new version but failed afterwards (the rollout's watch of the region, or its
      DNS step): the region is rolled back (its rollback DAG) and its DNS weight moved.

    A region found failed is recorded on the global rollout at once (event ``region_failed``), so DNS steps of
    later regions keep it drained even while its rollback runs.

    Template fields: ``deployment_id`` (the global rollout).

    :param region: the region.
    :param rollback_task_id: full id of the task that rolls the region back (omit when the policy does not).
    :param drain_task_id: full id of the task that moves the region's DNS weight (omit without DNS).
    """

    inherits_from_skipmixin = True
    ui_color = "#fad2cf"

    def __init__(self, *, region: str, rollback_task_id: str | None = None, drain_task_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(region=region, **kwargs)
        if rollback_task_id is None and drain_task_id is None:
            raise ValueError(f"{self.task_id}: nothing to choose from (no rollback or DNS task)")
        self.rollback_task_id = rollback_task_id
        self.drain_task_id = drain_task_id

    def describe(self) -> str:
        return (f"if {self.region} failed: what it needs, from its regional deployment in the ledger (roll it back "
                "when it runs the new version, move its DNS weight)")

    def choose_branch(self, context: Any) -> list[str]:
        assert self.region is not None
        d = regional_deployments(self.ledger, self.deployment_id).get(self.region)
        if d is None:
            self.log.info("%s: the rollout never reached this region; nothing changed there, nothing to do",
                          self.region)
            return []
        if d.status == "succeeded":
            chosen = [t for t in (self.drain_task_id, self.rollback_task_id) if t]
            why = (f"{self.region} runs {d.version} (its run {d.id} succeeded) but failed in the rollout afterwards: "
                   + ("roll it back" if self.rollback_task_id else "policy: no rollback")
                   + (" and move its DNS weight" if self.drain_task_id else ""))
        else:
            chosen = [self.drain_task_id] if self.drain_task_id else []
            why = (f"{self.region}: its run {d.id} is {d.status}"
                   + (" and handled its own failure (rolled back)" if d.status == "rolled_back" else "")
                   + ("; move its DNS weight" if self.drain_task_id else "; nothing more to do here"))
        self.ledger.record_event(self.deployment_id, REGION_FAILED, why, phase=self.task_group_id,
                                 task_id=self.task_id, data={"region": self.region, "regional": d.id,
                                                             "status": d.status, "actions": chosen})
        self.log.info("%s", why)
        return chosen

    def execute(self, context: Any) -> Any:
        return self.do_branch(context, self.choose_branch(context))


class RolloutVerdictOperator(DeploymentBaseOperator):
    """
    The verdict of a multi-region rollout once every region is done (trigger rule ``all_done``): it succeeds
    only when every region's deployment succeeded and none failed in the rollout afterwards; otherwise it fails
    naming each region's outcome (rolled back, failed, not started), which sends the run to its failure handler.
    With ``stopOnRegionFailure: false`` the later regions still deploy, and the rollout still fails: not every
    region runs the new version.

    Template fields: ``deployment_id`` (the global rollout).

    :param regions: the regions in rollout order.
    """

    ui_color = "#ceead6"

    def __init__(self, *, regions: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not regions:
            raise ValueError(f"{self.task_id}: no regions")
        self.regions = list(regions)

    def describe(self) -> str:
        return "the rollout's verdict: every region succeeded"

    def execute(self, context: Any) -> dict[str, str]:
        if self.ledger.get(self.deployment_id) is None:  # the start ended the run quietly (nothing to deploy)
            raise AirflowSkipException("no rollout in this run: no verdict")
        outcomes = region_outcomes(self.ledger, self.deployment_id, self.regions)
        self.log.info("per-region outcome:\n%s", "\n".join(f"  {r:<20} {o}" for r, o in outcomes.items()))
        wrong = {r: o for r, o in outcomes.items() if o != "succeeded"}
        if wrong:
            raise AirflowFailException("the rollout did not complete in every region: "
                                       + ", ".join(f"{r} {o}" for r, o in wrong.items()))
        return outcomes
