"""Maintenance windows and freezes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow_deploy_provider.operators.base import DeploymentBaseOperator


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    from airflow_deploy_provider.config.types import parse_duration

    return parse_duration(str(value))


def _in_zone(window: dict[str, Any], now: datetime) -> tuple[Any, datetime]:
    """The window's time zone and ``now`` in it."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(window.get("timezone") or "UTC")
    return tz, now.astimezone(tz)


def _last_start(schedule: str, local: datetime) -> datetime:
    """The latest start of ``schedule`` at or before ``local`` (croniter.match would miss one that began
    earlier)."""
    from croniter import croniter

    return croniter(schedule, local + timedelta(seconds=1)).get_prev(datetime)


def window_at(window: dict[str, Any], now: datetime) -> tuple[datetime | None, datetime]:
    """``(end of the window ``now`` is in or None, start of the next window)``, in the window's time zone."""
    from croniter import croniter

    _, local = _in_zone(window, now)
    end = _last_start(window["schedule"], local) + _duration(window["duration"])
    return (end if local < end else None), croniter(window["schedule"], local).get_next(datetime)


def freeze_at(window: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The freeze ``now`` falls in (a date ``end`` includes that whole day), or None."""
    tz, local = _in_zone(window, now)
    for freeze in window.get("freezes") or []:
        start, end = freeze.get("start"), freeze.get("end")
        if start is not None:
            start = _local(start, tz)
            end = _local(end, tz) if end is not None else None
            if end is not None and _is_date_only(freeze.get("end")):
                end += timedelta(days=1)
            if start <= local and (end is None or local < end):
                return freeze
        if (freeze.get("schedule") and freeze.get("duration")
                and local < _last_start(freeze["schedule"], local) + _duration(freeze["duration"])):
            return freeze
    return None


def _local(value: Any, tz: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


def _is_date_only(value: Any) -> bool:
    if isinstance(value, datetime):
        return value.hour == value.minute == value.second == value.microsecond == 0
    return isinstance(value, str) and "T" not in value and " " not in value.strip()


class MaintenanceWindowSensor(DeploymentBaseOperator):
    """
    Lets a production run proceed inside the maintenance window: outside it the run waits for the next
    window (deferred to a trigger, no worker slot held) or is refused (``outside_window``); inside a freeze it is
    refused with the freeze named; and a rollout whose expected duration does not fit in what is left of the
    window is refused, before anything changes.

    :param window: ``schedule`` (cron), ``duration``, ``timezone``, ``outside_window``, ``freezes``.
    :param expected_rollout: expected duration of the rest of the run after this check (the factory sets it
        from the DAG's plan).
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

    def execute(self, context: Any, event: Any = None) -> dict[str, Any] | None:
        from datetime import timezone

        from airflow.sdk.exceptions import AirflowFailException

        from airflow_deploy_provider.config.types import format_duration

        now = datetime.now(timezone.utc)
        where = f"{self.window['schedule']} {self.window.get('timezone') or 'UTC'}"
        freeze = freeze_at(self.window, now)
        if freeze is not None:
            self.record("window", f"refused: inside the freeze {freeze['name']!r}", data={"freeze": freeze["name"]})
            raise AirflowFailException(f"production deployments are frozen: {freeze['name']!r}")
        end, following = window_at(self.window, now)
        if end is None:
            if self.window.get("outside_window", "wait") == "refuse":
                self.record("window", f"refused: outside the maintenance window ({where}); the next starts "
                            f"{following:%Y-%m-%d %H:%M %Z}", data={"next": following.isoformat()})
                raise AirflowFailException(f"outside the maintenance window ({where}); the next one starts "
                                           f"{following:%Y-%m-%d %H:%M %Z}")
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.record("window", f"waiting for the maintenance window: {following:%Y-%m-%d %H:%M %Z}",
                        data={"next": following.isoformat()})
            self.defer(trigger=DateTimeTrigger(moment=following.astimezone(timezone.utc)), method_name="execute")
        left = end - now
        if self.expected_rollout > left:
            self.record("window", f"refused: the rest of the rollout takes about {format_duration(self.expected_rollout)}, the "
                        f"window ends in {format_duration(left)}", data={"left": left.total_seconds(),
                                                                         "expected": self.expected_rollout.total_seconds()})
            raise AirflowFailException(f"the rest of the rollout (about {format_duration(self.expected_rollout)}) does not fit in "
                                       f"what is left of the maintenance window ({format_duration(left)})")
        self.record("window", f"inside the maintenance window until {end:%Y-%m-%d %H:%M %Z} "
                    f"({format_duration(left)} left, the rest of the rollout takes about "
                    f"{format_duration(self.expected_rollout)})",
                    data={"end": end.isoformat()})
        return {"end": end.isoformat()}
