"""DORA metrics and deployment KPIs computed from the deployment ledger.

:func:`compute_dora` reads the ledger for a period and returns a :class:`DoraReport`: one row per service
and environment, one total per environment across the services, each with

* deployment frequency: deployments that completed (succeeded, or succeeded and were replaced later by a
  rollback), per day and per week, with DORA's band;
* lead time for changes: commit time to the deployment's finish, median and p90, with DORA's band;
* mean time to recovery (MTTR): incidents from the start of trouble to the finish of what recovered;
* change failure rate: finished deployments that failed or were rolled back (at once or later);
* deployment success rate: finished deployments that completed;
* rollback frequency: rollbacks (automatic ones and rollback runs), per week and as a share of deployments.

What counts as a deployment: a top-level row of ``deploy_deployments`` of kind ``deploy``, ``hotfix`` or
``rollout``. The regional deployments of a rollout (rows with a ``parent_id``) are left out: the rollout
counts once. Rollback runs (kind ``rollback``) are not deployments of a change; they count as rollbacks and as
recoveries. A deployment belongs to the period when it finished in ``[since, until)``; a running one (started
in the period) is only counted as running, never in a rate. A figure without data is ``None`` ("no data"),
never 0. ``docs/dora.md`` has the definitions in full.

The module imports no Airflow: the CLI, the Prometheus endpoint and the UI page share it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_deploy_provider.ledger.store import Deployment, DeploymentLedger, LedgerEvent

__all__ = ["TARGETS", "DoraReport", "DoraRow", "compute_dora", "default_period", "format_seconds",
           "frequency_band", "lead_time_band", "prometheus_text", "render_table"]

NO_DATA = "no data"
PASS, FAIL = "pass", "fail"
#: The kind of a rollback run: a recovery, counted apart; every other kind (deploy, hotfix, rollout) is a
#: deployment of a change.
ROLLBACK_KIND = "rollback"
ENVIRONMENTS = ("development", "staging", "production")
DAY = 86_400.0

# Outcomes of a finished row, as the KPIs see them.
SUCCEEDED, FAILED, ROLLED_BACK, RUNNING = "succeeded", "failed", "rolled_back", "running"
REPLACED = "replaced"
_COMPLETED = (SUCCEEDED, REPLACED)
_FAILURES = (FAILED, ROLLED_BACK, REPLACED)


@dataclass(frozen=True)
class Target:
    """A KPI target of the spec: ``value <op> threshold`` passes."""

    kpi: str
    op: str  # ">" or "<"
    threshold: float
    label: str  # as people read it: "> 95%"

    def check(self, value: float | None) -> str:
        """``pass``, ``fail`` or ``no data``."""
        if value is None:
            return NO_DATA
        ok = value > self.threshold if self.op == ">" else value < self.threshold
        return PASS if ok else FAIL

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "threshold": self.threshold, "label": self.label}


#: The spec's target SLOs ("Metrics and KPIs").
TARGETS: dict[str, Target] = {
    "success_rate": Target("success_rate", ">", 0.95, "> 95%"),
    "mttr_seconds": Target("mttr_seconds", "<", 1800.0, "< 30m"),
    "change_failure_rate": Target("change_failure_rate", "<", 0.05, "< 5%"),
}

#: DORA performance bands (State of DevOps report 2023), best first: (band, bound). Frequency: at least the
#: bound (deployments per day); lead time: the median below the bound (seconds). Otherwise ``low``.
FREQUENCY_BANDS: tuple[tuple[str, float], ...] = (("elite", 1.0), ("high", 1 / 7), ("medium", 1 / 30))
LEAD_TIME_BANDS: tuple[tuple[str, float], ...] = (("elite", DAY), ("high", 7 * DAY), ("medium", 30 * DAY))


def frequency_band(per_day: float | None) -> str | None:
    """DORA band of a deployment frequency: elite at least daily (on demand), high at least weekly, medium at
    least monthly (every 30 days), low below."""
    if per_day is None:
        return None
    return next((band for band, bound in FREQUENCY_BANDS if per_day >= bound), "low")


def lead_time_band(median_seconds: float | None) -> str | None:
    """DORA band of a median lead time: elite under a day, high under a week, medium under 30 days, low
    above."""
    if median_seconds is None:
        return None
    return next((band for band, bound in LEAD_TIME_BANDS if median_seconds < bound), "low")


# --------------------------------------------------------------------------------------------- report rows


@dataclass(frozen=True)
class Counts:
    """Deployments of changes (rollback runs apart) in the period, by outcome."""

    finished: int  # = completed + failed + rolled_back
    completed: int  # succeeded, including those later replaced by a rollback
    failed: int
    rolled_back: int  # rolled back during their own rollout
    replaced: int  # completed, then replaced by a rollback (counted in completed too)
    running: int
    hotfixes: int  # finished hotfixes
    rollouts: int  # finished rollouts across regions


@dataclass(frozen=True)
class Frequency:
    """Completed deployments in the period."""

    count: int | None
    hotfixes: int | None  # completed hotfixes, among ``count``
    per_day: float | None
    per_week: float | None
    band: str | None


@dataclass(frozen=True)
class LeadTime:
    """Commit time to finish, over the completed deployments that have a commit time."""

    count: int  # deployments measured
    median_seconds: float | None
    p90_seconds: float | None
    without_commit_time: int  # completed deployments no commit time was found for
    from_commit_time: int  # commit time recorded on the deployment itself
    from_commit_sha: int  # ... on another deployment of the same commit
    from_development: int  # first start of the version in development (a proxy)
    band: str | None


@dataclass(frozen=True)
class Recovery:
    """Incidents opened by the failures of the period and how long until recovery."""

    incidents: int
    recovered: int
    unrecovered: int  # nothing recovered yet
    mean_seconds: float | None
    median_seconds: float | None
    status: str  # against TARGETS["mttr_seconds"]


@dataclass(frozen=True)
class Rate:
    """``part / whole`` with its verdict against a target."""

    part: int
    whole: int
    value: float | None
    status: str


@dataclass(frozen=True)
class Rollbacks:
    """Rollbacks in the period: automatic ones (a deployment rolled back during its own rollout) and rollback
    runs that completed (kind ``rollback``)."""

    count: int
    automatic: int
    runs: int
    failed_runs: int
    per_week: float | None
    rate: float | None  # finished deployments rolled back (automatically or replaced later) / finished ones


@dataclass(frozen=True)
class DoraRow:
    """The KPIs of one service in one environment, or of every service (``service is None``)."""

    service: str | None
    environment: str
    deployments: Counts
    frequency: Frequency
    lead_time: LeadTime
    mttr: Recovery
    change_failure_rate: Rate
    success_rate: Rate
    rollbacks: Rollbacks

    def verdicts(self) -> dict[str, str]:
        """KPI -> ``pass``/``fail``/``no data`` for the targets, the DORA band (or ``no data``) for the
        others."""
        return {
            "deployment_frequency": self.frequency.band or NO_DATA,
            "lead_time": self.lead_time.band or NO_DATA,
            "mttr": self.mttr.status,
            "change_failure_rate": self.change_failure_rate.status,
            "success_rate": self.success_rate.status,
        }

    def to_dict(self) -> dict[str, Any]:
        counts, freq, lead, mttr = self.deployments, self.frequency, self.lead_time, self.mttr
        cfr, success, rb = self.change_failure_rate, self.success_rate, self.rollbacks
        return {
            "service": self.service,
            "environment": self.environment,
            "deployments": dict(vars(counts)),
            "deployment_frequency": {"count": freq.count, "hotfixes": freq.hotfixes, "per_day": freq.per_day,
                                     "per_week": freq.per_week, "band": freq.band or NO_DATA},
            "lead_time": {"count": lead.count, "median_seconds": lead.median_seconds,
                          "p90_seconds": lead.p90_seconds, "without_commit_time": lead.without_commit_time,
                          "sources": {"commit_time": lead.from_commit_time,
                                      "commit_sha": lead.from_commit_sha,
                                      "development_start": lead.from_development},
                          "band": lead.band or NO_DATA},
            "mttr": {"incidents": mttr.incidents, "recovered": mttr.recovered,
                     "unrecovered": mttr.unrecovered, "mean_seconds": mttr.mean_seconds,
                     "median_seconds": mttr.median_seconds,
                     "target": TARGETS["mttr_seconds"].label, "status": mttr.status},
            "change_failure_rate": {"failures": cfr.part, "finished": cfr.whole, "rate": cfr.value,
                                    "target": TARGETS["change_failure_rate"].label, "status": cfr.status},
            "success_rate": {"succeeded": success.part, "finished": success.whole, "rate": success.value,
                             "target": TARGETS["success_rate"].label, "status": success.status},
            "rollbacks": dict(vars(rb)),
            "verdicts": self.verdicts(),
        }


@dataclass(frozen=True)
class DoraReport:
    """The KPIs of a period: :attr:`rows` per service and environment, :attr:`totals` per environment across
    the services (the figures of the pooled deployments, not averages of the rows)."""

    since: datetime
    until: datetime
    service: str | None
    environment: str | None
    rows: list[DoraRow]
    totals: list[DoraRow]
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def days(self) -> float:
        return (self.until - self.since).total_seconds() / DAY

    def row(self, service: str, environment: str) -> DoraRow | None:
        return next((r for r in self.rows if r.service == service and r.environment == environment), None)

    def total(self, environment: str) -> DoraRow | None:
        return next((r for r in self.totals if r.environment == environment), None)

    @property
    def headline(self) -> DoraRow | None:
        """What DORA is about: production across the services (the chosen environment when filtered)."""
        return self.total(self.environment or "production")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps in ISO 8601 (UTC), durations in seconds, rates as fractions (0.05 = 5%)."""
        return {
            "period": {"since": self.since.isoformat(), "until": self.until.isoformat(), "days": self.days},
            "filters": {"service": self.service, "environment": self.environment},
            "generated_at": self.generated_at.isoformat(),
            "targets": {name: t.to_dict() for name, t in TARGETS.items()},
            "bands": {"deployment_frequency_per_day": dict(FREQUENCY_BANDS),
                      "lead_time_median_seconds": dict(LEAD_TIME_BANDS)},
            "rows": [r.to_dict() for r in self.rows],
            "totals": [r.to_dict() for r in self.totals],
        }


# ---------------------------------------------------------------------------------------------- computing


@dataclass(frozen=True)
class _Trouble:
    """The incident a failure belongs to: from ``start`` to ``end`` (``None``: not recovered yet); failures
    with the same ``key`` (what recovered them) are one incident."""

    start: datetime
    end: datetime | None
    key: str | None


@dataclass(frozen=True)
class _Fact:
    """One row of the ledger with what the KPIs need of it."""

    deployment: Deployment
    outcome: str
    lead_seconds: float | None = None
    lead_source: str | None = None  # commit_time | commit_sha | development_start
    trouble: _Trouble | None = None

    @property
    def is_change(self) -> bool:
        return self.deployment.kind != ROLLBACK_KIND


def compute_dora(ledger: DeploymentLedger, *, since: datetime, until: datetime, service: str | None = None,
                 environment: str | None = None) -> DoraReport:
    """
    The DORA metrics and deployment KPIs of ``[since, until)`` (naive datetimes are UTC).

    Per row, with *deployments* the top-level rows of kind deploy, hotfix or rollout that finished in the
    period, *completed* those that succeeded (including those a later rollback replaced, event ``replaced``)
    and *failures* those failed, rolled back during their rollout, or replaced:

    * frequency = completed / days of the period (and x 7 per week);
    * lead time = finish - commit time, over completed deployments; the commit time is the deployment's own,
      else the earliest recorded for its commit sha on any deployment of the service, else the first start of
      its version in development; a time after the finish is skipped. Median and p90 interpolate linearly;
    * MTTR = mean over incidents of end - start. A failed deployment: its finished_at to the finish of the
      first deployment or rollback run of the service in the environment that completed after it. One rolled
      back during its rollout: its first failure signal (a gate or rollback decision, a failed rollout) to its
      finished_at (the automatic rollback restored the old version). One replaced by a rollback: that
      rollback run's start to its finish. Failures recovered by the same deployment are one incident from the
      earliest start; unrecovered ones are counted apart, not in the mean;
    * change failure rate = failures / deployments; success rate = completed / deployments;
    * rollbacks = deployments rolled back during their rollout + rollback runs that completed in the period.

    :param ledger: the deployment ledger.
    :param since: start of the period (included).
    :param until: end of the period (excluded).
    :param service: only this service.
    :param environment: only this environment.
    """
    since, until = _utc(since), _utc(until)
    if until <= since:
        raise ValueError(f"the period is empty: until ({until.isoformat()}) is not after since "
                         f"({since.isoformat()})")
    days = (until - since).total_seconds() / DAY
    rows = ledger.top_level_between(since, until, service=service, environment=environment)
    facts = _facts(ledger, rows)
    by_row: dict[tuple[str, str], list[_Fact]] = defaultdict(list)
    by_env: dict[str, list[_Fact]] = defaultdict(list)
    for fact in facts:
        by_row[(fact.deployment.service, fact.deployment.environment)].append(fact)
        by_env[fact.deployment.environment].append(fact)
    # The headline environment always has a total, "no data" when nothing happened.
    by_env.setdefault(environment or "production", [])
    return DoraReport(
        since=since, until=until, service=service, environment=environment,
        rows=[_row(s, e, by_row[(s, e)], days) for s, e in sorted(by_row, key=lambda k: _order(*k))],
        totals=[_row(None, e, by_env[e], days) for e in sorted(by_env, key=lambda e: _order("", e))],
    )


def _order(service: str, environment: str) -> tuple[str, int, str]:
    rank = ENVIRONMENTS.index(environment) if environment in ENVIRONMENTS else len(ENVIRONMENTS)
    return service, rank, environment


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _facts(ledger: DeploymentLedger, rows: Sequence[Deployment]) -> list[_Fact]:
    from airflow_deploy_provider.ledger.store import REPLACED as REPLACED_EVENT

    rolled_back = [d.id for d in rows if d.status == "rolled_back"]
    events = ledger.events_of(rolled_back, (REPLACED_EVENT, "gate", "rollback", "deploy"))
    outcomes: dict[str, str] = {}
    for d in rows:
        if d.status == "rolled_back":
            # Replaced: it completed, and a later rollback run took it back (it keeps its finish time).
            replaced = any(e.kind == REPLACED_EVENT for e in events.get(d.id, []))
            outcomes[d.id] = REPLACED if replaced else ROLLED_BACK
        else:
            outcomes[d.id] = d.status if d.status in (SUCCEEDED, FAILED, RUNNING) else FAILED
    leads = _lead_times(ledger, [d for d in rows if d.kind != ROLLBACK_KIND and outcomes[d.id] in _COMPLETED])
    facts = []
    for d in rows:
        outcome = outcomes[d.id]
        trouble = None
        if d.kind != ROLLBACK_KIND and outcome in _FAILURES:
            trouble = _trouble(ledger, d, outcome, events.get(d.id, []))
        lead, source = leads.get(d.id, (None, None))
        facts.append(_Fact(d, outcome, lead, source, trouble))
    return facts


def _lead_times(ledger: DeploymentLedger, completed: Sequence[Deployment]) -> dict[str, tuple[float, str]]:
    """Deployment id -> (lead time in seconds, where the commit time came from), for those with one."""
    found: dict[str, tuple[float, str]] = {}
    by_service: dict[str, list[Deployment]] = defaultdict(list)
    for d in completed:
        by_service[d.service].append(d)
    for svc, group in by_service.items():
        wanted = {d.commit_sha for d in group if d.commit_time is None and d.commit_sha}
        shas = ledger.commit_times(svc, wanted)
        starts = ledger.first_started(svc, "development", {d.version for d in group})
        for d in group:
            assert d.finished_at is not None  # completed rows are finished
            candidates = ((d.commit_time, "commit_time"), (shas.get(d.commit_sha or ""), "commit_sha"),
                          (starts.get(d.version), "development_start"))
            # A commit time after the finish is not one (clock skew; a version deployed to development only
            # after production, as a hotfix's follow-up does): the next source is tried.
            chosen = next(((at, source) for at, source in candidates
                           if at is not None and at <= d.finished_at), None)
            if chosen is not None:
                found[d.id] = ((d.finished_at - chosen[0]).total_seconds(), chosen[1])
    return found


def _failure_signal(events: Iterable[LedgerEvent]) -> datetime | None:
    """When a deployment rolled back during its rollout was first found failing: a gate's or a rollback's
    decision to roll back (or fail), or the platform reporting the rollout failed."""
    times = [e.at for e in events
             if (e.kind in ("gate", "rollback") and e.data.get("decision") in ("rollback", "fail"))
             or (e.kind == "deploy" and e.data.get("state") in ("failed", "deadline"))]
    return min(times) if times else None


def _trouble(ledger: DeploymentLedger, d: Deployment, outcome: str,
             events: Sequence[LedgerEvent]) -> _Trouble:
    from airflow_deploy_provider.ledger.store import REPLACED as REPLACED_EVENT

    assert d.finished_at is not None
    if outcome == ROLLED_BACK:
        signal = _failure_signal(events)
        start = min(signal, d.finished_at) if signal is not None else d.finished_at
        return _Trouble(start, d.finished_at, d.id)  # its own rollback recovered it
    start = d.finished_at
    if outcome == REPLACED:
        marks = [e for e in events if e.kind == REPLACED_EVENT]
        by = ledger.get(str(marks[-1].data.get("by"))) if marks and marks[-1].data.get("by") else None
        if by is not None and by.finished_at is not None:
            return _Trouble(by.started_at, by.finished_at, by.id)
        start = marks[-1].at if marks else d.finished_at  # the rollback run is gone: from when it replaced it
    recovery = ledger.first_completed_after(d.service, d.environment, start)
    if recovery is None or recovery.finished_at is None:
        return _Trouble(start, None, None)
    return _Trouble(start, recovery.finished_at, recovery.id)


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default); ``None`` without values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _row(service: str | None, environment: str, facts: Sequence[_Fact], days: float) -> DoraRow:
    changes = [f for f in facts if f.is_change]
    runs = [f for f in facts if not f.is_change]
    finished = [f for f in changes if f.outcome != RUNNING]
    completed = [f for f in finished if f.outcome in _COMPLETED]
    failures = [f for f in finished if f.outcome in _FAILURES]
    counts = Counts(
        finished=len(finished), completed=len(completed),
        failed=sum(f.outcome == FAILED for f in finished),
        rolled_back=sum(f.outcome == ROLLED_BACK for f in finished),
        replaced=sum(f.outcome == REPLACED for f in finished),
        running=sum(f.outcome == RUNNING for f in changes),
        hotfixes=sum(f.deployment.kind == "hotfix" for f in finished),
        rollouts=sum(f.deployment.kind == "rollout" for f in finished),
    )
    # Nothing finished: no data (zero deployments of an unused environment is not a measured 0/day).
    per_day = len(completed) / days if finished else None
    frequency = Frequency(
        count=len(completed) if finished else None,
        hotfixes=sum(f.deployment.kind == "hotfix" for f in completed) if finished else None,
        per_day=per_day, per_week=per_day * 7 if per_day is not None else None, band=frequency_band(per_day))
    leads = [f.lead_seconds for f in completed if f.lead_seconds is not None]
    median = _quantile(leads, 0.5)
    lead_time = LeadTime(
        count=len(leads), median_seconds=median, p90_seconds=_quantile(leads, 0.9),
        without_commit_time=len(completed) - len(leads),
        from_commit_time=sum(f.lead_source == "commit_time" for f in completed),
        from_commit_sha=sum(f.lead_source == "commit_sha" for f in completed),
        from_development=sum(f.lead_source == "development_start" for f in completed),
        band=lead_time_band(median))
    mttr = _recovery(failures)
    cfr = _ratio(len(failures), len(finished))
    success = _ratio(len(completed), len(finished))
    automatic = counts.rolled_back
    completed_runs = sum(f.outcome in _COMPLETED for f in runs)
    total_rollbacks = automatic + completed_runs
    rollbacks = Rollbacks(
        count=total_rollbacks, automatic=automatic, runs=completed_runs,
        failed_runs=sum(f.outcome == FAILED for f in runs),
        per_week=total_rollbacks / days * 7 if (finished or runs) else None,
        rate=_ratio(counts.rolled_back + counts.replaced, len(finished)))
    return DoraRow(
        service=service, environment=environment, deployments=counts, frequency=frequency,
        lead_time=lead_time, mttr=mttr,
        change_failure_rate=Rate(len(failures), len(finished), cfr,
                                 TARGETS["change_failure_rate"].check(cfr)),
        success_rate=Rate(len(completed), len(finished), success, TARGETS["success_rate"].check(success)),
        rollbacks=rollbacks)


def _recovery(failures: Sequence[_Fact]) -> Recovery:
    incidents: dict[tuple[str, str, str | None], _Trouble] = {}
    for f in failures:
        t = f.trouble
        if t is None:
            continue
        key = (f.deployment.service, f.deployment.environment, t.key)
        known = incidents.get(key)
        # Failures recovered by the same deployment (or all still unrecovered) are one outage.
        incidents[key] = t if known is None or t.start < known.start else known
    durations = [(t.end - t.start).total_seconds() for t in incidents.values() if t.end is not None]
    mean = sum(durations) / len(durations) if durations else None
    return Recovery(incidents=len(incidents), recovered=len(durations),
                    unrecovered=len(incidents) - len(durations), mean_seconds=mean,
                    median_seconds=_quantile(durations, 0.5),
                    status=TARGETS["mttr_seconds"].check(mean))


# -------------------------------------------------------------------------------------------------- output


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it, two units at most: ``45s``, ``25m``, ``3h20m``, ``14d16h``."""
    if seconds is None:
        return NO_DATA
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count or parts:
            parts.append((count, unit))
    parts = parts[:2]
    return "".join(f"{c}{u}" for c, u in parts if c) or "0s"


def _pct(value: float | None) -> str:
    return NO_DATA if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return NO_DATA if value is None else f"{value:.{digits}f}"


def _verdict(status: str, target: Target) -> str:
    return f"target {target.label}: " + {PASS: "pass", FAIL: "FAIL"}.get(status, NO_DATA)


def _summary(row: DoraRow) -> list[str]:
    """The six KPIs of a row, one line each, with the target verdict or the DORA band."""
    c, f, lt, m = row.deployments, row.frequency, row.lead_time, row.mttr
    cfr, s, rb = row.change_failure_rate, row.success_rate, row.rollbacks
    if f.count is None:
        frequency = NO_DATA
    else:
        frequency = f"{f.count} ({f.hotfixes} hotfix{'es' if f.hotfixes != 1 else ''}): " \
                    f"{_num(f.per_day)}/day, {_num(f.per_week)}/week"
    if lt.count:
        lead = f"median {format_seconds(lt.median_seconds)}, p90 {format_seconds(lt.p90_seconds)} " \
               f"({lt.count} measured; {lt.without_commit_time} without commit time)"
    else:
        missing = lt.without_commit_time
        lead = NO_DATA + (f" ({missing} without commit time)" if missing else "")
    if m.incidents:
        plural = "s" if m.incidents != 1 else ""
        recovery = f"{format_seconds(m.mean_seconds)} ({m.incidents} incident{plural}, " \
                   f"{m.unrecovered} unrecovered)"
    else:
        recovery = NO_DATA
    runs = f"{rb.runs} rollback run{'s' if rb.runs != 1 else ''}"
    rollbacks = NO_DATA if rb.per_week is None else \
        f"{rb.count} ({rb.automatic} automatic, {runs}): {_num(rb.per_week)}/week; " \
        f"{_pct(rb.rate)} of deployments rolled back"
    lines = [
        ("Deployment frequency", frequency, f"DORA band: {f.band or NO_DATA}"),
        ("Lead time for changes", lead, f"DORA band: {lt.band or NO_DATA}"),
        ("Mean time to recovery", recovery, _verdict(m.status, TARGETS["mttr_seconds"])),
        ("Change failure rate", f"{_pct(cfr.value)} ({cfr.part} of {cfr.whole})" if cfr.whole else NO_DATA,
         _verdict(cfr.status, TARGETS["change_failure_rate"])),
        ("Deployment success rate", f"{_pct(s.value)} ({s.part} of {s.whole})" if s.whole else NO_DATA,
         _verdict(s.status, TARGETS["success_rate"])),
        ("Rollback frequency", rollbacks, ""),
    ]
    width = max(len(v) for _, v, verdict in lines if verdict)  # the verdicts in a column
    out = [f"  {name:<24} {value:<{width}}  {verdict}".rstrip() for name, value, verdict in lines]
    if c.running:
        out.append(f"  ({c.running} deployment{'s' if c.running != 1 else ''} still running, not counted)")
    return out


def render_table(report: DoraReport) -> str:
    """The report as text: a summary per environment across the services, then a table per service."""
    lines = [f"DORA metrics and deployment KPIs, {report.since:%Y-%m-%d %H:%M} to "
             f"{report.until:%Y-%m-%d %H:%M} UTC ({report.days:g} days)"
             + (f", service {report.service}" if report.service else "")]
    lines.append("Targets: deployment success rate > 95%, MTTR < 30m, change failure rate < 5%")
    services = sorted({r.service for r in report.rows if r.service})
    if report.service:
        scope = f"service {report.service}"
    else:
        scope = f"service {services[0]}" if len(services) == 1 else "every service"
    for total in report.totals:
        lines += ["", f"{total.environment} ({scope})"]
        lines += _summary(total)
    if not report.rows:
        lines += ["", "No deployment finished in this period."]
        return "\n".join(lines)
    header = ["SERVICE", "ENVIRONMENT", "DEPLOYS", "/WEEK", "LEAD P50", "LEAD P90", "MTTR", "CFR", "SUCCESS",
              "ROLLBACKS", "RUNNING"]
    table = [header]
    for r in report.rows:
        table.append([
            r.service or "", r.environment,
            "-" if r.frequency.count is None else str(r.frequency.count), _num(r.frequency.per_week),
            format_seconds(r.lead_time.median_seconds), format_seconds(r.lead_time.p90_seconds),
            _cell(format_seconds(r.mttr.mean_seconds), r.mttr.status),
            _cell(_pct(r.change_failure_rate.value), r.change_failure_rate.status),
            _cell(_pct(r.success_rate.value), r.success_rate.status),
            str(r.rollbacks.count), str(r.deployments.running),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["", "By service and environment (pass/FAIL: against the targets)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def _cell(value: str, status: str) -> str:
    return value if status == NO_DATA else f"{value} {'pass' if status == PASS else 'FAIL'}"


# ------------------------------------------------------------------------------------------------ prometheus

#: name -> (help, value of a row or None). Every metric is a gauge over the report's period.
_METRICS: tuple[tuple[str, str, Any], ...] = (
    ("deploy_frequency_per_day", "Completed deployments per day over the period",
     lambda r: r.frequency.per_day),
    ("deploy_frequency_per_week", "Completed deployments per week over the period",
     lambda r: r.frequency.per_week),
    ("deploy_success_rate", "Completed / finished deployments over the period (target > 0.95)",
     lambda r: r.success_rate.value),
    ("deploy_change_failure_rate",
     "Failed or rolled back (also later) / finished deployments over the period (target < 0.05)",
     lambda r: r.change_failure_rate.value),
    ("deploy_mttr_seconds", "Mean time to recovery of the period's incidents, in seconds (target < 1800)",
     lambda r: r.mttr.mean_seconds),
    ("deploy_incidents", "Incidents opened by the period's failed deployments",
     lambda r: r.mttr.incidents if r.deployments.finished else None),
    ("deploy_incidents_unrecovered", "Incidents of the period not recovered yet",
     lambda r: r.mttr.unrecovered if r.deployments.finished else None),
    ("deploy_rollbacks_total", "Rollbacks in the period (automatic ones and completed rollback runs)",
     lambda r: r.rollbacks.count if r.rollbacks.per_week is not None else None),
    ("deploy_rollbacks_per_week", "Rollbacks per week over the period", lambda r: r.rollbacks.per_week),
    ("deploy_rollback_rate", "Finished deployments rolled back (at once or later) / finished deployments",
     lambda r: r.rollbacks.rate),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(row: DoraRow, **extra: str) -> str:
    # The totals across services carry no service label (an empty label is the same as none in Prometheus).
    pairs = [("service", row.service)] if row.service is not None else []
    pairs.append(("environment", row.environment))
    pairs += list(extra.items())
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _value(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def prometheus_text(report: DoraReport) -> str:
    """
    The report as gauges in the Prometheus text exposition format (version 0.0.4): per service and
    environment (labels ``service``, ``environment``) and per environment across the services (no ``service``
    label). A figure without data is left out, never exported as 0.
    """
    rows = [*report.rows, *report.totals]
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text} (last {report.days:g} days)")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{labels} {_value(v)}" for labels, v in samples)

    # Disjoint outcomes: succeeded + replaced is what the KPIs call completed.
    family("deploy_deployments", "Deployments of the period by outcome (succeeded, replaced later by a "
           "rollback, failed, rolled_back during the rollout, running)",
           [(_labels(r, outcome=o), v) for r in rows for o, v in (
               ("succeeded", r.deployments.completed - r.deployments.replaced),
               ("failed", r.deployments.failed),
               ("rolled_back", r.deployments.rolled_back), ("replaced", r.deployments.replaced),
               ("running", r.deployments.running))])
    for name, help_text, get in _METRICS:
        family(name, help_text, [(_labels(r), v) for r in rows if (v := get(r)) is not None])
    family("deploy_lead_time_seconds", "Lead time for changes (commit to finish) over the period, in seconds",
           [(_labels(r, quantile=q), v) for r in rows
            for q, v in (("0.5", r.lead_time.median_seconds), ("0.9", r.lead_time.p90_seconds))
            if v is not None])
    family("deploy_lead_time_deployments", "Deployments whose lead time was measured",
           [(_labels(r), r.lead_time.count) for r in rows if r.deployments.finished])
    family("deploy_kpi_target_met", "1 when the KPI meets the spec's target, 0 when not (no sample: no data)",
           [(_labels(r, kpi=k), 1.0 if status == PASS else 0.0) for r in rows for k, status in (
               ("success_rate", r.success_rate.status), ("mttr", r.mttr.status),
               ("change_failure_rate", r.change_failure_rate.status)) if status != NO_DATA])
    family("deploy_dora_band", "DORA performance band of a KPI (the sample with value 1 names it)",
           [(_labels(r, kpi=k, band=band), 1.0) for r in rows
            for k, band in (("deployment_frequency", r.frequency.band), ("lead_time", r.lead_time.band))
            if band is not None])
    family("deploy_dora_period_seconds", "Length of the period the deploy_* KPIs cover",
           [("", (report.until - report.since).total_seconds())])
    return "\n".join(out) + "\n"


def default_period(days: float = 30, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last ``days`` days up to now: ``(since, until)``."""
    until = _utc(now) if now is not None else datetime.now(timezone.utc)
    return until - timedelta(days=days), until
