"""The Kubernetes platform against a real HTTP Kubernetes API (kmock), reached through the cncf.kubernetes hooks
and a kubeconfig in an Airflow connection. ``DeploymentController`` plays the cluster's controllers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest

from airflow_deploy_provider.platforms.base import PlatformError, Target, WorkloadSpec
from airflow_deploy_provider.platforms.kubernetes.platform import (
    HPA_RANGE_ANNOTATION,
    MARKER_ANNOTATION,
    KubernetesPlatform,
)
from tests.conftest import wait_ready
from tests.kube import DeploymentController, KubeCluster

_namespaces = itertools.count(1)


@pytest.fixture
def cluster():
    c = KubeCluster()  # one per test: kmock keeps every object's history, and slows down as it grows
    yield c
    c.stop()


@pytest.fixture
def ns(cluster, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_K8S_TEST", cluster.connection_uri())
    return f"ns{next(_namespaces)}"


@pytest.fixture
def controller(cluster, ns):
    ctl = DeploymentController(cluster, ns, ready_after=0.2)
    yield ctl
    ctl.stop()


def make(ns: str, router: str = "gateway-api", strategy: str = "canary", **settings) -> KubernetesPlatform:
    return KubernetesPlatform({"type": "kubernetes", "connection": "k8s_test", "namespace": ns,
                               "router": {"type": router, "name": "checkout"}, "strategy": strategy, **settings},
                              Target("checkout", "production"))


def spec(version: str, replicas: int = 4, **kw) -> WorkloadSpec:
    return WorkloadSpec(version=version, image=f"registry.example.com/shop/checkout:{version}", replicas=replicas,
                        **kw)


def container(p: KubernetesPlatform, name: str) -> dict:
    return p.kube.get("deployment", name)["spec"]["template"]["spec"]["containers"][0]


def route(version: str = "gateway.networking.k8s.io/v1") -> dict:
    return {"apiVersion": version, "kind": "HTTPRoute", "metadata": {"name": "checkout"},
            "spec": {"parentRefs": [{"name": "shop-gateway"}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "backendRefs": [{"name": "checkout-stable", "port": 80}]}]}}


def weights(cluster: KubeCluster, ns: str) -> list[tuple[int, int]]:
    """(stable, canary) weights of every version the HTTPRoute went through."""
    out = []
    for v in cluster.history("gateway.networking.k8s.io/v1/httproutes", ns, "checkout"):
        refs = {r["name"]: r.get("weight") for r in v["spec"]["rules"][0]["backendRefs"]}
        if "checkout-canary" in refs:
            out.append((refs["checkout-stable"], refs["checkout-canary"]))
    return out


def test_deploy_sets_image_replicas_resources_probe_and_config(cluster, ns, controller, monkeypatch, capfd):
    monkeypatch.setenv("AIRFLOW_CONN_CHECKOUT_DB", json.dumps({"conn_type": "postgres", "host": "db",
                                                               "login": "app", "password": "s3cr3t-pw"}))
    monkeypatch.setenv("AIRFLOW_VAR_PAYMENT_KEY", "pk_live_123456")
    p = make(ns, config_maps=[{"name": "checkout-config", "data": {"LOG_LEVEL": "info"}}],
             secrets=[{"name": "checkout-secrets", "data": {
                 "DB_PASSWORD": {"connection": "checkout_db", "field": "password", "variable": None},
                 "PAYMENT_KEY": {"connection": None, "field": "password", "variable": "payment_key"}}}])
    resources = {"limits": {"cpu": "2000m", "memory": "2Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}
    p.deploy(spec("1.0.0", resources=resources), "stable")
    dep = p.kube.get("deployment", "checkout")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.example.com/shop/checkout:1.0.0" and dep["spec"]["replicas"] == 4
    assert c["resources"] == resources
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert dep["metadata"]["annotations"]["deploy.airflow.apache.org/version"] == "1.0.0"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "checkout", "track": "stable"}
    assert p.kube.get("configmap", "checkout-config")["data"] == {"LOG_LEVEL": "info"}
    secret = p.kube.get("secret", "checkout-secrets")
    assert secret["stringData"] == {"DB_PASSWORD": "s3cr3t-pw", "PAYMENT_KEY": "pk_live_123456"}
    assert {s: p.kube.get("service", s)["spec"]["selector"]["track"] for s in ("checkout-stable", "checkout-canary")} \
        == {"checkout-stable": "stable", "checkout-canary": "canary"}
    status = wait_ready(p, "stable", "1.0.0")
    assert (status.ready, status.desired) == (4, 4)
    out, err = capfd.readouterr()
    assert "s3cr3t-pw" not in out + err and "pk_live_123456" not in out + err


def test_redeploying_the_same_version_changes_nothing(cluster, ns, controller):
    p = make(ns)
    p.deploy(spec("1.0.0"), "stable")
    wait_ready(p, "stable", "1.0.0")
    before = len(cluster.history("apps/v1/deployments", ns, "checkout"))
    generation = p.kube.get("deployment", "checkout")["metadata"]["generation"]
    p.deploy(spec("1.0.0"), "stable")  # a retried task
    assert p.kube.get("deployment", "checkout")["metadata"]["generation"] == generation
    assert wait_ready(p, "stable", "1.0.0").done
    assert len(cluster.history("apps/v1/deployments", ns, "checkout")) >= before


def test_recreate_and_rolling_strategies(cluster, ns, controller):
    p = make(ns)
    p.deploy(spec("1.0.0", strategy="recreate"), "stable")
    assert p.kube.get("deployment", "checkout")["spec"]["strategy"]["type"] == "Recreate"
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("1.1.0", strategy="rolling", rolling={"max_surge": "50%", "max_unavailable": "0"}), "stable")
    dep = p.kube.get("deployment", "checkout")
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%",
                                                                                  "maxUnavailable": 0}}
    assert not p.rollout_status("stable").done  # the new generation is not observed/ready yet
    wait_ready(p, "stable", "1.1.0")
    assert container(p, "checkout")["image"].endswith(":1.1.0")


def test_canary_with_gateway_api_weights_promotion_and_cleanup(cluster, ns, controller):
    p = make(ns)
    p.kube.create("httproute", route())
    p.deploy(spec("1.0.0"), "stable")
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("2.0.0"), "canary")
    assert p.kube.get("deployment", "checkout-canary")["spec"]["replicas"] == 4
    wait_ready(p, "canary", "2.0.0")
    for weight in (10, 25, 50, 100):
        split = p.set_traffic(weight)
        assert (split.canary_weight, split.stable_version, split.canary_version) == (weight, "1.0.0", "2.0.0")
    assert p.promote() is False  # stable rolls out 2.0.0 first; traffic stays on the canary meanwhile
    assert container(p, "checkout")["image"].endswith(":2.0.0")
    assert p.traffic().canary_weight == 100
    wait_ready(p, "stable", "2.0.0")
    p.complete_promotion()
    assert p.kube.get("deployment", "checkout-canary") is None
    assert p.traffic().to_dict() == {"stable_version": "2.0.0", "canary_version": None, "canary_weight": 0,
                                     "granularity": 1}
    assert weights(cluster, ns) == [(90, 10), (75, 25), (50, 50), (0, 100), (100, 0)]
    # Other parts of the route are the user's and stay as they were.
    rule = p.kube.get("httproute", "checkout")["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert p.promote() is True  # a retry after completion has nothing to do


def test_abort_moves_traffic_back_and_removes_the_canary_without_touching_stable(cluster, ns, controller):
    p = make(ns)
    p.kube.create("httproute", route())
    p.deploy(spec("1.0.0"), "stable")
    wait_ready(p, "stable", "1.0.0")
    stable_before = p.kube.get("deployment", "checkout")
    p.deploy(spec("2.0.0"), "canary")
    wait_ready(p, "canary", "2.0.0")
    p.set_traffic(50)
    p.abort()
    p.abort()  # idempotent
    assert p.kube.get("deployment", "checkout-canary") is None
    assert weights(cluster, ns)[-1] == (100, 0)
    after = p.kube.get("deployment", "checkout")
    assert after["spec"] == stable_before["spec"]
    assert after["metadata"]["generation"] == stable_before["metadata"]["generation"]


def test_istio_virtual_service_weights(cluster, ns, controller):
    p = make(ns, router="istio")
    p.kube.create("virtualservice", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "checkout"},
        "spec": {"hosts": ["checkout.shop.example.com"], "http": [
            {"route": [{"destination": {"host": f"checkout-stable.{ns}.svc.cluster.local", "port": {"number": 80}}}]}]}})
    p.deploy(spec("1.0.0"), "stable")
    p.deploy(spec("2.0.0"), "canary")
    assert p.set_traffic(20).canary_weight == 20
    routes = p.kube.get("virtualservice", "checkout")["spec"]["http"][0]["route"]
    assert [(r["destination"]["host"], r["weight"]) for r in routes] == [
        (f"checkout-stable.{ns}.svc.cluster.local", 80), (f"checkout-canary.{ns}.svc.cluster.local", 20)]
    assert routes[1]["destination"]["port"] == {"number": 80}
    assert p.set_traffic(0).canary_weight == 0


def test_nginx_canary_ingress_annotations(cluster, ns, controller):
    p = make(ns, router="nginx")
    p.kube.create("ingress", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "checkout"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "checkout-stable", "port": {"number": 80}}}}]}}]}})
    p.deploy(spec("1.0.0"), "stable")
    p.deploy(spec("2.0.0"), "canary")
    assert p.set_traffic(30).canary_weight == 30
    canary = p.kube.get("ingress", "checkout-canary")
    assert canary["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/canary": "true",
                                                 "nginx.ingress.kubernetes.io/canary-weight": "30"}
    backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "checkout-canary", "port": {"number": 80}}
    assert p.kube.get("ingress", "checkout")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] \
        == "checkout-stable"  # the stable Ingress is never changed
    assert p.set_traffic(60).canary_weight == 60
    p.abort()
    assert p.kube.get("ingress", "checkout-canary") is None and p.traffic().canary_weight == 0


def test_replica_ratio_router_without_a_mesh(cluster, ns, controller):
    p = make(ns, router="replicas")
    p.deploy(spec("1.0.0", replicas=4), "stable")
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("2.0.0", replicas=4), "canary")
    assert p.kube.get("deployment", "checkout-canary")["spec"]["replicas"] == 1  # its first share is one pod
    assert p.kube.get("service", "checkout")["spec"]["selector"] == {"app": "checkout"}  # both tracks
    replicas = {}
    for weight in (10, 50, 100):
        split = p.set_traffic(weight)
        replicas[weight] = (p.kube.get("deployment", "checkout")["spec"]["replicas"],
                            p.kube.get("deployment", "checkout-canary")["spec"]["replicas"])
        assert split.granularity == 25 and abs(split.canary_weight - weight) < 25
    assert replicas == {10: (3, 1), 50: (2, 2), 100: (0, 4)}
    assert p.promote() is False
    assert p.kube.get("deployment", "checkout")["spec"]["replicas"] == 4
    wait_ready(p, "stable", "2.0.0")
    p.complete_promotion()
    assert p.kube.get("deployment", "checkout-canary") is None
    assert p.traffic().canary_weight == 0


def test_blue_green_switches_the_service_selector(cluster, ns, controller):
    p = make(ns, strategy="bluegreen")
    p.deploy(spec("1.0.0"), "stable")
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("2.0.0"), "canary")
    wait_ready(p, "canary", "2.0.0")
    assert p.kube.get("service", "checkout")["spec"]["selector"]["track"] == "stable"
    with pytest.raises(PlatformError):
        p.set_traffic(50)
    assert p.set_traffic(100).canary_weight == 100
    assert p.kube.get("service", "checkout")["spec"]["selector"] == {"app": "checkout", "track": "canary"}
    assert p.promote() is False
    wait_ready(p, "stable", "2.0.0")
    p.complete_promotion()
    selectors = [v["spec"]["selector"]["track"] for v in cluster.history("v1/services", ns, "checkout") if v]
    assert selectors == ["stable", "canary", "stable"]
    assert p.traffic().stable_version == "2.0.0" and p.kube.get("deployment", "checkout-canary") is None


def test_first_deployment_sends_all_traffic_to_the_only_version(cluster, ns, controller):
    p = make(ns)
    p.kube.create("httproute", route())
    p.deploy(spec("1.0.0"), "canary")
    wait_ready(p, "canary", "1.0.0")
    split = p.set_traffic(10)
    assert (split.stable_version, split.canary_weight) == (None, 100)
    assert p.promote() is False  # stable is created from the canary's template
    assert p.kube.get("deployment", "checkout")["spec"]["selector"]["matchLabels"]["track"] == "stable"
    wait_ready(p, "stable", "1.0.0")
    p.complete_promotion()
    assert p.traffic().stable_version == "1.0.0" and weights(cluster, ns)[-1] == (100, 0)


def test_failures_surface_the_kubernetes_reason(cluster, ns):
    controller = DeploymentController(cluster, ns, ready_after=0.1,
                                      failures={"6.6.6": "ImagePullBackOff", "6.6.7": "CrashLoopBackOff",
                                                "6.6.8": "never-ready"})
    try:
        p = make(ns)
        p.deploy(spec("1.0.0"), "stable")
        wait_ready(p, "stable", "1.0.0")
        for version, reason in (("6.6.6", "ImagePullBackOff"), ("6.6.7", "CrashLoopBackOff")):
            p.deploy(spec(version), "canary")
            deadline = time.monotonic() + 5
            while not (status := p.rollout_status("canary")).failed and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (status.failed, status.reason) == (True, reason), status
            assert f"{reason}: emulated {reason}" in status.message
            p.abort()
        p.deploy(spec("6.6.8", progress_deadline=1), "canary")
        deadline = time.monotonic() + 5
        while not (status := p.rollout_status("canary")).failed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status.reason == "ProgressDeadlineExceeded"
        assert 'deployment "checkout-canary" exceeded its progress deadline' in status.message
    finally:
        controller.stop()


def test_rollout_trigger_uses_the_async_hook(cluster, ns, controller, ledger):
    from airflow_deploy_provider.triggers.rollout import RolloutStatusTrigger

    p = make(ns)
    p.deploy(spec("1.0.0"), "stable")
    trigger = RolloutStatusTrigger(platform=p.settings, service="checkout", environment="production", region=None,
                                   role="stable", version="1.0.0", deadline=time.time() + 10, poll_interval=0.05)

    async def first():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first())
    assert event["state"] == "ready" and event["status"]["ready"] == 4


def test_snapshot_and_restore_put_manifests_back(cluster, ns, controller):
    p = make(ns, autoscaler="checkout", config_maps=[{"name": "checkout-config", "data": {"MODE": "v1"}}])
    p.kube.create("httproute", route())
    p.deploy(spec("1.0.0"), "stable")
    p.kube.create("hpa", {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                          "metadata": {"name": "checkout"},
                          "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                                   "minReplicas": 2, "maxReplicas": 10}})
    wait_ready(p, "stable", "1.0.0")
    snap = p.snapshot()
    assert snap["stable"] == {"version": "1.0.0", "replicas": 4}
    manifests = snap["manifests"]
    assert manifests["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.0.0")
    assert "status" not in manifests["deployment"] and "generation" not in manifests["deployment"]["metadata"]
    assert {s["metadata"]["name"] for s in manifests["services"]} == {"checkout-stable", "checkout-canary"}
    assert manifests["hpa"]["spec"]["maxReplicas"] == 10
    assert manifests["config_maps"][0]["data"] == {"MODE": "v1"}
    json.dumps(snap)  # stored in the ledger as JSON

    # A rollout that got through promotion, then turned out bad.
    p.set_autoscaling(False)
    p2 = make(ns, autoscaler="checkout", config_maps=[{"name": "checkout-config", "data": {"MODE": "v2"}}])
    p2.deploy(spec("2.0.0"), "canary")
    wait_ready(p2, "canary", "2.0.0")
    p2.set_traffic(100)
    p2.promote()
    wait_ready(p2, "stable", "2.0.0")
    p2.complete_promotion()
    assert p.kube.get("configmap", "checkout-config")["data"] == {"MODE": "v2"}

    assert p.restore(snap) is False  # stable rolls back to 1.0.0
    assert container(p, "checkout")["image"].endswith(":1.0.0")
    wait_ready(p, "stable", "1.0.0")
    assert p.restore(snap) is True  # done: a retry changes nothing
    assert p.kube.get("configmap", "checkout-config")["data"] == {"MODE": "v1"}
    hpa = p.kube.get("hpa", "checkout")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert HPA_RANGE_ANNOTATION not in (hpa["metadata"].get("annotations") or {})


def test_autoscaling_is_pinned_then_restored(cluster, ns, controller):
    p = make(ns)
    assert "no HorizontalPodAutoscaler" in p.set_autoscaling(False)
    p.deploy(spec("1.0.0", replicas=3), "stable")
    p.kube.create("hpa", {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                          "metadata": {"name": "checkout"}, "spec": {"minReplicas": 2, "maxReplicas": 8}})
    assert "pinned to 3" in p.set_autoscaling(False)
    assert "already paused" in p.set_autoscaling(False)  # a retry does not lose the original range
    hpa = p.kube.get("hpa", "checkout")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)
    assert json.loads(hpa["metadata"]["annotations"][HPA_RANGE_ANNOTATION]) == {"minReplicas": 2, "maxReplicas": 8}
    assert "2-8 replicas" in p.set_autoscaling(True)
    assert "not paused" in p.set_autoscaling(True)
    hpa = p.kube.get("hpa", "checkout")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)


def test_going_back_to_a_version_restores_its_template_like_rollout_undo(cluster, ns, controller):
    p = make(ns)
    p.deploy(spec("1.0.0"), "stable")
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("2.0.0"), "stable")
    # 2.0.0 also changed how the container starts (as a release may, through its chart)
    c = container(p, "checkout")
    p.kube.patch("deployment", "checkout", {"spec": {"template": {"spec": {"containers": [
        {**c, "args": ["--new-cache"]}]}}}})
    wait_ready(p, "stable", "2.0.0")
    p.deploy(spec("1.0.0"), "stable")
    back = container(p, "checkout")
    assert back["image"].endswith(":1.0.0") and "args" not in back
    wait_ready(p, "stable", "1.0.0")


def test_marker_cleanup_capacity_logs_and_endpoints(cluster, ns, controller):
    p = make(ns)
    assert "ledger only" in p.annotate({"deployment-id": "d/1", "version": "1.0.0"})
    p.deploy(spec("1.0.0", replicas=2, resources={"requests": {"cpu": "500m", "memory": "256Mi"}}), "stable")
    wait_ready(p, "stable", "1.0.0")
    p.annotate({"deployment-id": "d/1", "version": "1.0.0"})
    annotations = p.kube.get("deployment", "checkout")["metadata"]["annotations"]
    assert json.loads(annotations[MARKER_ANNOTATION]) == {"deployment-id": "d/1", "version": "1.0.0"}
    assert "revisionHistoryLimit" in p.cleanup(3)
    assert p.kube.get("deployment", "checkout")["spec"]["revisionHistoryLimit"] == 3
    assert p.capacity(spec("2.0.0", replicas=2))["fits"]
    p.kube.create("resourcequota", {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team"},
                                    "spec": {"hard": {"requests.cpu": "2", "requests.memory": "4Gi"}},
                                    "status": {"used": {"requests.cpu": "1500m", "requests.memory": "512Mi"}}})
    big = p.capacity(spec("2.0.0", replicas=4, resources={"requests": {"cpu": "500m", "memory": "256Mi"}}))
    assert not big["fits"] and "requests.cpu needs 2, 0.5 free" in big["detail"]
    assert p.capacity(spec("2.0.0", replicas=1, resources={"requests": {"cpu": "500m"}}))["fits"]
    cluster.emulator.pod_logs["checkout-"] = "INFO ready\nERROR payment gateway timeout\n"
    lines = p.logs("stable")
    assert len(lines) == 4 and lines[1].endswith("ERROR payment gateway timeout")
    assert p.endpoint("canary") == f"http://checkout-canary.{ns}.svc.cluster.local:80"
    configured = make(ns, endpoints={"live": "https://shop.example.com/", "stable": None, "canary": None})
    assert configured.endpoint(None) == "https://shop.example.com"
    status = p.status()
    assert status["stable"]["version"] == "1.0.0" and status["canary"] is None
    assert len(status["resources"]["stable"]) == 2


def test_router_objects_missing_is_a_clear_error(cluster, ns, controller):
    p = make(ns)
    p.deploy(spec("1.0.0"), "stable")
    p.deploy(spec("2.0.0"), "canary")
    with pytest.raises(PlatformError, match="HTTPRoute 'checkout' not found in namespace") as err:
        p.set_traffic(10)
    assert err.value.reason == "RouterNotFound"


def test_maintenance_mode_sends_the_http_route_to_the_maintenance_service(cluster, ns, controller):
    from airflow_deploy_provider.registry import NotImplementedForPlatform

    p = KubernetesPlatform({"type": "kubernetes", "connection": "k8s_test", "namespace": ns, "strategy": "canary",
                            "router": {"type": "gateway-api", "name": "checkout", "maintenance_service": "sorry"}},
                           Target("checkout", "production"))
    assert KubernetesPlatform.maintenance_support(p.settings) is None
    p.kube.create("httproute", route())
    p.deploy(spec("1.0.0"), "stable")
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("2.0.0"), "canary")
    wait_ready(p, "canary", "2.0.0")
    p.set_traffic(10)
    before = p.kube.get("httproute", "checkout")["spec"]["rules"]
    assert p.maintenance().enabled is False
    state = p.set_maintenance(True, "Checkout is paused.", retry_after=120)
    assert (state.enabled, state.message) == (True, "Checkout is paused.")
    (rule,) = p.kube.get("httproute", "checkout")["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "sorry", "port": 80, "weight": 1}]
    assert rule["matches"] == before[0]["matches"]  # the user's matches stay
    assert rule["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "set": [{"name": "Retry-After", "value": "120"}]}}]
    versions = len(cluster.history("gateway.networking.k8s.io/v1/httproutes", ns, "checkout"))
    assert p.set_maintenance(True, "Checkout is paused.", retry_after=120).since == state.since
    assert len(cluster.history("gateway.networking.k8s.io/v1/httproutes", ns, "checkout")) == versions  # no write
    with pytest.raises(PlatformError, match="in maintenance mode") as err:
        p.set_traffic(50)  # weights cannot move while the route points at the page
    assert err.value.reason == "MaintenanceMode"
    assert p.set_maintenance(False).enabled is False
    route_now = p.kube.get("httproute", "checkout")
    assert route_now["spec"]["rules"] == before  # the weights of before, canary at 10%
    assert "deploy.airflow.apache.org/maintenance" not in (route_now["metadata"].get("annotations") or {})
    assert p.set_maintenance(False).enabled is False
    assert p.set_traffic(50).canary_weight == 50
    # other routers, or no maintenance Service: not offered, and refused with the reason
    for router in ({"type": "istio", "name": "checkout"}, {"type": "gateway-api", "name": "checkout"}):
        plain = make(ns, router=router["type"])
        assert "maintenanceService" in KubernetesPlatform.maintenance_support(plain.settings)
        with pytest.raises(NotImplementedForPlatform, match="maintenanceService"):
            plain.set_maintenance(True, "x")
