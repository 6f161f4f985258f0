"""How much of a canary run holds a worker slot: deferrable waits against poke-mode waits, in a real Airflow.

Starts Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite) with two copies of a
canary service on the local platform: one built as usual (every wait defers to a trigger) and one built with
``deferrable=False`` (every wait holds its slot, like a poke-mode sensor). For each, a first release is
deployed, then a second one is measured under live load, sampling the task instances' states every 50 ms.

It reports, per variant: wall time of the run, slot-seconds held, the share of wall time with a slot held,
and for the waiting tasks alone (rollout waits, canary steps, watches, health checks) the share of their
time spent holding a slot (target for the deferrable DAG: under 5%). Slot time of the deferrable DAG does not
grow with pauses, so the share is also projected to the spec's production pauses (10m, 10m, 15m and a 30m
watch).

Usage: python benchmarks/slot_usage.py [--pause 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path

WAITING = ("wait_", "step_", "watch_", "health_check", "observe")
SPEC_WAITS = (10 + 10 + 15 + 30) * 60  # the spec's production pauses and watch, in seconds
TARGET = 0.05


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service(name: str, port: int, pause: int) -> dict[str, str]:
    return {
        "service.yaml": textwrap.dedent(f"""\
            service: {name}
            platform:
              command: [python, -m, airflow_deploy_provider.demo.app, --port, "{{port}}", --version, "{{version}}"]
              port: {port}
            approvals:
              production: {{enabled: false}}
            checklist: {{stagingTestsPassed: false, securityScanClean: false, releaseNotes: false,
                        rollbackPlan: false, onCallNotified: false}}
            """),
        "production.yaml": textwrap.dedent(f"""\
            environment: production
            strategy: canary
            replicas: 2
            healthCheck: {{initialDelay: 300ms, interval: 300ms, timeout: 2s}}
            canary:
              steps:
                - weight: 10
                  pause: {pause}s
                - weight: 50
                  pause: {pause}s
                - weight: 100
              analysis:
                interval: 2s
                threshold: 3
                minRequests: 3
                metrics: [{{name: error_rate, max: 1}}]
            monitoring:
              duration: {pause}s
            """),
    }


class Airflow:
    def __init__(self, home: Path, api_port: int):
        self.home = home
        self.env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
                    "AIRFLOW__API_AUTH__JWT_SECRET": "slot-usage-benchmark",
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
        self.api_port = api_port
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=300).stdout

    def start(self) -> None:
        self.run("db", "migrate")
        for args in (["api-server", "--port", str(self.api_port)], ["scheduler"], ["dag-processor"], ["triggerer"]):
            log = open(self.home / f"{args[0]}.log", "w")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.home / "airflow.db", timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.db() as conn:
                    if conn.execute("select 1 from dag where dag_id=? and is_stale=0", (dag_id,)).fetchone():
                        return
            except sqlite3.OperationalError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{dag_id} was not parsed")

    def deploy(self, dag_id: str, version: str) -> dict:
        run_id = f"bench__{version}__{int(time.time())}"
        self.run("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps({"version": version}))
        held: dict[str, float] = defaultdict(float)
        seen: dict[str, list[float]] = {}
        any_running = 0.0
        started = time.monotonic()
        last = started
        state = None
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            try:
                with self.db() as conn:
                    tis = conn.execute("select task_id, state from task_instance where dag_id=? and run_id=?",
                                       (dag_id, run_id)).fetchall()
                    state = conn.execute("select state from dag_run where dag_id=? and run_id=?",
                                         (dag_id, run_id)).fetchone()[0]
            except (sqlite3.OperationalError, TypeError):
                continue
            step = now - last
            last = now
            running = [t for t, s in tis if s == "running"]
            for task_id, s in tis:
                # A task's span: from first queued to last seen active (a deferred task counts, waiting).
                if s in ("queued", "running", "deferred"):
                    seen.setdefault(task_id, [now, now])[1] = now
            for task_id in running:
                held[task_id] += step
            if running:
                any_running += step
            if state in ("success", "failed"):
                break
            if now - started > 1800:
                raise TimeoutError(f"{dag_id} {version} did not finish")
        wall = time.monotonic() - started
        waiting = [t for t in seen if t.rsplit(".", 1)[-1].startswith(WAITING)]
        wait_wall = sum(seen[t][1] - seen[t][0] for t in waiting)
        wait_held = sum(held[t] for t in waiting)
        return {"state": state, "wall": wall, "held": sum(held.values()), "any": any_running,
                "wait_wall": wait_wall, "wait_held": wait_held}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause", type=int, default=20, help="seconds per canary pause and for the watch")
    parser.add_argument("--rps", type=float, default=100.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="adp-slots-"))
    (home / "dags").mkdir()
    variants = {"deferrable": ("slotdefer", True), "poke-mode": ("slotpoke", False)}
    ports = {}
    for name, deferrable in variants.values():
        ports[name] = free_port()
        root = home / "services" / name / name / ".deploy"
        root.mkdir(parents=True)
        for file, text in service(name, ports[name], args.pause).items():
            (root / file).write_text(text)
        (home / "dags" / f"{name}.py").write_text(
            "from airflow_deploy_provider.factory import register_deploy_dags\n"
            f"register_deploy_dags(globals(), roots=[{str(home / 'services' / name)!r}], deferrable={deferrable})\n")
    airflow = Airflow(home, free_port())
    results = {}
    loads = []
    try:
        airflow.start()
        for label, (name, _) in variants.items():
            dag_id = f"deploy_{name}_production"
            airflow.wait_for_dag(dag_id)
            load = subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.load",
                                     f"http://127.0.0.1:{ports[name]}/api", "--rps", str(args.rps), "--quiet"],
                                    env=airflow.env)
            loads.append(load)
            first = airflow.deploy(dag_id, "1.0.0")
            assert first["state"] == "success", f"first release of {label}: {first}"
            results[label] = airflow.deploy(dag_id, "2.0.0")
            assert results[label]["state"] == "success", f"{label}: {results[label]}"
            load.terminate()
    finally:
        for load in loads:
            load.terminate()
        airflow.stop()
        env = {**os.environ, "AIRFLOW_HOME": str(home)}
        subprocess.run([sys.executable, "-m", "airflow_deploy_provider.cli", "local", "down"], env=env,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    print(f"Worker slot use of a canary run (pauses of {args.pause}s; real scheduler, LocalExecutor)")
    print(f"{'variant':<11} {'wall':>7} {'slot-s':>7} {'share':>7} {'waits: wall':>12} {'held':>7} {'share':>7}"
          f" {'share at spec pauses':>21}")
    for label, r in results.items():
        share = r["any"] / r["wall"]
        wait_share = r["wait_held"] / r["wait_wall"] if r["wait_wall"] else 0.0
        waits = 3 * args.pause
        projected = r["any"] / (r["wall"] - waits + SPEC_WAITS) if label == "deferrable" else \
            (r["any"] - waits + SPEC_WAITS) / (r["wall"] - waits + SPEC_WAITS)
        print(f"{label:<11} {r['wall']:>6.1f}s {r['held']:>6.1f}s {share:>6.1%} {r['wait_wall']:>11.1f}s "
              f"{r['wait_held']:>6.1f}s {wait_share:>6.1%} {projected:>20.1%}")
    d, p = results["deferrable"], results["poke-mode"]
    wait_share = d["wait_held"] / d["wait_wall"]
    print(f"slot-seconds deferrable / poke-mode: {d['held'] / p['held']:.2f}")
    ok = wait_share < TARGET
    print(f"waiting tasks hold a slot {wait_share:.1%} of their time (target < {TARGET:.0%}): "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
