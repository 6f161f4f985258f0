"""The interface every metric source implements (local router, Prometheus, CloudWatch)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, ClassVar

from airflow_deploy_provider.config.types import MetricInfo


@dataclass(frozen=True)
class MetricQuery:
    """One measurement: a metric of a version over the last ``window``."""

    metric: MetricInfo
    service: str
    environment: str
    version: str
    window: timedelta
    region: str | None = None
    query: str | None = None  # the provider-specific query, for custom metrics and overrides
    # Where the version runs: "canary" (beside stable) or "stable"; for sources that measure per role
    # (CloudWatch target groups) rather than per version label.
    role: str | None = None


@dataclass(frozen=True)
class MetricResult:
    """A value, or no data; ``sample_size`` is the number of requests behind the value when known."""

    metric: str
    value: float | None
    sample_size: int | None = None
    error: str | None = None

    @property
    def no_data(self) -> bool:
        return self.value is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MetricProvider(ABC):
    """Base class of metric sources. Subclasses register a ``type`` name (``metrics.provider`` in config)."""

    type: ClassVar[str]

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    @abstractmethod
    async def evaluate(self, query: MetricQuery) -> MetricResult:
        """Measure one metric. Missing data and provider errors return a result with ``value=None`` (and the
        error), never raise: the gate treats them as failed checks."""
