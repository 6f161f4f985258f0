"""Database migrations (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow_deploy_provider.operators.base import DeploymentBaseOperator, check_choice
from airflow_deploy_provider.registry import NotImplementedForPlatform


class MigrationOperator(DeploymentBaseOperator):
    """
    Applies (``direction="up"``) or reverts (``down``) the service's SQL migrations in
    ``V<n>__<description>.sql`` / ``U<n>__<description>.sql`` files, or only checks them (``dry_run``).

    Template fields: ``deployment_id``, ``version``.

    :param migrations_path: folder of the migration files.
    :param conn_id: connection of the target database.
    :param direction: ``up`` or ``down``.
    :param phase: ``expand`` (runs with deployments) or ``contract``.
    :param dry_run: plan and lint only.
    :param backup: take and verify a backup first.
    :param version: the application version being deployed (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#fde293"
    expected_duration = timedelta(seconds=30)

    def __init__(self, *, migrations_path: str, conn_id: str, direction: str = "up", phase: str = "expand",
                 dry_run: bool = False, backup: bool = False, version: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "direction", direction, ("up", "down"))
        check_choice(self.task_id, "phase", phase, ("expand", "contract"))
        self.migrations_path = migrations_path
        self.conn_id = conn_id
        self.direction = direction
        self.phase = phase
        self.dry_run = dry_run
        self.backup = backup
        self.version = version

    def describe(self) -> str:
        if self.dry_run:
            return f"check {self.phase} migrations in {self.migrations_path} (plan and lint, nothing executed)"
        return f"run {self.direction} {self.phase} migrations from {self.migrations_path} on {self.conn_id}" + (
            " after a verified backup" if self.backup else "")

    def execute(self, context: Any) -> None:
        raise NotImplementedForPlatform(
            "database migrations are not implemented in this version of airflow-deploy-provider; remove "
            "'migrations' from service.yaml to deploy without them")
