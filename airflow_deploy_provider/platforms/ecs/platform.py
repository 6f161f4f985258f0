"""AWS ECS through the amazon provider's hooks (``platform.type: ecs``).

Objects, for a service ``checkout`` in cluster ``shop``:

* ECS service ``checkout``: the stable version (blue in blue-green), behind the stable target group. The
  platform team creates it (network configuration, launch type, load balancer); the provider updates it.
* ECS service ``checkout-canary``: the new version while it is introduced (green in blue-green), a copy of
  the stable service behind the canary target group; created by the provider and deleted after promotion or
  rollback.
* Task definitions: a new revision of the stable service's family per version (image, resources,
  ``DEPLOY_VERSION``), tagged ``deploy.airflow.apache.org/version``; an existing revision of a version is reused,
  so going back to a version is ``update-service --task-definition <that revision> --force-new-deployment``.
* Traffic: the ALB listener rule's weighted forward action between the two target groups, read back after
  every change.
* Maintenance mode: a second rule on the same listener, just above the service's rule with the same
  conditions, answering with a fixed response (HTTP 503 and the maintenance page), tagged
  ``deploy.airflow.apache.org/maintenance`` with the service rule's ARN; leaving it deletes that rule. The
  target groups' health checks reach the tasks directly, so they keep passing, and deployments behind the
  page go on as usual.

Every method converges: it reads what is there and changes only what differs.
"""

from __future__ import annotations

import copy
import json
from functools import cached_property
from typing import Any

from airflow_deploy_provider.platforms.base import (
    DeploymentPlatform,
    MaintenanceState,
    PlatformError,
    Role,
    RolloutStatus,
    Target,
    TrafficSplit,
    WorkloadSpec,
)
from airflow_deploy_provider.platforms.ecs.status import VERSION_ENV, VERSION_TAG, rollout_decision

MARKER_TAG = "deploy.airflow.apache.org/deployment-started"
MAINTENANCE_TAG = "deploy.airflow.apache.org/maintenance"  # value: the ARN of the rule it stands in front of
# An ALB fixed response carries at most 1024 characters of body and no headers of our choosing (no Retry-After).
MAINTENANCE_PAGE = ('<!doctype html><html><head><meta charset="utf-8"><title>Maintenance</title></head>'
                    "<body><h1>Down for maintenance</h1><p>{message}</p></body></html>")
MAX_RULE_PRIORITY = 50000
# register_task_definition accepts these fields of a described task definition.
_TD_FIELDS = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
              "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode",
              "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform")
# create_service accepts these fields of a described service (the canary is a copy of stable).
_SERVICE_FIELDS = ("launchType", "capacityProviderStrategy", "platformVersion", "networkConfiguration",
                   "healthCheckGracePeriodSeconds", "placementConstraints", "placementStrategy",
                   "schedulingStrategy", "enableECSManagedTags", "propagateTags", "enableExecuteCommand")
_SCALABLE = {"ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount"}


class EcsPlatform(DeploymentPlatform):
    """
    Deploys to an ECS cluster: the stable service updated to new task definition revisions, a canary (green)
    service beside it, and traffic split by an ALB listener rule's weighted forward action.

    Settings (``platform`` in ``service.yaml``): ``connection`` (an AWS connection), ``region``, ``cluster``,
    ``service_name``, ``listener_rule_arn``, ``target_groups`` (``stable``, ``canary``), ``container``,
    ``endpoints``; the factory adds ``strategy`` (the environment's).
    """

    type = "ecs"

    def __init__(self, settings: dict[str, Any], target: Target):
        super().__init__(settings, target)
        self.conn_id: str = settings.get("connection") or "aws_default"
        self.region: str | None = settings.get("region") or target.region
        self.cluster: str = settings.get("cluster") or target.environment
        self.name: str = settings.get("service_name") or target.service
        self.canary_name = f"{self.name}-canary"
        self.rule_arn: str | None = settings.get("listener_rule_arn")
        self.container: str | None = settings.get("container")
        self._versions: dict[str, str | None] = {}  # task definition ARN -> version

    # ------------------------------------------------------------------------------------------ clients

    def _client(self, client_type: str) -> Any:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.conn_id, region_name=self.region, client_type=client_type).conn

    @cached_property
    def ecs(self) -> Any:
        from airflow.providers.amazon.aws.hooks.ecs import EcsHook

        return EcsHook(aws_conn_id=self.conn_id, region_name=self.region).conn

    @cached_property
    def elb(self) -> Any:
        return self._client("elbv2")

    @cached_property
    def autoscaling(self) -> Any:
        return self._client("application-autoscaling")

    # ------------------------------------------------------------------------------------------ reading

    def service_name(self, role: Role) -> str:
        return self.name if role == "stable" else self.canary_name

    def _service(self, role: Role) -> dict[str, Any] | None:
        found = self.ecs.describe_services(cluster=self.cluster, services=[self.service_name(role)])
        service = next(iter(found.get("services") or []), None)
        if service is None or service.get("status") != "ACTIVE":
            return None
        return service

    def _task_definition(self, arn: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        found = self.ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
        return found["taskDefinition"], found.get("tags") or []

    def version_of(self, td_arn: str | None) -> str | None:
        """The version a task definition runs: its version tag, else the container's ``DEPLOY_VERSION``."""
        if not td_arn:
            return None
        if td_arn not in self._versions:
            self._versions[td_arn] = self._version_from(*self._task_definition(td_arn))
        return self._versions[td_arn]

    def _version_from(self, td: dict[str, Any], tags: list[dict[str, str]]) -> str | None:
        version = next((t["value"] for t in tags if t.get("key") == VERSION_TAG), None)
        if version is None:
            version = next((e["value"] for e in self._container_of(td).get("environment") or []
                            if e.get("name") == VERSION_ENV), None)
        return version

    def _container_of(self, td: dict[str, Any]) -> dict[str, Any]:
        containers = td.get("containerDefinitions") or []
        wanted = self.container or self.target.service
        found = next((c for c in containers if c.get("name") == wanted), None)
        if found is None and len(containers) == 1:
            found = containers[0]  # the task's only container, whatever its name
        if found is None:
            raise PlatformError(f"task definition {td.get('family')}:{td.get('revision')} has no container "
                                f"{wanted!r} (set platform.container)", reason="InvalidConfiguration")
        return found

    # ------------------------------------------------------------------------------------------ task definitions

    def _revision_for(self, spec: WorkloadSpec, base_arn: str) -> str:
        """The task definition revision running ``spec``: the base itself, an earlier revision of this version
        with the same image (a rollback reuses it), or a new revision registered from the base."""
        base, _ = self._task_definition(base_arn)
        if self.version_of(base_arn) == spec.version and self._container_of(base).get("image") == spec.image:
            return base_arn
        for arn in self._revisions(base["family"])[:50]:
            if self.version_of(arn) == spec.version:
                td, _ = self._task_definition(arn)
                if self._container_of(td).get("image") == spec.image:
                    return arn
        return self._register(base, spec)

    def _revisions(self, family: str, status: str = "ACTIVE") -> list[str]:
        """ARNs of a family's revisions, newest first (``familyPrefix`` also matches longer family names)."""
        arns = []
        for page in self.ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, status=status):
            arns += [a for a in page.get("taskDefinitionArns") or []
                     if a.split(":task-definition/", 1)[-1].rsplit(":", 1)[0] == family]
        return sorted(arns, key=lambda a: int(a.rsplit(":", 1)[-1]), reverse=True)

    def _register(self, base: dict[str, Any], spec: WorkloadSpec) -> str:
        body = {k: copy.deepcopy(base[k]) for k in _TD_FIELDS if base.get(k) not in (None, [], {})}
        container = self._container_of(body)
        container["image"] = spec.image
        env = {e["name"]: e for e in container.get("environment") or []}
        for key, value in {VERSION_ENV: spec.version, **spec.env}.items():
            env[key] = {"name": key, "value": str(value)}
        container["environment"] = list(env.values())
        limits = (spec.resources or {}).get("limits") or {}
        requests = (spec.resources or {}).get("requests") or {}
        if limits.get("memory"):
            container["memory"] = _mebibytes(limits["memory"])  # hard limit: the task is killed above it
        if requests.get("memory"):
            container["memoryReservation"] = _mebibytes(requests["memory"])
        cpu = requests.get("cpu") or limits.get("cpu")
        if cpu:
            container["cpu"] = _cpu_units(cpu)
        created = self.ecs.register_task_definition(**body, tags=[{"key": VERSION_TAG, "value": spec.version}])
        arn = created["taskDefinition"]["taskDefinitionArn"]
        self._versions[arn] = spec.version
        return arn

    # --------------------------------------------------------------------------------- the version lifecycle

    def deploy(self, spec: WorkloadSpec, role: Role) -> None:
        stable = self._service("stable")
        if stable is None:
            raise PlatformError(f"ECS service {self.name!r} not found in cluster {self.cluster!r}: create it with "
                                "its network configuration and target group first (docs/ecs.md)",
                                reason="NotDeployed")
        td_arn = self._revision_for(spec, stable["taskDefinition"])
        if role == "stable":
            self._update(stable, td_arn, spec.replicas, self._deployment_configuration(spec))
            return
        canary = self._service("canary")
        if canary is None:
            if self.rule_arn and self.traffic_weight() != 0:
                self._set_weight(0)  # a leftover weight must not reach tasks that are not under watch yet
            self._create_canary(stable, td_arn, spec.replicas)
            return
        if canary["taskDefinition"] != td_arn and self.rule_arn:
            self._set_weight(0)  # another canary version: out of traffic before it is replaced
        self._update(canary, td_arn, spec.replicas, None)

    def _deployment_configuration(self, spec: WorkloadSpec) -> dict[str, Any]:
        if spec.strategy == "recreate":
            return {"minimumHealthyPercent": 0, "maximumPercent": 100}
        rolling = spec.rolling or {}
        surge = _percent(rolling.get("max_surge", "25%"), spec.replicas)
        unavailable = _percent(rolling.get("max_unavailable", 0), spec.replicas)
        return {"minimumHealthyPercent": max(0, 100 - unavailable), "maximumPercent": 100 + max(surge, 0) or 200}

    def _update(self, service: dict[str, Any], td_arn: str, replicas: int,
                configuration: dict[str, Any] | None, force: bool = False) -> None:
        if service["taskDefinition"] == td_arn and service.get("desiredCount") == replicas and not force:
            return  # already there (a retried task)
        kwargs: dict[str, Any] = {"cluster": self.cluster, "service": service["serviceName"],
                                  "taskDefinition": td_arn, "desiredCount": replicas}
        if configuration:
            kwargs["deploymentConfiguration"] = configuration
        if force:
            kwargs["forceNewDeployment"] = True
        self.ecs.update_service(**kwargs)

    def _create_canary(self, stable: dict[str, Any], td_arn: str, replicas: int) -> None:
        balancers = stable.get("loadBalancers") or []
        kwargs: dict[str, Any] = {k: copy.deepcopy(stable[k]) for k in _SERVICE_FIELDS
                                  if stable.get(k) not in (None, [], {})}
        if self.rule_arn or self.settings.get("target_groups"):
            if not balancers:
                raise PlatformError(f"ECS service {self.name!r} has no load balancer: a canary needs the stable "
                                    "service behind a target group", reason="InvalidConfiguration")
            kwargs["loadBalancers"] = [{**{k: v for k, v in balancers[0].items() if k != "loadBalancerName"},
                                        "targetGroupArn": self.target_groups()["canary"]}]
        self.ecs.create_service(cluster=self.cluster, serviceName=self.canary_name, taskDefinition=td_arn,
                                desiredCount=replicas, tags=[{"key": "deploy.airflow.apache.org/role",
                                                              "value": "canary"}], **kwargs)

    def _stopped_tasks(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        arns = self.ecs.list_tasks(cluster=self.cluster, serviceName=service["serviceName"],
                                   desiredStatus="STOPPED").get("taskArns") or []
        if not arns:
            return []
        tasks = self.ecs.describe_tasks(cluster=self.cluster, tasks=arns[:20]).get("tasks") or []
        return [t for t in tasks if t.get("taskDefinitionArn") == service.get("taskDefinition")]

    def rollout_status(self, role: Role) -> RolloutStatus:
        service = self._service(role)
        if service is None:
            return rollout_decision(role, None, None)
        return rollout_decision(role, service, self.version_of(service.get("taskDefinition")),
                                self._stopped_tasks(service))

    async def async_rollout_status(self, role: Role) -> RolloutStatus:
        """The trigger's view of a rollout, through the amazon provider's async (aiobotocore) client."""
        from airflow.providers.amazon.aws.hooks.ecs import EcsHook

        hook = EcsHook(aws_conn_id=self.conn_id, region_name=self.region)
        async with await hook.get_async_conn() as ecs:
            found = await ecs.describe_services(cluster=self.cluster, services=[self.service_name(role)])
            service = next(iter(found.get("services") or []), None)
            if service is None or service.get("status") != "ACTIVE":
                return rollout_decision(role, None, None)
            td_arn = service.get("taskDefinition")
            version = self._versions.get(td_arn)
            if td_arn and td_arn not in self._versions:
                described = await ecs.describe_task_definition(taskDefinition=td_arn, include=["TAGS"])
                version = self._version_from(described["taskDefinition"], described.get("tags") or [])
                self._versions[td_arn] = version
            arns = (await ecs.list_tasks(cluster=self.cluster, serviceName=service["serviceName"],
                                         desiredStatus="STOPPED")).get("taskArns") or []
            tasks = (await ecs.describe_tasks(cluster=self.cluster, tasks=arns[:20])).get("tasks") or [] \
                if arns else []
        stopped = [t for t in tasks if t.get("taskDefinitionArn") == td_arn]
        return rollout_decision(role, service, version, stopped)

    # ------------------------------------------------------------------------------------------ traffic

    def target_groups(self, rule: dict[str, Any] | None = None) -> dict[str, str]:
        """The stable and canary target groups: configured, or the forward action of ``rule`` (read when not
        given), stable first."""
        configured = self.settings.get("target_groups")
        if configured:
            return {"stable": configured["stable"], "canary": configured["canary"]}
        groups = [g["TargetGroupArn"] for g in self._forward(rule or self._rule()).get("TargetGroups") or []]
        if len(groups) < 2:
            raise PlatformError(f"listener rule {self.rule_arn} forwards to {len(groups)} target group(s); it needs "
                                "the stable and the canary target group (docs/ecs.md)", reason="RouterNotFound")
        return {"stable": groups[0], "canary": groups[1]}

    def _rule(self) -> dict[str, Any]:
        if not self.rule_arn:
            raise PlatformError("canary and blue-green on ECS need platform.listenerRuleArn: the ALB listener rule "
                                "whose weighted forward action splits traffic", reason="RouterNotFound")
        rules = self.elb.describe_rules(RuleArns=[self.rule_arn]).get("Rules") or []
        if not rules:
            raise PlatformError(f"listener rule {self.rule_arn} not found", reason="RouterNotFound")
        return rules[0]

    @staticmethod
    def _forward(rule: dict[str, Any]) -> dict[str, Any]:
        action = next((a for a in rule.get("Actions") or [] if a.get("Type") == "forward"), None)
        if action is None:
            raise PlatformError(f"listener rule {rule.get('RuleArn')} has no forward action", reason="RouterNotFound")
        return action.get("ForwardConfig") or {"TargetGroups": [{"TargetGroupArn": action["TargetGroupArn"],
                                                                 "Weight": 1}]}

    def traffic_weight(self) -> int:
        """The canary target group's share of the rule's weights, in percent."""
        rule = self._rule()
        groups = self.target_groups(rule)
        weights = {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in
                   self._forward(rule).get("TargetGroups") or []}
        total = sum(weights.values())
        return round(100 * weights.get(groups["canary"], 0) / total) if total else 0

    def _set_weight(self, canary_weight: int) -> None:
        rule = self._rule()
        forward = self._forward(rule)
        groups = self.target_groups(rule)
        wanted = {groups["stable"]: 100 - canary_weight, groups["canary"]: canary_weight}
        current = {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in forward.get("TargetGroups") or []}
        if current == wanted:
            return  # no write when nothing changes (retries)
        config: dict[str, Any] = {"TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in wanted.items()]}
        if forward.get("TargetGroupStickinessConfig"):
            config["TargetGroupStickinessConfig"] = forward["TargetGroupStickinessConfig"]
        self.elb.modify_rule(RuleArn=self.rule_arn, Actions=[{"Type": "forward", "ForwardConfig": config}])

    def set_traffic(self, canary_weight: int) -> TrafficSplit:
        if not 0 <= canary_weight <= 100:
            raise PlatformError(f"canary weight must be 0-100, not {canary_weight}")
        if canary_weight and self._service("canary") is None:
            raise PlatformError(f"no canary ECS service {self.canary_name!r} in {self.cluster!r} to send traffic to",
                                reason="NotDeployed")
        self._set_weight(canary_weight)
        return self.traffic()

    def traffic(self) -> TrafficSplit:
        stable, canary = self._service("stable"), self._service("canary")
        weight = self.traffic_weight() if self.rule_arn else (0 if canary is None else 100)
        return TrafficSplit(stable_version=self.version_of((stable or {}).get("taskDefinition")),
                            canary_version=self.version_of((canary or {}).get("taskDefinition")),
                            canary_weight=weight)

    # ------------------------------------------------------------------------------------------ maintenance

    @classmethod
    def maintenance_support(cls, settings: dict[str, Any]) -> str | None:
        if not settings.get("listener_rule_arn"):
            return ("maintenance mode on ECS answers from the ALB listener: it needs platform.listenerRuleArn (the "
                    "rule that forwards the service's traffic)")
        return None

    def _listener_arn(self) -> str:
        return (self.rule_arn or "").replace(":listener-rule/", ":listener/").rsplit("/", 1)[0]

    def _maintenance_rule(self) -> dict[str, Any] | None:
        """The maintenance rule standing in front of this service's rule, found by its tag."""
        rules = [r for r in self._listener_rules() if r.get("RuleArn") != self.rule_arn and not r.get("IsDefault")
                 and any(a.get("Type") == "fixed-response" for a in r.get("Actions") or [])]
        for i in range(0, len(rules), 20):  # DescribeTags takes 20 ARNs at a time
            chunk = [r["RuleArn"] for r in rules[i:i + 20]]
            for desc in self.elb.describe_tags(ResourceArns=chunk).get("TagDescriptions") or []:
                if any(t.get("Key") == MAINTENANCE_TAG and t.get("Value") == self.rule_arn
                       for t in desc.get("Tags") or []):
                    return next(r for r in rules if r["RuleArn"] == desc["ResourceArn"])
        return None

    def _listener_rules(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ListenerArn": self._listener_arn()}
        while True:
            page = self.elb.describe_rules(**kwargs)
            rules += page.get("Rules") or []
            if not page.get("NextMarker"):
                return rules
            kwargs["Marker"] = page["NextMarker"]

    @staticmethod
    def _conditions(rule: dict[str, Any]) -> list[dict[str, Any]]:
        """A rule's conditions as CreateRule takes them: each with its ``...Config`` block, or ``Values``."""
        out = []
        for cond in rule.get("Conditions") or []:
            config = {k: v for k, v in cond.items() if k.endswith("Config")}
            out.append({"Field": cond["Field"], **(config or {"Values": cond.get("Values") or []})})
        return out

    def _free_priority(self, service_rule: dict[str, Any], rules: list[dict[str, Any]]) -> int:
        """The nearest free priority that takes precedence over the service's rule (below the others when the
        service's traffic is the listener's default action, so that no other service's traffic is caught)."""
        used = {int(r["Priority"]) for r in rules if str(r.get("Priority", "default")).isdigit()}
        if service_rule.get("IsDefault"):
            candidates = range(MAX_RULE_PRIORITY, 0, -1)
        else:
            candidates = range(int(service_rule["Priority"]) - 1, 0, -1)
        free = next((p for p in candidates if p not in used), None)
        if free is None:
            raise PlatformError(f"no free priority ahead of listener rule {self.rule_arn} for the maintenance rule: "
                                "leave a gap in the listener's rule priorities", reason="InvalidConfiguration")
        return free

    def set_maintenance(self, enabled: bool, message: str = "", retry_after: int = 300) -> MaintenanceState:
        import html

        if self.maintenance_support(self.settings):
            return super().set_maintenance(enabled, message, retry_after)
        existing = self._maintenance_rule()
        if not enabled:
            if existing is not None:
                self.elb.delete_rule(RuleArn=existing["RuleArn"])
            return self.maintenance()
        body = MAINTENANCE_PAGE.format(message=html.escape(message or "The service is down for maintenance."))
        content_type = "text/html"
        if len(body) > 1024:
            body, content_type = (message or "")[:1024], "text/plain"
        action = {"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "503", "ContentType": content_type, "MessageBody": body}}
        if existing is None:
            service_rule = self._rule()
            conditions = self._conditions(service_rule) or [{"Field": "path-pattern",
                                                             "PathPatternConfig": {"Values": ["*"]}}]
            self.elb.create_rule(ListenerArn=self._listener_arn(), Conditions=conditions, Actions=[action],
                                 Priority=self._free_priority(service_rule, self._listener_rules()),
                                 Tags=[{"Key": MAINTENANCE_TAG, "Value": self.rule_arn}])
        else:
            current = next(a for a in existing["Actions"] if a.get("Type") == "fixed-response")
            if current.get("FixedResponseConfig") != action["FixedResponseConfig"]:  # a new message only
                self.elb.modify_rule(RuleArn=existing["RuleArn"], Actions=[action])
        return self.maintenance()

    def maintenance(self) -> MaintenanceState:
        import html
        import re

        if not self.rule_arn:
            return MaintenanceState(enabled=False)
        rule = self._maintenance_rule()
        if rule is None:
            return MaintenanceState(enabled=False, detail=f"no maintenance rule ahead of {self.rule_arn}")
        config = next(a for a in rule["Actions"] if a.get("Type") == "fixed-response").get("FixedResponseConfig") or {}
        body = config.get("MessageBody") or ""
        found = re.search(r"<p>(.*)</p>", body, re.S) if config.get("ContentType") == "text/html" else None
        return MaintenanceState(enabled=True, message=html.unescape(found.group(1)) if found else body,
                                detail=f"listener rule {rule['RuleArn']} (priority {rule.get('Priority')}): "
                                       f"fixed response {config.get('StatusCode')}")

    # ------------------------------------------------------------------------------------------ promotion

    def promote(self) -> bool:
        canary = self._service("canary")
        if canary is None:
            return True  # already promoted (retry)
        stable = self._service("stable")
        if stable is None:
            raise PlatformError(f"ECS service {self.name!r} disappeared during the rollout", reason="NotDeployed")
        replicas = max(int(stable.get("desiredCount") or 0), int(canary.get("desiredCount") or 0))
        if stable["taskDefinition"] == canary["taskDefinition"] and stable.get("desiredCount") == replicas \
                and self.rollout_status("stable").done:
            self.complete_promotion()
            return True
        self._update(stable, canary["taskDefinition"], replicas, None)
        return False

    def complete_promotion(self) -> None:
        # Stable runs the new version now: traffic goes back to it, then the canary service goes away.
        if self.rule_arn:
            self._set_weight(0)
        self._delete_canary()

    def _delete_canary(self) -> None:
        canary = self._service("canary")
        if canary is None:
            return
        if canary.get("desiredCount"):
            self.ecs.update_service(cluster=self.cluster, service=self.canary_name, desiredCount=0)
        self.ecs.delete_service(cluster=self.cluster, service=self.canary_name, force=True)

    def abort(self) -> None:
        if self.rule_arn:
            try:
                self._set_weight(0)
            except PlatformError as exc:
                if exc.reason != "RouterNotFound":
                    raise
        self._delete_canary()

    def scale(self, role: Role, replicas: int) -> None:
        service = self._service(role)
        if service is None or service.get("desiredCount") == replicas:
            return
        self.ecs.update_service(cluster=self.cluster, service=self.service_name(role), desiredCount=replicas)

    # ------------------------------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        stable, canary = self._service("stable"), self._service("canary")
        td = None
        if stable is not None:
            td, _ = self._task_definition(stable["taskDefinition"])
            td = {k: td[k] for k in _TD_FIELDS + ("taskDefinitionArn", "revision") if k in td}
        target = self._scalable_target()

        def role(service: dict[str, Any] | None) -> dict[str, Any] | None:
            if service is None:
                return None
            return {"version": self.version_of(service["taskDefinition"]), "replicas": service.get("desiredCount"),
                    "task_definition": service["taskDefinition"]}

        return {
            "platform": self.type, "cluster": self.cluster, "region": self.region, "stable": role(stable),
            "canary": role(canary), "traffic": self.traffic().to_dict(),
            "manifests": {"task_definition": td,
                          "autoscaling": {k: target[k] for k in ("MinCapacity", "MaxCapacity", "SuspendedState")
                                          if k in target} if target else None},
        }

    def restore(self, snapshot: dict[str, Any]) -> bool:
        """Take the canary out, put back the snapshot's task definition, task count and autoscaling state.
        Returns whether the stable service is stable on it; otherwise the caller waits for the rollout."""
        self.abort()
        saved = (snapshot.get("manifests") or {}).get("autoscaling")
        if saved and self._scalable_target() is not None:
            self.autoscaling.register_scalable_target(
                **_SCALABLE, ResourceId=self._resource_id, MinCapacity=saved["MinCapacity"],
                MaxCapacity=saved["MaxCapacity"], SuspendedState=saved.get("SuspendedState") or {})
        before = snapshot.get("stable")
        stable = self._service("stable")
        if before is None or stable is None:
            return True  # nothing ran before this rollout (the new version was only ever a canary)
        if stable["taskDefinition"] == before["task_definition"] and stable.get("desiredCount") == before["replicas"] \
                and self.rollout_status("stable").done:
            return True
        self._update(stable, before["task_definition"], int(before["replicas"] or 0), None, force=True)
        return False

    # ------------------------------------------------------------------------------------------ the rest

    @property
    def _resource_id(self) -> str:
        return f"service/{self.cluster}/{self.name}"

    def _scalable_target(self) -> dict[str, Any] | None:
        found = self.autoscaling.describe_scalable_targets(**{"ServiceNamespace": "ecs"},
                                                           ResourceIds=[self._resource_id],
                                                           ScalableDimension=_SCALABLE["ScalableDimension"])
        return next(iter(found.get("ScalableTargets") or []), None)

    def set_autoscaling(self, enabled: bool) -> str:
        target = self._scalable_target()
        if target is None:
            return f"no Application Auto Scaling target for {self._resource_id}: nothing to " \
                   f"{'re-enable' if enabled else 'disable'}"
        suspended = not enabled
        state = target.get("SuspendedState") or {}
        keys = ("DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended")
        if all(bool(state.get(k)) == suspended for k in keys):
            return f"autoscaling of {self._resource_id} already {'suspended' if suspended else 'active'}"
        # Suspending keeps the policies and the range: re-enabling gives back exactly what was there.
        self.autoscaling.register_scalable_target(**_SCALABLE, ResourceId=self._resource_id,
                                                  SuspendedState={k: suspended for k in keys})
        return f"autoscaling of {self._resource_id} {'suspended' if suspended else 're-enabled'} " \
               f"({target.get('MinCapacity')}-{target.get('MaxCapacity')} tasks)"

    def annotate(self, marker: dict[str, Any]) -> str:
        stable = self._service("stable")
        if stable is None:
            return f"no ECS service {self.name!r} yet: marker recorded in the ledger only"
        value = json.dumps({k: marker[k] for k in ("deployment_id", "version", "at") if k in marker})[:256]
        self.ecs.tag_resource(resourceArn=stable["serviceArn"], tags=[{"key": MARKER_TAG, "value": value}])
        return f"tag {MARKER_TAG} set on ECS service {self.name!r}"

    def cleanup(self, keep: int) -> str:
        stable = self._service("stable")
        if stable is None:
            return "nothing deployed"
        family = self._task_definition(stable["taskDefinition"])[0]["family"]
        arns = self._revisions(family)
        in_use = {stable["taskDefinition"], (self._service("canary") or {}).get("taskDefinition")}
        versions: list[str] = []
        retired = []
        for arn in arns:  # newest first
            version = self.version_of(arn)
            if version in versions:
                continue  # another revision of a kept version
            if arn in in_use or len(versions) < keep:
                versions.append(version)  # type: ignore[arg-type]
                continue
            self.ecs.deregister_task_definition(taskDefinition=arn)
            retired.append(arn.rsplit("/", 1)[-1])
        return f"kept task definitions of {len(versions)} version(s); deregistered {len(retired)}: " + \
            (", ".join(retired) or "none")

    def logs(self, role: Role, lines: int = 200) -> list[str]:
        service = self._service(role)
        if service is None:
            return []
        td, _ = self._task_definition(service["taskDefinition"])
        container = self._container_of(td)
        options = (container.get("logConfiguration") or {}).get("options") or {}
        if (container.get("logConfiguration") or {}).get("logDriver") != "awslogs" or not options.get("awslogs-group"):
            raise PlatformError(f"container {container['name']!r} does not log to CloudWatch Logs (awslogs)",
                                reason="NoLogs")
        prefix = options.get("awslogs-stream-prefix")
        kwargs: dict[str, Any] = {"logGroupName": options["awslogs-group"], "limit": lines}
        if prefix:
            kwargs["logStreamNamePrefix"] = f"{prefix}/{container['name']}"
        events = self._client("logs").filter_log_events(**kwargs).get("events") or []
        return [f"{e.get('logStreamName', '')}: {e.get('message', '').rstrip()}" for e in events[-lines:]]

    def capacity(self, spec: WorkloadSpec) -> dict[str, Any]:
        stable = self._service("stable")
        if stable is not None and (stable.get("launchType") == "FARGATE" or any(
                "FARGATE" in s.get("capacityProvider", "") for s in stable.get("capacityProviderStrategy") or [])):
            return {"fits": True, "detail": "Fargate: AWS provides the capacity (a placement failure fails the "
                                            "rollout with ECS's reason)"}
        clusters = self.ecs.describe_clusters(clusters=[self.cluster]).get("clusters") or []
        instances = int((clusters[0] if clusters else {}).get("registeredContainerInstancesCount") or 0)
        if not instances:
            return {"fits": False, "detail": f"cluster {self.cluster!r} has no container instances for EC2 tasks"}
        return {"fits": True, "detail": f"cluster {self.cluster!r} has {instances} container instance(s); ECS "
                                        "reports placement failures in the service events"}

    def endpoint(self, role: Role | None = None) -> str:
        configured = (self.settings.get("endpoints") or {}).get({None: "live"}.get(role, role))  # type: ignore[arg-type]
        if configured:
            return configured.rstrip("/")
        if role is None and self.rule_arn:
            listener = self.rule_arn.replace(":listener-rule/", ":listener/").rsplit("/", 1)[0]
            found = self.elb.describe_listeners(ListenerArns=[listener]).get("Listeners") or []
            if found:
                lb = self.elb.describe_load_balancers(LoadBalancerArns=[found[0]["LoadBalancerArn"]])
                dns = lb["LoadBalancers"][0]["DNSName"]
                scheme = "https" if found[0].get("Protocol") == "HTTPS" else "http"
                return f"{scheme}://{dns}:{found[0].get('Port', 80)}"
        raise PlatformError(f"no address for the {role or 'live'} tasks of {self.name!r}: set "
                            f"platform.endpoints.{role or 'live'}", reason="InvalidConfiguration")

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cluster": self.cluster, "region": self.region}
        for role in ("stable", "canary"):
            service = self._service(role)  # type: ignore[arg-type]
            out[role] = None if service is None else {
                "service": service["serviceName"], "version": self.version_of(service["taskDefinition"]),
                "task_definition": service["taskDefinition"].rsplit("/", 1)[-1],
                "desired": service.get("desiredCount"), "running": service.get("runningCount")}
        out["traffic"] = self.traffic().to_dict() if self.rule_arn else None
        return out


# ---------------------------------------------------------------------------------------------- helpers

_MEMORY = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "K": 1 / 1024, "M": 1, "G": 1024}


def _mebibytes(value: Any) -> int:
    """A Kubernetes-style memory quantity (``512Mi``, ``1Gi``) in MiB, as ECS takes it."""
    text = str(value).strip()
    for suffix in sorted(_MEMORY, key=len, reverse=True):
        if text.endswith(suffix):
            return max(1, int(float(text[: -len(suffix)]) * _MEMORY[suffix]))
    return max(1, int(float(text) / 2**20))  # plain bytes


def _cpu_units(value: Any) -> int:
    """CPU (``500m``, ``0.5``, ``2``) in ECS CPU units (1024 per vCPU)."""
    text = str(value).strip()
    cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, int(round(cores * 1024)))


def _percent(value: Any, replicas: int) -> int:
    text = str(value).strip()
    if text.endswith("%"):
        return int(float(text[:-1]))
    return int(round(100 * int(text) / max(1, replicas)))
