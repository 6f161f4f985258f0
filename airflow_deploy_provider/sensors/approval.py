"""Approval of a deployment by people."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.registry import NotImplementedForPlatform


class ApprovalSensor(DeploymentBaseOperator):
    """
    Waits for the approvals a policy requires: every group's ``required`` distinct members, none of them the
    person who triggered the run or authored the commit. A rejection stops the run with its reason; an
    unanswered request expires after the policy's timeout. Decisions go to the ledger.

    Template fields: ``deployment_id``, ``version``, ``severity``.

    :param policies: approval policy (``groups``, ``timeout``) by name; ``default`` or a hotfix severity.
    :param severity: which policy applies (templated); ``default`` unless a hotfix.
    :param version: the version to approve (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "severity")
    ui_color = "#fbbc04"
    waits_for_people = True
    expected_duration = timedelta(0)

    def __init__(self, *, policies: dict[str, dict[str, Any]], severity: str = "default", version: str = "",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not policies:
            raise ValueError(f"{self.task_id}: at least one approval policy is needed")
        for name, policy in policies.items():
            groups = policy.get("groups") or []
            if not groups:
                raise ValueError(f"{self.task_id}: policy {name!r} has no groups")
            for group in groups:
                if group.get("members") and group.get("required", 1) > len(set(group["members"])):
                    raise ValueError(f"{self.task_id}: group {group.get('name')!r} needs more approvals than members")
        self.policies = policies
        self.severity = severity
        self.version = version

    def describe(self) -> str:
        parts = []
        for name, policy in self.policies.items():
            groups = ", ".join(f"{g.get('required', 1)} x {g['name']}" for g in policy["groups"])
            parts.append(groups if name == "default" else f"{name}: {groups}")
        return "wait for approval: " + "; ".join(parts)

    def execute(self, context: Any) -> None:
        raise NotImplementedForPlatform(
            "approvals are not implemented in this version of airflow-deploy-provider; set "
            f"approvals.{self.environment}.enabled: false in service.yaml to deploy without approval")
