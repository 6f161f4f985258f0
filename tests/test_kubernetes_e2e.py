"""Generated DAGs run end to end with ``dag.test()`` on the Kubernetes platform (kmock API server, a test
controller) with metric gates on a real Prometheus: the development, staging and production workflows and
canaries the gate stops.

Assertions read the API objects' history: images, replicas, HTTPRoute weights in order, Service selectors,
the HPA paused then restored, and what the ledger and Slack were told.
"""

from __future__ import annotations

import pytest

from tests.kube_shop import IMAGE, bootstrap, only, prometheus, shop  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


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
