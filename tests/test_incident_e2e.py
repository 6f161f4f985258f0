"""The outage-recovery workflow (``incident_<service>``) end to end in a real Airflow (``tests/airflow_server.py``),
a person's answers given through the REST API (Airflow's human-in-the-loop requests: the mitigation, then the
confirmation that the problem is fixed). Three incidents run at once in one Airflow:

* ``incscale`` (local platform, one region): "Scale up": the stable replicas double; the smoke tests and the
  error rate verify; the incident is resolved;
* ``incmaint`` (local, one region): "Maintenance mode": the router answers live requests with the maintenance
  page (HTTP 503, ``Retry-After``) while the run waits for the confirmation, its health path still reaching the
  replicas; once confirmed, the smoke tests check the replicas behind the page, maintenance mode goes off (200
  again) and the error rate on live traffic is watched;
* ``incgeo`` (local, two regions, GeoDNS in moto's Route53): "Fail over": the failing region's weight goes to the
  other region; once confirmed, it comes back in steps of 10, 50 and 100% of its weight, each watched on the
  region's own traffic; the ledger has the weights read back at each step, Route53 the configured shares at the
  end.

The services' versions are started on the local platform by the test itself (set-up, not what is under test),
while Airflow starts; once the incidents are under way the routers the gates watch get live load: the gates read
the routers' statistics, and a window without requests is no data, never a pass. The existing "Roll back" path runs in ``tests/test_approvals_e2e.py`` (it reuses that
module's hotfix).
"""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.airflow_server import AirflowServer
from tests.aws import MotoServer

pytestmark = pytest.mark.slow

VERSION = "1.0.0"
RUN_ID = "e2e_incident"
RUN_TIMEOUT = 240
CHOOSE = "mitigation.choose_mitigation"
CONFIRM_SERVICE = "verification.confirm_service_fixed"
CONFIRM_REGION = "restoration.confirm_region_fixed"
PAGE = "Checkout is paused while we fix payments."
REGIONS = {"us-west-2": ("canary", 40), "us-east-1": ("primary", 60)}
FAILING = "us-west-2"
USER = "oncall"

UNGOVERNED = """\
approvals:
  production: {enabled: false}
checklist: {stagingTestsPassed: false, securityScanClean: false, releaseNotes: false, rollbackPlan: false,
            onCallNotified: false}
"""


def service_files(name: str, zone: str | None = None) -> dict[str, str]:
    files = {
        "service.yaml": textwrap.dedent(f"""\
            service: {name}
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{{port}}", --version, "{{version}}"]
            incident:
              verifyDuration: 2s
              maintenanceMessage: {PAGE}
              restoreSteps: [10, 50, 100]
              restorePause: 1500ms
              fixTimeout: 10m
            """) + UNGOVERNED,
        "production.yaml": textwrap.dedent("""\
            environment: production
            strategy: rolling
            replicas: 1
            healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}
            monitoring: {duration: 0s}
            """),
    }
    if zone is not None:
        files["multi-region.yaml"] = "environment: production\nregions:\n" + "".join(
            f"  - {{name: {region}, role: {role}, weight: {weight}%}}\n" for region, (role, weight) in REGIONS.items()
        ) + f"dns: {{connection: aws_dns, hostedZoneId: {zone}, recordName: {record(name)}}}\n"
    return files


def record(name: str) -> str:
    return f"api.{name}.example.com"


class Traffic:
    """``rps`` requests per second on the routers of the local platform ``targets`` (``<service>-<environment>
    [-<region>]``), a thread each: what the gates measure. Only where and when a gate watches: the load costs CPU
    the runs need."""

    def __init__(self, state_root: Path, targets: list[str], rps: float = 20.0) -> None:
        self.rps = rps
        self._stop = threading.Event()
        ports = [json.loads((state_root / key / "state.json").read_text())["router"]["ports"]["service"]
                 for key in targets]
        self._threads = [threading.Thread(target=self._load, args=(port,), daemon=True) for port in ports]
        for thread in self._threads:
            thread.start()

    def _load(self, port: int) -> None:
        with requests.Session() as session:
            while not self._stop.wait(1.0 / self.rps):
                with contextlib.suppress(requests.RequestException):
                    session.get(f"http://127.0.0.1:{port}/api/e2e", timeout=2)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


@dataclass
class Incidents:
    airflow: AirflowServer
    moto: MotoServer
    ledger_url: str
    zone: str
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # per incident: requests, what customers got
    traffic: Traffic | None = None

    def ledger(self):
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        return DeploymentLedger.from_url(self.ledger_url)

    def trigger(self, name: str, **conf: Any) -> str:
        return self.airflow.trigger(f"incident_{name}", run_id=RUN_ID, conf={
            "summary": f"{name}: customers cannot pay", "severity": "critical", "trigger": "manual", **conf})

    def _hitl(self, name: str, task: str) -> str:
        return f"/dags/{quote(f'incident_{name}', safe='')}/dagRuns/{RUN_ID}/taskInstances/{task}/-1/hitlDetails"

    def wait_open(self, name: str, task: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        """The human-in-the-loop request of ``task`` once it waits for an answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.airflow.check_alive()
            resp = requests.get(f"{self.airflow.api_url}/api/v2{self._hitl(name, task)}", timeout=30,
                                headers={"Authorization": f"Bearer {self.airflow.token(USER)}"})
            if resp.status_code == 200 and not resp.json().get("response_received") and \
                    self.airflow.task_states(f"incident_{name}", RUN_ID).get(task) == "awaiting_input":
                return resp.json()
            run = self.airflow.dag_run(f"incident_{name}", RUN_ID)
            assert run is None or run["state"] != "failed", self.airflow.explain(f"incident_{name}", RUN_ID)
            time.sleep(0.5)
        raise AssertionError(f"no open request of {task}:\n" + self.airflow.explain(f"incident_{name}", RUN_ID))

    def answer(self, name: str, task: str, choice: str, comment: str = "") -> None:
        resp = requests.patch(f"{self.airflow.api_url}/api/v2{self._hitl(name, task)}", timeout=30,
                              headers={"Authorization": f"Bearer {self.airflow.token(USER)}"},
                              json={"chosen_options": [choice], "params_input": {"comment": comment}})
        assert resp.status_code == 200, resp.text

    def finish(self, name: str) -> dict[str, str | None]:
        """Wait for the run; it must succeed. Its task states."""
        dag = f"incident_{name}"
        run = self.airflow.wait_for_run(dag, RUN_ID, timeout=RUN_TIMEOUT, poll=0.5)
        assert run["state"] == "success", self.airflow.explain(dag, RUN_ID)
        return self.airflow.task_states(dag, RUN_ID)

    def stages(self, name: str) -> list[str]:
        return [e.data.get("stage") for e in self.ledger().events(f"incident_{name}/{RUN_ID}", kind="incident")]

    def local(self, name: str, region: str | None = None) -> Any:
        from airflow_deploy_provider.platforms.base import Target
        from airflow_deploy_provider.platforms.local.platform import LocalPlatform
        from airflow_deploy_provider.platforms.local.state import LocalState

        target = Target(name, "production", region)
        platform = LocalPlatform({"type": "local", "command": []}, target)
        platform.state = LocalState(self.airflow.home / "deploy-local" / target.key)
        return platform

    def weights(self, name: str) -> dict[str, int]:
        sets = self.moto.client("route53").list_resource_record_sets(HostedZoneId=self.zone)["ResourceRecordSets"]
        return {r["SetIdentifier"]: r["Weight"] for r in sets if r["Name"].rstrip(".") == record(name)
                and "SetIdentifier" in r}


def create_zone(moto: MotoServer, name: str) -> str:
    client = moto.client("route53")
    zone = client.create_hosted_zone(Name=f"{name}.example.com", CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"]
    client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": record(name), "Type": "A", "SetIdentifier": region, "Weight": weight, "TTL": 60,
            "ResourceRecords": [{"Value": f"10.{i}.0.1"}]}} for i, (region, (_, weight)) in enumerate(REGIONS.items())]})
    return zone.rsplit("/", 1)[-1]


def start_version(home: Path, root: Path, ledger_url: str) -> None:
    """Set-up: run 1.0.0 of the service under ``root`` on the local platform (each region) as its production
    deployment would have, and record that deployment in the ledger."""
    from airflow_deploy_provider.config.loader import load_service
    from airflow_deploy_provider.factory.builder import ServiceDagBuilder
    from airflow_deploy_provider.ledger.store import DeploymentLedger
    from airflow_deploy_provider.platforms.base import HealthCheckSpec, Target, WorkloadSpec
    from airflow_deploy_provider.platforms.local.platform import LocalPlatform
    from tests.conftest import wait_ready

    config = load_service(next(root.glob("*/.deploy"))).config
    regions = [r.name for r in config.multi_region.regions] if config.multi_region else [None]
    spec = WorkloadSpec(version=VERSION, image=f"{config.name}:{VERSION}", replicas=1, strategy="rolling",
                        health_check=HealthCheckSpec(initial_delay=0.1, interval=0.2, timeout=2, failure_threshold=15))
    # The replicas and routers outlive this call: with the server's home they are found (and stopped) with it.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_HOME", str(home))
        platforms = []
        for region in regions:
            settings = ServiceDagBuilder(config, "production", region=region).platform_settings()
            platforms.append(LocalPlatform(settings, Target(config.name, "production", region)))
            platforms[-1].deploy(spec, "stable")
        for platform in platforms:
            wait_ready(platform, "stable", VERSION, timeout=60)
    ledger = DeploymentLedger.from_url(ledger_url)
    deployment = f"deploy_{config.name}_production/e2e_setup"
    ledger.start_deployment(id=deployment, service=config.name, environment="production", version=VERSION,
                            kind="deploy", dag_id=f"deploy_{config.name}_production", run_id="e2e_setup")
    ledger.finish_deployment(deployment, "succeeded", "test set-up")


@pytest.fixture(scope="module")
def incidents(tmp_path_factory):
    started = time.monotonic()
    moto = MotoServer()
    airflow = AirflowServer(tmp_path_factory.mktemp("incident_airflow"), users={USER: "oncall-pw"})
    ledger_url = f"sqlite:///{airflow.home / 'ledger.db'}"
    airflow.env.update({
        "AIRFLOW_CONN_AWS_DNS": moto.connection(),
        "AIRFLOW_CONN_DEPLOY_LEDGER": json.dumps({"conn_type": "deploy_ledger", "host": ledger_url}),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    })
    result = Incidents(airflow, moto, ledger_url, create_zone(moto, "incgeo"))
    try:
        roots = {}
        for name in ("incscale", "incmaint", "incgeo"):
            root = roots[name] = airflow.home / "services" / name
            (root / name / ".deploy").mkdir(parents=True)
            for file, text in service_files(name, result.zone if name == "incgeo" else None).items():
                (root / name / ".deploy" / file).write_text(text)
            airflow.add_dag_file(f"{name}.py", "from airflow_deploy_provider.factory import register_deploy_dags\n"
                                 f"register_deploy_dags(globals(), roots=[{str(root)!r}])\n")
        # The versions start while Airflow does (they need only its home folder).
        with ThreadPoolExecutor(len(roots)) as pool:
            deployed = [pool.submit(start_version, airflow.home, root, ledger_url) for root in roots.values()]
            airflow.start()
            for future in deployed:
                future.result()
        airflow.wait_for_dags([f"incident_{name}" for name in roots])
        yield result
    finally:
        if result.traffic is not None:
            result.traffic.stop()
        # Every router and replica carries the server's AIRFLOW_HOME (the set-up's too): stop() ends them.
        airflow.stop()
        print(f"\nincident e2e: {time.monotonic() - started:.0f}s in all", file=sys.stderr)
        moto.stop()


@pytest.fixture(scope="module")
def answered(incidents):
    """The three incidents start at once, and the on-call person answers each request as soon as it is asked,
    through the REST API, so that the incidents run side by side: each one's mitigation, then where there is one
    the confirmation that the problem is fixed, after looking at what customers get meanwhile (kept in
    ``seen`` for the tests)."""
    choices = {"incscale": "Scale up", "incmaint": "Maintenance mode", "incgeo": "Fail over"}
    for name in choices:
        incidents.trigger(name, **({"region": FAILING} if name == "incgeo" else {}))
    # live traffic where a gate will watch: the two single-region services, and the region failed over
    incidents.traffic = Traffic(incidents.airflow.home / "deploy-local", [
        "incscale-production", "incmaint-production", f"incgeo-production-{FAILING}"])
    for name, choice in choices.items():
        incidents.seen[name] = {"choice": incidents.wait_open(name, CHOOSE)}
        incidents.answer(name, CHOOSE, choice, f"{choice.lower()} for {name}")

    seen = incidents.seen["incmaint"]
    seen["confirm"] = incidents.wait_open("incmaint", CONFIRM_SERVICE)
    platform = incidents.local("incmaint")
    seen["page"] = requests.get(platform.endpoint() + "/api/pay", timeout=5)
    seen["health"] = requests.get(platform.endpoint() + "/health", timeout=5).status_code
    seen["behind"] = requests.get(platform.endpoint("stable") + "/api/pay", timeout=5).status_code
    seen["maintenance"] = platform.maintenance().enabled
    incidents.answer("incmaint", CONFIRM_SERVICE, "Leave maintenance mode", "database failover done")

    seen = incidents.seen["incgeo"]
    seen["confirm"] = incidents.wait_open("incgeo", CONFIRM_REGION)
    seen["weights"] = incidents.weights("incgeo")
    incidents.answer("incgeo", CONFIRM_REGION, "Restore traffic")
    return incidents


def test_maintenance_mode_serves_the_page_until_the_fix_is_confirmed(answered):
    seen = answered.seen["incmaint"]
    assert seen["confirm"]["options"] == ["Leave maintenance mode"]
    # while the run waited for a person: customers got the page, monitors and tests still reached the replicas
    page = seen["page"]
    assert (page.status_code, page.headers.get("Retry-After")) == (503, "300") and PAGE in page.text
    assert (seen["health"], seen["behind"], seen["maintenance"]) == (200, 200, True)

    states = answered.finish("incmaint")
    for task in ("mitigation.enter_maintenance_mode", CONFIRM_SERVICE, "verification.run_smoke_tests",
                 "verification.leave_maintenance_mode", "verification.verify_error_rate",
                 "post_incident.post_incident_report"):
        assert states[task] == "success", (task, states)
    assert states["verification.back_into_maintenance"] == "skipped", states
    assert states["mitigation.scale_up"] == states["mitigation.roll_back"] == "skipped"
    platform = answered.local("incmaint")
    assert not platform.maintenance().enabled
    assert requests.get(platform.endpoint() + "/api/pay", timeout=5).status_code == 200
    stages = answered.stages("incmaint")
    assert [s for s in stages if s in ("maintenance_on", "mitigated", "fix_confirmed", "maintenance_off",
                                       "recovered")] == ["maintenance_on", "mitigated", "fix_confirmed",
                                                         "maintenance_off", "recovered"], stages
    ledger, incident = answered.ledger(), f"incident_incmaint/{RUN_ID}"
    assert [e.data["enabled"] for e in ledger.events(incident, kind="maintenance")] == [True, False]
    # the error rate was watched on live traffic once the page was off, and held
    gates = ledger.events(incident, kind="gate")
    assert gates and all(e.data.get("verdict") == "pass" for e in gates), [e.message for e in gates]
    assert ledger.get(incident).status == "resolved"


def test_fail_over_then_traffic_back_in_watched_steps(answered):
    seen = answered.seen["incgeo"]
    assert seen["choice"]["options"] == ["Roll back", "Fail over", "Maintenance mode"]
    assert seen["confirm"]["options"] == ["Restore traffic"]
    # the failing region's traffic was on the other region while the run waited for the fix
    assert seen["weights"] == {FAILING: 0, "us-east-1": 100}
    states = answered.finish("incgeo")
    for task in ("mitigation.fail_over", "restoration.confirm_region_fixed", "restoration.restore_traffic_10",
                 "restoration.restore_traffic_50", "restoration.restore_traffic_100"):
        assert states[task] == "success", (task, states)
    ledger, incident = answered.ledger(), f"incident_incgeo/{RUN_ID}"
    # the weights read back from Route53 at each step: 10%, 50%, 100% of us-west-2's 40
    after = {e.task_id: e.data["after"] for e in ledger.events(incident, kind="dns") if "after" in e.data}
    assert after == {"mitigation.fail_over": {FAILING: 0, "us-east-1": 100},
                     "restoration.restore_traffic_10": {FAILING: 4, "us-east-1": 96},
                     "restoration.restore_traffic_50": {FAILING: 20, "us-east-1": 80},
                     "restoration.restore_traffic_100": {FAILING: 40, "us-east-1": 60}}
    assert answered.weights("incgeo") == {FAILING: 40, "us-east-1": 60}
    # each step watched the region's own traffic, and passed
    watched = {e.task_id for e in ledger.events(incident, kind="gate") if e.data.get("verdict") == "pass"}
    assert watched == {f"restoration.restore_traffic_{p}" for p in (10, 50, 100)}
    stages = answered.stages("incgeo")
    for stage in ("mitigated", "fix_confirmed", "restored_10", "restored_50", "restored_100", "recovered"):
        assert stage in stages, stages
    assert ledger.get(incident).status == "resolved"


def test_scale_up_chosen_through_the_api(answered):
    assert answered.seen["incscale"]["choice"]["options"] == ["Roll back", "Scale up", "Maintenance mode"]
    states = answered.finish("incscale")
    assert states["mitigation.scale_up"] == "success"
    for skipped in ("mitigation.roll_back", "mitigation.enter_maintenance_mode", "verification.confirm_service_fixed",
                    "verification.leave_maintenance_mode", "report_unresolved"):
        assert states[skipped] == "skipped", (skipped, states)
    assert states["verification.run_smoke_tests"] == states["verification.verify_error_rate"] == "success", states
    replicas = answered.local("incscale").state.read()["roles"]["stable"]["replicas"]
    assert len(replicas) == 2  # twice production's 1, both serving
    assert requests.get(answered.local("incscale").endpoint() + "/api").json()["version"] == VERSION
    ledger = answered.ledger()
    incident = ledger.get(f"incident_incscale/{RUN_ID}")
    assert (incident.kind, incident.status, incident.version) == ("incident", "resolved", VERSION)
    (scaled,) = ledger.events(incident.id, kind="scale")
    assert scaled.data == {"role": "stable", "replicas": 2}
    stages = answered.stages("incscale")
    assert stages.index("mitigation_chosen") < stages.index("mitigated") < stages.index("recovered"), stages
    chosen = next(e.data for e in ledger.events(incident.id, kind="incident") if e.data.get("stage") ==
                  "mitigation_chosen")
    assert (chosen["choice"], chosen["user"]) == ("Scale up", USER)
