"""The multi-region rollout end to end, in a real Airflow (``tests/airflow_server.py``: api-server, scheduler,
dag-processor, triggerer, LocalExecutor): ``deploy_<service>_production`` triggers each region's
``deploy_<service>_production_<region>`` and waits for it, which ``dag.test()`` cannot do.

Regions run on the local platform (each region of a service has its own router and replicas, under live load
from this test); Route53 is a moto server in this process, reached by the tasks through the ``aws_dns``
connection; the ledger is a SQLite file the test reads. Three copies of one service roll out release 2.0.0
at the same time in one Airflow, over three of the spec's regions (us-west-2 canary 10%, eu-west-1 40%,
us-east-1 primary 50%; every Route53 weight starts at 25). Three regions show all there is to show (the canary
first, a failing secondary, a later region, the primary last) in three quarters of the time four take:

* ``mrok``: every region succeeds (triggered with the version only, as a person would);
* ``mrstop``: 2.0.0 fails every request in eu-west-1, so that region's own run fails its watch and restores
  1.0.0 (the rollout starts no second rollback); ``stopOnRegionFailure: true``: the rollout stops there;
* ``mrgo``: eu-west-1's own run succeeds, then 2.0.0 starts failing there (the test turns the fault on) while the
  rollout watches the region: the rollout rolls the region back through its rollback DAG and drains its DNS
  weight; ``stopOnRegionFailure: false``: the later regions still deploy, after that.

eu-west-1 of the failing services first runs 1.0.0 (deployed through its regional DAG): what the failed
region returns to.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.airflow_server import AirflowServer
from tests.aws import MotoServer

pytestmark = pytest.mark.slow

REGIONS = [("us-west-2", "canary", 10), ("eu-west-1", "secondary", 40), ("us-east-1", "primary", 50)]
NAMES = [name for name, _, _ in REGIONS]
CONFIGURED = {name: weight for name, _, weight in REGIONS}
FAILING = "eu-west-1"
LATER = ["us-east-1"]
INITIAL_WEIGHT = 25
OLD, NEW = "1.0.0", "2.0.0"
COMMIT = "0a1b2c3d4e5f"
RUN_ID = "e2e_rollout"
RUN_TIMEOUT = 480  # seconds per wait; pytest-timeout (600 s per test, set-up included) is the outer bound


@dataclass
class Service:
    name: str
    stop_on_region_failure: bool
    failure: str | None  # in eu-west-1: "own-run" (its regional run fails) or "after-run" (the rollout's watch)
    conf: dict[str, Any]
    zone: str = ""

    @property
    def record(self) -> str:
        return f"api.{self.name}.example.com"

    @property
    def dag_id(self) -> str:
        return f"deploy_{self.name}_production"

    @property
    def parent_id(self) -> str:
        """The global rollout's deployment id: the ``parent_id`` of its regional deployments."""
        return f"{self.dag_id}/{RUN_ID}"

    def regional(self, region: str) -> str:
        return f"deploy_{self.name}_production_{region}"

    def rollback(self, region: str) -> str:
        return f"rollback_{self.name}_production_{region}"

    def dag_ids(self) -> list[str]:
        return [self.dag_id, f"rollback_{self.name}_production", f"hotfix_{self.name}",
                *(f"{kind}_{self.name}_production_{r}" for kind in ("deploy", "rollback") for r in NAMES),
                *(f"hotfix_{self.name}_{r}" for r in NAMES)]


def services() -> dict[str, Service]:
    with_commit = {"version": NEW, "commit": COMMIT, "reason": "multi-region e2e"}
    return {s.name: s for s in (Service("mrok", True, None, {"version": NEW}),
                                Service("mrstop", True, "own-run", with_commit),
                                Service("mrgo", False, "after-run", with_commit))}


# A replica: the demo app, with the faults of its region (``{region}`` in the platform command).
APP = textwrap.dedent("""\
    import json, os, sys

    from airflow_deploy_provider.demo.app import main

    region, argv = sys.argv[1], sys.argv[2:]
    os.environ["DEMO_FAULTS"] = json.dumps(json.loads(os.environ.get("REGION_FAULTS") or "{}").get(region, {}))
    main(argv)
    """)


def service_files(svc: Service) -> dict[str, str]:
    faults = {FAILING: {NEW: {"error_rate": 1.0}}} if svc.failure == "own-run" else {}
    regions = "".join(f"  - {{name: {name}, role: {role}, weight: {weight}%, waitTime: 3s}}\n"
                      for name, role, weight in REGIONS)
    return {
        "service.yaml": textwrap.dedent(f"""\
            service: {svc.name}
            platform:
              command: [python, regional_app.py, "{{region}}", --port, "{{port}}", --version, "{{version}}"]
              env:
                REGION_FAULTS: '{json.dumps(faults)}'
            metrics:
              provider: local
            checklist: {{stagingTestsPassed: false, securityScanClean: false, releaseNotes: false,
                        rollbackPlan: false, onCallNotified: false}}
            rollback:
              monitorDuration: 1s
            hotfix:
              stabilityPeriod: 1s
              monitorDuration: 2s
              lowerEnvironments: []
            """) + textwrap.dedent("""\
            approvals:
              production: {enabled: false}
              hotfix:
                critical: {enabled: false}
                major: {enabled: false}
            """),
        "production.yaml": textwrap.dedent("""\
            environment: production
            strategy: rolling
            replicas: 1
            healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}
            progressDeadline: 60s
            autoRollback:
              enabled: true
              conditions: ["error_rate > 5%"]
            monitoring: {duration: 3s}
            """),
        "multi-region.yaml": "environment: production\nregions:\n" + regions + textwrap.dedent(f"""\
            failurePolicy:
              stopOnRegionFailure: {str(svc.stop_on_region_failure).lower()}
              rollbackFailedRegion: true
            dns:
              connection: aws_dns
              hostedZoneId: {svc.zone}
              recordName: {svc.record}
            """),
    }


class Traffic:
    """Live load on every router of the local platform (one per region and service): a thread per router,
    ``rps`` requests per second. The metric gates read the routers' statistics, and a window without
    requests is no data, never a pass."""

    def __init__(self, state_root: Path, rps: float = 20.0) -> None:
        self.root = state_root
        self.rps = rps
        self._stop = threading.Event()
        self._ports: set[int] = set()
        self._threads = [threading.Thread(target=self._scan, daemon=True, name="traffic-scan")]
        self._threads[0].start()

    def _scan(self) -> None:
        while not self._stop.is_set():
            for state in self.root.glob("*/state.json"):
                try:
                    port = json.loads(state.read_text())["router"]["ports"]["service"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if port not in self._ports:
                    self._ports.add(port)
                    thread = threading.Thread(target=self._load, args=(port,), daemon=True, name=f"load-{port}")
                    thread.start()
                    self._threads.append(thread)
            self._stop.wait(0.3)

    def _load(self, port: int) -> None:
        with requests.Session() as session:
            next_at = time.monotonic()
            while not self._stop.is_set():
                with contextlib.suppress(requests.RequestException):
                    session.get(f"http://127.0.0.1:{port}/api/e2e", timeout=2)
                next_at = max(next_at + 1.0 / self.rps, time.monotonic() - 1.0)
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


class FaultAfterRegionalRun(threading.Thread):
    """Turns 2.0.0's fault on in a region once the region's own run of the rollout has succeeded (its ledger row),
    before the rollout's watch of the region starts: every replica serving then answers 500."""

    def __init__(self, ledger_url: str, state_root: Path, svc: Service, region: str) -> None:
        super().__init__(daemon=True, name=f"fault-{svc.name}")
        self.ledger_url, self.state = ledger_url, state_root / f"{svc.name}-production-{region}" / "state.json"
        self.parent_id, self.region = svc.parent_id, region
        self.stop_event = threading.Event()
        self.injected: list[int] = []  # replica ports

    def run(self) -> None:
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        ledger = DeploymentLedger.from_url(self.ledger_url)
        while not self.stop_event.wait(0.2):
            with contextlib.suppress(Exception):  # the ledger's tables appear with the first deployment
                rows = ledger.deployments(parent_id=self.parent_id, region=self.region)
                if rows and rows[0].status == "succeeded":
                    break
        else:
            return
        replicas = json.loads(self.state.read_text())["roles"]["stable"]["replicas"]
        for replica in replicas:
            requests.post(f"http://127.0.0.1:{replica['port']}/_demo/faults", json={"error_rate": 1.0},
                          timeout=5).raise_for_status()
            self.injected.append(replica["port"])


@dataclass
class Rollouts:
    """The running Airflow with the three rollouts triggered, and what the tests read."""

    airflow: AirflowServer
    moto: MotoServer
    ledger_url: str
    services: dict[str, Service]
    started: float
    finished: dict[str, float] = field(default_factory=dict)
    faults: dict[str, FaultAfterRegionalRun] = field(default_factory=dict)

    def wait(self, name: str) -> tuple[Service, dict[str, Any]]:
        svc = self.services[name]
        run = self.airflow.wait_for_run(svc.dag_id, RUN_ID, timeout=RUN_TIMEOUT)
        self.finished.setdefault(name, time.monotonic() - self.started)
        return svc, run

    def explain(self, name: str, *regions: str) -> str:
        """The global run, the regional runs of ``regions`` and the rollback runs, for an assertion message."""
        svc = self.services[name]
        parts = [self.airflow.explain(svc.dag_id, RUN_ID, process_lines=0)]
        for region in regions:
            parts.append(self.airflow.explain(svc.regional(region), f"{RUN_ID}__{region}", process_lines=0))
        for region in NAMES:
            for run in self.airflow.dag_runs(svc.rollback(region)):
                parts.append(self.airflow.explain(svc.rollback(region), run["dag_run_id"], process_lines=0))
        parts.append(self.airflow.process_logs(25))
        return "\n\n".join(parts)

    def ledger(self):
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        return DeploymentLedger.from_url(self.ledger_url)

    def regional_rows(self, name: str) -> dict[str, Any]:
        """Region -> the regional deployment of the rollout (ledger rows whose parent is the global run)."""
        rows = self.ledger().deployments(parent_id=self.services[name].parent_id)
        assert len({d.region for d in rows}) == len(rows), rows
        return {d.region: d for d in rows}

    def weights(self, name: str) -> dict[str, int]:
        """The Route53 weights of the service's record, read back from Route53 (moto)."""
        svc = self.services[name]
        sets = self.moto.client("route53").list_resource_record_sets(HostedZoneId=svc.zone)["ResourceRecordSets"]
        return {r["SetIdentifier"]: r["Weight"] for r in sets
                if r["Name"].rstrip(".") == svc.record and "SetIdentifier" in r}

    def serving(self, name: str, region: str) -> str | None:
        """The version the region answers live traffic with (None: nothing was ever deployed there)."""
        state = self.airflow.home / "deploy-local" / f"{name}-production-{region}" / "state.json"
        if not state.exists():
            return None
        port = json.loads(state.read_text())["router"]["ports"]["service"]
        versions = {requests.get(f"http://127.0.0.1:{port}/api/version", timeout=5).json().get("version")
                    for _ in range(5)}
        assert len(versions) == 1, f"{name} in {region} answers with several versions: {versions}"
        return versions.pop()

    def region_table(self, name: str) -> dict[str, str]:
        """Region -> outcome, from the per-region table the rollout's outcome record puts in the ledger."""
        events = [e for e in self.ledger().events(self.services[name].parent_id, kind="phase")
                  if e.data.get("regions")]
        assert events, f"no per-region outcome recorded for {name}"
        header, *rows = events[-1].data["regions"]
        assert header[:2] == ["region", "outcome"], header
        return {row[0]: row[1] for row in rows}


def create_zone(moto: MotoServer, svc: Service) -> str:
    """A hosted zone with the record's weighted A records, one per region (``SetIdentifier`` = region)."""
    client = moto.client("route53")
    zone = client.create_hosted_zone(Name=f"{svc.name}.example.com",
                                     CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"]
    client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": svc.record, "Type": "A", "SetIdentifier": region, "Weight": INITIAL_WEIGHT, "TTL": 60,
            "ResourceRecords": [{"Value": f"10.{i}.0.1"}]}} for i, region in enumerate(NAMES)]})
    return zone.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """One Airflow for the module; the three rollouts run in it at the same time. Its home (process and task
    logs, the ledger, the local platform's state) is a pytest temporary folder, kept like any other."""
    started = time.monotonic()
    moto = MotoServer()
    airflow = AirflowServer(tmp_path_factory.mktemp("multi_region_airflow"))
    ledger_url = f"sqlite:///{airflow.home / 'ledger.db'}"
    airflow.env.update({
        "AIRFLOW_CONN_AWS_DNS": moto.connection(),
        "AIRFLOW_CONN_DEPLOY_LEDGER": json.dumps({"conn_type": "deploy_ledger", "host": ledger_url}),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    })
    result = Rollouts(airflow, moto, ledger_url, services(), started)
    traffic = None
    try:
        for svc in result.services.values():
            svc.zone = create_zone(moto, svc)
            root = airflow.home / "services" / svc.name
            (root / svc.name / ".deploy").mkdir(parents=True)
            for name, text in service_files(svc).items():
                (root / svc.name / ".deploy" / name).write_text(text)
            (root / svc.name / "regional_app.py").write_text(APP)
            airflow.add_dag_file(f"{svc.name}.py", "from airflow_deploy_provider.factory import register_deploy_dags\n"
                                 f"register_deploy_dags(globals(), roots=[{str(root)!r}])\n")
        airflow.start()
        traffic = Traffic(airflow.home / "deploy-local")
        for svc in result.services.values():
            if svc.failure == "after-run":
                result.faults[svc.name] = FaultAfterRegionalRun(ledger_url, airflow.home / "deploy-local", svc, FAILING)
                result.faults[svc.name].start()
        airflow.wait_for_dags([d for svc in result.services.values() for d in svc.dag_ids()])
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        waiting = []
        ledger = DeploymentLedger.from_url(ledger_url)
        for svc in result.services.values():
            if svc.failure:
                # A regional DAG runs only for a running rollout of its version (the guard is tested below):
                # the ledger row of one that deployed 1.0.0 to this region only stands in for it.
                first = f"{svc.dag_id}/e2e_first"
                ledger.start_deployment(id=first, service=svc.name, environment="production", version=OLD,
                                        kind="rollout", dag_id=svc.dag_id, run_id="e2e_first")
                airflow.trigger(svc.regional(FAILING), conf={"version": OLD, "parent_id": first},
                                run_id="e2e_first")
                waiting.append(svc)
            else:
                airflow.trigger(svc.dag_id, conf=svc.conf, run_id=RUN_ID)
        for svc in waiting:
            run = airflow.wait_for_run(svc.regional(FAILING), "e2e_first", timeout=RUN_TIMEOUT)
            assert run["state"] == "success", airflow.explain(svc.regional(FAILING), "e2e_first")
            ledger.finish_deployment(f"{svc.dag_id}/e2e_first", "failed", "test set-up: one region only")
            airflow.trigger(svc.dag_id, conf=svc.conf, run_id=RUN_ID)
        yield result
    finally:
        for fault in result.faults.values():
            fault.stop_event.set()
        if traffic is not None:
            traffic.stop()
        print(f"\nmulti-region e2e: {time.monotonic() - started:.0f}s in all; rollouts done after "
              + ", ".join(f"{n} {t:.0f}s" for n, t in result.finished.items())
              + f"; stale executor events ignored: {airflow.stale_defer_events()}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "airflow_deploy_provider.cli", "local", "down"], env=airflow.env,
                       capture_output=True, timeout=120)
        airflow.stop()
        moto.stop()


# --------------------------------------------------------------------------------------------------- helpers


def group(region: str) -> str:
    return f"regional_rollout.region_{NAMES.index(region) + 1}_{region.replace('-', '_')}"


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_drained(weights: dict[str, int], drained: str) -> None:
    """Route53 weights with ``drained`` at 0 and its share moved to the others in proportion (whole numbers
    adding up to 100)."""
    kept = sum(w for r, w in CONFIGURED.items() if r != drained)
    assert set(weights) == set(NAMES) and weights[drained] == 0 and sum(weights.values()) == 100, weights
    for region, weight in CONFIGURED.items():
        if region != drained:
            assert abs(weights[region] - weight * 100 / kept) < 1, (region, weights)
            assert weights[region] > weight, (region, weights)


def last_dns_weights(rollouts: Rollouts, name: str) -> dict[str, int]:
    """The weights the rollout's last successful DNS step read back, as recorded in the ledger."""
    events = [e for e in rollouts.ledger().events(rollouts.services[name].parent_id, kind="dns")
              if "after" in e.data and not e.data.get("error")]
    assert events, f"no DNS change recorded for {name}"
    return events[-1].data["after"]


# ----------------------------------------------------------------------------------------------------- tests


def test_the_regions_roll_out_in_order(rollouts):
    svc, run = rollouts.wait("mrok")
    airflow = rollouts.airflow
    assert run["state"] == "success", rollouts.explain("mrok", *NAMES)
    states = airflow.task_states(svc.dag_id, RUN_ID)
    for region in NAMES:
        for task in ("deploy", "observe", "shift_dns_weight"):
            assert states[f"{group(region)}.{task}"] == "success", (region, task, states)
        for task in ("if_region_failed", "rollback_region", "move_dns_weight"):
            assert states[f"{group(region)}.{task}"] == "skipped", (region, task, states)
    assert states["outcome.all_regions_succeeded"] == "success"

    # Each region's DAG ran once, successfully, one region after the other in the configured order; nothing
    # was rolled back; every region serves 2.0.0.
    regional = []
    for region in NAMES:
        runs = airflow.dag_runs(svc.regional(region))
        assert [(r["dag_run_id"], r["state"]) for r in runs] == [(f"{RUN_ID}__{region}", "success")], runs
        regional.append(runs[0])
        assert airflow.dag_runs(svc.rollback(region)) == [], region
        assert rollouts.serving("mrok", region) == NEW, region
    for before, after in zip(regional, regional[1:]):
        assert when(before["end_date"]) <= when(after["start_date"]), (before, after)

    # Route53 ends with the configured shares; the ledger holds what was set.
    assert rollouts.weights("mrok") == CONFIGURED
    assert last_dns_weights(rollouts, "mrok") == CONFIGURED

    ledger = rollouts.ledger()
    rollout = ledger.get(svc.parent_id)
    assert rollout is not None and (rollout.status, rollout.region, rollout.version) == ("succeeded", "", NEW)
    rows = rollouts.regional_rows("mrok")
    assert list(rows) == NAMES[::-1], rows  # newest first
    for region, row in rows.items():
        assert row.id == f"{svc.regional(region)}/{RUN_ID}__{region}", row
        assert (row.service, row.environment, row.version, row.status) == ("mrok", "production", NEW, "succeeded")
        assert (row.commit_sha, row.reason) == (rollout.commit_sha, rollout.reason) == (None, None), row
    ordered = [rows[r] for r in NAMES]
    for before, after in zip(ordered, ordered[1:]):
        assert before.finished_at is not None and before.finished_at <= after.started_at, (before, after)
    assert rollouts.region_table("mrok") == dict.fromkeys(NAMES, "succeeded")


def test_failed_region_stops_the_rollout(rollouts):
    svc, run = rollouts.wait("mrstop")
    airflow = rollouts.airflow
    explain = lambda: rollouts.explain("mrstop", "us-west-2", FAILING)  # noqa: E731
    assert run["state"] == "failed", explain()
    states = airflow.task_states(svc.dag_id, RUN_ID)
    assert states[f"{group('us-west-2')}.shift_dns_weight"] == "success", explain()
    assert states[f"{group(FAILING)}.deploy"] == "failed", explain()
    # its own run already rolled it back: the rollout only moves its DNS weight, it starts no second rollback
    assert states[f"{group(FAILING)}.if_region_failed"] == "success", explain()
    assert states[f"{group(FAILING)}.rollback_region"] == "skipped", explain()
    assert states[f"{group(FAILING)}.move_dns_weight"] == "success", explain()
    assert states["outcome.all_regions_succeeded"] == "failed", explain()
    assert states["handle_failure"] == "success", explain()
    assert states["communication.update_deployment_log"] != "success", explain()

    # eu-west-1's own run failed its watch and restored 1.0.0.
    eu = airflow.dag_run(svc.regional(FAILING), f"{RUN_ID}__{FAILING}")
    assert eu is not None and eu["state"] == "failed", explain()
    eu_states = airflow.task_states(svc.regional(FAILING), f"{RUN_ID}__{FAILING}")
    assert eu_states["monitoring_and_alerting.watch_metrics"] == "failed", eu_states
    assert eu_states["monitoring_and_alerting.restore_previous_version"] == "success", eu_states
    assert airflow.dag_runs(svc.rollback(FAILING)) == [], explain()
    assert rollouts.serving("mrstop", FAILING) == OLD
    assert rollouts.serving("mrstop", "us-west-2") == NEW

    # The later regions were left untouched: no regional run, no rollback run, nothing deployed.
    for region in LATER:
        assert states[f"{group(region)}.deploy"] in ("upstream_failed", "skipped"), explain()
        for task in ("rollback_region", "move_dns_weight"):
            assert states[f"{group(region)}.{task}"] == "skipped", (region, task, explain())
        assert airflow.dag_runs(svc.regional(region)) == [], region
        assert airflow.dag_runs(svc.rollback(region)) == [], (region, explain())
        assert rollouts.serving("mrstop", region) is None, region

    # eu-west-1 gets no traffic; the others share it in proportion.
    weights = rollouts.weights("mrstop")
    assert_drained(weights, FAILING)
    assert last_dns_weights(rollouts, "mrstop") == weights

    rows = rollouts.regional_rows("mrstop")
    assert {r: (d.status, d.version, d.commit_sha) for r, d in rows.items()} == {
        "us-west-2": ("succeeded", NEW, COMMIT), FAILING: ("rolled_back", NEW, COMMIT)}, rows
    assert rows[FAILING].previous_version == OLD, rows[FAILING]
    assert rollouts.ledger().get(svc.parent_id).status == "failed"
    assert rollouts.region_table("mrstop") == {"us-west-2": "succeeded", FAILING: "rolled_back",
                                               "us-east-1": "not started"}


def test_region_failing_after_its_run_is_rolled_back_and_the_rollout_continues(rollouts):
    svc, run = rollouts.wait("mrgo")
    airflow = rollouts.airflow
    explain = lambda: rollouts.explain("mrgo", *NAMES)  # noqa: E731
    assert rollouts.faults["mrgo"].injected, "the fault was never turned on"
    states = airflow.task_states(svc.dag_id, RUN_ID)
    # eu-west-1's own run succeeded; the rollout's watch of the region failed; the rollout rolled the region back
    # through its rollback DAG and moved its DNS weight
    assert states[f"{group(FAILING)}.deploy"] == "success", explain()
    assert states[f"{group(FAILING)}.observe"] == "failed", explain()
    for task in ("if_region_failed", "rollback_region", "move_dns_weight"):
        assert states[f"{group(FAILING)}.{task}"] == "success", (task, explain())
    for region in LATER:
        for task in ("deploy", "observe", "shift_dns_weight"):
            assert states[f"{group(region)}.{task}"] == "success", (region, task, explain())
    # not every region runs 2.0.0: the rollout failed, though the later regions deployed
    assert states["outcome.all_regions_succeeded"] == "failed", explain()
    assert run["state"] == "failed" and states["handle_failure"] == "success", explain()

    for region in NAMES:
        regional = airflow.dag_run(svc.regional(region), f"{RUN_ID}__{region}")
        assert regional is not None and regional["state"] == "success", (region, explain())
        assert rollouts.serving("mrgo", region) == (OLD if region == FAILING else NEW), region
    (rollback,) = airflow.dag_runs(svc.rollback(FAILING))
    assert rollback["dag_run_id"] == f"{RUN_ID}__rollback__{FAILING}" and rollback["state"] == "success", explain()
    for region in ("us-west-2", *LATER):
        assert airflow.dag_runs(svc.rollback(region)) == [], region
    # the later regions started once eu-west-1 was rolled back and drained
    later = airflow.dag_run(svc.regional(LATER[0]), f"{RUN_ID}__{LATER[0]}")
    assert when(rollback["end_date"]) <= when(later["start_date"]), (rollback, later)

    # eu-west-1 stays drained through the later regions' DNS steps.
    weights = rollouts.weights("mrgo")
    assert_drained(weights, FAILING)
    assert last_dns_weights(rollouts, "mrgo") == weights

    # The rollback replaced the region's 2.0.0 deployment: recorded as rolled back, by the rollback run.
    rows = rollouts.regional_rows("mrgo")
    assert {r: d.status for r, d in rows.items()} == {
        "us-west-2": "succeeded", FAILING: "rolled_back", "us-east-1": "succeeded"}
    assert f"by {svc.rollback(FAILING)}/" in rows[FAILING].outcome_reason, rows[FAILING]
    assert rollouts.region_table("mrgo") == {r: d.status for r, d in rows.items()}
    assert rollouts.ledger().get(svc.parent_id).status == "failed"


HOTFIX = "2.0.1"


def test_hotfix_then_rollback_across_the_regions(rollouts):
    """After mrok's rollout: ``hotfix_mrok`` ships 2.0.1 to the canary region, then to every other region at
    once; ``rollback_mrok_production`` then takes every region back to 2.0.0 (the last complete rollout before
    the hotfix) at once, and the GeoDNS weights stay the configured shares."""
    svc, run = rollouts.wait("mrok")
    assert run["state"] == "success"
    airflow = rollouts.airflow
    hotfix_dag, rollback_dag = "hotfix_mrok", "rollback_mrok_production"

    airflow.trigger(hotfix_dag, run_id="e2e_hotfix", conf={
        "version": HOTFIX, "issue_id": "INC-7", "severity": "critical", "reason": "checkout totals are wrong"})
    hotfix = airflow.wait_for_run(hotfix_dag, "e2e_hotfix", timeout=RUN_TIMEOUT)
    assert hotfix["state"] == "success", airflow.explain(hotfix_dag, "e2e_hotfix")
    regional = {r: airflow.dag_run(f"hotfix_mrok_{r}", f"e2e_hotfix__{r}") for r in NAMES}
    assert all(r is not None and r["state"] == "success" for r in regional.values()), regional
    canary = regional["us-west-2"]
    for region in NAMES[1:]:  # the canary region first, then the others
        assert when(canary["end_date"]) <= when(regional[region]["start_date"]), (canary, regional[region])
    for region in NAMES:
        assert rollouts.serving("mrok", region) == HOTFIX, region
    ledger = rollouts.ledger()
    global_hotfix = ledger.get(f"{hotfix_dag}/e2e_hotfix")
    assert (global_hotfix.kind, global_hotfix.status, global_hotfix.previous_version) == ("hotfix", "succeeded", NEW)
    rows = ledger.deployments(parent_id=global_hotfix.id)
    assert {d.region: (d.kind, d.version, d.status, d.image) for d in rows} == {
        r: ("hotfix", HOTFIX, "succeeded", "mrok:hotfix-INC-7") for r in NAMES}
    assert all(len(ledger.events(d.id, kind="override")) == 1 for d in rows)  # the emergency override, per region

    airflow.trigger(rollback_dag, run_id="e2e_rollback", conf={"reason": "the hotfix makes it worse"})
    back = airflow.wait_for_run(rollback_dag, "e2e_rollback", timeout=RUN_TIMEOUT)
    assert back["state"] == "success", airflow.explain(rollback_dag, "e2e_rollback")
    starts = [when(airflow.dag_run(f"rollback_mrok_production_{r}", f"e2e_rollback__{r}")["start_date"])
              for r in NAMES]
    ends = [when(airflow.dag_run(f"rollback_mrok_production_{r}", f"e2e_rollback__{r}")["end_date"]) for r in NAMES]
    assert max(starts) < min(ends), "the regions are rolled back at once, not one after the other"
    for region in NAMES:
        assert rollouts.serving("mrok", region) == NEW, region
    global_rollback = ledger.get(f"{rollback_dag}/e2e_rollback")
    assert (global_rollback.kind, global_rollback.version, global_rollback.previous_version,
            global_rollback.status) == ("rollback", NEW, HOTFIX, "succeeded")
    rows = ledger.deployments(parent_id=global_rollback.id)
    assert {d.region: (d.kind, d.version, d.status) for d in rows} == {r: ("rollback", NEW, "succeeded") for r in NAMES}
    # what they replaced is recorded as rolled back: the regional hotfixes, and the hotfix across the regions
    assert {d.status for d in ledger.deployments(parent_id=global_hotfix.id)} == {"rolled_back"}
    assert ledger.get(global_hotfix.id).status == "rolled_back"
    assert rollouts.weights("mrok") == CONFIGURED
