"""Apache Airflow provider that turns a service's ``.deploy/*.yaml`` files into deployment DAGs."""

from __future__ import annotations

__version__ = "0.1.0"
