"""Helpers shared by the workflow modules: DAG defaults, params, settings handed to operators, phases."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from airflow_deploy_provider.config.loader import ServiceConfig
from airflow_deploy_provider.config.models import EnvironmentFile
from airflow_deploy_provider.config.types import BUILTIN_METRICS, Condition, MetricInfo
from airflow_deploy_provider.ledger.hook import DEFAULT_LEDGER_CONN_ID
from airflow_deploy_provider.operators.base import DEPLOYMENT_ID_TEMPLATE, release_field
from airflow_deploy_provider.operators.deploy import (
    DeployVersionOperator,
    PromoteVersionOperator,
    RollbackOperator,
    VerifyTrafficOperator,
    WaitForRolloutOperator,
)
from airflow_deploy_provider.operators.gate import (
    CanaryStepOperator,
    MetricGateOperator,
    TrafficSwitchOperator,
)
from airflow_deploy_provider.operators.lifecycle import (
    BRANCH_PATTERN,
    COMMIT_PATTERN,
    ISSUE_PATTERN,
    VERSION_PATTERN,
    FinishDeploymentOperator,
    StartDeploymentOperator,
)
from airflow_deploy_provider.operators.steps import PipelineStepOperator
from airflow_deploy_provider.operators.validation import TestSuiteOperator

START_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)
STEP_TASK_IDS = {
    "unit-tests": "run_unit_tests", "build-image": "build_image", "push-image": "push_image",
    "scan-cves": "scan_cves", "scan-secrets": "scan_secrets", "generate-sbom": "generate_sbom",
    "retag-image": "retag_image", "sign-image": "sign_image", "terraform": "apply_terraform",
    "update-dns": "update_dns", "configure-alerts": "configure_alerts", "setup-dashboards": "setup_dashboards",
    "enable-tracing": "enable_tracing", "annotate-deployment": "annotate_deployment", "release-notes": "update_release_notes",
    "document-config-changes": "document_configuration_changes",
}
#: Resolved step runners and suites by (config fingerprint, service folder, name): a service's DAGs share them
#: (operators only read them). A changed configuration has a new fingerprint; the old entries are a few small
#: dicts per version the process has parsed.
_RUNNERS: dict[tuple[str, str, str], dict[str, Any] | None] = {}
_SUITES: dict[tuple[str, str, str], dict[str, Any] | None] = {}
# Bounds for blue-green's post-switch watch, which the spec gives no analysis section.
BLUEGREEN_INTERVAL = timedelta(seconds=30)


class ServiceDagBuilder:
    """Builds one DAG of a service; holds the settings every task of it shares."""

    def __init__(self, config: ServiceConfig, environment: str | None, *, kind: str = "deploy",
                 region: str | None = None, ledger_conn_id: str = DEFAULT_LEDGER_CONN_ID, deferrable: bool = True):
        self.config = config
        self.svc = config.service
        self.environment = environment or "production"
        self.env: EnvironmentFile | None = config.environments.get(self.environment)
        self.kind = kind
        self.region = region
        self.ledger_conn_id = ledger_conn_id
        self.start_task_id = "start_deployment"
        self.deferrable = deferrable  # False: waits hold a worker slot (for comparison only)

    # ------------------------------------------------------------------------------------------- settings

    @property
    def name(self) -> str:
        return self.svc.service

    def common(self) -> dict[str, Any]:
        return {"service": self.name, "environment": self.environment, "region": self.region,
                "ledger_conn_id": self.ledger_conn_id, "deployment_id": DEPLOYMENT_ID_TEMPLATE}

    @cached_property
    def _platform_settings(self) -> dict[str, Any]:
        # The service's settings with the environment's and the region's overrides (connection, AWS region).
        platform = self.config.platform_for(self.environment, self.region)
        settings = platform.model_dump(mode="json", by_alias=False)
        settings["service_root"] = str(self.config.root)
        if platform.type == "local" and "build-image" in self.svc.steps:
            settings["run_artifacts"] = True  # replicas run the built artifact, not the working copy
        if self.env is not None:
            settings["strategy"] = self.env.strategy  # blue-green switches a selector instead of weights
        return settings

    def platform_settings(self) -> dict[str, Any]:
        """Platform settings handed to operators (one shared dict per DAG: operators never change it)."""
        return self._platform_settings

    def on_platform(self) -> dict[str, Any]:
        return {**self.common(), "platform": self._platform_settings}

    def waiting(self) -> dict[str, Any]:
        """Arguments of tasks that wait (rollouts, gates, health checks)."""
        return {**self.on_platform(), "deferrable": self.deferrable}

    def gating(self) -> dict[str, Any]:
        """Arguments of metric gates: the version under test and the stable one, for relative bounds."""
        return {**self.waiting(), "version": self.release("version"),
                "stable_version": self.release("previous_version")}

    @cached_property
    def _metrics_settings(self) -> dict[str, Any]:
        metrics = self.svc.metrics
        return {"provider": self.svc.metric_provider, "connection": metrics.connection, "labels": metrics.labels,
                "series": metrics.series, "min_window": metrics.min_window.total_seconds(),
                "queries": metrics.queries, "platform": self._platform_settings,
                "namespace": self._platform_settings.get("namespace") or self.environment}

    def metrics_settings(self) -> dict[str, Any]:
        return self._metrics_settings

    @cached_property
    def _notification(self) -> dict[str, Any] | None:
        notifications = self.svc.notifications
        if notifications is None or notifications.slack is None:
            return None
        return {"slack_conn_id": notifications.slack.connection, "channel": notifications.slack.channel,
                "events": list(notifications.events)}

    def notification(self) -> dict[str, Any] | None:
        return self._notification

    def release(self, name: str) -> str:
        return release_field(name, self.start_task_id)

    def metric_info(self, name: str) -> MetricInfo:
        return self.config.metrics.get(name) or BUILTIN_METRICS[name]

    def metric_query(self, name: str) -> str | None:
        if name in self.svc.metrics.queries:
            return self.svc.metrics.queries[name]
        custom = next((c for c in self.svc.metrics.custom if c.name == name), None)
        return custom.query if custom else None

    def gate_metrics(self, relative: bool = True) -> list[dict[str, Any]]:
        """Gate metrics of the canary analysis; ``relative=False`` drops bounds relative to the stable version
        (after a promotion there is no other version to compare with)."""
        env = self.env
        if env is None or env.canary is None:
            return []
        out = []
        for check in env.canary.analysis.metrics:
            info = self.metric_info(check.name)
            out.append({"name": check.name, "unit": info.unit,
                        "max": check.max.value(info.unit) if check.max is not None else None,
                        "min": check.min.value(info.unit) if check.min is not None else None,
                        "max_ratio": check.max_ratio if relative else None, "query": self.metric_query(check.name)})
        return out

    def gate_conditions(self, conditions: Iterable[Condition] | None = None) -> list[dict[str, Any]]:
        if conditions is None:
            auto = self.env.auto_rollback if self.env is not None else None
            conditions = auto.conditions if auto is not None and auto.enabled else []
        out = []
        for cond in conditions:
            info = self.metric_info(cond.metric)
            out.append({"text": cond.text, "metric": cond.metric, "op": cond.op,
                        "threshold": cond.threshold(info.unit), "unit": info.unit,
                        "query": self.metric_query(cond.metric)})
        return out

    def watch_conditions(self) -> list[dict[str, Any]]:
        """What a watch checks: the environment's auto-rollback conditions, else the service's rollback
        conditions (a watch with nothing to check would pass on no evidence)."""
        return self.gate_conditions() or self.gate_conditions(self.svc.rollback.conditions)

    @staticmethod
    def metrics_from_conditions(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Gate bounds implied by rollback conditions (``error_rate > 5%`` -> ``error_rate`` at most 5)."""
        metrics: dict[str, dict[str, Any]] = {}
        for c in conditions:
            m = metrics.setdefault(c["metric"], {"name": c["metric"], "unit": c["unit"], "max": None, "min": None,
                                                 "query": c["query"]})
            if c["op"] in (">", ">="):
                m["max"] = c["threshold"] if m["max"] is None else min(m["max"], c["threshold"])
            else:
                m["min"] = c["threshold"] if m["min"] is None else max(m["min"], c["threshold"])
        return list(metrics.values())

    @property
    def auto_rollback(self) -> bool:
        env = self.env
        return env is None or env.auto_rollback is None or env.auto_rollback.enabled

    @property
    def health(self) -> dict[str, Any]:
        hc = self.env.health_check if self.env is not None else None
        if hc is None:
            return {}
        return {"path": hc.path, "initial_delay": hc.initial_delay.total_seconds(), "timeout": hc.timeout.total_seconds(),
                "interval": hc.interval.total_seconds(), "failure_threshold": hc.failure_threshold}

    def rolling(self) -> dict[str, Any] | None:
        rolling = self.env.rolling if self.env is not None else None
        return rolling.model_dump(mode="json") if rolling is not None else None

    def resources(self) -> dict[str, Any] | None:
        res = self.env.resources if self.env is not None else None
        return res.model_dump(mode="json", exclude_none=True) if res is not None else None

    @property
    def expected_ready(self) -> float:
        """Seconds a replica typically needs to turn ready: the initial delay plus a probe or two."""
        if self.env is None:
            return 15.0
        hc = self.env.health_check
        return hc.initial_delay.total_seconds() + 2 * hc.interval.total_seconds()

    # ------------------------------------------------------------------------------------------------ DAG

    def promotion_asset(self, environment: str) -> Any:
        """The asset a successful deployment to ``environment`` updates (extra: version, image, commit); the
        next environment's DAG is scheduled on it."""
        from airflow.sdk import Asset

        return Asset(name=f"deploy-{self.name}-{environment}", uri=f"deploy://{self.name}/{environment}",
                     group="deployments")

    def promotion_schedule(self, previous: str | None) -> Any:
        """When this environment's DAG runs by itself: on the previous environment's asset (a version that
        passed there), and in production at each maintenance window's start (the newest version that passed
        staging and is not in production yet). ``None``: only when someone triggers it."""
        from_previous = [self.promotion_asset(previous)] if previous in self.config.environments else []
        window = self.svc.maintenance_window if self.environment == "production" else None
        if window is None:
            return from_previous or None
        from airflow.timetables.trigger import CronTriggerTimetable

        cron = CronTriggerTimetable(window.schedule, timezone=window.timezone)
        if not from_previous:
            return cron
        from airflow.timetables.assets import AssetOrTimeSchedule

        return AssetOrTimeSchedule(timetable=cron, assets=from_previous)

    def dag(self, dag_id: str, *, title: str, params: dict[str, Param], doc_md: str = "",
            tags: Sequence[str] = (), schedule: Any = None) -> DAG:
        description = f"{title} - {self.svc.description}" if self.svc.description else title
        self.params = params
        return DAG(
            dag_id=dag_id,
            dag_display_name=f"{self.name}: {title}",
            description=description[:250],
            schedule=schedule,
            start_date=START_DATE,
            catchup=False,
            max_active_runs=1,
            is_paused_upon_creation=False,
            tags=[self.name, self.environment, *tags],
            doc_md=doc_md or None,
            default_args={"owner": self.svc.owner, "retries": 0},
            auto_register=False,  # a DAG whose build fails half-way must not be picked up
        )

    def finalize(self, dag: DAG, workflow: str) -> DAG:
        """Attach the params and the doc once every task exists.

        Params are set last on purpose: every operator created inside a DAG deep-copies the DAG's params
        (once per class in its hierarchy), which made params set up front the largest cost of parsing.
        At run time Airflow reads the params from the DAG, so the tasks need no copy.
        """
        from airflow_deploy_provider.factory.docs import describe_dag
        
        dag.params = self.params
        self.plan = describe_dag(dag, self, workflow)
        for task in dag.tasks:  # what is left of a maintenance window must hold the rest of the run
            if hasattr(task, "expected_rollout"):
                task.expected_rollout = self.plan.after(task.task_id)
        return dag

    # ---------------------------------------------------------------------------------------------- tasks

    def start(self, task_id: str = "start_deployment", **kwargs: Any) -> StartDeploymentOperator:
        """The run's first task. Later tasks read the release it resolves, so it is created first."""
        kwargs.setdefault("reason", "{{ params.reason }}")
        op = StartDeploymentOperator(
            task_id=task_id, **self.common(), kind=self.kind, image_repository=self.svc.image_repository,
            config_fingerprint=self.config.fingerprint, notification=self.notification(), retries=2,
            retry_delay=timedelta(seconds=10), **kwargs)
        self.start_task_id = op.task_id  # includes the task group's prefix
        return op

    def finish_success(self, task_id: str, *, record: bool = True, announce: bool = True,
                       regions: list[str] | None = None, publish: bool = False) -> FinishDeploymentOperator:
        """The outcome record; ``publish``: also update this environment's promotion asset."""
        outlets = [self.promotion_asset(self.environment)] if publish else []
        return FinishDeploymentOperator(task_id=task_id, **self.common(), outcome="succeeded", record=record,
                                        announce=announce, notification=self.notification(), regions=regions,
                                        outlets=outlets, retries=2, retry_delay=timedelta(seconds=10))

    def finish_failure(self, task_id: str = "handle_failure",
                       regions: list[str] | None = None) -> FinishDeploymentOperator:
        return FinishDeploymentOperator(task_id=task_id, **self.common(), outcome="failed",
                                        notification=self.notification(), trigger_rule=TriggerRule.ONE_FAILED,
                                        regions=regions, retries=2, retry_delay=timedelta(seconds=10))

    def _step_runner(self, name: str) -> dict[str, Any] | None:
        """The resolved runner of a declared step, worked out once per service configuration (a service's DAGs
        share it; operators only read it)."""
        key = (self.config.fingerprint, str(self.config.root), name)
        if key not in _RUNNERS:
            from airflow_deploy_provider.steps.defaults import resolve_runner

            # snake_case keys (working_dir, block_on, content_type, hosted_zone_id), as the steps read them
            declared = self.svc.steps[name].model_dump(mode="python", exclude_none=True, by_alias=False)
            _RUNNERS[key] = resolve_runner(name, declared, self.svc.platform.type)
        return _RUNNERS[key]

    def step(self, name: str, task_id: str | None = None) -> Any:
        """The task of a declared pipeline step: a pod (cncf.kubernetes pod operator) or a worker step; ``None``
        when the service does not declare the step."""
        if name not in self.svc.steps:
            return None
        runner = self._step_runner(name)
        assert runner is not None  # the config check refuses an empty entry for a step without a default
        common = {"task_id": task_id or STEP_TASK_IDS[name], **self.common(), "step": name,
                  "version": self.release("version"), "image": self.release("image"),
                  "commit": self.release("commit"), "previous_version": self.release("previous_version"),
                  "service_root": str(self.config.root), "workflow": self.kind}
        if runner.get("image"):
            from airflow_deploy_provider.operators.pod_step import PodStepOperator

            return PodStepOperator(**common, runner=runner, platform=self.platform_settings(),
                                   deferrable=self.deferrable)
        return PipelineStepOperator(**common, runner=runner, platform=self.platform_settings(),
                                    notification=self.notification())

    def steps(self, names: Sequence[str]) -> list[Any]:
        return [op for op in (self.step(n) for n in names) if op is not None]

    def suite(self, name: str, task_id: str | None = None, role: str | None = None) -> TestSuiteOperator:
        suite = self.config.suite(name)
        key = (self.config.fingerprint, str(self.config.root), name)
        if key not in _SUITES:  # once per service configuration, like the step runners
            _SUITES[key] = suite.model_dump(mode="python", by_alias=False) if suite is not None else None
        return TestSuiteOperator(
            task_id=task_id or f"{name.replace('-', '_')}_tests", **self.on_platform(), suite_name=name,
            suite=_SUITES[key], role=role,
            version=self.release("version"), service_root=str(self.config.root),
            health_path=self.env.health_check.path if self.env is not None else "/health",
            metrics_provider=self.metrics_settings() if suite is not None and suite.traffic_share else None)

    # ------------------------------------------------------------------------------------- deploy phases

    def strategy_tasks(self, after_switch: Sequence[Any] = ()) -> tuple[Any, Any]:
        """The strategy's own tasks (recreate, rolling, blue-green or canary), created in the current task
        group. Returns the first task and the last task of the main path.

        ``after_switch``: test suites that run once the new version takes the traffic. Blue-green runs them
        before it retires blue, so a failure switches straight back to blue (the configured rollback)."""
        env = self.env
        assert env is not None
        if env.strategy in ("recreate", "rolling"):
            tasks = self._replace_stable(env)
        elif env.strategy == "bluegreen":
            tasks = self._blue_green(env, after_switch)
        else:
            tasks = self._canary(env)
        return tasks[0], tasks[-1]

    def _deploy(self, role: str, task_id: str, replicas: int | None = None) -> DeployVersionOperator:
        env = self.env
        assert env is not None
        return DeployVersionOperator(
            task_id=task_id, **self.on_platform(), role=role, version=self.release("version"),
            image=self.release("image"), replicas=replicas or env.replicas,
            strategy=env.strategy, replica_resources=self.resources(), health_check=self.health,
            progress_deadline=env.progress_deadline.total_seconds(), rolling=self.rolling(), retries=2,
            retry_delay=timedelta(seconds=10))

    def promote(self, task_id: str) -> PromoteVersionOperator:
        env = self.env
        assert env is not None
        return PromoteVersionOperator(task_id=task_id, **self.waiting(), version=self.release("version"),
                                      progress_deadline=env.progress_deadline.total_seconds(), retries=2,
                                      retry_delay=timedelta(seconds=10))

    def _wait(self, role: str, task_id: str) -> WaitForRolloutOperator:
        env = self.env
        assert env is not None
        return WaitForRolloutOperator(
            task_id=task_id, **self.waiting(), role=role, version=self.release("version"),
            progress_deadline=env.progress_deadline.total_seconds(),
            poll_interval=max(0.2, min(2.0, env.health_check.interval.total_seconds())),
            expected_ready_after=self.expected_ready)

    def _replace_stable(self, env: EnvironmentFile) -> list[Any]:
        deploy = self._deploy("stable", "deploy_version")
        wait = self._wait("stable", "wait_until_ready")
        deploy >> wait
        return [deploy, wait]

    def _blue_green(self, env: EnvironmentFile, after_switch: Sequence[Any] = ()) -> list[Any]:
        switch_settings = env.effective_traffic_switch
        deploy = self._deploy("canary", "deploy_green")
        wait = self._wait("canary", "wait_green_ready")
        tests = []
        suites = switch_settings.pre_switch_tests
        if suites is None:
            suites = [s for s in ("integration", "smoke") if s == "smoke" or s in self.svc.tests]
        for name in suites:
            tests.append(self.suite(name, task_id=f"{name.replace('-', '_')}_tests_on_green", role="canary"))
        switch = TrafficSwitchOperator(task_id="switch_traffic", **self.on_platform(), to="green",
                                       version=self.release("version"), retries=2, retry_delay=timedelta(seconds=5))
        conditions = self.watch_conditions()
        watch = MetricGateOperator(
            task_id="watch_after_switch", **self.waiting(), version=self.release("version"), role="canary",
            metrics=self.metrics_from_conditions(conditions), conditions=conditions,
            interval=min(BLUEGREEN_INTERVAL, switch_settings.test_duration), duration=switch_settings.test_duration,
            min_requests=0, failure_limit=1, budget="bluegreen", metrics_provider=self.metrics_settings(),
            rollback_on_failure=switch_settings.rollback_on_error, notification=self.notification())
        retire = self.promote("retire_blue")
        _chain(deploy, wait, *tests, switch, watch)
        _chain(watch, *after_switch, retire)  # in the configured order
        if switch_settings.rollback_on_error:
            back = RollbackOperator(task_id="switch_back_to_blue", **self.on_platform(), version=self.release("version"),
                                    notification=self.notification(), trigger_rule=TriggerRule.ONE_FAILED, retries=2,
                                    retry_delay=timedelta(seconds=5))
            [deploy, wait, *tests, switch, watch, *after_switch] >> back
        return [deploy, retire]

    def _canary(self, env: EnvironmentFile) -> list[Any]:
        assert env.canary is not None
        analysis = env.canary.analysis
        deploy = self._deploy("canary", "deploy_canary")
        wait = self._wait("canary", "wait_canary_ready")
        chain_tasks: list[Any] = [deploy, wait]
        metrics = self.gate_metrics()
        conditions = self.gate_conditions()
        for i, step in enumerate(env.canary.steps, start=1):
            chain_tasks.append(CanaryStepOperator(
                task_id=f"step_{i}_{step.weight}pct", **self.gating(), weight=step.weight, pause=step.pause,
                metrics=metrics, conditions=conditions, interval=analysis.interval,
                min_requests=analysis.min_requests, failure_limit=analysis.threshold,
                metrics_provider=self.metrics_settings(), rollback_on_failure=self.auto_rollback,
                notification=self.notification(), retries=1, retry_delay=timedelta(seconds=5)))
        promote = self.promote("terminate_old_version")
        update_lb = VerifyTrafficOperator(task_id="update_load_balancer", **self.on_platform(),
                                          version=self.release("version"), retries=3, retry_delay=timedelta(seconds=5))
        _chain(*chain_tasks, promote, update_lb)
        if self.auto_rollback:
            rollback = RollbackOperator(task_id="rollback", **self.on_platform(), version=self.release("version"),
                                        notification=self.notification(), trigger_rule=TriggerRule.ONE_FAILED,
                                        retries=2, retry_delay=timedelta(seconds=5))
            chain_tasks >> rollback
        return [deploy, update_lb]

    @staticmethod
    def canary_replicas(replicas: int, weight: int) -> int:
        return max(1, math.ceil(replicas * weight / 100))


def _chain(*tasks: Any) -> None:
    for up, down in zip(tasks, tasks[1:]):
        up >> down


FAILURE_RULES = {TriggerRule.ONE_FAILED, TriggerRule.ALL_FAILED}


def chain_phases(*phases: Any) -> None:
    """Chain phases (tasks, task groups or lists of them) in order, skipping absent ones: ``None``, empty lists
    and empty task groups (phases whose steps are not configured).

    A phase hands over from its main path only: tasks that run on failure (rollbacks) end in their own
    states and must not hold up, or skip, the next phase."""
    present = [p for p in phases if not _empty(p)]
    for up, down in zip(present, present[1:]):
        for leaf in main_leaves(up):
            for root in roots(down):
                leaf >> root


def main_leaves(phase: Any) -> list[Any]:
    """The tasks that end a phase's main path (not its on-failure tasks)."""
    if isinstance(phase, list):
        return [leaf for p in phase for leaf in main_leaves(p)]
    if not isinstance(phase, TaskGroup):
        return [phase]
    tasks = [t for t in _group_tasks(phase) if t.trigger_rule not in FAILURE_RULES]
    ids = {t.task_id for t in tasks}
    return [t for t in tasks if not (t.downstream_task_ids & ids)]


def roots(phase: Any) -> list[Any]:
    if isinstance(phase, list):
        return [r for p in phase for r in roots(p)]
    if not isinstance(phase, TaskGroup):
        return [phase]
    tasks = _group_tasks(phase)
    ids = {t.task_id for t in tasks}
    return [t for t in tasks if not (t.upstream_task_ids & ids)]


def _group_tasks(group: TaskGroup) -> list[Any]:
    out = []
    for child in group.children.values():
        out.extend(_group_tasks(child) if isinstance(child, TaskGroup) else [child])
    return out


def _empty(phase: Any) -> bool:
    if phase is None:
        return True
    if isinstance(phase, list):
        return all(_empty(p) for p in phase)
    if isinstance(phase, TaskGroup):
        return not phase.children
    return False


@contextmanager
def phase(group_id: str, tooltip: str):
    """A task group named after a phase of the spec's workflow."""
    with TaskGroup(group_id, tooltip=tooltip) as tg:
        yield tg


# -------------------------------------------------------------------------------------------------- params


def version_param(required: bool = True, description: str = "Version to deploy, as built and tagged.") -> Param:
    if required:
        return Param(type="string", pattern=VERSION_PATTERN, title="Version", description=description)
    return Param(None, type=["null", "string"], pattern=VERSION_PATTERN, title="Version", description=description)


def commit_param(required: bool = False) -> Param:
    if required:
        return Param(type="string", pattern=COMMIT_PATTERN, title="Commit", description="Git commit sha (7-40 hex).")
    return Param(None, type=["null", "string"], pattern=COMMIT_PATTERN, title="Commit",
                 description="Git commit sha of the version (7-40 hex), if known.")


def reason_param(required: bool = False, min_length: int = 0) -> Param:
    if required:
        return Param(type="string", minLength=max(1, min_length), maxLength=2000, title="Reason",
                     description="Why this runs; recorded in the ledger and announced.")
    return Param(None, type=["null", "string"], maxLength=2000, title="Reason",
                 description="Why this runs; recorded in the ledger and announced.")


def branch_param() -> Param:
    return Param(None, type=["null", "string"], pattern=BRANCH_PATTERN, title="Branch", description="Git branch.")


def text_param(title: str, description: str, max_length: int = 2000) -> Param:
    return Param(None, type=["null", "string"], maxLength=max_length, title=title, description=description)


def issue_param() -> Param:
    return Param(type="string", pattern=ISSUE_PATTERN, title="Issue id",
                 description="Incident or ticket id, such as INC-1234; used in the image tag hotfix-<issue id>.")


def severity_param() -> Param:
    return Param("critical", type="string", enum=["critical", "major"], title="Severity",
                 description="critical: one tech lead approves; major: one senior engineer approves.")
