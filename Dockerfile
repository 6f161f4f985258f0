# Airflow with airflow-deploy-provider installed; used by docker-compose.yaml.
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}
ARG AIRFLOW_VERSION
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow-deploy-provider/
COPY --chown=airflow:0 airflow_deploy_provider /opt/airflow-deploy-provider/airflow_deploy_provider
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/airflow-deploy-provider
