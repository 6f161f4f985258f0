"""Runs of regional DAGs from a multi-region rollout."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator


class RegionalRunOperator(TriggerDagRunOperator):
    """
    Triggers a region's DAG (``deploy_<service>_production_<region>`` or its rollback DAG) and waits for it.

    Conf values that render empty (an unset ``commit``) are left out, so the regional DAG's optional params
    stay unset instead of receiving the text ``None``, which their validation rightly refuses.

    Template fields: those of ``TriggerDagRunOperator`` (``trigger_dag_id``, ``trigger_run_id``, ``conf``...).
    """

    def execute(self, context: Any) -> Any:
        self.conf = {k: v for k, v in (self.conf or {}).items() if v not in (None, "", "None")}
        return super().execute(context)
