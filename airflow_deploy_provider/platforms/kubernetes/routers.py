"""How traffic moves between the stable and the canary pods on Kubernetes, one class per router.

Each router sets the canary's share and reads it back from the object it changed, so the weight an
operator reports is the weight the cluster has.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from airflow_deploy_provider.platforms.base import PlatformError

if TYPE_CHECKING:
    from airflow_deploy_provider.platforms.kubernetes.platform import KubernetesPlatform

CANARY_ANNOTATION = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
#: On an HTTPRoute in maintenance mode: the rules it had before (JSON), put back on leaving.
MAINTENANCE_ANNOTATION = "deploy.airflow.apache.org/maintenance"


class TrafficRouter:
    """Moves traffic; ``read()`` returns ``(canary percent, granularity in percent)``."""

    def __init__(self, platform: KubernetesPlatform):
        self.p = platform
        self.kube = platform.kube

    def set(self, weight: int) -> None:
        raise NotImplementedError

    def read(self) -> tuple[int, int]:
        raise NotImplementedError

    def retire(self) -> None:
        """Remove router objects that only served the canary (after the weight went to 0)."""

    def describe(self) -> dict[str, Any]:
        return {"router": type(self).__name__}

    def _require(self, kind: str, name: str, what: str) -> dict[str, Any]:
        found = self.kube.get(kind, name)
        if found is None:
            raise PlatformError(f"{what} {name!r} not found in namespace {self.p.namespace!r}: create it with the "
                                "stable Service as a backend (docs/kubernetes.md)", reason="RouterNotFound")
        return found


class GatewayApiRouter(TrafficRouter):
    """Gateway API: the weights of the stable and canary backendRefs in every rule of an HTTPRoute."""

    def set(self, weight: int) -> None:
        route = self._require("httproute", self.p.router_name, "HTTPRoute")
        if MAINTENANCE_ANNOTATION in ((route.get("metadata") or {}).get("annotations") or {}):
            raise PlatformError(f"HTTPRoute {self.p.router_name!r} is in maintenance mode (an incident): leave "
                                "maintenance mode before moving traffic", reason="MaintenanceMode")
        rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
        if not rules:
            raise PlatformError(f"HTTPRoute {self.p.router_name!r} has no rules", reason="RouterNotFound")
        for rule in rules:
            refs = rule.setdefault("backendRefs", [])
            stable = next((r for r in refs if r.get("name") == self.p.stable_service), None)
            if stable is None:
                raise PlatformError(f"HTTPRoute {self.p.router_name!r} has no backendRef to the stable Service "
                                    f"{self.p.stable_service!r}", reason="RouterNotFound")
            canary = next((r for r in refs if r.get("name") == self.p.canary_service), None)
            if canary is None:
                canary = {k: v for k, v in stable.items() if k != "weight"} | {"name": self.p.canary_service}
                refs.append(canary)
            stable["weight"], canary["weight"] = 100 - weight, weight
        if rules != (route.get("spec") or {}).get("rules"):  # no write when nothing changes (retries)
            self.kube.patch("httproute", self.p.router_name, {"spec": {"rules": rules}})

    def read(self) -> tuple[int, int]:
        route = self.kube.get("httproute", self.p.router_name) or {}
        rules = (route.get("spec") or {}).get("rules") or [{}]
        return _share(rules[0].get("backendRefs") or [], lambda r: r.get("name"), self.p.canary_service), 1


class IstioRouter(TrafficRouter):
    """Istio: the weights of the stable and canary destinations in every HTTP route of a VirtualService."""

    def _is(self, route: dict[str, Any], service: str) -> bool:
        host = ((route.get("destination") or {}).get("host") or "")
        return host == service or host.startswith(f"{service}.")

    def set(self, weight: int) -> None:
        vs = self._require("virtualservice", self.p.router_name, "VirtualService")
        http = copy.deepcopy((vs.get("spec") or {}).get("http") or [])
        if not http:
            raise PlatformError(f"VirtualService {self.p.router_name!r} has no http routes", reason="RouterNotFound")
        for entry in http:
            routes = entry.setdefault("route", [])
            stable = next((r for r in routes if self._is(r, self.p.stable_service)), None)
            if stable is None:
                raise PlatformError(f"VirtualService {self.p.router_name!r} does not route to the stable Service "
                                    f"{self.p.stable_service!r}", reason="RouterNotFound")
            canary = next((r for r in routes if self._is(r, self.p.canary_service)), None)
            if canary is None:
                canary = copy.deepcopy(stable)
                canary["destination"]["host"] = stable["destination"]["host"].replace(
                    self.p.stable_service, self.p.canary_service, 1)
                routes.append(canary)
            stable["weight"], canary["weight"] = 100 - weight, weight
        if http != (vs.get("spec") or {}).get("http"):
            self.kube.patch("virtualservice", self.p.router_name, {"spec": {"http": http}})

    def read(self) -> tuple[int, int]:
        vs = self.kube.get("virtualservice", self.p.router_name) or {}
        http = (vs.get("spec") or {}).get("http") or [{}]
        routes = http[0].get("route") or []
        return _share(routes, lambda r: "canary" if self._is(r, self.p.canary_service) else "", "canary"), 1


class NginxRouter(TrafficRouter):
    """NGINX ingress: a canary Ingress (a copy of the stable one, pointing at the canary Service) with the
    ``canary`` and ``canary-weight`` annotations."""

    @property
    def canary_ingress(self) -> str:
        return f"{self.p.router_name}-canary"

    def set(self, weight: int) -> None:
        annotations = {CANARY_ANNOTATION: "true", CANARY_WEIGHT_ANNOTATION: str(weight)}
        existing = self.kube.get("ingress", self.canary_ingress)
        if existing is not None:
            current = (existing.get("metadata") or {}).get("annotations") or {}
            if any(current.get(k) != v for k, v in annotations.items()):
                self.kube.patch("ingress", self.canary_ingress, {"metadata": {"annotations": annotations}})
            return
        stable = self._require("ingress", self.p.router_name, "Ingress")
        spec = _replace_backend(copy.deepcopy(stable.get("spec") or {}), self.p.stable_service, self.p.canary_service)
        self.kube.create("ingress", {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": self.canary_ingress, "namespace": self.p.namespace,
                         "labels": self.p.labels("canary"), "annotations": annotations},
            "spec": spec,
        })

    def read(self) -> tuple[int, int]:
        ingress = self.kube.get("ingress", self.canary_ingress)
        if ingress is None:
            return 0, 1
        ann = (ingress.get("metadata") or {}).get("annotations") or {}
        if ann.get(CANARY_ANNOTATION) != "true":
            return 0, 1
        return int(ann.get(CANARY_WEIGHT_ANNOTATION, "0")), 1

    def retire(self) -> None:
        self.kube.delete("ingress", self.canary_ingress)


class ReplicaRatioRouter(TrafficRouter):
    """No mesh or gateway: one Service selects the stable and the canary pods, so traffic follows the ratio of
    their replicas. The total stays at the configured replica count."""

    def set(self, weight: int) -> None:
        total = self.p.desired_replicas()
        canary = 0 if weight == 0 else max(1, min(total, round(total * weight / 100)))
        stable = total - canary
        for name, replicas in ((self.p.name, stable), (self.p.canary_name, canary)):
            found = self.kube.get("deployment", name)
            if found is not None and (found.get("spec") or {}).get("replicas") != replicas:
                self.kube.scale(name, replicas)

    def read(self) -> tuple[int, int]:
        stable = self.kube.get("deployment", self.p.name)
        canary = self.kube.get("deployment", self.p.canary_name)
        s = int(((stable or {}).get("spec") or {}).get("replicas") or 0)
        c = int(((canary or {}).get("spec") or {}).get("replicas") or 0)
        total = s + c
        return (round(100 * c / total) if total else 0), (math.ceil(100 / total) if total else 100)


class SelectorSwitch(TrafficRouter):
    """Blue-green: the Service's selector points at the stable (blue) or the canary (green) pods."""

    def set(self, weight: int) -> None:
        if weight not in (0, 100):
            raise PlatformError(f"a blue-green switch sends 0% or 100% to green, not {weight}%")
        track = "canary" if weight == 100 else "stable"
        self.p.ensure_service(self.p.service_name, track="stable")
        svc = self.kube.get("service", self.p.service_name) or {}
        if ((svc.get("spec") or {}).get("selector") or {}).get("track") != track:
            self.kube.patch("service", self.p.service_name,
                            {"spec": {"selector": {**self.p.selector(), "track": track}}})

    def read(self) -> tuple[int, int]:
        svc = self.kube.get("service", self.p.service_name) or {}
        track = ((svc.get("spec") or {}).get("selector") or {}).get("track")
        return (100 if track == "canary" else 0), 100


ROUTERS = {"gateway-api": GatewayApiRouter, "istio": IstioRouter, "nginx": NginxRouter,
           "replicas": ReplicaRatioRouter}


def _share(entries: list[dict[str, Any]], key: Any, canary: str) -> int:
    total = sum(int(e.get("weight", 1)) for e in entries)
    mine = sum(int(e.get("weight", 1)) for e in entries if key(e) == canary)
    return round(100 * mine / total) if total else 0


def _replace_backend(node: Any, old: str, new: str) -> Any:
    """Point every ``service.name`` of an Ingress spec at another Service."""
    if isinstance(node, dict):
        if node.get("name") == old and "port" in node:
            node["name"] = new
        for value in node.values():
            _replace_backend(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _replace_backend(value, old, new)
    return node
