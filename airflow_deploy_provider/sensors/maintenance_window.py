"""Maintenance windows and freezes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.registry import NotImplementedForPlatform


class MaintenanceWindowSensor(DeploymentBaseOperator):
    """
    Lets a production run proceed inside the maintenance window: outside it the run waits for the next
    window (deferred) or is refused (``outside_window``), inside a freeze it is refused with the freeze named,
    and a rollout whose expected duration does not fit in what is left of the window is refused.

    :param window: ``schedule`` (cron), ``duration``, ``timezone``, ``outside_window``, ``freezes``.
    :param expected_rollout: expected duration of the rest of the rollout.
    """

    waits_for_people = True
    ui_color = "#fbbc04"
    expected_duration = timedelta(0)

    def __init__(self, *, window: dict[str, Any], expected_rollout: timedelta = timedelta(0), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from croniter import croniter

        if not croniter.is_valid(window.get("schedule", "")):
            raise ValueError(f"{self.task_id}: window schedule {window.get('schedule')!r} is not a cron expression")
        self.window = window
        self.expected_rollout = expected_rollout

    def describe(self) -> str:
        from airflow_deploy_provider.config.types import format_duration

        duration = self.window.get("duration")
        duration = format_duration(duration) if isinstance(duration, timedelta) else duration
        return f"verify the maintenance window ({self.window['schedule']} {self.window.get('timezone', 'UTC')}, " \
               f"{duration})"

    def execute(self, context: Any) -> None:
        raise NotImplementedForPlatform(
            "maintenance windows are not implemented in this version of airflow-deploy-provider; remove "
            "'maintenanceWindow' from service.yaml to deploy without one")
