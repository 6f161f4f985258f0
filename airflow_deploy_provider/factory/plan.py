"""What a generated DAG will do, in order, and how long a successful run is expected to take."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_deploy_provider.config.types import format_duration

FAILURE_RULES = {"one_failed", "all_failed"}
ALWAYS_RULES = {"all_done", "always", "one_done", "all_done_setup_success"}


@dataclass
class PlannedTask:
    task_id: str
    group: str | None
    label: str
    description: str
    expected: timedelta
    upstream: list[str]
    trigger_rule: str
    on_failure: bool
    waits_for_people: bool
    operator: str


@dataclass
class Plan:
    dag_id: str
    tasks: list[PlannedTask]
    expected: timedelta
    waits: list[str] = field(default_factory=list)
    critical_path: list[str] = field(default_factory=list)

    @property
    def by_id(self) -> dict[str, PlannedTask]:
        return {t.task_id: t for t in self.tasks}

    def after(self, task_id: str) -> timedelta:
        """Expected time from the end of ``task_id`` to the end of a successful run (longest path after it)."""
        downstream: dict[str, list[PlannedTask]] = {}
        for t in self.tasks:
            if not t.on_failure:
                for up in t.upstream:
                    downstream.setdefault(up, []).append(t)
        rest: dict[str, timedelta] = {}
        for t in reversed(self.tasks):  # topological order reversed: successors first
            rest[t.task_id] = max((rest[d.task_id] + d.expected for d in downstream.get(t.task_id, ())),
                                  default=timedelta(0))
        return rest.get(task_id, timedelta(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "expected_duration": format_duration(self.expected),
            "expected_seconds": self.expected.total_seconds(),
            "waits_for_people": self.waits,
            "critical_path": self.critical_path,
            "tasks": [{"task_id": t.task_id, "group": t.group, "description": t.description,
                       "expected": format_duration(t.expected), "upstream": t.upstream,
                       "trigger_rule": t.trigger_rule, "on_failure": t.on_failure, "operator": t.operator}
                      for t in self.tasks],
        }


def topological(dag: DAG) -> list[Any]:
    """Tasks in dependency order; ties keep creation order so phases read top to bottom."""
    order = {tid: i for i, tid in enumerate(dag.task_dict)}
    indegree = {tid: len(t.upstream_task_ids) for tid, t in dag.task_dict.items()}
    ready = sorted((tid for tid, n in indegree.items() if n == 0), key=order.__getitem__)
    out = []
    while ready:
        tid = ready.pop(0)
        task = dag.task_dict[tid]
        out.append(task)
        for down in task.downstream_task_ids:
            indegree[down] -= 1
            if indegree[down] == 0:
                ready.append(down)
        ready.sort(key=order.__getitem__)
    return out


def plan_dag(dag: DAG) -> Plan:
    tasks = topological(dag)
    planned: list[PlannedTask] = []
    failure_only: set[str] = set()
    for task in tasks:
        rule = str(getattr(task.trigger_rule, "value", task.trigger_rule))
        # A failure handler's own tasks (what a branch on failure chooses) are on the failure path too.
        if rule in FAILURE_RULES or (rule not in ALWAYS_RULES and task.upstream_task_ids
                                     and task.upstream_task_ids <= failure_only):
            failure_only.add(task.task_id)
        group = task.task_group.group_id if task.task_group is not None and task.task_group.group_id else None
        describe = getattr(task, "describe", None)
        description = describe() if callable(describe) else _generic_description(task)
        planned.append(PlannedTask(
            task_id=task.task_id, group=group, label=task.task_id.rsplit(".", 1)[-1], description=description,
            expected=getattr(task, "expected_duration", timedelta(seconds=2)),
            upstream=sorted(task.upstream_task_ids), trigger_rule=rule, on_failure=task.task_id in failure_only,
            waits_for_people=bool(getattr(task, "waits_for_people", False)), operator=type(task).__name__))
    # Longest path through the tasks a successful run executes.
    finish: dict[str, timedelta] = {}
    via: dict[str, str | None] = {}
    for t in planned:
        if t.on_failure:
            continue
        best, best_up = timedelta(0), None
        for up in t.upstream:
            if up in finish and finish[up] >= best:
                best, best_up = finish[up], up
        finish[t.task_id] = best + t.expected
        via[t.task_id] = best_up
    end = max(finish, key=finish.__getitem__) if finish else None
    path = []
    while end is not None:
        path.append(end)
        end = via[end]
    waits = [t.task_id for t in planned if t.waits_for_people and not t.on_failure]
    return Plan(dag.dag_id, planned, max(finish.values(), default=timedelta(0)), waits, list(reversed(path)))


def _generic_description(task: Any) -> str:
    if getattr(task, "trigger_dag_id", None):
        wait = "and wait for it" if getattr(task, "wait_for_completion", False) else "without waiting"
        return f"run {task.trigger_dag_id} {wait}"
    doc = (type(task).__doc__ or task.task_type).strip().splitlines()[0]
    return doc.rstrip(".")


def render_plan(plan: Plan, header: str = "") -> str:
    """The plan as text: phases with their tasks, what each does and how long it takes."""
    lines = []
    if header:
        lines.append(header)
    extra = f" (plus waiting: {', '.join(plan.waits)})" if plan.waits else ""
    lines.append(f"Expected duration of a successful run: {format_duration(plan.expected)}{extra}")
    lines.append("")
    current_group: str | None = "\0"
    width = max((len(t.label) for t in plan.tasks), default=10) + 4
    main = [t for t in plan.tasks if not t.on_failure]
    failure = [t for t in plan.tasks if t.on_failure]
    for t in main:
        if t.group != current_group:
            current_group = t.group
            if t.group:
                lines.append(f"{t.group}")
        indent = "  " if t.group else ""
        lines.append(f"{indent}{t.label:<{width - len(indent)}} {format_duration(t.expected):>7}  {t.description}")
    if failure:
        lines.append("")
        lines.append("on failure:")
        for t in failure:
            lines.append(f"  {t.task_id:<{width}} {t.description}")
    return "\n".join(lines)
