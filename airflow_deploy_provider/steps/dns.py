"""The ``update-dns`` step: the environment's DNS record, upserted in a Route53 hosted zone.

The step's ``dns`` setting names the hosted zone (and the AWS connection); the record defaults to
``<service>.<zone>`` in production and ``<service>-<environment>.<zone>`` elsewhere, and points at the
platform's live endpoint (on ECS the load balancer's DNS name) unless ``target`` says otherwise: a host name
makes a CNAME record, an IP address an A (or AAAA) record.

Nothing is submitted when the record already points there with the same TTL, so a retry converges. The
weighted records of a multi-region rollout (``dns`` in the multi-region file) are left alone: a name that has
weighted records is refused.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

from airflow_deploy_provider.steps import Finding, StepContext, StepError, StepResult
from airflow_deploy_provider.steps.http import fill_text

#: Seconds between GetChange calls while Route53 propagates the change, and the most it may take.
CHANGE_POLL = 2.0
CHANGE_WAIT = 300.0


def record_name(ctx: StepContext, dns: dict[str, Any], zone: str) -> str:
    """The record to upsert, with a final dot."""
    from airflow_deploy_provider.hooks.route53 import normalize_name

    values = {"service": ctx.service, "environment": ctx.environment, "region": ctx.region or ""}
    if dns.get("record_name"):
        name = normalize_name(fill_text(dns["record_name"], values))
        if name != zone and not name.endswith("." + zone):
            raise StepError(f"record {name} is not in the hosted zone {zone}")
        return name
    label = ctx.service + ("" if ctx.environment == "production" else f"-{ctx.environment}")
    label += f"-{ctx.region}" if ctx.region else ""
    return f"{label}.{zone}"


def record_target(ctx: StepContext, dns: dict[str, Any]) -> str:
    """What the record points at: ``target``, else the host of the platform's live endpoint."""
    if dns.get("target"):
        return fill_text(dns["target"], {"service": ctx.service, "environment": ctx.environment,
                                         "region": ctx.region or ""}).rstrip(".")
    from airflow_deploy_provider.platforms.base import PlatformError
    from airflow_deploy_provider.registry import get_platform

    try:
        url = get_platform(ctx.platform, ctx.service, ctx.environment, ctx.region).endpoint(None)
    except (NotImplementedError, PlatformError) as exc:
        raise StepError(f"no address to point the record at: {exc}; set the step's dns.target") from None
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    if not host:
        raise StepError(f"the platform's live endpoint {url!r} has no host; set the step's dns.target")
    return host


def record_type(target: str) -> str:
    try:
        return "AAAA" if ipaddress.ip_address(target).version == 6 else "A"
    except ValueError:
        return "CNAME"


def update_records(ctx: StepContext) -> StepResult:
    """Upsert the environment's record and wait until Route53 has it in sync."""
    from airflow_deploy_provider.hooks.route53 import Route53RecordHook, describe_target, normalize_name

    dns = ctx.runner.get("dns")
    if not dns:
        raise StepError("update-dns needs the step's 'dns' setting (hostedZoneId and connection) to know which "
                        "record to update")
    if dns.get("provider", "route53") != "route53":
        raise StepError(f"DNS provider {dns.get('provider')!r} is not implemented; route53 is")
    zone_id = dns["hosted_zone_id"]
    hook = Route53RecordHook(aws_conn_id=dns.get("connection") or "aws_default")
    try:
        zone = hook.zone_name(zone_id)
    except Exception as exc:  # noqa: BLE001 - a missing zone, denied access, no credentials: the step's error
        raise StepError(f"hosted zone {zone_id}: {type(exc).__name__}: {exc}") from None
    name = record_name(ctx, dns, zone)
    target = record_target(ctx, dns)
    if normalize_name(target) == name:
        raise StepError(f"record {name} would point at itself; set the step's dns.target")
    rtype = record_type(target)
    if rtype == "CNAME" and name == zone:
        raise StepError(f"the zone apex {name} cannot be a CNAME record; give a record name below it or an IP "
                        "address as target")
    ttl = int(dns.get("ttl", 60))
    existing = hook.record_sets(zone_id, name)
    weighted = [r for r in existing if "SetIdentifier" in r]
    if weighted:
        raise StepError(f"{name} has weighted records ({', '.join(r['SetIdentifier'] for r in weighted)}), which "
                        "the multi-region rollout manages; give the step another record name")
    clash = [r["Type"] for r in existing if r["Type"] != rtype and (rtype == "CNAME" or r["Type"] == "CNAME")]
    if clash:
        raise StepError(f"{name} already has a {clash[0]} record, which a {rtype} record cannot sit beside; "
                        "remove it first")
    current = next((r for r in existing if r["Type"] == rtype), None)
    before = describe_target(current) if current else None
    finding = Finding(tool="route53", kind="change", id=f"{rtype} {name}", title=f"-> {target}", location=zone_id)
    data: dict[str, Any] = {"record": name, "type": rtype, "target": target, "ttl": ttl, "before": before,
                            "hosted_zone_id": zone_id}
    values = [r.get("Value", "").rstrip(".").lower() for r in (current or {}).get("ResourceRecords") or []]
    if current and values == [target.lower()] and int(current.get("TTL", -1)) == ttl and "AliasTarget" not in current:
        return StepResult(ok=True, summary=f"{rtype} {name} already points at {target}; nothing submitted",
                          findings=[finding], changed=False, data=data)
    info = hook.upsert(zone_id, {"Name": name, "Type": rtype, "TTL": ttl, "ResourceRecords": [{"Value": target}]},
                       comment=f"airflow-deploy {ctx.deployment_id} update-dns {ctx.service} {ctx.environment}")
    status = wait_in_sync(ctx, hook, info["Id"], info.get("Status", "PENDING"))
    data.update(change_id=info["Id"], change_status=status)
    return StepResult(ok=True, summary=f"{rtype} {name} -> {target}" + (f" (was {before})" if before else
                                                                          " (new record)") + f"; {status}",
                      findings=[finding], changed=True, data=data)


def wait_in_sync(ctx: StepContext, hook: Any, change_id: str, status: str) -> str:
    """Poll the change until Route53 reports it ``INSYNC`` on its name servers (bounded by the step's limit)."""
    until = time.monotonic() + min(CHANGE_WAIT, ctx.timeout)
    while status != "INSYNC":
        if time.monotonic() + CHANGE_POLL > until:
            raise StepError(f"Route53 change {change_id} still {status} after {min(CHANGE_WAIT, ctx.timeout):g}s "
                            "(it was submitted; a retry finds the record set and submits nothing)")
        time.sleep(CHANGE_POLL)
        status = hook.change_status(change_id)
    return status
