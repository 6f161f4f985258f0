"""Global traffic between regions (GeoDNS weights)."""

from __future__ import annotations

from typing import Any

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.registry import NotImplementedForPlatform


class RegionDnsWeightOperator(DeploymentBaseOperator):
    """
    Sets a region's weighted DNS record (Route53 ``SetIdentifier`` = region) to ``weight`` and reads it back.

    :param dns: ``provider``, ``connection``, ``hosted_zone_id``, ``record_name``, ``ttl``.
    :param weights: weight of every region after this step, in percent.
    """

    def __init__(self, *, dns: dict[str, Any], weights: dict[str, float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if abs(sum(weights.values()) - 100) > 1e-6 and sum(weights.values()) != 0:
            raise ValueError(f"{self.task_id}: region weights must add up to 100; got {weights}")
        self.dns = dns
        self.weights = weights

    def describe(self) -> str:
        return "set GeoDNS weights: " + ", ".join(f"{r} {w:g}%" for r, w in self.weights.items())

    def execute(self, context: Any) -> None:
        raise NotImplementedForPlatform(
            f"DNS provider {self.dns.get('provider')!r} is not implemented in this version of airflow-deploy-provider")
