"""The webhook plugin's app against a real metadata database (SQLite) holding the serialized DAGs of two
services: GitHub and GitLab pushes create deployment runs, Alertmanager alerts rollback runs, and every
rejection creates nothing.

The app is mounted under ``/deploy`` as the api-server mounts it (through the plugin's lazy app); runs are
checked in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, write_service

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

SECRET = "gh-secret-\u00e9-1234"
GITLAB_TOKEN = "gl-token-5678"
ALERT_TOKEN = "am-token-9012"
SHA = "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f"
DEV_DAG = "deploy_shop-api_development"
STAGING_DAG = "deploy_shop-api_staging"
ROLLBACK_DAG = "rollback_shop-api_staging"
CHECKOUT_DAG = "deploy_checkout_development"

PLATFORM = "platform:\n  type: ecs\n  cluster: shop\n"
SERVICES = {
    "shop-api": {
        "service.yaml": "service: shop-api\n" + PLATFORM,
        "development.yaml": "environment: development\nstrategy: recreate\nautoDeploy: true\n",
        "staging.yaml": "environment: staging\nstrategy: rolling\n",
    },
    # Deployed from the repository acme/payments (the connection maps it) on pushes to main.
    "checkout": {
        "service.yaml": "service: checkout\n" + PLATFORM,
        "development.yaml": "environment: development\nstrategy: recreate\nautoDeploy: true\nbranch: main\n",
        "production.yaml": "environment: production\nstrategy: rolling\n",
    },
}
OUR_DAGS = (DEV_DAG, STAGING_DAG, ROLLBACK_DAG, CHECKOUT_DAG, "rollback_shop-api_development",
            "rollback_checkout_development", "rollback_checkout_production", "incident_checkout")


@pytest.fixture(scope="module")
def deploy_dags(airflow_db: Path) -> Iterator[Path]:
    """The services' DAGs, parsed from a DAG file with the default service roots (``services`` beside it) and
    written to the metadata database as the dag-processor writes them."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    dags = airflow_db / "dags"
    for name, files in SERVICES.items():
        write_service(dags / "services" / name, files)
    (dags / "deploy_dags.py").write_text(
        "from airflow_deploy_provider.factory import register_deploy_dags\n\nregister_deploy_dags(globals())\n")
    DagBundlesManager().sync_bundles_to_db()
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="dags-folder")
    assert bag.import_errors == {}
    assert set(OUR_DAGS) <= set(bag.dags)
    sync_bag_to_db(bag, "dags-folder", None)
    yield dags
    shutil.rmtree(dags / "services", ignore_errors=True)
    (dags / "deploy_dags.py").unlink(missing_ok=True)
    _delete_runs()


def _delete_runs() -> None:
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Log).where(Log.dag_id.in_(OUR_DAGS)))
        session.execute(delete(DagRun).where(DagRun.dag_id.in_(OUR_DAGS)))


def connection(**extra: Any) -> str:
    return json.dumps({"conn_type": "generic", "password": SECRET, "extra": {
        "gitlab_token": GITLAB_TOKEN, "alertmanager_token": ALERT_TOKEN,
        "repositories": {"acme/payments": "checkout"}, **extra}})


@pytest.fixture
def client(deploy_dags: Path, monkeypatch):
    """A client of the plugin's app mounted under ``/deploy``, with the webhook connection set."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from airflow_deploy_provider.plugins import DeployPlugin

    monkeypatch.setenv("AIRFLOW_CONN_DEPLOY_WEBHOOKS", connection())
    (mounted,) = DeployPlugin.fastapi_apps
    assert mounted["url_prefix"] == "/deploy"
    app = FastAPI()
    app.mount(mounted["url_prefix"], mounted["app"])
    _delete_runs()
    with TestClient(app) as test_client:
        yield test_client
    _delete_runs()


def runs(dag_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)).all()
        for run in found:
            _ = run.note  # loaded before the session closes
        session.expunge_all()
        return list(found)


def all_runs() -> int:
    return sum(len(runs(d)) for d in OUR_DAGS)


# --------------------------------------------------------------------------------------------------- GitHub


def github_push(ref: str = "refs/heads/develop", repository: str = "acme/shop-api", sha: str = SHA,
                **extra: Any) -> dict[str, Any]:
    return {
        "ref": ref, "before": "0" * 39 + "1", "after": sha, "created": False, "deleted": False,
        "repository": {"full_name": repository, "name": repository.rsplit("/", 1)[-1]},
        "pusher": {"name": "alice", "email": "alice@example.com"},
        "head_commit": {"id": sha, "message": "Fix the checkout total\n\nRounding was off by one cent.",
                        "timestamp": "2024-05-01T12:34:56+02:00",
                        "author": {"name": "Alice Doe", "email": "alice@example.com", "username": "alice"}},
        **extra,
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_github(client: Any, payload: Any = None, *, delivery: str | None = None, event: str = "push",
                body: bytes | None = None, signature: str | None = None, headers: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
    body = body if body is not None else json.dumps(payload).encode()
    sent = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature or sign(body), "Content-Type": content_type, **(headers or {})}
    return client.post("/deploy/webhooks/github", content=body, headers=sent)


def test_a_signed_push_to_develop_creates_one_run_with_the_commit_metadata(client):
    resp = post_github(client, github_push(), delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")

    assert resp.status_code == 201, resp.text
    run_id = "github__72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert resp.json() == {"status": "triggered", "runs": [{"dag_id": DEV_DAG, "run_id": run_id,
                                                            "status": "created"}]}
    (run,) = runs(DEV_DAG)
    assert run.run_id == run_id
    assert run.conf == {
        "commit": SHA, "short_sha": "5e6f7a8", "branch": "develop", "author": "Alice Doe",
        "message": "Fix the checkout total\n\nRounding was off by one cent.",
        "committed_at": "2024-05-01T10:34:56+00:00", "reason": "push to develop in acme/shop-api by alice",
        "repository": "acme/shop-api", "source": "github", "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    # As a run triggered through the REST API: manual, queued, by the webhook's user.
    assert str(run.run_type) == "manual" and str(run.state) == "queued"
    assert run.triggered_by.value == "rest_api" and run.triggering_user_name == "webhook:github"
    assert run.logical_date is None
    assert run.note == "github push of 5e6f7a8 to develop (acme/shop-api)"
    assert runs(STAGING_DAG) == [] and runs(CHECKOUT_DAG) == []  # staging does not auto-deploy

    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        (entry,) = session.scalars(select(Log).where(Log.dag_id == DEV_DAG)).all()
        assert (entry.event, entry.owner, entry.run_id) == ("trigger_dag_run", "webhook:github", run_id)
        assert json.loads(entry.extra)["commit"] == SHA


def test_a_redelivered_push_creates_no_second_run(client):
    payload = github_push()
    first = post_github(client, payload, delivery="delivery-1")
    again = post_github(client, payload, delivery="delivery-1")

    assert first.status_code == 201
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["runs"][0]["reason"] == "already delivered: the run exists"
    assert [r.run_id for r in runs(DEV_DAG)] == ["github__delivery-1"]


@pytest.mark.parametrize("signature", [
    sign(b"something else"), sign(json.dumps(github_push()).encode(), "wrong secret"), "sha1=abc", "sha256=",
    "garbage"])
def test_a_forged_signature_is_refused(client, signature, caplog):
    resp = post_github(client, github_push(), signature=signature)

    assert resp.status_code == 401
    assert resp.json() == {"status": "rejected", "reason": "the signature does not match"}
    assert all_runs() == 0
    assert "the signature does not match" in caplog.text and SECRET not in caplog.text


def test_a_push_without_signature_is_refused(client):
    body = json.dumps(github_push()).encode()
    resp = client.post("/deploy/webhooks/github", content=body, headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"})

    assert resp.status_code == 401
    assert resp.json()["reason"] == "the X-Hub-Signature-256 header is missing"
    assert all_runs() == 0


@pytest.mark.parametrize(("payload", "reason"), [
    (github_push(ref="refs/heads/feature/login"), "branch feature/login does not auto-deploy any environment "
                                                  "of shop-api"),
    (github_push(ref="refs/tags/v1.0.0"), "not a branch push (tags and other refs are not deployed)"),
    (github_push(ref="refs/heads/x..y"), "the branch name is not one a deployment accepts"),
    (github_push(deleted=True), "the branch was deleted"),
    (github_push(repository="acme/unknown-service"), "unknown service unknown-service (repository "
                                                     "acme/unknown-service)"),
    (github_push(repository="acme/Not_A_Service"), "repository acme/Not_A_Service is not mapped to a service"),
])
def test_pushes_that_deploy_nothing_are_ignored(client, payload, reason):
    resp = post_github(client, payload)

    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "ignored", "reason": reason}
    assert all_runs() == 0


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "malformed payload: not valid JSON"),
    (b"[1, 2]", "malformed payload: expected a JSON object"),
    (b"\xff\xfe", "malformed payload: not valid JSON"),
    (json.dumps(github_push(sha="5E6F7A8")).encode(), "malformed payload: 'after' is not valid"),
    (json.dumps(github_push(sha="5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f; rm -rf")).encode(),
     "malformed payload: 'after' is not valid"),
    (json.dumps(github_push(repository="acme/shop api")).encode(),
     "malformed payload: 'repository.full_name' is not valid"),
    (json.dumps({"ref": "refs/heads/develop"}).encode(), "malformed payload: 'repository.full_name' is missing"),
])
def test_malformed_payloads_are_refused(client, body, reason):
    resp = post_github(client, body=body)

    assert resp.status_code == 400, resp.text
    assert resp.json() == {"status": "rejected", "reason": reason}
    assert all_runs() == 0


def test_an_oversize_body_is_refused_before_it_is_read(client):
    from airflow_deploy_provider.plugins.payloads import MAX_BODY_BYTES

    body = json.dumps(github_push(padding="x" * MAX_BODY_BYTES)).encode()
    resp = post_github(client, body=body)
    assert resp.status_code == 413
    assert resp.json()["reason"] == f"the body is larger than {MAX_BODY_BYTES} bytes"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies to what arrives
        for i in range(0, len(body), 64 * 1024):
            yield body[i:i + 64 * 1024]

    resp = client.post("/deploy/webhooks/github", content=chunks(), headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-2", "X-Hub-Signature-256": sign(body)})
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert resp.status_code == 413
    assert all_runs() == 0


def test_ping_and_other_events(client):
    ping = post_github(client, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert ping.status_code == 200 and ping.json() == {"status": "pong"}

    other = post_github(client, github_push(), event="pull_request")
    assert other.status_code == 202
    assert other.json() == {"status": "ignored", "reason": "only push events are handled"}

    bad_delivery = post_github(client, github_push(), delivery="../../etc/passwd")
    assert bad_delivery.status_code == 400
    assert bad_delivery.json()["reason"] == "the X-GitHub-Delivery header is not valid"
    assert all_runs() == 0


def test_a_form_encoded_push_to_a_mapped_repository(client):
    """GitHub's default content type; the connection maps acme/payments to the service checkout, which
    auto-deploys main."""
    from urllib.parse import urlencode

    payload = github_push(ref="refs/heads/main", repository="acme/payments")
    body = urlencode({"payload": json.dumps(payload)}).encode()
    resp = post_github(client, body=body, delivery="form-1", content_type="application/x-www-form-urlencoded")

    assert resp.status_code == 201, resp.text
    (run,) = runs(CHECKOUT_DAG)
    assert run.run_id == "github__form-1"
    assert run.conf["branch"] == "main" and run.conf["repository"] == "acme/payments"
    assert runs(DEV_DAG) == []


def test_airflow_checks_the_run_as_for_a_trigger_through_its_api(client):
    """The run is created by the REST API's trigger code: a DAG with import errors refuses it (422), a DAG
    Airflow no longer has is not there to trigger (202)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    def set_dag(**values: Any) -> None:
        with create_session() as session:
            session.execute(update(DagModel).where(DagModel.dag_id == DEV_DAG).values(**values))

    try:
        set_dag(has_import_errors=True)
        resp = post_github(client, github_push())
        assert resp.status_code == 422, resp.text
        assert resp.json()["reason"] == (f"{DEV_DAG}: Dag with dag_id: '{DEV_DAG}' has import errors and cannot "
                                         "be triggered")
        set_dag(has_import_errors=False, is_stale=True)
        resp = post_github(client, github_push())
        assert resp.status_code == 202, resp.text
        assert resp.json()["reason"] == f"no DAG {DEV_DAG} in Airflow"
    finally:
        set_dag(has_import_errors=False, is_stale=False)
    assert all_runs() == 0


def test_without_the_connection_nothing_is_accepted(client, monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_DEPLOY_WEBHOOKS")

    resp = post_github(client, github_push())

    assert resp.status_code == 503
    assert resp.json() == {"status": "error", "reason": "webhooks are not configured"}
    assert "no connection deploy_webhooks" in caplog.text

    # A connection without the sender's secret: that webhook cannot be verified either.
    monkeypatch.setenv("AIRFLOW_CONN_DEPLOY_WEBHOOKS", json.dumps({"conn_type": "generic", "password": SECRET}))
    resp = post_gitlab(client, gitlab_push())
    assert resp.status_code == 503
    assert resp.json() == {"status": "error", "reason": "this webhook is not configured"}
    assert "no GitLab token (extra 'gitlab_token') in connection deploy_webhooks" in caplog.text
    assert all_runs() == 0


# --------------------------------------------------------------------------------------------------- GitLab


def gitlab_push(ref: str = "refs/heads/develop") -> dict[str, Any]:
    return {
        "object_kind": "push", "event_name": "push", "ref": ref, "before": "0" * 39 + "1", "after": SHA,
        "checkout_sha": SHA, "user_name": "Bob Roe", "user_username": "bob",
        "project": {"path_with_namespace": "acme/backend/shop-api", "name": "shop-api"},
        "commits": [
            {"id": "1" * 40, "message": "older commit", "timestamp": "2024-05-01T09:00:00Z",
             "author": {"name": "Carol", "email": "carol@example.com"}},
            {"id": SHA, "message": "Add the payment retry\n", "timestamp": "2024-05-02T08:00:00+00:00",
             "author": {"name": "Bob Roe", "email": "bob@example.com"}},
        ],
        "total_commits_count": 2,
    }


def post_gitlab(client: Any, payload: Any, *, token: str | None = GITLAB_TOKEN, event: str = "Push Hook",
                delivery: str = "3c8e4a2f-4b8d-4a8e-9b1a-0d3f1e2a3b4c") -> Any:
    headers = {"X-Gitlab-Event": event, "Idempotency-Key": delivery, "X-Gitlab-Event-UUID": "other-uuid"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return client.post("/deploy/webhooks/gitlab", json=payload, headers=headers)


def test_a_gitlab_push_creates_a_run(client):
    resp = post_gitlab(client, gitlab_push())
    again = post_gitlab(client, gitlab_push())  # a retry carries the same Idempotency-Key

    assert resp.status_code == 201, resp.text
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    (run,) = runs(DEV_DAG)
    assert run.run_id == "gitlab__3c8e4a2f-4b8d-4a8e-9b1a-0d3f1e2a3b4c"
    assert run.triggering_user_name == "webhook:gitlab"
    assert {k: run.conf[k] for k in ("commit", "short_sha", "branch", "author", "message", "committed_at",
                                     "repository")} == {
        "commit": SHA, "short_sha": "5e6f7a8", "branch": "develop", "author": "Bob Roe",
        "message": "Add the payment retry", "committed_at": "2024-05-02T08:00:00+00:00",
        "repository": "acme/backend/shop-api"}


@pytest.mark.parametrize(("token", "reason"), [
    ("wrong-token", "the X-Gitlab-Token header does not match"),
    (None, "the X-Gitlab-Token header is missing"),
    (ALERT_TOKEN, "the X-Gitlab-Token header does not match"),  # each sender has its own token
])
def test_a_gitlab_push_with_a_bad_token_is_refused(client, token, reason):
    resp = post_gitlab(client, gitlab_push(), token=token)

    assert resp.status_code == 401
    assert resp.json() == {"status": "rejected", "reason": reason}
    assert all_runs() == 0


def test_gitlab_events_that_deploy_nothing(client):
    assert post_gitlab(client, gitlab_push(), event="Merge Request Hook").json() == {
        "status": "ignored", "reason": "only push events are handled"}
    assert post_gitlab(client, gitlab_push(ref="refs/heads/main")).status_code == 202
    assert all_runs() == 0


# --------------------------------------------------------------------------------------------- Alertmanager


def alert(alertname: str = "HighErrorRate", status: str = "firing", starts_at: str = "2024-05-03T10:00:00.123456789Z",
          **labels: str) -> dict[str, Any]:
    labels = {"alertname": alertname, "service": "shop-api", "environment": "staging", "severity": "critical",
              **labels}
    return {"status": status, "labels": labels,
            "annotations": {"summary": "Error rate is 7.2% (limit 5%)", "runbook": "https://runbooks/x"},
            "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "fingerprint": "c0ffee0123456789"}


def notification(*alerts: dict[str, Any], group_key: str = '{}:{alertname="HighErrorRate"}',
                 status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": status,
            "receiver": "airflow-rollback", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}


def post_alerts(client: Any, payload: Any, token: str | None = ALERT_TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/deploy/webhooks/alertmanager", json=payload, headers=headers)


def test_a_critical_alert_rolls_back_once_per_incident(client):
    first = post_alerts(client, notification(alert()))

    assert first.status_code == 201, first.text
    (run,) = runs(ROLLBACK_DAG)
    assert run.run_id.startswith("alertmanager__20240503T100000Z__")
    assert run.triggering_user_name == "webhook:alertmanager"
    assert run.conf["trigger"] == "alert"
    reason = run.conf["reason"]
    assert reason.startswith("alert HighErrorRate firing since 2024-05-03T10:00:00.123456+00:00 "
                             "(severity=critical): Error rate is 7.2% (limit 5%)")
    assert "environment=staging" in reason and "service=shop-api" in reason
    assert run.conf["alert"] == {
        "name": "HighErrorRate", "summary": "Error rate is 7.2% (limit 5%)",
        "startsAt": "2024-05-03T10:00:00.123456+00:00", "fingerprint": "c0ffee0123456789",
        "labels": {"alertname": "HighErrorRate", "service": "shop-api", "environment": "staging",
                   "severity": "critical"}}

    # Alertmanager repeats the notification, with a second alert joining the group: the same incident.
    again = post_alerts(client, notification(alert(), alert("HighLatency", starts_at="2024-05-03T10:02:00Z")))
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    # Another group reports the same service while the rollback is queued: no second rollback.
    other = post_alerts(client, notification(alert("LowAvailability", starts_at="2024-05-03T10:01:00Z"),
                                             group_key='{}:{alertname="LowAvailability"}'))
    assert other.status_code == 200, other.text
    assert other.json()["runs"][0]["reason"] == f"rollback run {run.run_id} is queued"
    assert [r.run_id for r in runs(ROLLBACK_DAG)] == [run.run_id]
    assert runs(DEV_DAG) == []


def test_a_critical_production_alert_also_opens_the_incident(client):
    payload = notification(alert(service="checkout", environment="production", starts_at="2024-05-04T09:00:00Z"),
                           group_key='{}:{alertname="CheckoutDown"}')
    first = post_alerts(client, payload)
    assert first.status_code == 201, first.text
    (rollback,) = runs("rollback_checkout_production")
    (incident,) = runs("incident_checkout")
    assert incident.conf == {"summary": "Error rate is 7.2% (limit 5%)", "severity": "critical",
                             "started_at": "2024-05-04T09:00:00+00:00", "trigger": "alert"}
    assert incident.run_id == rollback.run_id  # the same incident id
    again = post_alerts(client, payload)
    assert again.status_code == 200 and len(runs("incident_checkout")) == 1
    # a critical alert elsewhere than production rolls back but opens no incident
    assert runs("incident_shop-api") == []


def test_a_finished_alert_rollback_holds_off_new_ones_for_the_cooldown(client, monkeypatch):
    assert post_alerts(client, notification(alert())).status_code == 201
    _finish(ROLLBACK_DAG)

    later = post_alerts(client, notification(alert(starts_at="2024-05-03T11:00:00Z")))
    assert later.status_code == 200 and "less than 60 minutes ago" in later.json()["runs"][0]["reason"]

    monkeypatch.setenv("AIRFLOW_CONN_DEPLOY_WEBHOOKS", connection(alert_cooldown_minutes=0))
    again = post_alerts(client, notification(alert(starts_at="2024-05-03T11:00:00Z")))
    assert again.status_code == 201, again.text
    assert len(runs(ROLLBACK_DAG)) == 2


def _finish(dag_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.dag_id == dag_id).values(state=DagRunState.SUCCESS))


@pytest.mark.parametrize(("labels", "rule"), [
    ({"severity": "warning", "alertname": "ErrorRate"}, "alertname ErrorRate: error_rate > 5%"),
    ({"severity": "warning", "alertname": "SloBurn", "rollback_condition": "availability<99%"},
     "rollback_condition: availability < 99%"),
    ({"severity": "page", "alertname": "SloBurn", "rollback_condition": "error_rate"},
     "rollback_condition: error_rate > 5%"),
])
def test_alerts_naming_a_rollback_condition_roll_back(client, labels, rule):
    resp = post_alerts(client, notification(alert(**labels)))

    assert resp.status_code == 201, resp.text
    (run,) = runs(ROLLBACK_DAG)
    assert f"({rule})" in run.conf["reason"]


@pytest.mark.parametrize(("labels", "reason"), [
    ({"severity": "warning"}, "alert HighErrorRate is not critical and names none of shop-api's rollback "
                              "conditions (error_rate > 5%, availability < 99%)"),
    ({"severity": "warning", "rollback_condition": "error_rate > 1%"}, "alert HighErrorRate is not critical"),
    ({"service": "unknown"}, "alert HighErrorRate: unknown service unknown"),
    ({"environment": "production"}, "alert HighErrorRate: service shop-api has no production environment"),
    ({"environment": "prod"}, "the 'service' or 'environment' label is not a service's"),
    ({"service": ""}, "alert HighErrorRate has no 'service' and 'environment' labels"),
])
def test_alerts_that_match_no_rollback_rule_are_ignored(client, labels, reason):
    resp = post_alerts(client, notification(alert(**labels)))

    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "ignored" and reason in resp.json()["reason"]
    assert all_runs() == 0


def test_resolved_alerts_create_nothing(client):
    resolved = post_alerts(client, notification(alert(status="resolved"), status="resolved"))
    assert resolved.status_code == 202
    assert resolved.json() == {"status": "resolved", "reason": "resolved alerts trigger nothing"}
    # A firing group whose only matching alert has resolved.
    mixed = post_alerts(client, notification(alert(status="resolved"), alert(severity="info")))
    assert mixed.status_code == 202 and mixed.json()["status"] == "ignored"
    assert all_runs() == 0


@pytest.mark.parametrize("token", ["wrong", None, GITLAB_TOKEN])
def test_alerts_with_a_bad_bearer_token_are_refused(client, token):
    resp = post_alerts(client, notification(alert()), token=token)

    assert resp.status_code == 401
    assert resp.json()["status"] == "rejected"
    assert all_runs() == 0


def test_malformed_alert_notifications(client):
    assert post_alerts(client, {**notification(alert()), "version": "3"}).status_code == 202
    bad_time = post_alerts(client, notification(alert(starts_at="yesterday")))
    assert bad_time.status_code == 400
    assert bad_time.json()["reason"] == "malformed payload: 'alerts[0].startsAt' is not a time"
    assert post_alerts(client, {"version": "4", "groupKey": "g", "status": "firing"}).status_code == 400
    assert all_runs() == 0


# ------------------------------------------------------------------------------------- authenticated routes


def test_the_health_route_needs_an_airflow_login(client, deploy_dags):
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()
    manager.init()

    assert client.get("/deploy/health").status_code == 401
    assert client.get("/deploy/health", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    nobody = manager.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))
    assert client.get("/deploy/health", headers={"Authorization": f"Bearer {nobody}"}).status_code == 403

    viewer = manager.generate_jwt(SimpleAuthManagerUser(username="vera", role="viewer"))
    resp = client.get("/deploy/health", headers={"Authorization": f"Bearer {viewer}"})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["status"] == "ok" and data["user"] == "vera"
    assert data["connection"] == {"conn_id": "deploy_webhooks", "found": True, "github_secret": True,
                                  "gitlab_token": True, "alertmanager_token": True, "repositories": 1,
                                  "alert_cooldown_minutes": 60.0}
    # No roots configured: the ``services`` folder beside the DAG file holding deployment DAGs.
    assert data["service_roots"] == [str(deploy_dags / "services")] and data["service_folders"] == 2
    assert SECRET not in resp.text and GITLAB_TOKEN not in resp.text and ALERT_TOKEN not in resp.text
    # The webhook routes need no Airflow login, and an OpenAPI page would be a route without one.
    assert client.get("/deploy/openapi.json").status_code == 404
    assert client.get("/deploy/docs").status_code == 404


# ------------------------------------------------------------------------------------------- registration


def plugin_entry_points() -> dict[str, str]:
    """The package's ``airflow.plugins`` entry points, as ``pyproject.toml`` declares them."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]


def test_the_plugin_is_registered_through_its_entry_point_and_loads_lightly(tmp_path):
    assert plugin_entry_points() == {
        "airflow_deploy_provider": "airflow_deploy_provider.plugins:DeployPlugin"}
    # Every Airflow process imports its plugins (task processes too): the plugin module must not pull in the
    # API modules the app needs.
    code = textwrap.dedent("""\
        import sys
        from airflow._shared.plugins_manager import is_valid_plugin
        from airflow_deploy_provider.plugins import DeployPlugin
        assert is_valid_plugin(DeployPlugin)
        heavy = [m for m in sys.modules if m.startswith(("fastapi", "airflow.api_fastapi"))]
        assert not heavy, heavy
        """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
