"""Schema of the ``.deploy`` files (pydantic v2).

Three kinds of file live in a service's ``.deploy/`` folder:

* ``service.yaml``: the service itself (name, image, platform, metrics, notifications, approvals, ...);
* environment files such as ``production-config.yaml``: one per environment, keyed by ``environment:``;
* an optional multi-region file (``multi-region-config.yaml``), keyed by ``regions:``.

Keys are camelCase in YAML (``initialDelay``) and snake_case in Python (``initial_delay``). Structural
and type rules live here; rules that relate several fields or files live in :mod:`.checks`.
"""

from __future__ import annotations

import contextlib
import shlex
import string
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from airflow_deploy_provider.config.errors import did_you_mean
from airflow_deploy_provider.config.types import (
    ConditionValue,
    Duration,
    Percentage,
    QuantityValue,
    ThresholdValue,
    _show,
    parse_condition,
)

ENVIRONMENTS = ("development", "staging", "production")
STRATEGIES = ("recreate", "rolling", "bluegreen", "canary")
PLATFORMS = ("local", "kubernetes", "ecs")
METRIC_PROVIDERS = ("local", "prometheus", "cloudwatch")
ROUTERS = ("gateway-api", "istio", "nginx", "replicas")
NOTIFY_EVENTS = ("start", "success", "failure", "rollback", "approval", "checklist", "incident")


class DeployModel(BaseModel):
    """Base of every ``.deploy`` section: camelCase keys, unknown keys refused, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        frozen=True,
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
    )


# ------------------------------------------------------------------------------------- small value types


def _named(pattern: str, what: str, example: str):
    import re

    rx = re.compile(pattern)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not rx.fullmatch(value):
            raise PydanticCustomError(
                "name_pattern", "expected {what} such as {example}; got {got}",
                {"what": what, "example": example, "got": _show(value)},
            )
        return value

    return Annotated[str, BeforeValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})]


ServiceName = _named(r"^[a-z][a-z0-9-]{0,48}[a-z0-9]$",
                     "a lowercase name of 2-50 letters, digits and dashes (a DNS label)", "'checkout-api'")
SuiteName = _named(r"^[a-z][a-z0-9_-]{0,62}$", "a lowercase name of letters, digits, '-' and '_'", "'integration'")
RegionName = _named(r"^[a-z0-9][a-z0-9-]{0,40}[a-z0-9]$", "a lowercase region name", "'us-west-2'")
MetricName = _named(r"^[a-z][a-z0-9_]{0,62}$", "a metric name of lowercase letters, digits and '_'", "'error_rate'")
GroupName = _named(r"^[A-Za-z][A-Za-z0-9 _.-]{0,62}$", "a group name", "'tech-lead'")
ConnId = _named(r"^[A-Za-z0-9_.-]{1,250}$", "an Airflow connection id", "'slack_deployments'")
TableName = _named(r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$",
                   "a lower-case table name, optionally schema.table", "'deploy_schema_history'")
MigrationConnId = _named(r"^([A-Za-z0-9_.-]|\{environment\}){1,250}$",
                         "an Airflow connection id, {environment} replaced", "'checkout_db_{environment}'")
ImageRepository = _named(
    r"^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$",
    "an image repository without tag (registry/path/name)", "'registry.example.com/shop/checkout'",
)


def _positive_int(minimum: int = 1, maximum: int | None = None):
    return Field(ge=minimum, le=maximum) if maximum is not None else Field(ge=minimum)


COMMAND_PLACEHOLDERS = ("port", "version", "service", "environment", "region", "image", "url", "commit",
                        "short_sha", "replica", "run_id", "reports", "previous_version", "previous_commit",
                        "source_image", "rps", "users")


def _command(value: Any) -> list[str]:
    """A command as a list of arguments, or a string split like a shell would (no shell is run)."""
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise PydanticCustomError("command_parsing", "cannot split command {got}: {err}",
                                      {"got": _show(value), "err": str(exc)}) from None
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        parts = [str(v) for v in value]
    else:
        raise PydanticCustomError("command_type", "expected a command as a list of strings or one string; got {got}",
                                  {"got": _show(value)})
    if not parts:
        raise PydanticCustomError("command_empty", "expected a non-empty command", {})
    for part in parts:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(part) if f is not None]
        except ValueError as exc:
            raise PydanticCustomError("command_placeholder", "bad placeholder in {got}: {err} (write {brace} for a "
                                      "literal brace)", {"got": _show(part), "err": str(exc), "brace": "{{"}) from None
        for name in fields:
            if name not in COMMAND_PLACEHOLDERS:
                hint = did_you_mean(name.replace("-", "_"), COMMAND_PLACEHOLDERS)
                raise PydanticCustomError(
                    "command_placeholder", "unknown placeholder {placeholder} in {got}{hint}; known: {known}",
                    {"placeholder": "{" + name + "}", "got": _show(part), "hint": hint.replace("'", "'{", 1)
                     .replace("'?)", "}'?)") if hint else "",
                     "known": ", ".join("{" + p + "}" for p in COMMAND_PLACEHOLDERS)},
                )
    return parts


Command = Annotated[
    list[str],
    BeforeValidator(_command),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}),
]


def _weight(value: Any) -> int:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1].strip()
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise PydanticCustomError("weight_type", "expected a whole percentage of traffic from 1 to 100; got {got}",
                                  {"got": _show(value)})
    if not 1 <= int(value) <= 100:
        raise PydanticCustomError("weight_range", "expected a traffic weight from 1 to 100; got {got}",
                                  {"got": _show(value)})
    return int(value)


Weight = Annotated[int, BeforeValidator(_weight),
                   WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1, "maximum": 100},
                                             {"type": "string", "pattern": r"^\d+%$"}]})]


def _int_or_percent(value: Any) -> str:
    if isinstance(value, bool):
        raise PydanticCustomError("int_or_percent", "expected a count such as 1 or a percentage such as 25%; got {got}",
                                  {"got": _show(value)})
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%") and text[:-1].isdigit() and int(text[:-1]) <= 100:
            return text
        if text.isdigit():
            return text
    raise PydanticCustomError("int_or_percent", "expected a count such as 1 or a percentage such as 25%; got {got}",
                              {"got": _show(value)})


IntOrPercent = Annotated[str, BeforeValidator(_int_or_percent),
                         WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                                                   {"type": "string", "pattern": r"^\d+%?$"}]})]


def _cron(value: Any) -> str:
    from croniter import croniter

    if not isinstance(value, str) or not croniter.is_valid(value):
        raise PydanticCustomError(
            "cron", "expected a cron expression with 5 fields such as '0 22 * * 2,4' (22:00 on Tuesdays and "
            "Thursdays); got {got}", {"got": _show(value)},
        )
    return value


Cron = Annotated[str, BeforeValidator(_cron), WithJsonSchema({"type": "string", "examples": ["0 22 * * 2,4"]})]


def _timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    if isinstance(value, str):
        try:
            ZoneInfo(value)
            return value
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise PydanticCustomError("timezone", "expected an IANA time zone such as 'Europe/Berlin' or 'UTC'; got {got}{hint}",
                              {"got": _show(value),
                               "hint": did_you_mean(str(value), available_timezones()) if isinstance(value, str)
                               else ""})


TimeZone = Annotated[str, BeforeValidator(_timezone), WithJsonSchema({"type": "string", "examples": ["UTC"]})]


def _url_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise PydanticCustomError("url_path", "expected a URL path starting with '/' such as '/health'; got {got}",
                                  {"got": _show(value)})
    return value


UrlPath = Annotated[str, BeforeValidator(_url_path), WithJsonSchema({"type": "string", "pattern": "^/"})]

# ------------------------------------------------------------------------------------ environment files


class ResourceList(DeployModel):
    """CPU and memory for one replica."""

    cpu: QuantityValue | None = None
    """CPU in cores or millicores: ``500m`` is half a core, ``2`` is two cores."""
    memory: QuantityValue | None = None
    """Memory in bytes with a suffix: ``512Mi``, ``1Gi`` (binary) or ``1G`` (decimal)."""


class Resources(DeployModel):
    """Resource limits and requests per replica (Kubernetes semantics)."""

    limits: ResourceList | None = None
    """Most a replica may use."""
    requests: ResourceList | None = None
    """What a replica is guaranteed; used for scheduling and the capacity check."""


class HealthCheck(DeployModel):
    """How a new replica is judged ready and healthy."""

    path: UrlPath = "/health"
    """HTTP path probed on each replica; must answer 200 with a JSON body."""
    initial_delay: Duration = timedelta(seconds=10)
    """Wait after a replica starts before the first probe."""
    timeout: Duration = timedelta(seconds=5)
    """Timeout of one probe."""
    interval: Duration = timedelta(seconds=5)
    """Time between probes."""
    failure_threshold: int = Field(3, ge=1, le=100)
    """Consecutive failed probes after which a replica counts as unhealthy."""


class CanaryStep(DeployModel):
    """One step of a progressive rollout: shift traffic, then watch for ``pause``."""

    weight: Weight
    """Share of live traffic sent to the new version, 1-100."""
    pause: Duration | None = None
    """How long the metric gate watches this step before the next one. The last step (100) has none."""


class MetricCheck(DeployModel):
    """A metric the gate measures every interval, with its healthy bound(s)."""

    name: MetricName
    """A built-in metric (``error_rate``, ``availability``, ``latency_p50/p90/p95/p99``, ``request_rate``) or
    one declared under ``metrics.custom`` in ``service.yaml``."""
    max: ThresholdValue | None = None
    """Highest healthy value, in the metric's unit (``error_rate``: percent; ``latency_*``: milliseconds)."""
    min: ThresholdValue | None = None
    """Lowest healthy value, in the metric's unit (``availability``: percent)."""
    max_ratio: float | None = Field(None, gt=0)
    """Relative bound: the canary's value at most this many times the stable version's over the same window
    (``1.5``: error rate at most 1.5x stable's). Skipped while stable's value is zero."""


class Analysis(DeployModel):
    """The metric gate of a canary."""

    interval: Duration = timedelta(minutes=1)
    """How often every metric is measured during a step's pause."""
    threshold: int = Field(5, ge=0, le=1000)
    """Failed checks tolerated over the whole rollout; one more rolls back."""
    min_requests: int = Field(20, ge=0)
    """Requests the new version must have served in an interval for a check to count. Fewer makes the check
    inconclusive, which counts as failed: thin traffic can never promote."""
    metrics: list[MetricCheck] = Field(min_length=1)
    """Metrics measured at every check."""


class Canary(DeployModel):
    """Progressive canary rollout (``strategy: canary``)."""

    steps: list[CanaryStep] = Field(min_length=1)
    """Traffic steps; weights strictly increase and the last one is 100."""
    analysis: Analysis
    """The metric gate that runs during every step's pause."""


class TrafficSwitch(DeployModel):
    """Blue-green switch settings (``strategy: bluegreen``)."""

    test_duration: Duration = timedelta(minutes=5)
    """How long the switched traffic is watched before blue is retired."""
    rollback_on_error: bool = True
    """Switch traffic back to blue when the watch finds errors."""
    pre_switch_tests: list[SuiteName] | None = None
    """Suites run against green before the switch. Default: ``integration`` (when defined) and ``smoke``."""


class AutoRollback(DeployModel):
    """Immediate rollback on hard limits, checked at every analysis interval and while monitoring."""

    enabled: bool = True
    """Roll back automatically. When false, a failed gate stops the rollout where it is and a person decides."""
    conditions: list[ConditionValue] = Field(default_factory=list)
    """Conditions such as ``error_rate > 1%``, ``latency_p99 > 1000ms``, ``availability < 99.9%``."""


class Rolling(DeployModel):
    """Rolling update settings (``strategy: rolling``)."""

    max_surge: IntOrPercent = "25%"
    """Extra replicas allowed during the update (count or percent of ``replicas``)."""
    max_unavailable: IntOrPercent = "0"
    """Replicas that may be unavailable during the update (count or percent)."""


class Monitoring(DeployModel):
    """Watching the new version after the rollout."""

    duration: Duration | None = None
    """How long metrics are watched after full rollout, with automatic rollback. Default: 30m in production,
    none elsewhere."""


class EnvironmentFile(DeployModel):
    """An environment file such as ``.deploy/production-config.yaml``."""

    environment: Literal["development", "staging", "production"]
    """Which environment this file configures."""
    strategy: Literal["recreate", "rolling", "bluegreen", "canary"]
    """How a new version replaces the old one."""
    replicas: int = Field(1, ge=1, le=1000)
    """Replicas (processes, pods or tasks) of the service."""
    resources: Resources | None = None
    """Per-replica resource limits and requests."""
    auto_deploy: bool = False
    """Deploy automatically on a push to ``branch`` (git webhook)."""
    branch: str | None = None
    """Git branch whose pushes auto-deploy here. Default: ``develop`` for development, none otherwise."""
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    """Readiness and health probe of each replica."""
    progress_deadline: Duration = timedelta(minutes=10)
    """How long a new version may take to become ready before the deployment fails."""
    traffic_switch: TrafficSwitch | None = None
    """Blue-green settings; only with ``strategy: bluegreen``."""
    post_deployment_tests: list[SuiteName] = Field(default_factory=list)
    """Test suites (from ``tests`` in ``service.yaml``) run after the deployment, in order."""
    canary: Canary | None = None
    """Canary steps and analysis; required with ``strategy: canary``."""
    rolling: Rolling | None = None
    """Rolling update settings; only with ``strategy: rolling``."""
    auto_rollback: AutoRollback | None = None
    """Hard limits that roll back at once."""
    monitoring: Monitoring | None = None
    """Post-rollout watch."""
    platform: dict[str, Any] | None = None
    """Platform settings of this environment over those of ``service.yaml`` (each key given replaces the
    service's; ``type`` stays): for example its own ECS cluster and listener rule, Kubernetes namespace or local
    router port."""

    @property
    def effective_branch(self) -> str | None:
        return self.branch or ("develop" if self.environment == "development" else None)

    @property
    def monitoring_duration(self) -> timedelta:
        if self.monitoring is not None and self.monitoring.duration is not None:
            return self.monitoring.duration
        return timedelta(minutes=30) if self.environment == "production" else timedelta(0)

    @property
    def effective_traffic_switch(self) -> TrafficSwitch:
        return self.traffic_switch or TrafficSwitch()


# ------------------------------------------------------------------------------------- multi-region file


class Region(DeployModel):
    """One region of a multi-region rollout, in rollout order."""

    name: RegionName
    """Region name, such as ``us-west-2``; part of the regional DAG id."""
    role: Literal["canary", "secondary", "primary"]
    """``canary`` goes first, ``primary`` (most traffic) last."""
    weight: Percentage
    """Share of global traffic (GeoDNS weight) once the region runs the new version."""
    wait_time: Duration = timedelta(0)
    """How long the region is watched before the next region starts."""
    connection: ConnId | None = None
    """Connection for this region (an AWS connection or a Kubernetes cluster). Default: the platform's."""
    platform: dict[str, Any] | None = None
    """Platform settings of this region over those of production (each key given replaces it; ``type``
    stays): for example the region's ALB listener rule on ECS, or its own local router port."""


class FailurePolicy(DeployModel):
    """What happens when a region fails."""

    stop_on_region_failure: bool = True
    """Halt the global rollout; later regions are left untouched."""
    rollback_failed_region: bool = True
    """Roll the failed region back and move its DNS weight to healthy regions."""


class GlobalDns(DeployModel):
    """Weighted DNS records that split global traffic between regions."""

    provider: Literal["route53"] = "route53"
    """DNS provider."""
    connection: ConnId = "aws_default"
    """AWS connection used for Route53."""
    hosted_zone_id: str
    """Route53 hosted zone id."""
    record_name: str
    """The record name. The weighted records (one per region, ``SetIdentifier`` = region name, each pointing at
    its region) are created by you; the rollout only changes their weights."""


class MultiRegionFile(DeployModel):
    """The multi-region file, such as ``.deploy/multi-region-config.yaml``."""

    environment: Literal["production"] = "production"
    """Multi-region rollouts apply to production."""
    regions: list[Region] = Field(min_length=1)
    """Regions in rollout order: canary first, primary last."""
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    """Failure handling."""
    dns: GlobalDns | None = None
    """GeoDNS weights; without it, regions are rolled out without shifting global traffic."""


# ----------------------------------------------------------------------------------------- service file


class GatewayRouter(DeployModel):
    """How traffic is split between the stable and the canary pods on Kubernetes."""

    type: Literal["gateway-api", "istio", "nginx", "replicas"] = "replicas"
    """``gateway-api`` (HTTPRoute backend weights), ``istio`` (VirtualService route weights), ``nginx`` (ingress
    canary annotations) or ``replicas`` (replica ratio behind one Service, no mesh needed)."""
    name: str | None = None
    """Name of the HTTPRoute, VirtualService or (stable) Ingress. Default: the service name."""
    stable_service: str | None = None
    """Service selecting the stable pods, a backend of the router. Default: ``<service>-stable``."""
    canary_service: str | None = None
    """Service selecting the canary pods, a backend of the router. Default: ``<service>-canary``."""
    maintenance_service: str | None = None
    """Service serving the maintenance page (``gateway-api`` only; on the stable Service's port): in maintenance
    mode (an incident's mitigation) every rule of the HTTPRoute sends its requests there. Without it the
    incident workflow does not offer maintenance mode on Kubernetes."""


class SecretValue(DeployModel):
    """Where a secret value comes from: a field of an Airflow connection or an Airflow variable."""

    connection: ConnId | None = None
    """Connection id."""
    field: Literal["password", "login", "host", "schema", "port", "uri", "extra"] = "password"
    """Field of the connection."""
    variable: str | None = None
    """Variable key (instead of a connection)."""


class ConfigMapSpec(DeployModel):
    """A ConfigMap applied with each deployment."""

    name: str
    """ConfigMap name."""
    data: dict[str, str] = Field(default_factory=dict)
    """Its data."""


class SecretSpec(DeployModel):
    """A Secret applied with each deployment; values are read on the worker, never written to YAML or logs."""

    name: str
    """Secret name."""
    data: dict[str, SecretValue] = Field(default_factory=dict)
    """Keys and where each value comes from."""


class Endpoints(DeployModel):
    """Addresses the worker uses for health checks and tests. Default: cluster DNS of the Services."""

    live: str | None = None
    """URL of the service as users reach it."""
    stable: str | None = None
    """URL reaching only the stable pods."""
    canary: str | None = None
    """URL reaching only the canary (green) pods."""


class LocalPlatform(DeployModel):
    """The embedded local platform: each replica is a process on this machine behind a local router."""

    type: Literal["local"] = "local"
    """Platform type."""
    command: Command
    """Command that starts one replica; must contain ``{port}``. Placeholders: ``{port}``, ``{version}``,
    ``{service}``, ``{environment}``, ``{replica}``."""
    port: int | None = Field(None, ge=1, le=65535)
    """Port the router listens on. Default: a free port chosen at first deployment and kept. Each environment
    (and region) has its own router: with more than one, set it per environment file (``platform: {port: ...}``)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the replicas (no secrets: use connections)."""
    working_dir: str | None = None
    """Working directory of the replicas, relative to the service folder. Default: the service folder."""


class KubernetesPlatform(DeployModel):
    """Kubernetes through the cncf.kubernetes provider."""

    type: Literal["kubernetes"]
    """Platform type."""
    connection: ConnId = "kubernetes_default"
    """Kubernetes connection (one per cluster)."""
    namespace: str | None = None
    """Namespace. Default: the environment name."""
    deployment: str | None = None
    """Deployment name. Default: the service name."""
    container: str | None = None
    """Container whose image is updated. Default: the service name."""
    container_port: int = Field(8080, ge=1, le=65535)
    """Port of the container (for Deployments and Services the provider creates, and probes)."""
    service: str | None = None
    """Service in front of the pods: blue-green switches its selector; the ``replicas`` router shares it.
    Default: the service name."""
    router: GatewayRouter = Field(default_factory=GatewayRouter)
    """Traffic router for canaries."""
    autoscaler: str | None = None
    """HorizontalPodAutoscaler paused during rollouts. Default: the Deployment's name (none if absent)."""
    config_maps: list[ConfigMapSpec] = Field(default_factory=list)
    """ConfigMaps applied with the deployment."""
    secrets: list[SecretSpec] = Field(default_factory=list)
    """Secrets applied with the deployment (values from Airflow connections or variables)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on the objects the provider creates."""
    endpoints: Endpoints = Field(default_factory=Endpoints)
    """URLs for health checks and tests, when the worker does not run in the cluster."""


class EcsTargetGroups(DeployModel):
    """Target groups (ARNs) behind the listener rule."""

    stable: str
    """Target group of the stable ECS service."""
    canary: str
    """Target group of the canary (green) ECS service."""


class EcsPlatform(DeployModel):
    """AWS ECS through the amazon provider."""

    type: Literal["ecs"]
    """Platform type."""
    connection: ConnId = "aws_default"
    """AWS connection."""
    region: str | None = None
    """AWS region. Default: the connection's."""
    cluster: str
    """ECS cluster name."""
    service_name: str | None = None
    """ECS service name. Default: the service name."""
    listener_rule_arn: str | None = None
    """ALB listener rule whose weighted forward action splits traffic (canary and blue-green)."""
    target_groups: EcsTargetGroups | None = None
    """Target groups of the stable and the canary ECS service. Default: the listener rule's forward action,
    in order (stable first)."""
    container: str | None = None
    """Container whose image is updated. Default: the service name, or the task's only container."""
    endpoints: Endpoints = Field(default_factory=Endpoints)
    """URLs for health checks and tests (default for ``live``: the load balancer's DNS name)."""


def _platform_tag(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "local")
    return getattr(value, "type", "local")


Platform = Annotated[
    Annotated[LocalPlatform, Tag("local")] | Annotated[KubernetesPlatform, Tag("kubernetes")]
    | Annotated[EcsPlatform, Tag("ecs")],
    Discriminator(_platform_tag, custom_error_type="platform_type",
                  custom_error_message="expected platform type local, kubernetes or ecs"),
]


class CustomMetric(DeployModel):
    """A metric of your own, usable in gates and conditions."""

    name: MetricName
    """Name used in ``canary.analysis.metrics`` and conditions."""
    query: str
    """Query for the provider. Prometheus: PromQL with ``{service}``, ``{version}``, ``{namespace}``,
    ``{interval}``, ``{environment}``, ``{region}``. CloudWatch: a JSON metric statistic (``namespace``,
    ``metric``, ``dimensions``, ``stat``, ``scale``) or a metric math expression, with ``{service}``, ``{version}``,
    ``{environment}``, ``{region}``, ``{interval}`` (seconds), ``{target_group}``, ``{load_balancer}``."""
    unit: Literal["percent", "ms", "rps", "count", "ratio"] = "count"
    """Unit of the value."""
    healthy: Literal["low", "high"] = "low"
    """Which direction is healthy."""
    business: bool = False
    """A business metric, tracked in production monitoring."""


class Metrics(DeployModel):
    """Where gate metrics come from."""

    provider: Literal["local", "prometheus", "cloudwatch"] | None = None
    """Metric provider. Default: ``local`` on the local platform, ``prometheus`` on Kubernetes,
    ``cloudwatch`` on ECS."""
    connection: ConnId | None = None
    """Connection of the provider: an HTTP connection for Prometheus (default ``prometheus_default``), an AWS
    connection for CloudWatch (default: the ECS platform's connection)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Label names used by the default Prometheus queries, by role: ``service``, ``version``, ``code``
    (status code), ``namespace``. Default: the same names."""
    series: dict[Literal["requests", "duration"], str] = Field(default_factory=dict)
    """Series used by the default Prometheus queries: ``requests`` (counter, default
    ``http_requests_total``) and ``duration`` (histogram in seconds, default ``http_request_duration_seconds``)."""
    min_window: Duration = timedelta(minutes=1)
    """Shortest window a Prometheus or CloudWatch query covers (``rate()`` needs several samples); a gate
    interval shorter than this is measured over this window."""
    queries: dict[MetricName, str] = Field(default_factory=dict)
    """Replacement queries for built-in metrics, by metric name."""
    custom: list[CustomMetric] = Field(default_factory=list)
    """Additional metrics."""


class SlackNotifications(DeployModel):
    """Slack through the slack provider's incoming-webhook notifier."""

    connection: ConnId
    """Slack incoming-webhook connection (type ``slackwebhook``)."""
    channel: str | None = None
    """Channel the webhook posts to, shown in messages. Incoming webhooks post to the channel chosen when the
    webhook was created."""


class Notifications(DeployModel):
    """Deployment notifications."""

    slack: SlackNotifications | None = None
    """Slack settings."""
    events: list[Literal["start", "success", "failure", "rollback", "approval", "checklist", "incident"]] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS)
    )
    """Which events are announced."""


class ApprovalGroup(DeployModel):
    """A group whose members approve; ``required`` distinct members must approve."""

    name: GroupName
    """Group name, shown to approvers (``tech-lead``, ``product``)."""
    members: list[str] = Field(default_factory=list)
    """Airflow user names allowed to approve for this group. Empty: any user."""
    required: int = Field(1, ge=1, le=20)
    """Distinct approvals needed from this group."""


def _default_groups(*names: str) -> list[ApprovalGroup]:
    return [ApprovalGroup.model_validate({"name": n}) for n in names]


class ApprovalPolicy(DeployModel):
    """Who must approve before a deployment proceeds."""

    enabled: bool = True
    """Require approval. Disabling it for staging or production is reported as a warning."""
    groups: list[ApprovalGroup] = Field(default_factory=lambda: _default_groups("reviewers"))
    """Groups that must all approve."""
    timeout: Duration = timedelta(hours=24)
    """An unanswered request expires after this; the run then fails and nothing is deployed."""


class HotfixApprovals(DeployModel):
    """Hotfix approval by severity (spec: critical - 1 tech lead; major - 1 senior engineer)."""

    critical: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy.model_validate(
        {"groups": [{"name": "tech-lead"}], "timeout": "1h"}))
    """Policy for critical hotfixes."""
    major: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy.model_validate(
        {"groups": [{"name": "senior-engineer"}], "timeout": "4h"}))
    """Policy for major hotfixes."""


class Approvals(DeployModel):
    """Approval policy per environment."""

    staging: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    """Staging: one reviewer by default."""
    production: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy.model_validate(
        {"groups": [{"name": "tech-lead"}, {"name": "product"}]}))
    """Production: a tech lead and a product owner by default."""
    hotfix: HotfixApprovals = Field(default_factory=HotfixApprovals)
    """Hotfix policies by severity."""


def _date_or_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise PydanticCustomError("date", "expected a date such as 2026-12-20 or a date-time such as "
                              "2026-12-20T18:00; got {got}", {"got": _show(value)})


DateTimeValue = Annotated[datetime, BeforeValidator(_date_or_datetime),
                          WithJsonSchema({"type": "string", "examples": ["2026-12-20", "2026-12-20T18:00"]})]


class Freeze(DeployModel):
    """A period in which production deployments are refused (except hotfixes)."""

    name: str
    """Shown when a run is refused."""
    start: DateTimeValue | None = None
    """First day (or moment) of the freeze, in the window's time zone."""
    end: DateTimeValue | None = None
    """Last day of the freeze (a date includes the whole day)."""
    schedule: Cron | None = None
    """Recurring freeze start (cron), with ``duration``."""
    duration: Duration | None = None
    """Length of a recurring freeze."""


class MaintenanceWindow(DeployModel):
    """When production deployments may run."""

    schedule: Cron
    """Window start as a cron expression."""
    duration: Duration
    """Window length."""
    timezone: TimeZone = "UTC"
    """Time zone of ``schedule`` and freezes."""
    outside_window: Literal["wait", "refuse"] = "wait"
    """A manual run outside the window waits for the next window or is refused."""
    freezes: list[Freeze] = Field(default_factory=list)
    """Freeze periods."""


class StatementTimeouts(DeployModel):
    """``lock_timeout`` and ``statement_timeout`` of one kind of statement (``0s``: none)."""

    lock_timeout: Duration | None = None
    """How long a statement waits for a lock before it gives up (and is retried with backoff)."""
    statement_timeout: Duration | None = None
    """How long a statement may run."""


class Migrations(DeployModel):
    """Database migrations run with deployments (PostgreSQL)."""

    path: str = "migrations"
    """Folder of ``V<n>__<description>.sql`` and ``U<n>__<description>.sql`` files, relative to the service folder."""
    connection: MigrationConnId
    """Connection of the target database; ``{environment}`` is replaced (``checkout_db_{environment}``)."""
    backup: bool = True
    """Take and verify a ``pg_dump`` backup before production migrations."""
    backup_location: str | None = None
    """Folder of the backups (on the worker); default ``$AIRFLOW_HOME/deploy-backups``."""
    history_table: TableName = "deploy_schema_history"
    """History table in the target database (``table`` or ``schema.table``)."""
    lock_wait: Duration = timedelta(minutes=30)
    """How long a run waits (deferred, no worker slot) while another run migrates the same database; ``0s``:
    fail at once."""
    retries: int = Field(5, ge=0, le=50)
    """Retries of a statement (with exponential backoff) after a lock timeout or a deadlock."""
    timeouts: dict[Literal["ddl", "dml", "concurrent", "maintenance", "query"], StatementTimeouts] = Field(
        default_factory=dict)
    """Per kind of statement; defaults: ddl 5s/15m, dml 5s/10m, concurrent (CONCURRENTLY) 5m/none,
    maintenance (VACUUM, ...) 5s/none, query 5s/10m."""
    long_running_query: Duration = timedelta(minutes=1)
    """Pre-flight: a session holding locks on a target table for longer than this stops the run before it
    starts (so do idle-in-transaction sessions)."""
    max_replication_lag: Duration | None = timedelta(seconds=30)
    """Pre-flight and during the run: replication lag above this stops the run. ``null``: not checked."""
    cancel_blocking_after: Duration | None = timedelta(seconds=10)
    """A migration statement that blocks other sessions for longer than this is cancelled (and retried).
    ``null``: never cancelled."""
    contract_delay: Duration = timedelta(days=7)
    """Contract migrations (``-- phase: contract``) run, in ``migrate_<service>_contract``, only once the app
    versions from before the latest expand migration have been retired for this long (spec: one week)."""

    def engine_settings(self) -> dict[str, Any]:
        """The migration engine's settings (``MigrationSettings.from_dict``)."""
        timeouts = {kind: {k: v.total_seconds() for k, v in (("lock_timeout", t.lock_timeout),
                                                              ("statement_timeout", t.statement_timeout))
                           if v is not None} for kind, t in self.timeouts.items()}
        lag = self.max_replication_lag
        cancel = self.cancel_blocking_after
        return {"history_table": self.history_table, "max_retries": self.retries, "timeouts": timeouts,
                "long_running_seconds": self.long_running_query.total_seconds(),
                "max_replication_lag_seconds": lag.total_seconds() if lag is not None else None,
                "block_cancel_after_seconds": cancel.total_seconds() if cancel is not None else None}

    def connection_for(self, environment: str) -> str:
        return self.connection.replace("{environment}", environment)


class HttpCheck(DeployModel):
    """One HTTP request and what its answer must be."""

    path: UrlPath
    """Path on the version under test."""
    method: Literal["GET", "POST", "PUT", "DELETE", "HEAD"] = "GET"
    """HTTP method."""
    status: int = Field(200, ge=100, le=599)
    """Expected status code."""
    contains: str | None = None
    """Text the body must contain."""
    body: str | None = None
    """Request body."""


class StepReport(DeployModel):
    """A report the step writes, parsed into findings that go to the ledger."""

    format: Literal["trivy", "pip-audit", "detect-secrets", "cyclonedx", "junit", "terraform-plan", "locust"]
    """Report format."""
    path: str | None = None
    """File the step writes, relative to the working directory; ``{reports}`` is the run's report folder.
    Default: the command's standard output. In pod mode the report is what the pod writes to
    ``/airflow/xcom/return.json``."""


class PassCriteria(DeployModel):
    """What a suite's report must show to pass (load tests, performance benchmarks, test runs)."""

    max_failure_rate: Percentage | None = None
    """Most failed requests (Locust) or failed tests (JUnit), as a share of all; default 1% for requests, 0
    for tests."""
    max_p95: Duration | None = None
    """Most 95th percentile latency of all requests (Locust)."""
    max_p99: Duration | None = None
    """Most 99th percentile latency of all requests (Locust)."""
    min_rps: float | None = Field(None, gt=0)
    """Least requests per second the version sustained (Locust)."""
    min_requests: int | None = Field(None, ge=1)
    """Least requests (Locust) or tests (JUnit) behind the verdict: a run that measured nothing never passes."""
    max_regression: Percentage | None = None
    """Most the 95th percentile latency may grow over the last passing run of the same suite (a performance
    benchmark against the previous version)."""


class TestSuite(DeployModel):
    """A named test suite: a command on the worker or HTTP checks against the version under test."""

    __test__ = False  # not a pytest class

    command: Command | None = None
    """Command to run; exit status 0 passes. ``{url}`` is the address of the version under test."""
    http: list[HttpCheck] | None = None
    """HTTP checks; all must pass."""
    timeout: Duration = timedelta(minutes=10)
    """Time limit of the suite."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the command (no secrets)."""
    working_dir: str | None = None
    """Working directory of the command, relative to the service folder."""
    report: StepReport | None = None
    """Report the command writes (``junit``, ``locust`` stats CSV), judged by ``criteria``. ``{reports}`` is the
    run's report folder."""
    criteria: PassCriteria | None = None
    """Pass criteria on the report; with them the report decides, not the exit status (Locust exits 1 on any
    failed request)."""
    traffic_share: Percentage | None = None
    """Load tests: the share of production traffic to generate. ``{rps}`` and ``{users}`` in the command are
    this share of production's current request rate (one user per request per second)."""
    baseline_rps: float | None = Field(None, gt=0)
    """Request rate ``trafficShare`` applies to when production's rate cannot be measured."""


class SecretRef(DeployModel):
    """A secret handed to a step as an environment variable: read from an Airflow connection or variable when the
    step runs, masked in logs, never written in YAML. In pod mode it reaches the pod as a Kubernetes Secret
    reference, never as a value in the pod spec."""

    connection: ConnId | None = None
    """Airflow connection holding the secret."""
    field: str = Field("password", pattern=r"^(password|login|host|schema|port|uri|extra|extra\.[A-Za-z0-9_.-]+)$")
    """Field of the connection: ``password``, ``login``, ``host``, ``schema``, ``port``, ``uri``, ``extra`` (all
    of it, JSON) or ``extra.<key>``."""
    variable: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    """Airflow variable holding the secret (instead of a connection)."""


class PodSettings(DeployModel):
    """Where and how a pod-mode step runs (cncf.kubernetes pod operator)."""

    connection: ConnId | None = None
    """Kubernetes connection. Default: the platform's connection on Kubernetes, else ``kubernetes_default``."""
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    """Namespace. Default: the platform's namespace, else ``default``."""
    service_account: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    """Service account of the pod (for example one allowed to push images)."""
    resources: Resources | None = None
    """Requests and limits of the step's container."""


class StepRequest(DeployModel):
    """One HTTP request of an ``http`` step (alert rules, dashboards, annotations)."""

    connection: ConnId
    """HTTP connection (host, credentials); the path is appended to its host."""
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    """HTTP method."""
    path: UrlPath
    """Path; the step placeholders (``{version}``, ``{service}``, ...) are filled in."""
    body: str | None = None
    """File (relative to the service folder) sent as the body, placeholders filled in; without it the request
    sends a JSON description of the release."""
    content_type: str = "application/json"
    """Content type of the body."""


SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


class StepDns(DeployModel):
    """The DNS record of ``update-dns``: upserted in a Route53 hosted zone, pointing at the environment."""

    provider: Literal["route53"] = "route53"
    """DNS provider."""
    connection: ConnId = "aws_default"
    """AWS connection used for Route53."""
    hosted_zone_id: str = Field(min_length=1, max_length=64)
    """Route53 hosted zone id."""
    record_name: str | None = None
    """Record name; ``{service}``, ``{environment}`` and ``{region}`` are filled in. Default:
    ``<service>.<zone>`` in production, ``<service>-<environment>.<zone>`` elsewhere (``-<region>`` added in a
    region)."""
    target: str | None = None
    """Host name (a CNAME record) or IP address (an A or AAAA record) the record points at; the same
    placeholders. Default: the host of the platform's live endpoint (``platform.endpoints.live``; on ECS the
    load balancer's DNS name)."""
    ttl: int = Field(60, ge=0, le=172800)
    """Time to live of the record, in seconds."""


class StepRunner(DeployModel):
    """A pipeline step (build, scan, promotion, infrastructure, monitoring set-up, documentation): a command on the
    worker, a Kubernetes pod, HTTP requests, or the step's built-in default (an empty entry)."""

    command: Command | None = None
    """Run as a command on the worker. Placeholders: ``{image}``, ``{version}``, ``{commit}``, ``{short_sha}``,
    ``{service}``, ``{environment}``, ``{region}``, ``{reports}``, ``{previous_version}``,
    ``{previous_commit}``, ``{source_image}``."""
    image: str | None = None
    """Run as a Kubernetes pod with this image (cncf.kubernetes pod operator)."""
    args: Annotated[list[str], BeforeValidator(lambda v: _command(v) if v else []),
                    WithJsonSchema({"type": "array", "items": {"type": "string"}})] = Field(default_factory=list)
    """Arguments of the pod (the same placeholders as ``command``)."""
    http: list[StepRequest] | None = None
    """Send these HTTP requests instead (monitoring set-up: alert rules, dashboards, annotations)."""
    pod: PodSettings = Field(default_factory=PodSettings)
    """Pod-mode settings: connection, namespace, service account, resources."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables (no secrets)."""
    secrets: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], SecretRef] = Field(default_factory=dict)
    """Secrets as environment variables, by variable name."""
    working_dir: str | None = None
    """Working directory, relative to the service folder (terraform: the configuration's folder, default
    ``infra``)."""
    report: StepReport | None = None
    """Report the step writes, parsed into findings (default: the step's own, for example ``trivy`` for
    ``scan-cves``)."""
    dns: StepDns | None = None
    """``update-dns``: the record its built-in default upserts through Route53 (required without a command, an
    image or requests)."""
    block_on: list[Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]] | None = None
    """Scans: finding severities that fail the step and the checklist's ``securityScanClean``. Default:
    ``[CRITICAL, HIGH]``; in the hotfix workflow ``[CRITICAL]`` (blocking CVEs only). Secrets always block."""
    timeout: Duration = timedelta(minutes=30)
    """Time limit."""

    @property
    def mode(self) -> Literal["command", "pod", "http", "builtin"]:
        if self.image is not None:
            return "pod"
        if self.command is not None:
            return "command"
        if self.http is not None:
            return "http"
        return "builtin"


STEP_NAMES = (
    "unit-tests", "build-image", "push-image",  # build
    "scan-cves", "scan-secrets", "generate-sbom",  # security scan
    "retag-image", "sign-image",  # build promotion
    "terraform", "update-dns",  # infrastructure
    "configure-alerts", "setup-dashboards", "enable-tracing", "annotate-deployment",  # monitoring set-up
    "release-notes", "document-config-changes",  # documentation
)

StepName = Annotated[str, AfterValidator(lambda v: _check_step_name(v)),
                     WithJsonSchema({"type": "string", "enum": list(STEP_NAMES)})]


def _check_step_name(value: str) -> str:
    if value not in STEP_NAMES:
        raise PydanticCustomError("step_name", "unknown step {got}{hint}; known steps: {known}",
                                  {"got": _show(value), "hint": did_you_mean(value, STEP_NAMES),
                                   "known": ", ".join(STEP_NAMES)})
    return value


class Checklist(DeployModel):
    """Production pre-deployment checklist: each item is a real check; a failed item stops the run."""

    staging_tests_passed: bool = True
    """This version passed staging (ledger)."""
    security_scan_clean: bool = True
    """The version's security scan has no blocking findings."""
    release_notes: bool = True
    """Release notes exist for the version."""
    release_notes_location: str | None = None
    """File (relative to the service folder) or URL of the release notes; ``{version}`` is replaced."""
    rollback_plan: bool = True
    """A previous stable version is known and the rollback DAG exists."""
    on_call_notified: bool = True
    """The on-call team was notified of the deployment."""
    maintenance_window: bool = True
    """The run falls in (or waits for) a maintenance window."""
    database_backup: bool = True
    """A database backup completed (services with migrations)."""


class HotfixSettings(DeployModel):
    """Hotfix fast track."""

    validation_replicas: int = Field(1, ge=1)
    """Replicas that get the hotfix first."""
    stability_period: Duration = timedelta(minutes=5)
    """How long the first replicas must stay healthy before the full rollout."""
    monitor_duration: Duration = timedelta(minutes=30)
    """Close monitoring after the full rollout, with automatic rollback."""
    lower_environments: list[Literal["development", "staging"]] = Field(
        default_factory=lambda: ["development", "staging"])
    """Environments that receive the same version afterwards."""


class RollbackSettings(DeployModel):
    """The rollback workflow."""

    monitor_duration: Duration = timedelta(minutes=15)
    """How long the restored version is watched; ``0s``: not watched."""
    conditions: list[ConditionValue] = Field(
        default_factory=lambda: [parse_condition("error_rate > 5%"), parse_condition("availability < 99%")])
    """Alert conditions that trigger an automatic rollback (spec: error rate > 5%, availability < 99%)."""


class IncidentSettings(DeployModel):
    """The outage-recovery workflow (``incident_<service>``)."""

    slack_api: ConnId | None = None
    """Slack API connection (a bot token, the slack provider's ``slack`` type) used to create the incident
    channel ``#incident-<service>-<date>``. Without it no channel is created (the page still goes out through
    ``notifications.slack``)."""
    status_page: ConnId | None = None
    """HTTP connection of the status page; the incident and its updates are POSTed to ``statusPagePath``."""
    status_page_path: UrlPath = "/api/v1/incidents"
    """Path of the status page's incident endpoint."""
    responders: list[str] = Field(default_factory=list)
    """Airflow users who may choose the mitigation; empty: any user."""
    mitigation_timeout: Duration = timedelta(minutes=15)
    """How long the mitigation choice waits for a person (the spec's "mitigate < 15 minutes"); then the run
    fails, nothing changed."""
    verify_duration: Duration = timedelta(minutes=5)
    """How long the metrics must stay healthy after the mitigation; ``0s``: smoke tests only."""
    maintenance_message: str = Field(
        "We are fixing a problem. Please try again in a few minutes.", min_length=1, max_length=500)
    """Text of the maintenance page (mitigation "Maintenance mode"): while it is on, live requests get it with HTTP
    503 (and ``Retry-After`` where the platform can send headers). Offered when the platform has a maintenance
    mode: local; ECS with ``listenerRuleArn``; Kubernetes with a Gateway API router and
    ``router.maintenanceService``."""
    fix_timeout: Duration = timedelta(hours=4)
    """After a fail over or maintenance mode: how long the run waits for a person to confirm that the problem is
    fixed before traffic comes back; then the run fails and the mitigation stays in place (clear the task to ask
    again). ``0s``: no limit."""
    restore_steps: list[Weight] = Field(default_factory=lambda: [10, 50, 100], min_length=1)
    """After a fail over: the failed region gets its traffic back in these steps, in percent of its configured
    weight (strictly increasing, the last 100); the other regions keep the rest in proportion to theirs."""
    restore_pause: Duration = timedelta(minutes=5)
    """How long the failed region's metrics are watched at each restoration step (against the rollback
    conditions) before the next; a bad watch sends its traffic back to the other regions and fails the run.
    ``0s``: no watch."""


class ServiceFile(DeployModel):
    """``.deploy/service.yaml``: what the environment files leave out."""

    service: ServiceName
    """Service name; used in DAG ids (``deploy_<service>_<environment>``) and resource names."""
    description: str | None = None
    """One line shown in DAG docs."""
    owner: str = "deploy"
    """Owner shown in Airflow."""
    image: ImageRepository | None = None
    """Image repository without tag. Default: the service name."""
    platform: Platform
    """Where the service runs."""
    metrics: Metrics = Field(default_factory=Metrics)
    """Metric provider and queries."""
    notifications: Notifications | None = None
    """Where deployments are announced."""
    approvals: Approvals = Field(default_factory=Approvals)
    """Approval policy per environment."""
    maintenance_window: MaintenanceWindow | None = None
    """Production maintenance window and freezes."""
    migrations: Migrations | None = None
    """Database migrations."""
    tests: dict[SuiteName, TestSuite] = Field(default_factory=dict)
    """Named test suites. ``smoke`` is built in (health check and metrics endpoint) unless defined here."""
    validation: dict[Literal["synthetic-transactions", "database-connectivity", "external-integrations",
                             "caching-layers", "critical-user-flows"], TestSuite] = Field(default_factory=dict)
    """Production post-deployment validation checks, by the spec's names."""
    steps: dict[StepName, StepRunner] = Field(default_factory=dict)
    """Pipeline steps around the deployment (build, scans, infrastructure, monitoring set-up); a step runs
    only when declared."""
    checklist: Checklist = Field(default_factory=Checklist)
    """Production pre-deployment checklist."""
    hotfix: HotfixSettings = Field(default_factory=HotfixSettings)
    """Hotfix workflow settings."""
    rollback: RollbackSettings = Field(default_factory=RollbackSettings)
    """Rollback workflow settings."""
    incident: IncidentSettings = Field(default_factory=IncidentSettings)
    """Outage-recovery workflow settings."""

    @property
    def image_repository(self) -> str:
        return self.image or self.service

    @property
    def metric_provider(self) -> str:
        if self.metrics.provider:
            return self.metrics.provider
        return {"local": "local", "kubernetes": "prometheus", "ecs": "cloudwatch"}[self.platform.type]
