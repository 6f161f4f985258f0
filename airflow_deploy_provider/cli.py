"""``airflow-deploy``: validate ``.deploy`` files, show the plan of a generated DAG, print the JSON Schema,
report the DORA metrics of the deployment ledger."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # piped into head
        return EXIT_OK
    except UsageError as exc:
        print(f"airflow-deploy: {exc}", file=sys.stderr)
        return EXIT_USAGE


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-deploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", help="validate services' .deploy files (exit 1 on errors)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="service roots, service folders or .deploy folders")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show the DAG that would be built for a service and environment")
    p.add_argument("path", metavar="PATH", help="a service folder, its .deploy folder, or a root holding services")
    p.add_argument("--environment", "-e", required=True, choices=["development", "staging", "production"])
    p.add_argument("--service", "-s", help="service name, when PATH holds several services")
    p.add_argument("--region", "-r", help="a region of a multi-region rollout (its regional DAG)")
    p.add_argument("--workflow", "-w", choices=["deploy", "hotfix", "rollback"], default="deploy")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("schema", help="print the JSON Schema of .deploy files (for editors)")
    p.add_argument("--kind", choices=["service", "environment", "multi-region"],
                   help="one kind of file; default: any .deploy file")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("local", help="the local platform's running services (status, down)")
    p.add_argument("action", choices=["status", "down"])
    p.add_argument("targets", nargs="*", metavar="TARGET", help="<service>-<environment>[-<region>]; default: all")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_local)

    p = sub.add_parser("dora", help="DORA metrics and deployment KPIs from the deployment ledger")
    p.add_argument("--service", "-s", help="only this service")
    p.add_argument("--environment", "-e", help="only this environment")
    p.add_argument("--days", type=int, metavar="N", help="the last N days (default: 30)")
    p.add_argument("--since", metavar="DATE", help="start of the period: YYYY-MM-DD or an ISO 8601 time (UTC "
                   "unless it has an offset)")
    p.add_argument("--until", metavar="DATE", help="end of the period (a date: up to the end of that day); "
                   "default: now")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--ledger-url", metavar="URL", help="SQLAlchemy URL of the ledger; default: the "
                   "deploy_ledger Airflow connection (AIRFLOW_CONN_DEPLOY_LEDGER), else deploy_ledger.db in "
                   "AIRFLOW_HOME")
    p.set_defaults(func=cmd_dora)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    return parser


# ------------------------------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    from airflow_deploy_provider.config.loader import discover
    from airflow_deploy_provider.factory import load_all

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such path: {', '.join(missing)}")
    roots = [Path(p) for p in args.paths]
    deploy_dirs = discover(roots)
    results = load_all(roots)
    issues = [i for r in results for i in r.issues]
    errors = [i for i in issues if i.severity == "error" or args.strict]
    if args.format == "json":
        print(json.dumps({
            "services": [{"deploy_dir": str(r.deploy_dir), "service": r.config.name if r.config else None,
                          "valid": r.config is not None and not (args.strict and r.warnings),
                          "dag_ids": _dag_ids(r.config) if r.config else []} for r in results],
            "issues": [i.to_dict() for i in issues],
            "errors": len(errors),
        }, indent=2))
    else:
        for issue in sorted(issues, key=lambda i: (i.file, i.line, i.column)):
            print(issue)
        ok = sum(1 for r in results if r.config is not None)
        summary = f"{len(deploy_dirs)} service(s) checked: {ok} valid, {len(deploy_dirs) - ok} invalid; " \
                  f"{sum(1 for i in issues if i.severity == 'error')} error(s), " \
                  f"{sum(1 for i in issues if i.severity == 'warning')} warning(s)"
        print(summary, file=sys.stderr if errors else sys.stdout)
    if not deploy_dirs:
        print("no .deploy folders found", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_INVALID if errors else EXIT_OK


def _dag_ids(config) -> list[str]:
    from airflow_deploy_provider.factory import dag_ids

    return dag_ids(config)


# ----------------------------------------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace) -> int:
    from airflow_deploy_provider.config.errors import DeployConfigError
    from airflow_deploy_provider.factory import build_service_dags, load_all
    from airflow_deploy_provider.factory.plan import plan_dag, render_plan

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"no such path: {path}")
    results = load_all([path])
    if args.service:
        results = [r for r in results if (r.config.name if r.config else r.deploy_dir.parent.name) == args.service]
    if not results:
        raise UsageError(f"no service{' ' + args.service if args.service else ''} under {path}")
    if len(results) > 1:
        names = ", ".join(r.config.name if r.config else str(r.deploy_dir) for r in results)
        raise UsageError(f"{path} holds {len(results)} services ({names}); choose one with --service")
    result = results[0]
    if result.config is None:
        print(DeployConfigError(result.errors, result.deploy_dir), file=sys.stderr)
        return EXIT_INVALID
    config = result.config
    if args.environment not in config.environments:
        raise UsageError(f"service {config.name} has no {args.environment} environment file "
                         f"(it has: {', '.join(config.environments) or 'none'})")
    name = config.name
    if args.workflow == "hotfix":
        dag_id = f"hotfix_{name}"
    elif args.workflow == "rollback":
        dag_id = f"rollback_{name}_{args.environment}" + (f"_{args.region}" if args.region else "")
    else:
        dag_id = f"deploy_{name}_{args.environment}" + (f"_{args.region}" if args.region else "")
    dags = build_service_dags(config, only=dag_id)
    if dag_id not in dags:
        raise UsageError(f"service {name} has no DAG {dag_id}")
    dag = dags[dag_id]
    plan = plan_dag(dag)
    if args.format == "json":
        print(json.dumps(plan.to_dict(), indent=2))
        return EXIT_OK
    env = config.environments[args.environment]
    header = [f"{dag_id}: {dag.dag_display_name}",
              f"service {name}, environment {args.environment}, strategy {env.strategy}, {env.replicas} replica(s), "
              f"platform {config.service.platform.type}, metrics {config.service.metric_provider}",
              f"{len(dag.tasks)} tasks"]
    if config.multi_region is not None and args.environment == "production" and not args.region \
            and args.workflow == "deploy":
        from airflow_deploy_provider.config.types import format_duration

        header.append("regions in rollout order: " + ", ".join(
            f"{r.name} ({r.role}, {r.weight:g}%, watch {format_duration(r.wait_time)})"
            for r in config.multi_region.regions))
        header.append("each region runs its production workflow (deploy_<service>_production_<region>), "
                      "counted in the expected duration below")
    print(render_plan(plan, "\n".join(header) + "\n"))
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------------------------------- others


def cmd_schema(args: argparse.Namespace) -> int:
    from airflow_deploy_provider.config.schema import json_schema

    print(json.dumps(json_schema(args.kind), indent=2, sort_keys=False))
    return EXIT_OK


def cmd_local(args: argparse.Namespace) -> int:
    from airflow_deploy_provider.platforms.local import platform as local
    from airflow_deploy_provider.platforms.local.state import state_root

    known = local.targets()
    unknown = [t for t in args.targets if t not in known]
    if unknown:
        raise UsageError(f"no local state for {', '.join(unknown)} under {state_root()} (known: "
                         f"{', '.join(known) or 'none'})")
    chosen = args.targets or known
    if args.action == "down":
        results = [local.down(t) for t in chosen]
        if args.format == "json":
            print(json.dumps(results, indent=2))
        else:
            for r in results:
                print(f"{r['target']}: stopped {r['stopped']} process(es)")
            if not results:
                print(f"nothing runs on the local platform ({state_root()})")
        return EXIT_OK
    statuses = []
    for key in chosen:
        data = local.target_state(key)
        from airflow_deploy_provider.platforms.base import Target

        platform = local.LocalPlatform({"type": "local", "command": []},
                                       Target(data.get("service", key), data.get("environment", ""),
                                              data.get("region")))
        statuses.append(platform.status())
    if args.format == "json":
        print(json.dumps(statuses, indent=2, default=str))
        return EXIT_OK
    if not statuses:
        print(f"nothing runs on the local platform ({state_root()})")
    for st in statuses:
        ports = (st["router"] or {}).get("ports") or {}
        print(f"{st['target']}: http://127.0.0.1:{ports.get('service')} (router {'up' if st['router']['alive'] else 'DOWN'})")
        for role in ("stable", "canary"):
            r = st[role]
            if r:
                share = 100 - st["weight"] if role == "stable" else st["weight"]
                if role == "stable" and not st["canary"]:
                    share = 100
                print(f"  {role:<7} {r['version']:<20} {r['alive']}/{r['replicas']} replicas alive, {share}% of traffic")
        if st.get("updating_to"):
            print(f"  updating to {st['updating_to']}")
        if st.get("maintenance"):
            print("  maintenance mode ON: live traffic gets the maintenance page")
    return EXIT_OK


def cmd_dora(args: argparse.Namespace) -> int:
    from airflow_deploy_provider.dora import compute_dora, render_table

    since, until = _period(args)
    if args.ledger_url:
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        ledger = DeploymentLedger.from_url(args.ledger_url)
    else:  # Airflow only when needed: the connection lookup imports it
        from airflow_deploy_provider.ledger.hook import get_ledger

        ledger = get_ledger()
    report = compute_dora(ledger, since=since, until=until, service=args.service,
                          environment=args.environment)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_table(report))
    return EXIT_OK


def _period(args: argparse.Namespace) -> tuple[datetime, datetime]:
    """``[since, until)`` from ``--days`` or ``--since``/``--until`` (a date-only ``--until`` includes its
    day)."""
    from airflow_deploy_provider.dora import default_period

    if args.days is not None and (args.since or args.until):
        raise UsageError("give either --days or --since/--until, not both")
    if args.days is not None and args.days <= 0:
        raise UsageError(f"--days must be a positive number of days, got {args.days}")
    if not (args.since or args.until):
        return default_period(args.days or 30)
    until = _parse_time("--until", args.until, end_of_day=True) if args.until else datetime.now(timezone.utc)
    since = _parse_time("--since", args.since) if args.since else until - timedelta(days=30)
    if since >= until:
        raise UsageError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    return since, until


def _parse_time(option: str, text: str, end_of_day: bool = False) -> datetime:
    """A date (``2024-05-01``) or an ISO 8601 time; UTC unless it has an offset."""
    try:
        if len(text) == 10:  # a date alone: its start, or the start of the next day for --until
            day = date.fromisoformat(text)
            value = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
            return value + timedelta(days=1) if end_of_day else value
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time "
                         "(YYYY-MM-DDTHH:MM[:SS][+HH:MM])") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def cmd_version(args: argparse.Namespace) -> int:
    from airflow_deploy_provider import __version__

    print(f"airflow-deploy-provider {__version__}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
