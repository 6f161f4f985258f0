"""Deployment history: deployments, their events and migration runs."""

from airflow_deploy_provider.ledger.store import Deployment, DeploymentLedger, LedgerEvent

__all__ = ["Deployment", "DeploymentLedger", "LedgerEvent"]
