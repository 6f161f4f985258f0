"""GeoDNS weights on Route53, against a moto server, through ``dag.test()`` (the trigger runs for real).

moto answers every change as ``INSYNC`` at once; real Route53 says ``PENDING`` for up to a minute. The tests
reach moto through a small HTTP proxy that can answer ``PENDING`` for the first polls of a change (so the
trigger has to poll), lose a write (so the read-back has something to catch), and counts the requests that
reach Route53 (so a no-op rerun can be seen submitting nothing).
"""

from __future__ import annotations

import http.client
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_deploy_provider.hooks.route53 import normalize_name, route53_weights
from tests.aws import aws_connection, moto_server  # noqa: F401

ZONE = "example.com"
RECORD = "api.example.com"
REGIONS = ["us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1"]
NS = {"r": "https://route53.amazonaws.com/doc/2013-04-01/"}
RRSET_PATH = re.compile(r"^/2013-04-01/hostedzone/[^/]+/rrset/?$")
CHANGE_PATH = re.compile(r"^/2013-04-01/change/([^/?]+)")
CHANGE_RESPONSE = ('<?xml version="1.0" encoding="UTF-8"?>\n<ChangeResourceRecordSetsResponse xmlns="{ns}">'
                   "<ChangeInfo><Id>/change/{id}</Id><Status>PENDING</Status>"
                   "<SubmittedAt>2024-01-01T00:00:00Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>")


class Route53Proxy:
    """
    An HTTP proxy in front of moto that behaves like Route53 where moto does not: every change gets its own id
    and stays ``PENDING`` for its first ``pending`` GetChange polls. With ``lose_writes`` a change batch is
    acknowledged but never reaches moto.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.pending = 0
        self.lose_writes = False
        self.batches: list[list[dict]] = []  # each ChangeResourceRecordSets request's changes
        self.polls: Counter[str] = Counter()  # GetChange calls per change id
        self._ids = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                proxy.handle(self)

            do_POST = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def connection(self, region: str = "us-east-1") -> str:
        import json

        return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                           "extra": {"endpoint_url": self.endpoint, "region_name": region}})

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        path = request.path.split("?", 1)[0]
        if request.command == "POST" and RRSET_PATH.match(path):
            with self._lock:
                self.batches.append(parse_batch(body))
                self._ids += 1
                change_id = f"CPROXY{self._ids}"
            if self.lose_writes:
                reply = CHANGE_RESPONSE.format(ns=NS["r"], id=change_id).encode()
                return self.reply(request, 200, {"Content-Type": "text/xml"}, reply)
            status, headers, reply = self.forward(request, body)
            reply = re.sub(rb"<Id>[^<]*</Id>", f"<Id>/change/{change_id}</Id>".encode(), reply)
            if self.pending:
                reply = reply.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
            return self.reply(request, status, headers, reply)
        status, headers, reply = self.forward(request, body)
        match = CHANGE_PATH.match(path)
        if request.command == "GET" and match:
            with self._lock:
                self.polls[match.group(1)] += 1
                still_pending = self.polls[match.group(1)] <= self.pending
            if still_pending:
                reply = reply.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        self.reply(request, status, headers, reply)

    def forward(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(request.command, request.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            keep = {k: v for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "keep-alive")}
            return response.status, keep, data
        finally:
            conn.close()

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        request.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("server", "date"):
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_batch(body: bytes) -> list[dict]:
    root = ET.fromstring(body)
    return [{"action": c.findtext("r:Action", namespaces=NS),
             "set": c.findtext("r:ResourceRecordSet/r:SetIdentifier", namespaces=NS),
             "type": c.findtext("r:ResourceRecordSet/r:Type", namespaces=NS),
             "weight": int(c.findtext("r:ResourceRecordSet/r:Weight", namespaces=NS))}
            for c in root.iterfind(".//r:Change", NS)]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def proxy(moto_server):
    server = Route53Proxy(moto_server.endpoint)
    yield server
    server.close()


@pytest.fixture
def route53(moto_server, proxy, monkeypatch):
    """A boto3 client straight to moto (set-up and checks); the operator reaches moto through ``proxy``."""
    moto_server.reset()
    aws_connection(monkeypatch, proxy, "aws_dns")
    return moto_server.client("route53")


def create_zone(client, weights: dict[str, int], *, alias: bool = False, types: tuple[str, ...] = ("A",)) -> str:
    zone = client.create_hosted_zone(Name=ZONE, CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"]
    changes = []
    for i, (region, weight) in enumerate(weights.items()):
        for record_type in types:
            record = {"Name": RECORD, "Type": record_type, "SetIdentifier": region, "Weight": weight}
            if alias:
                record["AliasTarget"] = {"HostedZoneId": f"ZLB{i}", "EvaluateTargetHealth": True,
                                         "DNSName": f"web-{region}.{region}.elb.amazonaws.com."}
            else:
                value = f"10.{i}.0.1" if record_type == "A" else f"2001:db8::{i + 1}"
                record.update(TTL=60, ResourceRecords=[{"Value": value}])
            changes.append({"Action": "CREATE", "ResourceRecordSet": record})
    # Another name in the zone, sorted right after the record: must be left alone.
    changes.append({"Action": "CREATE", "ResourceRecordSet": {
        "Name": "b.api.example.com", "Type": "A", "SetIdentifier": "us-east-1", "Weight": 7, "TTL": 60,
        "ResourceRecords": [{"Value": "10.9.9.9"}]}})
    client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    return zone


def records(client, zone: str, name: str = RECORD) -> dict[tuple[str, str], dict]:
    sets = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {(r["SetIdentifier"], r["Type"]): r for r in sets
            if normalize_name(r["Name"]) == normalize_name(name) and "SetIdentifier" in r}


def weights(client, zone: str, record_type: str = "A") -> dict[str, int]:
    return {region: r["Weight"] for (region, t), r in records(client, zone).items() if t == record_type}


@pytest.fixture
def run_dns(dags_folder: Path, airflow_db, ledger):
    """Runs a one-task DAG with the operator under ``dag.test()``; returns (task state, deployment id)."""
    from airflow.dag_processing.dagbag import DagBag

    def run(zone: str, configured: dict[str, float], operator: str = "RegionDnsWeightOperator",
            **kwargs) -> tuple[str, str]:
        dag_id = f"dns_{uuid.uuid4().hex[:10]}"
        deployment_id = f"web/{dag_id}"
        ledger.start_deployment(id=deployment_id, service="web", environment="production", version="1.2.0")
        dns = {"provider": "route53", "connection": "aws_dns", "hosted_zone_id": zone, "record_name": RECORD}
        options = {"poll_interval": 0.1, "change_timeout": 20, **kwargs}
        (dags_folder / f"{dag_id}.py").write_text(
            "from airflow.sdk import DAG\n"
            f"from airflow_deploy_provider.operators.dns import {operator}\n"
            "import datetime\n"
            f"with DAG({dag_id!r}, schedule=None, default_args={{'retries': 0}}):\n"
            f"    {operator}(task_id='shift_dns_weight', service='web', environment='production',\n"
            f"        deployment_id={deployment_id!r}, dns={dns!r}, weights={configured!r}, **{options!r})\n")
        bag = DagBag(str(dags_folder))
        assert bag.import_errors == {}
        dag_run = bag.dags[dag_id].test()
        (ti,) = dag_run.get_task_instances()
        return str(ti.state), deployment_id

    return run


def dns_events(ledger, deployment_id: str) -> list:
    return ledger.events(deployment_id, kind="dns")


# ------------------------------------------------------------------------------------------------ tests


def test_rollout_shift_is_one_batch_and_waits_until_insync(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 90})
    before = records(route53, zone)
    proxy.pending = 2  # Route53 reports the change PENDING on the first two polls

    state, deployment = run_dns(zone, {"us-west-2": 20, "eu-west-1": 30, "ap-southeast-1": 0, "us-east-1": 50})

    assert state == "success"
    assert weights(route53, zone) == {"us-west-2": 20, "eu-west-1": 30, "ap-southeast-1": 0, "us-east-1": 50}
    after = records(route53, zone)
    for key, record in before.items():  # only Weight changed
        assert {k: v for k, v in after[key].items() if k != "Weight"} == {k: v for k, v in record.items()
                                                                            if k != "Weight"}
    other = route53.list_resource_record_sets(HostedZoneId=zone, StartRecordName="b.api.example.com",
                                              MaxItems="1")["ResourceRecordSets"][0]
    assert other["Weight"] == 7  # a different name sharing the SetIdentifier is not touched
    (batch,) = proxy.batches  # one atomic batch, only the records whose weight changes
    assert sorted((c["action"], c["set"], c["weight"]) for c in batch) == [
        ("UPSERT", "eu-west-1", 30), ("UPSERT", "us-east-1", 50), ("UPSERT", "us-west-2", 20)]
    assert proxy.polls == {"CPROXY1": 3}  # the trigger polled GetChange until INSYNC
    (event,) = dns_events(ledger, deployment)
    assert event.data["before"] == {"us-west-2": 10, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 90}
    assert event.data["after"] == {"us-west-2": 20, "eu-west-1": 30, "ap-southeast-1": 0, "us-east-1": 50}
    assert event.data["change_id"] == "/change/CPROXY1" and event.data["change_status"] == "INSYNC"


def test_failed_region_weight_moves_to_healthy_regions(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 25, "ap-southeast-1": 25, "us-east-1": 40})
    proxy.pending = 1
    # As the factory's move_dns_weight after eu-west-1 failed, in a rollout where ap-southeast-1 had already
    # failed (stopOnRegionFailure: false): the ledger knows, so that region stays drained too.
    ledger.start_deployment(id="payments/regional-ap", service="web", environment="production", version="1.2.0",
                            region="ap-southeast-1", parent_id="deploy_web_production/run-1")
    ledger.finish_deployment("payments/regional-ap", "rolled_back", reason="gate")
    ledger.start_deployment(id="payments/regional-us", service="web", environment="production", version="1.2.0",
                            region="us-west-2", parent_id="deploy_web_production/run-1")
    ledger.finish_deployment("payments/regional-us", "succeeded")
    shares = {"us-west-2": 10, "eu-west-1": 25, "ap-southeast-1": 25, "us-east-1": 40}

    state, deployment = run_dns(zone, shares, drain=["eu-west-1"], failed_regions_of="deploy_web_production/run-1",
                                deferrable=False)  # waits on the worker: same trigger, inline

    assert state == "success"
    got = weights(route53, zone)
    assert got == {"us-west-2": 20, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 80}  # proportions kept
    assert proxy.polls == {"CPROXY1": 2}
    (event,) = dns_events(ledger, deployment)
    assert event.data["after"] == got and event.data["before"]["eu-west-1"] == 25


def test_rerun_with_weights_already_set_submits_nothing(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 90})
    target = {"us-west-2": 25, "eu-west-1": 25, "ap-southeast-1": 25, "us-east-1": 25}
    assert run_dns(zone, target)[0] == "success"
    assert len(proxy.batches) == 1

    state, deployment = run_dns(zone, target)  # a retried task, or the same step run again

    assert state == "success"
    assert len(proxy.batches) == 1 and not proxy.polls.get("CPROXY2")  # nothing submitted, nothing awaited
    assert weights(route53, zone) == {r: 25 for r in REGIONS}
    (event,) = dns_events(ledger, deployment)
    assert event.data["changed"] is False and "already set" in event.message


def test_missing_region_record_fails_and_changes_nothing(route53, proxy, run_dns, ledger, capfd):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 0, "us-east-1": 90})  # no ap-southeast-1

    state, deployment = run_dns(zone, {"us-west-2": 40, "eu-west-1": 30, "ap-southeast-1": 10, "us-east-1": 20})

    assert state == "failed"
    assert weights(route53, zone) == {"us-west-2": 10, "eu-west-1": 0, "us-east-1": 90}
    assert proxy.batches == []  # checked every region before submitting anything
    out, err = capfd.readouterr()
    message = next(line for line in (out + err).splitlines() if "has no weighted record" in line)
    assert RECORD in message and "'ap-southeast-1'" in message and zone in message
    assert "us-west-2" not in message.split("found")[0]  # only the missing region is named as missing
    (event,) = dns_events(ledger, deployment)
    assert "ap-southeast-1" in event.data["error"]


def test_alias_records_keep_their_alias_targets(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 90},
                       alias=True, types=("A", "AAAA"))
    before = records(route53, zone)

    state, deployment = run_dns(zone, {r: 25 for r in REGIONS})

    assert state == "success"
    after = records(route53, zone)
    assert set(after) == set(before) and len(after) == 8
    for key, record in after.items():
        assert record["Weight"] == 25
        assert record["AliasTarget"] == before[key]["AliasTarget"]
        assert "TTL" not in record and "ResourceRecords" not in record
    (batch,) = proxy.batches  # both address families in the same atomic batch
    assert sorted((c["set"], c["type"]) for c in batch) == sorted(before)
    (event,) = dns_events(ledger, deployment)
    assert event.data["types"] == ["A", "AAAA"] and event.data["after"] == {r: 25 for r in REGIONS}


def test_change_not_insync_before_the_timeout_fails(route53, proxy, run_dns, ledger, capfd):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 90})
    proxy.pending = 10**6

    state, deployment = run_dns(zone, {r: 25 for r in REGIONS}, change_timeout=1, poll_interval=0.2)

    assert state == "failed"
    assert proxy.polls["CPROXY1"] >= 3
    out, err = capfd.readouterr()
    assert "CPROXY1 is still PENDING at the deadline" in out + err
    (event,) = dns_events(ledger, deployment)
    assert "FAILED" in event.message and event.data["change_status"] == "PENDING"


def test_weights_read_back_wrong_fail_the_task(route53, proxy, run_dns, ledger, capfd):
    zone = create_zone(route53, {"us-west-2": 10, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 90})
    proxy.lose_writes = True  # acknowledged, never applied

    state, deployment = run_dns(zone, {r: 25 for r in REGIONS})

    assert state == "failed"
    out, err = capfd.readouterr()
    assert "weights read back differ from those set" in out + err
    assert "us-east-1 {'A': 90} (wanted 25)" in out + err
    (event,) = dns_events(ledger, deployment)
    assert event.data["after"]["us-east-1"] == 90 and "error" in event.data


def test_all_weights_zero_leaves_dns_unchanged(route53, proxy, run_dns, ledger):
    # Route53 splits traffic evenly between records that all weigh 0: that would revive the failed region.
    zone = create_zone(route53, {"us-west-2": 100, "eu-west-1": 0, "ap-southeast-1": 0, "us-east-1": 0})

    state, deployment = run_dns(zone, dict.fromkeys(REGIONS, 0.0))

    assert state == "success"
    assert weights(route53, zone)["us-west-2"] == 100 and proxy.batches == []
    (event,) = dns_events(ledger, deployment)
    assert "no healthy region" in event.message and event.data["changed"] is False


@pytest.mark.parametrize(("percent", "expected"), [
    ({"a": 10, "b": 0, "c": 0, "d": 90}, {"a": 10, "b": 0, "c": 0, "d": 90}),
    ({"a": 100 / 3, "b": 100 / 3, "c": 100 / 3}, {"a": 34, "b": 33, "c": 33}),
    ({"a": 20 * 100 / 70, "b": 0.0, "c": 50 * 100 / 70}, {"a": 29, "b": 0, "c": 71}),
    ({"a": 99.6, "b": 0.4}, {"a": 99, "b": 1}),  # a region with traffic keeps some
    ({"a": 0.0, "b": 0.0}, {"a": 0, "b": 0}),
])
def test_percent_to_route53_weights(percent, expected):
    assert route53_weights(percent) == expected


# ------------------------------------------------------------------- restoring a failed-over region in steps

SHARES = {"us-west-2": 10, "eu-west-1": 25, "ap-southeast-1": 25, "us-east-1": 40}


def restore_options(step: int, region: str = "eu-west-1", pause: float = 0, platform: dict | None = None) -> dict:
    """Arguments of one restoration step; every region's watch reads the local platform (nothing deployed there
    unless the test deploys it)."""
    platform = platform or {"type": "local", "command": ["python", "app.py", "--port", "{port}"]}
    return {"operator": "RestoreRegionTrafficOperator", "region_to_restore": region, "percent": step,
            "targets": {r: {"platform": platform, "metrics_provider": {"provider": "local"}} for r in SHARES},
            "metrics": [{"name": "error_rate", "unit": "percent", "max": 5.0, "min": None, "query": None}],
            "pause": timedelta(seconds=pause)}


def failed_over(region: str = "eu-west-1") -> dict[str, int]:
    """The Route53 weights after a fail over of ``region``: none for it, its share on the others."""
    from airflow_deploy_provider.operators.dns import shares

    return route53_weights(shares(SHARES, {region}))


@pytest.mark.parametrize(("failed", "partial", "expected"), [
    (set(), {}, SHARES),
    ({"eu-west-1"}, {}, {"us-west-2": 13.333, "eu-west-1": 0, "ap-southeast-1": 33.333, "us-east-1": 53.333}),
    # 10% of eu-west-1's 25: 2.5; the others share 97.5 as 10:25:40
    (set(), {"eu-west-1": 0.1}, {"us-west-2": 13.0, "eu-west-1": 2.5, "ap-southeast-1": 32.5, "us-east-1": 52.0}),
    (set(), {"eu-west-1": 1.0}, SHARES),
    # the only region left takes it all, whatever the step
    ({"us-west-2", "ap-southeast-1", "us-east-1"}, {"eu-west-1": 0.1}, {"us-west-2": 0, "eu-west-1": 100.0,
                                                                        "ap-southeast-1": 0, "us-east-1": 0}),
])
def test_region_shares_with_a_region_drained_or_coming_back(failed, partial, expected):
    from airflow_deploy_provider.operators.dns import shares

    got = shares(SHARES, failed, partial)
    assert got == pytest.approx(expected, abs=1e-3) and sum(got.values()) == pytest.approx(100)


def test_restoration_steps_give_the_region_its_weight_back(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, failed_over())
    seen = []
    for step in (10, 50, 100):
        state, deployment = run_dns(zone, SHARES, **restore_options(step))
        assert state == "success"
        seen.append(weights(route53, zone))
    assert seen == [{"us-west-2": 13, "eu-west-1": 2, "ap-southeast-1": 33, "us-east-1": 52},
                    {"us-west-2": 12, "eu-west-1": 12, "ap-southeast-1": 29, "us-east-1": 47},
                    SHARES]
    assert proxy.polls == {}  # Route53 (moto) said INSYNC at once: no wait was needed
    (event,) = dns_events(ledger, deployment)
    assert event.data["after"] == SHARES and event.data["phase"] == "restore"
    # a step whose weights are already set submits nothing
    batches = len(proxy.batches)
    assert run_dns(zone, SHARES, **restore_options(100))[0] == "success" and len(proxy.batches) == batches


def test_a_bad_restoration_step_puts_the_traffic_back_and_fails(route53, proxy, run_dns, ledger):
    """The region's watch fails (nothing serves there: no data is never a pass): its weight goes back to 0, the
    others' back to what they had, and the task fails."""
    zone = create_zone(route53, failed_over())
    proxy.pending = 1  # each change is PENDING once: the step waits in the trigger twice (restore, drain back)

    state, deployment = run_dns(zone, SHARES, **restore_options(10, pause=1))

    assert state == "failed"
    assert weights(route53, zone) == failed_over()
    assert [[c["weight"] for c in batch if c["set"] == "eu-west-1"] for batch in proxy.batches] == [[2], [0]]
    phases = [e.data.get("phase") for e in dns_events(ledger, deployment) if "after" in e.data]
    assert phases == ["restore", "drain"]
    (failed,) = [e for e in ledger.events(deployment, kind="incident") if e.data.get("stage") == "restoration_failed"]
    assert "nothing serves in eu-west-1" in failed.message and "back on the other regions" in failed.message


def test_no_failed_over_region_skips_restoration(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, SHARES)
    state, _ = run_dns(zone, SHARES, **restore_options(10, region="{{ params.get('region') or '' }}"))
    assert state == "skipped" and proxy.batches == []


def test_fail_over_without_a_region_fails_and_changes_nothing(route53, proxy, run_dns, ledger):
    zone = create_zone(route53, SHARES)
    state, _ = run_dns(zone, SHARES, drain=[""], require_drain=True)
    assert state == "failed" and proxy.batches == []


def test_other_dns_provider_is_not_implemented():
    from airflow_deploy_provider.operators.dns import RegionDnsWeightOperator
    from airflow_deploy_provider.registry import NotImplementedForPlatform

    op = RegionDnsWeightOperator(task_id="shift_dns_weight", service="web", environment="production",
                                 dns={"provider": "cloudflare", "record_name": RECORD}, weights={"a": 100})
    assert op.describe() == "set GeoDNS weights: a 100%"
    with pytest.raises(NotImplementedForPlatform, match="cloudflare"):
        op.execute({})
    with pytest.raises(ValueError, match="add up to 100"):
        RegionDnsWeightOperator(task_id="x", service="web", environment="production", dns={}, weights={"a": 50})


def test_trigger_serializes_for_the_triggerer():
    from airflow_deploy_provider.triggers.dns import Route53ChangeTrigger

    trigger = Route53ChangeTrigger(change_id="/change/C1", aws_conn_id="aws_dns", deadline=1.5e9, poll_interval=5,
                                   state={"target": {"a": 100}})
    path, kwargs = trigger.serialize()
    assert path == "airflow_deploy_provider.triggers.dns.Route53ChangeTrigger"
    assert Route53ChangeTrigger(**kwargs).serialize() == (path, kwargs)
