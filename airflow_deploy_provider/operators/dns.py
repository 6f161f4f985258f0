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
    :param require_drain: fail when ``drain`` renders blank (an incident's fail over needs its region).
    :param failed_regions_of: ledger ``parent_id`` of the global rollout (``<dag_id>/<run_id>``), templated.
    :param deferrable: wait for the change in the triggerer (no worker slot held); ``False`` waits on the worker.
    :param poll_interval: seconds between ``GetChange`` calls.
    :param change_timeout: seconds the change may take to reach ``INSYNC``.
    """

    ui_color = "#fde7c8"
    expected_duration = timedelta(seconds=60)

    template_fields: Sequence[str] = ("deployment_id", "failed_regions_of", "drain")

    def __init__(self, *, dns: dict[str, Any], weights: dict[str, float], drain: Sequence[str] = (),
                 failed_regions_of: str | None = None, require_drain: bool = False, deferrable: bool = True,
                 poll_interval: float = 10.0, change_timeout: float = 600.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if abs(sum(weights.values()) - 100) > 1e-6 and sum(weights.values()) != 0:
            raise ValueError(f"{self.task_id}: region weights must add up to 100; got {weights}")
        if poll_interval <= 0 or change_timeout <= 0:
            raise ValueError(f"{self.task_id}: poll_interval and change_timeout must be positive")
        self.dns = dns
        self.configured = dict(weights)
        self.weights = dict(weights)  # with failed regions drained, once the task runs
        self.drain = list(drain)
        self.require_drain = require_drain
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
        if self.require_drain and not failed:
            raise AirflowFailException(f"{self.task_id}: no region to move traffic away from; trigger the run with "
                                       f"the 'region' param (one of {', '.join(self.configured)})")
        unknown = failed - set(self.configured)
        if unknown:
            raise ValueError(f"{self.task_id}: unknown region(s) to drain: {', '.join(sorted(unknown))}")
        if self.failed_regions_of:
            failed |= failed_regions(self.ledger, self.failed_regions_of)
        return shares(self.configured, failed), sorted(failed)

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
        self._check_provider()
        self.weights, failed = self.drained_weights()
        if failed:
            self.log.info("regions that failed in this rollout get no traffic: %s", ", ".join(failed))
        return self.set_weights(context)

    def _check_provider(self) -> None:
        if self.dns.get("provider", "route53") != "route53":
            raise NotImplementedForPlatform(
                f"DNS provider {self.dns.get('provider')!r} is not implemented in this version of "
                "airflow-deploy-provider")

    def set_weights(self, context: Any, extra: dict[str, Any] | None = None) -> Any:
        """Set ``self.weights`` (percent per region) in one Route53 change and read them back, then continue with
        :meth:`after_weights`. The wait for ``INSYNC`` happens in a trigger, unless Route53 answers the change
        ``INSYNC`` at once. ``extra`` travels with the change's state (through a deferral) to ``after_weights``."""
        from airflow_deploy_provider.hooks.route53 import (
            MissingWeightedRecords,
            collapse,
            plan_weights,
            route53_weights,
        )

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
                                "unmanaged": plan.unmanaged, "points_at": plan.targets, **(extra or {})}
        if not any(target.values()):
            # Route53 splits traffic evenly when every weight is 0: that would send traffic back to the failed
            # region, so the weights stay as they are.
            self._table(f"{self._name}: no region to move traffic to; weights left unchanged", before, before,
                        plan.unmanaged, plan.targets)
            self.record("dns", f"GeoDNS weights of {self._name} unchanged: no healthy region to move traffic to",
                        data={**data, "after": before, "changed": False})
            return self.after_weights(context, {**data, "after": before, "changed": False})
        if not plan.changes:
            self._table(f"{self._name}: weights already set; no change submitted", before, before, plan.unmanaged,
                        plan.targets)
            self.record("dns", f"GeoDNS weights of {self._name} already set: " + self._summary(before),
                        data={**data, "after": before, "changed": False})
            return self.after_weights(context, {**data, "after": before, "changed": False})

        info = hook.submit(self._zone, plan.changes,
                           comment=f"airflow-deploy {self.deployment_id} {self.task_id}: {self.describe()}")
        change_id = info["Id"]
        self._table(f"{self._name}: submitted Route53 change {change_id} ({len(plan.changes)} record(s), "
                    f"{info.get('Status')})", before, target, plan.unmanaged, plan.targets)
        state = {**data, "records_changed": len(plan.changes)}
        if info.get("Status") == "INSYNC":  # nothing to wait for: read back now instead of deferring
            return self.execute_complete(context, {"ok": True, "status": "INSYNC", "change_id": change_id,
                                                   "reason": "change is INSYNC", "polls": 0, "state": state})
        from airflow_deploy_provider.triggers.dns import Route53ChangeTrigger

        trigger = Route53ChangeTrigger(change_id=change_id, aws_conn_id=self.dns.get("connection") or "aws_default",
                                       deadline=time.time() + self.change_timeout, poll_interval=self.poll_interval,
                                       state=state)
        return wait_for(self, trigger, "execute_complete", context,
                        timedelta(seconds=self.change_timeout + 2 * self.poll_interval + 60), self.deferrable)

    def after_weights(self, context: Any, result: dict[str, Any]) -> Any:
        """What follows once the weights are set and read back (the task's result here)."""
        return result

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from airflow_deploy_provider.hooks.route53 import collapse

        state = dict(event.get("state") or {})
        state.update(change_id=event.get("change_id"), change_status=event.get("status"))
        # What was submitted (on a worker resumed after the wait, not the configured shares).
        self.weights = dict(state.get("percent") or self.weights)
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
        return self.after_weights(context, state)

    def _summary(self, weights: dict[str, Any]) -> str:
        return ", ".join(f"{region} {weights.get(region)}" for region in self.weights)


def shares(configured: dict[str, float], failed: set[str] | frozenset[str] = frozenset(),
           partial: dict[str, float] | None = None) -> dict[str, float]:
    """Percent of global traffic per region: ``failed`` regions get none; each region in ``partial`` gets that
    fraction (0-1) of its configured share; the other regions share the rest in proportion to their configured
    shares. With no other region left the partial ones share everything; with no region at all, all 0."""
    partial = {r: f for r, f in (partial or {}).items() if r not in failed}
    fixed = {r: configured[r] * f for r, f in partial.items()}
    free = {r: w for r, w in configured.items() if r not in failed and r not in partial}
    total_free, total_fixed = sum(free.values()), sum(fixed.values())
    if total_free == 0:
        return {r: (fixed.get(r, 0.0) * 100 / total_fixed if total_fixed else 0.0) for r in configured}
    left = 100 - total_fixed
    return {r: fixed[r] if r in fixed else free.get(r, 0.0) * left / total_free for r in configured}


class RestoreRegionTrafficOperator(RegionDnsWeightOperator):
    """
    One step of the gradual restoration after a fail over: the region that was failed over gets ``percent`` of
    its configured share of global traffic back (the other regions share the rest in proportion to theirs), set
    in one Route53 change and read back; then the region's metrics are watched for ``pause`` against the
    rollback conditions, in :class:`~airflow_deploy_provider.triggers.metric_gate.MetricGateTrigger` (no worker
    slot held; a pass ends the task from the trigger). A bad watch sets the region's weight back to 0, its
    traffic on the other regions again, and fails the task.

    Retry-safe: nothing is submitted when the weights already match, and a retry after the region was drained
    again starts the step over.

    Template fields: ``deployment_id``, ``failed_regions_of``, ``drain``, ``region_to_restore``.

    :param region_to_restore: the region that was failed over (templated); blank: nothing was, the step skips.
    :param percent: the share of its configured weight the region has after this step, 1-100.
    :param targets: region -> ``platform`` and ``metrics_provider`` settings: where the watch measures.
    :param metrics: gate metrics (``name``, ``unit``, ``max``, ``min``, ``query``).
    :param conditions: rollback conditions ending the watch at once.
    :param pause: how long the region is watched at this step; 0: not watched.
    :param interval: time between checks.
    :param failure_limit: failed checks tolerated over the whole restoration.
    """

    template_fields: Sequence[str] = (*RegionDnsWeightOperator.template_fields, "region_to_restore")
    ui_color = "#c8e6c9"
    BUDGET = "incident-restoration"

    def __init__(self, *, region_to_restore: str, percent: int, targets: dict[str, dict[str, Any]],
                 metrics: list[dict[str, Any]], conditions: list[dict[str, Any]] | None = None,
                 pause: timedelta = timedelta(minutes=5), interval: timedelta | None = None,
                 failure_limit: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 1 <= percent <= 100:
            raise ValueError(f"{self.task_id}: percent must be 1-100; got {percent}")
        missing = set(self.configured) - set(targets)
        if missing:
            raise ValueError(f"{self.task_id}: no platform settings for region(s) {', '.join(sorted(missing))}")
        self.region_to_restore = region_to_restore
        self.percent = percent
        self.targets = targets
        self.metrics = metrics
        self.conditions = conditions or []
        self.pause = pause.total_seconds()
        self.interval = (interval or pause / 5).total_seconds() if self.pause else 0.0
        if self.pause and not 0 < self.interval <= self.pause:
            raise ValueError(f"{self.task_id}: interval must be positive and at most the pause")
        self.failure_limit = failure_limit
        self.expected_duration = timedelta(seconds=self.pause + 5)

    def describe(self) -> str:
        text = f"the failed-over region back to {self.percent}% of its configured weight"
        return text + (f", its metrics watched {self.pause:g}s (bad: its traffic back on the others)"
                       if self.pause else "")

    def _region(self) -> str | None:
        region = (self.region_to_restore or "").strip()
        if region in ("", "None"):
            return None
        if region not in self.configured:
            raise AirflowFailException(f"{self.task_id}: {region!r} is not one of the regions "
                                       f"{', '.join(self.configured)}")
        return region

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        self._check_provider()
        region = self._region()
        if region is None:
            raise AirflowSkipException("no region was failed over (param 'region' empty): nothing to restore")
        self.weights = shares(self.configured, partial={region: self.percent / 100})
        return self.set_weights(context, {"phase": "restore", "region": region, "step_percent": self.percent})

    def after_weights(self, context: Any, result: dict[str, Any]) -> Any:
        region = result.get("region") or self._region()
        if result.get("phase") == "drain":
            message = f"{result.get('reason')}; {region}'s traffic is back on the other regions"
            self.record("incident", f"restoration stopped at {self.percent}%: {message}",
                        data={"stage": "restoration_failed", "region": region, "percent": self.percent})
            raise AirflowFailException(message)
        self.record("incident", f"{region} back to {self.percent}% of its configured weight",
                    data={"stage": f"restored_{self.percent}", "region": region, "percent": self.percent,
                          "weights": result.get("after")})
        if not self.pause:
            return result
        return self._watch(context, region)

    def _watch(self, context: Any, region: str) -> Any:
        from airflow_deploy_provider.registry import get_platform
        from airflow_deploy_provider.triggers.metric_gate import MetricGateTrigger

        target = self.targets[region]
        version = get_platform(target["platform"], self.service, self.environment, region).traffic().stable_version
        if not version:
            return self._drain(context, region, f"nothing serves in {region}")
        failures = sum(1 for e in self.ledger.events(self.deployment_id, kind="gate")
                       if e.data.get("budget") == self.BUDGET and e.data.get("verdict") != "pass")
        gate = {"metrics": self.metrics, "conditions": self.conditions, "interval": self.interval,
                "duration": self.pause, "min_requests": 0, "failure_limit": self.failure_limit,
                "failures_so_far": failures, "budget": self.BUDGET}
        self.log.info("Watching %s (%s) at %d%% for %gs: %s", region, version, self.percent, self.pause,
                      ", ".join(m["name"] for m in self.metrics))
        trigger = MetricGateTrigger(
            gate=gate, query={"service": self.service, "environment": self.environment, "region": region,
                              "version": version, "role": "stable", "stable_version": None},
            provider=target["metrics_provider"], deployment_id=self.deployment_id,
            ledger_conn_id=self.ledger_conn_id, label=self.task_id, end_task=self.deferrable)
        timeout = timedelta(seconds=self.pause + self.interval * (self.failure_limit + 3) + 300)
        return wait_for(self, trigger, "gate_complete", context, timeout, self.deferrable)

    def gate_complete(self, context: Any, event: dict[str, Any] | str) -> Any:
        region = self._region()
        assert region is not None
        if event == "success" or (isinstance(event, dict) and event.get("decision") == "pass"):
            self.log.info("%s holds at %d%%", region, self.percent)
            return {"region": region, "percent": self.percent, "decision": "pass"}
        reason = event.get("reason") if isinstance(event, dict) else str(event)
        return self._drain(context, region, f"{region} failed its watch at {self.percent}%: {reason}")

    def _drain(self, context: Any, region: str, reason: str) -> Any:
        self.weights = shares(self.configured, failed={region})
        return self.set_weights(context, {"phase": "drain", "region": region, "reason": reason})
