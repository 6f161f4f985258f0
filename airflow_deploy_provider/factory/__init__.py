"""Turns services' ``.deploy`` folders into Airflow DAGs.

A DAG file needs one call::

    from airflow_deploy_provider.factory import register_deploy_dags

    register_deploy_dags(globals())

and, beside it, a second file that reports invalid service configs as one import error::

    from airflow_deploy_provider.factory import raise_config_errors

    raise_config_errors(__file__)

Why two files: Airflow marks every DAG of a file that has an import error as broken (``has_import_errors``
and stale), so an error raised from the file holding every service's DAGs would take all services down. The
second file holds no DAGs, so a broken service shows up in the UI as an import error while every other
service keeps deploying.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_deploy_provider.config.errors import ConfigIssue, DeployConfigError
from airflow_deploy_provider.config.loader import LoadResult, ServiceConfig, discover, load_service

log = logging.getLogger(__name__)

ROOTS_ENV = "DEPLOY_SERVICE_ROOTS"
CONFIG_SECTION = "deploy"


def service_roots(roots: Iterable[str | os.PathLike[str]] | None = None, dag_file: str | None = None) -> list[Path]:
    """Where services are searched, first match wins: ``roots``; the ``DEPLOY_SERVICE_ROOTS`` environment
    variable; the Airflow option ``[deploy] service_roots`` (``AIRFLOW__DEPLOY__SERVICE_ROOTS``); a
    ``services`` folder beside the DAG file. Several roots are separated by commas or ``os.pathsep``."""
    if roots is not None:
        return [Path(r) for r in roots]
    value = os.environ.get(ROOTS_ENV)
    if not value:
        try:
            from airflow.configuration import conf

            value = conf.get(CONFIG_SECTION, "service_roots", fallback=None)
        except Exception:  # Airflow's configuration is not loadable: use the default
            value = None
    if value:
        parts = [p.strip() for chunk in value.split(",") for p in chunk.split(os.pathsep)]
        base = Path(dag_file).parent if dag_file else Path.cwd()
        return [(base / p) if not os.path.isabs(p) else Path(p) for p in parts if p]
    base = Path(dag_file).parent if dag_file else Path.cwd()
    return [base / "services"]


def _builders(config: ServiceConfig, deferrable: bool = True) -> dict[str, Callable[[], DAG]]:
    """DAG id -> function building it, for every DAG of a service (nothing is built yet)."""
    from functools import partial

    from airflow_deploy_provider.factory import (
        development,
        hotfix,
        incident,
        migrations,
        multi_region,
        production,
        rollback,
        staging,
    )
    from airflow_deploy_provider.factory.builder import ServiceDagBuilder as Builder

    ServiceDagBuilder = partial(Builder, deferrable=deferrable)  # noqa: N806
    name = config.name
    out: dict[str, Callable[[], DAG]] = {}

    def add(dag_id: str, fn: Callable[[], DAG]) -> None:
        out[dag_id] = fn

    workflows = {"development": development.build, "staging": staging.build}
    if "production" in config.environments and config.multi_region is not None:
        # Regional DAGs first: the global rollout's plan reuses their expected durations.
        for region in config.multi_region.regions:
            add(f"deploy_{name}_production_{region.name}", lambda r=region.name: production.build(
                ServiceDagBuilder(config, "production", region=r), regional=True))
    for env in config.environments:
        if env == "production" and config.multi_region is not None:
            add(f"deploy_{name}_production", lambda: multi_region.build(ServiceDagBuilder(config, "production",
                                                                                            kind="rollout")))
        elif env == "production":
            add(f"deploy_{name}_production", lambda: production.build(ServiceDagBuilder(config, "production")))
        else:
            add(f"deploy_{name}_{env}", lambda env=env: workflows[env](ServiceDagBuilder(config, env)))
        if env == "production" and config.multi_region is not None:
            add(f"rollback_{name}_production", lambda: multi_region.build_rollback(
                ServiceDagBuilder(config, "production", kind="rollback")))
        else:
            add(f"rollback_{name}_{env}", lambda env=env: rollback.build(ServiceDagBuilder(config, env,
                                                                                           kind="rollback")))
    if config.service.migrations is not None:
        add(f"repair_{name}_migrations", lambda: migrations.build_repair(config, deferrable=deferrable))
        if "production" in config.environments:
            add(f"migrate_{name}_contract", lambda: migrations.build_contract(
                ServiceDagBuilder(config, "production", kind="migration")))
            add(f"restore_{name}_production_database", lambda: migrations.build_restore(
                ServiceDagBuilder(config, "production", kind="migration")))
    if "production" in config.environments:
        add(f"incident_{name}", lambda: incident.build(ServiceDagBuilder(config, "production", kind="incident")))
    if "production" in config.environments and config.multi_region is None:
        add(f"hotfix_{name}", lambda: hotfix.build(ServiceDagBuilder(config, "production", kind="hotfix")))
    elif "production" in config.environments:
        add(f"hotfix_{name}", lambda: multi_region.build_hotfix(ServiceDagBuilder(config, "production",
                                                                                  kind="hotfix")))
        for region in config.multi_region.regions:
            add(f"rollback_{name}_production_{region.name}", lambda r=region.name: rollback.build(
                ServiceDagBuilder(config, "production", kind="rollback", region=r)))
            add(f"hotfix_{name}_{region.name}", lambda r=region.name: hotfix.build(
                ServiceDagBuilder(config, "production", kind="hotfix", region=r)))
    return out


def build_service_dags(config: ServiceConfig, only: str | None = None, deferrable: bool = True) -> dict[str, DAG]:
    """Every DAG of one service (or only the DAG ``only``). ``deferrable=False`` makes every wait hold a worker
    slot, like poke-mode sensors: only for comparing against the default."""
    builders = _builders(config, deferrable)
    if only is not None:
        builders = {k: v for k, v in builders.items() if k == only}
    return {dag_id: build() for dag_id, build in builders.items()}


def dag_ids(config: ServiceConfig) -> list[str]:
    return list(_builders(config))


def load_all(roots: Iterable[Path]) -> list[LoadResult]:
    """Load every service; a second service with a name already taken becomes an error of its own."""
    results = [load_service(d) for d in discover(roots)]
    owners: dict[str, LoadResult] = {}
    for result in results:
        if result.config is None:
            continue
        first = owners.get(result.config.name)
        if first is not None and first.config is not None:
            service_file = result.config.service_file or result.deploy_dir
            result.issues.append(ConfigIssue(str(service_file), 1, 1, "service",
                                             f"service name '{result.config.name}' is already used by "
                                             f"{first.config.deploy_dir}; service names must be unique",
                                             "service-name-duplicate"))
            result.config = None
        else:
            owners[result.config.name] = result
    return results


def register_deploy_dags(globals_dict: MutableMapping[str, Any], roots: Iterable[str | os.PathLike[str]] | None = None,
                         *, deferrable: bool = True) -> dict[str, DAG]:
    """Build the DAGs of every valid service under the roots and put them into ``globals_dict``.

    Invalid services are skipped here (``raise_config_errors`` reports them). When a task runs, Airflow's
    parsing context names its DAG and only that DAG is built.
    """
    from airflow.sdk import get_parsing_context

    wanted = get_parsing_context().dag_id
    found = service_roots(roots, globals_dict.get("__file__"))
    dags: dict[str, DAG] = {}
    deploy_dirs = discover(found)
    if wanted:
        # Load the likeliest service first: its folder name usually appears in the DAG id.
        deploy_dirs.sort(key=lambda d: d.parent.name not in wanted)
        for deploy_dir in deploy_dirs:
            result = load_service(deploy_dir)
            if result.config is not None and wanted in dag_ids(result.config):
                dags.update(build_service_dags(result.config, only=wanted, deferrable=deferrable))
                break
    else:
        for result in load_all(found):
            if result.config is None:
                log.error("skipping %s: %s", result.deploy_dir, DeployConfigError(result.errors, result.deploy_dir))
                continue
            try:
                dags.update(build_service_dags(result.config, deferrable=deferrable))
            except Exception:  # one service's failure must not hide the others
                log.exception("building the DAGs of %s failed", result.config.name)
    globals_dict.update(dags)
    return dags


def config_errors(roots: Iterable[Path]) -> list[ConfigIssue]:
    return [issue for result in load_all(roots) for issue in result.errors]


def raise_config_errors(dag_file: str | None = None, roots: Iterable[str | os.PathLike[str]] | None = None) -> None:
    """Raise :class:`DeployConfigError` listing every error of every invalid service (for the companion DAG
    file, so that Airflow shows them as one import error). Does nothing when all services are valid."""
    from airflow.sdk import get_parsing_context

    if get_parsing_context().dag_id:  # a task of another file is running; nothing to report here
        return
    errors = config_errors(service_roots(roots, dag_file))
    if errors:
        services = sorted({Path(e.file).parent.parent.name for e in errors})
        raise DeployConfigError(errors, f"{len(services)} service(s): {', '.join(services)}")


__all__ = ["build_service_dags", "raise_config_errors", "register_deploy_dags", "service_roots"]
