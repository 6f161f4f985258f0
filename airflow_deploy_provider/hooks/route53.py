"""Route53 weighted records: read the per-region weights of one record name, change them in one batch, read back.

The platform team creates the weighted records (one per region and record type, ``SetIdentifier`` = region
name, each pointing at its region's load balancer by alias or by value). Deployments only change ``Weight``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

#: Route53 accepts weights 0..255; a region's share is ``weight / sum(weights)``.
MAX_WEIGHT = 255


class MissingWeightedRecords(LookupError):
    """The hosted zone lacks a weighted record for one or more regions (nothing was changed)."""


def normalize_name(name: str) -> str:
    """A DNS name as Route53 compares it: lower case, octal escapes (``\\052`` for ``*``) decoded, one final
    dot."""
    name = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), name.strip())
    return name.lower().rstrip(".") + "."


def route53_weights(percent: Mapping[str, float]) -> dict[str, int]:
    """
    Percent per region (adding up to 100, or all 0) -> Route53 integer weights with the same proportions.

    Weights are the percentages rounded so that they still add up to 100 (largest remainder); a region at 0 %
    stays at 0 and a region with any traffic gets at least 1.
    """
    for region, value in percent.items():
        if not 0 <= value <= 100 or math.isnan(value):
            raise ValueError(f"weight of {region} must be a percentage between 0 and 100; got {value}")
    total = sum(percent.values())
    if total == 0:
        return dict.fromkeys(percent, 0)
    scaled = {r: v * 100 / total for r, v in percent.items()}
    weights = {r: max(math.floor(v), 1) if v > 0 else 0 for r, v in scaled.items()}
    left = 100 - sum(weights.values())
    # Hand out what rounding down left over to the most under-served regions, or take back what the minimum
    # of 1 added from the most over-served ones.
    while left:
        step = 1 if left > 0 else -1
        candidates = [r for r in scaled if step > 0 or weights[r] > 1]
        region = min(candidates, key=lambda r: (step * (weights[r] - scaled[r]), r))
        weights[region] += step
        left -= step
    return weights


def describe_target(record_set: Mapping[str, Any]) -> str:
    """Where a record points: the alias target or its values."""
    alias = record_set.get("AliasTarget")
    if alias:
        return f"alias {alias.get('DNSName', '?')}"
    return ", ".join(r.get("Value", "?") for r in record_set.get("ResourceRecords", [])) or "-"


@dataclass
class WeightPlan:
    """What :func:`plan_weights` found and would change."""

    record_name: str
    types: list[str]
    #: region -> record type -> current weight
    before: dict[str, dict[str, int]]
    #: region -> target weight (every type of the region gets the same weight)
    target: dict[str, int]
    #: the ``Changes`` of one ChangeBatch (empty when every weight already matches)
    changes: list[dict[str, Any]] = field(default_factory=list)
    #: weighted records of this name whose SetIdentifier is not a region of the rollout: identifier -> weight
    unmanaged: dict[str, int] = field(default_factory=dict)
    #: region -> what its record points at
    targets: dict[str, str] = field(default_factory=dict)


def plan_weights(records: Iterable[Mapping[str, Any]], target: Mapping[str, int], *, hosted_zone_id: str,
                 record_name: str) -> WeightPlan:
    """
    The UPSERTs that give every region's weighted record its ``target`` weight, keeping type, TTL, values or
    alias target, health check and every other field as they are. Raises :class:`MissingWeightedRecords`
    naming every missing ``SetIdentifier`` before anything is changed.
    """
    records = [dict(r) for r in records if "SetIdentifier" in r and "Weight" in r]
    types = sorted({r["Type"] for r in records})
    by_key = {(r["SetIdentifier"], r["Type"]): r for r in records}
    missing = [(region, t) for region in target for t in (types or ["A"]) if (region, t) not in by_key]
    if missing:
        if not records:
            raise MissingWeightedRecords(
                f"hosted zone {hosted_zone_id} has no weighted record named {record_name}; expected one per region "
                f"with SetIdentifier {', '.join(target)}. Nothing was changed.")
        what = "; ".join(f"{t} {record_name} with SetIdentifier {region!r}" for region, t in missing)
        raise MissingWeightedRecords(
            f"hosted zone {hosted_zone_id} has no weighted record {what} (found SetIdentifier "
            f"{', '.join(sorted({r['SetIdentifier'] for r in records}))}). Nothing was changed.")
    plan = WeightPlan(record_name=record_name, types=types, before={}, target=dict(target))
    for region, weight in target.items():
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"Route53 weight of {region} must be 0..{MAX_WEIGHT}; got {weight}")
        plan.before[region] = {t: int(by_key[(region, t)]["Weight"]) for t in types}
        plan.targets[region] = describe_target(by_key[(region, types[0])])
        for t in types:
            record = by_key[(region, t)]
            if int(record["Weight"]) != weight:
                plan.changes.append({"Action": "UPSERT", "ResourceRecordSet": {**record, "Weight": weight}})
    plan.unmanaged = {f"{r['SetIdentifier']} ({r['Type']})" if len(types) > 1 else r["SetIdentifier"]:
                      int(r["Weight"]) for r in records if r["SetIdentifier"] not in target}
    return plan


def collapse(weights: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """region -> weight, or region -> {type: weight} where a region's record types disagree."""
    out: dict[str, Any] = {}
    for region, by_type in weights.items():
        values = set(by_type.values())
        out[region] = next(iter(values)) if len(values) == 1 else dict(by_type)
    return out


class Route53WeightHook(AwsBaseHook):
    """
    Reads and changes the weights of Route53 weighted records through an AWS connection.

    :param aws_conn_id: the AWS connection (its ``endpoint_url`` extra may point at a test server).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "route53"
        super().__init__(*args, **kwargs)

    def record_sets(self, hosted_zone_id: str, record_name: str) -> list[dict[str, Any]]:
        """Every record set named ``record_name`` (any type, weighted or not)."""
        wanted = normalize_name(record_name)
        found: list[dict[str, Any]] = []
        paginator = self.conn.get_paginator("list_resource_record_sets")
        for page in paginator.paginate(HostedZoneId=hosted_zone_id, StartRecordName=wanted):
            for record in page["ResourceRecordSets"]:
                if normalize_name(record["Name"]) != wanted:
                    return found  # listed in order from record_name: the rest are other names
                found.append(record)
        return found

    def weighted_records(self, hosted_zone_id: str, record_name: str) -> list[dict[str, Any]]:
        """The weighted record sets (those with ``SetIdentifier`` and ``Weight``) named ``record_name``."""
        return [r for r in self.record_sets(hosted_zone_id, record_name) if "SetIdentifier" in r and "Weight" in r]

    def weights(self, hosted_zone_id: str, record_name: str) -> dict[str, dict[str, int]]:
        """SetIdentifier -> record type -> weight."""
        out: dict[str, dict[str, int]] = {}
        for record in self.weighted_records(hosted_zone_id, record_name):
            out.setdefault(record["SetIdentifier"], {})[record["Type"]] = int(record["Weight"])
        return out

    def submit(self, hosted_zone_id: str, changes: list[dict[str, Any]], comment: str = "") -> dict[str, Any]:
        """Submit ``changes`` as one ChangeBatch (applied atomically); returns its ``ChangeInfo``."""
        batch: dict[str, Any] = {"Changes": changes}
        if comment:
            batch["Comment"] = comment[:256]
        return self.conn.change_resource_record_sets(HostedZoneId=hosted_zone_id, ChangeBatch=batch)["ChangeInfo"]


class Route53RecordHook(Route53WeightHook):
    """
    Reads and upserts the simple (non-weighted) record sets of one name, for the ``update-dns`` step.

    :param aws_conn_id: the AWS connection (its ``endpoint_url`` extra may point at a test server).
    """

    def zone_name(self, hosted_zone_id: str) -> str:
        """The hosted zone's domain, with its final dot (``example.com.``)."""
        return normalize_name(self.conn.get_hosted_zone(Id=hosted_zone_id)["HostedZone"]["Name"])

    def upsert(self, hosted_zone_id: str, record: dict[str, Any], comment: str = "") -> dict[str, Any]:
        """UPSERT one record set; returns the change's ``ChangeInfo`` (``Id``, ``Status``)."""
        return self.submit(hosted_zone_id, [{"Action": "UPSERT", "ResourceRecordSet": record}], comment)

    def change_status(self, change_id: str) -> str:
        """``PENDING`` or ``INSYNC``."""
        return self.conn.get_change(Id=change_id)["ChangeInfo"]["Status"]
