"""A real Airflow for end-to-end tests: api-server (with the execution API the tasks talk to), scheduler
(LocalExecutor), dag-processor and triggerer, on a SQLite metadata database in a temporary ``AIRFLOW_HOME``.

``dag.test()`` runs one DAG run in the test process; it cannot run DAG runs that a task triggers (the
multi-region rollout triggers each region's DAG and waits for it), nor hand deferred tasks to a separate
triggerer. This harness runs the real thing::

    with AirflowServer(env={"AIRFLOW_CONN_X": "..."}) as airflow:
        airflow.add_dag_file("services.py", "...")
        airflow.start()
        airflow.wait_for_dags(["deploy_web_production"])
        run_id = airflow.trigger("deploy_web_production", conf={"version": "1.0.0"})
        run = airflow.wait_for_run("deploy_web_production", run_id)
        assert run["state"] == "success", airflow.explain("deploy_web_production", run_id)

Everything the processes write stays in the home folder (``<name>.log`` per process, Airflow's task logs
under ``logs/``); :meth:`explain` gathers task states, the logs of failed tasks and the tails of the process
logs for an assertion message. On leaving the ``with`` block every process group is stopped (SIGTERM, then
SIGKILL), with the tasks' own process groups and any process still running with this ``AIRFLOW_HOME`` (the
local platform's routers and replicas run detached); the home is removed unless ``keep`` is set or the block
raised (then its path is printed). Connections and variables are given as ``AIRFLOW_CONN_*`` /
``AIRFLOW_VAR_*`` in ``env``; Airflow options as ``config={"section": {"option": value}}``.

Airflow 3.3 fails a deferred task at random when its trigger fires quickly: the executor's late "success"
from the worker that deferred arrives once the resumed attempt already runs, and the scheduler takes it for
a task killed externally (apache/airflow#71580, #72716; fixes proposed in #71579, #72767). A test cannot
tell that from a real failure, so the scheduler runs with that fix (``stale_defer_fix``; each event it
ignores is logged in ``scheduler.log`` with ``test harness:``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
FINISHED = ("success", "failed")

#: Options for a small, fast test instance: polled often, parsed once, no examples, nothing paused.
FAST_CONFIG: dict[str, dict[str, Any]] = {
    "core": {"load_examples": False, "executor": "LocalExecutor", "dags_are_paused_at_creation": False,
             "parallelism": 12, "simple_auth_manager_all_admins": True, "dagbag_import_timeout": 120},
    "api": {"workers": 1},
    "scheduler": {"scheduler_heartbeat_sec": 1, "scheduler_idle_sleep_time": 0.5, "use_job_schedule": False,
                  "catchup_by_default": False},
    # Files are written before the start: parse each once (a reparse costs CPU the tasks need).
    "dag_processor": {"refresh_interval": 30, "min_file_process_interval": 600, "parsing_processes": 2},
    "logging": {"logging_level": "INFO"},
}


#: ``python -c`` program: the scheduler with :func:`ignore_stale_defer_exit_success` (argv as for ``airflow``).
SCHEDULER_WITH_FIX = ("import importlib.util; spec = importlib.util.spec_from_file_location('_airflow_server', "
                      "{path!r}); module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
                      "module.ignore_stale_defer_exit_success(); from airflow.__main__ import main; main()")


def ignore_stale_defer_exit_success() -> None:
    """In this process, make the scheduler ignore an executor "success" for a task instance of the same try
    that is resumed (scheduled, queued or running again) after a deferral or a wait for input, with
    ``next_method`` still set: that event can only be the late report of the worker that deferred or parked
    (apache/airflow#72716; the fix proposed in apache/airflow#72767). Without it the scheduler marks the resumed
    task failed ("state mismatch"); an approval answered within a second of its request hits it."""
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    original = SchedulerJobRunner.process_executor_events.__func__

    def process_executor_events(cls: Any, executor: Any, job_id: Any, scheduler_dag_bag: Any, session: Any) -> int:
        for key, (state, _) in list(executor.event_buffer.items()):
            if not isinstance(key, TaskInstanceKey) or state != TaskInstanceState.SUCCESS:
                continue
            ti = session.scalar(select(TaskInstance).where(
                TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
                TaskInstance.run_id == key.run_id, TaskInstance.map_index == key.map_index))
            if (ti is not None and ti.try_number == key.try_number and ti.next_method is not None
                    and ti.state in (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED,
                                     TaskInstanceState.SCHEDULED)):
                executor.event_buffer.pop(key, None)
                cls.logger().warning("test harness: ignoring the stale executor success of %s: it runs again "
                                     "after a deferral (apache/airflow#72716)", key)
        return original(cls, executor, job_id, scheduler_dag_bag, session)

    SchedulerJobRunner.process_executor_events = classmethod(process_executor_events)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowStartError(RuntimeError):
    pass


class AirflowServer:
    """A real Airflow in a temporary home; see the module docstring.

    :param home: the ``AIRFLOW_HOME`` (default: a new temporary folder, removed on exit).
    :param env: extra environment of every Airflow process (connections, variables, credentials).
    :param config: Airflow options over :data:`FAST_CONFIG`, ``{section: {option: value}}``.
    :param keep: keep the home folder after stopping.
    :param stale_defer_fix: run the scheduler with :func:`ignore_stale_defer_exit_success`.
    :param users: user name -> password, all admins of the simple auth manager; the REST API is then called as
        the first of them unless ``as_user`` says otherwise. Default: no login, everyone an admin.
    """

    def __init__(self, home: Path | None = None, *, env: dict[str, str] | None = None,
                 config: dict[str, dict[str, Any]] | None = None, keep: bool = False,
                 stale_defer_fix: bool = True, users: dict[str, str] | None = None) -> None:
        self._own_home = home is None
        self.stale_defer_fix = stale_defer_fix
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="adp-airflow-e2e-"))
        self.dags_folder = self.home / "dags"
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep or bool(os.environ.get("ADP_KEEP_AIRFLOW"))
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        options: dict[str, dict[str, Any]] = {s: dict(o) for s, o in FAST_CONFIG.items()}
        for section, values in (config or {}).items():
            options.setdefault(section, {}).update(values)
        options.setdefault("core", {}).update(dags_folder=str(self.dags_folder),
                                              execution_api_server_url=f"{self.api_url}/execution/")
        options.setdefault("database", {})["sql_alchemy_conn"] = f"sqlite:///{self.home / 'airflow.db'}"
        options.setdefault("api_auth", {})["jwt_secret"] = uuid.uuid4().hex
        self.users = dict(users or {})
        self._tokens: dict[str, str] = {}
        if self.users:
            passwords = self.home / "simple_auth_manager_passwords.json"
            passwords.write_text(json.dumps(self.users))
            options["core"].update(simple_auth_manager_all_admins=False,
                                   simple_auth_manager_users=",".join(f"{u}:admin" for u in self.users),
                                   simple_auth_manager_passwords_file=str(passwords))
        options["api"]["port"] = self.api_port
        # Nothing Airflow-specific from the test process leaks in (its own home, connections, options).
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
                and k not in ("AIRFLOW_HOME", "DEPLOY_SERVICE_ROOTS", "PYTEST_CURRENT_TEST")}
        self.env = {**base, "AIRFLOW_HOME": str(self.home), "PYTHONUNBUFFERED": "1",
                    **{f"AIRFLOW__{s.upper()}__{o.upper()}": _text(v) for s, opts in options.items()
                       for o, v in opts.items()},
                    **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list[Any] = []
        self._session = requests.Session()
        self.started_at: float | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AirflowServer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.keep = True
            print(f"\nAirflow home kept at {self.home}\n{self.process_logs()}", file=sys.stderr)
        self.stop()

    def add_dag_file(self, name: str, text: str) -> Path:
        path = self.dags_folder / name
        path.write_text(text)
        return path

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an ``airflow`` CLI command in this instance's environment; its output."""
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode:
            raise AirflowStartError(f"airflow {' '.join(args)} exited with {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, timeout: float = 180) -> None:
        """Migrate the database, start the processes and wait until the API answers."""
        self.started_at = time.monotonic()
        self.airflow("db", "migrate")
        for name in PROCESSES:
            args = [name, "--port", str(self.api_port)] if name == "api-server" else [name]
            command = [sys.executable, "-m", "airflow", *args]
            if name == "scheduler" and self.stale_defer_fix:
                command = [sys.executable, "-c", SCHEDULER_WITH_FIX.format(path=str(Path(__file__).resolve())),
                           *args]
            log = open(self.home / f"{name}.log", "ab", buffering=0)  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.procs[name] = subprocess.Popen(command, env=self.env,
                                                cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(requests.RequestException):
                if self._session.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    if self.users:  # every later call is made as the first user unless told otherwise
                        self._session.headers["Authorization"] = f"Bearer {self.token(next(iter(self.users)))}"
                    return
            if time.monotonic() > deadline:
                raise AirflowStartError(f"the api-server did not answer within {timeout:.0f}s\n"
                                        + self.process_logs())
            time.sleep(0.5)

    def check_alive(self) -> None:
        """Raise when one of the Airflow processes has exited."""
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise AirflowStartError(f"Airflow process(es) exited: {dead}\n" + self.process_logs())

    def stop(self, timeout: float = 15) -> None:
        """Stop every process this instance started (and the tasks' process groups), then remove the home
        unless it is kept."""
        import psutil

        family: list[psutil.Process] = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                family += [parent, *parent.children(recursive=True)]
        # The scheduler first: no task starts while the others go down.
        for name in ("scheduler", *[n for n in PROCESSES if n != "scheduler"]):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Task processes run in their own process groups; detached processes (the local platform's routers
        # and replicas) carry this instance's AIRFLOW_HOME.
        leftovers = {p.pid: p for p in family if _running(p)}
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if p.pid != os.getpid() and p.environ().get("AIRFLOW_HOME") == str(self.home):
                    leftovers.setdefault(p.pid, p)
        for p in leftovers.values():
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(list(leftovers.values()), timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._session.close()
        if self._own_home and not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ REST API

    def token(self, user: str) -> str:
        """A JWT for ``user`` (simple auth manager login)."""
        if user not in self._tokens:
            resp = requests.post(f"{self.api_url}/auth/token", json={"username": user, "password": self.users[user]},
                                 timeout=30)
            if resp.status_code not in (200, 201):
                raise AssertionError(f"login of {user}: HTTP {resp.status_code} {resp.text[:500]}")
            self._tokens[user] = resp.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), as_user: str | None = None,
            **kwargs: Any) -> Any:
        """Call the REST API (``/api/v2`` + path) as ``as_user`` (default: the first user, if any); the JSON
        answer."""
        if as_user is not None:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {self.token(as_user)}"}
        resp = self._session.request(method, f"{self.api_url}/api/v2{path}", timeout=30, **kwargs)
        if resp.status_code not in ok:
            raise AssertionError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        """Wait until every DAG is parsed, serialized and not paused."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while missing:
            self.check_alive()
            missing = [d for d in missing if not self._dag_ready(d)]
            if not missing:
                return
            if time.monotonic() > deadline:
                errors = self.api("GET", "/importErrors")
                raise AirflowStartError(f"DAGs not parsed within {timeout:.0f}s: {missing}\nimport errors: "
                                        f"{json.dumps(errors, indent=1)[:4000]}\n" + self.process_logs())
            time.sleep(1)

    def _dag_ready(self, dag_id: str) -> bool:
        try:
            resp = self._session.get(f"{self.api_url}/api/v2/dags/{quote(dag_id, safe='')}", timeout=10)
        except requests.RequestException:
            return False
        return resp.status_code == 200 and not resp.json().get("is_paused")

    def trigger(self, dag_id: str, *, conf: dict[str, Any] | None = None, run_id: str | None = None,
                as_user: str | None = None) -> str:
        """Create a manual DAG run (as ``as_user``); its run id."""
        run_id = run_id or f"e2e__{uuid.uuid4().hex[:8]}"
        self.api("POST", f"/dags/{quote(dag_id, safe='')}/dagRuns", as_user=as_user,
                 json={"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        resp = self._session.get(f"{self.api_url}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/"
                                 f"{quote(run_id, safe='')}", timeout=30)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise AssertionError(f"dag run {dag_id} {run_id}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def _pages(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list endpoint (the API caps a page at 100)."""
        items: list[dict[str, Any]] = []
        while True:
            data = self.api("GET", path, params={**params, "limit": 100, "offset": len(items)})
            items += data[key]
            if not data[key] or len(items) >= data["total_entries"]:
                return items

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, oldest first (none when the DAG does not exist)."""
        try:
            return self._pages(f"/dags/{quote(dag_id, safe='')}/dagRuns", "dag_runs", order_by="run_after")
        except AssertionError as exc:
            if "HTTP 404" in str(exc):
                return []
            raise

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task id -> task instance (``state``, ``start_date``, ``end_date``, ``try_number``, ...)."""
        items = self._pages(f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances",
                            "task_instances")
        return {ti["task_id"]: ti for ti in items}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task_id: ti["state"] for task_id, ti in self.task_instances(dag_id, run_id).items()}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600, poll: float = 1.0) -> dict[str, Any]:
        """Wait until the run is finished (``success`` or ``failed``); the run."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            run = self.dag_run(dag_id, run_id)
            if run is not None and run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} did not finish within {timeout:.0f}s "
                                     f"(state {run and run['state']})\n" + self.explain(dag_id, run_id))
            time.sleep(poll)

    # ------------------------------------------------------------------------------------------ diagnostics

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The task's log file(s) (every attempt), as written by the worker."""
        pattern = str(self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / "**"
                      / "*.log")
        out = []
        for path in sorted(glob.glob(pattern, recursive=True)):
            out.append(f"--- {Path(path).relative_to(self.home)}\n{_tail(Path(path), 120)}")
        return "\n".join(out) or f"(no log file for {dag_id} {run_id} {task_id})"

    def stale_defer_events(self) -> int:
        """How many stale executor events the scheduler ignored (see :func:`ignore_stale_defer_exit_success`)."""
        try:
            with open(self.home / "scheduler.log", "rb") as f:
                return f.read().count(b"test harness: ignoring the stale executor success")
        except FileNotFoundError:
            return 0

    def process_logs(self, lines: int = 40) -> str:
        return "\n".join(f"===== {name}.log (last {lines} lines)\n{_tail(self.home / f'{name}.log', lines)}"
                         for name in PROCESSES)

    def explain(self, dag_id: str, run_id: str, *, process_lines: int = 30) -> str:
        """For an assertion message: the run's state, its task states, the logs of its failed tasks and the
        tails of the process logs."""
        parts = [f"Airflow home: {self.home}"]
        try:
            run = self.dag_run(dag_id, run_id)
            tis = self.task_instances(dag_id, run_id) if run else {}
        except (AssertionError, requests.RequestException) as exc:
            return f"{parts[0]}\n(cannot read {dag_id} {run_id}: {exc})\n{self.process_logs(process_lines)}"
        parts.append(f"{dag_id} {run_id}: {run and run['state']}")
        parts += [f"  {task_id:<60} {ti['state']}" for task_id, ti in sorted(tis.items())]
        for task_id, ti in sorted(tis.items()):
            if ti["state"] in ("failed", "up_for_retry"):
                parts.append(self.task_log(dag_id, run_id, task_id))
        if process_lines:
            parts.append(self.process_logs(process_lines))
        return "\n".join(parts)


def _text(value: Any) -> str:
    return str(value) if not isinstance(value, bool) else ("True" if value else "False")


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _running(p: Any) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
