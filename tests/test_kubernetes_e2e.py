"""Generated DAGs run end to end with ``dag.test()`` on the Kubernetes platform (kmock API server, a test
controller) with metric gates on a real Prometheus (backfilled series, see ``tests/prometheus_series.py``).

Assertions read the API objects' history: images, replicas, HTTPRoute weights in order, Service selectors,
the HPA paused then restored, and what the ledger and Slack were told.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import write_service
from tests.kube import ClusterNetwork, DeploymentController, KubeCluster
from tests.prometheus_series import SCENARIOS, openmetrics
from tests.servers import PrometheusServer

pytestmark = pytest.mark.slow

IMAGE = "registry.example.com/shop/checkout"
HPA = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "checkout"},
       "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                "minReplicas": 2, "maxReplicas": 12}}
ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout"},
         "spec": {"parentRefs": [{"name": "shop-gateway"}],
                  "rules": [{"backendRefs": [{"name": "checkout-stable", "port": 80}]}]}}


def service_files(env: str, endpoints: dict[str, str]) -> dict[str, str]:
    health = "healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}\nprogressDeadline: 4s\n"
    files = {
        "service.yaml": textwrap.dedent(f"""\
            service: checkout
            image: {IMAGE}
            platform:
              type: kubernetes
              connection: k8s_test
              router: {{type: gateway-api, name: checkout}}
              endpoints: {{live: "{endpoints['live']}", stable: "{endpoints['stable']}", canary: "{endpoints['canary']}"}}
            metrics:
              provider: prometheus
              connection: prometheus_test
            notifications:
              slack: {{connection: slack_test}}
            approvals:
              staging: {{enabled: false}}
              production: {{enabled: false}}
            checklist:
              stagingTestsPassed: false
              securityScanClean: false
              releaseNotes: false
              rollbackPlan: false
              onCallNotified: false
            rollback:
              monitorDuration: 1s
            """),
        "development.yaml": "environment: development\nstrategy: recreate\nreplicas: 2\n" + health,
        "staging.yaml": "environment: staging\nstrategy: bluegreen\nreplicas: 2\n" + health + textwrap.dedent("""\
            trafficSwitch: {testDuration: 1s, rollbackOnError: true}
            autoRollback:
              enabled: true
              conditions: ["error_rate > 5%"]
            """),
        "production.yaml": "environment: production\nstrategy: canary\nreplicas: 4\n" + health + textwrap.dedent("""\
            canary:
              steps:
                - {weight: 10, pause: 1s}
                - {weight: 50, pause: 1s}
                - {weight: 100}
              analysis:
                interval: 500ms
                threshold: 1
                minRequests: 100
                metrics:
                  - {name: error_rate, max: 1%}
                  - {name: latency_p99, max: 500ms}
            autoRollback:
              enabled: true
              conditions: ["error_rate > 5%"]
            monitoring: {duration: 1s}
            """),
    }
    return {"service.yaml": files["service.yaml"], f"{env}.yaml": files[f"{env}.yaml"]}


@pytest.fixture(scope="module")
def prometheus():
    server = PrometheusServer(openmetrics(list(SCENARIOS.values())))
    yield server
    server.stop()


class Shop:
    """The checkout service's DAGs against one cluster: a controller and a network per environment."""

    def __init__(self, root: Path, dags_folder: Path, cluster: KubeCluster, failures: dict[str, str]):
        from airflow.dag_processing.dagbag import DagBag

        self.cluster = cluster
        envs = ("development", "staging", "production")
        self.controller = DeploymentController(cluster, list(envs), ready_after=0.2, failures=failures)
        self.networks = {env: ClusterNetwork(cluster, env, "checkout") for env in envs}
        for env, network in self.networks.items():
            write_service(root / env / "checkout", service_files(env, network.endpoints()))
            (dags_folder / f"checkout_{env}.py").write_text(
                "from airflow_deploy_provider.factory import register_deploy_dags\n"
                f"register_deploy_dags(globals(), roots=[{str(root / env)!r}])\n")
        self.bag = DagBag(str(dags_folder))
        assert self.bag.import_errors == {}
        from airflow_deploy_provider.registry import get_platform

        self.platforms = {env: get_platform({"type": "kubernetes", "connection": "k8s_test",
                                             "router": {"type": "gateway-api", "name": "checkout"},
                                             "strategy": {"staging": "bluegreen"}.get(env, env)},
                                            "checkout", env) for env in envs}
        self.kube = self.platforms["production"].kube
        self.kube.create("httproute", ROUTE)
        self.kube.create("hpa", HPA)

    def run(self, dag_id: str, **conf):
        run = self.bag.dags[dag_id].test(run_conf=conf)
        return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}

    def deployment(self, env: str, name: str = "checkout") -> dict | None:
        return self.platforms[env].kube.get("deployment", name)

    def image(self, env: str, name: str = "checkout") -> str:
        return self.deployment(env, name)["spec"]["template"]["spec"]["containers"][0]["image"]

    def weights(self) -> list[tuple[int, int]]:
        out = []
        for v in self.cluster.history("gateway.networking.k8s.io/v1/httproutes", "production", "checkout"):
            refs = {r["name"]: r.get("weight") for r in v["spec"]["rules"][0]["backendRefs"]}
            if "checkout-canary" in refs:
                out.append((refs["checkout-stable"], refs["checkout-canary"]))
        return out

    def close(self) -> None:
        self.controller.stop()
        for n in self.networks.values():
            n.stop()


@pytest.fixture
def shop(request, tmp_path, dags_folder, airflow_db, ledger, slack, prometheus, monkeypatch):
    failures = getattr(request, "param", {})
    cluster = KubeCluster()
    monkeypatch.setenv("AIRFLOW_CONN_K8S_TEST", cluster.connection_uri())
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_TEST", prometheus.connection_uri())
    s = Shop(tmp_path / "services", dags_folder, cluster, failures)
    yield s
    s.close()
    cluster.stop()


def only(ledger, env: str, version: str, kind: str = "deploy"):
    (d,) = [d for d in ledger.deployments("checkout", env) if d.version == version and d.kind == kind]
    return d


def bootstrap(shop: Shop) -> None:
    state, tasks = shop.run("deploy_checkout_production", version="1.0.0")
    assert state == "success", tasks


def test_development_recreates_the_deployment(shop, ledger, slack):
    state, tasks = shop.run("deploy_checkout_development", commit="a1b2c3d4e5f6", author="alice")
    assert state == "success", tasks
    dep = shop.deployment("development")
    assert shop.image("development") == f"{IMAGE}:dev-a1b2c3d"
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["metadata"]["annotations"]["deploy.airflow.apache.org/version"] == "a1b2c3d"
    deployment = only(ledger, "development", "a1b2c3d")
    assert deployment.status == "succeeded"
    ready = [e for e in ledger.events(deployment.id, kind="deploy") if "ready" in (e.message or "")]
    assert ready and ready[0].data["status"]["ready"] == 2
    assert "succeeded" in slack.texts[-1]


def test_staging_blue_green_switches_the_service_selector(shop, ledger):
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        assert shop.run("deploy_checkout_development", commit="abcdef1", version=version)[0] == "success"
    assert shop.run("deploy_checkout_staging", version="1.0.0")[0] == "success"
    state, tasks = shop.run("deploy_checkout_staging", version="1.1.0")
    assert state == "success", tasks
    assert shop.image("staging") == f"{IMAGE}:staging-1.1.0"  # the image retagged for staging
    assert shop.deployment("staging", "checkout-canary") is None
    history = shop.cluster.history("v1/services", "staging", "checkout")
    tracks = [v["spec"]["selector"]["track"] for v in history if v]
    assert tracks[-3:] == ["stable", "canary", "stable"]  # green takes traffic, then stable runs green's version

    # 2.0.0 fails its watch after the switch (staging's Prometheus says 50% errors): back to blue.
    state, tasks = shop.run("deploy_checkout_staging", version="2.0.0")
    assert state == "failed"
    assert tasks["blue_green_deployment.watch_after_switch"] == "failed"
    assert tasks["blue_green_deployment.switch_back_to_blue"] == "success"
    svc = shop.platforms["staging"].kube.get("service", "checkout")
    assert svc["spec"]["selector"]["track"] == "stable"
    assert shop.image("staging") == f"{IMAGE}:staging-1.1.0"
    assert shop.deployment("staging", "checkout-canary") is None
    assert only(ledger, "staging", "2.0.0").status == "rolled_back"


def test_production_canary_moves_route_weights_step_by_step(shop, ledger, slack):
    bootstrap(shop)  # first deployment: the only version takes all traffic, then becomes stable
    assert shop.weights() == [(0, 100), (100, 0)]
    generation = shop.deployment("production")["metadata"]["generation"]
    state, tasks = shop.run("deploy_checkout_production", version="2.0.0")
    assert state == "success", tasks
    assert shop.weights()[2:] == [(90, 10), (50, 50), (0, 100), (100, 0)]
    assert shop.image("production") == f"{IMAGE}:2.0.0"
    assert shop.deployment("production")["metadata"]["generation"] > generation
    assert shop.deployment("production", "checkout-canary") is None
    deployment = only(ledger, "production", "2.0.0")
    assert deployment.status == "succeeded" and deployment.previous_version == "1.0.0"
    checks = [e.data for e in ledger.events(deployment.id, kind="gate")]
    assert checks and all(c["verdict"] == "pass" for c in checks)
    assert all(c["readings"]["error_rate"]["value"] == pytest.approx(0.1) for c in checks)
    # The HPA was pinned during the rollout and given its range back afterwards.
    ranges = [(v["spec"]["minReplicas"], v["spec"]["maxReplicas"])
              for v in shop.cluster.history("autoscaling/v2/horizontalpodautoscalers", "production", "checkout")]
    assert ranges[-3:] == [(2, 12), (4, 4), (2, 12)]
    (snapshot,) = [e.data["snapshot"] for e in ledger.events(deployment.id, kind="snapshot")]
    assert snapshot["stable"]["version"] == "1.0.0"
    assert snapshot["manifests"]["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] \
        == f"{IMAGE}:1.0.0"
    assert snapshot["manifests"]["hpa"]["spec"]["maxReplicas"] == 12
    annotations = shop.deployment("production")["metadata"]["annotations"]
    assert deployment.id in annotations["deploy.airflow.apache.org/deployment-started"]
    assert tasks["canary_deployment.rollback"] == "skipped"
    assert any("2.0.0 deployment to production succeeded" in t for t in slack.texts)


def test_failing_canary_is_rolled_back_by_the_prometheus_gate(shop, ledger, slack):
    bootstrap(shop)
    stable = shop.deployment("production")
    state, tasks = shop.run("deploy_checkout_production", version="2.0.1")
    assert state == "failed"
    assert tasks["canary_deployment.step_1_10pct"] == "failed"
    assert tasks["canary_deployment.rollback"] == "success"
    assert shop.weights()[2:] == [(90, 10), (100, 0)]
    assert shop.deployment("production", "checkout-canary") is None
    after = shop.deployment("production")
    assert after["spec"] == stable["spec"] and after["metadata"]["generation"] == stable["metadata"]["generation"]
    deployment = only(ledger, "production", "2.0.1")
    assert deployment.status == "rolled_back" and "error_rate > 5%" in deployment.outcome_reason
    rollbacks = [t for t in slack.texts if "rolled back" in t]
    assert len(rollbacks) == 1 and "2.0.1" in rollbacks[0]


def test_canary_without_traffic_is_never_promoted(shop, ledger):
    bootstrap(shop)
    state, tasks = shop.run("deploy_checkout_production", version="2.0.2")
    assert state == "failed"
    deployment = only(ledger, "production", "2.0.2")
    assert deployment.status == "rolled_back"
    checks = [e.data for e in ledger.events(deployment.id, kind="gate")]
    assert checks and all(c["verdict"] != "pass" for c in checks)
    assert shop.weights()[-1] == (100, 0) and shop.image("production") == f"{IMAGE}:1.0.0"


@pytest.mark.parametrize("shop", [{"3.0.0": "never-ready", "3.0.1": "ImagePullBackOff"}], indirect=True)
def test_rollout_that_never_becomes_ready_is_rolled_back_with_the_reason(shop, ledger, slack):
    bootstrap(shop)
    for version, reason in (("3.0.0", "ProgressDeadlineExceeded"), ("3.0.1", "ImagePullBackOff")):
        state, tasks = shop.run("deploy_checkout_production", version=version)
        assert state == "failed"
        assert tasks["canary_deployment.wait_canary_ready"] == "failed"
        assert tasks["canary_deployment.step_1_10pct"] == "upstream_failed"
        assert tasks["canary_deployment.rollback"] == "success"
        deployment = only(ledger, "production", version)
        assert deployment.status == "rolled_back" and reason in deployment.outcome_reason
        assert shop.deployment("production", "checkout-canary") is None
        assert shop.image("production") == f"{IMAGE}:1.0.0"
        notice = [t for t in slack.texts if version in t and "rolled back" in t]
        assert len(notice) == 1 and reason in notice[0]
    assert shop.weights() == [(0, 100), (100, 0)]  # no traffic ever reached the broken versions


def test_failure_after_promotion_restores_the_snapshot(shop, ledger):
    bootstrap(shop)
    shop.networks["production"].unhealthy.add("2.0.0")  # passes the canary, fails the health check after it
    state, tasks = shop.run("deploy_checkout_production", version="2.0.0")
    assert state == "failed"
    assert tasks["canary_deployment.update_load_balancer"] == "success"  # it was promoted
    assert tasks["post_deployment_validation.health_check"] == "failed"
    assert tasks["monitoring_and_alerting.restore_previous_version"] == "success"
    assert shop.image("production") == f"{IMAGE}:1.0.0"
    assert shop.platforms["production"].rollout_status("stable").done
    deployment = only(ledger, "production", "2.0.0")
    assert deployment.status == "rolled_back"
    ranges = [(v["spec"]["minReplicas"], v["spec"]["maxReplicas"])
              for v in shop.cluster.history("autoscaling/v2/horizontalpodautoscalers", "production", "checkout")]
    assert ranges[-1] == (2, 12)  # autoscaling is re-enabled even though the rollout failed


def test_rollback_dag_goes_back_like_rollout_undo(shop, ledger):
    bootstrap(shop)
    assert shop.run("deploy_checkout_production", version="2.0.0")[0] == "success"
    state, tasks = shop.run("rollback_checkout_production", reason="customer reports")
    assert state == "success", tasks
    assert shop.image("production") == f"{IMAGE}:1.0.0"
    rollback = [d for d in ledger.deployments("checkout", "production") if d.kind == "rollback"][0]
    assert (rollback.version, rollback.previous_version, rollback.status) == ("1.0.0", "2.0.0", "succeeded")
    state, tasks = shop.run("rollback_checkout_production", reason="back to 2.0.0", target_version="2.0.0")
    assert state == "success", tasks
    assert shop.image("production") == f"{IMAGE}:2.0.0"
