"""Reports invalid .deploy configs as one import error in the Airflow UI (this file holds no DAGs).

Kept apart from deploy_dags.py because Airflow disables every DAG of a file with an import error: one
service's broken config must not stop the other services' deployments.
"""

from airflow_deploy_provider.factory import raise_config_errors

raise_config_errors(__file__)
