"""Deployment DAGs for every service with a .deploy folder under the service roots.

Roots: the DEPLOY_SERVICE_ROOTS environment variable, the Airflow option [deploy] service_roots, or the
services/ folder beside this file.
"""

from airflow_deploy_provider.factory import register_deploy_dags

register_deploy_dags(globals())
