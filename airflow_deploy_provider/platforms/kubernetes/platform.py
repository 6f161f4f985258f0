"""Kubernetes through the cncf.kubernetes provider's hooks (``platform.type: kubernetes``).

Objects, for a service ``checkout`` in namespace ``production`` (every name can be set in config):

* Deployment ``checkout``: the stable version (blue in blue-green); Deployment ``checkout-canary``: the new
  version while it is being introduced (green in blue-green). Pods carry ``app: checkout``,
  ``track: stable|canary`` and the version as a label; Deployments carry the exact version in the
  ``deploy.airflow.apache.org/version`` annotation.
* Services ``checkout-stable`` and ``checkout-canary`` select each track (backends of the HTTPRoute or
  VirtualService, and the addresses health checks use); Service ``checkout`` selects both tracks (the
  ``replicas`` router) or one of them (blue-green, where the switch flips its selector).
* Maintenance mode (Gateway API with ``router.maintenanceService``): every rule of the HTTPRoute sends its
  requests to the maintenance Service (with a ``Retry-After`` response header); the rules it replaced are kept
  in the route's ``deploy.airflow.apache.org/maintenance`` annotation and put back on leaving. Probes reach the
  pods directly, so they keep passing.

Every method converges: it reads what is there and changes only what differs, so a retried task does not
apply anything twice.
"""

from __future__ import annotations

import copy
import json
import time
from functools import cached_property
from typing import Any

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
from airflow_deploy_provider.platforms.kubernetes.api import KubeApi
from airflow_deploy_provider.platforms.kubernetes.rollout import (
    PREFIX,
    VERSION_ANNOTATION,
    VERSION_LABEL,
    label_value,
    rollout_decision,
)
from airflow_deploy_provider.platforms.kubernetes.routers import (
    MAINTENANCE_ANNOTATION,
    ROUTERS,
    SelectorSwitch,
    TrafficRouter,
)

REPLICAS_ANNOTATION = f"{PREFIX}/replicas"  # the configured total, kept while routers move replicas around
HPA_RANGE_ANNOTATION = f"{PREFIX}/paused-range"  # the HPA's own min/max while autoscaling is paused
MARKER_ANNOTATION = f"{PREFIX}/deployment-started"
MANAGED_BY = {"app.kubernetes.io/managed-by": "airflow-deploy-provider"}
# Server-set fields dropped from manifests kept in snapshots, so they can be applied again.
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "selfLink")


class KubernetesPlatform(DeploymentPlatform):
    """
    Deploys to a Kubernetes namespace: one Deployment per role, Services per track, and a traffic router
    (Gateway API HTTPRoute, Istio VirtualService, NGINX canary Ingress or the replica ratio); blue-green
    switches a Service's selector.

    Settings (``platform`` in ``service.yaml``): ``connection`` (a Kubernetes connection), ``namespace``,
    ``deployment``, ``container``, ``container_port``, ``service``, ``router``, ``autoscaler``,
    ``config_maps``, ``secrets``, ``labels``, ``endpoints``; the factory adds ``strategy`` (the environment's).
    """

    type = "kubernetes"

    def __init__(self, settings: dict[str, Any], target: Target):
        super().__init__(settings, target)
        svc = target.service
        self.conn_id: str = settings.get("connection") or "kubernetes_default"
        self.namespace: str = settings.get("namespace") or target.environment
        self.name: str = settings.get("deployment") or svc
        self.canary_name = f"{self.name}-canary"
        self.container: str = settings.get("container") or svc
        self.port = int(settings.get("container_port") or 8080)
        self.service_name: str = settings.get("service") or svc
        router = settings.get("router") or {}
        self.router_type: str = router.get("type") or "replicas"
        self.router_name: str = router.get("name") or svc
        self.stable_service: str = router.get("stable_service") or f"{svc}-stable"
        self.canary_service: str = router.get("canary_service") or f"{svc}-canary"
        self.maintenance_service: str | None = router.get("maintenance_service")
        self.autoscaler: str = settings.get("autoscaler") or self.name
        self.bluegreen = settings.get("strategy") == "bluegreen"

    # ------------------------------------------------------------------------------------------ clients

    @cached_property
    def kube(self) -> KubeApi:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubeApi(KubernetesHook(conn_id=self.conn_id).api_client, self.namespace)

    @cached_property
    def router(self) -> TrafficRouter:
        if self.bluegreen:
            return SelectorSwitch(self)
        return ROUTERS[self.router_type](self)

    # ------------------------------------------------------------------------------------------ naming

    def deployment_name(self, role: Role) -> str:
        return self.name if role == "stable" else self.canary_name

    def selector(self) -> dict[str, str]:
        return {"app": self.target.service}

    def labels(self, track: str | None = None) -> dict[str, str]:
        out = {**(self.settings.get("labels") or {}), **MANAGED_BY, **self.selector()}
        return out | ({"track": track} if track else {})

    def desired_replicas(self) -> int:
        """The configured replica count of the service, which the ``replicas`` router splits between tracks."""
        for name in (self.name, self.canary_name):  # stable's count; the canary's on a first deployment
            dep = self.kube.get("deployment", name)
            value = _annotations(dep).get(REPLICAS_ANNOTATION)
            if value:
                return int(value)
        stable = self.kube.get("deployment", self.name)
        return int(((stable or {}).get("spec") or {}).get("replicas") or 1)

    # ------------------------------------------------------------------------------------------ objects

    def ensure_service(self, name: str, track: str | None) -> None:
        """Create a Service selecting ``track`` (both tracks for ``None``) unless one exists: an existing
        Service belongs to whoever made it and is left as it is."""
        if self.kube.get("service", name) is not None:
            return
        selector = self.selector() | ({"track": track} if track else {})
        self.kube.create("service", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.namespace, "labels": self.labels()},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": self.port}]},
        })

    def _ensure_services(self) -> None:
        self.ensure_service(self.stable_service, "stable")
        self.ensure_service(self.canary_service, "canary")
        if self.bluegreen:
            self.ensure_service(self.service_name, "stable")
        elif self.router_type == "replicas":
            self.ensure_service(self.service_name, None)

    def _apply_config(self) -> list[str]:
        """Apply the service's ConfigMaps and Secrets; Secret values are read here, masked in logs, and never
        written anywhere but the Secret."""
        applied = []
        for cm in self.settings.get("config_maps") or []:
            self.kube.upsert("configmap", cm["name"], {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": cm["name"], "namespace": self.namespace, "labels": self.labels()},
                "data": dict(cm.get("data") or {}),
            })
            applied.append(f"ConfigMap/{cm['name']}")
        for secret in self.settings.get("secrets") or []:
            data = {key: secret_value(source) for key, source in (secret.get("data") or {}).items()}
            self.kube.upsert("secret", secret["name"], {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": secret["name"], "namespace": self.namespace, "labels": self.labels()},
                "stringData": data,
            })
            applied.append(f"Secret/{secret['name']}")
        return applied

    def _container(self, spec: WorkloadSpec, base: dict[str, Any] | None) -> dict[str, Any]:
        container = copy.deepcopy(base) if base else {"name": self.container,
                                                      "ports": [{"name": "http", "containerPort": self.port}]}
        container["image"] = spec.image
        if spec.resources:
            container["resources"] = {k: v for k, v in spec.resources.items() if k in ("limits", "requests")}
        hc = spec.health_check
        container["readinessProbe"] = {
            "httpGet": {"path": hc.path, "port": self.port}, "initialDelaySeconds": int(hc.initial_delay),
            "periodSeconds": max(1, int(hc.interval)), "timeoutSeconds": max(1, int(hc.timeout)),
            "failureThreshold": hc.failure_threshold,
        }
        env = {e.get("name"): e for e in container.get("env") or []}
        for key, value in {"DEPLOY_VERSION": spec.version, **spec.env}.items():
            env[key] = {"name": key, "value": value}
        container["env"] = list(env.values())
        return container

    def _template(self, spec: WorkloadSpec, track: str, base: dict[str, Any] | None) -> dict[str, Any]:
        """The pod template of ``spec``: ``base`` (an existing template) with this version's image,
        resources, probe and labels."""
        template = copy.deepcopy(base) if base else {"metadata": {}, "spec": {"containers": []}}
        meta = template.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **self.labels(track), VERSION_LABEL: label_value(spec.version)}
        meta.setdefault("annotations", {})[VERSION_ANNOTATION] = spec.version
        containers = template.setdefault("spec", {}).setdefault("containers", [])
        index = next((i for i, c in enumerate(containers) if c.get("name") == self.container), None)
        if index is None and len(containers) == 1 and base:
            index = 0  # an existing Deployment whose only container has another name
        if index is None:
            containers.append(self._container(spec, None))
        else:
            containers[index] = self._container(spec, containers[index])
        return template

    def _strategy(self, spec: WorkloadSpec) -> dict[str, Any]:
        if spec.strategy == "recreate":
            return {"type": "Recreate", "rollingUpdate": None}
        rolling = spec.rolling or {}
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": _int_or_percent(rolling.get("max_surge", "25%")),
                                                           "maxUnavailable": _int_or_percent(
                                                               rolling.get("max_unavailable", 0))}}

    def _previous_template(self, version: str) -> dict[str, Any] | None:
        """The pod template a version last ran with, from the stable Deployment's ReplicaSets: going back to a
        version restores its whole template, like ``kubectl rollout undo``."""
        found = []
        for rs in self.kube.list("replicaset", self.selector() | {"track": "stable"}):
            template = (rs.get("spec") or {}).get("template") or {}
            if _annotations(template).get(VERSION_ANNOTATION) == version:
                revision = int(_annotations(rs).get("deployment.kubernetes.io/revision") or 0)
                found.append((revision, template))
        if not found:
            return None
        template = copy.deepcopy(max(found, key=lambda f: f[0])[1])
        (template.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
        return template

    def _deployment_body(self, name: str, track: str, spec: WorkloadSpec, replicas: int,
                         template: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.namespace, "labels": self.labels(track),
                         "annotations": {VERSION_ANNOTATION: spec.version, REPLICAS_ANNOTATION: str(spec.replicas)}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": self.selector() | {"track": track}},
                     "progressDeadlineSeconds": max(1, int(spec.progress_deadline)),
                     "strategy": {k: v for k, v in self._strategy(spec).items() if v is not None},
                     "template": template},
        }

    # --------------------------------------------------------------------------------- the version lifecycle

    def deploy(self, spec: WorkloadSpec, role: Role) -> None:
        self._apply_config()
        self._ensure_services()
        if role == "stable":
            self._deploy_stable(spec)
        else:
            self._deploy_canary(spec)

    def _deploy_stable(self, spec: WorkloadSpec) -> None:
        current = self.kube.get("deployment", self.name)
        base = self._previous_template(spec.version) if current is not None else None
        if current is not None and base is None:
            base = (current.get("spec") or {}).get("template")
        template = self._template(spec, "stable", base)
        if current is None:
            self.kube.create("deployment", self._deployment_body(self.name, "stable", spec, spec.replicas, template))
            return
        self.kube.patch("deployment", self.name, {
            "metadata": {"annotations": {VERSION_ANNOTATION: spec.version, REPLICAS_ANNOTATION: str(spec.replicas)}},
            "spec": {"replicas": spec.replicas, "progressDeadlineSeconds": max(1, int(spec.progress_deadline)),
                     "strategy": self._strategy(spec), "template": template},
        })

    def _deploy_canary(self, spec: WorkloadSpec) -> None:
        stable = self.kube.get("deployment", self.name)
        current = self.kube.get("deployment", self.canary_name)
        if current is None and self.router.read()[0] != 0:
            self.router.set(0)  # a leftover weight must not send traffic to pods that are not under watch yet
        base = ((stable or {}).get("spec") or {}).get("template")
        template = self._template(spec, "canary", base)
        # Behind a shared Service the canary's share is its share of the pods: start with one.
        replicas = min(1, spec.replicas) if self.router_type == "replicas" and not self.bluegreen and stable \
            else spec.replicas
        if current is None:
            self.kube.create("deployment", self._deployment_body(self.canary_name, "canary", spec, replicas, template))
            return
        if _annotations(current).get(VERSION_ANNOTATION) != spec.version:
            self.router.set(0)  # another canary version: out of traffic before it is replaced
        self.kube.patch("deployment", self.canary_name, {
            "metadata": {"annotations": {VERSION_ANNOTATION: spec.version, REPLICAS_ANNOTATION: str(spec.replicas)}},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": max(1, int(spec.progress_deadline)),
                     "template": template},
        })

    def _pods(self, deployment: dict[str, Any] | None) -> list[dict[str, Any]]:
        if deployment is None:
            return []
        match = (((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
        return self.kube.list("pod", match)

    def rollout_status(self, role: Role) -> RolloutStatus:
        deployment = self.kube.get("deployment", self.deployment_name(role))
        return rollout_decision(role, deployment, self._pods(deployment))

    async def async_rollout_status(self, role: Role) -> RolloutStatus:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client as aclient

        hook = self.__dict__.get("_async_hook")
        if hook is None:
            hook = self.__dict__["_async_hook"] = AsyncKubernetesHook(conn_id=self.conn_id)
        async with hook.get_conn() as api:
            try:
                response = await aclient.AppsV1Api(api).read_namespaced_deployment(
                    self.deployment_name(role), self.namespace, _preload_content=False)
                deployment = json.loads(await response.read())
            except aclient.ApiException as exc:
                if exc.status != 404:
                    raise
                return rollout_decision(role, None, [])
            match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            response = await aclient.CoreV1Api(api).list_namespaced_pod(
                self.namespace, label_selector=",".join(f"{k}={v}" for k, v in match.items()) or None,
                _preload_content=False)
            items = json.loads(await response.read()).get("items") or []
        items = [p for p in items if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v
                                         for k, v in match.items())]
        return rollout_decision(role, deployment, items)

    def set_traffic(self, canary_weight: int) -> TrafficSplit:
        if not 0 <= canary_weight <= 100:
            raise PlatformError(f"canary weight must be 0-100, not {canary_weight}")
        if canary_weight and self.kube.get("deployment", self.canary_name) is None:
            raise PlatformError(f"no canary Deployment {self.canary_name!r} in {self.namespace!r} to send traffic to",
                                reason="NotDeployed")
        if self.kube.get("deployment", self.name) is None and self.kube.get("deployment", self.canary_name):
            canary_weight = 100  # first deployment: there is no stable version to share traffic with
        self.router.set(canary_weight)
        return self.traffic()

    def traffic(self) -> TrafficSplit:
        stable = self.kube.get("deployment", self.name)
        canary = self.kube.get("deployment", self.canary_name)
        weight, granularity = self.router.read()
        return TrafficSplit(stable_version=_annotations(stable).get(VERSION_ANNOTATION) if stable else None,
                            canary_version=_annotations(canary).get(VERSION_ANNOTATION) if canary else None,
                            canary_weight=weight, granularity=granularity)

    def promote(self) -> bool:
        canary = self.kube.get("deployment", self.canary_name)
        if canary is None:
            return True  # already promoted (retry)
        version = _annotations(canary).get(VERSION_ANNOTATION) or ""
        total = self.desired_replicas()
        template = copy.deepcopy((canary.get("spec") or {}).get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})["track"] = "stable"
        stable = self.kube.get("deployment", self.name)
        annotations = {VERSION_ANNOTATION: version, REPLICAS_ANNOTATION: str(total)}
        if stable is None:
            body = copy.deepcopy(canary)
            body["metadata"] = {"name": self.name, "namespace": self.namespace, "labels": self.labels("stable"),
                                "annotations": annotations}
            body["spec"] = {**body["spec"], "replicas": total, "template": template,
                            "selector": {"matchLabels": self.selector() | {"track": "stable"}}}
            body.pop("status", None)
            self.kube.create("deployment", body)
            return False
        status = rollout_decision("stable", stable, [])
        if status.version == version and status.done and stable["spec"].get("replicas") == total:
            self.complete_promotion()
            return True
        self.kube.patch("deployment", self.name, {"metadata": {"annotations": annotations},
                                                  "spec": {"replicas": total, "template": template}})
        return False

    def complete_promotion(self) -> None:
        # Stable runs the new version now: traffic goes back to it, then the canary goes away.
        self.router.set(0)
        self.router.retire()
        self.kube.delete("deployment", self.canary_name)

    def abort(self) -> None:
        if self.kube.get("deployment", self.name) is not None or self.bluegreen:
            try:
                self.router.set(0)
            except PlatformError as exc:
                if exc.reason != "RouterNotFound":
                    raise
                # No route object: nothing can be sending traffic to the canary through it.
        self.router.retire()
        self.kube.delete("deployment", self.canary_name)

    def scale(self, role: Role, replicas: int) -> None:
        name = self.deployment_name(role)
        if self.kube.get("deployment", name) is None:
            return  # nothing runs in this role (for example before the first deployment)
        self.kube.scale(name, replicas)
        self.kube.patch("deployment", name, {"metadata": {"annotations": {REPLICAS_ANNOTATION: str(replicas)}}})

    # ------------------------------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        stable = self.kube.get("deployment", self.name)
        canary = self.kube.get("deployment", self.canary_name)
        services = [s for s in (self.kube.get("service", n) for n in
                                dict.fromkeys((self.service_name, self.stable_service, self.canary_service))) if s]
        config_maps = [c for c in (self.kube.get("configmap", cm["name"])
                                   for cm in self.settings.get("config_maps") or []) if c]
        hpa = self.kube.get("hpa", self.autoscaler)

        def role(dep: dict[str, Any] | None) -> dict[str, Any] | None:
            if dep is None:
                return None
            return {"version": _annotations(dep).get(VERSION_ANNOTATION),
                    "replicas": (dep.get("spec") or {}).get("replicas")}

        return {
            "platform": self.type, "namespace": self.namespace, "stable": role(stable), "canary": role(canary),
            "traffic": self.traffic().to_dict(),
            "manifests": {"deployment": _manifest(stable), "services": [_manifest(s) for s in services],
                          "hpa": _manifest(hpa), "config_maps": [_manifest(c) for c in config_maps]},
        }

    def restore(self, snapshot: dict[str, Any]) -> bool:
        """Put back the snapshot's manifests (the Deployment's template and replicas, Service selectors, the
        HPA's range, ConfigMap data) after taking the canary out. Returns whether the stable rollout is done;
        otherwise the caller waits for ``rollout_status("stable")``."""
        self.abort()
        manifests = snapshot.get("manifests") or {}
        for svc in manifests.get("services") or []:
            name = svc["metadata"]["name"]
            if self.kube.get("service", name) is None:
                self.kube.create("service", svc)
            else:
                self.kube.patch("service", name, {"spec": {"selector": svc["spec"].get("selector")}})
        for cm in manifests.get("config_maps") or []:
            self.kube.upsert("configmap", cm["metadata"]["name"], cm)
        hpa = manifests.get("hpa")
        if hpa is not None and self.kube.get("hpa", hpa["metadata"]["name"]) is not None:
            self.kube.patch("hpa", hpa["metadata"]["name"], {
                "metadata": {"annotations": {HPA_RANGE_ANNOTATION: None}},
                "spec": {k: hpa["spec"][k] for k in ("minReplicas", "maxReplicas") if k in hpa["spec"]}})
        deployment = manifests.get("deployment")
        if deployment is None:
            self.kube.delete("deployment", self.name)  # nothing ran before this rollout
            return True
        version = _annotations(deployment).get(VERSION_ANNOTATION)
        current = self.kube.get("deployment", self.name)
        if current is None:
            self.kube.create("deployment", deployment)
            return False
        if _annotations(current).get(VERSION_ANNOTATION) == version and rollout_decision("stable", current, []).done:
            return True
        spec = deployment.get("spec") or {}
        self.kube.patch("deployment", self.name, {
            "metadata": {"annotations": {k: v for k, v in _annotations(deployment).items() if k.startswith(PREFIX)}},
            "spec": {k: spec[k] for k in ("replicas", "template", "strategy", "progressDeadlineSeconds") if k in spec},
        })
        return False

    # ------------------------------------------------------------------------------------------ maintenance

    @classmethod
    def maintenance_support(cls, settings: dict[str, Any]) -> str | None:
        router = settings.get("router") or {}
        if (router.get("type") or "replicas") != "gateway-api" or not router.get("maintenance_service"):
            return ("maintenance mode on Kubernetes sends the HTTPRoute's traffic to a maintenance Service: it needs "
                    "platform.router.type gateway-api and platform.router.maintenanceService")
        return None

    def set_maintenance(self, enabled: bool, message: str = "", retry_after: int = 300) -> MaintenanceState:
        if self.maintenance_support(self.settings):
            return super().set_maintenance(enabled, message, retry_after)
        route = self.kube.get("httproute", self.router_name)
        if route is None:
            raise PlatformError(f"HTTPRoute {self.router_name!r} not found in namespace {self.namespace!r}",
                                reason="RouterNotFound")
        saved = _annotations(route).get(MAINTENANCE_ANNOTATION)
        if not enabled:
            if saved:  # the rules it replaced go back, annotation removed, in one patch
                self.kube.patch("httproute", self.router_name, {
                    "metadata": {"annotations": {MAINTENANCE_ANNOTATION: None}},
                    "spec": {"rules": json.loads(saved)["rules"]}})
            return self.maintenance()
        rules = json.loads(saved)["rules"] if saved else (route.get("spec") or {}).get("rules") or []
        if not rules:
            raise PlatformError(f"HTTPRoute {self.router_name!r} has no rules", reason="RouterNotFound")
        keep = json.loads(saved) if saved else {"rules": rules, "since": time.time()}
        keep["message"] = message
        wanted = {"metadata": {"annotations": {MAINTENANCE_ANNOTATION: json.dumps(keep)}},
                  "spec": {"rules": [self._maintenance_rule(rule, retry_after) for rule in rules]}}
        if saved != wanted["metadata"]["annotations"][MAINTENANCE_ANNOTATION] or \
                (route.get("spec") or {}).get("rules") != wanted["spec"]["rules"]:  # no write on a retry
            self.kube.patch("httproute", self.router_name, wanted)
        return self.maintenance()

    def _maintenance_rule(self, rule: dict[str, Any], retry_after: int) -> dict[str, Any]:
        """A rule of the route with every request sent to the maintenance Service (on the port the route's first
        backend uses), and ``Retry-After`` set on the responses."""
        refs = rule.get("backendRefs") or [{}]
        out = copy.deepcopy({k: v for k, v in rule.items() if k != "backendRefs"})
        out["backendRefs"] = [{"name": self.maintenance_service, "port": refs[0].get("port", 80), "weight": 1}]
        filters = out.setdefault("filters", [])
        modifier = next((f for f in filters if f.get("type") == "ResponseHeaderModifier"), None)
        if modifier is None:  # one filter of this type per rule
            modifier = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {}}
            filters.append(modifier)
        headers = modifier["responseHeaderModifier"].setdefault("set", [])
        headers[:] = [h for h in headers if h.get("name", "").lower() != "retry-after"] + [
            {"name": "Retry-After", "value": str(int(retry_after))}]
        return out

    def maintenance(self) -> MaintenanceState:
        if self.maintenance_support(self.settings):
            return MaintenanceState(enabled=False)
        route = self.kube.get("httproute", self.router_name)
        saved = _annotations(route).get(MAINTENANCE_ANNOTATION)
        if not saved:
            return MaintenanceState(enabled=False, detail=f"HTTPRoute {self.router_name!r} routes to the service")
        kept = json.loads(saved)
        return MaintenanceState(enabled=True, message=kept.get("message") or "", since=kept.get("since"),
                                detail=f"HTTPRoute {self.router_name!r} sends every request to Service "
                                       f"{self.maintenance_service!r}")

    # ------------------------------------------------------------------------------------------ the rest

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace, "router": self.router_type if not self.bluegreen
                               else "service-selector", "traffic": self.traffic().to_dict(), "resources": {}}
        usage = {m["metadata"]["name"]: m for m in self.kube.pod_metrics()}
        for role in ("stable", "canary"):
            dep = self.kube.get("deployment", self.deployment_name(role))  # type: ignore[arg-type]
            if dep is None:
                out[role] = None
                continue
            st = dep.get("status") or {}
            out[role] = {"deployment": self.deployment_name(role), "version": _annotations(dep).get(VERSION_ANNOTATION),  # type: ignore[arg-type]
                         "replicas": (dep.get("spec") or {}).get("replicas"), "ready": st.get("readyReplicas", 0)}
            out["resources"][role] = [_pod_usage(pod, usage.get(pod["metadata"]["name"])) for pod in self._pods(dep)]
        return out

    def endpoint(self, role: Role | None = None) -> str:
        configured = (self.settings.get("endpoints") or {}).get({None: "live"}.get(role, role))  # type: ignore[arg-type]
        if configured:
            return configured.rstrip("/")
        name = {None: self.service_name if self.router_type == "replicas" or self.bluegreen else self.stable_service,
                "stable": self.stable_service, "canary": self.canary_service}[role]
        svc = self.kube.get("service", name)
        port = (((svc or {}).get("spec") or {}).get("ports") or [{"port": 80}])[0].get("port", 80)
        return f"http://{name}.{self.namespace}.svc.cluster.local:{port}"

    def set_autoscaling(self, enabled: bool) -> str:
        hpa = self.kube.get("hpa", self.autoscaler)
        if hpa is None:
            return f"no HorizontalPodAutoscaler {self.autoscaler!r} in {self.namespace!r}: nothing to " \
                   f"{'re-enable' if enabled else 'disable'}"
        spec = hpa.get("spec") or {}
        saved = _annotations(hpa).get(HPA_RANGE_ANNOTATION)
        if not enabled:
            if saved:
                return f"HorizontalPodAutoscaler {self.autoscaler!r} already paused at {spec.get('maxReplicas')}"
            stable = self.kube.get("deployment", self.name)
            pin = int(((stable or {}).get("spec") or {}).get("replicas") or spec.get("minReplicas") or 1)
            original = {"minReplicas": spec.get("minReplicas", 1), "maxReplicas": spec.get("maxReplicas")}
            # An HPA cannot be switched off; pinning min = max keeps it from resizing the rollout.
            self.kube.patch("hpa", self.autoscaler, {"metadata": {"annotations": {HPA_RANGE_ANNOTATION: json.dumps(original)}},
                                                     "spec": {"minReplicas": pin, "maxReplicas": pin}})
            return f"HorizontalPodAutoscaler {self.autoscaler!r} paused: pinned to {pin} replica(s) " \
                   f"(was {original['minReplicas']}-{original['maxReplicas']})"
        if not saved:
            return f"HorizontalPodAutoscaler {self.autoscaler!r} is not paused: nothing to re-enable"
        original = json.loads(saved)
        self.kube.patch("hpa", self.autoscaler, {"metadata": {"annotations": {HPA_RANGE_ANNOTATION: None}},
                                                 "spec": original})
        return f"HorizontalPodAutoscaler {self.autoscaler!r} re-enabled: " \
               f"{original['minReplicas']}-{original['maxReplicas']} replicas"

    def annotate(self, marker: dict[str, Any]) -> str:
        if self.kube.get("deployment", self.name) is None:
            return f"no Deployment {self.name!r} yet: marker recorded in the ledger only"
        self.kube.patch("deployment", self.name, {"metadata": {"annotations": {MARKER_ANNOTATION: json.dumps(marker)}}})
        return f"annotation {MARKER_ANNOTATION} set on Deployment {self.name!r}"

    def cleanup(self, keep: int) -> str:
        if self.kube.get("deployment", self.name) is None:
            return "nothing deployed"
        self.kube.patch("deployment", self.name, {"spec": {"revisionHistoryLimit": keep}})
        return f"Deployment {self.name!r} keeps its last {keep} revisions (revisionHistoryLimit)"

    def logs(self, role: Role, lines: int = 200) -> list[str]:
        out: list[str] = []
        for pod in self._pods(self.kube.get("deployment", self.deployment_name(role))):
            name = pod["metadata"]["name"]
            text = self.kube.pod_log(name, self.container, lines) or ""
            out += [f"{name}: {line}" for line in text.splitlines()[-lines:]]
        return out

    def capacity(self, spec: WorkloadSpec) -> dict[str, Any]:
        requests = (spec.resources or {}).get("requests") or (spec.resources or {}).get("limits") or {}
        quotas = self.kube.list("resourcequota")
        if not quotas:
            return {"fits": True, "detail": f"no ResourceQuota in namespace {self.namespace!r}; the scheduler decides "
                                            "(an Unschedulable pod fails the rollout with its reason)"}
        short = []
        for quota in quotas:
            hard = (quota.get("spec") or {}).get("hard") or {}
            used = (quota.get("status") or {}).get("used") or {}
            for resource, amount in requests.items():
                for key in (f"requests.{resource}", resource):
                    if key in hard:
                        need = _quantity(amount) * spec.replicas
                        free = _quantity(hard[key]) - _quantity(used.get(key, "0"))
                        if need > free:
                            short.append(f"{quota['metadata']['name']}: {key} needs {need:g}, {free:g} free")
        if short:
            return {"fits": False, "detail": "; ".join(short)}
        return {"fits": True, "detail": f"{spec.replicas} replica(s) fit the ResourceQuotas of {self.namespace!r}"}


# ---------------------------------------------------------------------------------------------- helpers


def secret_value(source: dict[str, Any]) -> str:
    """Read a Secret value from an Airflow connection field or variable, and mask it in every log."""
    from airflow.sdk import Connection, Variable
    from airflow.sdk.log import mask_secret

    if source.get("variable"):
        value = Variable.get(source["variable"])
    else:
        conn = Connection.get(source["connection"])
        field = source.get("field") or "password"
        value = conn.get_uri() if field == "uri" else getattr(conn, field)
        if field == "extra" and not isinstance(value, str):
            value = json.dumps(value)
    if value is None:
        raise PlatformError(f"secret source {({k: v for k, v in source.items() if v})} has no value",
                            reason="CreateContainerConfigError")
    value = str(value)
    mask_secret(value)
    return value


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _manifest(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    spec = out.get("spec") or {}
    if out.get("kind") == "Service":
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    return out


def _int_or_percent(value: Any) -> int | str:
    text = str(value)
    return text if text.endswith("%") else int(text)


_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(text: Any) -> float:
    """A Kubernetes quantity (``500m``, ``1Gi``, ``2``) as a number."""
    value = str(text).strip()
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * _UNITS[suffix]
    return float(value)


def _pod_usage(pod: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any]:
    limit = None
    for c in (pod.get("spec") or {}).get("containers") or []:
        memory = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        if memory:
            limit = (limit or 0) + _quantity(memory)
    entry: dict[str, Any] = {"pod": pod["metadata"]["name"], "memory_limit": limit}
    if metrics:
        used = sum(_quantity((c.get("usage") or {}).get("memory", "0")) for c in metrics.get("containers") or [])
        entry.update(memory=used, memory_share=(used / limit) if limit else None)
    return entry
