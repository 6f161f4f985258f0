"""Lookup of platform and metric-provider implementations by type name.

Built-in implementations are listed here by import path (imported only when used). Other packages add
theirs through the entry point groups ``airflow_deploy_provider.platforms`` and
``airflow_deploy_provider.metric_providers`` (name = type, value = ``module:Class``): a new platform or
metric source needs no change to the factory or the operators.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

BUILTIN_PLATFORMS: dict[str, str] = {
    "local": "airflow_deploy_provider.platforms.local.platform:LocalPlatform",
    "kubernetes": "airflow_deploy_provider.platforms.kubernetes.platform:KubernetesPlatform",
    "ecs": "airflow_deploy_provider.platforms.ecs.platform:EcsPlatform",
}
BUILTIN_METRIC_PROVIDERS: dict[str, str] = {
    "local": "airflow_deploy_provider.metrics.local:LocalMetricProvider",
    "prometheus": "airflow_deploy_provider.metrics.prometheus:PrometheusMetricProvider",
    "cloudwatch": "airflow_deploy_provider.metrics.cloudwatch:CloudWatchMetricProvider",
}


class NotImplementedForPlatform(AirflowFailException, NotImplementedError):
    """Raised by steps whose execution does not exist for a platform (or at all) in this version. The task
    fails at once, without retries: retrying cannot help."""


@cache
def _plugins(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def _load(path: str) -> Any:
    module, _, attr = path.replace(":", ".").rpartition(".")
    return getattr(import_module(module), attr)


def platform_class(type_name: str) -> type:
    path = BUILTIN_PLATFORMS.get(type_name) or _plugins("airflow_deploy_provider.platforms").get(type_name)
    if path is None:
        raise NotImplementedForPlatform(
            f"deployments on platform {type_name!r} are not implemented in this version of "
            f"airflow-deploy-provider (available: {', '.join(sorted(available_platforms())) or 'none'})"
        )
    return _load(path)


def metric_provider_class(type_name: str) -> type:
    path = BUILTIN_METRIC_PROVIDERS.get(type_name) or _plugins("airflow_deploy_provider.metric_providers").get(type_name)
    if path is None:
        raise NotImplementedForPlatform(
            f"metric provider {type_name!r} is not implemented in this version of airflow-deploy-provider "
            f"(available: {', '.join(sorted(available_metric_providers())) or 'none'})"
        )
    return _load(path)


def available_platforms() -> set[str]:
    return set(BUILTIN_PLATFORMS) | set(_plugins("airflow_deploy_provider.platforms"))


def available_metric_providers() -> set[str]:
    return set(BUILTIN_METRIC_PROVIDERS) | set(_plugins("airflow_deploy_provider.metric_providers"))


def get_platform(settings: dict[str, Any], service: str, environment: str, region: str | None = None):
    from airflow_deploy_provider.platforms.base import Target

    cls = platform_class(settings.get("type", "local"))
    return cls(settings, Target(service, environment, region))


def get_metric_provider(settings: dict[str, Any]):
    return metric_provider_class(settings.get("provider") or "local")(settings)
