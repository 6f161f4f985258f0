"""Task patterns used by several workflows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_deploy_provider.factory.builder import ServiceDagBuilder, chain_phases
from airflow_deploy_provider.operators.migration import MigrationOperator
from airflow_deploy_provider.operators.validation import HealthCheckOperator, LogValidationOperator
from airflow_deploy_provider.sensors.approval import ApprovalSensor


def migration_settings(b: ServiceDagBuilder) -> dict[str, Any]:
    """What every migration task of the service's environment is given: files, database, engine settings."""
    migrations = b.svc.migrations
    assert migrations is not None
    return {"migrations_path": str(b.config.root / migrations.path),
            "conn_id": migrations.connection_for(b.environment), "settings": migrations.engine_settings()}


def migration_task(b: ServiceDagBuilder, *, task_id: str = "run_migrations", direction: str = "up",
                   dry_run: bool = False, backup: bool = False, phase: str = "expand",
                   **kwargs: Any) -> MigrationOperator | None:
    migrations = b.svc.migrations
    if migrations is None:
        return None
    kwargs.setdefault("version", b.release("version"))
    if direction == "down":
        kwargs.setdefault("target_version", b.release("version"))
    return MigrationOperator(task_id=task_id, **b.common(), **migration_settings(b), direction=direction,
                             phase=phase, dry_run=dry_run, backup=backup and migrations.backup,
                             backup_location=migrations.backup_location, lock_wait=migrations.lock_wait,
                             deferrable=b.deferrable, **kwargs)


def health_check(b: ServiceDagBuilder, role: str | None, task_id: str = "health_check") -> HealthCheckOperator:
    hc = b.env.health_check if b.env is not None else None
    return HealthCheckOperator(
        task_id=task_id, **b.waiting(), role=role, path=hc.path if hc else "/health",
        attempts=10, delay=hc.interval.total_seconds() if hc else 5.0,
        timeout=hc.timeout.total_seconds() if hc else 5.0, version=b.release("version"))


def smoke_tests(b: ServiceDagBuilder, role: str | None) -> list[Any]:
    """The spec's smoke tests: health check endpoint, basic functionality tests, log validation."""
    health = health_check(b, role)
    functional = b.suite("smoke", task_id="functional_tests", role=role)
    logs = LogValidationOperator(task_id="validate_logs", **b.on_platform(), role=role or "stable")
    chain_phases(health, [functional, logs])
    return [health, functional, logs]


def seconds(td: timedelta) -> float:
    return td.total_seconds()


def approval_task(b: ServiceDagBuilder, environment: str, task_id: str = "approve",
                  severity: str = "default") -> ApprovalSensor | None:
    """The environment's approval, or ``None`` when its policy is disabled."""
    approvals = b.svc.approvals
    if environment == "hotfix":
        policies = {s: getattr(approvals.hotfix, s) for s in ("critical", "major")}
    else:
        policies = {"default": getattr(approvals, environment)}
    enabled = {name: p.model_dump(mode="python") for name, p in policies.items() if p.enabled}
    if not enabled:
        return None
    return ApprovalSensor(task_id=task_id, **b.common(), policies=enabled, severity=severity,
                          version=b.release("version"), author=b.release("author"), notification=b.notification(),
                          retries=2, retry_delay=timedelta(seconds=5))
