"""The embedded local platform: replicas as local processes behind a per-service router."""

from airflow_deploy_provider.platforms.local.platform import LocalPlatform

__all__ = ["LocalPlatform"]
