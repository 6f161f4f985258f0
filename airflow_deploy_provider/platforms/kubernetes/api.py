"""A small dict-in, dict-out layer over the Kubernetes client that ``KubernetesHook`` provides."""

from __future__ import annotations

import json
from typing import Any

# kind -> (api, group, version, plural) for custom objects, or the client API attribute and method suffix.
CUSTOM = {
    "httproute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "virtualservice": ("networking.istio.io", "v1", "virtualservices"),
}
BUILTIN = {
    "deployment": ("apps", "namespaced_deployment"),
    "service": ("core", "namespaced_service"),
    "configmap": ("core", "namespaced_config_map"),
    "secret": ("core", "namespaced_secret"),
    "pod": ("core", "namespaced_pod"),
    "hpa": ("autoscaling", "namespaced_horizontal_pod_autoscaler"),
    "ingress": ("networking", "namespaced_ingress"),
    "replicaset": ("apps", "namespaced_replica_set"),
    "resourcequota": ("core", "namespaced_resource_quota"),
}
# Built-in kinds take a strategic merge patch (lists of containers merge by name); custom resources only a
# JSON merge patch. The client would otherwise send a dict as "json-patch" and then strategic merge.
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class KubeApi:
    """CRUD on the objects the platform touches, as plain dicts; ``get`` returns ``None`` for 404."""

    def __init__(self, api_client: Any, namespace: str):
        from kubernetes import client

        self.client = api_client
        self.namespace = namespace
        self.apis = {
            "apps": client.AppsV1Api(api_client), "core": client.CoreV1Api(api_client),
            "autoscaling": client.AutoscalingV2Api(api_client), "networking": client.NetworkingV1Api(api_client),
        }
        self.custom = client.CustomObjectsApi(api_client)

    @staticmethod
    def _dict(response: Any) -> dict[str, Any]:
        # Raw JSON (``_preload_content=False``): no client model drops fields it does not know, so snapshots
        # keep whole manifests, and objects the client's models would reject still read.
        if isinstance(response, dict):
            return response
        return json.loads(response.data or b"{}")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client import ApiException

        try:
            if kind in CUSTOM:
                group, version, plural = CUSTOM[kind]
                return self._dict(self.custom.get_namespaced_custom_object(group, version, self.namespace, plural,
                                                                           name, _preload_content=False))
            api, suffix = BUILTIN[kind]
            return self._dict(getattr(self.apis[api], f"read_{suffix}")(name, self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return self._dict(self.custom.create_namespaced_custom_object(group, version, self.namespace, plural,
                                                                          body, _preload_content=False))
        api, suffix = BUILTIN[kind]
        return self._dict(getattr(self.apis[api], f"create_{suffix}")(self.namespace, body, _preload_content=False))

    def patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return self._dict(self.custom.patch_namespaced_custom_object(group, version, self.namespace, plural,
                                                                         name, body, _content_type=MERGE,
                                                                         _preload_content=False))
        api, suffix = BUILTIN[kind]
        return self._dict(getattr(self.apis[api], f"patch_{suffix}")(name, self.namespace, body,
                                                                       _content_type=STRATEGIC, _preload_content=False))

    def delete(self, kind: str, name: str) -> bool:
        from kubernetes.client import ApiException

        try:
            if kind in CUSTOM:
                group, version, plural = CUSTOM[kind]
                self.custom.delete_namespaced_custom_object(group, version, self.namespace, plural, name,
                                                            _preload_content=False)
            else:
                api, suffix = BUILTIN[kind]
                getattr(self.apis[api], f"delete_{suffix}")(name, self.namespace, _preload_content=False)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def upsert(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or patch when it exists: converges whatever was there before."""
        if self.get(kind, name) is None:
            return self.create(kind, body)
        return self.patch(kind, name, body)

    def list(self, kind: str, selector: dict[str, str] | None = None) -> list[dict[str, Any]]:
        selector = selector or {}
        api, suffix = BUILTIN[kind]
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        found = getattr(self.apis[api], f"list_{suffix}")(self.namespace, label_selector=label_selector or None,
                                                            _preload_content=False)
        items = self._dict(found).get("items") or []
        # The selector is applied here again: not every API server (or emulator) filters by labels.
        return [i for i in items if all(((i.get("metadata") or {}).get("labels") or {}).get(k) == v
                                         for k, v in selector.items())]

    def scale(self, name: str, replicas: int) -> None:
        self.apis["apps"].patch_namespaced_deployment_scale(name, self.namespace, {"spec": {"replicas": replicas}},
                                                            _content_type=MERGE, _preload_content=False)

    def pod_log(self, pod: str, container: str | None, lines: int) -> str:
        response = self.apis["core"].read_namespaced_pod_log(pod, self.namespace, container=container,
                                                             tail_lines=lines, _preload_content=False)
        return response.data.decode("utf-8", "replace")

    def pod_metrics(self) -> list[dict[str, Any]]:
        """CPU and memory use of the namespace's pods from metrics-server; empty when it is not installed."""
        from kubernetes.client import ApiException

        try:
            found = self.custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", self.namespace, "pods",
                                                              _preload_content=False)
        except ApiException:
            return []
        return list(self._dict(found).get("items") or [])
