"""The embedded local platform: every replica is a process on this machine, behind a local router.

Settings (``platform`` in ``service.yaml``): ``command`` (with ``{port}``), ``port`` (the router's service
port), ``env``, ``working_dir``; the factory adds ``service_root``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import requests

from airflow_deploy_provider.platforms.base import (
    DeploymentPlatform,
    MaintenanceState,
    PlatformError,
    Role,
    RolloutStatus,
    Target,
    TrafficSplit,
    WorkloadSpec,
)
from airflow_deploy_provider.platforms.local.state import (
    LocalState,
    alive,
    free_port,
    python_command,
    start_process,
    state_root,
    stop_process,
    tail,
    write_json,
)
from airflow_deploy_provider.steps import fill

ROUTER_START_TIMEOUT = 15.0
#: A new replica whose port is not open yet is starting, not failing, for this long after initialDelay (a
#: loaded machine can take seconds to start a Python process): like a pod before its first probe answers.
STARTUP_GRACE = 30.0
ADMIN_TIMEOUT = 5.0


class LocalPlatform(DeploymentPlatform):
    """Runs each version as local processes behind a per-service router (see :mod:`.router`)."""

    type = "local"

    def __init__(self, settings: dict[str, Any], target: Target):
        super().__init__(settings, target)
        self.state = LocalState(state_root() / target.key)
        self._failures: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------------------------------- router

    def _ensure_router(self, data: dict[str, Any]) -> dict[str, Any]:
        data.update(service=self.target.service, environment=self.target.environment, region=self.target.region)
        router = data.get("router")
        if router and alive(router.get("process")) and self._admin_ok(router["ports"]["admin"]):
            return router
        if router:
            stop_process(router.get("process"))
        ports = dict((router or {}).get("ports") or {})
        ports.setdefault("service", self.settings.get("port") or free_port())
        for name in ("preview", "active", "admin"):
            ports.setdefault(name, free_port())
        data["router"] = {"ports": ports, "process": None}
        self._write_router_config(data)
        process = start_process([sys.executable, "-m", "airflow_deploy_provider.platforms.local.router",
                                 "--state-dir", str(self.state.dir)], cwd=self.state.dir, env=dict(os.environ),
                                log_path=self.state.logs / "router.log")
        data["router"]["process"] = process
        deadline = time.monotonic() + ROUTER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self._admin_ok(ports["admin"]):
                return data["router"]
            if not alive(process):
                break
            time.sleep(0.05)
        stop_process(process)
        raise PlatformError(f"the router of {self.target.key} did not start (is port {ports['service']} free?): "
                            + " | ".join(tail(self.state.logs / "router.log", 5)), reason="RouterStartFailed")

    @staticmethod
    def _admin_ok(port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/admin/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _write_router_config(self, data: dict[str, Any]) -> None:
        def role(name: str) -> dict[str, Any] | None:
            r = data["roles"].get(name)
            if not r:
                return None
            # Like a Kubernetes Service: only replicas that passed their health check get traffic.
            return {"version": r["version"],
                    "backends": [f"127.0.0.1:{rep['port']}" for rep in r["replicas"] if rep.get("ready")]}

        data["generation"] = int(data.get("generation", 0)) + 1
        write_json(self.state.router_file, {
            "ports": data["router"]["ports"], "stable": role("stable"), "canary": role("canary"),
            "weight": int(data.get("weight", 0)) if data["roles"].get("canary") else 0,
            "maintenance": data.get("maintenance"),  # kept in state.json: it survives reloads and restarts
            "generation": data["generation"],
        })

    def _publish(self, data: dict[str, Any]) -> dict[str, Any]:
        """Hand the routing in ``data`` to the router and read it back."""
        router = self._ensure_router(data)
        self._write_router_config(data)
        try:
            resp = requests.post(f"http://127.0.0.1:{router['ports']['admin']}/admin/reload", timeout=ADMIN_TIMEOUT)
            resp.raise_for_status()
        except requests.RequestException as exc:
            raise PlatformError(f"the router of {self.target.key} did not take the new routing: {exc}") from exc
        applied = resp.json()
        if applied.get("generation") != data["generation"]:
            raise PlatformError(f"the router of {self.target.key} reports routing generation "
                                f"{applied.get('generation')}, expected {data['generation']}")
        return applied

    # --------------------------------------------------------------------------------------------- replicas

    def _start_replicas(self, spec: WorkloadSpec, role: str, count: int, first_index: int = 0) -> list[dict[str, Any]]:
        command = python_command(self.settings["command"])
        root = self._source(spec)
        cwd = root / (self.settings.get("working_dir") or "")
        replicas = []
        for index in range(first_index, first_index + count):
            port = free_port()
            values = {"port": port, "version": spec.version, "service": self.target.service,
                      "environment": self.target.environment, "region": self.target.region or "",
                      "replica": index, "image": spec.image, "url": f"http://127.0.0.1:{port}", "commit": "",
                      "short_sha": "", "run_id": ""}
            argv = fill(command, values)
            env = {**os.environ, **(self.settings.get("env") or {}), **spec.env, "DEPLOY_VERSION": spec.version,
                   "DEPLOY_PORT": str(port), "DEPLOY_ROLE": role, "DEPLOY_SERVICE": self.target.service}
            log = self.state.logs / f"{spec.version}-{role}-{index}.log"
            try:
                info = start_process(argv, cwd=cwd, env=env, log_path=log)
            except OSError as exc:
                raise PlatformError(f"cannot start {argv[0]!r} for {self.target.key}: {exc}",
                                    reason="CommandFailed") from exc
            replicas.append({**info, "index": index, "port": port, "ready": False})
        return replicas

    def _source(self, spec: WorkloadSpec) -> Path:
        """Where the replicas of ``spec`` run: the artifact its image names when the service builds artifacts
        (what was built, scanned and signed is what runs), else the service folder."""
        if not self.settings.get("run_artifacts"):
            return Path(self.settings.get("service_root") or ".")
        from airflow_deploy_provider.steps import StepError
        from airflow_deploy_provider.steps.artifacts import unpacked

        try:
            return unpacked(spec.image)
        except StepError as exc:
            raise PlatformError(str(exc), reason="ImageNotFound") from exc

    @staticmethod
    def _stop(replicas: list[dict[str, Any]] | None) -> None:
        for rep in replicas or []:
            stop_process(rep)

    @staticmethod
    def _role(spec: WorkloadSpec, replicas: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": spec.version, "image": spec.image, "spec": spec.to_dict(), "replicas": replicas}

    @staticmethod
    def _healthy_count(role: dict[str, Any] | None) -> int:
        return sum(1 for rep in (role or {}).get("replicas", []) if alive(rep))

    # -------------------------------------------------------------------------------------------- interface

    def deploy(self, spec: WorkloadSpec, role: Role) -> None:
        with self.state.locked() as data:
            self._ensure_router(data)
            current = data["roles"].get(role)
            same = current and current["version"] == spec.version and \
                len(current["replicas"]) == spec.replicas and self._healthy_count(current) == spec.replicas
            if role == "canary":
                if same:
                    return
                if current:  # another canary version: take it out of traffic, then stop it
                    data["weight"] = 0
                    data["roles"]["canary"] = None
                    self._publish(data)
                    self._stop(current["replicas"])
                data["roles"]["canary"] = self._role(spec, self._start_replicas(spec, "canary", spec.replicas))
                self._publish(data)
                return
            pending = data.get("stable_next")
            if same and not pending:
                return
            if spec.strategy == "rolling" and current and self._healthy_count(current):
                if pending and pending["version"] == spec.version:
                    return  # already on its way
                if pending:
                    self._stop(pending["replicas"])
                # The new replicas take traffic once all are ready (see rollout_status): no downtime.
                data["stable_next"] = self._role(spec, self._start_replicas(spec, "stable", spec.replicas))
                return
            # recreate, or nothing running yet
            if pending:
                self._stop(pending["replicas"])
                data.pop("stable_next", None)
            if current:
                data["roles"]["stable"] = None
                self._publish(data)
                self._stop(current["replicas"])
            data["roles"]["stable"] = self._role(spec, self._start_replicas(spec, "stable", spec.replicas))
            self._publish(data)

    def rollout_status(self, role: Role) -> RolloutStatus:
        data = self.state.read()
        pending = data.get("stable_next") if role == "stable" else None
        target = pending or data["roles"].get(role)
        if not target:
            return RolloutStatus(role=role, version=None, desired=0, ready=0, failed=True, reason="NotDeployed",
                                 message=f"nothing is deployed in the {role} role")
        spec = WorkloadSpec.from_dict(target["spec"])
        hc = spec.health_check
        desired, ready, failed, reason, message = spec.replicas, 0, False, None, ""
        for rep in target["replicas"]:
            key = (target["version"], rep["index"])
            if not alive(rep):
                failed, reason = True, "ProcessExited"
                message = f"replica {rep['index']} exited: " + " | ".join(tail(rep["log"], 5))
                continue
            if time.time() - rep["started_at"] < hc.initial_delay:
                continue
            healthy = self._probe(rep["port"], hc.path, hc.timeout)
            if healthy is None and not rep.get("ready") and time.time() - rep["started_at"] < STARTUP_GRACE:
                continue  # still starting (its port is not open yet), like a pod before its first probe
            if healthy:
                self._failures[key] = 0
                ready += 1
            else:
                self._failures[key] = self._failures.get(key, 0) + 1
                if self._failures[key] >= hc.failure_threshold:
                    failed, reason = True, "HealthCheckFailed"
                    message = (f"replica {rep['index']} failed {self._failures[key]} health checks on {hc.path}: "
                               + " | ".join(tail(rep["log"], 3)))
        done = not failed and ready == desired == len(target["replicas"])
        newly_ready = [rep["index"] for rep in target["replicas"] if not rep.get("ready")
                       and self._failures.get((target["version"], rep["index"])) == 0]
        if newly_ready:
            self._mark_ready("stable_next" if pending else role, target["version"], newly_ready)
        if done and pending:
            done = self._finish_rolling_update(pending["version"])
        if not message:
            message = f"{ready}/{desired} replicas of {target['version']} ready"
        return RolloutStatus(role=role, version=target["version"], desired=desired, ready=ready,
                             updated=len(target["replicas"]), available=ready, done=done, failed=failed,
                             reason=reason, message=message)

    def _mark_ready(self, slot: str, version: str, indexes: list[int]) -> None:
        """Replicas that passed their health check start receiving traffic."""
        with self.state.locked() as data:
            target = data.get(slot) if slot == "stable_next" else data["roles"].get(slot)
            if not target or target["version"] != version:
                return
            for rep in target["replicas"]:
                if rep["index"] in indexes:
                    rep["ready"] = True
            if slot != "stable_next":
                self._publish(data)

    def _finish_rolling_update(self, version: str) -> bool:
        with self.state.locked() as data:
            pending = data.get("stable_next")
            if not pending or pending["version"] != version:
                current = data["roles"].get("stable")
                return bool(current and current["version"] == version)
            old = data["roles"].get("stable")
            data["roles"]["stable"] = pending
            data.pop("stable_next", None)
            self._publish(data)
            self._stop((old or {}).get("replicas"))
        return True

    @staticmethod
    def _probe(port: int, path: str, timeout: float) -> bool | None:
        """True: healthy; False: a wrong answer or none in time; None: nothing listens on the port yet."""
        try:
            resp = requests.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)
            if resp.status_code != 200:
                return False
            resp.json()
            return True
        except requests.ConnectionError as exc:
            return None if not isinstance(exc, requests.ConnectTimeout) else False
        except (requests.RequestException, ValueError):
            return False

    def set_traffic(self, canary_weight: int) -> TrafficSplit:
        if not 0 <= canary_weight <= 100:
            raise PlatformError(f"traffic weight must be 0-100; got {canary_weight}")
        with self.state.locked() as data:
            if canary_weight and not data["roles"].get("canary"):
                raise PlatformError(f"{self.target.key} has no canary to send {canary_weight}% of traffic to")
            data["weight"] = canary_weight
            self._publish(data)
        return self.traffic()

    def traffic(self) -> TrafficSplit:
        data = self.state.read()
        router = data.get("router")
        if not router:
            return TrafficSplit(stable_version=None, canary_version=None, canary_weight=0)
        try:
            config = requests.get(f"http://127.0.0.1:{router['ports']['admin']}/admin/config",
                                  timeout=ADMIN_TIMEOUT).json()
        except requests.RequestException as exc:
            raise PlatformError(f"the router of {self.target.key} does not answer: {exc}") from exc
        stable, canary = config.get("stable"), config.get("canary")
        weight = int(config.get("weight", 0)) if canary else 0
        if canary and not stable:
            weight = 100  # nothing else to route to: the first version takes all traffic
        return TrafficSplit(stable_version=stable["version"] if stable else None,
                            canary_version=canary["version"] if canary else None, canary_weight=weight)

    def promote(self) -> bool:
        with self.state.locked() as data:
            canary = data["roles"].get("canary")
            if not canary:
                return True  # already promoted
            old = data["roles"].get("stable")
            data["roles"]["stable"] = canary
            data["roles"]["canary"] = None
            data["weight"] = 0
            self._publish(data)  # the new version takes all traffic before the old one stops
            self._stop((old or {}).get("replicas"))
        return True

    def abort(self) -> None:
        with self.state.locked() as data:
            canary = data["roles"].get("canary")
            pending = data.pop("stable_next", None)
            data["weight"] = 0
            data["roles"]["canary"] = None
            if data.get("router"):
                self._publish(data)  # traffic back to stable first
            self._stop((canary or {}).get("replicas"))
            self._stop((pending or {}).get("replicas"))

    def scale(self, role: Role, replicas: int) -> None:
        with self.state.locked() as data:
            current = data["roles"].get(role)
            if not current:
                return  # nothing runs in this role (for example before the first deployment)
            spec = WorkloadSpec.from_dict(current["spec"])
            running = [rep for rep in current["replicas"] if alive(rep)]
            if len(running) < replicas:
                start = max([rep["index"] for rep in current["replicas"]], default=-1) + 1
                running += self._start_replicas(spec, role, replicas - len(running), first_index=start)
            extra = running[replicas:]
            current["replicas"] = running[:replicas]
            current["spec"] = {**current["spec"], "replicas": replicas}
            self._publish(data)
            self._stop(extra)
        self._wait_ready(role, spec.version, spec.progress_deadline)

    def _wait_ready(self, role: Role, version: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.rollout_status(role)
            if status.done and status.version == version:
                return
            if status.failed:
                raise PlatformError(f"{role} {version} is not healthy: {status.message}", reason=status.reason)
            time.sleep(0.1)
        raise PlatformError(f"{role} {version} not ready within {timeout:g}s", reason="ProgressDeadlineExceeded")

    def snapshot(self) -> dict[str, Any]:
        data = self.state.read()

        def role(name: str) -> dict[str, Any] | None:
            r = data["roles"].get(name)
            return {"version": r["version"], "image": r["image"], "spec": r["spec"]} if r else None

        return {"platform": "local", "target": self.target.key, "stable": role("stable"), "canary": role("canary"),
                "weight": data.get("weight", 0), "taken_at": time.time()}

    def restore(self, snapshot: dict[str, Any]) -> bool:
        self.abort()
        stable = snapshot.get("stable")
        if not stable:
            with self.state.locked() as data:  # there was nothing before: the service is removed
                old = data["roles"].get("stable")
                data["roles"]["stable"] = None
                if data.get("router"):
                    self._publish(data)
                self._stop((old or {}).get("replicas"))
            return True
        spec = WorkloadSpec.from_dict({**stable["spec"], "strategy": "rolling"})
        self.deploy(spec, "stable")
        return False

    def status(self) -> dict[str, Any]:
        import psutil

        data = self.state.read()
        resources: dict[str, list[dict[str, Any]]] = {}
        for name in ("stable", "canary"):
            role = data["roles"].get(name)
            if not role:
                continue
            limit = _memory_limit(role["spec"].get("resources"))
            usage = []
            for rep in role["replicas"]:
                entry: dict[str, Any] = {"replica": rep["index"], "pid": rep["pid"], "alive": alive(rep)}
                if entry["alive"]:
                    with contextlib.suppress(psutil.Error):
                        rss = psutil.Process(rep["pid"]).memory_info().rss
                        entry.update(rss=rss, memory_limit=limit, memory_share=(rss / limit) if limit else None)
                usage.append(entry)
            resources[name] = usage
        router = data.get("router") or {}
        return {"target": self.target.key, "router": {"ports": router.get("ports"), "alive": alive(router.get("process"))},
                "stable": _describe_role(data["roles"].get("stable")), "canary": _describe_role(data["roles"].get("canary")),
                "updating_to": (data.get("stable_next") or {}).get("version"), "weight": data.get("weight", 0),
                "maintenance": bool((data.get("maintenance") or {}).get("enabled")),
                "resources": resources, "markers": data.get("markers", [])[-5:]}

    def endpoint(self, role: Role | None = None) -> str:
        router = self.state.read().get("router")
        if not router:
            raise PlatformError(f"{self.target.key} has no router yet: nothing is deployed")
        port = router["ports"][{None: "service", "canary": "preview", "stable": "active"}[role]]
        return f"http://127.0.0.1:{port}"

    def set_autoscaling(self, enabled: bool) -> str:
        return "the local platform has no autoscaler: replica counts stay as configured"

    def logs(self, role: Role, lines: int = 200) -> list[str]:
        role_state = self.state.read()["roles"].get(role) or {}
        out: list[str] = []
        for rep in role_state.get("replicas", []):
            out.extend(tail(rep["log"], lines))
        return out

    def capacity(self, spec: WorkloadSpec) -> dict[str, Any]:
        import psutil

        needed = spec.replicas * (_memory_limit(spec.resources, "requests") or _memory_limit(spec.resources) or 0)
        available = psutil.virtual_memory().available
        fits = needed <= available
        return {"fits": fits, "needed_bytes": needed, "available_bytes": available,
                "detail": f"{spec.replicas} replica(s) need {needed / 2**20:.0f} MiB, {available / 2**20:.0f} MiB "
                          "available"}

    # ------------------------------------------------------------------------------------- maintenance mode

    @classmethod
    def maintenance_support(cls, settings: dict[str, Any]) -> str | None:
        return None  # the router serves the maintenance page itself

    def set_maintenance(self, enabled: bool, message: str = "", retry_after: int = 300) -> MaintenanceState:
        with self.state.locked() as data:
            current = data.get("maintenance")
            if not enabled and not current:
                return MaintenanceState(enabled=False, detail=f"router of {self.target.key}")
            wanted = None
            if enabled:
                stable = data["roles"].get("stable") or {}
                health = ((stable.get("spec") or {}).get("health_check") or {}).get("path") or "/health"
                wanted = {"enabled": True, "message": message, "retry_after": int(retry_after),
                          "health_path": health, "since": (current or {}).get("since") or time.time()}
            router = data.get("router")
            if wanted == current and router and alive(router.get("process")):
                return self.maintenance()  # already so (a retried task): nothing to publish
            data["maintenance"] = wanted
            self._publish(data)
        return self.maintenance()

    def maintenance(self) -> MaintenanceState:
        router = self.state.read().get("router")
        if not router:
            return MaintenanceState(enabled=False)
        try:
            config = requests.get(f"http://127.0.0.1:{router['ports']['admin']}/admin/config",
                                  timeout=ADMIN_TIMEOUT).json()
        except requests.RequestException as exc:
            raise PlatformError(f"the router of {self.target.key} does not answer: {exc}") from exc
        on = config.get("maintenance") or {}
        return MaintenanceState(enabled=bool(on.get("enabled")), message=on.get("message") or "",
                                since=on.get("since"),
                                detail=f"router of {self.target.key} on port {router['ports']['service']}")

    def annotate(self, marker: dict[str, Any]) -> str:
        with self.state.locked() as data:
            data.setdefault("markers", []).append({**marker, "at": time.time()})
        return f"marker stored in {self.state.file}"

    def cleanup(self, keep: int) -> str:
        data = self.state.read()
        running = {r["version"] for r in data["roles"].values() if r}
        logs = sorted(self.state.logs.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        versions = []
        for path in logs:
            version = path.name.rsplit("-", 2)[0]
            if version not in versions and path.name != "router.log":
                versions.append(version)
        old = [v for v in versions[keep:] if v not in running]
        removed = [p for p in logs if p.name != "router.log" and p.name.rsplit("-", 2)[0] in old]
        for path in removed:
            path.unlink(missing_ok=True)
        return f"removed {len(removed)} log file(s) of {len(old)} old version(s)"

    def down(self) -> dict[str, Any]:
        """Stop every process of this target and remove its state."""
        with self.state.locked() as data:
            stopped = 0
            for role in list(data["roles"].values()) + [data.get("stable_next")]:
                for rep in (role or {}).get("replicas", []):
                    stop_process(rep)
                    stopped += 1
            router = data.get("router")
            if router:
                stop_process(router.get("process"))
                stopped += 1
        shutil.rmtree(self.state.dir, ignore_errors=True)
        return {"target": self.target.key, "stopped": stopped}


def _describe_role(role: dict[str, Any] | None) -> dict[str, Any] | None:
    if not role:
        return None
    return {"version": role["version"], "replicas": len(role["replicas"]),
            "alive": sum(1 for rep in role["replicas"] if alive(rep))}


def _memory_limit(resources: dict[str, Any] | None, kind: str = "limits") -> int | None:
    from airflow_deploy_provider.config.types import parse_quantity

    memory = ((resources or {}).get(kind) or {}).get("memory")
    return int(parse_quantity(memory).value) if memory else None


def targets() -> list[str]:
    """Targets (``<service>-<environment>[-<region>]``) with local state."""
    root = state_root()
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.is_dir() else []


def target_state(key: str) -> dict[str, Any]:
    return json.loads((state_root() / key / "state.json").read_text())


def down(key: str) -> dict[str, Any]:
    """Stop a target found in the state folder (no settings needed)."""
    data = target_state(key)
    target = Target(service=data.get("service", key), environment=data.get("environment", ""), region=data.get("region"))
    platform = LocalPlatform({"type": "local", "command": []}, target)
    platform.state = LocalState(state_root() / key)
    return platform.down()
