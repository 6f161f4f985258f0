"""``make demo``: a production canary deployment on the embedded local platform, end to end.

In a throw-away ``AIRFLOW_HOME`` (SQLite) it deploys the demo web service with the real generated
production DAG (``dag.test()``), under steady load, three times:

1. release 1.0.0 (the first deployment);
2. release 2.0.0, which fails 30% of requests: the metric gate catches it at 5% of traffic and rolls it back;
3. release 2.1.0, which is healthy: promoted 5% -> 25% -> 50% -> 100%.

Pauses and analysis intervals are the production values divided by ``--speed``. A timeline shows each
traffic step, every gate check (error rate, p99, requests) and each decision. Exit status 0 only when both
the rollback and the promotion happened as expected; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

SERVICE_TEMPLATE = Path(__file__).parent / "service"
DURATION_KEYS = {"pause", "interval", "duration", "initialDelay", "timeout", "testDuration", "waitTime",
                 "progressDeadline"}
SERVICE = "demo-shop"
DAG_ID = f"deploy_{SERVICE}_production"


@dataclass
class Release:
    version: str
    note: str
    expect: str  # "succeeded" or "rolled_back"


RELEASES = [
    Release("1.0.0", "first release", "succeeded"),
    Release("2.0.0", "bad release: 30% of requests fail", "rolled_back"),
    Release("2.1.0", "good release", "succeeded"),
]


def scale(value: Any, key: str | None, speed: float) -> Any:
    """Divide every duration of a config by ``speed`` (and minRequests, which counts per interval)."""
    from airflow_deploy_provider.config.types import format_duration, parse_duration

    if isinstance(value, dict):
        return {k: scale(v, k, speed) for k, v in value.items()}
    if isinstance(value, list):
        return [scale(v, key, speed) for v in value]
    if key in DURATION_KEYS and isinstance(value, str):
        seconds = parse_duration(value).total_seconds() / speed
        return format_duration(timedelta(milliseconds=max(1, round(seconds * 1000))))
    if key == "minRequests" and isinstance(value, int):
        return max(1, round(value / speed))
    return value


def prepare(home: Path, speed: float, port: int) -> Path:
    """Write the demo service (durations scaled) and the DAG file; returns the DAGs folder."""
    services = home / "services" / SERVICE / ".deploy"
    services.mkdir(parents=True)
    for path in SERVICE_TEMPLATE.joinpath(".deploy").glob("*.yaml"):
        data = scale(yaml.safe_load(path.read_text()), None, speed)
        if path.name == "service.yaml":
            data["platform"]["port"] = port
        (services / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    dags = home / "dags"
    dags.mkdir()
    (dags / "deploy_dags.py").write_text(
        "from airflow_deploy_provider.factory import register_deploy_dags\n"
        f"register_deploy_dags(globals(), roots=[{str(home / 'services')!r}])\n")
    return dags


CHILD = """
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.dags[sys.argv[2]].test(run_conf={"version": sys.argv[3], "reason": sys.argv[4]})
print("RUN STATE", run.state)
"""


class Timeline(threading.Thread):
    """Prints the ledger's events as they are written."""

    def __init__(self, ledger_url: str, started: float):
        super().__init__(daemon=True)
        self.ledger_url = ledger_url
        self.started = started
        self.stop = threading.Event()
        self.seen: set[int] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            self.flush()
            time.sleep(0.25)

    def flush(self) -> None:
        from sqlalchemy import select

        from airflow_deploy_provider.ledger.schema import events
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        try:
            ledger = DeploymentLedger.from_url(self.ledger_url)
            with ledger.engine.connect() as conn:
                rows = conn.execute(select(events).order_by(events.c.id)).all()
        except Exception:  # the ledger is created by the first task
            return
        for row in rows:
            if row.id in self.seen:
                continue
            self.seen.add(row.id)
            line = format_event(row)
            if line:
                print(f"  {time.monotonic() - self.started:6.1f}s  {line}", flush=True)


def format_event(row: Any) -> str | None:
    import json

    data = json.loads(row.data or "{}")
    task = (row.task_id or "").rsplit(".", 1)[-1]
    if row.kind == "traffic":
        if data.get("first_deployment"):
            return f"{task:<24} first deployment: all traffic to {data.get('canary_version')}"
        if "weight" in data:
            return f"{task:<24} traffic: {data['weight']:>3}% to {data.get('canary_version')}, " \
                   f"{100 - data['weight']}% to {data.get('stable_version')}"
        return f"{task:<24} {row.message}"
    if row.kind == "gate":
        readings = data.get("readings", {})

        def value(name: str, unit: str) -> str:
            v = (readings.get(name) or {}).get("value")
            return f"{v:6.2f}{unit}" if v is not None else "   n/a" + " " * len(unit)

        verdict = data.get("verdict", "?")
        decision = data.get("decision", "")
        number = int(data.get("number") or 0)
        if data.get("between_checks"):
            return f"{task:<24} between checks: {data.get('breach')}  -> ROLLBACK"
        if verdict == "pass" and decision == "continue" and number % 5 and number != 1:
            return None  # passing checks: the first and every fifth, to show progress without flooding
        text = (f"{task:<24} check {data.get('number', '?'):>2}: error rate {value('error_rate', '%')}  "
                f"p99 {value('latency_p99', 'ms')}  {data.get('requests') or 0:>4} req  {verdict}")
        if decision in ("pass", "rollback"):
            text += f"  -> {decision.upper()}"
        return text
    if row.kind == "rollback":
        return f"{task:<24} ROLLED BACK: {row.message}"
    if row.kind == "deploy" and " ready" in (row.message or ""):
        return f"{task:<24} {row.message}"
    if row.kind == "phase" and (row.message or "").startswith(("deploy of", "deployment outcome")):
        return f"{task or 'start':<24} {row.message}"
    return None


def run_demo(speed: float, rps: float, keep: bool) -> int:
    home = Path(tempfile.mkdtemp(prefix="airflow-deploy-demo-"))
    from airflow_deploy_provider.platforms.local.state import free_port

    port = free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    os.environ.update({k: env[k] for k in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER")})
    load = None
    outcomes: list[tuple[Release, str, str]] = []
    started = time.monotonic()
    try:
        dags = prepare(home, speed, port)
        print(f"airflow-deploy demo: {SERVICE} on the local platform, http://127.0.0.1:{port} "
              f"(speed x{speed:g}, load {rps:g} req/s)")
        print(f"  Airflow home {home}; preparing the metadata database ...", flush=True)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        load = subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.load",
                                 f"http://127.0.0.1:{port}/api/cart", "--rps", str(rps), "--quiet"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timeline = Timeline(f"sqlite:///{home / 'deploy_ledger.db'}", started)
        timeline.start()
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        for i, release in enumerate(RELEASES, start=1):
            print(f"\n[{i}/{len(RELEASES)}] {DAG_ID} version {release.version}: {release.note}", flush=True)
            log = home / f"run-{i}.log"
            with open(log, "w") as out:
                subprocess.run([sys.executable, "-c", CHILD, str(dags), DAG_ID, release.version, release.note],
                               env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
            timeline.flush()
            ledger = DeploymentLedger.from_url(f"sqlite:///{home / 'deploy_ledger.db'}")
            row = next((d for d in ledger.deployments(SERVICE, "production") if d.version == release.version), None)
            status = row.status if row else "not started"
            outcomes.append((release, status, (row.outcome_reason or "") if row else f"see {log}"))
            print(f"  => {release.version}: {status}" + (f" ({row.outcome_reason})" if row and row.outcome_reason
                                                          else ""), flush=True)
        timeline.stop.set()
        return summary(outcomes, home, port, started)
    finally:
        if load is not None:
            load.terminate()
            load.wait(10)
        cleanup(home, keep)


def summary(outcomes: list[tuple[Release, str, str]], home: Path, port: int, started: float) -> int:
    from airflow_deploy_provider.ledger.store import DeploymentLedger
    from airflow_deploy_provider.platforms.base import Target
    from airflow_deploy_provider.platforms.local.platform import LocalPlatform

    split = LocalPlatform({"type": "local", "command": []}, Target(SERVICE, "production")).traffic()
    ledger = DeploymentLedger.from_url(f"sqlite:///{home / 'deploy_ledger.db'}")
    bad = next((d for d in ledger.deployments(SERVICE, "production") if d.version == "2.0.0"), None)
    caught_at = None
    if bad is not None:
        traffic = [e for e in ledger.events(bad.id, kind="traffic")]
        caught_at = traffic[-1].data.get("weight") if traffic else None
    ok = all(status == release.expect for release, status, _ in outcomes) and caught_at == 5 and \
        split.stable_version == RELEASES[-1].version and split.canary_weight == 0
    print("\nSummary")
    for release, status, reason in outcomes:
        mark = "ok " if status == release.expect else "BAD"
        print(f"  [{mark}] {release.version:<7} expected {release.expect:<12} got {status:<12} {reason[:90]}")
    print(f"  bad release caught at {caught_at}% of traffic; now serving {split.stable_version} on 100% of traffic")
    print(f"  {time.monotonic() - started:.0f}s in all. {'Both outcomes happened as expected.' if ok else 'FAILED.'}")
    return 0 if ok else 1


def cleanup(home: Path, keep: bool) -> None:
    from airflow_deploy_provider.platforms.local import platform as local

    for key in local.targets():
        local.down(key)
    if keep:
        print(f"  kept {home} (logs: run-*.log)")
    else:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=100.0, help="divide pauses and intervals by this")
    parser.add_argument("--rps", type=float, default=200.0, help="steady load in requests per second")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home with the runs' logs")
    args = parser.parse_args(argv)
    return run_demo(args.speed, args.rps, args.keep)


if __name__ == "__main__":
    sys.exit(main())
