"""The generated production and rollback DAGs run end to end with ``dag.test()`` on the ECS platform (moto
server, ``EcsController`` playing the ECS scheduler), with the metric gate on CloudWatch target-group metrics
the test puts into moto.

Assertions read the AWS API: listener rule weights at each step (moto keeps no history, so the test records
every weight the rule had through the ELBv2 API while the run goes on), task definition revisions, the
services, the ledger and Slack.
"""

from __future__ import annotations

import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest

from tests.aws import (  # noqa: F401
    EcsController,
    EcsNetwork,
    aws_connection,
    create_load_balancer,
    create_stable_service,
    moto_server,
)
from tests.conftest import UNGOVERNED, fast_canary, write_service

pytestmark = pytest.mark.slow

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments"


def service_files(rule_arn: str, endpoints: dict[str, str]) -> dict[str, str]:
    return {
        "service.yaml": textwrap.dedent(f"""\
            service: payments
            image: {IMAGE}
            platform:
              type: ecs
              connection: aws_test
              region: us-east-1
              cluster: shop
              listenerRuleArn: {rule_arn}
              endpoints: {{live: "{endpoints['live']}", stable: "{endpoints['stable']}", canary: "{endpoints['canary']}"}}
            metrics:
              provider: cloudwatch
              connection: aws_test
            rollback:
              monitorDuration: 1s
            """) + UNGOVERNED,
        "production.yaml": textwrap.dedent("""\
            environment: production
            strategy: canary
            replicas: 4
            healthCheck: {initialDelay: 100ms, interval: 200ms, timeout: 2s}
            progressDeadline: 30s
            """) + fast_canary(),
    }


def staging_file(rule_arn: str, endpoints: dict[str, str]) -> str:
    return textwrap.dedent(f"""\
        environment: staging
        strategy: bluegreen
        replicas: 2
        healthCheck: {{initialDelay: 100ms, interval: 200ms, timeout: 2s}}
        progressDeadline: 30s
        platform:
          serviceName: payments-staging
          listenerRuleArn: {rule_arn}
          endpoints: {{live: "{endpoints['live']}", stable: "{endpoints['stable']}", canary: "{endpoints['canary']}"}}
        trafficSwitch: {{testDuration: 1s, rollbackOnError: true}}
        autoRollback:
          enabled: true
          conditions: ["error_rate > 5%"]
        """)


class Payments:
    """The payments service on ECS: cluster, ALB, the stable service on 1.0.0, the network and its DAGs."""

    def __init__(self, aws, tmp_path, dags_folder, staging: bool = False) -> None:
        from airflow.dag_processing.dagbag import DagBag

        self.aws = aws
        self.lb = create_load_balancer(aws, "payments")
        create_stable_service(aws, self.lb, "payments", IMAGE, "0.9.0")
        self.controller = EcsController(aws)
        self.network = EcsNetwork(aws, "shop", "payments")
        files = service_files(self.lb.rule_arn, self.network.endpoints())
        self.staging_lb = self.staging_network = None
        if staging:
            # Staging: its own ECS service and load balancer in the same cluster, through the environment
            # file's platform settings.
            self.staging_lb = create_load_balancer(aws, "paystage")
            create_stable_service(aws, self.staging_lb, "payments-staging", IMAGE, "0.9.0")
            self.staging_network = EcsNetwork(aws, "shop", "payments-staging")
            files["staging.yaml"] = staging_file(self.staging_lb.rule_arn, self.staging_network.endpoints())
        write_service(tmp_path / "services" / "payments", files)
        (dags_folder / "payments.py").write_text(
            "from airflow_deploy_provider.factory import register_deploy_dags\n"
            f"register_deploy_dags(globals(), roots=[{str(tmp_path / 'services')!r}])\n")
        self.bag = DagBag(str(dags_folder))
        assert self.bag.import_errors == {}
        self.seen: list[tuple[int, int]] = []

    def put_metrics(self, role: str, requests: int, errors: int, lb=None) -> None:
        """ALB metrics of a target group for the last minute."""
        lb = lb or self.lb
        tg = lb.stable_tg if role == "stable" else lb.canary_tg
        dims = [{"Name": "TargetGroup", "Value": tg.rsplit(":", 1)[1]},
                {"Name": "LoadBalancer", "Value": lb.dimension}]
        now = datetime.now(timezone.utc)
        data = [{"MetricName": "RequestCount", "Dimensions": dims, "Timestamp": now, "Value": requests, "Unit": "Count"}]
        if errors:
            data.append({"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": dims, "Timestamp": now,
                         "Value": errors, "Unit": "Count"})
        self.aws.client("cloudwatch").put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)

    def run(self, dag_id: str, lb=None, **conf):
        """Run a DAG while recording every weight of the listener rule."""
        stop = threading.Event()
        lb = lb or self.lb

        def watch() -> None:
            elb = self.aws.client("elbv2")
            while not stop.is_set():
                rule = elb.describe_rules(RuleArns=[lb.rule_arn])["Rules"][0]
                groups = {g["TargetGroupArn"]: g["Weight"] for g in rule["Actions"][0]["ForwardConfig"]["TargetGroups"]}
                pair = (groups[lb.stable_tg], groups[lb.canary_tg])
                if not self.seen or self.seen[-1] != pair:
                    self.seen.append(pair)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            run = self.bag.dags[dag_id].test(run_conf=conf)
        finally:
            stop.set()
            watcher.join(5)
        return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}

    def service(self, name: str = "payments") -> dict:
        return self.aws.client("ecs").describe_services(cluster="shop", services=[name])["services"][0]

    def image(self) -> str:
        td = self.aws.client("ecs").describe_task_definition(taskDefinition=self.service()["taskDefinition"])
        return td["taskDefinition"]["containerDefinitions"][0]["image"]

    def close(self) -> None:
        self.controller.stop()
        self.network.stop()
        if self.staging_network is not None:
            self.staging_network.stop()
        assert self.controller.errors == []


@pytest.fixture
def payments(moto_server, tmp_path, dags_folder, airflow_db, ledger, slack, monkeypatch):  # noqa: F811
    moto_server.reset()
    aws_connection(monkeypatch, moto_server, "aws_test")
    p = Payments(moto_server, tmp_path, dags_folder)
    p.put_metrics("stable", 1000, 1)
    yield p
    p.close()


@pytest.fixture
def payments_with_staging(moto_server, tmp_path, dags_folder, airflow_db, ledger, slack, monkeypatch):  # noqa: F811
    moto_server.reset()
    aws_connection(monkeypatch, moto_server, "aws_test")
    p = Payments(moto_server, tmp_path, dags_folder, staging=True)
    yield p
    p.close()


def only(ledger, version: str, kind: str = "deploy", environment: str = "production"):
    (d,) = [d for d in ledger.deployments("payments", environment) if d.version == version and d.kind == kind]
    return d


def test_canary_on_ecs_moves_listener_rule_weights_and_promotes(payments, ledger, slack):
    payments.put_metrics("canary", 1000, 2)  # 0.2% errors
    state, tasks = payments.run("deploy_payments_production", version="2.0.0")
    assert state == "success", tasks
    assert payments.seen == [(100, 0), (90, 10), (50, 50), (0, 100), (100, 0)]
    assert payments.image() == f"{IMAGE}:2.0.0"
    assert payments.service("payments-canary")["status"] != "ACTIVE"
    deployment = only(ledger, "2.0.0")
    assert deployment.status == "succeeded"
    gates = [e for e in ledger.events(deployment.id, kind="gate")]
    assert gates and all("error_rate" in str(e.data) for e in gates)
    assert any("2.0.0 deployment to production succeeded" in t for t in slack.texts)


def test_failing_canary_on_ecs_is_rolled_back_by_the_cloudwatch_gate(payments, ledger, slack):
    stable_td = payments.service()["taskDefinition"]
    payments.put_metrics("canary", 1000, 80)  # 8% errors: the rollback condition
    state, tasks = payments.run("deploy_payments_production", version="2.0.1")
    assert state == "failed"
    assert tasks["canary_deployment.step_1_10pct"] == "failed"
    assert payments.seen == [(100, 0), (90, 10), (100, 0)]
    assert payments.service()["taskDefinition"] == stable_td  # stable untouched
    assert payments.service("payments-canary")["status"] != "ACTIVE"
    deployment = only(ledger, "2.0.1")
    assert deployment.status == "rolled_back" and "error_rate > 5%" in deployment.outcome_reason
    assert len([t for t in slack.texts if "rolled back" in t and "2.0.1" in t]) == 1


def test_rollback_dag_on_ecs_reuses_the_previous_revision(payments, ledger):
    payments.put_metrics("canary", 1000, 0)
    for version in ("1.0.0", "2.0.0"):
        assert payments.run("deploy_payments_production", version=version)[0] == "success"
    count = len(payments.aws.client("ecs").list_task_definitions(familyPrefix="payments")["taskDefinitionArns"])
    state, tasks = payments.run("rollback_payments_production", reason="customer reports")
    assert state == "success", tasks
    assert payments.image() == f"{IMAGE}:1.0.0"
    assert payments.service()["taskDefinition"].endswith(":2")  # the revision 1.0.0 ran with, reused
    rollback = [d for d in ledger.deployments("payments", "production") if d.kind == "rollback"][0]
    assert (rollback.version, rollback.previous_version, rollback.status) == ("1.0.0", "2.0.0", "succeeded")
    assert len(payments.aws.client("ecs").list_task_definitions(familyPrefix="payments")["taskDefinitionArns"]) \
        == count


def test_ecs_failure_reason_reaches_the_ledger_and_the_notification(payments, ledger, slack):
    payments.controller.failures["3.0.1"] = ("CannotPullContainerError: pull image manifest has been retried 5 "
                                             "time(s): manifest unknown")
    state, tasks = payments.run("deploy_payments_production", version="3.0.1")
    assert state == "failed"
    assert tasks["canary_deployment.wait_canary_ready"] == "failed"
    assert tasks["canary_deployment.rollback"] == "success"
    assert payments.seen == [(100, 0)]  # no traffic ever reached the broken version
    assert payments.service("payments-canary")["status"] != "ACTIVE"
    deployment = only(ledger, "3.0.1")
    assert deployment.status == "rolled_back" and "CannotPullContainerError" in deployment.outcome_reason
    (notice,) = [t for t in slack.texts if "3.0.1" in t and "rolled back" in t]
    assert "CannotPullContainerError" in notice


def test_staging_blue_green_on_ecs_switches_the_listener_rule_then_back(payments_with_staging, ledger):
    p = payments_with_staging
    staging = p.staging_lb
    p.put_metrics("canary", 1000, 1, lb=staging)  # green healthy after the switch
    state, tasks = p.run("deploy_payments_staging", lb=staging, version="1.1.0")
    assert state == "success", tasks
    # green takes all traffic at the switch; once blue runs green's version, traffic goes back to blue's target
    # group and green is removed
    assert p.seen == [(100, 0), (0, 100), (100, 0)], p.seen
    assert p.service("payments-staging")["taskDefinition"] != p.service("payments")["taskDefinition"]
    td = p.aws.client("ecs").describe_task_definition(taskDefinition=p.service("payments-staging")["taskDefinition"])
    assert td["taskDefinition"]["containerDefinitions"][0]["image"].endswith(":staging-1.1.0")
    assert p.service("payments-staging-canary")["status"] != "ACTIVE"
    assert p.image() == f"{IMAGE}:0.9.0"  # production's service untouched
    assert only(ledger, "1.1.0", environment="staging").status == "succeeded"

    # 2.0.0 fails its watch after the switch (green's target group: 30% errors in the new datapoint): back to blue.
    p.seen.clear()
    p.put_metrics("canary", 1000, 300, lb=staging)
    state, tasks = p.run("deploy_payments_staging", lb=staging, version="2.0.0")
    assert state == "failed"
    assert tasks["blue_green_deployment.watch_after_switch"] == "failed"
    assert tasks["blue_green_deployment.switch_back_to_blue"] == "success"
    assert p.seen[0] == (100, 0) and (0, 100) in p.seen and p.seen[-1] == (100, 0), p.seen
    td = p.aws.client("ecs").describe_task_definition(taskDefinition=p.service("payments-staging")["taskDefinition"])
    assert td["taskDefinition"]["containerDefinitions"][0]["image"].endswith(":staging-1.1.0")
    assert p.service("payments-staging-canary")["status"] != "ACTIVE"
    assert only(ledger, "2.0.0", environment="staging").status == "rolled_back"
