"""Metric sources behind one interface (:class:`MetricProvider`)."""

from airflow_deploy_provider.metrics.base import MetricProvider, MetricQuery, MetricResult

__all__ = ["MetricProvider", "MetricQuery", "MetricResult"]
