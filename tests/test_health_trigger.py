"""The health-check trigger against real local HTTP servers (the spec's health_check.py behaviour)."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_deploy_provider.triggers.http import HealthCheckTrigger


def serve(routes: dict[str, tuple[int, str]]):
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            status, body = routes.get(self.path, (404, "not found"))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


def run(trigger: HealthCheckTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


METRICS_OK = (200, 'deployment_version{version="1.2.0"} 1\n')


@pytest.mark.parametrize(("routes", "ok", "reason"), [
    ({"/health": (200, '{"status": "ok"}'), "/metrics": METRICS_OK}, True, "all checks passed"),
    ({"/health": (503, "down"), "/metrics": METRICS_OK}, False, "not healthy after 3 tries"),
    ({"/health": (200, "OK"), "/metrics": METRICS_OK}, False, "not healthy after 3 tries"),  # not JSON
    ({"/health": (200, "{}"), "/metrics": (200, "requests_total 3\n")}, False, "does not expose deployment_version"),
    ({"/health": (200, "{}"), "/metrics": (200, 'deployment_version{version="1.1.0"} 1\n')}, False,
     "does not run version 1.2.0"),
])
def test_health_check(routes, ok, reason):
    server, hits = serve(routes)
    try:
        event = run(HealthCheckTrigger(url=f"http://127.0.0.1:{server.server_address[1]}", retries=3, delay=0.05,
                                       timeout=2, version="1.2.0"))
    finally:
        server.shutdown()
    assert event["ok"] is ok and reason in event["reason"]
    if not ok and "tries" in reason:
        assert hits.count("/health") == 3  # retried with a delay
        assert any("Retrying in" in line or "retrying in" in line for line in event["log"])


def test_unreachable_service_is_retried_then_fails():
    event = run(HealthCheckTrigger(url="http://127.0.0.1:9", retries=2, delay=0.01, timeout=1))
    assert not event["ok"] and any("connection error" in line for line in event["log"])


def test_trigger_serializes_for_the_triggerer():
    trigger = HealthCheckTrigger(url="http://x", path="/healthz", retries=4, delay=1, timeout=2, version="3")
    path, kwargs = trigger.serialize()
    assert path == "airflow_deploy_provider.triggers.http.HealthCheckTrigger"
    assert HealthCheckTrigger(**kwargs).serialize() == (path, kwargs)
