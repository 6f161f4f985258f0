"""Pipeline steps run as Kubernetes pods (placeholder until the pod mode lands)."""

from __future__ import annotations

from typing import Any

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.registry import NotImplementedForPlatform


class PodStepOperator(DeploymentBaseOperator):
    """Runs a pipeline step as a Kubernetes pod."""

    def __init__(self, *, step: str, runner: dict[str, Any], platform: dict[str, Any], version: str = "",
                 image: str = "", commit: str = "", previous_version: str = "", service_root: str | None = None,
                 workflow: str = "deploy", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step, self.runner = step, runner

    def describe(self) -> str:
        return f"{self.step}: pod {self.runner['image']}"

    def execute(self, context: Any) -> dict[str, Any]:
        raise NotImplementedForPlatform(f"step {self.step!r} runs as a pod, which is not implemented yet")
