"""The ``.deploy`` configuration: schema, loading with positioned errors, and JSON Schema."""

from airflow_deploy_provider.config.errors import ConfigIssue, DeployConfigError
from airflow_deploy_provider.config.loader import (
    LoadResult,
    ServiceConfig,
    discover,
    load_service,
    load_services,
)

__all__ = [
    "ConfigIssue",
    "DeployConfigError",
    "LoadResult",
    "ServiceConfig",
    "discover",
    "load_service",
    "load_services",
]
