"""The DORA routes of the plugin's app (``/deploy/metrics``, ``/deploy/dora.json``, the page ``/deploy/dora``)
and the page's place in the UI's navigation.

The app is mounted under ``/deploy`` as the api-server mounts it (through the plugin's lazy app) and called
with Airflow's own authentication (JWTs of the simple auth manager). The ledger is a SQLite file reached through
``AIRFLOW_CONN_DEPLOY_LEDGER`` (the ``ledger`` fixture), holding this history, relative to now:

shop, production (every figure worked out by hand)
  shop-prod/1  10 days ago, 30 min    succeeded   commit 2 h before the finish
  shop-prod/2   8 days ago, 30 min    succeeded   commit 4 h before the finish
  shop-prod/3   6 days ago, 10 min    failed      (reason with HTML in it)
  shop-prod/4   5 min after that failure, finished 20 min after it: succeeded, commit 6 h before its finish
  -> 4 finished, 3 completed: success rate 75.0%, change failure rate 25.0%; one incident recovered in
     20 min (MTTR 1200 s, target met); lead time median 4 h (elite); 3 in 30 days = 0.7/week (medium)
<script>alert(1)</script>, staging: one deployment that succeeded 3 days ago (a name the page must escape)
development: nothing (no data)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin

import pytest
from prometheus_client.parser import text_string_to_metric_families

from airflow_deploy_provider.ledger.store import DeploymentLedger

EVIL = "<script>alert(1)</script>"
REASON = "migration <b>0042</b> failed & rolled forward"
KPI_NAMES = ("Deployment frequency", "Lead time for changes", "Mean time to recovery (MTTR)",
             "Change failure rate", "Deployment success rate", "Rollbacks")


def build_history(ledger: DeploymentLedger, now: datetime) -> None:
    """The history of the module docstring."""

    def add(id: str, service: str, environment: str, start: datetime, finish: datetime, status: str,
            lead: timedelta | None = None, reason: str | None = None) -> None:
        ledger.start_deployment(id=id, service=service, environment=environment, version=id.rsplit("/")[-1],
                                started_at=start, commit_time=finish - lead if lead else None)
        ledger.finish_deployment(id, status, reason, finished_at=finish)

    minutes, hours, days = (lambda n: timedelta(minutes=n)), (lambda n: timedelta(hours=n)), \
        (lambda n: timedelta(days=n))
    add("shop-prod/1", "shop", "production", now - days(10), now - days(10) + minutes(30), "succeeded", hours(2))
    add("shop-prod/2", "shop", "production", now - days(8), now - days(8) + minutes(30), "succeeded", hours(4))
    failed_at = now - days(6) + minutes(10)
    add("shop-prod/3", "shop", "production", now - days(6), failed_at, "failed", reason=REASON)
    add("shop-prod/4", "shop", "production", failed_at + minutes(5), failed_at + minutes(20), "succeeded",
        hours(6))
    add("evil-stg/1", EVIL, "staging", now - days(3), now - days(3) + minutes(10), "succeeded", hours(1))


@pytest.fixture(scope="module")
def tokens(airflow_db) -> dict[str, str]:
    """JWTs of Airflow's simple auth manager: a viewer (may read DAG runs) and a user without a role. (The
    metadata database holds the revoked tokens Airflow checks.)"""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()
    manager.init()
    return {"viewer": manager.generate_jwt(SimpleAuthManagerUser(username="vera", role="viewer")),
            "nobody": manager.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))}


@pytest.fixture
def client(ledger: DeploymentLedger, tokens: dict[str, str]) -> Iterator[Any]:
    """A client of the plugin's app under ``/deploy`` that sends the viewer's token, over the history."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from airflow_deploy_provider.plugins import DeployPlugin
    from airflow_deploy_provider.plugins.dora_views import CACHE

    build_history(ledger, datetime.now(timezone.utc))
    (mounted,) = DeployPlugin.fastapi_apps
    app = FastAPI()
    app.mount(mounted["url_prefix"], mounted["app"])
    CACHE.clear()
    with TestClient(app, headers={"Authorization": f"Bearer {tokens['viewer']}"}) as test_client:
        yield test_client
    CACHE.clear()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric, sorted labels) -> value, through Prometheus' own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


# ------------------------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("path", ["/deploy/metrics", "/deploy/dora.json", "/deploy/dora"])
def test_the_dora_routes_need_an_airflow_login(client, tokens, path):
    assert client.get(path, headers={"Authorization": ""}).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    assert client.get(path, headers={"Authorization": f"Bearer {tokens['nobody']}"}).status_code == 403
    assert client.get(path).status_code == 200


def test_the_page_accepts_the_ui_cookie(client, tokens):
    """The UI shows the page in a frame: the browser sends Airflow's cookie, not a bearer token."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    client.cookies.set(COOKIE_NAME_JWT_TOKEN, tokens["viewer"])
    resp = client.get("/deploy/dora", headers={"Authorization": ""})
    assert resp.status_code == 200, resp.text


def test_a_dag_id_cannot_narrow_the_permission_check(client):
    # Airflow's check would then be about that one DAG; the figures cover every service.
    resp = client.get("/deploy/metrics", params={"dag_id": "deploy_shop_production"})
    assert resp.status_code == 400
    assert resp.json()["detail"] == "dag_id is not a parameter of this route"


@pytest.mark.parametrize("params", [{"days": "0"}, {"days": "-1"}, {"days": "abc"}, {"days": "3651"},
                                    {"service": "x" * 201}])
def test_bad_parameters_are_refused(client, params):
    assert client.get("/deploy/metrics", params=params).status_code == 422


# ----------------------------------------------------------------------------------------------- metrics


def test_metrics_carry_the_kpis_of_the_history(client):
    resp = client.get("/deploy/metrics")

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(resp.text)
    shop = labels(service="shop", environment="production")
    for row in (shop, labels(environment="production")):  # the service, and production across services
        assert got[("deploy_success_rate", row)] == 0.75
        assert got[("deploy_change_failure_rate", row)] == 0.25
        assert got[("deploy_mttr_seconds", row)] == 1200
        assert got[("deploy_incidents", row)] == 1
        assert got[("deploy_frequency_per_week", row)] == pytest.approx(0.7)
    assert got[("deploy_lead_time_seconds", labels(service="shop", environment="production", quantile="0.5"))] == 4 * 3600
    assert got[("deploy_deployments", labels(service="shop", environment="production", outcome="failed"))] == 1
    assert got[("deploy_kpi_target_met", labels(service="shop", environment="production", kpi="mttr"))] == 1
    assert got[("deploy_kpi_target_met", labels(service="shop", environment="production",
                                                kpi="success_rate"))] == 0
    assert got[("deploy_dora_band", labels(service="shop", environment="production", kpi="lead_time",
                                           band="elite"))] == 1
    assert got[("deploy_success_rate", labels(service=EVIL, environment="staging"))] == 1
    assert got[("deploy_dora_period_seconds", ())] == 30 * 86400
    # No data is no sample, never 0: nothing failed in staging, nothing happened in development.
    assert ("deploy_mttr_seconds", labels(environment="staging")) not in got
    assert not any(dict(lbl).get("environment") == "development" for _, lbl in got)


def test_metrics_follow_the_period_and_filters(client):
    # The last 7 days: shop-prod/1 and /2 are older; one failure, one success.
    resp = client.get("/deploy/metrics", params={"days": "7", "service": "shop", "environment": "production"})

    got = samples(resp.text)
    assert got[("deploy_success_rate", labels(service="shop", environment="production"))] == 0.5
    assert got[("deploy_mttr_seconds", labels(environment="production"))] == 1200
    assert got[("deploy_dora_period_seconds", ())] == 7 * 86400
    assert not any(dict(lbl).get("service") == EVIL for _, lbl in got)


def test_the_report_is_cached_for_a_short_time(client, ledger, monkeypatch):
    from airflow_deploy_provider.plugins.dora_views import CACHE

    clock = [1000.0]
    monkeypatch.setattr(CACHE, "clock", lambda: clock[0])
    CACHE.clear()
    first = client.get("/deploy/metrics").text
    now = datetime.now(timezone.utc)
    ledger.start_deployment(id="shop-prod/5", service="shop", environment="production", version="5",
                            started_at=now - timedelta(hours=1))
    ledger.finish_deployment("shop-prod/5", "succeeded", finished_at=now - timedelta(minutes=30))

    clock[0] += 29
    assert client.get("/deploy/metrics").text == first  # within 30 s: the ledger is not read again
    clock[0] += 2
    again = samples(client.get("/deploy/metrics").text)
    assert again[("deploy_success_rate", labels(service="shop", environment="production"))] == 0.8

    # [deploy] dora_cache_seconds = 0: computed on every request.
    monkeypatch.setenv("AIRFLOW__DEPLOY__DORA_CACHE_SECONDS", "0")
    ledger.start_deployment(id="shop-prod/6", service="shop", environment="production", version="6",
                            started_at=now - timedelta(minutes=20))
    ledger.finish_deployment("shop-prod/6", "failed", finished_at=now - timedelta(minutes=10))
    latest = samples(client.get("/deploy/metrics").text)
    assert latest[("deploy_success_rate", labels(service="shop", environment="production"))] == pytest.approx(4 / 6)


def test_a_ledger_connection_of_the_wrong_type_is_a_503(client, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DEPLOY_LEDGER", json.dumps({"conn_type": "http", "host": "example.com"}))

    resp = client.get("/deploy/metrics")
    assert resp.status_code == 503
    assert "the ledger needs a deploy_ledger, postgres or sqlite connection" in resp.text
    page = client.get("/deploy/dora")
    assert page.status_code == 503 and "the ledger needs" in page.text


# --------------------------------------------------------------------------------------------------- JSON


def test_the_json_report(client):
    resp = client.get("/deploy/dora.json")

    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["period"]["days"] == 30 and data["filters"] == {"service": None, "environment": None}
    assert [(r["service"], r["environment"]) for r in data["rows"]] == [(EVIL, "staging"),
                                                                         ("shop", "production")]
    shop = data["rows"][1]
    assert shop["success_rate"] == {"succeeded": 3, "finished": 4, "rate": 0.75, "target": "> 95%",
                                    "status": "fail"}
    assert shop["mttr"]["mean_seconds"] == 1200 and shop["mttr"]["status"] == "pass"
    assert shop["change_failure_rate"]["rate"] == 0.25
    assert shop["lead_time"]["median_seconds"] == 4 * 3600 and shop["lead_time"]["band"] == "elite"
    assert shop["deployment_frequency"]["band"] == "medium"
    assert shop["verdicts"] == {"deployment_frequency": "medium", "lead_time": "elite", "mttr": "pass",
                                "change_failure_rate": "fail", "success_rate": "fail"}

    empty = client.get("/deploy/dora.json", params={"environment": "development"}).json()
    assert empty["rows"] == []
    (total,) = empty["totals"]
    assert total["environment"] == "development" and total["success_rate"]["rate"] is None
    assert total["verdicts"]["success_rate"] == "no data"


# --------------------------------------------------------------------------------------------------- page


def test_the_page_shows_the_kpis_against_the_targets_with_charts(client):
    resp = client.get("/deploy/dora")

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp  # no script, framed by Airflow only
    page = resp.text
    for name in KPI_NAMES:
        assert name in page
    for figure in ("75.0%", "25.0%", "20m", "4h", "0.70/week", "DORA band: elite", "DORA band: medium",
                   "pass: target &lt; 30m", "fail: target &gt; 95%", "fail: target &lt; 5%", "3 of 4 finished"):
        assert figure in page, figure
    assert page.count("<svg") == 3  # deployments per week, lead time, MTTR
    assert '<rect class="failed"' in page and '<rect class="succeeded"' in page
    assert "no script" not in page and "<script" not in page.lower()
    # The name and the reason from the ledger are escaped, wherever they appear (cards, charts, table).
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "migration &lt;b&gt;0042&lt;/b&gt; failed &amp; rolled forward" in page and "<b>" not in page
    # Development had nothing: its KPIs are "no data", never 0.
    development = page.split("<h3>development ")[1].split("</section>")[0]
    assert development.count('<div class="value nodata">no data</div>') == len(KPI_NAMES)
    assert "0.0%" not in development and "0.00/week" not in development
    # The form keeps the filters; the links carry them to the JSON and the metrics.
    assert '<option value="shop">shop</option>' in page
    assert 'href="dora.json?days=30"' in page and 'href="metrics?days=30"' in page


def test_the_page_of_an_empty_environment_says_no_data(client):
    resp = client.get("/deploy/dora", params={"environment": "development", "service": "", "days": "14"})

    assert resp.status_code == 200, resp.text
    page = resp.text
    assert "<h3>development " in page and "<h3>production " not in page
    assert page.count('<div class="value nodata">no data</div>') == len(KPI_NAMES)
    assert "no data: no deployment finished in this period." in page
    assert "0.0%" not in page and "<svg" not in page
    assert '<option value="development" selected>development</option>' in page
    assert 'value="14"' in page and 'href="dora.json?days=14&amp;environment=development"' in page
    # The service filter still offers every service of the period (escaped).
    assert '<option value="&lt;script&gt;alert(1)&lt;/script&gt;">' in page


def test_weekly_outcomes_buckets_by_monday_and_leaves_rollback_runs_out(ledger):
    from airflow_deploy_provider.plugins.dora_views import weekly_outcomes

    since = datetime(2024, 5, 1, tzinfo=timezone.utc)  # a Wednesday: the first week starts April 29
    until = datetime(2024, 5, 31, tzinfo=timezone.utc)

    def add(id: str, finish: datetime, status: str, kind: str = "deploy") -> None:
        ledger.start_deployment(id=id, service="s", environment="production", version="1", kind=kind,
                                started_at=finish - timedelta(minutes=5))
        ledger.finish_deployment(id, status, finished_at=finish)

    add("a", datetime(2024, 5, 1, 1, tzinfo=timezone.utc), "succeeded")
    add("b", datetime(2024, 5, 5, 23, tzinfo=timezone.utc), "failed")
    add("c", datetime(2024, 5, 6, 0, tzinfo=timezone.utc), "rolled_back")
    add("d", datetime(2024, 5, 7, tzinfo=timezone.utc), "succeeded", kind="rollback")
    size, buckets = weekly_outcomes(ledger.top_level_between(since, until), since, until)

    assert size == 1 and len(buckets) == 5
    assert buckets[0].start == datetime(2024, 4, 29, tzinfo=timezone.utc)
    assert [(b.succeeded, b.failed, b.rolled_back) for b in buckets[:2]] == [(1, 1, 0), (0, 0, 1)]
    assert sum(b.total for b in buckets) == 3
    size, buckets = weekly_outcomes([], until - timedelta(days=3650), until)
    assert size == 10 and len(buckets) == 53  # 523 weeks, 10 a bar


# ------------------------------------------------------------------------------------------- registration


def test_the_page_is_in_the_ui_navigation(client):
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from airflow_deploy_provider.plugins import DeployPlugin

    (view,) = DeployPlugin.external_views
    assert view == {"name": "Deployments (DORA)", "href": "deploy/dora", "destination": "nav",
                    "url_route": "deploy-dora", "category": "browse"}
    # As Airflow's plugins endpoint serves it to the UI.
    assert ExternalViewResponse.model_validate(view).model_dump()["url_route"] == "deploy-dora"
    # The UI resolves the href against the api-server's base path: the page's route, with or without prefix.
    assert urljoin("http://airflow.example.com/", view["href"]) == "http://airflow.example.com/deploy/dora"
    assert urljoin("https://example.com/airflow/", view["href"]) == "https://example.com/airflow/deploy/dora"
    assert client.get(urljoin("/", view["href"])).status_code == 200
