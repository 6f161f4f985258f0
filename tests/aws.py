"""AWS for tests: a moto server (real HTTP, the amazon provider's hooks talk to it through an Airflow
connection's ``endpoint_url``) and the network an Application Load Balancer needs.

Test modules import the ``moto_server`` fixture (one server per test module; ``reset()`` clears it) and use
``aws_connection(monkeypatch, moto_server, conn_id, region)`` to point a connection at it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers import RoleNetwork


class MotoServer:
    """moto in server mode on a free local port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def reset(self) -> None:
        import requests

        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()

    def client(self, service: str, region: str = "us-east-1") -> Any:
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def connection(self, region: str = "us-east-1") -> str:
        """An AWS connection (JSON form of ``AIRFLOW_CONN_*``) reaching this server."""
        return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                           "extra": {"endpoint_url": self.endpoint, "region_name": region}})

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer()
    yield server
    server.stop()


def aws_connection(monkeypatch: pytest.MonkeyPatch, server: MotoServer, conn_id: str = "aws_test",
                   region: str = "us-east-1") -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", server.connection(region))
    # boto3 outside the hooks (test set-up) and hooks without credentials in the connection.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return conn_id


@dataclass
class LoadBalancer:
    """An ALB with a listener whose default rule forwards to two target groups (stable 100, canary 0)."""

    arn: str
    listener_arn: str
    rule_arn: str
    stable_tg: str
    canary_tg: str
    dimension: str  # ``app/<name>/<id>``, the CloudWatch LoadBalancer dimension


def create_load_balancer(server: MotoServer, name: str = "checkout", region: str = "us-east-1") -> LoadBalancer:
    """VPC, two subnets, an ALB, target groups ``<name>-stable`` and ``<name>-canary``, and a listener rule
    with a weighted forward action between them."""
    ec2, elb = server.client("ec2", region), server.client("elbv2", region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{z}")["Subnet"]
               ["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    lb = elb.create_load_balancer(Name=f"{name}-alb", Subnets=subnets, Type="application")["LoadBalancers"][0]
    tgs = [elb.create_target_group(Name=f"{name}-{track}", Protocol="HTTP", Port=8080, VpcId=vpc,
                                   TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
           for track in ("stable", "canary")]
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                                   DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                                       "StatusCode": "404"}}])["Listeners"][0]["ListenerArn"]
    rule = elb.create_rule(ListenerArn=listener, Priority=10,
                           Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
                           Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                               {"TargetGroupArn": tgs[0], "Weight": 100},
                               {"TargetGroupArn": tgs[1], "Weight": 0}]}}])["Rules"][0]["RuleArn"]
    dimension = lb["LoadBalancerArn"].split(":loadbalancer/", 1)[1]
    return LoadBalancer(lb["LoadBalancerArn"], listener, rule, tgs[0], tgs[1], dimension)


def create_stable_service(server: MotoServer, lb: LoadBalancer, name: str, image: str, version: str,
                          env: dict[str, str] | None = None, cluster: str = "shop", replicas: int = 4) -> str:
    """What the platform team creates for an ECS service: the cluster, a security group, the task definition
    family (awslogs, ``DEPLOY_VERSION``) with a log line already shipped, and the stable Fargate service behind
    the stable target group. Returns the task definition ARN."""
    ecs, ec2, logs = server.client("ecs"), server.client("ec2"), server.client("logs")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
    vpc = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"][0]["VpcId"]
    group = ec2.create_security_group(GroupName=name, Description=f"{name} tasks", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=cluster)
    environment = [{"name": k, "value": v} for k, v in {"DEPLOY_VERSION": version, **(env or {})}.items()]
    td = ecs.register_task_definition(
        family=name, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="512", memory="1024",
        containerDefinitions=[{"name": name, "image": f"{image}:{version}", "cpu": 256, "memory": 512,
                               "portMappings": [{"containerPort": 8080}], "environment": environment,
                               "logConfiguration": {"logDriver": "awslogs", "options": {
                                   "awslogs-group": f"/ecs/{name}", "awslogs-stream-prefix": "ecs",
                                   "awslogs-region": "us-east-1"}}}])["taskDefinition"]["taskDefinitionArn"]
    logs.create_log_group(logGroupName=f"/ecs/{name}")  # what the tasks' log driver would have shipped
    logs.create_log_stream(logGroupName=f"/ecs/{name}", logStreamName=f"ecs/{name}/0f1e2d")
    logs.put_log_events(logGroupName=f"/ecs/{name}", logStreamName=f"ecs/{name}/0f1e2d", logEvents=[
        {"timestamp": int(time.time() * 1000), "message": "INFO listening on :8080"}])
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=replicas,
                       launchType="FARGATE",
                       loadBalancers=[{"targetGroupArn": lb.stable_tg, "containerName": name, "containerPort": 8080}],
                       networkConfiguration={"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [group],
                                                                       "assignPublicIp": "DISABLED"}})
    return td


def rule_weights(server: MotoServer, rule_arn: str, region: str = "us-east-1") -> dict[str, int]:
    """Target group ARN -> weight of a listener rule's forward action, as the API reads it back."""
    elb = server.client("elbv2", region)
    (rule,) = elb.describe_rules(RuleArns=[rule_arn])["Rules"]
    action = next(a for a in rule["Actions"] if a["Type"] == "forward")
    return {tg["TargetGroupArn"]: tg.get("Weight", 1) for tg in action["ForwardConfig"]["TargetGroups"]}


class EcsController:
    """Plays the ECS scheduler for a moto server in this process (moto never progresses a deployment).

    When a service's task definition or desired count changes, its PRIMARY deployment takes them over and,
    after ``ready_after`` seconds, every desired task runs and the rollout is ``COMPLETED``. Versions in
    ``failures`` never get there: their tasks stop with that reason (``CannotPullContainerError: ...``) and
    the deployment is ``FAILED`` (the circuit breaker), or, for ``"never-ready"``, stays ``IN_PROGRESS``.
    """

    def __init__(self, server: MotoServer, region: str = "us-east-1", ready_after: float = 0.2,
                 failures: dict[str, str] | None = None, interval: float = 0.05) -> None:
        import threading

        from moto.backends import get_backend
        from moto.core import DEFAULT_ACCOUNT_ID

        self.server = server
        self.backend = get_backend("ecs")[DEFAULT_ACCOUNT_ID][region]
        self.region = region
        self.ready_after = ready_after
        self.failures = dict(failures or {})
        self.interval = interval
        self.seen: dict[str, tuple[str, int, float]] = {}
        self.stopped: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ecs-controller")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for service in list(self.backend.services.values()):
                try:
                    self._reconcile(service)
                except Exception as exc:  # keep going; a test reads errors if it must
                    self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def _version(self, td_arn: str) -> str | None:
        td = self.backend.describe_task_definition(td_arn)
        tags = {t["key"]: t["value"] for t in (self.backend.list_tags_for_resource(td_arn) or [])}
        if "deploy.airflow.apache.org/version" in tags:
            return tags["deploy.airflow.apache.org/version"]
        for c in td.container_definitions:
            for e in c.get("environment") or []:
                if e.get("name") == "DEPLOY_VERSION":
                    return e.get("value")
        return None

    def _reconcile(self, service: Any) -> None:
        if service.status != "ACTIVE" or not service.deployments:
            return
        primary = service.deployments[0]
        state = (service.task_definition, service.desired_count)
        now = time.monotonic()
        seen = self.seen.get(service.arn)
        if seen is None or seen[:2] != state:
            if primary["taskDefinition"] == state[0] and primary["runningCount"] == state[1] and seen is None:
                self.seen[service.arn] = (*state, now - self.ready_after)
                return
            self.seen[service.arn] = (*state, now)
            primary.update(taskDefinition=state[0], desiredCount=state[1], rolloutState="IN_PROGRESS",
                           rolloutStateReason="ECS deployment in progress.", runningCount=0,
                           pendingCount=state[1])
            service.running_count, service.pending_count = 0, state[1]
            return
        if now - seen[2] < self.ready_after or primary["rolloutState"] != "IN_PROGRESS":
            return
        failure = self.failures.get(self._version(state[0]) or "")
        if failure == "never-ready":
            return
        if failure:
            self._stopped_task(service, failure)
            primary.update(rolloutState="FAILED", rolloutStateReason="ECS deployment circuit breaker: tasks "
                                                                     "failed to start.")
            return
        primary.update(rolloutState="COMPLETED", rolloutStateReason="ECS deployment completed.",
                       runningCount=state[1], pendingCount=0)
        service.running_count, service.pending_count = state[1], 0

    def _stopped_task(self, service: Any, reason: str) -> None:
        if (service.arn, service.task_definition) in self.stopped:
            return
        self.stopped.add((service.arn, service.task_definition))
        ecs = self.server.client("ecs", self.region)
        tasks = ecs.run_task(cluster=service.cluster_name, taskDefinition=service.task_definition,
                             launchType="FARGATE", startedBy=service.name, count=1,
                             networkConfiguration=service.network_configuration or None)["tasks"]
        for task in tasks:
            ecs.stop_task(cluster=service.cluster_name, task=task["taskArn"], reason=reason)


class EcsNetwork(RoleNetwork):
    """What the worker would reach through the load balancer: the stable and canary ECS services and the ALB,
    answering with the version the service runs once all its tasks run (see ``RoleNetwork``)."""

    def __init__(self, server: MotoServer, cluster: str, service: str, region: str = "us-east-1") -> None:
        ecs = server.client("ecs", region)
        names = {"stable": service, "canary": f"{service}-canary"}

        def version_of(role: str) -> str | None:
            found = ecs.describe_services(cluster=cluster, services=[names[role]])["services"]
            if not found or found[0]["status"] != "ACTIVE":
                return None
            primary = found[0]["deployments"][0] if found[0]["deployments"] else {}
            if primary.get("taskDefinition") != found[0]["taskDefinition"] or not primary.get("runningCount"):
                return None
            td = ecs.describe_task_definition(taskDefinition=found[0]["taskDefinition"])["taskDefinition"]
            env = {e["name"]: e["value"] for e in td["containerDefinitions"][0].get("environment") or []}
            return env.get("DEPLOY_VERSION")

        super().__init__(version_of)
