"""The DAGs around a service's database migrations that are not deployments: contract migrations
(``migrate_<service>_contract``), checksum repair (``repair_<service>_migrations``) and the last-resort restore
from backup (``restore_<service>_production_database``)."""

from __future__ import annotations

import re

from airflow.sdk import DAG, Param

from airflow_deploy_provider.config.loader import ServiceConfig
from airflow_deploy_provider.factory.builder import ServiceDagBuilder, chain_phases, phase, reason_param
from airflow_deploy_provider.factory.common import migration_settings, migration_task
from airflow_deploy_provider.operators.migration import (
    ContractReadinessOperator,
    DatabaseRestoreOperator,
    MigrationRepairOperator,
)


def build_contract(b: ServiceDagBuilder) -> DAG:
    """``migrate_<service>_contract``: the spec's step 4 (clean up the old schema, a week later) in production,
    only once the ledger shows the old version retired for ``migrations.contractDelay``; backed up first."""
    migrations = b.svc.migrations
    assert migrations is not None
    dag = b.dag(f"migrate_{b.name}_contract", title="contract migrations (drop what the old version used)",
                params={"reason": reason_param()}, tags=["migrations"])
    with dag:
        with phase("readiness", "The old version retired long enough (ledger); the plan and its lint") as ready:
            retired = ContractReadinessOperator(task_id="check_old_version_retired", **b.common(),
                                                delay=migrations.contract_delay)
            plan = migration_task(b, task_id="plan_contract_migrations", phase="contract", dry_run=True,
                                  record_deployment=False, version="")
            chain_phases(retired, plan)
        with phase("contract", "Backup, then the pending contract migrations") as contract:
            migration_task(b, task_id="run_contract_migrations", phase="contract", backup=True,
                           record_deployment=False, version="")
        chain_phases(ready, contract)
    return b.finalize(dag, "migrations")


def build_repair(config: ServiceConfig, deferrable: bool = True) -> DAG:
    """``repair_<service>_migrations``: accept the edited files' checksums in one environment's database (the
    person types ``repair <service> <environment>``); the other environments' tasks skip."""
    name = config.name
    environments = [e for e in ("development", "staging", "production") if e in config.environments]
    first = ServiceDagBuilder(config, environments[0], deferrable=deferrable)
    pattern = f"^repair {re.escape(name)} ({'|'.join(environments)})$"
    dag = first.dag(f"repair_{name}_migrations", title="accept edited migration files (checksum repair)",
                    params={"confirm": Param(type="string", pattern=pattern, title="Confirm",
                                             description=f"Type 'repair {name} <environment>'.")},
                    tags=["migrations"])
    with dag:
        for env in environments:
            b = ServiceDagBuilder(config, env, deferrable=deferrable)
            MigrationRepairOperator(task_id=f"repair_{env}", **b.common(), **migration_settings(b),
                                    record_deployment=False, confirm="{{ params.confirm }}",
                                    expected=f"repair {name} {env}")
    return first.finalize(dag, "migrations")


def build_restore(b: ServiceDagBuilder) -> DAG:
    """``restore_<service>_production_database``: the database rollback's last resort, a verified backup
    restored over the database; the person types ``restore <service> production``."""
    expected = f"restore {b.name} {b.environment}"
    dag = b.dag(f"restore_{b.name}_{b.environment}_database", title="restore the database from a backup",
                params={"confirm": Param(type="string", pattern=f"^{re.escape(expected)}$", title="Confirm",
                                         description=f"Type '{expected}'. The database is replaced."),
                        "backup": Param("", type="string", title="Backup file",
                                        description="Empty: the newest verified backup in the ledger.")},
                tags=["migrations"])
    with dag:
        DatabaseRestoreOperator(task_id="restore_from_backup", **b.common(), **migration_settings(b),
                                record_deployment=False, confirm="{{ params.confirm }}", expected=expected,
                                backup_location="{{ params.backup }}")
    return b.finalize(dag, "migrations")
