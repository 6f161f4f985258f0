"""Failures after the canary on the Kubernetes platform, end to end with ``dag.test()``: rollouts that never
become ready (the Kubernetes reason surfaces), a failure after promotion (the snapshot is restored) and the
rollback DAG (``kubectl rollout undo``)."""

from __future__ import annotations

import pytest

from tests.kube_shop import IMAGE, bootstrap, only, prometheus, shop  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("shop", [{"failures": {"3.0.0": "never-ready", "3.0.1": "ImagePullBackOff"},
                                   "progress_deadline": "8s"}], indirect=True)
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
