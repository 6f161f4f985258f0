"""Typed values of .deploy files: durations, percentages, quantities, conditions, thresholds."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic_core import PydanticCustomError

from airflow_deploy_provider.config.types import (
    format_duration,
    parse_condition,
    parse_duration,
    parse_percentage,
    parse_quantity,
    parse_threshold,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("10m", 600), ("30s", 30), ("1h30m", 5400), ("2d", 172800), ("500ms", 0.5), ("1h", 3600),
    ("1.5h", 5400), ("0", 0), (0, 0), ("1d2h3m4s", 93784),
])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("10 minutes", "expected a duration such as"),
    ("10", "expected a duration such as"),
    (10, "bare number 10"),
    ("30m1h", "largest first"),
    ("1m1m", "each unit once"),
    ("", "expected a duration"),
    (True, "expected a duration"),
    ("-5m", "expected a duration"),
])
def test_bad_durations(text, message):
    with pytest.raises(PydanticCustomError) as err:
        parse_duration(text)
    assert message in str(err.value)


@pytest.mark.parametrize("seconds", [0.5, 30, 600, 5400, 93784, 86400])
def test_duration_round_trip(seconds):
    td = timedelta(seconds=seconds)
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize(("value", "number"), [("10%", 10.0), ("12.5%", 12.5), (40, 40.0), ("100 %", 100.0), (0, 0.0)])
def test_percentages(value, number):
    assert parse_percentage(value) == number


@pytest.mark.parametrize("value", ["101%", "-1%", "ten", "10%%", None, True])
def test_bad_percentages(value):
    with pytest.raises(PydanticCustomError):
        parse_percentage(value)


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2000m", Decimal(2)), ("2", Decimal(2)), ("0.5", Decimal("0.5")),
    ("512Mi", Decimal(512 * 2**20)), ("1Gi", Decimal(2**30)), ("1G", Decimal(10**9)), ("129e6", Decimal(129 * 10**6)),
    (4, Decimal(4)),
])
def test_quantities(text, value):
    assert parse_quantity(text).value == value


@pytest.mark.parametrize("text", ["2 cores", "1GB", "Mi", "-1", "0", "1.2.3"])
def test_bad_quantities(text):
    with pytest.raises(PydanticCustomError):
        parse_quantity(text)


@pytest.mark.parametrize(("text", "metric", "op", "number", "unit", "threshold", "metric_unit"), [
    ("error_rate > 1%", "error_rate", ">", 1.0, "%", 1.0, "percent"),
    ("latency_p99 > 1000ms", "latency_p99", ">", 1000.0, "ms", 1000.0, "ms"),
    ("latency_p99 > 1s", "latency_p99", ">", 1.0, "s", 1000.0, "ms"),
    ("availability < 99.9%", "availability", "<", 99.9, "%", 99.9, "percent"),
    ("availability<=99%", "availability", "<=", 99.0, "%", 99.0, "percent"),
])
def test_conditions(text, metric, op, number, unit, threshold, metric_unit):
    cond = parse_condition(text)
    assert (cond.metric, cond.op, cond.number, cond.unit) == (metric, op, number, unit)
    assert cond.threshold(metric_unit) == threshold


def test_condition_decides_breach():
    cond = parse_condition("error_rate > 1%")
    assert cond.breached(1.5, "percent")
    assert not cond.breached(1.0, "percent")
    assert parse_condition("availability < 99.9%").breached(99.5, "percent")


@pytest.mark.parametrize(("text", "hint"), [
    ("error_rate >> 1%", "cannot parse condition"),
    ("error_rate = 1%", "use one of >, >=, <, <="),
    ("error rate > 1%", "cannot parse condition"),
    ("> 1%", "cannot parse condition"),
    ("error_rate > one", "cannot parse condition"),
])
def test_bad_conditions(text, hint):
    with pytest.raises(PydanticCustomError) as err:
        parse_condition(text)
    assert hint in str(err.value)


@pytest.mark.parametrize(("value", "expected"), [(0.1, (0.1, "")), (500, (500.0, "")), ("500ms", (500.0, "ms")),
                                                 ("99.9%", (99.9, "%"))])
def test_thresholds(value, expected):
    assert parse_threshold(value) == expected
