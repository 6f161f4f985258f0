"""Approvals end to end in a real Airflow (``tests/airflow_server.py``) with logged-in users of the simple auth
manager: people answer the approval (Airflow's human-in-the-loop request) through the REST API as themselves.

Production's policy: one of tech-lead (carol, dave) and one of product (erin, frank), by distinct people. Three
services deploy at the same time on the local platform:

* ``govok``: triggered by carol, so her approval is refused (separation of duties), as is mallory's (in no
  group); dave approves twice (counted once); erin approves: the policy is met and the version deploys;
* ``govno``: erin rejects with a comment: the run stops, nothing deployed;
* ``govlate``: nobody answers within the 20 s timeout: the request expires, nothing deployed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.airflow_server import AirflowServer, free_port
from tests.conftest import CaptureServer

pytestmark = pytest.mark.slow

USERS = {"operator": "op-pw", "carol": "carol-pw", "dave": "dave-pw", "erin": "erin-pw", "frank": "frank-pw",
         "mallory": "mallory-pw"}
TASK = "approval_gate.approve"
VERSION = "1.0.0"
RUN_TIMEOUT = 300


def service_files(name: str, timeout: str) -> dict[str, str]:
    return {
        "service.yaml": textwrap.dedent(f"""\
            service: {name}
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{{port}}", --version, "{{version}}"]
            notifications:
              slack: {{connection: slack_test, channel: "#deploys"}}
              events: [approval, failure]
            approvals:
              production:
                timeout: {timeout}
                groups:
                  - {{name: tech-lead, members: [carol, dave]}}
                  - {{name: product, members: [erin, frank]}}
            checklist: {{stagingTestsPassed: false, securityScanClean: false, releaseNotes: false,
                        rollbackPlan: false, onCallNotified: false}}
            """),
        "production.yaml": textwrap.dedent("""\
            environment: production
            strategy: rolling
            replicas: 1
            healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}
            monitoring: {duration: 0s}  # no live traffic here: a watch would see no data and fail
            """),
    }


HOTFIX_TASK = "hotfix_creation.fast_track_approval"


def hotfix_service_files(port: int) -> dict[str, str]:
    """``govfix``: production deploys without approval (to have something to fix); hotfixes need one tech lead
    (carol) when critical, one senior engineer (dave) when major. Its router is under load from the test."""
    return {
        "service.yaml": textwrap.dedent("""\
            service: govfix
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{port}", --version, "{version}"]
            notifications:
              slack: {connection: slack_test, channel: "#deploys"}
            approvals:
              production: {enabled: false}
              hotfix:
                critical: {groups: [{name: tech-lead, members: [carol]}], timeout: 10m}
                major: {groups: [{name: senior-engineer, members: [dave]}], timeout: 10m}
            checklist: {stagingTestsPassed: false, securityScanClean: false, releaseNotes: false,
                        rollbackPlan: false, onCallNotified: false}
            hotfix: {stabilityPeriod: 2s, monitorDuration: 2s, lowerEnvironments: []}
            rollback: {monitorDuration: 2s}
            incident: {verifyDuration: 2s, slackApi: slack_api, statusPage: statuspage}
            """),
        "production.yaml": textwrap.dedent(f"""\
            environment: production
            strategy: rolling
            replicas: 2
            healthCheck: {{initialDelay: 100ms, interval: 200ms, timeout: 2s}}
            autoRollback:
              enabled: true
              conditions: ["error_rate > 5%"]
            monitoring: {{duration: 1s}}
            platform:
              port: {port}
            """),
    }


def slack_api(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Slack's Web API, as much as the incident workflow uses of it."""
    if path.endswith("/conversations.create"):
        return {"ok": True, "channel": {"id": "C0INCIDENT", "name": payload.get("name")}}
    return {"ok": True, "channel": payload.get("channel"), "ts": "1.0"}


class Governed:
    def __init__(self, airflow: AirflowServer, ledger_url: str, slack: CaptureServer, api: CaptureServer) -> None:
        self.airflow = airflow
        self.ledger_url = ledger_url
        self.slack = slack
        self.api = api  # Slack's Web API and the status page

    def messages(self, service: str) -> list[str]:
        """The Slack messages about ``service`` (fallback text), in order."""
        return [t for t in self.slack.texts if t.startswith(f"{service} ")]

    def hitl_path(self, dag_id: str, run_id: str, task: str = TASK) -> str:
        return f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task}/-1/hitlDetails"

    def wait_open(self, dag_id: str, run_id: str, timeout: float = 120, task: str = TASK) -> dict[str, Any]:
        """The approval request once it waits for an answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = requests.get(f"{self.airflow.api_url}/api/v2{self.hitl_path(dag_id, run_id, task)}", timeout=30,
                                headers={"Authorization": f"Bearer {self.airflow.token('operator')}"})
            if resp.status_code == 200 and not resp.json().get("response_received"):
                states = self.airflow.task_states(dag_id, run_id)
                if states.get(task) in ("awaiting_input", "deferred"):
                    return resp.json()
            time.sleep(0.5)
        raise AssertionError(f"no open approval request in {dag_id}/{run_id}:\n"
                             + self.airflow.explain(dag_id, run_id))

    def answer(self, dag_id: str, run_id: str, user: str, choice: str, comment: str | None = None,
               task: str = TASK) -> int:
        """Answer as ``user`` through the REST API; the HTTP status."""
        resp = requests.patch(f"{self.airflow.api_url}/api/v2{self.hitl_path(dag_id, run_id, task)}", timeout=30,
                              headers={"Authorization": f"Bearer {self.airflow.token(user)}"},
                              json={"chosen_options": [choice], "params_input": {"comment": comment}})
        return resp.status_code

    def decisions(self, deployment_id: str) -> list[tuple[str, str | None]]:
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        events = DeploymentLedger.from_url(self.ledger_url).events(deployment_id, kind="approval")
        return [(e.data["decision"], e.data.get("user")) for e in events]

    def ledger(self):
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        return DeploymentLedger.from_url(self.ledger_url)

    def serving(self, name: str) -> str | None:
        state = self.airflow.home / "deploy-local" / f"{name}-production" / "state.json"
        if not state.exists():
            return None
        data = json.loads(state.read_text())
        return ((data.get("roles") or {}).get("stable") or {}).get("version")


@pytest.fixture(scope="module")
def governed(tmp_path_factory):
    home = tmp_path_factory.mktemp("approvals_airflow")
    airflow = AirflowServer(home, users=USERS)
    ledger_url = f"sqlite:///{home / 'ledger.db'}"
    slack = CaptureServer()
    api = CaptureServer(reply=lambda path, payload: slack_api(path, payload) if "/api/" in path and "incidents"
                        not in path else {"id": "st-1"})
    airflow.env["AIRFLOW_CONN_SLACK_API"] = json.dumps({"conn_type": "slack", "password": "xoxb-test-token",
                                                        "extra": {"base_url": f"http://127.0.0.1:{api.port}/api/"}})
    airflow.env["AIRFLOW_CONN_STATUSPAGE"] = json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                         "port": api.port, "schema": "http"})
    airflow.env["AIRFLOW_CONN_DEPLOY_LEDGER"] = json.dumps({"conn_type": "deploy_ledger", "host": ledger_url})
    airflow.env["AIRFLOW_CONN_SLACK_TEST"] = json.dumps({"conn_type": "slackwebhook", "password": "T0/B0/X",
                                                         "host": f"http://127.0.0.1:{slack.port}"})
    port = free_port()
    load = None
    try:
        services = {name: service_files(name, timeout)
                    for name, timeout in (("govok", "10m"), ("govno", "10m"), ("govlate", "20s"))}
        services["govfix"] = hotfix_service_files(port)
        for name, files in services.items():
            root = home / "services" / name
            for file, text in files.items():
                (root / name / ".deploy").mkdir(parents=True, exist_ok=True)
                (root / name / ".deploy" / file).write_text(text)
            airflow.add_dag_file(f"{name}.py", "from airflow_deploy_provider.factory import register_deploy_dags\n"
                                 f"register_deploy_dags(globals(), roots=[{str(root)!r}])\n")
        # live load on govfix's router: its hotfix's gates read the router's statistics
        load = subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.load",
                                 f"http://127.0.0.1:{port}/api/pay", "--rps", "40", "--quiet"])
        airflow.start()
        airflow.wait_for_dags([f"deploy_{n}_production" for n in services] + ["hotfix_govfix"])
        yield Governed(airflow, ledger_url, slack, api)
    finally:
        if load is not None:
            load.terminate()
            load.wait(10)
        subprocess.run([sys.executable, "-m", "airflow_deploy_provider.cli", "local", "down"], env=airflow.env,
                       capture_output=True, timeout=120)
        airflow.stop()
        slack.close()
        api.close()


def test_approved_by_two_distinct_members_of_the_groups(governed):
    airflow, dag = governed.airflow, "deploy_govok_production"
    run_id = airflow.trigger(dag, conf={"version": VERSION}, run_id="e2e_ok", as_user="carol")
    request = governed.wait_open(dag, run_id)
    assert {u["id"] for u in request["assigned_users"]} == {"dave", "erin", "frank"}  # carol triggered the run
    assert "carol (triggered this run)" in request["body"]
    assert governed.answer(dag, run_id, "carol", "Approve") == 403
    assert governed.answer(dag, run_id, "mallory", "Approve") == 403
    assert governed.answer(dag, run_id, "dave", "Approve", "looks good") == 200
    governed.wait_open(dag, run_id)
    assert governed.answer(dag, run_id, "dave", "Approve", "again") == 200  # counted once
    governed.wait_open(dag, run_id)
    assert airflow.task_states(dag, run_id)[TASK] in ("awaiting_input", "deferred")
    assert governed.answer(dag, run_id, "erin", "Approve", "ship it") == 200
    run = airflow.wait_for_run(dag, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", airflow.explain(dag, run_id)
    deployment = f"{dag}/{run_id}"
    assert governed.decisions(deployment) == [("requested", None), ("approved", "dave"), ("refused", "dave"),
                                              ("approved", "erin")]
    approvals = [e.data for e in governed.ledger().events(deployment, kind="approval")]
    assert approvals[1]["group"] == "tech-lead" and approvals[3]["group"] == "product"
    assert approvals[1]["comment"] == "looks good"
    assert governed.ledger().get(deployment).triggered_by == "carol"
    assert governed.serving("govok") == VERSION
    # every decision announced, with the link to where to approve
    messages = governed.messages("govok")
    assert [m for m in messages if "approval requested" in m] and any("approved by dave (tech-lead)" in m
                                                                       for m in messages), messages
    assert any("approved by erin (product)" in m and "policy met" in m for m in messages), messages
    requested = next(r["json"] for r in governed.slack.requests if "approval requested" in r["json"].get("text", ""))
    assert f"/dags/{dag}/runs/{run_id}" in json.dumps(requested)


def test_rejection_stops_the_run_before_anything_is_deployed(governed):
    airflow, dag = governed.airflow, "deploy_govno_production"
    run_id = airflow.trigger(dag, conf={"version": VERSION}, run_id="e2e_no")
    governed.wait_open(dag, run_id)
    assert governed.answer(dag, run_id, "erin", "Reject", "not during the sale") == 200
    run = airflow.wait_for_run(dag, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "failed"
    states = airflow.task_states(dag, run_id)
    assert states[TASK] == "failed"
    deployment = governed.ledger().get(f"{dag}/{run_id}")
    assert deployment.status == "failed" and "rejected by erin: not during the sale" in deployment.outcome_reason
    assert governed.decisions(deployment.id) == [("requested", None), ("rejected", "erin")]
    assert any("rejected by erin: not during the sale" in m for m in governed.messages("govno"))
    assert governed.serving("govno") is None  # nothing deployed


def test_unanswered_request_expires_and_nothing_is_deployed(governed):
    airflow, dag = governed.airflow, "deploy_govlate_production"
    run_id = airflow.trigger(dag, conf={"version": VERSION}, run_id="e2e_late")
    governed.wait_open(dag, run_id)
    run = airflow.wait_for_run(dag, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "failed", airflow.explain(dag, run_id)
    deployment = governed.ledger().get(f"{dag}/{run_id}")
    assert deployment.status == "failed"
    assert [d for d, _ in governed.decisions(deployment.id)] == ["requested", "expired"]
    assert governed.serving("govlate") is None


def test_hotfix_severity_picks_the_approvers_and_the_override_is_recorded(governed):
    """``hotfix_govfix``: a major hotfix asks the senior engineers (carol, a tech lead only, may not answer) and
    dave rejects it: nothing deployed. A critical one asks the tech leads (dave may not answer); carol approves;
    the emergency override (staging and window skipped) is recorded with who triggered it and why, and the
    hotfix replaces what production ran."""
    airflow, ledger = governed.airflow, governed.ledger()
    deploy = airflow.trigger("deploy_govfix_production", conf={"version": "1.0.0"}, run_id="e2e_base")
    run = airflow.wait_for_run("deploy_govfix_production", deploy, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", airflow.explain("deploy_govfix_production", deploy)
    assert governed.serving("govfix") == "1.0.0"

    dag = "hotfix_govfix"
    reason = "card payments fail for every customer"
    major = airflow.trigger(dag, run_id="e2e_major", as_user="operator", conf={
        "version": "1.0.1", "issue_id": "INC-41", "severity": "major", "reason": reason})
    request = governed.wait_open(dag, major, task=HOTFIX_TASK)
    assert {u["id"] for u in request["assigned_users"]} == {"dave"}
    assert governed.answer(dag, major, "carol", "Approve", task=HOTFIX_TASK) == 403  # not a senior engineer
    assert governed.answer(dag, major, "dave", "Reject", "needs a test first", task=HOTFIX_TASK) == 200
    assert airflow.wait_for_run(dag, major, timeout=RUN_TIMEOUT)["state"] == "failed"
    refused = ledger.get(f"{dag}/{major}")
    assert refused.status == "failed" and "rejected by dave: needs a test first" in refused.outcome_reason
    assert not ledger.events(refused.id, kind="override")  # no override before an approval
    assert governed.serving("govfix") == "1.0.0"

    critical = airflow.trigger(dag, run_id="e2e_critical", as_user="operator", conf={
        "version": "1.0.2", "issue_id": "INC-42", "severity": "critical", "reason": reason})
    request = governed.wait_open(dag, critical, task=HOTFIX_TASK)
    assert {u["id"] for u in request["assigned_users"]} == {"carol"}
    assert governed.answer(dag, critical, "dave", "Approve", task=HOTFIX_TASK) == 403  # not a tech lead
    assert governed.answer(dag, critical, "carol", "Approve", "go", task=HOTFIX_TASK) == 200
    run = airflow.wait_for_run(dag, critical, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", airflow.explain(dag, critical)
    hotfix = ledger.get(f"{dag}/{critical}")
    assert (hotfix.kind, hotfix.version, hotfix.image, hotfix.status) == ("hotfix", "1.0.2", "govfix:hotfix-INC-42",
                                                                         "succeeded")
    approvals = [e.data for e in ledger.events(hotfix.id, kind="approval")]
    assert [(a["decision"], a.get("user"), a.get("group"), a["policy"]) for a in approvals] == [
        ("requested", None, None, "critical"), ("approved", "carol", "tech-lead", "critical")]
    (override,) = [e.data for e in ledger.events(hotfix.id, kind="override")]
    assert override == {"who": "operator", "why": reason, "skipped": ["staging", "maintenance window"]}
    assert governed.serving("govfix") == "1.0.2"


def test_incident_mitigated_by_a_rollback_chosen_through_the_api(governed):
    """``incident_govfix`` after the hotfix: acknowledged and paged, diagnosed, a person chooses "Roll back"
    through the REST API; the rollback DAG restores 1.0.0, verification passes, and the report has the
    response times against the spec's targets. Runs after the hotfix test (production runs 1.0.2)."""
    airflow, ledger, dag = governed.airflow, governed.ledger(), "incident_govfix"
    task = "mitigation.choose_mitigation"
    if governed.serving("govfix") != "1.0.2":
        pytest.skip("needs the hotfix test's state (1.0.2 in production over 1.0.0)")
    run_id = airflow.trigger(dag, run_id="e2e_incident", as_user="operator", conf={
        "summary": "checkout returns 500 for every card payment", "severity": "critical", "trigger": "manual"})
    request = governed.wait_open(dag, run_id, task=task)
    assert set(request["options"]) == {"Roll back", "Scale up", "Maintenance mode"}
    assert governed.answer(dag, run_id, "erin", "Roll back", "1.0.2 is the suspect", task=task) == 200
    run = airflow.wait_for_run(dag, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", airflow.explain(dag, run_id)
    states = airflow.task_states(dag, run_id)
    assert states["mitigation.roll_back"] == "success" and states["mitigation.scale_up"] == "skipped", states
    assert airflow.dag_run("rollback_govfix_production", f"{run_id}__rollback")["state"] == "success"
    assert governed.serving("govfix") == "1.0.0"

    incident = ledger.get(f"{dag}/{run_id}")
    assert (incident.kind, incident.status, incident.version) == ("incident", "resolved", "1.0.2")
    stages = [e.data.get("stage") for e in ledger.events(incident.id, kind="incident")]
    for stage in ("started", "detected", "responded", "diagnosed", "mitigation_chosen", "mitigated", "recovered",
                  "report"):
        assert stage in stages, stages
    chosen = next(e.data for e in ledger.events(incident.id, kind="incident") if e.data.get("stage") ==
                  "mitigation_chosen")
    assert (chosen["choice"], chosen["user"]) == ("Roll back", "erin")
    report = next(e.data for e in ledger.events(incident.id, kind="incident") if e.data.get("stage") == "report")
    assert set(report["sla"]) == {"detect", "respond", "mitigate", "recover"}
    assert all(v["seconds"] is not None and v["met"] for v in report["sla"].values()), report["sla"]
    assert ledger.last_stable("govfix", "production").version == "1.0.0"  # the incident is no deployment
    messages = governed.messages("govfix")
    assert any("INCIDENT (critical)" in m for m in messages) and any("incident resolved" in m for m in messages)
    # the incident channel through Slack's Web API, the status page through its HTTP API
    calls = [(r["path"], r["json"]) for r in governed.api.requests]
    created = [p for path, p in calls if path.endswith("/conversations.create")]
    assert len(created) == 1 and created[0]["name"].startswith("incident-govfix-"), calls
    assert any(path.endswith("/chat.postMessage") and p.get("channel") == "C0INCIDENT" for path, p in calls)
    pages = [p["status"] for path, p in calls if path == "/api/v1/incidents"]
    assert pages == ["investigating", "resolved"], calls
    assert "xoxb-test-token" not in airflow.task_log(dag, run_id, "initial_response.create_incident_channel")
