"""Deployment targets behind one interface (:class:`DeploymentPlatform`)."""

from airflow_deploy_provider.platforms.base import (
    DeploymentPlatform,
    PlatformError,
    RolloutStatus,
    Target,
    TrafficSplit,
    WorkloadSpec,
)

__all__ = ["DeploymentPlatform", "PlatformError", "RolloutStatus", "Target", "TrafficSplit", "WorkloadSpec"]
