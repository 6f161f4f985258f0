"""The ECS platform against a moto server, through the amazon provider's hooks and an Airflow AWS connection.
``EcsController`` plays the ECS scheduler (moto never progresses a deployment)."""

from __future__ import annotations

import time

import pytest

from airflow_deploy_provider.platforms.base import PlatformError, Target, WorkloadSpec
from airflow_deploy_provider.platforms.ecs.platform import MARKER_TAG, EcsPlatform
from tests.aws import (  # noqa: F401
    EcsController,
    aws_connection,
    create_load_balancer,
    create_stable_service,
    moto_server,
    rule_weights,
)
from tests.conftest import wait_ready

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/checkout"


@pytest.fixture
def aws(moto_server, monkeypatch):  # noqa: F811
    moto_server.reset()
    aws_connection(monkeypatch, moto_server, "aws_test")
    return moto_server


@pytest.fixture
def shop(aws):
    """Cluster ``shop``, an ALB with stable/canary target groups, and the stable service on 1.0.0."""
    lb = create_load_balancer(aws)
    create_stable_service(aws, lb, "checkout", IMAGE, "1.0.0", env={"LOG_LEVEL": "info"})
    controller = EcsController(aws)
    lb.controller = controller  # type: ignore[attr-defined]  # tests add failures to it
    yield lb
    controller.stop()
    assert controller.errors == []


def make(lb, strategy: str = "canary", **settings) -> EcsPlatform:
    return EcsPlatform({"type": "ecs", "connection": "aws_test", "region": "us-east-1", "cluster": "shop",
                        "listener_rule_arn": lb.rule_arn, "strategy": strategy, **settings},
                       Target("checkout", "production"))


def spec(version: str, replicas: int = 4, **kw) -> WorkloadSpec:
    return WorkloadSpec(version=version, image=f"{IMAGE}:{version}", replicas=replicas, **kw)


def service(aws, name: str = "checkout") -> dict:
    return aws.client("ecs").describe_services(cluster="shop", services=[name])["services"][0]


def revisions(aws) -> list[str]:
    return aws.client("ecs").list_task_definitions(familyPrefix="checkout")["taskDefinitionArns"]


def container(aws, td_arn: str) -> dict:
    return aws.client("ecs").describe_task_definition(taskDefinition=td_arn)["taskDefinition"][
        "containerDefinitions"][0]


def test_deploy_registers_a_revision_and_updates_the_service(aws, shop):
    p = make(shop, strategy="rolling")
    wait_ready(p, "stable", "1.0.0")
    p.deploy(spec("2.0.0", replicas=6, strategy="rolling", resources={
        "limits": {"memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}}), "stable")
    svc = service(aws)
    assert svc["desiredCount"] == 6
    assert svc["deploymentConfiguration"]["maximumPercent"] == 125
    assert svc["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    c = container(aws, svc["taskDefinition"])
    assert c["image"] == f"{IMAGE}:2.0.0" and (c["memory"], c["memoryReservation"], c["cpu"]) == (512, 256, 256)
    env = {e["name"]: e["value"] for e in c["environment"]}
    assert env == {"DEPLOY_VERSION": "2.0.0", "LOG_LEVEL": "info"}  # other settings of the family kept
    assert not p.rollout_status("stable").done  # the old deployment's tasks are not replaced yet
    wait_ready(p, "stable", "2.0.0")

    # A retry converges: no new revision, no new deployment.
    before = (revisions(aws), service(aws)["deployments"][0]["updatedAt"])
    p.deploy(spec("2.0.0", replicas=6, strategy="rolling", resources={
        "limits": {"memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}}), "stable")
    assert (revisions(aws), service(aws)["deployments"][0]["updatedAt"]) == before


def test_recreate_stops_the_old_tasks_first(aws, shop):
    p = make(shop, strategy="recreate")
    p.deploy(spec("2.0.0", strategy="recreate"), "stable")
    config = service(aws)["deploymentConfiguration"]
    assert (config["minimumHealthyPercent"], config["maximumPercent"]) == (0, 100)


def test_canary_moves_listener_rule_weights_then_promotes(aws, shop):
    p = make(shop)
    p.deploy(spec("2.0.0"), "canary")
    canary = service(aws, "checkout-canary")
    assert canary["loadBalancers"][0]["targetGroupArn"] == shop.canary_tg
    assert canary["networkConfiguration"] == service(aws)["networkConfiguration"]  # a copy of stable's
    wait_ready(p, "canary", "2.0.0")
    seen = []
    for weight in (10, 50, 100):
        split = p.set_traffic(weight)
        seen.append(rule_weights(aws, shop.rule_arn))
        assert (split.canary_weight, split.canary_version, split.stable_version) == (weight, "2.0.0", "1.0.0")
    assert seen == [{shop.stable_tg: 90, shop.canary_tg: 10}, {shop.stable_tg: 50, shop.canary_tg: 50},
                    {shop.stable_tg: 0, shop.canary_tg: 100}]
    assert p.promote() is False  # stable is rolling out the new version
    assert service(aws)["taskDefinition"] == canary["taskDefinition"]
    assert rule_weights(aws, shop.rule_arn)[shop.canary_tg] == 100  # the canary serves until stable is ready
    wait_ready(p, "stable", "2.0.0")
    p.complete_promotion()
    assert rule_weights(aws, shop.rule_arn) == {shop.stable_tg: 100, shop.canary_tg: 0}
    assert service(aws, "checkout-canary")["status"] != "ACTIVE"
    assert p.promote() is True  # a retry after the promotion changes nothing


def test_abort_moves_traffic_back_and_removes_the_canary_without_touching_stable(aws, shop):
    p = make(shop)
    stable_before = service(aws)["taskDefinition"]
    p.deploy(spec("2.0.1"), "canary")
    wait_ready(p, "canary", "2.0.1")
    p.set_traffic(10)
    p.abort()
    assert rule_weights(aws, shop.rule_arn) == {shop.stable_tg: 100, shop.canary_tg: 0}
    assert service(aws, "checkout-canary")["status"] != "ACTIVE"
    assert service(aws)["taskDefinition"] == stable_before
    assert p.traffic().canary_version is None
    p.abort()  # again: nothing left to do


def test_trigger_path_reads_the_rollout_through_the_async_client(aws, shop):
    import asyncio

    shop.controller.failures["2.0.0"] = "never-ready"  # stays IN_PROGRESS with no task running
    p = make(shop, strategy="rolling")
    p.deploy(spec("2.0.0", strategy="rolling"), "stable")
    time.sleep(0.5)
    status = asyncio.run(make(shop).async_rollout_status("stable"))
    assert not status.done and not status.failed and status.version == "2.0.0" and status.ready == 0
    p.deploy(spec("2.1.0", strategy="rolling"), "stable")
    wait_ready(p, "stable", "2.1.0")
    status = asyncio.run(make(shop).async_rollout_status("stable"))
    assert status.done and status.version == "2.1.0" and status.ready == 4
    assert asyncio.run(make(shop).async_rollout_status("canary")).reason == "NotDeployed"


def test_failures_surface_the_ecs_reason(aws, shop):
    shop.controller.failures["3.0.1"] = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    p = make(shop)
    p.deploy(spec("3.0.1"), "canary")
    deadline = time.monotonic() + 10
    status = p.rollout_status("canary")
    while not status.failed and time.monotonic() < deadline:
        time.sleep(0.05)
        status = p.rollout_status("canary")
    assert status.failed and status.reason == "CannotPullContainerError", status
    assert "pull image manifest has been retried" in status.message
    import asyncio

    status = asyncio.run(make(shop).async_rollout_status("canary"))  # the trigger sees the same reason
    assert status.failed and status.reason == "CannotPullContainerError", status


def test_going_back_to_a_version_reuses_its_revision_like_update_service(aws, shop):
    p = make(shop, strategy="rolling")
    first = service(aws)["taskDefinition"]
    p.deploy(spec("2.0.0"), "stable")
    wait_ready(p, "stable", "2.0.0")
    count = len(revisions(aws))
    p.deploy(spec("1.0.0"), "stable")  # the rollback DAG's previous version, image from the ledger
    assert service(aws)["taskDefinition"] == first
    assert len(revisions(aws)) == count
    wait_ready(p, "stable", "1.0.0")


def test_snapshot_restore_and_autoscaling(aws, shop):
    scaling = aws.client("application-autoscaling")
    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId="service/shop/checkout",
                                     ScalableDimension="ecs:service:DesiredCount", MinCapacity=2, MaxCapacity=12)
    p = make(shop)
    wait_ready(p, "stable", "1.0.0")
    snap = p.snapshot()
    assert snap["stable"]["version"] == "1.0.0" and snap["manifests"]["task_definition"]["family"] == "checkout"
    assert "suspended" in p.set_autoscaling(False)
    state = scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"][0]["SuspendedState"]
    assert state["DynamicScalingInSuspended"] and state["DynamicScalingOutSuspended"]
    assert "already suspended" in p.set_autoscaling(False)

    p.deploy(spec("2.0.0"), "canary")
    wait_ready(p, "canary", "2.0.0")
    p.set_traffic(100)
    assert p.promote() is False
    wait_ready(p, "stable", "2.0.0")
    p.complete_promotion()

    assert p.restore(snap) is False  # stable rolls back to the snapshot's revision
    assert service(aws)["taskDefinition"] == snap["stable"]["task_definition"]
    wait_ready(p, "stable", "1.0.0")
    assert p.restore(snap) is True
    target = scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 12)
    # The snapshot was taken before autoscaling was suspended: restoring it resumes autoscaling too.
    state = scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"][0]["SuspendedState"]
    assert not any(state.values())
    assert "already active" in p.set_autoscaling(True)
    p.set_autoscaling(False)
    assert "re-enabled" in p.set_autoscaling(True)


def test_marker_cleanup_endpoint_capacity_and_status(aws, shop):
    p = make(shop, strategy="rolling")
    assert MARKER_TAG in p.annotate({"deployment_id": "d-1", "version": "2.0.0", "other": "x" * 500})
    tags = aws.client("ecs").list_tags_for_resource(resourceArn=service(aws)["serviceArn"])["tags"]
    assert any(t["key"] == MARKER_TAG and '"d-1"' in t["value"] for t in tags)
    for version in ("2.0.0", "2.1.0", "2.2.0"):
        p.deploy(spec(version), "stable")
        wait_ready(p, "stable", version)
    assert "deregistered 2" in p.cleanup(2)
    active = aws.client("ecs").list_task_definitions(familyPrefix="checkout", status="ACTIVE")["taskDefinitionArns"]
    assert [p.version_of(a) for a in active] == ["2.1.0", "2.2.0"]
    dns = aws.client("elbv2").describe_load_balancers(LoadBalancerArns=[shop.arn])["LoadBalancers"][0]["DNSName"]
    assert p.endpoint() == f"http://{dns}:80"
    with pytest.raises(PlatformError, match="platform.endpoints.canary"):
        p.endpoint("canary")
    assert make(shop, endpoints={"canary": "http://green.internal/"}).endpoint("canary") == "http://green.internal"
    assert p.capacity(spec("2.3.0"))["fits"]
    status = p.status()
    assert status["stable"]["version"] == "2.2.0" and status["canary"] is None


def test_missing_stable_service_or_rule_is_a_clear_error(aws, shop):
    with pytest.raises(PlatformError, match="ECS service 'payments' not found in cluster 'shop'"):
        make(shop, service_name="payments").deploy(spec("1.0.0"), "stable")
    p = make(shop, listener_rule_arn=None)
    p.deploy(spec("2.0.0"), "canary")
    with pytest.raises(PlatformError, match="listenerRuleArn"):
        p.set_traffic(10)


def listener_rules(aws, lb) -> dict[str, dict]:
    """Priority -> rule of the load balancer's listener (the default rule left out)."""
    rules = aws.client("elbv2").describe_rules(ListenerArn=lb.listener_arn)["Rules"]
    return {r["Priority"]: r for r in rules if not r["IsDefault"]}


def test_maintenance_mode_is_a_fixed_response_rule_in_front_of_the_service(aws, shop):
    from airflow_deploy_provider.platforms.ecs.platform import MAINTENANCE_TAG
    from airflow_deploy_provider.registry import NotImplementedForPlatform

    elb = aws.client("elbv2")
    # another service's rule takes priority 9: the maintenance rule goes to the next free one ahead of ours
    elb.create_rule(ListenerArn=shop.listener_arn, Priority=9, Conditions=[
        {"Field": "host-header", "Values": ["other.example.com"]}], Actions=[
        {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}])
    p = make(shop)
    assert EcsPlatform.maintenance_support(p.settings) is None
    assert p.maintenance().enabled is False
    state = p.set_maintenance(True, "Checkout is paused <5 minutes>.")
    assert (state.enabled, state.message) == (True, "Checkout is paused <5 minutes>.")
    rules = listener_rules(aws, shop)
    assert sorted(rules, key=int) == ["8", "9", "10"]
    rule = rules["8"]
    (action,) = rule["Actions"]
    assert action["Type"] == "fixed-response" and action["FixedResponseConfig"]["StatusCode"] == "503"
    assert "Checkout is paused &lt;5 minutes&gt;." in action["FixedResponseConfig"]["MessageBody"]
    assert [c["Field"] for c in rule["Conditions"]] == ["path-pattern"]  # the service rule's conditions
    (tags,) = elb.describe_tags(ResourceArns=[rule["RuleArn"]])["TagDescriptions"]
    assert {"Key": MAINTENANCE_TAG, "Value": shop.rule_arn} in tags["Tags"]
    # again (a retry): nothing new; another message: the same rule, changed
    assert p.set_maintenance(True, "Checkout is paused <5 minutes>.").enabled
    assert p.set_maintenance(True, "Back soon.").message == "Back soon."
    assert sorted(listener_rules(aws, shop), key=int) == ["8", "9", "10"]
    # deployments behind the page go on: the service rule's weights still move
    p.deploy(spec("2.0.0"), "canary")
    wait_ready(p, "canary", "2.0.0")
    assert p.set_traffic(20).canary_weight == 20
    assert rule_weights(aws, shop.rule_arn) == {shop.stable_tg: 80, shop.canary_tg: 20}
    assert p.set_maintenance(False).enabled is False
    assert sorted(listener_rules(aws, shop), key=int) == ["9", "10"]
    assert p.set_maintenance(False).enabled is False  # leaving twice is fine
    # without the listener rule there is nothing to answer from: refused, and the factory does not offer it
    bare = make(shop, listener_rule_arn=None)
    assert "listenerRuleArn" in EcsPlatform.maintenance_support(bare.settings)
    with pytest.raises(NotImplementedForPlatform, match="listenerRuleArn"):
        bare.set_maintenance(True, "x")


def test_maintenance_rule_needs_a_free_priority_ahead(aws, shop):
    elb = aws.client("elbv2")
    rules = {r["Priority"]: r for r in elb.describe_rules(ListenerArn=shop.listener_arn)["Rules"]}
    elb.set_rule_priorities(RulePriorities=[{"RuleArn": rules["10"]["RuleArn"], "Priority": 1}])
    with pytest.raises(PlatformError, match="no free priority ahead of listener rule"):
        make(shop).set_maintenance(True, "x")
