"""Parse time of the DAG factory, against the same DAGs built by hand-written code, in the same run.

For N services shaped like the example service ``checkout`` (the spec's four files plus service.yaml:
development, staging, production across four regions, hotfix, rollbacks), it measures:

* factory: ``register_deploy_dags()`` as the DAG file runs it: discovery, config loading and validation,
  DAG construction;
* hand-written: the same DAGs (same operators with the same arguments, same task groups, same edges, same
  params and docs) constructed by plain code with literal values, without the factory;
* DagBag: the real DAG file imported by Airflow's DagBag in a fresh process, against Airflow's default
  30 s import timeout.

Usage: python benchmarks/parse_time.py [--services 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "services" / "checkout"
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="adp-bench-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
TARGET_RATIO = 1.3
IMPORT_TIMEOUT = 30.0


def make_services(root: Path, n: int) -> None:
    for i in range(n):
        svc = root / f"svc{i:04d}"
        shutil.copytree(EXAMPLE, svc)
        service_yaml = svc / ".deploy" / "service.yaml"
        service_yaml.write_text(service_yaml.read_text().replace("service: checkout", f"service: svc{i:04d}", 1))


# ------------------------------------------------------------------------------------------- hand-written


def build_recording_kwargs(config: Any) -> dict[str, Any]:
    """Build a service's DAGs while recording the arguments each operator was called with (what the
    hand-written code passes), before Airflow merges defaults into them."""
    from contextlib import ExitStack
    from unittest import mock

    from airflow_deploy_provider.factory import build_service_dags

    classes = {type(t) for dag in build_service_dags(config).values() for t in dag.tasks}
    with ExitStack() as stack:
        for cls in classes:
            original = cls.__init__

            def init(self, *args, __original=original, __cls=cls, **kwargs):
                if type(self) is __cls and "_bench_kwargs" not in self.__dict__:
                    object.__setattr__(self, "_bench_kwargs", dict(kwargs))
                return __original(self, *args, **kwargs)

            init.__wrapped__ = original.__wrapped__  # Airflow finds the outermost __init__ through it
            stack.enter_context(mock.patch.object(cls, "__init__", init))
        return build_service_dags(config)


def record(dags: dict[str, Any]) -> list[dict[str, Any]]:
    """What hand-written code for these DAGs would contain: per DAG, its arguments, groups, operators with
    their arguments, edges and teardowns."""
    from airflow.sdk import TaskGroup

    out = []
    for dag in dags.values():
        groups: list[tuple[str, str]] = []

        def walk(group: TaskGroup, found: list[tuple[str, str]]) -> None:
            for child in group.children.values():
                if isinstance(child, TaskGroup):
                    found.append((child.group_id, child.tooltip))
                    walk(child, found)

        walk(dag.task_group, groups)
        tasks = []
        for task in dag.tasks:
            kwargs = {k: v for k, v in task.__dict__["_bench_kwargs"].items()
                      if k not in ("dag", "task_group", "default_args", "params")}
            tasks.append({"cls": type(task), "group": task.task_group.group_id if task.task_group else None,
                          "kwargs": kwargs, "id": task.task_id, "teardown_of": sorted(
                              u for u in task.upstream_task_ids if task.is_teardown and dag.task_dict[u].is_setup)})
        edges = [(t.task_id, d) for t in dag.tasks for d in sorted(t.downstream_task_ids)]
        out.append({"dag": dict(dag_id=dag.dag_id, dag_display_name=dag.dag_display_name,
                                description=dag.description, schedule=getattr(dag, "schedule", None),
                                start_date=dag.start_date,
                                catchup=False, max_active_runs=1, is_paused_upon_creation=False, tags=list(dag.tags),
                                default_args=dict(dag.default_args), auto_register=False),
                    "params": dag.params, "doc_md": dag.doc_md, "groups": groups, "tasks": tasks, "edges": edges})
    return out


def rename(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {rename(k, old, new): rename(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rename(v, old, new) for v in obj]
    if isinstance(obj, tuple):
        return tuple(rename(v, old, new) for v in obj)
    return obj


def build_by_hand(recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """Construct DAGs from literal values, as a hand-written DAG file would."""
    from airflow.sdk import DAG, TaskGroup

    dags = {}
    for spec in recorded:
        with DAG(**spec["dag"]) as dag:
            groups: dict[str | None, Any] = {None: None}
            for group_id, tooltip in spec["groups"]:
                parent = group_id.rsplit(".", 1)[0] if "." in group_id else None
                groups[group_id] = TaskGroup(group_id.rsplit(".", 1)[-1], tooltip=tooltip, parent_group=groups[parent])
            ops = {}
            for t in spec["tasks"]:
                ops[t["id"]] = t["cls"](task_group=groups[t["group"]], **t["kwargs"])
            for up, down in spec["edges"]:
                ops[up] >> ops[down]
            for t in spec["tasks"]:
                if t["teardown_of"]:
                    ops[t["id"]].as_teardown(setups=[ops[s] for s in t["teardown_of"]])
        dag.params = spec["params"]
        dag.doc_md = spec["doc_md"]
        dags[dag.dag_id] = dag
    return dags


# ------------------------------------------------------------------------------------------------- runs


def time_factory(root: Path) -> tuple[float, float, dict[str, Any]]:
    from airflow_deploy_provider.config.loader import discover, load_service
    from airflow_deploy_provider.factory import register_deploy_dags

    gc.collect()
    t0 = time.perf_counter()
    for d in discover([root]):
        load_service(d)
    t1 = time.perf_counter()
    found: dict[str, Any] = {}
    t2 = time.perf_counter()
    register_deploy_dags(found, roots=[root])
    t3 = time.perf_counter()
    return t3 - t2, t1 - t0, found


def time_by_hand(per_service: list[list[dict[str, Any]]]) -> tuple[float, dict[str, Any]]:
    gc.collect()
    t0 = time.perf_counter()
    dags: dict[str, Any] = {}
    for recorded in per_service:
        dags.update(build_by_hand(recorded))
    return time.perf_counter() - t0, dags


def dagbag_seconds(root: Path) -> tuple[float, dict[str, str], int]:
    dags = Path(tempfile.mkdtemp(prefix="adp-bench-dags-"))
    shutil.copy(REPO / "dags" / "deploy_dags.py", dags)
    code = (
        "import time, json\nfrom airflow.dag_processing.dagbag import DagBag\n"
        "t = time.perf_counter()\nbag = DagBag(%r)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'errors': bag.import_errors, 'dags': len(bag.dags)}))"
        % str(dags)
    )
    env = {**os.environ, "DEPLOY_SERVICE_ROOTS": str(root), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    shutil.rmtree(dags, ignore_errors=True)
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["errors"], result["dags"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-dagbag", action="store_true", help="skip the DagBag import in a fresh process")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="adp-bench-services-"))
    try:
        make_services(root, args.services)
        from airflow_deploy_provider.config.loader import load_service

        template = build_recording_kwargs(load_service(root / "svc0000" / ".deploy").config)
        recorded = record(template)
        per_service = [copy.copy(rename(recorded, "svc0000", f"svc{i:04d}")) for i in range(args.services)]
        for spec, original in zip(per_service[0], recorded):  # params and classes are not renamed
            spec["params"] = original["params"]
        for service in per_service:
            for spec, original in zip(service, recorded):
                spec["params"] = original["params"]
                for t, o in zip(spec["tasks"], original["tasks"]):
                    t["cls"] = o["cls"]

        factory, loading, hand = [], [], []
        counts = (0, 0)
        for _ in range(args.rounds):
            f, load, dags = time_factory(root)
            factory.append(f)
            loading.append(load)
            counts = (len(dags), sum(len(d.tasks) for d in dags.values()))
            del dags
            h, dags = time_by_hand(per_service)
            hand.append(h)
            assert (len(dags), sum(len(d.tasks) for d in dags.values())) == counts, "hand-written DAGs differ"
            del dags
        f, h, load = statistics.median(factory), statistics.median(hand), statistics.median(loading)
        n_dags, n_tasks = counts
        ratio = f / h
        rows = [
            ("services", f"{args.services}"),
            ("DAGs / tasks", f"{n_dags} / {n_tasks}"),
            ("factory (load + build)", f"{f:.2f} s"),
            ("  of which config loading", f"{load:.2f} s"),
            ("hand-written construction", f"{h:.2f} s"),
            ("ratio factory / hand-written", f"{ratio:.2f}  (target <= {TARGET_RATIO})"),
            ("per DAG: factory / hand-written", f"{f / n_dags * 1000:.2f} ms / {h / n_dags * 1000:.2f} ms"),
        ]
        ok = ratio <= TARGET_RATIO
        if not args.no_dagbag:
            seconds, errors, loaded = dagbag_seconds(root)
            rows.append(("DagBag import of the DAG file", f"{seconds:.2f} s for {loaded} DAGs (limit {IMPORT_TIMEOUT:.0f} s)"))
            rows.append(("DagBag import errors", str(len(errors))))
            ok = ok and seconds < IMPORT_TIMEOUT and not errors
        width = max(len(k) for k, _ in rows)
        print(f"Parse time, median of {args.rounds} rounds ({os.cpu_count()} CPUs)")
        print("-" * (width + 40))
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        print("-" * (width + 40))
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
