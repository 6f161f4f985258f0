"""Which DAG a webhook is for: the service's ``.deploy`` files, read on the api-server.

Where services are searched: ``DEPLOY_SERVICE_ROOTS`` or ``[deploy] service_roots`` when set (as for the DAG
files), otherwise the ``services`` folder beside each DAG file that holds deployment DAGs (the default of
``register_deploy_dags``). The api-server must see the same files as the dag-processor; where it does not,
set ``DEPLOY_SERVICE_ROOTS`` on the api-server.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from airflow_deploy_provider.config.loader import ServiceConfig, discover, load_service
from airflow_deploy_provider.config.types import Condition, parse_condition
from airflow_deploy_provider.plugins.payloads import (
    ENVIRONMENT_PATTERN,
    REGION_PATTERN,
    SERVICE_PATTERN,
    Alert,
    ignored,
)

log = logging.getLogger(__name__)

#: Alert label or annotation naming the rollback condition an alert stands for (``error_rate > 5%`` or
#: ``error_rate``).
CONDITION_LABEL = "rollback_condition"


def service_roots() -> list[Path]:
    """The folders searched for services (see the module doc)."""
    from airflow.configuration import conf

    from airflow_deploy_provider.factory import CONFIG_SECTION, ROOTS_ENV
    from airflow_deploy_provider.factory import service_roots as factory_roots

    if os.environ.get(ROOTS_ENV) or conf.get(CONFIG_SECTION, "service_roots", fallback=None):
        return factory_roots()
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    with create_session(scoped=False) as session:
        files = session.scalars(select(DagModel.fileloc).where(
            ~DagModel.is_stale, or_(DagModel.dag_id.startswith("deploy_", autoescape=True),
                                    DagModel.dag_id.startswith("rollback_", autoescape=True))).distinct()).all()
    roots: list[Path] = []
    for fileloc in sorted(f for f in files if f):
        for root in factory_roots(dag_file=fileloc):
            if root not in roots:
                roots.append(root)
    return roots


def find_service(name: str, roots: list[Path] | None = None) -> ServiceConfig | None:
    """The valid service called ``name``, or ``None``. Folders named like the service are read first, so a
    lookup usually loads one service only."""
    if not SERVICE_PATTERN.fullmatch(name):
        return None
    deploy_dirs = discover(service_roots() if roots is None else roots)
    deploy_dirs.sort(key=lambda d: d.parent.name != name)
    for deploy_dir in deploy_dirs:
        result = load_service(deploy_dir)
        if result.config is not None and result.config.name == name:
            return result.config
    return None


class ServiceLookup:
    """Services by name, each loaded at most once per request."""

    def __init__(self, roots: list[Path] | None = None) -> None:
        self._roots = roots
        self._found: dict[str, ServiceConfig | None] = {}

    def __call__(self, name: str) -> ServiceConfig | None:
        if name not in self._found:
            if self._roots is None:
                self._roots = service_roots()
            self._found[name] = find_service(name, self._roots)
        return self._found[name]


# ---------------------------------------------------------------------------------------------------- push


def push_dag_ids(config: ServiceConfig, branch: str) -> list[str]:
    """The deployment DAGs a push to ``branch`` starts: one per environment with ``autoDeploy: true`` whose
    branch (default ``develop`` for development) it is."""
    return [f"deploy_{config.name}_{name}" for name, env in config.environments.items()
            if env.auto_deploy and env.effective_branch == branch]


# ------------------------------------------------------------------------------------------------- alerts


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _same(a: Condition, b: Condition) -> bool:
    return (a.metric, a.op, a.number, a.unit) == (b.metric, b.op, b.number, b.unit)


def matched_rule(alert: Alert, conditions: list[Condition]) -> str | None:
    """Why the alert calls for a rollback, or ``None``: ``severity: critical``; a ``rollback_condition`` label
    or annotation naming one of the service's rollback conditions (``error_rate > 5%``, or just its metric
    ``error_rate``); or an alert name that is a condition's metric (``ErrorRate``, ``error_rate``)."""
    if alert.labels.get("severity", "").lower() == "critical":
        return "severity=critical"
    named = alert.labels.get(CONDITION_LABEL) or alert.annotations.get(CONDITION_LABEL)
    if named:
        try:
            wanted: Condition | None = parse_condition(named)
        except Exception:  # not a full condition: maybe a metric name
            wanted = None
        for cond in conditions:
            if (wanted is not None and _same(wanted, cond)) or (wanted is None and named.strip() == cond.metric):
                return f"{CONDITION_LABEL}: {cond.text}"
    for cond in conditions:
        if _squash(alert.name) == _squash(cond.metric):
            return f"alertname {alert.name}: {cond.text}"
    return None


def rollback_dag_id(alert: Alert, lookup: Callable[[str], ServiceConfig | None]) -> tuple[str, str]:
    """The rollback DAG a firing alert triggers and the rule it matched; raises an ``ignored`` rejection
    saying why when it triggers none.

    Label contract: ``service`` (the service name) and ``environment`` (``development``, ``staging`` or
    ``production``) are required; ``region`` picks a production region's own rollback for a multi-region
    service (without it, all regions are rolled back; for other services it is not used)."""
    service, environment = alert.labels.get("service"), alert.labels.get("environment")
    if not service or not environment:
        raise ignored(f"alert {alert.name} has no 'service' and 'environment' labels")
    if not SERVICE_PATTERN.fullmatch(service) or not ENVIRONMENT_PATTERN.fullmatch(environment):
        raise ignored(f"alert {alert.name}: the 'service' or 'environment' label is not a service's")
    config = lookup(service)
    if config is None:
        raise ignored(f"alert {alert.name}: unknown service {service}")
    if environment not in config.environments:
        raise ignored(f"alert {alert.name}: service {service} has no {environment} environment")
    rule = matched_rule(alert, list(config.service.rollback.conditions))
    if rule is None:
        conditions = ", ".join(c.text for c in config.service.rollback.conditions) or "none"
        raise ignored(f"alert {alert.name} is not critical and names none of {service}'s rollback conditions "
                      f"({conditions})")
    region = alert.labels.get("region")
    if environment == "production" and config.multi_region is not None and region:
        if not REGION_PATTERN.fullmatch(region):
            raise ignored(f"alert {alert.name}: the 'region' label is not a region name")
        if region not in {r.name for r in config.multi_region.regions}:
            raise ignored(f"alert {alert.name}: service {service} has no production region {region}")
        return f"rollback_{service}_production_{region}", rule
    return f"rollback_{service}_{environment}", rule
