"""How fast a failing canary is caught and traffic restored, on the local platform.

For each run: stable and canary of the demo app behind the local router, live load, 20% on the canary and
the real metric gate (``MetricGateTrigger``) watching it. At a random moment the canary starts answering
500; the script measures

* detection: from that moment to the gate's rollback decision (target: within one analysis interval);
* restore: from the decision to the router sending 100% to stable (target: within 2 s), observed by polling
  the router itself, not taken from the gate's own report.

Usage: python benchmarks/canary_latency.py [--runs 5] [--interval 1.0] [--rps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="adp-latency-home-"))

import requests  # noqa: E402

from airflow_deploy_provider.platforms.base import HealthCheckSpec, Target, WorkloadSpec  # noqa: E402
from airflow_deploy_provider.platforms.local.platform import LocalPlatform  # noqa: E402
from airflow_deploy_provider.triggers.metric_gate import MetricGateTrigger  # noqa: E402

APP = ["python", "-m", "airflow_deploy_provider.demo.app", "--port", "{port}", "--version", "{version}"]
RESTORE_TARGET = 2.0


def one_run(n: int, interval: float, rps: float, ledger_url: str) -> dict[str, float]:
    target = Target(f"latency{n}", "production")
    platform = LocalPlatform({"type": "local", "command": APP, "service_root": str(Path.cwd())}, target)
    hc = HealthCheckSpec(initial_delay=0.2, interval=0.2, timeout=2)
    load = None
    try:
        for version, role in (("1.0", "stable"), ("2.0", "canary")):
            platform.deploy(WorkloadSpec(version, f"app:{version}", 2, "recreate", health_check=hc), role)
            while not platform.rollout_status(role).done:
                time.sleep(0.05)
        platform.set_traffic(20)
        load = subprocess.Popen([sys.executable, "-m", "airflow_deploy_provider.demo.load",
                                 platform.endpoint() + "/api", "--rps", str(rps), "--quiet"])
        admin = platform.state.read()["router"]["ports"]["admin"]
        canary_ports = [r["port"] for r in platform.state.read()["roles"]["canary"]["replicas"]]
        restored: dict[str, float] = {}

        def watch_router() -> None:
            session = requests.Session()
            while "at" not in restored:
                cfg = session.get(f"http://127.0.0.1:{admin}/admin/config", timeout=2).json()
                if not cfg.get("canary") or cfg.get("weight") == 0:
                    restored["at"] = time.time()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch_router, daemon=True)
        trigger = MetricGateTrigger(
            gate={"metrics": [{"name": "error_rate", "unit": "percent", "max": 1.0}],
                  "conditions": [{"text": "error_rate > 5%", "metric": "error_rate", "op": ">", "threshold": 5.0,
                                  "unit": "percent"}],
                  "interval": interval, "duration": 120.0, "min_requests": 5, "failure_limit": 5,
                  "failures_so_far": 0},
            query={"service": target.service, "environment": "production", "region": None, "version": "2.0"},
            provider={"provider": "local"}, deployment_id=f"latency/{n}", ledger_conn_id="deploy_ledger",
            label="benchmark", abort_platform=platform.settings | {"type": "local"})
        failed_at: dict[str, float] = {}

        async def run() -> dict:
            async def break_canary() -> None:
                await asyncio.sleep(random.uniform(2.0, 3.0) * interval)
                for port in canary_ports:
                    await asyncio.to_thread(requests.post, f"http://127.0.0.1:{port}/_demo/faults",
                                            json={"error_rate": 1.0}, timeout=2)
                failed_at["at"] = time.time()
                watcher.start()

            breaker = asyncio.create_task(break_canary())
            async for event in trigger.run():
                await breaker
                return event.payload
            raise RuntimeError("the gate ended without a decision")

        event = asyncio.run(run())
        watcher.join(10)
        decision = event["history"][-1]
        assert event["decision"] == "rollback", event
        return {"interval": interval, "detection": decision["at"] - failed_at["at"],
                "restore": restored["at"] - decision["at"], "checks": event["checks"]}
    finally:
        if load is not None:
            load.terminate()
            load.wait(10)
        platform.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="analysis interval in seconds")
    parser.add_argument("--rps", type=float, default=200.0)
    args = parser.parse_args()
    ledger = Path(os.environ["AIRFLOW_HOME"]) / "bench_ledger.db"
    os.environ["AIRFLOW_CONN_DEPLOY_LEDGER"] = f'{{"conn_type": "deploy_ledger", "host": "sqlite:///{ledger}"}}'
    from airflow_deploy_provider.ledger.store import DeploymentLedger

    store = DeploymentLedger.from_url(f"sqlite:///{ledger}")
    results = []
    for n in range(args.runs):
        store.start_deployment(id=f"latency/{n}", service=f"latency{n}", environment="production", version="2.0")
        results.append(one_run(n, args.interval, args.rps, f"sqlite:///{ledger}"))
    print(f"Canary failure to traffic restored (local platform, {args.rps:g} req/s, 20% on the canary)")
    print(f"{'run':>3}  {'interval':>8}  {'detection':>9}  {'/interval':>9}  {'restore':>8}")
    for i, r in enumerate(results, start=1):
        print(f"{i:>3}  {r['interval']:>7.2f}s  {r['detection']:>8.3f}s  {r['detection'] / r['interval']:>9.2f}  "
              f"{r['restore']:>7.3f}s")
    worst_detection = max(r["detection"] / r["interval"] for r in results)
    worst_restore = max(r["restore"] for r in results)
    print(f"mean detection {statistics.mean(r['detection'] for r in results):.3f}s "
          f"({statistics.mean(r['detection'] / r['interval'] for r in results):.2f} intervals), worst "
          f"{worst_detection:.2f} intervals (target <= 1)")
    print(f"mean restore {statistics.mean(r['restore'] for r in results) * 1000:.0f} ms, worst "
          f"{worst_restore * 1000:.0f} ms (target <= {RESTORE_TARGET * 1000:.0f} ms)")
    ok = worst_detection <= 1.0 and worst_restore <= RESTORE_TARGET
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
