"""The interface every deployment target implements (local processes, Kubernetes, ECS).

Operators decide *when* something happens; a platform decides *how*. A platform acts on one target: a
service in an environment (and region). It knows two roles:

* ``stable``: the version serving traffic now (blue in blue-green);
* ``canary``: the new version being introduced (green in blue-green).

Every method must be idempotent: calling it again after a crash converges to the same state.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

Role = Literal["stable", "canary"]
ROLES: tuple[Role, ...] = ("stable", "canary")


@dataclass(frozen=True)
class Target:
    """What a platform acts on."""

    service: str
    environment: str
    region: str | None = None

    @property
    def key(self) -> str:
        return f"{self.service}-{self.environment}" + (f"-{self.region}" if self.region else "")


@dataclass(frozen=True)
class HealthCheckSpec:
    path: str = "/health"
    initial_delay: float = 10.0
    timeout: float = 5.0
    interval: float = 5.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class WorkloadSpec:
    """A version to run: what, how many, with which resources and health check."""

    version: str
    image: str
    replicas: int
    strategy: str = "recreate"
    resources: dict[str, Any] | None = None
    health_check: HealthCheckSpec = field(default_factory=HealthCheckSpec)
    progress_deadline: float = 600.0
    env: dict[str, str] = field(default_factory=dict)
    rolling: dict[str, Any] | None = None  # max_surge, max_unavailable of a rolling update

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkloadSpec:
        data = dict(data)
        data["health_check"] = HealthCheckSpec(**data.get("health_check") or {})
        return cls(**data)


@dataclass
class RolloutStatus:
    """One observation of a role's rollout, like ``kubectl rollout status``."""

    role: Role
    version: str | None
    desired: int
    ready: int
    updated: int = 0
    available: int = 0
    done: bool = False
    failed: bool = False
    reason: str | None = None  # ImagePullBackOff, CrashLoopBackOff, ProgressDeadlineExceeded, ...
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrafficSplit:
    """The traffic split as read back from the router."""

    stable_version: str | None
    canary_version: str | None
    canary_weight: int
    granularity: int = 1  # smallest step the router can make (a replica ratio moves in whole pods)

    @property
    def stable_weight(self) -> int:
        return 100 - self.canary_weight

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MaintenanceState:
    """Maintenance mode as read back from the platform's router."""

    enabled: bool
    message: str = ""
    since: float | None = None  # epoch seconds it was turned on, where the platform keeps it
    detail: str = ""  # where it lives: the router, the ALB rule, the HTTPRoute

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlatformError(RuntimeError):
    """A platform operation failed; ``reason`` carries the platform's own reason (for example a Kubernetes
    ``ImagePullBackOff``)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


class DeploymentPlatform(ABC):
    """Base class of deployment targets. Subclasses register a ``type`` name (``platform.type`` in config)."""

    type: ClassVar[str]

    def __init__(self, settings: dict[str, Any], target: Target):
        self.settings = settings
        self.target = target

    # --------------------------------------------------------------------------------- the version lifecycle

    @abstractmethod
    def deploy(self, spec: WorkloadSpec, role: Role) -> None:
        """Start (or update to) ``spec`` in ``role`` without waiting for readiness. For ``stable`` this follows
        ``spec.strategy`` (recreate stops the old version first; rolling replaces gradually)."""

    @abstractmethod
    def rollout_status(self, role: Role) -> RolloutStatus:
        """Observe the rollout of ``role`` once."""

    async def async_rollout_status(self, role: Role) -> RolloutStatus:
        """Async variant used by triggers; platforms with async clients override it."""
        return await asyncio.to_thread(self.rollout_status, role)

    @abstractmethod
    def set_traffic(self, canary_weight: int) -> TrafficSplit:
        """Send ``canary_weight`` percent of traffic to the canary role; returns the split read back."""

    @abstractmethod
    def traffic(self) -> TrafficSplit:
        """The current split, read from the router."""

    @abstractmethod
    def promote(self) -> bool:
        """Make the canary the stable version: stable runs it, takes 100% of traffic, the old version and the
        canary role are removed. Returns ``True`` when that is done; ``False`` when the stable role is still
        rolling out the new version: the caller waits for ``rollout_status("stable")`` to be done, then calls
        :meth:`complete_promotion`."""

    def complete_promotion(self) -> None:  # noqa: B027 - optional: only platforms whose promote() waits
        """Finish a promotion that :meth:`promote` left waiting for the stable rollout: traffic 100% to stable,
        the canary role removed."""

    @abstractmethod
    def abort(self) -> None:
        """Roll back an unfinished rollout: traffic 100% to stable first, then the canary role removed. Stable
        is not touched."""

    @abstractmethod
    def scale(self, role: Role, replicas: int) -> None:
        """Change the replica count of a role."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Record what is running now (versions, replicas, manifests); stored in the ledger."""

    @abstractmethod
    def restore(self, snapshot: dict[str, Any]) -> bool:
        """Bring the target back to a snapshot. Returns ``True`` when done; ``False`` when the stable role is
        still rolling out the snapshot's version (the caller waits for ``rollout_status("stable")``)."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """Current state for people: versions, replicas, traffic, resource use."""

    def endpoint(self, role: Role | None = None) -> str:
        """Base URL of a role's replicas, or of the service's entry point (``None``) for tests."""
        raise NotImplementedError(f"platform {self.type!r} does not expose endpoints")

    def set_autoscaling(self, enabled: bool) -> str:
        """Suspend or resume autoscaling; returns what was done (platforms without autoscaling say so)."""
        return f"platform {self.type!r} has no autoscaling to {'enable' if enabled else 'disable'}"

    def logs(self, role: Role, lines: int = 200) -> list[str]:
        """The newest log lines of a role's replicas."""
        raise NotImplementedError(f"platform {self.type!r} does not expose logs")

    def capacity(self, spec: WorkloadSpec) -> dict[str, Any]:
        """Whether ``spec`` fits beside what runs now: ``{"fits": bool, "detail": str}``."""
        raise NotImplementedError(f"platform {self.type!r} cannot check capacity")

    # ------------------------------------------------------------------ maintenance mode (optional capability)

    @classmethod
    def maintenance_support(cls, settings: dict[str, Any]) -> str | None:
        """``None`` when :meth:`set_maintenance` works with these settings, otherwise why not. Decided from the
        settings alone (at DAG parse time, no API call): the incident workflow offers "Maintenance mode" only
        for targets whose platform has it."""
        return f"platform {getattr(cls, 'type', cls.__name__)!r} has no maintenance mode"

    def set_maintenance(self, enabled: bool, message: str = "", retry_after: int = 300) -> MaintenanceState:
        """Turn maintenance mode on or off; returns the state read back. While on, live traffic gets HTTP 503
        with ``message`` (and ``Retry-After: retry_after`` where the platform can send headers) instead of the
        service; health checks keep reaching the replicas. Idempotent: setting the state it is in changes
        nothing, so a retried task converges. Deployments behind it keep working where the platform allows."""
        from airflow_deploy_provider.registry import NotImplementedForPlatform

        raise NotImplementedForPlatform(self.maintenance_support(self.settings)
                                        or f"platform {self.type!r} does not implement set_maintenance")

    def maintenance(self) -> MaintenanceState:
        """Whether maintenance mode is on, read back from the router (``False`` where there is none)."""
        return MaintenanceState(enabled=False)
