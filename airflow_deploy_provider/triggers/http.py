"""Trigger that probes a service's health and metrics endpoints with retries."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_deploy_provider.triggers.common import record, success


class HealthCheckTrigger(BaseTrigger):
    """
    The spec's ``health_check.py`` as a trigger: ``GET <path>`` must answer 200 with JSON (retried ``retries``
    times, ``delay`` seconds apart), then ``GET <metrics_path>`` must contain ``deployment_version`` (and the
    expected version when given). Fires ``{"ok": bool, "reason": str, "url": str, "log": [...]}``.
    """

    def __init__(self, *, url: str, path: str = "/health", metrics_path: str = "/metrics", retries: int = 10,
                 delay: float = 5.0, timeout: float = 5.0, version: str | None = None,
                 ledger: dict[str, Any] | None = None, end_task: bool = False) -> None:
        super().__init__()
        self.url = url
        self.path = path
        self.metrics_path = metrics_path
        self.retries = retries
        self.delay = delay
        self.timeout = timeout
        self.version = version
        self.ledger = ledger
        self.end_task = end_task

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "url": self.url, "path": self.path, "metrics_path": self.metrics_path, "retries": self.retries,
            "delay": self.delay, "timeout": self.timeout, "version": self.version, "ledger": self.ledger,
            "end_task": self.end_task,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import aiohttp

        log: list[str] = []
        base = self.url.rstrip("/")
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            healthy = False
            for attempt in range(1, self.retries + 1):
                try:
                    async with session.get(base + self.path) as resp:
                        body = await resp.text()
                        if resp.status == 200:
                            json.loads(body)
                            log.append(f"✓ health check passed: {body[:200]}")
                            healthy = True
                            break
                        log.append(f"✗ health check failed: HTTP {resp.status}")
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    log.append(f"✗ connection error: {exc.__class__.__name__}: {exc}")
                except ValueError:
                    log.append("✗ health check failed: body is not JSON")
                if attempt < self.retries:
                    log.append(f"retrying in {self.delay:g} seconds... ({attempt}/{self.retries})")
                    await asyncio.sleep(self.delay)
            if not healthy:
                yield TriggerEvent({"ok": False, "url": base, "reason": f"{base}{self.path} not healthy after "
                                    f"{self.retries} tries", "log": log})
                return
            try:
                async with session.get(base + self.metrics_path) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                text = ""
                log.append(f"✗ metrics endpoint failed: {exc}")
            if "deployment_version" not in text:
                log.append("✗ metrics endpoint failed")
                yield TriggerEvent({"ok": False, "url": base, "reason": f"{base}{self.metrics_path} does not expose "
                                    "deployment_version", "log": log})
                return
            if self.version and not re.search(r'deployment_version\{[^}]*version="%s"' % re.escape(self.version), text):
                log.append(f"✗ metrics endpoint reports another version than {self.version}")
                yield TriggerEvent({"ok": False, "url": base, "reason": f"{base} does not run version {self.version}",
                                    "log": log})
                return
            log.append("✓ metrics endpoint accessible")
            for line in log:
                self.log.info("%s", line)
            result = {"ok": True, "url": base, "reason": "all checks passed"}
            await record(self.ledger, "check", f"health check of {base}: passed", result)
            yield success({**result, "log": log}, self.end_task)
