"""On-disk state of the local platform and the processes it runs.

State lives under ``$AIRFLOW_HOME/deploy-local/<service>-<environment>[-<region>]/``: ``state.json`` (roles,
replicas, router ports, weights), ``router.json`` (what the router routes), a lock file and the replicas'
logs. Processes run in their own session so that they outlive the Airflow task that started them (a worker
restart does not take the service down) and are found again from the state; ``airflow-deploy local down``
stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT_DIR = "deploy-local"


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")


def state_root() -> Path:
    return airflow_home() / ROOT_DIR


class LocalState:
    """``state.json`` of one target, read and written under an exclusive file lock."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.file = directory / "state.json"
        self.router_file = directory / "router.json"
        self.logs = directory / "logs"

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state, locked against other processes; saved on leaving the block unless it raised."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self.read()
                yield data
                write_json(self.file, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.file.read_text())
        except FileNotFoundError:
            return {"roles": {"stable": None, "canary": None}, "weight": 0, "router": None, "markers": []}


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process(command: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Start a detached process (own session) writing to ``log_path``; returns its identity."""
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    return {"pid": proc.pid, "create_time": created, "started_at": time.time(), "log": str(log_path)}


def alive(info: dict[str, Any] | None) -> bool:
    """Whether the process still runs (and is the one we started, not a reused pid)."""
    if not info or not info.get("pid"):
        return False
    import psutil

    try:
        proc = psutil.Process(info["pid"])
        if info.get("create_time") and abs(proc.create_time() - info["create_time"]) > 1:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_process(info: dict[str, Any] | None, timeout: float = 5.0) -> None:
    """SIGTERM the process's group, then SIGKILL after ``timeout``; reaps it when it is our child."""
    if not alive(info):
        _reap(info)
        return
    assert info is not None
    pid = info["pid"]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(info):
        _reap(info)
        time.sleep(0.05)
    if alive(info):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.05)
    _reap(info)


def _reap(info: dict[str, Any] | None) -> None:
    if info and info.get("pid"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(info["pid"], os.WNOHANG)


def tail(path: str | Path, lines: int = 50) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


def python_command(command: list[str]) -> list[str]:
    """``python`` at the start of a command means the worker's own interpreter (its virtualenv)."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)
