"""The local platform's router: one process per service and environment.

It listens on three ports:

* the service port: live traffic, split between stable and canary by weight (exactly ``weight`` of every
  100 requests go to the canary, spread evenly, not at random);
* the preview port: the canary (green) only, for tests before a switch;
* the active port: the stable version only;

In maintenance mode (``maintenance`` in ``router.json``) the service port answers every request but the health
check path with HTTP 503, a maintenance page and ``Retry-After``; the preview and active ports keep reaching
the replicas (tests can check them behind the page). Those answers are not a version's: they are counted
apart (``deploy_router_maintenance_responses``) and left out of the versions' statistics.

It also listens on an admin port on loopback: ``GET /admin/config`` (what it routes now), ``POST /admin/reload`` (read
``router.json`` again: the platform changes weights and backends this way), ``GET /admin/stats`` (requests,
5xx and latency quantiles of one version over the last seconds, for the ``local`` metric provider) and
``GET /metrics`` (Prometheus text: per-version request counts by status code and latency histograms).

Run as ``python -m airflow_deploy_provider.platforms.local.router --state-dir DIR``; the ports are in
``router.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import logging
import math
import signal
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("deploy.router")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
KEEP_SECONDS = 15 * 60  # the longest window the metric provider asks for
QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
MAINTENANCE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Maintenance</title></head>
<body><h1>Down for maintenance</h1><p>{message}</p></body></html>
"""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Router:
    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.config: dict[str, Any] = {}
        self.accumulator = 0
        self.next_backend = {"stable": 0, "canary": 0}
        self.events: dict[str, deque] = {}
        self.session: ClientSession | None = None
        self.registry = CollectorRegistry()
        self.requests = PromCounter("deploy_router_requests", "Requests by version, role and status code",
                                    ["version", "role", "code"], registry=self.registry)
        self.latency = Histogram("deploy_router_request_duration_seconds", "Request latency by version and role",
                                 ["version", "role"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.weight = Gauge("deploy_router_canary_weight", "Percent of live traffic sent to the canary",
                            registry=self.registry)
        self.maintenance_responses = PromCounter("deploy_router_maintenance_responses",
                                                 "Requests answered with the maintenance page", registry=self.registry)
        self.maintenance_on = Gauge("deploy_router_maintenance", "1 while maintenance mode is on",
                                    registry=self.registry)
        self.load()

    def load(self) -> dict[str, Any]:
        self.config = json.loads(self.config_path.read_text())
        self.weight.set(self.config.get("weight", 0))
        self.maintenance_on.set(1 if (self.config.get("maintenance") or {}).get("enabled") else 0)
        return self.config

    # ------------------------------------------------------------------------------------------ routing

    def pick_role(self) -> str | None:
        stable, canary = self.config.get("stable"), self.config.get("canary")
        has_stable = bool(stable and stable.get("backends"))
        has_canary = bool(canary and canary.get("backends"))
        if not has_stable:
            return "canary" if has_canary else None
        weight = int(self.config.get("weight", 0)) if has_canary else 0
        # Smooth weighting: exactly `weight` of every 100 requests, evenly spread.
        self.accumulator += weight
        if self.accumulator >= 100:
            self.accumulator -= 100
            return "canary"
        return "stable"

    def backend(self, role: str) -> tuple[str, str] | None:
        target = self.config.get(role)
        if not target or not target.get("backends"):
            return None
        backends = target["backends"]
        i = self.next_backend[role] % len(backends)
        self.next_backend[role] = i + 1
        return target["version"], backends[i]

    def maintenance_page(self, request: web.Request) -> web.Response | None:
        """The maintenance answer for a live request, or ``None`` when it goes to the service (maintenance mode
        off, or the health check path: monitors keep seeing the replicas)."""
        maintenance = self.config.get("maintenance") or {}
        if not maintenance.get("enabled") or request.path == maintenance.get("health_path", "/health"):
            return None
        message = maintenance.get("message") or "The service is down for maintenance."
        headers = {"Retry-After": str(int(maintenance.get("retry_after") or 300)), "Cache-Control": "no-store",
                   "X-Deploy-Maintenance": "on"}
        self.maintenance_responses.inc()
        accept = request.headers.get("Accept", "")
        if "application/json" in accept and "text/html" not in accept:  # API clients get JSON
            return web.json_response({"error": "maintenance", "message": message}, status=503, headers=headers)
        return web.Response(status=503, text=MAINTENANCE_PAGE.format(message=html.escape(message)),
                            content_type="text/html", headers=headers)

    async def handle(self, request: web.Request, mode: str) -> web.StreamResponse:
        if mode == "live":
            page = self.maintenance_page(request)
            if page is not None:
                return page
        role = self.pick_role() if mode == "live" else mode
        chosen = self.backend(role) if role else None
        if chosen is None:
            return web.Response(status=503, text=f"no {role or 'backend'} to route to\n")
        version, backend = chosen
        started = time.perf_counter()
        status = 502
        try:
            assert self.session is not None
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            async with self.session.request(request.method, f"http://{backend}{request.rel_url}", headers=headers,
                                            data=body or None, allow_redirects=False) as upstream:
                payload = await upstream.read()
                status = upstream.status
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                response = web.Response(status=status, body=payload, headers=out_headers)
        except (OSError, asyncio.TimeoutError, Exception) as exc:  # an unreachable backend is a 502 of its version
            response = web.Response(status=502, text=f"upstream {backend} failed: {exc.__class__.__name__}\n")
            status = 502
        elapsed = time.perf_counter() - started
        self.record(version, role, status, elapsed)
        response.headers["X-Deploy-Version"] = version
        response.headers["X-Deploy-Role"] = role
        return response

    def record(self, version: str, role: str, status: int, seconds: float) -> None:
        now = time.time()
        events = self.events.setdefault(version, deque())
        events.append((now, status, seconds * 1000.0))
        while events and events[0][0] < now - KEEP_SECONDS:
            events.popleft()
        self.requests.labels(version, role, str(status)).inc()
        self.latency.labels(version, role).observe(seconds)

    def stats(self, version: str, window: float) -> dict[str, Any]:
        cutoff = time.time() - window
        recent = [e for e in self.events.get(version, ()) if e[0] >= cutoff]
        codes = Counter(str(e[1]) for e in recent)
        errors = sum(1 for e in recent if e[1] >= 500)
        latencies = sorted(e[2] for e in recent)
        quantiles = {name: latencies[min(len(latencies) - 1, max(0, math.ceil(q * len(latencies)) - 1))]
                     for name, q in QUANTILES.items()} if latencies else {}
        return {"version": version, "window": window, "requests": len(recent), "errors_5xx": errors,
                "codes": dict(codes), "latency_ms": quantiles, "rps": len(recent) / window if window else None}

    # -------------------------------------------------------------------------------------------- admin

    async def admin_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config)

    async def admin_reload(self, request: web.Request) -> web.Response:
        return web.json_response(self.load())

    async def admin_stats(self, request: web.Request) -> web.Response:
        version = request.query.get("version", "")
        window = float(request.query.get("window", "60"))
        return web.json_response(self.stats(version, window))

    async def admin_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def admin_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "generation": self.config.get("generation")})


async def serve(state_dir: Path) -> None:
    config_path = state_dir / "router.json"
    router = Router(config_path)
    ports = router.config["ports"]
    router.session = ClientSession(timeout=ClientTimeout(total=30), connector=TCPConnector(limit=0),
                                   auto_decompress=False)

    def app_for(mode: str) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", lambda request: router.handle(request, mode))
        return app

    admin = web.Application()
    admin.router.add_get("/admin/config", router.admin_config)
    admin.router.add_post("/admin/reload", router.admin_reload)
    admin.router.add_get("/admin/stats", router.admin_stats)
    admin.router.add_get("/admin/health", router.admin_health)
    admin.router.add_get("/metrics", router.admin_metrics)
    runners = []
    for app, port in ((app_for("live"), ports["service"]), (app_for("canary"), ports["preview"]),
                      (app_for("stable"), ports["active"]), (admin, ports["admin"])):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        runners.append(runner)
    log.info("router for %s listening: service %s, preview %s, active %s, admin %s", state_dir.name,
             ports["service"], ports["preview"], ports["active"], ports["admin"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()
    await router.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="local platform router")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.state_dir))


if __name__ == "__main__":
    main()
