"""A demo web service whose versions can be made to fail or slow down.

``python -m airflow_deploy_provider.demo.app --port 8080 --version 1.2.0``

* ``GET /health``: ``{"status": "ok", "version": ...}``
* ``GET /metrics``: Prometheus text with ``deployment_version{version="..."} 1``
* anything else: a small JSON answer, failing with 500 for a share of requests and delayed as configured;
* ``POST /_demo/faults`` with ``{"error_rate": ..., "latency_ms": ...}`` changes the faults at run time (for
  benchmarks that need to know the moment a version starts failing).

Faults per version come from ``--error-rate`` / ``--latency-ms`` or from the ``DEMO_FAULTS`` environment
variable, a JSON object such as ``{"2.0.0": {"error_rate": 0.3}, "2.1.0": {"latency_ms": 1500}}``; an entry's
``paths`` (a list of path prefixes) limits its faults to those paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

from aiohttp import web


def faults_for(version: str, error_rate: float | None, latency_ms: float | None) -> tuple[float, float, list[str]]:
    table = json.loads(os.environ.get("DEMO_FAULTS") or "{}")
    entry = table.get(version, {})
    return (error_rate if error_rate is not None else float(entry.get("error_rate", 0.0)),
            latency_ms if latency_ms is not None else float(entry.get("latency_ms", 0.0)),
            list(entry.get("paths") or []))


def make_app(version: str, error_rate: float, latency_ms: float, paths: list[str] | None = None) -> web.Application:
    counts = {"requests": 0, "errors": 0}
    faults = {"error_rate": error_rate, "latency_ms": latency_ms}
    started = time.time()

    async def set_faults(request: web.Request) -> web.Response:
        faults.update({k: float(v) for k, v in (await request.json()).items() if k in faults})
        return web.json_response({**faults, "at": time.time()})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": version, "uptime": round(time.time() - started, 1)})

    async def metrics(request: web.Request) -> web.Response:
        text = (
            "# HELP deployment_version The version this process runs.\n# TYPE deployment_version gauge\n"
            f'deployment_version{{version="{version}"}} 1\n'
            "# HELP demo_requests_total Requests answered.\n# TYPE demo_requests_total counter\n"
            f"demo_requests_total {counts['requests']}\n"
            "# HELP demo_errors_total Requests answered with 500.\n# TYPE demo_errors_total counter\n"
            f"demo_errors_total {counts['errors']}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def serve(request: web.Request) -> web.Response:
        counts["requests"] += 1
        if paths and not any(request.path.startswith(p) for p in paths):
            return web.json_response({"path": request.path, "version": version})
        if faults["latency_ms"]:
            await asyncio.sleep(faults["latency_ms"] / 1000.0 * random.uniform(0.9, 1.1))
        if faults["error_rate"] and random.random() < faults["error_rate"]:
            counts["errors"] += 1
            return web.json_response({"error": "injected failure", "version": version}, status=500)
        return web.json_response({"path": request.path, "version": version})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/_demo/faults", set_faults)
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="demo web service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default=os.environ.get("DEPLOY_VERSION", "dev"))
    parser.add_argument("--error-rate", type=float, default=None, help="share of requests answered with 500")
    parser.add_argument("--latency-ms", type=float, default=None, help="added latency per request")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    args = parser.parse_args(argv)
    error_rate, latency_ms, paths = faults_for(args.version, args.error_rate, args.latency_ms)
    if args.startup_delay:
        time.sleep(args.startup_delay)
    print(f"demo app {args.version} on port {args.port} (error rate {error_rate:g}, latency {latency_ms:g} ms)",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    web.run_app(make_app(args.version, error_rate, latency_ms, paths), host="127.0.0.1", port=args.port,
                print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
