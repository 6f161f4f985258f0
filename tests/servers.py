"""Real servers for tests: PostgreSQL started from the machine's binaries."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A throw-away PostgreSQL cluster on loopback. As root, the server runs as the ``postgres`` user
    (initdb refuses root); the data lives in a temporary folder removed on stop."""

    def __init__(self) -> None:
        initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed; run .ci/run")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="adp-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        as_root = os.geteuid() == 0
        if as_root:
            if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                                "postgres"], check=True)
            shutil.chown(self.dir, "postgres")
        self._prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        subprocess.run([*self._prefix, initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--locale=C.UTF-8", "--no-sync"], check=True, capture_output=True)
        subprocess.run([*self._prefix, pg_ctl, "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                        "start", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"],
                       check=True, capture_output=True)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self._prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrometheusServer:
    """A Prometheus server (the Debian package's binary) on loopback, serving series backfilled from an
    OpenMetrics text with ``promtool tsdb create-blocks-from openmetrics`` before it starts."""

    def __init__(self, openmetrics: str) -> None:
        import time

        import requests

        binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
        if not binary or not promtool:
            raise RuntimeError("prometheus and promtool are not installed; run .ci/run (apt package prometheus)")
        self.dir = Path(tempfile.mkdtemp(prefix="adp-prom-"))
        self.port = free_port()
        source = self.dir / "series.om"
        source.write_text(openmetrics if openmetrics.endswith("# EOF\n") else openmetrics + "# EOF\n")
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.dir / "data")],
                       check=True, capture_output=True)
        (self.dir / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1y"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prometheus did not start: {(self.dir / 'server.log').read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection_uri(self) -> str:
        """An Airflow HTTP connection to this server."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RoleNetwork:
    """What the worker would reach through a platform's network: an HTTP server answering for the stable and
    canary roles and the service's entry point (``/stable/...``, ``/canary/...``, ``/live/...``) with the
    version ``version_of(role)`` says runs there (503 while nothing ready runs; 500 for ``unhealthy``
    versions). ``/metrics`` exposes ``deployment_version``; other paths answer the health JSON."""

    def __init__(self, version_of: Callable[[str], str | None]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.unhealthy: set[str] = set()
        network = self

        def live_version() -> str | None:
            return version_of("stable") or version_of("canary")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                role, _, rest = self.path.lstrip("/").partition("/")
                version = None
                if role == "live":
                    version = live_version()
                elif role in ("stable", "canary"):
                    version = version_of(role)
                if version is None or version in network.unhealthy:
                    self.send_response(503 if version is None else 500)
                    self.end_headers()
                    return
                if rest.startswith("metrics"):
                    body, kind = f'deployment_version{{version="{version}"}} 1\n', "text/plain"
                else:
                    body, kind = json.dumps({"status": "ok", "version": version}), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoints(self) -> dict[str, str]:
        return {role: f"http://127.0.0.1:{self.port}/{role}" for role in ("live", "stable", "canary")}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
