"""DORA metrics and deployment KPIs (:mod:`airflow_deploy_provider.dora`) from a ledger with a known history.

The history (May 2024; the period is [May 1, May 31) = 30 days), every figure below worked out by hand:

search, development
  dev/1  1.0    sha aaa1111          May 2  08:00-08:10  succeeded
  dev/2  1.0.1                       May 7  08:00-08:05  succeeded
  dev/3  1.2.1                       May 20 11:00-11:05  succeeded   (after production's 1.2.1: a follow-up)
  dev/4  1.5                         May 30 23:50-May 31 00:00       (finishes at `until`: outside)
search, staging
  stg/1  1.0    sha aaa1111, commit May 2 07:00   May 2 09:00-09:30  succeeded
  stg/2  1.1    commit May 5 09:00   May 5 10:00-10:10  failed
  stg/3  1.1    commit May 5 09:00   May 5 10:20-10:50  succeeded
search, production
  prod/0 0.9                         Apr 20 10:00-11:00 succeeded   (outside)
  prod/1 1.0    sha aaa1111          May 3 10:00-11:00  succeeded
  prod/2 1.1    commit May 5 09:00   May 5 12:00-13:00  succeeded, replaced on May 6 by rollback/1
  rollback/1 -> 1.0 (run)            May 6 09:00-09:20  succeeded
  hotfix/1 1.0.1 (hotfix)            May 7 09:00-09:30  succeeded
  prod/4 1.2    sha bbb2222          May 10 10:00-10:30 failed
  prod/5 1.2    sha bbb2222          May 10 10:32-10:35 failed
  rollback/2 -> 1.0.1 (run)          May 10 10:40-10:50 succeeded
  prod/6 1.3    commit May 12 10:00  May 12 14:00-14:25 rolled back (gate said rollback at 14:20)
  prod/7 1.2.1  sha ccc3333          May 20 10:00-10:45 succeeded
  prod/8 1.4                         May 30 20:00-      running
checkout, staging
  stg/0  2.0    sha ddd4444          Apr 30 23:30-May 1 00:30 succeeded
  stg/1  2.1                         May 21 10:00-10:30 succeeded
  stg/2  2.2                         May 29 10:00-10:20 failed (nothing recovered it)
checkout, production (multi-region: rollouts with regional children)
  rollout/0 1.9                      Apr 27-28          succeeded   (outside; one child)
  rollout/1 2.0 sha ddd4444, commit Apr 30 20:00   May 15 09:00-12:00 succeeded
      us-east-1 09:05-10:00 succeeded, eu-west-1 10:05-11:50 succeeded
  rollout/2 2.1                      May 22 09:00-11:00 failed
      us-east-1 09:05-10:00 succeeded, eu-west-1 10:05-10:40 rolled back
  rollback eu-west-1 (a region's run, no parent)   May 22 10:45-10:55 succeeded
  rollback/1 across regions -> 2.0   May 22 11:10-11:40 succeeded
      us-east-1 11:12-11:30, eu-west-1 11:12-11:35 succeeded
  rollout/9 2.2                      May 31 09:00-12:00 succeeded   (outside)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from airflow_deploy_provider.cli import main
from airflow_deploy_provider.dora import (
    NO_DATA,
    DoraReport,
    compute_dora,
    format_seconds,
    frequency_band,
    lead_time_band,
    prometheus_text,
    render_table,
)
from airflow_deploy_provider.ledger.store import REPLACED, DeploymentLedger

UTC = timezone.utc
SINCE = datetime(2024, 5, 1, tzinfo=UTC)
UNTIL = datetime(2024, 5, 31, tzinfo=UTC)
H, M = 3600, 60


def at(day: int, hour: int = 0, minute: int = 0, month: int = 5) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


def add(ledger: DeploymentLedger, id: str, service: str, environment: str, version: str, start: datetime,
        finish: datetime | None = None, status: str = "succeeded", **kwargs) -> None:
    """One deployment with explicit times; ``finish=None`` leaves it running."""
    ledger.start_deployment(id=id, service=service, environment=environment, version=version,
                            started_at=start, **kwargs)
    if finish is not None:
        ledger.finish_deployment(id, status, finished_at=finish)


def build_history(ledger: DeploymentLedger) -> None:
    """The history of the module docstring."""
    s, c = "search", "checkout"
    add(ledger, "search-dev/1", s, "development", "1.0", at(2, 8), at(2, 8, 10), commit_sha="aaa1111")
    add(ledger, "search-dev/2", s, "development", "1.0.1", at(7, 8), at(7, 8, 5))
    add(ledger, "search-dev/3", s, "development", "1.2.1", at(20, 11), at(20, 11, 5))
    add(ledger, "search-dev/4", s, "development", "1.5", at(30, 23, 50), UNTIL)

    add(ledger, "search-stg/1", s, "staging", "1.0", at(2, 9), at(2, 9, 30), commit_sha="aaa1111",
        commit_time=at(2, 7))
    add(ledger, "search-stg/2", s, "staging", "1.1", at(5, 10), at(5, 10, 10), "failed", commit_time=at(5, 9))
    add(ledger, "search-stg/3", s, "staging", "1.1", at(5, 10, 20), at(5, 10, 50), commit_time=at(5, 9))

    add(ledger, "search-prod/0", s, "production", "0.9", at(20, 10, month=4), at(20, 11, month=4))
    add(ledger, "search-prod/1", s, "production", "1.0", at(3, 10), at(3, 11), commit_sha="aaa1111")
    add(ledger, "search-prod/2", s, "production", "1.1", at(5, 12), at(5, 13), commit_time=at(5, 9))
    add(ledger, "rollback-search/1", s, "production", "1.0", at(6, 9), at(6, 9, 20), kind="rollback",
        previous_version="1.1")
    # What FinishDeploymentOperator._mark_replaced writes: the event, then rolled_back with the finish kept.
    ledger.record_event("search-prod/2", REPLACED, "rolled back to 1.0", at=at(6, 9, 20),
                        data={"by": "rollback-search/1", "to": "1.0"})
    ledger.finish_deployment("search-prod/2", "rolled_back", "rolled back", finished_at=at(5, 13))
    add(ledger, "hotfix-search/1", s, "production", "1.0.1", at(7, 9), at(7, 9, 30), kind="hotfix")
    add(ledger, "search-prod/4", s, "production", "1.2", at(10, 10), at(10, 10, 30), "failed",
        commit_sha="bbb2222")
    add(ledger, "search-prod/5", s, "production", "1.2", at(10, 10, 32), at(10, 10, 35), "failed",
        commit_sha="bbb2222")
    add(ledger, "rollback-search/2", s, "production", "1.0.1", at(10, 10, 40), at(10, 10, 50),
        kind="rollback", previous_version="1.2")
    add(ledger, "search-prod/6", s, "production", "1.3", at(12, 14), commit_time=at(12, 10))
    ledger.record_event("search-prod/6", "gate", "step 1 passed", at=at(12, 14, 10),
                        data={"decision": "pass"})
    ledger.record_event("search-prod/6", "gate", "error rate 7% > 5%", at=at(12, 14, 20),
                        data={"decision": "rollback"})
    ledger.record_event("search-prod/6", "rollback", "rolled back 1.3", at=at(12, 14, 24),
                        data={"decision": "rollback"})
    ledger.finish_deployment("search-prod/6", "rolled_back", "error rate", finished_at=at(12, 14, 25))
    add(ledger, "search-prod/7", s, "production", "1.2.1", at(20, 10), at(20, 10, 45), commit_sha="ccc3333")
    add(ledger, "search-prod/8", s, "production", "1.4", at(30, 20))

    add(ledger, "checkout-stg/0", c, "staging", "2.0", at(30, 23, 30, month=4), at(1, 0, 30),
        commit_sha="ddd4444")
    add(ledger, "checkout-stg/1", c, "staging", "2.1", at(21, 10), at(21, 10, 30))
    add(ledger, "checkout-stg/2", c, "staging", "2.2", at(29, 10), at(29, 10, 20), "failed")

    def rollout(id: str, version: str, start: datetime, finish: datetime, status: str,
                regions: dict[str, tuple[datetime, datetime, str]], kind: str = "rollout", **kwargs) -> None:
        add(ledger, id, c, "production", version, start, kind=kind, **kwargs)
        for region, (r_start, r_finish, r_status) in regions.items():
            add(ledger, f"{id}/{region}", c, "production", version, r_start, r_finish, r_status,
                region=region, parent_id=id, kind="rollback" if kind == "rollback" else "deploy")
        ledger.finish_deployment(id, status, finished_at=finish)

    rollout("rollout-checkout/0", "1.9", at(27, 9, month=4), at(28, 12, month=4), "succeeded",
            {"us-east-1": (at(27, 9, 5, month=4), at(27, 10, month=4), "succeeded")})
    rollout("rollout-checkout/1", "2.0", at(15, 9), at(15, 12), "succeeded",
            {"us-east-1": (at(15, 9, 5), at(15, 10), "succeeded"),
             "eu-west-1": (at(15, 10, 5), at(15, 11, 50), "succeeded")},
            commit_sha="ddd4444", commit_time=at(30, 20, month=4))
    rollout("rollout-checkout/2", "2.1", at(22, 9), at(22, 11), "failed",
            {"us-east-1": (at(22, 9, 5), at(22, 10), "succeeded"),
             "eu-west-1": (at(22, 10, 5), at(22, 10, 40), "rolled_back")})
    add(ledger, "rollback-checkout-eu/1", c, "production", "2.0", at(22, 10, 45), at(22, 10, 55),
        kind="rollback", region="eu-west-1")
    rollout("rollback-checkout/1", "2.0", at(22, 11, 10), at(22, 11, 40), "succeeded",
            {"us-east-1": (at(22, 11, 12), at(22, 11, 30), "succeeded"),
             "eu-west-1": (at(22, 11, 12), at(22, 11, 35), "succeeded")},
            kind="rollback", previous_version="2.1")
    rollout("rollout-checkout/9", "2.2", at(31, 9), at(31, 12), "succeeded", {})


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dora') / 'ledger.db'}"
    build_history(DeploymentLedger.from_url(url))
    return url


@pytest.fixture(scope="module")
def report(ledger_url: str) -> DoraReport:
    return compute_dora(DeploymentLedger.from_url(ledger_url), since=SINCE, until=UNTIL)


def approx(value: float) -> pytest.approx:
    return pytest.approx(value, rel=1e-12)


# ----------------------------------------------------------------------------------------------- figures


def test_rows_and_totals(report: DoraReport):
    assert report.days == 30
    assert [(r.service, r.environment) for r in report.rows] == [
        ("checkout", "staging"), ("checkout", "production"),
        ("search", "development"), ("search", "staging"), ("search", "production")]
    assert [t.environment for t in report.totals] == ["development", "staging", "production"]
    assert report.headline is report.total("production")


def test_search_production(report: DoraReport):
    row = report.row("search", "production")
    assert row is not None
    # Finished in the period: prod/1, prod/2 (replaced), hotfix/1, prod/4, prod/5 (failed), prod/6 (rolled
    # back), prod/7 = 7. Completed: prod/1, prod/2, hotfix/1, prod/7 = 4. prod/8 runs; prod/0 is outside; the
    # rollback runs are not deployments of a change.
    c = row.deployments
    assert (c.finished, c.completed, c.failed, c.rolled_back, c.replaced) == (7, 4, 2, 1, 1)
    assert (c.running, c.hotfixes, c.rollouts) == (1, 1, 0)
    # Frequency: 4 / 30 days; 0.133/day is between weekly (0.143) and monthly (0.033): medium.
    assert (row.frequency.count, row.frequency.hotfixes) == (4, 1)
    assert row.frequency.per_day == approx(4 / 30)
    assert row.frequency.per_week == approx(4 / 30 * 7)
    assert row.frequency.band == "medium"
    # Lead times: prod/1 finishes May 3 11:00, its sha's commit time (on search-stg/1) May 2 07:00 -> 28h;
    # prod/2 13:00 - 09:00 (its own) = 4h; hotfix/1 09:30 - 08:00 (1.0.1's first start in development) = 1h30;
    # prod/7 has no commit time anywhere and 1.2.1 reached development only after it: none.
    # [5400, 14400, 100800]: median 14400; p90 at rank 1.8: 14400 + 0.8 * 86400 = 83520.
    lt = row.lead_time
    assert (lt.count, lt.without_commit_time) == (3, 1)
    assert (lt.from_commit_time, lt.from_commit_sha, lt.from_development) == (1, 1, 1)
    assert (lt.median_seconds, lt.p90_seconds, lt.band) == (approx(14400), approx(83520), "elite")
    # Incidents: prod/2 replaced by rollback/1 (09:00-09:20) = 20m; prod/4 failed at 10:30 and prod/5 at
    # 10:35, both recovered by rollback/2 at 10:50: one incident of 20m; prod/6 rolled back itself: gate at
    # 14:20 to 14:25 = 5m. Mean (1200 + 1200 + 300) / 3 = 900s < 30m.
    m = row.mttr
    assert (m.incidents, m.recovered, m.unrecovered) == (3, 3, 0)
    assert (m.mean_seconds, m.median_seconds, m.status) == (approx(900), approx(1200), "pass")
    # Failures: prod/2, prod/4, prod/5, prod/6 = 4 of 7.
    cfr = row.change_failure_rate
    assert (cfr.part, cfr.whole, cfr.value, cfr.status) == (4, 7, approx(4 / 7), "fail")
    s = row.success_rate
    assert (s.part, s.whole, s.value, s.status) == (4, 7, approx(4 / 7), "fail")
    # Rollbacks: prod/6 (automatic) + rollback/1 and rollback/2 = 3; 3/30*7 a week; 2 of 7 changes rolled
    # back.
    rb = row.rollbacks
    assert (rb.count, rb.automatic, rb.runs, rb.failed_runs) == (3, 1, 2, 0)
    assert (rb.per_week, rb.rate) == (approx(0.7), approx(2 / 7))


def test_checkout_production_counts_the_rollout_once(report: DoraReport):
    row = report.row("checkout", "production")
    assert row is not None
    # rollout/1 and rollout/2, not their four regional deployments (nor the rolled back eu-west-1 child).
    c = row.deployments
    assert (c.finished, c.completed, c.failed, c.rolled_back, c.replaced, c.running, c.rollouts) == \
        (2, 1, 1, 0, 0, 0, 2)
    # 1 / 30 days: exactly monthly, the lower bound of medium.
    assert (row.frequency.count, row.frequency.per_day, row.frequency.band) == (1, approx(1 / 30), "medium")
    # rollout/1: May 15 12:00 - Apr 30 20:00 = 14d16h = 1267200s: medium (a week to a month).
    lt = row.lead_time
    assert (lt.count, lt.median_seconds, lt.p90_seconds, lt.band) == \
        (1, approx(1267200), approx(1267200), "medium")
    # rollout/2 failed at 11:00; the region's rollback finished before (10:55) and the regional children of
    # rollback/1 (11:30, 11:35) do not count: rollback/1 across the regions recovered at 11:40 -> 40m.
    assert (row.mttr.incidents, row.mttr.mean_seconds, row.mttr.status) == (1, approx(2400), "fail")
    assert (row.change_failure_rate.value, row.success_rate.value) == (approx(0.5), approx(0.5))
    # Two rollback runs: the region's own and the one across regions (its children not counted).
    rb = row.rollbacks
    assert (rb.count, rb.automatic, rb.runs, rb.per_week, rb.rate) == (2, 0, 2, approx(2 / 30 * 7), 0.0)


def test_staging_and_development(report: DoraReport):
    search = report.row("search", "staging")
    assert search is not None
    # stg/1 09:30 - 07:00 = 2h30 (9000s), stg/3 10:50 - 09:00 = 1h50 (6600s): median 7800, p90 8760.
    assert (search.lead_time.median_seconds, search.lead_time.p90_seconds) == (approx(7800), approx(8760))
    # stg/2 failed at 10:10, stg/3 completed at 10:50: 40m.
    assert (search.mttr.mean_seconds, search.mttr.status) == (approx(2400), "fail")
    assert (search.success_rate.part, search.success_rate.whole) == (2, 3)

    checkout = report.row("checkout", "staging")
    assert checkout is not None
    # stg/0 finished May 1 00:30 (started before the period: counted); its sha's commit time is on rollout/1:
    # 4h30. stg/1 has no commit time. stg/2 failed and nothing recovered it: an incident, no MTTR.
    lt = checkout.lead_time
    assert (lt.count, lt.median_seconds, lt.without_commit_time) == (1, approx(16200), 1)
    assert (checkout.mttr.incidents, checkout.mttr.unrecovered, checkout.mttr.mean_seconds,
            checkout.mttr.status) == (1, 1, None, NO_DATA)

    dev = report.total("development")
    assert dev is not None
    # dev/4 finished at `until`: outside. dev/1: 08:10 - 07:00 (sha) = 70m; dev/2, dev/3: their own start, 5m.
    # [300, 300, 4200]: median 300, p90 at rank 1.8: 300 + 0.8 * 3900 = 3420.
    assert (dev.deployments.finished, dev.frequency.count) == (3, 3)
    assert (dev.lead_time.median_seconds, dev.lead_time.p90_seconds) == (approx(300), approx(3420))
    assert (dev.success_rate.value, dev.success_rate.status) == (1.0, "pass")
    assert (dev.change_failure_rate.value, dev.change_failure_rate.status) == (0.0, "pass")
    # No failure: no MTTR ("no data", never 0).
    assert (dev.mttr.incidents, dev.mttr.mean_seconds, dev.mttr.status) == (0, None, NO_DATA)

    staging = report.total("staging")
    assert staging is not None
    # [6600, 9000, 16200]: median 9000; p90 at rank 1.8: 9000 + 0.8 * 7200 = 14760.
    assert (staging.lead_time.median_seconds, staging.lead_time.p90_seconds) == (approx(9000), approx(14760))
    assert (staging.mttr.incidents, staging.mttr.recovered, staging.mttr.mean_seconds) == (2, 1, approx(2400))
    assert (staging.success_rate.part, staging.success_rate.whole) == (4, 6)


def test_production_across_services(report: DoraReport):
    total = report.total("production")
    assert total is not None
    assert total.service is None
    c = total.deployments
    assert (c.finished, c.completed, c.failed, c.rolled_back, c.replaced) == (9, 5, 3, 1, 1)
    assert (c.running, c.hotfixes, c.rollouts) == (1, 1, 2)
    # 5 / 30 = 0.167/day, more than weekly: high.
    assert (total.frequency.count, total.frequency.hotfixes, total.frequency.band) == (5, 1, "high")
    assert (total.frequency.per_day, total.frequency.per_week) == (approx(1 / 6), approx(7 / 6))
    # [5400, 14400, 100800, 1267200]: median (14400 + 100800) / 2 = 57600 (16h: elite); p90 at rank 2.7:
    # 100800 + 0.7 * 1166400 = 917280.
    lt = total.lead_time
    assert (lt.count, lt.median_seconds, lt.p90_seconds, lt.without_commit_time, lt.band) == \
        (4, approx(57600), approx(917280), 1, "elite")
    assert (lt.from_commit_time, lt.from_commit_sha, lt.from_development) == (2, 1, 1)
    # (1200 + 1200 + 300 + 2400) / 4 = 1275s.
    assert (total.mttr.incidents, total.mttr.mean_seconds, total.mttr.median_seconds, total.mttr.status) == \
        (4, approx(1275), approx(1200), "pass")
    assert (total.change_failure_rate.part, total.change_failure_rate.whole) == (5, 9)
    assert total.change_failure_rate.status == "fail"
    assert (total.success_rate.value, total.success_rate.status) == (approx(5 / 9), "fail")
    assert (total.rollbacks.count, total.rollbacks.per_week, total.rollbacks.rate) == \
        (5, approx(7 / 6), approx(2 / 9))
    assert total.verdicts() == {"deployment_frequency": "high", "lead_time": "elite", "mttr": "pass",
                                "change_failure_rate": "fail", "success_rate": "fail"}


def test_filters(ledger_url: str, report: DoraReport):
    only = compute_dora(DeploymentLedger.from_url(ledger_url), since=SINCE, until=UNTIL, service="checkout",
                        environment="production")
    assert [(r.service, r.environment) for r in only.rows] == [("checkout", "production")]
    assert only.rows[0] == report.row("checkout", "production")
    total = only.total("production")
    assert total is not None and total.mttr.mean_seconds == approx(2400)
    # A zone-aware period in another zone is the same instant.
    cest = timezone(timedelta(hours=2))
    moved = compute_dora(DeploymentLedger.from_url(ledger_url), since=datetime(2024, 5, 1, 2, tzinfo=cest),
                         until=datetime(2024, 5, 31, 2, tzinfo=cest))
    assert moved.rows == report.rows


def test_no_data_is_none_not_zero(ledger_url: str):
    empty = compute_dora(DeploymentLedger.from_url(ledger_url), since=at(1, month=1), until=at(1, month=2))
    assert empty.rows == []
    total = empty.headline
    assert total is not None and total.environment == "production"
    assert total.frequency.per_day is None and total.frequency.band is None
    assert total.lead_time.median_seconds is None and total.mttr.mean_seconds is None
    assert total.success_rate.value is None and total.change_failure_rate.value is None
    assert total.rollbacks.per_week is None and total.rollbacks.rate is None
    assert set(total.verdicts().values()) == {NO_DATA}
    data = empty.to_dict()["totals"][0]
    assert data["success_rate"] == {"succeeded": 0, "finished": 0, "rate": None, "target": "> 95%",
                                    "status": NO_DATA}
    assert "No deployment finished in this period." in render_table(empty)
    assert "deploy_success_rate{" not in prometheus_text(empty)
    with pytest.raises(ValueError, match="the period is empty"):
        compute_dora(DeploymentLedger.from_url(ledger_url), since=UNTIL, until=SINCE)


def test_same_figures_on_postgresql(postgres, report: DoraReport):
    ledger = DeploymentLedger.from_url(postgres.create_database("dora"))
    build_history(ledger)
    on_postgres = compute_dora(ledger, since=SINCE, until=UNTIL)
    assert (on_postgres.rows, on_postgres.totals) == (report.rows, report.totals)


def test_bands_and_durations():
    assert [frequency_band(v) for v in (None, 3, 1, 0.5, 1 / 7, 0.1, 1 / 30, 0.01, 0)] == \
        [None, "elite", "elite", "high", "high", "medium", "medium", "low", "low"]
    day = 86_400
    assert [lead_time_band(v) for v in (None, 60, day - 1, day, 7 * day - 1, 7 * day, 30 * day)] == \
        [None, "elite", "elite", "high", "high", "medium", "low"]
    assert [format_seconds(v) for v in (None, 45, 300, 5400, 14400, 83520, 1267200)] == \
        [NO_DATA, "45s", "5m", "1h30m", "4h", "23h12m", "14d16h"]


def test_to_dict_is_json(report: DoraReport):
    data = json.loads(json.dumps(report.to_dict()))
    assert data["period"] == {"since": "2024-05-01T00:00:00+00:00", "until": "2024-05-31T00:00:00+00:00",
                              "days": 30.0}
    assert data["targets"]["mttr_seconds"] == {"op": "<", "threshold": 1800.0, "label": "< 30m"}
    production = next(t for t in data["totals"] if t["environment"] == "production")
    assert production["service"] is None
    assert production["deployment_frequency"] == {"count": 5, "hotfixes": 1, "per_day": approx(1 / 6),
                                                  "per_week": approx(7 / 6), "band": "high"}
    assert production["lead_time"]["sources"] == {"commit_time": 2, "commit_sha": 1, "development_start": 1}
    assert production["mttr"] == {"incidents": 4, "recovered": 4, "unrecovered": 0, "mean_seconds": 1275.0,
                                  "median_seconds": 1200.0, "target": "< 30m", "status": "pass"}
    assert production["change_failure_rate"]["status"] == "fail"
    assert production["rollbacks"] == {"count": 5, "automatic": 1, "runs": 4, "failed_runs": 0,
                                       "per_week": approx(7 / 6), "rate": approx(2 / 9)}


# -------------------------------------------------------------------------------------------- prometheus


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_prometheus_text_parses_with_the_right_values(report: DoraReport):
    text = prometheus_text(report)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {f.type for f in families.values()} == {"gauge"}
    for name in ("deploy_success_rate", "deploy_lead_time_seconds", "deploy_mttr_seconds",
                 "deploy_change_failure_rate", "deploy_frequency_per_day", "deploy_rollbacks_total"):
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text
    samples = _samples(text)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    prod = {"environment": "production"}
    search = {"service": "search", "environment": "production"}
    assert value("deploy_success_rate", **search) == approx(4 / 7)
    assert value("deploy_change_failure_rate", service="checkout", environment="production") == 0.5
    assert value("deploy_frequency_per_day", **prod) == approx(1 / 6)
    assert value("deploy_lead_time_seconds", quantile="0.5", **prod) == 57600
    assert value("deploy_lead_time_seconds", quantile="0.9", **prod) == approx(917280)
    assert value("deploy_lead_time_seconds", quantile="0.9", **search) == approx(83520)
    assert value("deploy_mttr_seconds", **prod) == 1275
    assert value("deploy_rollbacks_total", **prod) == 5
    assert value("deploy_deployments", outcome="running", **search) == 1
    assert value("deploy_deployments", outcome="succeeded", **search) == 3  # + 1 replaced = 4 completed
    assert value("deploy_deployments", outcome="replaced", **search) == 1
    assert value("deploy_kpi_target_met", kpi="mttr", **prod) == 1
    assert value("deploy_kpi_target_met", kpi="success_rate", **prod) == 0
    assert value("deploy_dora_band", kpi="lead_time", band="elite", **prod) == 1
    assert value("deploy_dora_period_seconds") == 30 * 86400
    # No data: no sample (never 0).
    assert value("deploy_mttr_seconds", environment="development") is None
    assert value("deploy_mttr_seconds", service="checkout", environment="staging") is None
    assert value("deploy_kpi_target_met", kpi="mttr", environment="development") is None


def test_prometheus_label_values_are_escaped(tmp_path: Path):
    ledger = DeploymentLedger.from_url(f"sqlite:///{tmp_path / 'odd.db'}")
    odd = 'a"b\\c\nd'
    add(ledger, "odd/1", odd, "production", "1", at(2, 10), at(2, 11))
    text = prometheus_text(compute_dora(ledger, since=SINCE, until=UNTIL))
    labels = frozenset({"service": odd, "environment": "production"}.items())
    assert _samples(text)[("deploy_success_rate", labels)] == 1.0


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_table(ledger_url: str, capsys):
    assert main(["dora", "--ledger-url", ledger_url, "--since", "2024-05-01", "--until", "2024-05-30"]) == 0
    out = capsys.readouterr().out
    assert "2024-05-01 00:00 to 2024-05-31 00:00 UTC (30 days)" in out  # a date-only --until includes its day
    for kpi in ("Deployment frequency", "Lead time for changes", "Mean time to recovery",
                "Change failure rate", "Deployment success rate", "Rollback frequency"):
        assert kpi in out
    production = out.split("production (every service)")[1].split("\n\n")[0]
    assert "5 (1 hotfix): 0.17/day, 1.17/week" in production and "DORA band: high" in production
    assert "median 16h, p90 10d14h (4 measured; 1 without commit time)" in production
    assert "21m15s (4 incidents, 0 unrecovered)" in production and "target < 30m: pass" in production
    assert "55.6% (5 of 9)" in production and "target < 5%: FAIL" in production
    assert "target > 95%: FAIL" in production
    assert "(1 deployment still running, not counted)" in production
    line = next(x for x in out.splitlines() if x.startswith("search ") and "production" in x)
    assert line.split() == ["search", "production", "4", "0.93", "4h", "23h12m", "15m", "pass", "57.1%",
                            "FAIL", "57.1%", "FAIL", "3", "1"]


def test_cli_json_round_trips(ledger_url: str, capsys):
    assert main(["dora", "--ledger-url", ledger_url, "--since", "2024-05-01T00:00:00Z", "--until",
                 "2024-05-31T02:00:00+02:00", "--format", "json", "--service", "search"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = compute_dora(DeploymentLedger.from_url(ledger_url), since=SINCE, until=UNTIL, service="search")
    data.pop("generated_at")
    wanted = json.loads(json.dumps(expected.to_dict()))
    wanted.pop("generated_at")
    assert data == wanted
    assert data["filters"] == {"service": "search", "environment": None}


@pytest.mark.parametrize("args, message", [
    (["--since", "2024-13-01"], "--since: '2024-13-01' is not a date"),
    (["--until", "yesterday"], "--until: 'yesterday' is not a date"),
    (["--since", "2024-05-10", "--until", "2024-05-01"], "must be before --until"),
    (["--days", "7", "--since", "2024-05-01"], "either --days or --since/--until"),
    (["--days", "0"], "--days must be a positive number"),
])
def test_cli_bad_period_exits_2(ledger_url: str, capsys, args: list[str], message: str):
    assert main(["dora", "--ledger-url", ledger_url, *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_days_default_period(tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'recent.db'}"
    ledger = DeploymentLedger.from_url(url)
    now = datetime.now(UTC)
    for id, days in (("recent/1", 3), ("old/1", 40)):
        finished = now - timedelta(days=days)
        add(ledger, id, "api", "production", "1", finished - timedelta(hours=1), finished)
    assert main(["dora", "--ledger-url", url, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["period"]["days"] == pytest.approx(30)
    assert data["totals"][0]["deployment_frequency"]["count"] == 1  # 40 days ago is outside the default 30
    assert main(["dora", "--ledger-url", url, "--days", "2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == []


def test_dora_imports_no_airflow():
    code = "import sys, airflow_deploy_provider.dora; print(any(m.split('.')[0] == 'airflow' " \
           "for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_module_is_quick(ledger_url: str):
    started = time.monotonic()
    compute_dora(DeploymentLedger.from_url(ledger_url), since=SINCE, until=UNTIL)
    assert time.monotonic() - started < 2
