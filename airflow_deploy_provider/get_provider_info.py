"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from airflow_deploy_provider import __version__

    return {
        "package-name": "airflow-deploy-provider",
        "name": "Deploy",
        "description": "Turns a service's `.deploy/*.yaml` files into deployment DAGs: development (recreate), "
                       "staging (blue-green), production (canary with metric gates and automatic rollback), "
                       "hotfix, rollback, multi-region rollouts and PostgreSQL migrations.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Deploy", "external-doc-url": "https://github.com/airflow-deploy-provider",
             "tags": ["software"]},
        ],
        "operators": [
            {"integration-name": "Deploy", "python-modules": [
                "airflow_deploy_provider.operators.lifecycle",
                "airflow_deploy_provider.operators.deploy",
                "airflow_deploy_provider.operators.gate",
                "airflow_deploy_provider.operators.validation",
                "airflow_deploy_provider.operators.steps",
                "airflow_deploy_provider.operators.migration",
                "airflow_deploy_provider.operators.dns",
                "airflow_deploy_provider.operators.region",
            ]},
        ],
        "sensors": [
            {"integration-name": "Deploy", "python-modules": [
                "airflow_deploy_provider.sensors.approval",
                "airflow_deploy_provider.sensors.maintenance_window",
            ]},
        ],
        "triggers": [
            {"integration-name": "Deploy", "python-modules": [
                "airflow_deploy_provider.triggers.rollout",
                "airflow_deploy_provider.triggers.metric_gate",
                "airflow_deploy_provider.triggers.http",
                "airflow_deploy_provider.triggers.dns",
            ]},
        ],
        "hooks": [
            {"integration-name": "Deploy", "python-modules": ["airflow_deploy_provider.ledger.hook",
                                                               "airflow_deploy_provider.hooks.route53",
                                                               "airflow_deploy_provider.hooks.migration"]},
        ],
        "connection-types": [
            {"connection-type": "deploy_ledger", "hook-class-name": "airflow_deploy_provider.ledger.hook.DeploymentLedgerHook",
             "hook-name": "Deployment Ledger"},
        ],
        "notifications": ["airflow_deploy_provider.notifications.slack.DeploymentNotifier"],
        "config": {
            "deploy": {
                "description": "Settings of the deployment DAG factory.",
                "options": {
                    "service_roots": {
                        "description": "Folders searched for services' .deploy folders, separated by commas. "
                                       "Relative paths are relative to the DAG file. The environment variable "
                                       "DEPLOY_SERVICE_ROOTS takes precedence. Default: services/ beside the DAG file.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/services,/srv/repos",
                        "default": "",
                    },
                },
            },
        },
    }
