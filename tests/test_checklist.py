"""The production pre-deployment checklist: each item a real check against the ledger, files, a URL and the
clock, in one real Airflow run (``dag.test()``) where every item runs on its own; and the window arithmetic
with the time fixed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_deploy_provider.sensors.maintenance_window import freeze_at, window_at

pytestmark = pytest.mark.slow  # a real run per test, and one waits for a window

VERSION = "2.0.0"
DEPLOYMENT = "checklist/run"


def cron_around(now: datetime, minutes_ago: int) -> str:
    start = now - timedelta(minutes=minutes_ago)
    return f"{start.minute} {start.hour} * * *"


DAG_FILE = """
import json
from airflow.sdk import DAG
from airflow_deploy_provider.operators.validation import ChecklistItemOperator, ChecklistReportOperator

CASES = json.loads({cases!r})
common = dict(service="shop", environment="production", version={version!r}, deployment_id={deployment!r})
with DAG("checklist", schedule=None):
    items = [ChecklistItemOperator(task_id=task_id, item=item, settings=settings, **common)
             for task_id, (item, settings) in CASES.items()]
    if {report!r}:
        items >> ChecklistReportOperator(task_id="report", items=[item for item, _ in CASES.values()],
                                         notification={{"slack_conn_id": "slack_test"}}, **common)
"""


@pytest.fixture
def run_checklist(dags_folder: Path, airflow_db, ledger):
    def run(cases: dict[str, tuple[str, dict]], report: bool = False) -> dict[str, str]:
        from airflow.dag_processing.dagbag import DagBag

        (dags_folder / "checklist.py").write_text(DAG_FILE.format(cases=json.dumps(cases, default=str),
                                                                  version=VERSION, deployment=DEPLOYMENT,
                                                                  report=report))
        bag = DagBag(str(dags_folder))
        assert bag.import_errors == {}
        dr = bag.dags["checklist"].test()
        return {ti.task_id: ti.state for ti in dr.get_task_instances()}

    return run


def details(ledger) -> dict[str, tuple[bool, str]]:
    """Task-independent view: item detail -> (ok, detail), from the ledger's checklist events."""
    return {e.task_id: (e.data["ok"], e.data["detail"]) for e in ledger.events(DEPLOYMENT, kind="checklist")}


@pytest.fixture
def web(tmp_path):
    """A local web server for the service folder (release notes published at a URL)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_each_item_checks_what_it_says(run_checklist, ledger, tmp_path, web):
    now = datetime.now(timezone.utc)
    ledger.start_deployment(id=DEPLOYMENT, service="shop", environment="production", version=VERSION)
    ledger.start_deployment(id="s/1", service="shop", environment="staging", version=VERSION)
    ledger.finish_deployment("s/1", "succeeded")
    ledger.start_deployment(id="d/1", service="shop", environment="development", version=VERSION)
    ledger.record_event("d/1", "scan", "trivy: 0 blocking", data={"version": VERSION, "blocking": 0})
    ledger.start_deployment(id="p/1", service="shop", environment="production", version="1.9.0", image="shop:1.9.0")
    ledger.finish_deployment("p/1", "succeeded")
    ledger.record_event(DEPLOYMENT, "notification", "started", data={"event": "start", "key": "start"})
    (tmp_path / "CHANGELOG.md").write_text(f"# {VERSION}\n- faster checkout\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / f"{VERSION}.md").write_text("fixes")
    inside = {"schedule": cron_around(now, 30), "duration": "2h", "timezone": "UTC", "freezes": []}
    outside = {"schedule": cron_around(now, 180), "duration": "1h", "timezone": "UTC", "freezes": [],
               "outside_window": "refuse"}
    frozen = {**inside, "freezes": [{"name": "holiday sale", "start": (now - timedelta(days=1)).date().isoformat(),
                                     "end": (now + timedelta(days=1)).date().isoformat()}]}
    notification = {"slack_conn_id": "slack_test", "channel": "#deploys"}
    states = run_checklist({
        "staging_passed": ("staging_tests_passed", {"has_staging": True}),
        "scan_clean": ("security_scan_clean", {}),
        "notes_changelog": ("release_notes", {"service_root": str(tmp_path)}),
        "notes_file": ("release_notes", {"service_root": str(tmp_path), "release_notes_location": "notes/{version}.md"}),
        "notes_url": ("release_notes", {"release_notes_location": web + "/notes/{version}.md"}),
        "notes_url_missing": ("release_notes", {"release_notes_location": web + "/notes/{version}-missing.md"}),
        "notes_missing": ("release_notes", {"service_root": str(tmp_path), "release_notes_location": "missing.md"}),
        "rollback_plan": ("rollback_plan", {"rollback_dag_id": "rollback_shop_production"}),
        "on_call": ("on_call_notified", {"notification": notification}),
        "on_call_no_channel": ("on_call_notified", {"notification": None}),
        "window_inside": ("maintenance_window", {"window": inside}),
        "window_outside": ("maintenance_window", {"window": outside}),
        "window_frozen": ("maintenance_window", {"window": frozen}),
        "backup": ("database_backup", {}),
    })
    assert {t: s for t, s in states.items()} == {
        "staging_passed": "success", "scan_clean": "success", "notes_changelog": "success", "notes_file": "success",
        "notes_url": "success", "notes_url_missing": "failed", "notes_missing": "failed", "rollback_plan": "success", "on_call": "success",
        "on_call_no_channel": "failed", "window_inside": "success", "window_outside": "failed",
        "window_frozen": "failed", "backup": "failed"}
    found = details(ledger)
    assert found["staging_passed"] == (True, f"{VERSION} passed staging")
    assert found["notes_changelog"] == (True, f"{VERSION} in CHANGELOG.md")
    assert found["notes_missing"][0] is False and "missing.md" in found["notes_missing"][1]
    assert "rollback_shop_production goes back to 1.9.0" in found["rollback_plan"][1]
    assert found["on_call"] == (True, found["on_call"][1]) and "#deploys" in found["on_call"][1]
    assert "outside the maintenance window" in found["window_outside"][1]
    assert "holiday sale" in found["window_frozen"][1]
    assert found["backup"] == (False, "no database connection configured (migrations.connection)")


def test_items_fail_without_evidence_and_the_report_says_which(run_checklist, ledger, slack):
    ledger.start_deployment(id=DEPLOYMENT, service="shop", environment="production", version=VERSION)
    ledger.start_deployment(id="d/1", service="shop", environment="development", version=VERSION)
    ledger.record_event("d/1", "scan", "trivy: 3 blocking", data={"version": VERSION, "blocking": 3})
    states = run_checklist({
        "staging_passed": ("staging_tests_passed", {"has_staging": True}),
        "scan_blocking": ("security_scan_clean", {}),
        "first_rollback_plan": ("rollback_plan", {"rollback_dag_id": "rollback_shop_production"}),
        "no_start_notice": ("on_call_notified", {"notification": {"slack_conn_id": "slack_test"}}),
    }, report=True)
    assert states == {"staging_passed": "failed", "scan_blocking": "failed", "first_rollback_plan": "success",
                      "no_start_notice": "failed", "report": "failed"}  # the report fails: nothing after it runs
    found = details(ledger)
    assert "has not passed staging" in found["staging_passed"][1]
    assert "3 blocking" in found["scan_blocking"][1]
    assert found["first_rollback_plan"][1].startswith("first deployment")
    # one announcement, item by item
    (text,) = slack.texts
    assert text == (f"shop {VERSION} deployment to production checklist: 3 of 4 items failed: staging tests passed, "
                    "security scan clean, on call notified")
    table = [b["text"]["text"] for b in slack.requests[0]["json"]["blocks"] if "```" in b.get("text", {}).get("text", "")]
    assert len(table) == 1 and "FAILED" in table[0] and "3 blocking" in table[0] and "first deployment" in table[0]


def test_a_passing_checklist_is_announced_and_lets_the_run_go_on(run_checklist, ledger, slack):
    ledger.start_deployment(id=DEPLOYMENT, service="shop", environment="production", version=VERSION)
    ledger.record_event(DEPLOYMENT, "notification", "started", data={"event": "start", "key": "start"})
    states = run_checklist({
        "first_rollback_plan": ("rollback_plan", {"rollback_dag_id": "rollback_shop_production"}),
        "on_call": ("on_call_notified", {"notification": {"slack_conn_id": "slack_test"}}),
    }, report=True)
    assert states == {"first_rollback_plan": "success", "on_call": "success", "report": "success"}
    assert slack.texts == [f"shop {VERSION} deployment to production checklist: all 2 items passed"]


UTC = timezone.utc


def test_window_arithmetic_with_the_time_fixed():
    berlin = {"schedule": "0 22 * * 2,4", "duration": timedelta(hours=6), "timezone": "Europe/Berlin"}
    # Tuesday 2026-12-01 23:30 Berlin (22:30 UTC): inside the window that started at 22:00, until 04:00
    end, following = window_at(berlin, datetime(2026, 12, 1, 22, 30, tzinfo=UTC))
    assert end is not None and end.isoformat() == "2026-12-02T04:00:00+01:00"
    assert following.isoformat() == "2026-12-03T22:00:00+01:00"
    # Wednesday noon: outside; the next window is Thursday 22:00 Berlin
    end, following = window_at(berlin, datetime(2026, 12, 2, 11, 0, tzinfo=UTC))
    assert end is None and following.isoformat() == "2026-12-03T22:00:00+01:00"
    # exactly at the start counts as inside
    assert window_at(berlin, datetime(2026, 12, 3, 21, 0, tzinfo=UTC))[0] is not None

    freezes = {**berlin, "freezes": [
        {"name": "year end", "start": "2026-12-20", "end": "2027-01-02"},
        {"name": "month close", "schedule": "0 0 L * *", "duration": timedelta(days=1)}]}
    assert freeze_at(freezes, datetime(2027, 1, 2, 22, 0, tzinfo=UTC))["name"] == "year end"  # the whole last day
    assert freeze_at(freezes, datetime(2027, 1, 3, 0, 30, tzinfo=UTC)) is None  # 01:30 Berlin on the 3rd
    assert freeze_at(freezes, datetime(2026, 11, 30, 10, 0, tzinfo=UTC))["name"] == "month close"
    assert freeze_at(freezes, datetime(2026, 11, 29, 10, 0, tzinfo=UTC)) is None


WINDOW_DAG = """
import json
from datetime import timedelta
from airflow.sdk import DAG
from airflow_deploy_provider.sensors.maintenance_window import MaintenanceWindowSensor

CASES = json.loads({cases!r})
with DAG("windows", schedule=None):
    for task_id, (window, expected) in CASES.items():
        MaintenanceWindowSensor(task_id=task_id, service="shop", environment="production", window=window,
                                expected_rollout=timedelta(seconds=expected), deployment_id={deployment!r})
"""


def test_window_sensor_waits_refuses_and_checks_the_rollout_fits(dags_folder, airflow_db, ledger):
    import time

    from airflow.dag_processing.dagbag import DagBag

    ledger.start_deployment(id=DEPLOYMENT, service="shop", environment="production", version=VERSION)
    # the wait: a window starting at the next full minute (cron's precision); started late in a minute, so it
    # is a few seconds away (but never less than the other cases need to finish first)
    if datetime.now(timezone.utc).second < 45:
        time.sleep(45 - datetime.now(timezone.utc).second)
    now = datetime.now(timezone.utc)
    soon = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    inside = {"schedule": cron_around(now, 10), "duration": "1h", "timezone": "UTC"}
    cases = {
        "inside": (inside, 600),
        "too_long": (inside, 3 * 3600),
        "refused_outside": ({"schedule": cron_around(now, 120), "duration": "1h", "outside_window": "refuse"}, 60),
        "frozen": ({**inside, "freezes": [{"name": "black friday", "start": now.date().isoformat(),
                                            "end": now.date().isoformat()}]}, 60),
        "waits": ({"schedule": f"{soon.minute} {soon.hour} * * *", "duration": "1h", "timezone": "UTC"}, 60),
    }
    (dags_folder / "windows.py").write_text(WINDOW_DAG.format(cases=json.dumps(cases), deployment=DEPLOYMENT))
    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}
    started = time.monotonic()
    dr = bag.dags["windows"].test()
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states == {"inside": "success", "too_long": "failed", "refused_outside": "failed", "frozen": "failed",
                      "waits": "success"}
    assert time.monotonic() - started >= (soon - now).total_seconds() - 2  # it did wait for the window
    messages = [e.message for e in ledger.events(DEPLOYMENT, kind="window")]
    assert any("does not fit" in m or "takes about 3h" in m for m in messages), messages
    assert any("black friday" in m for m in messages) and any("waiting for the maintenance window" in m
                                                             for m in messages)
