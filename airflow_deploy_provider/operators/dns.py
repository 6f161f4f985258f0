"""Global traffic between regions (GeoDNS weights)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator, wait_for
from airflow_deploy_provider.registry import NotImplementedForPlatform


class RegionDnsWeightOperator(DeploymentBaseOperator):
    """
    Sets the weights of the regions' weighted DNS records (Route53 ``SetIdentifier`` = region) and reads them
    back.

    The records are the platform team's: only ``Weight`` changes (type, TTL, values or alias target stay). All
    regions change in one atomic ChangeBatch, nothing is submitted when every weight already matches, and the
    wait for Route53 to reach ``INSYNC`` happens in a trigger.

    Regions that failed get weight 0 and their share goes to the other regions in proportion: those in
    ``drain``, and those that failed in the global rollout ``failed_regions_of``: their regional deployment
    failed or was rolled back, or the rollout marked them failed (read from the ledger when the task runs).
    When no region is left, nothing changes: Route53 would split traffic evenly between all-zero records,
    failed region included.

    Template fields: ``deployment_id``, ``failed_regions_of``.

    :param dns: ``provider``, ``connection``, ``hosted_zone_id``, ``record_name``.
    :param weights: each region's configured share of global traffic, in percent.
    :param drain: regions known to have failed at this point of the rollout.
    :param failed_regions_of: ledger ``parent_id`` of the global rollout (``<dag_id>/<run_id>``), templated.
    :param deferrable: wait for the change in the triggerer (no worker slot held); ``False`` waits on the worker.
    :param poll_interval: seconds between ``GetChange`` calls.
    :param change_timeout: seconds the change may take to reach ``INSYNC``.
    """

    ui_color = "#fde7c8"
    expected_duration = timedelta(seconds=60)

    template_fields: Sequence[str] = ("deployment_id", "failed_regions_of", "drain")

    def __init__(self, *, dns: dict[str, Any], weights: dict[str, float], drain: Sequence[str] = (),
                 failed_regions_of: str | None = None, deferrable: bool = True, poll_interval: float = 10.0,
                 change_timeout: float = 600.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if abs(sum(weights.values()) - 100) > 1e-6 and sum(weights.values()) != 0:
            raise ValueError(f"{self.task_id}: region weights must add up to 100; got {weights}")
        if poll_interval <= 0 or change_timeout <= 0:
            raise ValueError(f"{self.task_id}: poll_interval and change_timeout must be positive")
        self.dns = dns
        self.configured = dict(weights)
        self.weights = dict(weights)  # with failed regions drained, once the task runs
        self.drain = list(drain)
        self.failed_regions_of = failed_regions_of
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.change_timeout = change_timeout

    def describe(self) -> str:
        text = "set GeoDNS weights: " + ", ".join(f"{r} {w:g}%" for r, w in self.configured.items())
        drained = ", ".join(self.drain) + (" and " if self.drain and self.failed_regions_of else "") + \
            ("regions that failed" if self.failed_regions_of else "")
        return text + (f"; {drained} get 0, their share moved to the others" if drained else "")

    def drained_weights(self) -> tuple[dict[str, float], list[str]]:
        """The configured shares with failed regions at 0, renormalised to 100 (all 0 if none is left)."""
        from airflow_deploy_provider.operators.region import failed_regions

        # drain is templated (an incident's failing region): a blank rendering drains nothing
        failed = {r for r in self.drain if r and r != "None"}
        unknown = failed - set(self.configured)
        if unknown:
            raise ValueError(f"{self.task_id}: unknown region(s) to drain: {', '.join(sorted(unknown))}")
        if self.failed_regions_of:
            failed |= failed_regions(self.ledger, self.failed_regions_of)
        kept = {r: (0.0 if r in failed else w) for r, w in self.configured.items()}
        total = sum(kept.values())
        return ({r: w * 100 / total for r, w in kept.items()} if total else kept), sorted(failed)

    # ------------------------------------------------------------------------------------------ helpers

    @property
    def _zone(self) -> str:
        return self.dns["hosted_zone_id"]

    @property
    def _name(self) -> str:
        return self.dns["record_name"]

    def _hook(self) -> Any:
        from airflow_deploy_provider.hooks.route53 import Route53WeightHook

        return Route53WeightHook(aws_conn_id=self.dns.get("connection") or "aws_default")

    def _table(self, title: str, before: dict[str, Any], after: dict[str, Any] | None, unmanaged: dict[str, int],
               targets: dict[str, str] | None = None) -> None:
        lines = [title, f"  {'region':<20} {'percent':>8} {'before':>8} {'after':>8}  target"]
        for region, percent in self.weights.items():
            old = before.get(region, "-")
            new = "-" if after is None else after.get(region, "-")
            lines.append(f"  {region:<20} {percent:>7.2f}% {old!s:>8} {new!s:>8}  {(targets or {}).get(region, '')}")
        for ident, weight in unmanaged.items():
            lines.append(f"  {ident:<20} {'(not a region of this rollout)':>26} {weight!s:>8}")
        self.log.info("%s", "\n".join(lines))

    # ------------------------------------------------------------------------------------------ execution

    def execute(self, context: Any) -> dict[str, Any] | None:
        if self.dns.get("provider", "route53") != "route53":
            raise NotImplementedForPlatform(
                f"DNS provider {self.dns.get('provider')!r} is not implemented in this version of "
                "airflow-deploy-provider")
        from airflow_deploy_provider.hooks.route53 import (
            MissingWeightedRecords,
            collapse,
            plan_weights,
            route53_weights,
        )

        self.weights, failed = self.drained_weights()
        if failed:
            self.log.info("regions that failed in this rollout get no traffic: %s", ", ".join(failed))
        target = route53_weights(self.weights)
        hook = self._hook()
        try:
            plan = plan_weights(hook.weighted_records(self._zone, self._name), target, hosted_zone_id=self._zone,
                                record_name=self._name)
        except MissingWeightedRecords as exc:
            self.record("dns", f"GeoDNS weights of {self._name}: FAILED, {exc}",
                        data={"record_name": self._name, "hosted_zone_id": self._zone, "error": str(exc)})
            raise AirflowFailException(str(exc)) from exc
        before = collapse(plan.before)
        if plan.unmanaged:
            self.log.warning("weighted records of %s that are not regions of this rollout keep their weights: %s",
                             self._name, plan.unmanaged)
        data: dict[str, Any] = {"record_name": self._name, "hosted_zone_id": self._zone, "types": plan.types,
                                "percent": dict(self.weights), "before": before, "target": target,
                                "unmanaged": plan.unmanaged, "points_at": plan.targets}
        if not any(target.values()):
            # Route53 splits traffic evenly when every weight is 0: that would send traffic back to the failed
            # region, so the weights stay as they are.
            self._table(f"{self._name}: no region to move traffic to; weights left unchanged", before, before,
                        plan.unmanaged, plan.targets)
            self.record("dns", f"GeoDNS weights of {self._name} unchanged: no healthy region to move traffic to",
                        data={**data, "after": before, "changed": False})
            return {**data, "after": before, "changed": False}
        if not plan.changes:
            self._table(f"{self._name}: weights already set; no change submitted", before, before, plan.unmanaged,
                        plan.targets)
            self.record("dns", f"GeoDNS weights of {self._name} already set: " + self._summary(before),
                        data={**data, "after": before, "changed": False})
            return {**data, "after": before, "changed": False}

        info = hook.submit(self._zone, plan.changes,
                           comment=f"airflow-deploy {self.deployment_id} {self.task_id}: {self.describe()}")
        change_id = info["Id"]
        self._table(f"{self._name}: submitted Route53 change {change_id} ({len(plan.changes)} record(s), "
                    f"{info.get('Status')})", before, target, plan.unmanaged, plan.targets)
        from airflow_deploy_provider.triggers.dns import Route53ChangeTrigger

        trigger = Route53ChangeTrigger(change_id=change_id, aws_conn_id=self.dns.get("connection") or "aws_default",
                                       deadline=time.time() + self.change_timeout, poll_interval=self.poll_interval,
                                       state={**data, "records_changed": len(plan.changes)})
        return wait_for(self, trigger, "execute_complete", context,
                        timedelta(seconds=self.change_timeout + 2 * self.poll_interval + 60), self.deferrable)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from airflow_deploy_provider.hooks.route53 import collapse

        state = dict(event.get("state") or {})
        state.update(change_id=event.get("change_id"), change_status=event.get("status"))
        if not event.get("ok"):
            self.record("dns", f"GeoDNS weights of {self._name}: FAILED, {event.get('reason')}",
                        data={**state, "error": event.get("reason")})
            raise AirflowException(f"{self._name}: {event.get('reason')} (the weights were submitted; a retry "
                                   "finds them set and does not submit them again)")
        target: dict[str, int] = state["target"]
        read = self._hook().weights(self._zone, self._name)
        after = collapse({region: read.get(region, {}) for region in target})
        wrong = {region: read.get(region) for region, weight in target.items()
                 if not read.get(region) or set(read[region].values()) != {weight}}
        self._table(f"{self._name}: Route53 change {event.get('change_id')} is {event.get('status')}; weights read "
                    "back", state["before"], after, state.get("unmanaged") or {}, state.get("points_at"))
        state.update(after=after, changed=True)
        if wrong:
            message = (f"{self._name} in hosted zone {self._zone}: weights read back differ from those set: "
                       + ", ".join(f"{region} {got} (wanted {target[region]})" for region, got in wrong.items()))
            self.record("dns", f"GeoDNS weights: FAILED, {message}", data={**state, "error": message})
            raise AirflowException(message)
        self.record("dns", f"GeoDNS weights of {self._name} set: " + self._summary(after), data=state)
        return state

    def _summary(self, weights: dict[str, Any]) -> str:
        return ", ".join(f"{region} {weights.get(region)}" for region in self.weights)
