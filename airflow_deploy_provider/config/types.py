"""Typed values of ``.deploy`` files: durations, percentages, resource quantities and rollback conditions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

# --------------------------------------------------------------------------------------------- durations

_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_ORDER = ["d", "h", "m", "s", "ms"]
_DURATION_TOKEN = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(d|h|m|s|ms))+$"
DURATION_EXAMPLES = "30s, 10m, 1h30m or 500ms"


def parse_duration(value: Any) -> timedelta:
    """Parse ``10m``, ``30s``, ``1h30m``, ``2d``, ``500ms`` into a timedelta.

    Bare numbers are refused: ``pause: 10`` could mean seconds or minutes, and guessing wrong in a
    deployment pause is costly.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError(
            "duration_type", "expected a duration such as {examples}; got {got}",
            {"examples": DURATION_EXAMPLES, "got": _show(value)},
        )
    if isinstance(value, (int, float)):
        if value == 0:
            return timedelta(0)
        raise PydanticCustomError(
            "duration_unit", "expected a duration with a unit such as {examples}; got the bare number {got} "
            "(write {got}s or {got}m)", {"examples": DURATION_EXAMPLES, "got": value},
        )
    text = value.strip().replace(" ", "")
    if text == "0":
        return timedelta(0)
    tokens = _DURATION_TOKEN.findall(text)
    if not text or "".join(n + u for n, u in tokens) != text:
        raise PydanticCustomError(
            "duration_parsing", "expected a duration such as {examples}; got {got}",
            {"examples": DURATION_EXAMPLES, "got": _show(value)},
        )
    units = [u for _, u in tokens]
    if len(set(units)) != len(units) or units != sorted(units, key=_DURATION_ORDER.index):
        raise PydanticCustomError(
            "duration_parsing", "expected each unit once, largest first (like 1h30m); got {got}",
            {"got": _show(value)},
        )
    return timedelta(seconds=sum(float(n) * _DURATION_UNITS[u] for n, u in tokens))


def format_duration(td: timedelta | None) -> str:
    """Compact, round-trippable form: ``timedelta(minutes=90)`` -> ``1h30m``."""
    if td is None:
        return "-"
    total_ms = round(td.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    total_ms = abs(total_ms)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "10m", "1h30m"]}),
]

# ------------------------------------------------------------------------------------------- percentages


def parse_percentage(value: Any) -> float:
    """``10%`` or ``10`` -> ``10.0``; must lie in 0..100."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("percentage_type", "expected a percentage such as 10%; got {got}",
                                  {"got": _show(value)})
    number: float
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*%?\s*", value)
        if not m:
            raise PydanticCustomError("percentage_parsing", "expected a percentage such as 10% or 12.5%; got {got}",
                                      {"got": _show(value)})
        number = float(m.group(1))
    else:
        number = float(value)
    if not 0 <= number <= 100:
        raise PydanticCustomError("percentage_range", "expected a percentage between 0% and 100%; got {got}",
                                  {"got": _show(value)})
    return number


def format_percentage(value: float) -> str:
    return f"{value:g}%"


Percentage = Annotated[
    float,
    BeforeValidator(parse_percentage),
    PlainSerializer(format_percentage, return_type=str, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?%$"},
                              {"type": "number", "minimum": 0, "maximum": 100}], "examples": ["10%"]}),
]

# -------------------------------------------------------------------------------------- resource quantity

_SUFFIX = {
    "": Decimal(1), "m": Decimal("0.001"), "u": Decimal("0.000001"), "n": Decimal("0.000000001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+]?\d+(?:\.\d+)?)(?:([eE][-+]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")
QUANTITY_PATTERN = r"^\+?\d+(\.\d+)?([eE][-+]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"


@dataclass(frozen=True)
class Quantity:
    """A Kubernetes resource quantity: ``500m`` CPU, ``1Gi`` memory. ``value`` is in base units."""

    text: str
    value: Decimal

    def __str__(self) -> str:
        return self.text


def parse_quantity(value: Any) -> Quantity:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("quantity_type", "expected a resource quantity such as 500m or 1Gi; got {got}",
                                  {"got": _show(value)})
    text = str(value).strip()
    m = _QUANTITY.fullmatch(text)
    if not m:
        raise PydanticCustomError(
            "quantity_parsing",
            "expected a resource quantity such as 500m, 2, 512Mi or 1Gi; got {got}", {"got": _show(value)},
        )
    number, exponent, suffix = m.groups()
    try:
        amount = Decimal(number)
        amount = amount * (Decimal(10) ** int(exponent[1:])) if exponent else amount * _SUFFIX[suffix or ""]
    except (InvalidOperation, ValueError):
        raise PydanticCustomError("quantity_parsing", "expected a resource quantity; got {got}",
                                  {"got": _show(value)}) from None
    if amount <= 0:
        raise PydanticCustomError("quantity_range", "expected a quantity greater than zero; got {got}",
                                  {"got": _show(value)})
    return Quantity(text, amount)


QuantityValue = Annotated[
    Quantity,
    BeforeValidator(parse_quantity),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": QUANTITY_PATTERN}, {"type": "number"}],
                    "examples": ["500m", "1Gi"]}),
]

# ------------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class MetricInfo:
    """What a metric name means: its unit and which direction is healthy."""

    name: str
    unit: Literal["percent", "ms", "rps", "count", "ratio"]
    healthy: Literal["low", "high"]
    description: str


BUILTIN_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("error_rate", "percent", "low", "share of requests answered with a 5xx status, in percent"),
        MetricInfo("availability", "percent", "high", "share of requests not answered with a 5xx status, in percent"),
        MetricInfo("latency_p50", "ms", "low", "median request latency in milliseconds"),
        MetricInfo("latency_p90", "ms", "low", "90th percentile request latency in milliseconds"),
        MetricInfo("latency_p95", "ms", "low", "95th percentile request latency in milliseconds"),
        MetricInfo("latency_p99", "ms", "low", "99th percentile request latency in milliseconds"),
        MetricInfo("request_rate", "rps", "high", "requests per second reaching the version"),
    )
}

UNIT_SUFFIXES: dict[str, dict[str, float]] = {
    # suffix -> factor to the metric's unit; "" is a bare number in the metric's own unit
    "percent": {"": 1.0, "%": 1.0},
    "ms": {"": 1.0, "ms": 1.0, "s": 1000.0},
    "rps": {"": 1.0, "rps": 1.0, "/s": 1.0},
    "count": {"": 1.0},
    "ratio": {"": 1.0},
}
UNIT_EXAMPLE = {"percent": "1%", "ms": "500ms", "rps": "10rps", "count": "5", "ratio": "1.5"}

# ------------------------------------------------------------------------------------ rollback conditions

_CONDITION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<value>[-+]?\d+(?:\.\d+)?)\s*(?P<unit>%|ms|s|rps|/s)?\s*$"
)
CONDITION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|>|<)\s*[-+]?\d+(\.\d+)?\s*(%|ms|s|rps|/s)?$"

_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Condition:
    """A rollback condition such as ``error_rate > 1%``: breached when ``metric op threshold`` holds."""

    text: str
    metric: str
    op: str
    number: float  # as written
    unit: str  # suffix as written ("" for none)

    def threshold(self, metric_unit: str) -> float:
        """The threshold in the metric's own unit (``1s`` -> ``1000`` for a latency in ms)."""
        return self.number * UNIT_SUFFIXES.get(metric_unit, {"": 1.0}).get(self.unit, 1.0)

    def breached(self, value: float, metric_unit: str) -> bool:
        return _OPS[self.op](value, self.threshold(metric_unit))

    def __str__(self) -> str:
        return self.text


def parse_condition(value: Any) -> Condition:
    if isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "condition_type", "expected a condition such as 'error_rate > 1%'; got {got}", {"got": _show(value)}
        )
    m = _CONDITION.fullmatch(value)
    if not m:
        hint = ""
        if "=" in value and not re.search(r"[<>]=", value):
            hint = " (use one of >, >=, <, <=)"
        raise PydanticCustomError(
            "condition_parsing",
            "cannot parse condition {got}: expected '<metric> <op> <value>[unit]' such as 'error_rate > 1%', "
            "'latency_p99 > 1000ms' or 'availability < 99.9%'{hint}",
            {"got": _show(value), "hint": hint},
        )
    return Condition(value.strip(), m["metric"], m["op"], float(m["value"]), m["unit"] or "")


ConditionValue = Annotated[
    Condition,
    BeforeValidator(parse_condition),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": CONDITION_PATTERN,
                    "examples": ["error_rate > 1%", "latency_p99 > 1000ms", "availability < 99.9%"]}),
]


def parse_threshold(value: Any) -> tuple[float, str]:
    """A gate threshold: a number in the metric's unit, or a string with a unit (``500ms``, ``0.1%``)."""
    if isinstance(value, bool):
        raise PydanticCustomError("threshold_type", "expected a number such as 0.1 or 500ms; got {got}",
                                  {"got": _show(value)})
    if isinstance(value, (int, float)):
        return float(value), ""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*(%|ms|s|rps|/s)?\s*", value)
        if m:
            return float(m.group(1)), m.group(2) or ""
    raise PydanticCustomError("threshold_parsing", "expected a number such as 0.1, 99.9% or 500ms; got {got}",
                              {"got": _show(value)})


@dataclass(frozen=True)
class Threshold:
    number: float
    unit: str

    def value(self, metric_unit: str) -> float:
        return self.number * UNIT_SUFFIXES.get(metric_unit, {"": 1.0}).get(self.unit, 1.0)

    def __str__(self) -> str:
        return f"{self.number:g}{self.unit}"


ThresholdValue = Annotated[
    Threshold,
    BeforeValidator(lambda v: v if isinstance(v, Threshold) else Threshold(*parse_threshold(v))),
    PlainSerializer(lambda t: t.number if not t.unit else str(t), when_used="json"),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?\d+(\.\d+)?(%|ms|s|rps|/s)?$"}]}),
]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
