"""Rules that relate several fields or files. Each finding has its own code and message.

Locations are tuples of YAML keys (camelCase, as written) and list indexes, so every finding can be
placed at ``file:line:column``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from airflow_deploy_provider.config.errors import Loc, did_you_mean
from airflow_deploy_provider.config.models import (
    Analysis,
    ApprovalPolicy,
    CanaryStep,
    EnvironmentFile,
    MetricCheck,
    MultiRegionFile,
    Region,
    ServiceFile,
    TestSuite,
)
from airflow_deploy_provider.config.types import (
    BUILTIN_METRICS,
    UNIT_EXAMPLE,
    UNIT_SUFFIXES,
    Condition,
    MetricInfo,
    Threshold,
    format_duration,
)

BUILTIN_SUITES = ("smoke",)
UNIT_WORDS = {"percent": "a percentage", "ms": "milliseconds", "rps": "requests per second", "count": "a count",
              "ratio": "a ratio"}


@dataclass(frozen=True)
class Finding:
    loc: Loc
    message: str
    code: str
    severity: str = "error"
    prefer_key: bool = False


def metric_registry(service: ServiceFile | None) -> dict[str, MetricInfo]:
    """Built-in metrics plus the service's custom ones."""
    metrics = dict(BUILTIN_METRICS)
    if service is not None:
        for custom in service.metrics.custom:
            metrics.setdefault(custom.name, MetricInfo(custom.name, custom.unit, custom.healthy, custom.query))
    return metrics


def suite_names(service: ServiceFile | None) -> set[str]:
    return set(BUILTIN_SUITES) | (set(service.tests) if service is not None else set())


# ------------------------------------------------------------------------------------- environment files


EnvCheck = Callable[[EnvironmentFile, "ServiceFile | None"], Iterator[Finding]]
_ENV_CHECKS: list[EnvCheck] = []


def _env_check(*needs: str) -> Callable[[EnvCheck], EnvCheck]:
    """Register a rule of environment files (``needs``: the top-level keys it reads, for readers)."""

    def register(fn: EnvCheck) -> EnvCheck:
        _ENV_CHECKS.append(fn)
        return fn

    return register


def safely(rule: Callable[..., Iterator[Finding]], *args: Any, partial: bool) -> Iterator[Finding]:
    """Run a rule. On a partly valid file, invalid fields are absent and a rule that reads one stops (its
    problem is already reported); on a valid file nothing is caught."""
    if not partial:
        yield from rule(*args)
        return
    try:
        yield from rule(*args)
    except AttributeError:
        return


def check_environment(env: EnvironmentFile, service: ServiceFile | None, present_keys: set[str] | None = None,
                      partial: bool = False) -> Iterator[Finding]:
    """Rules of one environment file (valid, or ``partial``: see :func:`safely`). ``present_keys`` are the
    top-level keys written in the file."""
    for rule in _ENV_CHECKS:
        yield from safely(rule, env, service, partial=partial)
    present = present_keys if present_keys is not None else set(env.model_fields_set)
    yield from safely(lambda: _strategy_sections(env.strategy, {_ALIAS.get(k, k) for k in present}),
                      partial=partial)



@_env_check("canary")
def _canary_rule(env: EnvironmentFile, service: ServiceFile | None) -> Iterator[Finding]:
    if env.canary is not None:
        yield from _canary_steps(env)
        yield from _analysis(env.canary.analysis, service)


@_env_check("autoRollback", "canary")
def _auto_rollback_rule(env: EnvironmentFile, service: ServiceFile | None) -> Iterator[Finding]:
    if env.auto_rollback is None:
        return
    for i, cond in enumerate(env.auto_rollback.conditions):
        yield from _condition(cond, ("autoRollback", "conditions", i), service)
    if env.auto_rollback.enabled and not env.auto_rollback.conditions and env.canary is None:
        yield Finding(("autoRollback",), "autoRollback is enabled but lists no conditions, so it never triggers",
                      "auto-rollback-empty", "warning", prefer_key=True)


@_env_check("resources")
def _resources_rule(env: EnvironmentFile, service: ServiceFile | None) -> Iterator[Finding]:
    yield from _resources(env)


@_env_check("healthCheck", "progressDeadline")
def _health_rule(env: EnvironmentFile, service: ServiceFile | None) -> Iterator[Finding]:
    yield from _health_check(env)


@_env_check("postDeploymentTests", "trafficSwitch")
def _suites_rule(env: EnvironmentFile, service: ServiceFile | None) -> Iterator[Finding]:
    if service is None:
        return
    known = suite_names(service)
    seen: set[str] = set()
    for i, name in enumerate(env.post_deployment_tests):
        if name not in known:
            yield Finding(("postDeploymentTests", i),
                          f"test suite '{name}' is not defined{did_you_mean(name, known)}; define it under "
                          f"'tests' in service.yaml (defined: {', '.join(sorted(known))})", "suite-unknown")
        if name in seen:
            yield Finding(("postDeploymentTests", i), f"test suite '{name}' is listed twice", "suite-duplicate")
        seen.add(name)
    if env.traffic_switch is not None and env.traffic_switch.pre_switch_tests is not None:
        for i, name in enumerate(env.traffic_switch.pre_switch_tests):
            if name not in known:
                yield Finding(("trafficSwitch", "preSwitchTests", i),
                              f"test suite '{name}' is not defined{did_you_mean(name, known)}; define it under "
                              f"'tests' in service.yaml", "suite-unknown")


@_env_check("environment", "strategy", "replicas")
def _availability_rule(env: EnvironmentFile, service: ServiceFile | None) -> Iterator[Finding]:
    if env.environment in ("staging", "production") and env.strategy == "recreate":
        yield Finding(("strategy",), f"strategy 'recreate' stops every replica before starting the new version: "
                      f"{env.environment} will be down during the deployment", "recreate-downtime", "warning")
    if env.environment == "production" and env.replicas < 2:
        yield Finding(("replicas",), "production runs a single replica: one failure takes the service down",
                      "single-replica", "warning")


_ALIAS = {"traffic_switch": "trafficSwitch"}


def _strategy_sections(strategy: str, present: set[str]) -> Iterator[Finding]:
    """Strategy-specific sections: ``canary`` is required for canary; none may appear for another strategy."""
    sections = {"canary": "canary", "bluegreen": "trafficSwitch", "rolling": "rolling"}
    if strategy == "canary" and "canary" not in present:
        yield Finding(("strategy",), "strategy 'canary' needs a 'canary' section with 'steps' and 'analysis'",
                      "strategy-section-missing")
    for owner, key in sections.items():
        if key in present and strategy != owner:
            yield Finding((key,), f"'{key}' applies only to strategy '{owner}', but this file uses strategy "
                          f"'{strategy}'", "strategy-section-unused", prefer_key=True)


def _canary_steps(env: EnvironmentFile) -> Iterator[Finding]:
    assert env.canary is not None
    yield from canary_step_findings(list(enumerate(env.canary.steps)), len(env.canary.steps),
                                    env.canary.analysis.interval)


def canary_step_findings(steps: list[tuple[int, CanaryStep]], count: int, interval: timedelta,
                         unknown_pause: frozenset[int] = frozenset()) -> Iterator[Finding]:
    """Rules of ``canary.steps``. ``steps`` holds the valid steps with their index (invalid ones are left out,
    so the rules still run on the rest); ``count`` is the number of steps written; ``unknown_pause`` are steps
    whose weight is valid but whose pause is not (already reported), so pause rules skip them."""
    previous: tuple[int, CanaryStep] | None = None
    for i, step in steps:
        if previous is not None and step.weight <= previous[1].weight:
            j, prev = previous
            yield Finding(("canary", "steps", i, "weight"),
                          f"weights must strictly increase: step {i} has weight {step.weight} after {prev.weight} in "
                          f"step {j}; expected more than {prev.weight}", "canary-weights-order")
        previous = (i, step)
        if i in unknown_pause:
            continue
        if i < count - 1:
            if step.pause is None:
                yield Finding(("canary", "steps", i),
                              f"step {i} (weight {step.weight}) needs a 'pause': the metric gate watches each step "
                              "for its pause before the next step", "canary-pause-missing")
            elif step.pause < interval:
                yield Finding(("canary", "steps", i, "pause"),
                              f"pause {format_duration(step.pause)} is shorter than analysis.interval "
                              f"{format_duration(interval)}: no check would run during this step; expected at least "
                              f"{format_duration(interval)}", "canary-pause-short")
    if steps and steps[-1][0] == count - 1:
        i, last_step = steps[-1]
        if last_step.weight != 100:
            yield Finding(("canary", "steps", i, "weight"),
                          f"the last step must send 100% of traffic to the new version; got {last_step.weight} "
                          "(add '- weight: 100' as the last step)", "canary-weights-end")
        elif last_step.pause is not None and count > 1 and i not in unknown_pause:
            yield Finding(("canary", "steps", i, "pause"),
                          "the last step (weight 100) is the full rollout and takes no pause; remove it "
                          "(post-rollout watching is set by monitoring.duration)", "canary-last-pause",
                          prefer_key=True)


def _analysis(analysis: Analysis, service: ServiceFile | None) -> Iterator[Finding]:
    yield from metric_check_findings(list(enumerate(analysis.metrics)), service)


def metric_check_findings(metrics: list[tuple[int, MetricCheck]], service: ServiceFile | None) -> Iterator[Finding]:
    """Rules of ``canary.analysis.metrics`` over the valid entries and their indexes."""
    registry = metric_registry(service)
    first: dict[str, int] = {}
    for i, check in metrics:
        loc = ("canary", "analysis", "metrics", i)
        info = registry.get(check.name)
        if info is None:
            if service is not None:  # otherwise it may be a custom metric of the (invalid) service file
                yield Finding((*loc, "name"), _unknown_metric(check.name, registry), "metric-unknown")
            continue
        if check.name in first:
            yield Finding((*loc, "name"), f"metric '{check.name}' is checked twice (first as "
                          f"canary.analysis.metrics[{first[check.name]}]); merge its bounds into one entry",
                          "metric-duplicate")
        first.setdefault(check.name, i)
        if check.max is None and check.min is None and check.max_ratio is None:
            yield Finding(loc, f"metric '{check.name}' needs 'max', 'min' or 'maxRatio' (its healthy bound)",
                          "metric-bound-missing")
        for bound in ("max", "min"):
            threshold: Threshold | None = getattr(check, bound)
            if threshold is not None:
                yield from _threshold(threshold, info, (*loc, bound))
        if check.max is not None and check.min is not None and check.min.value(info.unit) > check.max.value(info.unit):
            yield Finding((*loc, "min"), f"min {check.min} is above max {check.max}", "metric-bounds-order")


def _threshold(threshold: Threshold, info: MetricInfo, loc: Loc) -> Iterator[Finding]:
    allowed = UNIT_SUFFIXES[info.unit]
    if threshold.unit not in allowed:
        yield Finding(loc, f"{info.name} is {UNIT_WORDS[info.unit]}; '{threshold}' has the wrong unit (write "
                      f"something like {UNIT_EXAMPLE[info.unit]})", "metric-unit")
        return
    value = threshold.value(info.unit)
    if info.unit == "percent" and not 0 <= value <= 100:
        yield Finding(loc, f"{info.name} is a percentage; {threshold} is outside 0-100", "metric-range")
    elif value < 0:
        yield Finding(loc, f"{info.name} cannot be negative; got {threshold}", "metric-range")


def _condition(cond: Condition, loc: Loc, service: ServiceFile | None) -> Iterator[Finding]:
    registry = metric_registry(service)
    info = registry.get(cond.metric)
    if info is None:
        if service is not None:
            yield Finding(loc, f"condition '{cond}': {_unknown_metric(cond.metric, registry)}", "metric-unknown")
        return
    if cond.unit not in UNIT_SUFFIXES[info.unit]:
        yield Finding(loc, f"condition '{cond}': {info.name} is {UNIT_WORDS[info.unit]}, so '{cond.unit}' is the "
                      f"wrong unit (write something like '{info.name} {cond.op} {UNIT_EXAMPLE[info.unit]}')",
                      "condition-unit")
        return
    if info.unit == "percent" and not 0 <= cond.threshold(info.unit) <= 100:
        yield Finding(loc, f"condition '{cond}': a percentage must lie between 0% and 100%", "condition-range")


def _unknown_metric(name: str, registry: dict[str, MetricInfo]) -> str:
    return (f"unknown metric '{name}'{did_you_mean(name, registry)}; known metrics: {', '.join(sorted(registry))} "
            "(declare your own under metrics.custom in service.yaml)")


def _resources(env: EnvironmentFile) -> Iterator[Finding]:
    res = env.resources
    if res is None:
        return
    for kind in ("limits", "requests"):
        rl = getattr(res, kind)
        if rl is None or rl.memory is None:
            continue
        text = rl.memory.text
        if text.endswith("m"):
            yield Finding(("resources", kind, "memory"),
                          f"memory '{text}' means {rl.memory.value} bytes (m is milli); did you mean '{text[:-1]}Mi'?",
                          "memory-millibytes")
        elif rl.memory.value < Decimal(4 * 1024 * 1024):
            yield Finding(("resources", kind, "memory"), f"memory '{text}' is under 4Mi; no service starts with "
                          "that (did you forget a suffix such as Mi or Gi?)", "memory-too-small")
    if res.limits is not None and res.requests is not None:
        for name in ("cpu", "memory"):
            limit, request = getattr(res.limits, name), getattr(res.requests, name)
            if limit is not None and request is not None and request.value > limit.value:
                yield Finding(("resources", "requests", name),
                              f"request {request} is above the limit {limit}; expected at most {limit}",
                              "resources-request-above-limit")


def _health_check(env: EnvironmentFile) -> Iterator[Finding]:
    hc = env.health_check
    if hc.initial_delay >= env.progress_deadline:
        yield Finding(("healthCheck", "initialDelay"),
                      f"initialDelay {format_duration(hc.initial_delay)} is not shorter than progressDeadline "
                      f"{format_duration(env.progress_deadline)}: no probe could pass before the deadline",
                      "health-delay-deadline")
    if hc.timeout.total_seconds() <= 0:
        yield Finding(("healthCheck", "timeout"), "timeout must be longer than 0s", "health-timeout")


# ------------------------------------------------------------------------------------- multi-region file


def check_multi_region(mr: MultiRegionFile, partial: bool = False) -> Iterator[Finding]:
    yield from safely(lambda: region_findings(list(enumerate(mr.regions)), len(mr.regions)), partial=partial)


def region_findings(regions: list[tuple[int, Region]], count: int) -> Iterator[Finding]:
    """Rules of ``regions`` over the valid entries and their indexes; sums need every entry valid."""
    seen: dict[str, int] = {}
    for i, region in regions:
        if region.name in seen:
            yield Finding(("regions", i, "name"), f"region '{region.name}' is listed twice (first as "
                          f"regions[{seen[region.name]}]); region names must be unique", "region-duplicate")
        else:
            seen[region.name] = i
    complete = len(regions) == count
    if complete:
        total = sum(r.weight for _, r in regions)
        if abs(total - 100) > 1e-6:
            parts = " + ".join(f"{r.name} {r.weight:g}%" for _, r in regions)
            yield Finding(("regions",), f"region weights add up to {total:g}% ({parts}); they must add up to 100%",
                          "region-weights-sum", prefer_key=True)
    primaries = [(i, r) for i, r in regions if r.role == "primary"]
    if not primaries and complete:
        yield Finding(("regions",), "no region has role 'primary'; exactly one region must be primary (it goes "
                      "last and carries the most traffic)", "region-primary-count", prefer_key=True)
    for i, region in primaries[1:]:
        yield Finding(("regions", i, "role"), f"'{region.name}' is a second primary region (the first is "
                      f"'{primaries[0][1].name}'); exactly one region must be primary", "region-primary-count")
    rank = {"canary": 0, "secondary": 1, "primary": 2}
    for (_, prev), (i, region) in zip(regions, regions[1:]):
        if rank[region.role] < rank[prev.role]:
            yield Finding(("regions", i, "role"),
                          f"regions roll out in the listed order, so the {region.role} region '{region.name}' "
                          f"cannot come after the {prev.role} region '{prev.name}' (canary regions first, primary "
                          "last)", "region-order")


# ----------------------------------------------------------------------------------------- service file


ServiceCheck = Callable[[ServiceFile, "Path | None"], Iterator[Finding]]
_SERVICE_CHECKS: list[ServiceCheck] = []


def _service_check(fn: ServiceCheck) -> ServiceCheck:
    _SERVICE_CHECKS.append(fn)
    return fn


def check_service(svc: ServiceFile, root: Path | None, partial: bool = False) -> Iterator[Finding]:
    """Rules of ``service.yaml`` (valid, or ``partial``: see :func:`safely`)."""
    for rule in _SERVICE_CHECKS:
        yield from safely(rule, svc, root, partial=partial)


@_service_check
def _local_command(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    platform = svc.platform
    if platform.type == "local" and not any("{port}" in p for p in platform.command):
        yield Finding(("platform", "command"), "the local platform starts each replica on its own port, so the "
                      "command must contain the {port} placeholder (for example '--port', '{port}')",
                      "local-command-port")


@_service_check
def _metric_provider(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    platform = svc.platform
    provider = svc.metrics.provider or {"local": "local", "kubernetes": "prometheus", "ecs": "cloudwatch"}[
        platform.type]
    if provider == "local" and platform.type != "local":
        yield Finding(("metrics", "provider"), f"the local metric provider reads the local platform's router; "
                      f"with platform '{platform.type}' use prometheus or cloudwatch", "metric-provider-platform")
    if provider == "prometheus" and svc.metrics.connection is None:
        yield Finding(("metrics",), "no metrics.connection given: the Prometheus provider will use the "
                      "connection 'prometheus_default'", "metric-connection-default", "warning", prefer_key=True)


@_service_check
def _metric_names(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    for name in svc.metrics.queries:
        if name not in BUILTIN_METRICS:
            yield Finding(("metrics", "queries", name), f"'{name}' is not a built-in metric"
                          f"{did_you_mean(name, BUILTIN_METRICS)}; declare new metrics under metrics.custom",
                          "metric-unknown", prefer_key=True)
    seen: dict[str, int] = {}
    for i, custom in enumerate(svc.metrics.custom):
        if custom.name in BUILTIN_METRICS:
            yield Finding(("metrics", "custom", i, "name"), f"'{custom.name}' is a built-in metric; to change "
                          "its query use metrics.queries", "metric-duplicate")
        elif custom.name in seen:
            yield Finding(("metrics", "custom", i, "name"), f"metric '{custom.name}' is declared twice (first as "
                          f"metrics.custom[{seen[custom.name]}])", "metric-duplicate")
        seen.setdefault(custom.name, i)


@_service_check
def _approvals(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    for env_name in ("staging", "production"):
        yield from safely(_approval_policy, getattr(svc.approvals, env_name), ("approvals", env_name), env_name,
                          partial=True)
    for severity in ("critical", "major"):
        yield from safely(_approval_policy, getattr(svc.approvals.hotfix, severity),
                          ("approvals", "hotfix", severity), f"{severity} hotfix", partial=True)


@_service_check
def _kubernetes_secrets(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    if svc.platform.type != "kubernetes":
        return
    for i, secret in enumerate(svc.platform.secrets):
        for key, value in secret.data.items():
            # getattr: in a partly valid file an invalid source field is absent (already reported).
            if (getattr(value, "connection", None) is None) == (getattr(value, "variable", None) is None):
                yield Finding(("platform", "secrets", i, "data", key), f"secret value '{key}' needs exactly one of "
                              "'connection' or 'variable'", "secret-source")


@_service_check
def _freezes(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    if svc.maintenance_window is None:
        return
    for i, freeze in enumerate(svc.maintenance_window.freezes):
        loc = ("maintenanceWindow", "freezes", i)
        dated = freeze.start is not None or freeze.end is not None
        recurring = freeze.schedule is not None or freeze.duration is not None
        if dated == recurring or (dated and (freeze.start is None or freeze.end is None)) or (
                recurring and (freeze.schedule is None or freeze.duration is None)):
            yield Finding(loc, f"freeze '{freeze.name}' needs either 'start' and 'end' (dates) or 'schedule' "
                          "and 'duration' (recurring)", "freeze-shape")
        elif dated and freeze.end < freeze.start:  # type: ignore[operator]
            yield Finding((*loc, "end"), f"freeze '{freeze.name}' ends before it starts", "freeze-order")


@_service_check
def _suites(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    for section in ("tests", "validation"):
        for name, suite in getattr(svc, section).items():
            yield from _suite(suite, (section, name))


@_service_check
def _steps(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    from airflow_deploy_provider.steps.defaults import default_runner

    for name, step in svc.steps.items():
        given = [key for key, value in (("command", step.command), ("image", step.image), ("http", step.http))
                 if value is not None]
        if len(given) > 1:
            yield Finding(("steps", name), f"step '{name}' has {' and '.join(repr(g) for g in given)}; give one: "
                          "'command' (run on the worker), 'image' (run as a Kubernetes pod) or 'http' (requests)",
                          "step-runner")
        elif not given and default_runner(name, svc.platform.type) is None:
            yield Finding(("steps", name), f"step '{name}' has no default on the {svc.platform.type} platform; "
                          "give it a 'command', an 'image' (pod) or 'http' requests", "step-runner")
        if step.dns is not None and (name != "update-dns" or given):
            yield Finding(("steps", name, "dns"), f"step '{name}': 'dns' is the record of the built-in update-dns "
                          "step; " + ("remove it" if name != "update-dns" else
                                      f"remove it or the {given[0]!r} that replaces the built-in step"), "step-dns")
        elif name == "update-dns" and not given and step.dns is None:
            # The built-in step needs to know which record to upsert: no platform has DNS of its own here.
            yield Finding(("steps", name), "step 'update-dns' needs a 'dns' setting for its built-in Route53 "
                          "update (dns: {hostedZoneId: ..., connection: ...}), or a 'command', an 'image' (pod) or "
                          "'http' requests", "step-dns")
        if name == "terraform" and not given and root is not None:
            folder = root / (step.working_dir or "infra")
            if not folder.is_dir() or not (any(folder.glob("*.tf")) or any(folder.glob("*.tf.json"))):
                yield Finding(("steps", name), f"step 'terraform' plans the Terraform configuration in "
                              f"'{step.working_dir or 'infra'}' of the service folder, which has no *.tf files; "
                              "set 'workingDir' to the configuration's folder", "step-terraform-config")
        for var, ref in step.secrets.items():
            if (ref.connection is None) == (ref.variable is None):
                yield Finding(("steps", name, "secrets", var), f"secret {var} needs exactly one of 'connection' "
                              "(with 'field') or 'variable'", "step-secret")
        if step.args and step.image is None:
            yield Finding(("steps", name, "args"), f"step '{name}': 'args' are for pods ('image'); a command "
                          "takes its arguments in 'command'", "step-runner")


@_service_check
def _rollback_conditions(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    for i, cond in enumerate(svc.rollback.conditions):
        yield from _condition(cond, ("rollback", "conditions", i), svc)


@_service_check
def _maintenance_service(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    platform = svc.platform
    if platform.type == "kubernetes" and platform.router.maintenance_service and \
            platform.router.type != "gateway-api":
        yield Finding(("platform", "router", "maintenanceService"), "maintenanceService works with the gateway-api "
                      f"router only; with router '{platform.router.type}' the incident workflow does not offer "
                      "maintenance mode", "maintenance-service-router", "warning")


@_service_check
def _incident(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    steps = svc.incident.restore_steps
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            yield Finding(("incident", "restoreSteps", i), f"restoration steps must strictly increase: step {i} "
                          f"restores {steps[i]}% after {steps[i - 1]}% in step {i - 1}; expected more than "
                          f"{steps[i - 1]}", "restore-steps-order")
    if steps and steps[-1] != 100:
        yield Finding(("incident", "restoreSteps", len(steps) - 1), "the last restoration step must give the "
                      f"region all of its traffic back; got {steps[-1]} (add 100 as the last step)",
                      "restore-steps-end")


@_service_check
def _migrations(svc: ServiceFile, root: Path | None) -> Iterator[Finding]:
    if svc.migrations is None or root is None:
        return
    folder = root / svc.migrations.path
    if not folder.is_dir():
        yield Finding(("migrations", "path"), f"migrations folder '{svc.migrations.path}' does not exist in the "
                      f"service folder ({root.name})", "migrations-path")
        return
    # The files themselves are checked again when they run; a warning here (not an error) keeps the service's
    # DAGs, its rollback among them, while someone fixes a file name.
    from airflow_deploy_provider.migrations import MigrationError, load_migrations

    try:
        load_migrations(folder, require_down=True)  # one read of the folder when all is well
        return
    except MigrationError as exc:
        missing_down = exc
    try:
        load_migrations(folder, require_down=False)
    except MigrationError as exc:
        yield Finding(("migrations", "path"), f"{exc}; every migration task will fail", "migration-files",
                      severity="warning")
        return
    yield Finding(("migrations", "path"), f"{missing_down}; production refuses to run them",
                  "migration-down-missing", severity="warning")


def _approval_policy(policy: ApprovalPolicy, loc: Loc, what: str) -> Iterator[Finding]:
    if not policy.enabled:
        if what in ("staging", "production") or what.endswith("hotfix"):
            yield Finding((*loc, "enabled"), f"approvals are disabled for {what}: changes reach it without review",
                          "approval-disabled", "warning")
        return
    if not policy.groups:
        yield Finding((*loc, "groups"), f"approval for {what} lists no groups; add at least one or set enabled: false",
                      "approval-groups-empty")
    first: dict[str, int] = {}
    for i, group in enumerate(policy.groups):
        if group.name in first:
            yield Finding((*loc, "groups", i, "name"), f"approval group '{group.name}' is listed twice (first as "
                          f"groups[{first[group.name]}]); merge them", "approval-group-duplicate")
        first.setdefault(group.name, i)
        if group.members and group.required > len(set(group.members)):
            yield Finding((*loc, "groups", i, "required"),
                          f"group '{group.name}' needs {group.required} approvals but has only "
                          f"{len(set(group.members))} member(s)", "approval-required-members")


def _suite(suite: TestSuite, loc: Loc) -> Iterator[Finding]:
    if (suite.command is None) == (suite.http is None):
        yield Finding(loc, f"'{loc[-1]}' needs exactly one of 'command' or 'http'", "suite-kind", prefer_key=True)
    if suite.criteria is not None and suite.report is None:
        yield Finding((*loc, "criteria"), "'criteria' judge the suite's report: add a 'report' (junit or locust) "
                      "that the command writes", "suite-criteria", prefer_key=True)
    if suite.report is not None and suite.command is None:
        yield Finding((*loc, "report"), "a 'report' is written by a 'command'; HTTP checks have none",
                      "suite-criteria", prefer_key=True)
    if suite.traffic_share is not None and suite.command is None:
        yield Finding((*loc, "trafficShare"), "'trafficShare' sets {users} and {rps} of a load-test 'command'",
                      "suite-criteria", prefer_key=True)


# --------------------------------------------------------------------------------------------- cross-file


def check_multi_region_against(mr: MultiRegionFile, environments: dict[str, EnvironmentFile]) -> Iterator[Finding]:
    if "production" not in environments:
        yield Finding(("regions",), "a multi-region rollout deploys production, but no environment file has "
                      "'environment: production'", "multi-region-no-production", prefer_key=True)


# ------------------------------------------------------------------------------- partly valid sections


def element_findings(kind: str, data: dict, service: ServiceFile | None) -> Iterator[Finding]:
    """List rules for a section that failed validation as a whole: its valid elements are checked alone."""
    if kind == "environment":
        canary = data.get("canary")
        if isinstance(canary, dict):
            steps = canary.get("steps")
            analysis = canary.get("analysis") if isinstance(canary.get("analysis"), dict) else {}
            interval = _lenient(Analysis.model_fields["interval"], analysis.get("interval")) or timedelta(minutes=1)
            if isinstance(steps, list):
                valid = dict(_valid_elements(CanaryStep, steps))
                unknown_pause = set()
                for i, raw in enumerate(steps):
                    # A step with a bad pause still has a weight the order rules can use.
                    if i not in valid and isinstance(raw, dict):
                        try:
                            valid[i] = CanaryStep.model_validate({"weight": raw.get("weight")})
                            unknown_pause.add(i)
                        except Exception:
                            continue
                yield from canary_step_findings(sorted(valid.items()), len(steps), interval, frozenset(unknown_pause))
            if isinstance(analysis.get("metrics"), list):
                yield from metric_check_findings(_valid_elements(MetricCheck, analysis["metrics"]), service)
        auto = data.get("autoRollback")
        if isinstance(auto, dict) and isinstance(auto.get("conditions"), list):
            for i, raw in enumerate(auto["conditions"]):
                cond = _lenient_condition(raw)
                if cond is not None:
                    yield from _condition(cond, ("autoRollback", "conditions", i), service)
    elif kind == "multi-region" and isinstance(data.get("regions"), list):
        yield from region_findings(_valid_elements(Region, data["regions"]), len(data["regions"]))


def _valid_elements(model: type, items: list) -> list[tuple[int, object]]:
    from pydantic import ValidationError

    out = []
    for i, raw in enumerate(items):
        try:
            out.append((i, model.model_validate(raw)))
        except ValidationError:
            continue
    return out


def _lenient(field_info, value):
    from pydantic import TypeAdapter, ValidationError

    if value is None:
        return None
    try:
        import typing

        return TypeAdapter(typing.Annotated[(field_info.annotation, *field_info.metadata)]).validate_python(value)
    except (ValidationError, TypeError):
        return None


def _lenient_condition(raw) -> Condition | None:
    from airflow_deploy_provider.config.types import parse_condition

    try:
        return parse_condition(raw)
    except Exception:
        return None
