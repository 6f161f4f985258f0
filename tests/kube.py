"""A Kubernetes API server for tests (kmock) and a stand-in for the controllers a real cluster runs.

``KubeCluster`` serves the Kubernetes API over HTTP on loopback from a thread; the cncf.kubernetes hooks reach
it through a kubeconfig in an Airflow connection, as they would reach a real cluster. kmock stores objects and
their history but runs no controllers, so ``DeploymentController`` plays the Deployment controller and the
kubelet: it observes each new generation of a Deployment, creates its ReplicaSet and pods, and reports status
(ready after a delay, or stuck with a reason, or past its progress deadline).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import threading
import time
from typing import Any

import kmock
from kmock._internal import enums

from tests.servers import RoleNetwork

RESOURCES = [
    ("apps/v1/deployments", "Deployment"), ("apps/v1/replicasets", "ReplicaSet"), ("v1/services", "Service"),
    ("v1/pods", "Pod"), ("v1/configmaps", "ConfigMap"), ("v1/secrets", "Secret"),
    ("v1/resourcequotas", "ResourceQuota"), ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("gateway.networking.k8s.io/v1/httproutes", "HTTPRoute"), ("networking.istio.io/v1/virtualservices", "VirtualService"),
    ("networking.k8s.io/v1/ingresses", "Ingress"),
]
VERSION = "deploy.airflow.apache.org/version"


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock plus the API server's bookkeeping the rollout logic relies on: ``metadata.generation`` goes up
    when a Deployment's spec changes (kmock keeps none), and ``pods/<name>/log`` answers with text (the lines
    in ``pod_logs`` for pods whose name starts with a key, else a healthy start-up log)."""

    pod_logs: dict[str, str]

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and getattr(request.resource, "plural", None) == "pods" and \
                request.subresource == "log":
            import aiohttp.web

            text = next((v for k, v in self.pod_logs.items() if (request.name or "").startswith(k)),
                        "INFO starting\nINFO listening on :8080\n")
            return aiohttp.web.Response(text=text, content_type="text/plain")
        key = None
        before = None
        resource = request.resource
        if resource is not None and getattr(resource, "plural", None) == "deployments" and \
                request.action in (enums.action.CREATE, enums.action.UPDATE):
            name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
            key = (resource, request.namespace, name)
            async with self._lock:
                if key in self._objects and not self._objects[key].deleted:
                    before = copy.deepcopy(self._objects[key].raw.get("spec"))
        response = await super()._handle(request)
        if key is not None:
            async with self._lock:
                obj = self._objects[key] if key in self._objects else None  # noqa: SIM401 - kmock store has no .get()
                if obj is not None and not obj.deleted and (before is None or obj.raw.get("spec") != before):
                    generation = int((obj.raw.get("metadata") or {}).get("generation") or 0) + 1
                    obj.patch({"metadata": {"generation": generation}})
        return response


class KubeCluster:
    """A kmock API server on a free loopback port, running in a daemon thread."""

    def __init__(self) -> None:
        self.emulator: ApiServerEmulator | None = None
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True, name="kmock")
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("kmock did not start")

    async def _serve(self) -> None:
        async with ApiServerEmulator() as emulator, kmock.Server(emulator) as server:
            for path, kind in RESOURCES:
                emulator.resources[path] = {"kind": kind, "namespaced": True}
            emulator.pod_logs = {}
            self.emulator, self.port = emulator, server.port
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "users": [{"name": "test", "user": {"token": "not-a-secret"}}]}

    def connection_uri(self) -> str:
        """An Airflow connection (JSON form) for the cncf.kubernetes hooks."""
        return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(self.kubeconfig())}})

    def client(self) -> Any:
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

    def history(self, resource: str, namespace: str, name: str) -> list[dict[str, Any] | None]:
        """Every version an object went through (``None`` where it was deleted), oldest first."""
        assert self.emulator is not None
        obj = self.emulator.objects[resource, namespace, name]
        return [None if v is None else json.loads(json.dumps(dict(v.raw) if hasattr(v, "raw") else dict(v)))
                for v in obj.history]

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class DeploymentController:
    """Plays the Deployment controller and kubelet for some namespaces, in a thread.

    For each new pod template of a Deployment: a ReplicaSet (with a revision) and pods; then, after
    ``ready_after`` seconds, the pods turn ready and the status reports the rollout complete. Versions listed in
    ``failures`` never turn ready: ``"never-ready"`` passes the progress deadline (``ProgressDeadlineExceeded``),
    any other value is a container waiting reason (``ImagePullBackOff``...). A Deployment whose state has not
    changed since the last pass costs one list request: the API server stays fast for the code under test.
    """

    def __init__(self, cluster: KubeCluster, namespaces: str | list[str], ready_after: float = 0.3,
                 failures: dict[str, str] | None = None, interval: float = 0.05) -> None:
        from kubernetes import client

        self.namespaces = [namespaces] if isinstance(namespaces, str) else list(namespaces)
        self.ready_after = ready_after
        self.failures = dict(failures or {})
        self.interval = interval
        self.api = cluster.client()
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.seen: dict[tuple[str, str], tuple[str, float]] = {}  # (ns, deployment) -> (template hash, first seen)
        self.applied: dict[tuple[str, str], Any] = {}  # what the last pass reported, to skip unchanged ones
        self.revisions: dict[tuple[str, str], int] = {}
        self.errors: list[str] = []
        self.loop_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="deployment-controller")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # keep going: a test asserts on outcomes, and reads errors if it must
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def reconcile(self) -> None:
        started = time.monotonic()
        for ns in self.namespaces:
            found = json.loads(self.apps.list_namespaced_deployment(ns, _preload_content=False).data)
            for dep in found.get("items") or []:
                self._reconcile(ns, dep)
        self.loop_times.append(time.monotonic() - started)

    def _reconcile(self, ns: str, dep: dict[str, Any]) -> None:
        meta, spec = dep["metadata"], dep.get("spec") or {}
        name, generation = meta["name"], int(meta.get("generation") or 1)
        template = spec.get("template") or {}
        version = ((template.get("metadata") or {}).get("annotations") or {}).get(VERSION, "")
        desired = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
        pod_hash = hashlib.sha1(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        key = (ns, name)
        seen = self.seen.get(key)
        now = time.monotonic()
        if seen is None or seen[0] != pod_hash:  # a new template: a new ReplicaSet, pods start over
            self.seen[key] = seen = (pod_hash, now)
            self._replicaset(ns, dep, template, pod_hash)
        started = seen[1]
        failure = self.failures.get(version)
        ready = failure is None and now - started >= self.ready_after
        deadline = float(spec.get("progressDeadlineSeconds") or 600)
        timed_out = failure == "never-ready" and now - started >= deadline
        state = (pod_hash, desired, ready, timed_out, generation)
        if self.applied.get(key) == state and (dep.get("status") or {}).get("observedGeneration") == generation:
            return
        self._pods(ns, name, template, pod_hash, desired, ready, failure)
        status: dict[str, Any] = {"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
                                  "readyReplicas": desired if ready else 0, "availableReplicas": desired if ready else 0}
        if ready:
            status["conditions"] = [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
        elif timed_out:
            status["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                     "message": f'ReplicaSet "{name}-{pod_hash}" has timed out progressing.'}]
        else:
            status["conditions"] = [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]
        self.apps.patch_namespaced_deployment_status(name, ns, {"status": status}, _preload_content=False)
        self.applied[key] = state

    def _replicaset(self, ns: str, dep: dict[str, Any], template: dict[str, Any], pod_hash: str) -> None:
        name = dep["metadata"]["name"]
        rs_name = f"{name}-{pod_hash}"
        self.revisions[(ns, name)] = revision = self.revisions.get((ns, name), 0) + 1
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": pod_hash}
        annotations = {"deployment.kubernetes.io/revision": str(revision)}
        body = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "annotations": annotations},
                "spec": {"selector": {"matchLabels": labels}, "template": copy.deepcopy(template) | {"metadata": {
                    **(template.get("metadata") or {}), "labels": labels}}}}
        try:
            self.apps.create_namespaced_replica_set(ns, body, _preload_content=False)
        except Exception:  # the template came back: its ReplicaSet gets the new revision, like the real one
            self.apps.patch_namespaced_replica_set(rs_name, ns, {"metadata": {"annotations": annotations}},
                                                   _preload_content=False)

    def _pods(self, ns: str, name: str, template: dict[str, Any], pod_hash: str, desired: int, ready: bool,
              failure: str | None) -> None:
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": pod_hash}
        wanted = {f"{name}-{pod_hash}-{i}" for i in range(desired)}
        existing = json.loads(self.core.list_namespaced_pod(ns, _preload_content=False).data).get("items") or []
        mine = {p["metadata"]["name"]: p for p in existing if p["metadata"]["name"].rsplit("-", 2)[0] == name}
        for pname in set(mine) - wanted:
            self.core.delete_namespaced_pod(pname, ns, _preload_content=False)
        if failure and failure != "never-ready":
            state = {"waiting": {"reason": failure, "message": f"emulated {failure}"}}
        else:
            state = {"running": {}} if ready else {"waiting": {"reason": "ContainerCreating"}}
        container = ((template.get("spec") or {}).get("containers") or [{"name": "app", "image": "none"}])[0]
        status = {"phase": "Running" if ready else "Pending",
                  "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                  "containerStatuses": [{"name": container["name"], "image": container.get("image", ""),
                                         "imageID": "", "restartCount": 0, "ready": ready, "state": state}]}
        for pname in sorted(wanted):
            if pname not in mine:
                self.core.create_namespaced_pod(ns, {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pname, "namespace": ns, "labels": labels},
                    "spec": copy.deepcopy(template.get("spec") or {}), "status": status}, _preload_content=False)
            elif (mine[pname].get("status") or {}) != status:
                self.core.patch_namespaced_pod_status(pname, ns, {"status": status}, _preload_content=False)


class ClusterNetwork(RoleNetwork):
    """What the worker would reach inside the cluster: the stable and canary Services and the service's
    entry point, answering as the pods of the Deployment behind each would (see ``RoleNetwork``)."""

    def __init__(self, cluster: KubeCluster, namespace: str, deployment: str) -> None:
        from kubernetes import client

        apps = client.AppsV1Api(cluster.client())
        names = {"stable": deployment, "canary": f"{deployment}-canary"}

        def version_of(role: str) -> str | None:
            try:
                dep = apps.read_namespaced_deployment(names[role], namespace)
            except client.ApiException:
                return None
            if not (dep.status and dep.status.ready_replicas):
                return None
            return (dep.metadata.annotations or {}).get(VERSION)

        super().__init__(version_of)