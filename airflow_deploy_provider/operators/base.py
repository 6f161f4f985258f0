"""Shared parameters and helpers of the deployment operators."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_deploy_provider.ledger.hook import DEFAULT_LEDGER_CONN_ID

if TYPE_CHECKING:
    from airflow_deploy_provider.ledger.store import DeploymentLedger
    from airflow_deploy_provider.platforms.base import DeploymentPlatform

#: The deployment id of a run: unique per DAG run, stable across task retries.
DEPLOYMENT_ID_TEMPLATE = "{{ dag.dag_id }}/{{ run_id }}"
START_TASK_ID = "start_deployment"


def release_field(name: str, start_task_id: str = START_TASK_ID) -> str:
    """Template reading one field of the release resolved by the start task (version, image, ...)."""
    return "{{ ti.xcom_pull(task_ids='%s')['%s'] }}" % (start_task_id, name)


class DeploymentBaseOperator(BaseOperator):
    """
    Base of the tasks that act on one deployment of a service.

    :param service: service name.
    :param environment: environment name (development, staging, production).
    :param region: region of a multi-region rollout, if any.
    :param deployment_id: ledger id of the deployment (templated); default ``<dag_id>/<run_id>``.
    :param ledger_conn_id: connection of the deployment ledger.
    """

    template_fields: Sequence[str] = ("deployment_id",)
    ui_color = "#e8f0fe"
    #: Typical time the task takes, used by ``airflow-deploy plan`` to estimate a rollout.
    expected_duration: timedelta = timedelta(seconds=2)
    #: True for tasks that wait for a person or a calendar rather than for the system.
    waits_for_people: ClassVar[bool] = False

    def __init__(
        self,
        *,
        service: str,
        environment: str,
        region: str | None = None,
        deployment_id: str = DEPLOYMENT_ID_TEMPLATE,
        ledger_conn_id: str = DEFAULT_LEDGER_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not service:
            raise ValueError(f"{type(self).__name__} {self.task_id}: service must not be empty")
        self.service = service
        self.environment = environment
        self.region = region
        self.deployment_id = deployment_id
        self.ledger_conn_id = ledger_conn_id

    @cached_property
    def ledger(self) -> DeploymentLedger:
        from airflow_deploy_provider.ledger.hook import get_ledger

        return get_ledger(self.ledger_conn_id)

    def record(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Add an event to this deployment's ledger history and to the task log."""
        self.log.info("%s", message)
        self.ledger.record_event(self.deployment_id, kind, message, phase=self.task_group_id,
                                 task_id=self.task_id, data=data)

    @property
    def task_group_id(self) -> str | None:
        group = getattr(self, "task_group", None)
        return getattr(group, "group_id", None) if group is not None else None

    def describe(self) -> str:
        """One line saying what the task does, for docs and ``airflow-deploy plan``."""
        doc = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        return doc.rstrip(".")


class PlatformOperatorBase(DeploymentBaseOperator):
    """
    Base of tasks that act through the deployment platform.

    :param platform: platform settings (``platform`` in ``service.yaml``, as a dict); ``type`` picks the
        implementation.
    """

    def __init__(self, *, platform: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(platform, dict) or "type" not in platform:
            raise ValueError(f"{type(self).__name__} {kwargs.get('task_id')}: platform must be a dict with a 'type'")
        self.platform = platform

    def get_platform(self) -> DeploymentPlatform:
        from airflow_deploy_provider.registry import get_platform

        return get_platform(self.platform, self.service, self.environment, self.region)


def wait_for(op: BaseOperator, trigger: Any, method_name: str, context: Any, timeout: timedelta,
             deferrable: bool) -> Any:
    """Defer to ``trigger`` (no worker slot held while waiting), or with ``deferrable=False`` run the same
    trigger on the worker, holding the slot like a poke-mode sensor (for comparison and for executors that
    cannot defer)."""
    if deferrable:
        op.defer(trigger=trigger, method_name=method_name, timeout=timeout)
    import asyncio

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload
        raise RuntimeError(f"{type(trigger).__name__} ended without an event")

    event = asyncio.run(asyncio.wait_for(first_event(), timeout.total_seconds()))
    return getattr(op, method_name)(context, event)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(str, choices))}; got {value!r}")
