"""Steady HTTP load against a URL, like live users: ``python -m airflow_deploy_provider.demo.load URL --rps 100``.

Prints one line per second with the requests sent, their status codes and the versions that answered.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import Counter

import aiohttp


async def run(url: str, rps: float, duration: float | None, quiet: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    interval = 1.0 / rps
    codes: Counter = Counter()
    versions: Counter = Counter()
    pending: set[asyncio.Task] = set()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=200)) as session:

        async def one() -> None:
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    codes[resp.status] += 1
                    versions[resp.headers.get("X-Deploy-Version", "?")] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                codes["error"] += 1

        started = time.monotonic()
        next_at = started
        last_report = started
        while not stop.is_set() and (duration is None or time.monotonic() - started < duration):
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += interval
            now = time.monotonic()
            if now - last_report >= 1.0 and not quiet:
                print(f"load: {dict(codes)} versions {dict(versions)}", flush=True)
                codes.clear()
                versions.clear()
                last_report = now
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending, timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=None, help="seconds; default: until stopped")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(run(args.url, args.rps, args.duration, args.quiet))


if __name__ == "__main__":
    main()
