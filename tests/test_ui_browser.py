"""The Airflow UI in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real Airflow (``tests/airflow_server.py``: api-server, scheduler, dag-processor, triggerer) that runs the example
services of ``dags/services`` plus ``uishop``, a small fast service written here whose production approval
belongs to the user ``approver``.

One journey, as people make it, each step saved as a screenshot (in the test's ``tmp_path``/screenshots, and
copied to ``$UI_SCREENSHOTS`` when that is set):

1. ``deployer`` signs in; the DAG list shows every DAG the factory generates, each with its tags, and sample
   DAGs' descriptions on hover;
2. ``deployer`` triggers ``deploy_uishop_production`` from the trigger form, typing the version Param; the run's
   details show it in the run's conf;
3. the graph of an example production DAG (``hello``'s canary) shows the workflow's phases as task groups, and
   every task once the groups are expanded;
4. ``approver`` signs in (a browser context of their own), finds the approval waiting under Browse > Required
   Actions, with the policy and who may not approve (the deployer, who triggered the run), and approves it
   with a comment;
5. sample DAGs show their documentation (the "Dag Docs" dialog);
6. the run's page, refreshing itself, shows the run finish in success.

Steps 3 and 5 are made while the run works its way to the approval and then deploys, not before it: the same
checks in less time. The outcome is checked through the REST API and the deployment ledger too: the run's
conf and who triggered it, who answered the request with what, the approval events, the version deployed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tests.airflow_server import AirflowServer
from tests.conftest import DAGS, write_service

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Chromium must not reach out to the network (it has none here) nor use a profile of a previous run; Playwright
#: adds --headless, --no-sandbox and a fresh temporary --user-data-dir.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}
UI_TIMEOUT_MS = 30_000  # a page element; the machine may be busy with other tests
RUN_TIMEOUT = 180

USERS = {"deployer": "deployer-pw", "approver": "approver-pw"}
SERVICE = "uishop"
DAG = f"deploy_{SERVICE}_production"
VERSION = "2.4.6"
COMMENT = "checked the release notes"
#: An example service's production DAG, for its graph.
GRAPH_DAG = "deploy_hello_production"
#: DAGs whose description and documentation are checked (one per kind of workflow).
DOC_SAMPLE = (GRAPH_DAG, "deploy_payments_production", "rollback_checkout_staging", "incident_accounts")
TASK = "approval_gate.approve"

SERVICE_FILES = {
    "service.yaml": textwrap.dedent("""\
        service: uishop
        description: Shop front for the browser test
        platform:
          command: [python, -m, airflow_deploy_provider.demo.app, --port, "{port}", --version, "{version}"]
        approvals:
          production:
            timeout: 10m
            groups:
              - {name: tech-lead, members: [approver]}
        checklist: {stagingTestsPassed: false, securityScanClean: false, releaseNotes: false,
                    rollbackPlan: false, onCallNotified: false}
        """),
    # rolling, one replica, no monitoring window: the run ends seconds after the approval
    "production.yaml": textwrap.dedent("""\
        environment: production
        strategy: rolling
        replicas: 1
        healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}
        monitoring: {duration: 0s}
        """),
}


def require_browser() -> None:
    """Skip without Chromium or Playwright, except in CI (``CI`` set), where the browser test must run."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the Python package playwright is missing (pip install -e '.[test]')"
    if missing and os.environ.get("CI"):
        pytest.fail(f"{missing}: CI runs the browser test (.ci/run installs Chromium)", pytrace=False)
    if missing:
        pytest.skip(missing)


def generated_dags(services: Path) -> dict[str, Any]:
    """DAG id -> DAG, as the factory builds them for every service under ``services``."""
    from airflow_deploy_provider.factory import build_service_dags, load_all

    results = load_all([services])
    assert all(r.config is not None for r in results), [r.errors for r in results]
    return {dag_id: dag for r in results for dag_id, dag in build_service_dags(r.config).items()}


def text(markdown: str) -> str:
    """Markdown as the UI shows it, roughly: no heading, emphasis or code marks, whitespace collapsed."""
    return " ".join(re.sub(r"^#+ |[*`]", "", markdown).split())


class Screenshots:
    """Numbered PNGs of each step in ``folder``; :meth:`publish` copies them to ``$UI_SCREENSHOTS``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page: Any, name: str, *, full_page: bool = False) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        # animations="disabled": a dialog is shown opened, not half faded in
        page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        self.taken.append(path)
        return path

    def publish(self) -> None:
        target = os.environ.get("UI_SCREENSHOTS")
        if target:
            shutil.copytree(self.folder, Path(target), dirs_exist_ok=True)


@dataclass
class Site:
    airflow: AirflowServer
    dags: dict[str, Any]  # DAG id -> DAG, as the factory builds them for the services the Airflow runs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example services' DAG files with ``uishop`` beside them, in a real Airflow with two users."""
    require_browser()  # before the set-up
    home = tmp_path_factory.mktemp("ui_airflow")
    airflow = AirflowServer(home, users=USERS)
    shutil.copytree(DAGS, airflow.dags_folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    write_service(airflow.dags_folder / "services" / SERVICE, SERVICE_FILES)
    airflow.env["AIRFLOW_CONN_DEPLOY_LEDGER"] = json.dumps({"conn_type": "deploy_ledger",
                                                            "host": f"sqlite:///{home / 'ledger.db'}"})
    dags = generated_dags(airflow.dags_folder / "services")  # before the start: the processes' start is busy
    from tests.test_dagbag import EXPECTED_DAGS

    assert set(dags) >= EXPECTED_DAGS and DAG in dags, sorted(dags)  # the example services and ours
    try:
        airflow.start()
        airflow.wait_for_dags(sorted(dags))
        yield Site(airflow, dags)
    finally:
        airflow.stop()  # with the local platform's processes (they run with its AIRFLOW_HOME)


@pytest.fixture
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class UI:
    """Pages of one Airflow, each user in a browser context of their own."""

    def __init__(self, browser: Any, airflow: AirflowServer, shots: Screenshots) -> None:
        self.browser, self.airflow, self.shots = browser, airflow, shots
        self.pages: dict[str, Any] = {}

    def sign_in(self, user: str) -> Any:
        from playwright.sync_api import expect

        context = self.browser.new_context(viewport=VIEWPORT, base_url=self.airflow.api_url)
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = self.pages[user] = context.new_page()
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/auth/login"))
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(USERS[user])
        self.shots.take(page, f"sign-in-{user}")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("nav-dags-link")).to_be_visible()
        return page

    def failure_screenshots(self) -> list[Path]:
        taken = []
        for user, page in self.pages.items():
            with contextlib.suppress(Exception):
                taken.append(self.shots.take(page, f"failure-{user}", full_page=True))
        return taken


def test_deploy_through_the_airflow_ui(site: Site, browser, tmp_path: Path):
    airflow, dags = site.airflow, site.dags
    shots = Screenshots(tmp_path / "screenshots")
    ui = UI(browser, airflow, shots)
    run_id: str | None = None
    try:
        deployer = ui.sign_in("deployer")
        check_dag_list(deployer, shots, dags)
        run_id = trigger_from_the_form(deployer, shots, airflow)
        check_graph(deployer, shots, dags[GRAPH_DAG])  # while the run comes to its approval
        wait_for_approval_request(airflow, run_id)
        approver = ui.sign_in("approver")
        approve_in_the_ui(approver, shots, run_id)
        for dag_id in DOC_SAMPLE:  # while the run deploys
            check_dag_docs(deployer, shots, dags[dag_id])
        see_the_run_finish(deployer, shots, airflow, run_id)
        check_outcome(airflow, run_id)
        check_dora_page(deployer, shots)
    except Exception as exc:
        failure = ui.failure_screenshots()
        details = airflow.explain(DAG, run_id) if run_id else airflow.process_logs()
        raise AssertionError(f"{type(exc).__name__}: {exc}\nscreenshots: {shots.folder} "
                             f"(last: {[p.name for p in failure]})\n{details}") from exc
    finally:
        shots.publish()
    assert all(p.stat().st_size > 0 for p in shots.taken), shots.taken


# ---------------------------------------------------------------------------------------------------- steps


def check_dag_list(page: Any, shots: Screenshots, dags: dict[str, Any]) -> None:
    """Every generated DAG is listed (page by page) with its tags; the sample's descriptions show on hover."""
    from playwright.sync_api import expect

    page.get_by_test_id("nav-dags-link").click()
    expect(page.get_by_text(f"{len(dags)} Dags", exact=True)).to_be_visible()
    listed: dict[str, list[str]] = {}
    for number in range(1, 10):
        cards = page.get_by_test_id("dag-card")
        expect(cards.first).to_be_visible()
        rows = cards.evaluate_all("cards => cards.map(card => [card.querySelector('a[data-testid=dag-id]')"
                                  ".getAttribute('href'), [...card.querySelectorAll("
                                  "'[data-testid=limited-items-list] a')].map(a => a.innerText)])")
        listed.update({unquote(href.removeprefix("/dags/")): tags for href, tags in rows})
        for dag_id in [d for d in DOC_SAMPLE if f"/dags/{quote(d)}" in dict(rows)]:
            link = page.locator(f"a[data-testid=dag-id][href='/dags/{quote(dag_id)}']")
            expect(hover_tooltip(page, link)).to_have_text(dags[dag_id].description)
            page.mouse.move(0, 0)
            expect(page.get_by_role("tooltip")).to_have_count(0)
        shots.take(page, f"dag-list-page-{number}", full_page=True)
        following = page.get_by_test_id("next")
        if following.is_disabled():
            break
        following.click()
        expect(cards.first.get_by_test_id("dag-id")).not_to_have_attribute("href", rows[0][0])
    assert sorted(listed) == sorted(dags), (sorted(set(dags) - set(listed)), sorted(set(listed) - set(dags)))
    wrong = {d: (tags, sorted(dags[d].tags)) for d, tags in listed.items() if sorted(tags) != sorted(dags[d].tags)}
    assert not wrong, wrong


def hover_tooltip(page: Any, element: Any) -> Any:
    """The tooltip ``element`` shows on hover. A tooltip closes when the page scrolls, and hovering scrolls the
    element into view: scroll first, let the scroll events pass (two frames), then hover; again if need be."""
    from playwright.sync_api import expect

    tooltip = page.get_by_role("tooltip")
    for _ in range(3):
        element.scroll_into_view_if_needed()
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        element.hover()
        with contextlib.suppress(AssertionError):
            expect(tooltip).to_be_visible(timeout=3000)
            return tooltip
        page.mouse.move(0, 0)
    return tooltip  # the caller's expectation reports it missing


def check_dag_docs(page: Any, shots: Screenshots, dag: Any) -> None:
    """The DAG's page has its documentation in the "Dag Docs" dialog."""
    from playwright.sync_api import expect

    page.goto(f"/dags/{quote(dag.dag_id)}")
    expect(page.get_by_role("heading", name=dag.dag_display_name).first).to_be_visible()
    page.get_by_test_id("markdown-button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Dag Documentation")
    heading, summary, *_ = dag.doc_md.split("\n\n")
    duration = re.search(r"\*\*Expected duration:\*\* (.*)", dag.doc_md).group(1)
    shown = " ".join(dialog.inner_text().split())
    for part in (heading, summary, f"Expected duration: {duration}"):
        assert text(part) in shown, (dag.dag_id, text(part), shown[:2000])
    shots.take(page, f"docs-{dag.dag_id}")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)


def check_graph(page: Any, shots: Screenshots, dag: Any) -> None:
    """The graph shows the workflow's phases as task groups; expanded, every task inside them."""
    from airflow.sdk import TaskGroup
    from playwright.sync_api import expect

    phases = [g for g, child in dag.task_group.children.items() if isinstance(child, TaskGroup)]
    groups = {g for g in dag.task_group.get_task_group_dict() if g}  # every level; None is the root
    assert {"pre_deployment_checklist", "approval_gate", "canary_deployment", "post_deployment_validation"} <= set(
        phases)
    page.goto(f"/dags/{quote(dag.dag_id)}")
    page.get_by_role("button", name="Show Graph (Press g)").click()
    page.get_by_role("button", name="Collapse Details Panel").click()
    nodes = page.locator(".react-flow__node")
    for group in phases:
        expect(page.locator(f".react-flow__node[data-id='{group}']")).to_contain_text("Task Group")
    shots.take(page, f"graph-{dag.dag_id}")
    page.get_by_test_id("expand-all-button").click()
    expected = set(dag.task_ids) | groups
    expect(nodes).to_have_count(len(expected))
    shown = set(nodes.evaluate_all("nodes => nodes.map(n => n.dataset.id)"))
    assert shown == expected, sorted(shown ^ expected)
    shots.take(page, f"graph-{dag.dag_id}-expanded")


def trigger_from_the_form(page: Any, shots: Screenshots, airflow: AirflowServer) -> str:
    """The trigger form asks for the version (required); the run it creates carries it. Its run id."""
    from playwright.sync_api import expect

    page.goto(f"/dags/{DAG}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Version")
    expect(dialog).to_contain_text("This field is required")
    dialog.locator("#element_version").fill(VERSION)
    dialog.locator("#element_reason").fill("browser test")
    expect(dialog).not_to_contain_text("This field is required")
    shots.take(page, "trigger-form")
    dialog.get_by_test_id("trigger-dag-submit").click()
    expect(page).to_have_url(re.compile(rf"/dags/{DAG}/runs/[^/]+$"))
    run_id = unquote(page.url.rsplit("/runs/", 1)[1])
    expect(page.get_by_role("heading", name=run_id, exact=True)).to_be_visible()
    page.get_by_role("link", name="Details", exact=True).click()
    conf = page.get_by_role("row").filter(has=page.get_by_role("cell", name="Conf", exact=True))
    expect(conf).to_contain_text(re.compile(rf'"version":\s*"{re.escape(VERSION)}"'))
    shots.take(page, "run-details", full_page=True)
    run = airflow.dag_run(DAG, run_id)
    assert run is not None and run["conf"]["version"] == VERSION, run
    assert run["triggering_user_name"] == "deployer" and run["run_type"] == "manual", run
    return run_id


def header_state(page: Any, title: str) -> Any:
    """The state badge beside a run's or task instance's title on its page."""
    return page.get_by_role("heading", name=title, exact=True).locator(
        "xpath=following-sibling::*[@data-testid='state-badge']")


def hitl_path(run_id: str) -> str:
    return f"/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK}/-1/hitlDetails"


def wait_for_approval_request(airflow: AirflowServer, run_id: str, timeout: float = 120) -> None:
    """Until the approval task waits for an answer (REST)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.check_alive()
        if airflow.task_states(DAG, run_id).get(TASK) == "awaiting_input":
            request = airflow.api("GET", hitl_path(run_id))
            assert not request["response_received"], request
            assert [u["id"] for u in request["assigned_users"]] == ["approver"], request
            return
        run = airflow.dag_run(DAG, run_id)
        assert run["state"] not in ("success", "failed"), run
        time.sleep(0.5)
    raise AssertionError(f"{TASK} did not wait for input within {timeout:.0f}s")


def approve_in_the_ui(page: Any, shots: Screenshots, run_id: str) -> None:
    """Browse > Required Actions lists the request; its form explains the policy and takes the approval."""
    from playwright.sync_api import expect

    subject = f"Approve: {SERVICE} {VERSION} to production"
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Required Actions").click()
    expect(page).to_have_url(re.compile(r"/required_actions$"))
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=subject))
    expect(row).to_contain_text("Approval Required")
    expect(row).to_contain_text(run_id)
    shots.take(page, "required-actions")
    row.get_by_role("link", name=subject).click()
    expect(page).to_have_url(re.compile(rf"/tasks/{TASK}/required_actions$"))
    expect(header_state(page, TASK)).to_have_text("Awaiting Input")
    main = page.get_by_test_id("main-content")
    expect(main).to_contain_text("Needed: 1 x tech-lead, by distinct people.")
    expect(main).to_contain_text("Not allowed to approve: deployer (triggered this run).")
    page.locator("#element_comment").fill(COMMENT)
    shots.take(page, "approval-form")
    page.get_by_test_id("hitl-option-Approve").click()
    expect(main).to_contain_text(re.compile(r"Response received at .* from approver"))
    shots.take(page, "approved")


def see_the_run_finish(page: Any, shots: Screenshots, airflow: AirflowServer, run_id: str) -> None:
    """The run's page refreshes itself until the run ends; it ends in success."""
    from playwright.sync_api import expect

    page.goto(f"/dags/{DAG}/runs/{quote(run_id, safe='')}")
    state = header_state(page, run_id)
    expect(state).to_have_text(re.compile(r"^(Success|Failed)$"), timeout=RUN_TIMEOUT * 1000)
    shots.take(page, "run-finished", full_page=True)
    assert state.inner_text() == "Success", airflow.explain(DAG, run_id)


def check_dora_page(page: Any, shots: Screenshots) -> None:
    """The plugin's DORA page, opened from the Browse menu, shows the deployment that just finished with its
    charts (the plugin view in the Airflow UI, in a frame at /plugin/deploy-dora)."""
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_role("button", name=re.compile("Browse")).click()
    page.get_by_role("menuitem", name=re.compile(r"Deployments \(DORA\)")).click()
    expect(page).to_have_url(re.compile(r"/plugin/deploy-dora$"))
    frame = page.frame_locator("iframe")
    expect(frame.get_by_role("heading", name="Deployments: DORA metrics")).to_be_visible(timeout=30_000)
    expect(frame.get_by_role("cell", name=SERVICE).first).to_be_visible()
    assert frame.locator("svg").count() >= 1  # the charts, drawn on the server
    shots.take(page, "dora-page", full_page=True)


def check_outcome(airflow: AirflowServer, run_id: str) -> None:
    """REST and ledger agree with what the UI showed."""
    from airflow_deploy_provider.ledger.store import DeploymentLedger

    run = airflow.wait_for_run(DAG, run_id, timeout=60)
    assert run["state"] == "success", airflow.explain(DAG, run_id)
    assert airflow.task_states(DAG, run_id)[TASK] == "success"
    answer = airflow.api("GET", hitl_path(run_id))
    assert answer["responded_by_user"]["id"] == "approver" and answer["chosen_options"] == ["Approve"], answer
    assert answer["params_input"]["comment"] == COMMENT, answer
    ledger = DeploymentLedger.from_url(f"sqlite:///{airflow.home / 'ledger.db'}")
    deployment = ledger.get(f"{DAG}/{run_id}")
    assert (deployment.status, deployment.version, deployment.triggered_by) == ("succeeded", VERSION, "deployer")
    approvals = [(e.data["decision"], e.data.get("user"), e.data.get("comment"))
                 for e in ledger.events(deployment.id, kind="approval")]
    assert approvals == [("requested", None, None), ("approved", "approver", COMMENT)], approvals
    state = json.loads((airflow.home / "deploy-local" / f"{SERVICE}-production" / "state.json").read_text())
    assert state["roles"]["stable"]["version"] == VERSION, state
