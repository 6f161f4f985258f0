"""The checkout service on the Kubernetes platform for end-to-end tests: a kmock API server with a test
controller per environment, a real Prometheus with backfilled series (``tests/prometheus_series.py``), and the
generated DAGs run with ``dag.test()``. Test modules import the ``prometheus`` and ``shop`` fixtures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import UNGOVERNED, fast_canary, write_service
from tests.kube import ClusterNetwork, DeploymentController, KubeCluster
from tests.prometheus_series import SCENARIOS, openmetrics
from tests.servers import PrometheusServer

IMAGE = "registry.example.com/shop/checkout"
HPA = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "checkout"},
       "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                "minReplicas": 2, "maxReplicas": 12}}
ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout"},
         "spec": {"parentRefs": [{"name": "shop-gateway"}],
                  "rules": [{"backendRefs": [{"name": "checkout-stable", "port": 80}]}]}}


def service_files(env: str, endpoints: dict[str, str], progress_deadline: str = "30s") -> dict[str, str]:
    # The deadline is generous: the test controller shares a busy process with the DAG run (2 cores, 2 test
    # workers); only the test of a rollout that never becomes ready waits it out, with a shorter one.
    health = f"healthCheck: {{initialDelay: 100ms, interval: 200ms, timeout: 2s}}\nprogressDeadline: {progress_deadline}\n"
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
            rollback:
              monitorDuration: 1s
            """) + UNGOVERNED,
        "development.yaml": "environment: development\nstrategy: recreate\nreplicas: 2\n" + health,
        "staging.yaml": "environment: staging\nstrategy: bluegreen\nreplicas: 2\n" + health + textwrap.dedent("""\
            trafficSwitch: {testDuration: 1s, rollbackOnError: true}
            autoRollback:
              enabled: true
              conditions: ["error_rate > 5%"]
            """),
        "production.yaml": "environment: production\nstrategy: canary\nreplicas: 4\n" + health
                           + fast_canary("{name: latency_p99, max: 500ms}"),
    }
    return {"service.yaml": files["service.yaml"], f"{env}.yaml": files[f"{env}.yaml"]}


@pytest.fixture(scope="module")
def prometheus():
    server = PrometheusServer(openmetrics(list(SCENARIOS.values())))
    yield server
    server.stop()


class Shop:
    """The checkout service's DAGs against one cluster: a controller and a network per environment."""

    def __init__(self, root: Path, dags_folder: Path, cluster: KubeCluster, failures: dict[str, str],
                 progress_deadline: str = "30s"):
        from airflow.dag_processing.dagbag import DagBag

        self.cluster = cluster
        envs = ("development", "staging", "production")
        self.controller = DeploymentController(cluster, list(envs), ready_after=0.2, failures=failures)
        self.networks = {env: ClusterNetwork(cluster, env, "checkout") for env in envs}
        for env, network in self.networks.items():
            write_service(root / env / "checkout", service_files(env, network.endpoints(), progress_deadline))
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
    """``request.param`` (indirect parametrization): ``failures`` for the controller, ``progress_deadline``."""
    options = getattr(request, "param", {})
    cluster = KubeCluster()
    monkeypatch.setenv("AIRFLOW_CONN_K8S_TEST", cluster.connection_uri())
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_TEST", prometheus.connection_uri())
    s = Shop(tmp_path / "services", dags_folder, cluster, options.get("failures", {}),
             options.get("progress_deadline", "30s"))
    yield s
    s.close()
    cluster.stop()


def only(ledger, env: str, version: str, kind: str = "deploy"):
    (d,) = [d for d in ledger.deployments("checkout", env) if d.version == version and d.kind == kind]
    return d


def bootstrap(shop: Shop) -> None:
    state, tasks = shop.run("deploy_checkout_production", version="1.0.0")
    assert state == "success", tasks
