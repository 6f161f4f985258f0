"""Infrastructure, monitoring set-up and documentation steps, run for real: Terraform on a configuration of
built-in resources (offline), Route53 on a moto server, HTTP requests to a local server through Airflow
connections, git history of a repository made in the test, Slack through the capture server."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_deploy_provider.config.loader import load_service
from airflow_deploy_provider.platforms.base import RolloutStatus
from airflow_deploy_provider.steps import StepContext, StepError
from airflow_deploy_provider.steps.defaults import resolve_runner
from tests.aws import aws_connection, moto_server  # noqa: F401
from tests.conftest import DATA, write_service

LOCAL = {"type": "local", "command": ["python", "app.py", "--port", "{port}"]}


def context(root: Path, step: str, *, environment: str = "staging", version: str = "1.0.0", commit: str = "",
            runner: dict[str, Any] | None = None, platform: dict[str, Any] | None = None, **kwargs: Any) -> StepContext:
    """A step's context as the operator builds it: the declared entry resolved to its runner."""
    runner = resolve_runner(step, runner or {}, (platform or LOCAL)["type"])
    assert runner is not None
    reports = root / "reports" / environment / version / step
    reports.mkdir(parents=True, exist_ok=True)
    defaults = {"region": None, "image": f"registry.example.com/checkout:{version}", "service_root": root,
                "deployment_id": f"deploy_checkout_{environment}/run-{version}"}
    defaults.update(kwargs)
    if defaults.get("ledger") is not None:  # events need their deployment
        defaults["ledger"].start_deployment(id=defaults["deployment_id"], service="checkout", environment=environment,
                                            version=version, commit_sha=commit or None)
    return StepContext(step=step, service="checkout", environment=environment, version=version, commit=commit,
                       work_dir=root / (runner.get("working_dir") or ""), reports_dir=reports, runner=runner,
                       platform=platform or LOCAL, **defaults)


# ------------------------------------------------------------------------------------------------ Terraform

TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="no `terraform` binary on PATH (no package registry here ships it; install Terraform "
                              "to run the terraform step's tests)")


@pytest.fixture
def infra(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The service folder with tests/data/terraform as ``infra``, and the step env that keeps Terraform offline
    and its data in the test's folder."""
    root = tmp_path / "checkout"
    shutil.copytree(DATA / "terraform", root / "infra")
    cli = tmp_path / "terraformrc"
    (tmp_path / "plugins").mkdir()
    cli.write_text(f'plugin_cache_dir = "{tmp_path / "plugins"}"\ndisable_checkpoint = true\n')
    env = {"TF_DATA_DIR": str(tmp_path / "tf-data"), "TF_CLI_CONFIG_FILE": str(cli)}
    return root, env


def state(root: Path, workspace: str) -> dict[str, Any]:
    return json.loads((root / "infra" / "terraform.tfstate.d" / workspace / "terraform.tfstate").read_text())


@needs_terraform
def test_terraform_plans_applies_and_skips_an_apply_without_changes(infra):
    from airflow_deploy_provider.steps.terraform import plan_and_apply

    root, env = infra
    first = plan_and_apply(context(root, "terraform", runner={"env": env}))
    assert first.ok and first.changed is True
    assert first.summary.startswith("workspace staging: 1 to add, 0 to change, 0 to destroy; applied; ")
    assert "nothing deployed yet" in first.summary  # the stability check found no running version
    assert [(f.kind, f.id, f.title) for f in first.findings] == [("change", "terraform_data.release", "create")]
    applied = state(root, "staging")
    assert applied["outputs"]["release"]["value"] == "checkout/staging/1.0.0"
    reports = Path(first.artifacts["plan"]).parent
    assert "terraform_data.release will be created" in (reports / "plan.txt").read_text()
    assert (reports / "apply.txt").is_file() and not (reports / "tfplan").exists()  # the plan file holds values

    # A retry of the same version plans no change and does not apply: the state is not written again.
    again = plan_and_apply(context(root, "terraform", runner={"env": env}, deployment_id="retry"))
    assert again.ok and again.changed is False and again.findings == []
    assert again.summary == "workspace staging: no changes; apply skipped"
    assert again.data["applied"] is False and "apply" not in again.artifacts
    assert state(root, "staging")["serial"] == applied["serial"]

    # The next version changes the resource in place.
    newer = plan_and_apply(context(root, "terraform", version="1.1.0", runner={"env": env}))
    assert newer.changed is True and "0 to add, 1 to change, 0 to destroy; applied" in newer.summary
    assert [(f.id, f.title, f.severity) for f in newer.findings] == [("terraform_data.release", "update", "MEDIUM")]
    assert state(root, "staging")["outputs"]["release"]["value"] == "checkout/staging/1.1.0"
    assert state(root, "staging")["serial"] > applied["serial"]

    # Production has a workspace (and state) of its own.
    prod = plan_and_apply(context(root, "terraform", environment="production", runner={"env": env}))
    assert prod.changed is True and prod.data["workspace"] == "production"
    assert state(root, "production")["outputs"]["release"]["value"] == "checkout/production/1.0.0"
    assert state(root, "staging")["outputs"]["release"]["value"] == "checkout/staging/1.1.0"


@needs_terraform
def test_terraform_errors_name_the_command_and_the_cause(infra):
    from airflow_deploy_provider.steps.terraform import plan_and_apply

    root, env = infra
    (root / "infra" / "main.tf").write_text('resource "terraform_data" "x" {\n  input = var.missing\n}\n')
    with pytest.raises(StepError, match=r"terraform plan failed: .*Reference to undeclared input variable"):
        plan_and_apply(context(root, "terraform", runner={"env": env}))
    with pytest.raises(StepError, match="is not a folder"):
        plan_and_apply(context(root, "terraform", runner={"env": env, "working_dir": "nowhere"}))


def test_terraform_missing_binary_is_a_clear_error(infra, monkeypatch):
    from airflow_deploy_provider.steps.terraform import plan_and_apply

    root, env = infra
    monkeypatch.setenv("PATH", str(root))  # no terraform here
    with pytest.raises(StepError, match="terraform not found on the worker's PATH"):
        plan_and_apply(context(root, "terraform", runner={"env": env}))


def test_plan_report_parser():
    from airflow_deploy_provider.steps.reports import parse_report
    from airflow_deploy_provider.steps.terraform import plan_counts

    plan = {"format_version": "1.2", "resource_changes": [
        {"address": "aws_lb.main", "change": {"actions": ["no-op"]}},
        {"address": "data.aws_vpc.this", "change": {"actions": ["read"]}},
        {"address": "aws_security_group.app", "change": {"actions": ["update"]}},
        {"address": "aws_db_instance.main", "change": {"actions": ["delete", "create"]}},
        {"address": "module.dns.aws_route53_record.a", "module_address": "module.dns",
         "change": {"actions": ["create"]}},
        {"address": "aws_s3_bucket.old", "change": {"actions": ["delete"]}}]}
    findings = parse_report("terraform-plan", json.dumps(plan))
    assert [(f.id, f.title, f.severity) for f in findings] == [
        ("aws_security_group.app", "update", "MEDIUM"), ("aws_db_instance.main", "replace", "HIGH"),
        ("module.dns.aws_route53_record.a", "create", "LOW"), ("aws_s3_bucket.old", "delete", "HIGH")]
    assert plan_counts(findings) == {"add": 2, "change": 1, "destroy": 2}
    with pytest.raises(StepError, match="terraform-plan report could not be read|not the JSON"):
        parse_report("terraform-plan", '{"resource_changes": []}')


class FakePlatform:
    """Answers rollout_status from a list of observations (the last one repeats)."""

    def __init__(self, *observations: RolloutStatus) -> None:
        self.observations = list(observations)

    def rollout_status(self, role: str) -> RolloutStatus:
        return self.observations.pop(0) if len(self.observations) > 1 else self.observations[0]


def test_stability_wait_after_an_apply(tmp_path):
    import time

    from airflow_deploy_provider.steps.terraform import wait_for_stability

    ctx = context(tmp_path, "terraform")
    far = time.monotonic() + 60
    rolling = RolloutStatus(role="stable", version="1.0.0", desired=3, ready=2)
    healthy = RolloutStatus(role="stable", version="1.0.0", desired=3, ready=3, done=True)
    assert wait_for_stability(ctx, far, FakePlatform(rolling, rolling, healthy), poll=0.01) == \
        "stable 1.0.0 healthy (3/3 ready)"
    failing = RolloutStatus(role="stable", version="1.0.0", desired=3, ready=1, failed=True, reason="CrashLoopBackOff",
                            message="replica 2 exited")
    with pytest.raises(StepError, match="stable role \\(1.0.0\\) is failing: CrashLoopBackOff replica 2 exited"):
        wait_for_stability(ctx, far, FakePlatform(rolling, failing), poll=0.01)
    with pytest.raises(StepError, match="was not healthy within"):
        wait_for_stability(ctx, time.monotonic() + 0.05, FakePlatform(rolling), poll=0.02)
    none = RolloutStatus(role="stable", version=None, desired=0, ready=0, failed=True, reason="NotDeployed")
    assert wait_for_stability(ctx, far, FakePlatform(none)) == "nothing deployed yet: no running version to wait for"


# ------------------------------------------------------------------------------------------------------ DNS


@pytest.fixture
def zone(moto_server, monkeypatch):  # noqa: F811 - the fixture imported from tests.aws
    moto_server.reset()
    aws_connection(monkeypatch, moto_server, "aws_dns")
    client = moto_server.client("route53")
    zone_id = client.create_hosted_zone(Name="example.com", CallerReference="test")["HostedZone"]["Id"]
    return client, zone_id


def records(client, zone_id: str) -> dict[tuple[str, str], tuple[list[str], int]]:
    out = {}
    for r in client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]:
        if r["Type"] in ("A", "AAAA", "CNAME"):
            out[(r["Name"], r["Type"])] = ([v["Value"] for v in r.get("ResourceRecords", [])], r.get("TTL"))
    return out


def test_dns_record_is_upserted_once_and_follows_its_target(zone, tmp_path):
    from airflow_deploy_provider.steps.dns import update_records

    client, zone_id = zone
    dns = {"hosted_zone_id": zone_id, "connection": "aws_dns", "target": "lb-1.elb.example.net"}
    first = update_records(context(tmp_path, "update-dns", runner={"dns": dns}))
    assert first.changed is True and first.data["change_status"] == "INSYNC"
    assert first.summary == "CNAME checkout-staging.example.com. -> lb-1.elb.example.net (new record); INSYNC"
    assert records(client, zone_id) == {("checkout-staging.example.com.", "CNAME"): (["lb-1.elb.example.net"], 60)}

    again = update_records(context(tmp_path, "update-dns", runner={"dns": dns}))
    assert again.changed is False and "already points at lb-1.elb.example.net; nothing submitted" in again.summary

    moved = update_records(context(tmp_path, "update-dns", runner={"dns": {**dns, "target": "lb-2.elb.example.net",
                                                                            "ttl": 300}}))
    assert moved.changed is True and "(was lb-1.elb.example.net)" in moved.summary
    assert records(client, zone_id) == {("checkout-staging.example.com.", "CNAME"): (["lb-2.elb.example.net"], 300)}

    # production's record is the service's own name; an IP address makes an A record
    prod = update_records(context(tmp_path, "update-dns", environment="production",
                                  runner={"dns": {**dns, "target": "203.0.113.10"}}))
    assert prod.data["record"] == "checkout.example.com." and prod.data["type"] == "A"
    assert records(client, zone_id)[("checkout.example.com.", "A")] == (["203.0.113.10"], 60)


def test_dns_name_from_the_config_and_target_from_the_platform(zone, tmp_path):
    from airflow_deploy_provider.steps.dns import update_records

    client, zone_id = zone
    platform = {"type": "kubernetes", "endpoints": {"live": "https://shop-ingress.lb.example.net:8443/"}}
    dns = {"hosted_zone_id": zone_id, "connection": "aws_dns", "record_name": "{service}.{environment}.example.com"}
    result = update_records(context(tmp_path, "update-dns", runner={"dns": dns}, platform=platform))
    assert result.data["record"] == "checkout.staging.example.com."
    assert records(client, zone_id)[("checkout.staging.example.com.", "CNAME")] == (["shop-ingress.lb.example.net"], 60)
    with pytest.raises(StepError, match="is not in the hosted zone example.com."):
        update_records(context(tmp_path, "update-dns", runner={"dns": {**dns, "record_name": "checkout.other.org"}},
                               platform=platform))


def test_dns_refuses_records_it_must_not_touch(zone, tmp_path):
    from airflow_deploy_provider.steps.dns import update_records

    client, zone_id = zone
    weighted = [{"Action": "CREATE", "ResourceRecordSet": {
        "Name": "checkout-staging.example.com", "Type": "A", "SetIdentifier": region, "Weight": 50, "TTL": 60,
        "ResourceRecords": [{"Value": ip}]}} for region, ip in (("us-east-1", "198.51.100.1"),
                                                               ("eu-west-1", "198.51.100.2"))]
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": weighted})
    dns = {"hosted_zone_id": zone_id, "connection": "aws_dns", "target": "lb-1.elb.example.net"}
    with pytest.raises(StepError, match="has weighted records \\(us-east-1, eu-west-1\\), which the multi-region"):
        update_records(context(tmp_path, "update-dns", runner={"dns": dns}))
    plain = {"Name": "checkout.example.com", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "198.51.100.9"}]}
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": plain}]})
    with pytest.raises(StepError, match="already has a A record, which a CNAME record cannot sit beside"):
        update_records(context(tmp_path, "update-dns", environment="production", runner={"dns": dns}))
    with pytest.raises(StepError, match="no address to point the record at: .*set the step's dns.target"):
        update_records(context(tmp_path, "update-dns", runner={"dns": {**dns, "target": None}}))


# ----------------------------------------------------------------------------------------------------- HTTP


class RecordingServer:
    """An HTTP API stand-in (Grafana, a Mimir ruler) recording method, path, headers and body of each request."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = status
        recording = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                recording.requests.append({"method": self.command, "path": self.path, "body": body,
                                           "headers": {k.lower(): v for k, v in self.headers.items()}})
                answer = b'{"status": "success"}' if recording.status < 300 else b'{"message": "Permission denied"}'
                self.send_response(recording.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = do_PATCH = do_POST  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(monkeypatch):
    """Grafana (a service-account token in the connection's extra, sent as a header) and a Mimir ruler (basic
    auth from the connection's login and password), both on one recording server."""
    server = RecordingServer()
    monkeypatch.setenv("AIRFLOW_CONN_GRAFANA", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "http",
        "extra": {"Authorization": "Bearer glsa_test_token"}}))
    monkeypatch.setenv("AIRFLOW_CONN_MIMIR", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "http", "login": "tenant-1",
        "password": "mimir-secret"}))
    yield server
    server.close()


DASHBOARD = """{"dashboard": {"uid": "{service}-release", "title": "{service} ({environment})",
  "tags": ["deploy"], "panels": [{"type": "stat", "title": "version", "targets": [{"expr":
  "sum(up{service=\\"{service}\\", version=\\"{version}\\"})"}]}]}, "overwrite": true}
"""
RULES = """name: {service}-release
rules:
  - alert: CheckoutErrorRate
    expr: sum(rate(http_requests_total{service="{service}", code=~"5.."}[5m])) > 0.05
    labels: {severity: page, version: "{version}"}
"""


def test_monitoring_requests_carry_the_release_and_the_connection_credentials(api, tmp_path, ledger):
    from airflow_deploy_provider.steps.http import run_requests

    (tmp_path / "monitoring").mkdir()
    (tmp_path / "monitoring" / "dashboard.json").write_text(DASHBOARD)
    (tmp_path / "monitoring" / "rules.yaml").write_text(RULES)
    runner = {"http": [
        {"connection": "grafana", "method": "POST", "path": "/api/dashboards/db", "body": "monitoring/dashboard.json",
         "content_type": "application/json"},
        {"connection": "mimir", "method": "POST", "path": "/prometheus/config/v1/rules/{service}",
         "body": "monitoring/rules.yaml", "content_type": "application/yaml"},
        {"connection": "grafana", "method": "PUT", "path": "/api/folders/{service}-{environment}",
         "content_type": "application/json"}]}
    ctx = context(tmp_path, "setup-dashboards", version="2.4.0", commit="0123456789abcdef", runner=runner,
                  ledger=ledger)
    result = run_requests(ctx, ctx.runner)
    assert result.ok and result.summary == "3 request(s) sent: 200, 200, 200"
    dash, rules, folder = api.requests
    assert (dash["method"], dash["path"]) == ("POST", "/api/dashboards/db")
    assert dash["headers"]["authorization"] == "Bearer glsa_test_token"
    assert dash["headers"]["content-type"] == "application/json"
    body = json.loads(dash["body"])  # the braces of the JSON and of the PromQL label matchers are left alone
    assert body["overwrite"] is True and body["dashboard"]["title"] == "checkout (staging)"
    assert body["dashboard"]["panels"][0]["targets"][0]["expr"] == 'sum(up{service="checkout", version="2.4.0"})'
    assert (rules["method"], rules["path"]) == ("POST", "/prometheus/config/v1/rules/checkout")
    assert rules["headers"]["authorization"] == "Basic dGVuYW50LTE6bWltaXItc2VjcmV0"  # tenant-1:mimir-secret
    assert rules["headers"]["content-type"] == "application/yaml"
    assert 'version: "2.4.0"' in rules["body"] and '{service="checkout", code=~"5.."}' in rules["body"]
    # without a body file the request describes the release
    assert (folder["method"], folder["path"]) == ("PUT", "/api/folders/checkout-staging")
    release = json.loads(folder["body"])
    assert {k: release[k] for k in ("service", "environment", "version", "image", "commit", "deployment_id")} == {
        "service": "checkout", "environment": "staging", "version": "2.4.0",
        "image": "registry.example.com/checkout:2.4.0", "commit": "0123456789abcdef",
        "deployment_id": "deploy_checkout_staging/run-2.4.0"}
    assert [(f.kind, f.id, f.title) for f in result.findings] == [
        ("request", "POST grafana/api/dashboards/db", "HTTP 200"),
        ("request", "POST mimir/prometheus/config/v1/rules/checkout", "HTTP 200"),
        ("request", "PUT grafana/api/folders/checkout-staging", "HTTP 200")]

    # Dashboards and rules overwrite by name: a retry sends them again and converges.
    run_requests(ctx, ctx.runner)
    assert len(api.requests) == 6


def test_an_annotation_is_posted_once_per_deployment(api, tmp_path, ledger):
    from airflow_deploy_provider.steps.http import run_requests

    (tmp_path / "annotation.json").write_text('{"tags": ["deploy", "{service}", "{environment}"], '
                                              '"text": "{service} {version} ({deployment_id})"}')
    runner = {"http": [{"connection": "grafana", "path": "/api/annotations", "body": "annotation.json"}]}
    ctx = context(tmp_path, "annotate-deployment", runner=runner, ledger=ledger)
    assert run_requests(ctx, ctx.runner).summary == "1 request(s) sent: 200"
    assert json.loads(api.requests[0]["body"]) == {
        "tags": ["deploy", "checkout", "staging"], "text": "checkout 1.0.0 (deploy_checkout_staging/run-1.0.0)"}
    retry = run_requests(ctx, ctx.runner)
    assert retry.summary == "0 request(s) sent; 1 already sent for this deployment" and retry.changed is False
    assert len(api.requests) == 1
    # another deployment annotates again
    other = context(tmp_path, "annotate-deployment", runner=runner, ledger=ledger, deployment_id="next")
    run_requests(other, other.runner)
    assert len(api.requests) == 2


def test_a_refused_request_names_the_request_and_status_and_not_the_credentials(api, tmp_path):
    from airflow_deploy_provider.steps.http import run_requests

    api.status = 403
    runner = {"http": [{"connection": "grafana", "path": "/api/dashboards/db"},
                       {"connection": "grafana", "path": "/api/never-sent"}]}
    ctx = context(tmp_path, "setup-dashboards", runner=runner)
    with pytest.raises(StepError) as failed:
        run_requests(ctx, ctx.runner)
    assert str(failed.value) == 'POST grafana/api/dashboards/db: HTTP 403: {"message": "Permission denied"}'
    assert "glsa_test_token" not in str(failed.value) and len(api.requests) == 1
    with pytest.raises(StepError, match="body file 'missing.json' of POST /x not found"):
        run_requests(ctx, {"http": [{"connection": "grafana", "path": "/x", "body": "missing.json"}]})
    with pytest.raises(StepError, match="POST nobody/x: AirflowNotFoundException"):
        run_requests(ctx, {"http": [{"connection": "nobody", "path": "/x"}]})


# ------------------------------------------------------------------------------------------- documentation


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.com",
                               "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.com",
                               "HOME": str(repo), "PATH": "/usr/bin:/bin:/usr/local/bin"}).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


SERVICE_YAML = "service: checkout\nplatform:\n  command: [python, app.py, --port, '{port}']\n"


@pytest.fixture
def history(tmp_path: Path) -> dict[str, Any]:
    """A repository holding two services; checkout's 1.1.0 has features, fixes, a breaking change, other
    commits and a change of its .deploy files since 1.0.0."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    svc = "services/checkout"
    v1 = commit(repo, "feat: first release", {
        f"{svc}/.deploy/service.yaml": SERVICE_YAML,
        f"{svc}/.deploy/staging.yaml": "environment: staging\nstrategy: bluegreen\nreplicas: 2\n"})
    git(repo, "tag", "v1.0.0")
    commit(repo, "feat(cart): add coupon codes", {f"{svc}/cart.py": "coupons = True\n"})
    commit(repo, "fix: round totals to cents", {f"{svc}/totals.py": "round = 2\n"})
    commit(repo, "feat: payments team thing", {"services/payments/app.py": "x = 1\n"})  # another service
    commit(repo, "docs: explain refunds", {f"{svc}/README.md": "refunds\n"})
    commit(repo, "refactor!: drop the v1 API\n\nBREAKING CHANGE: /v1 is gone", {f"{svc}/api.py": "v = 2\n"})
    v11 = commit(repo, "chore(deploy): three replicas in staging", {
        f"{svc}/.deploy/staging.yaml": "environment: staging\nstrategy: bluegreen\nreplicas: 3\n",
        f"{svc}/.deploy/production.yaml": "environment: production\nstrategy: rolling\n"})
    git(repo, "tag", "v1.1.0")
    return {"repo": repo, "root": repo / svc, "v1": v1, "v11": v11}


NOTIFY = {"slack_conn_id": "slack_test", "channel": "#deployments", "events": ["start"]}


def test_release_notes_group_the_commits_of_the_release(history, ledger, slack):
    from airflow_deploy_provider.steps.documentation import release_notes

    ctx = context(history["root"], "release-notes", version="1.1.0", commit=history["v11"], previous_version="1.0.0",
                  previous_commit=history["v1"], notification=NOTIFY, ledger=ledger)
    result = release_notes(ctx)
    assert result.ok and result.summary.startswith("5 commit(s): 1 feature(s), 1 fix(es), 3 other; posted to "
                                                   "#deployments")
    path = Path(result.artifacts["release_notes"])
    assert path.name == "release-notes-1.1.0.md" and path.parent == ctx.reports_dir
    short = {name: git(history["repo"], "rev-parse", "--short=7", name) for name in ("v1.0.0", "HEAD")}
    sha = {s: git(history["repo"], "log", "--format=%h", "--abbrev=7", "-n1", f"--grep={s}") for s in
           ("coupon", "round totals", "refunds", "drop the v1", "three replicas")}
    assert path.read_text() == (
        "# checkout 1.1.0\n\n"
        f"Commits since 1.0.0 ({short['v1.0.0']}) up to {short['HEAD']}.\n\n"
        "## Breaking changes\n\n"
        f"- refactor!: drop the v1 API ({sha['drop the v1']}, Alice)\n\n"
        "## Features\n\n"
        f"- **cart:** add coupon codes ({sha['coupon']}, Alice)\n\n"
        "## Fixes\n\n"
        f"- round totals to cents ({sha['round totals']}, Alice)\n\n"
        "## Other changes\n\n"
        f"- chore(deploy): three replicas in staging ({sha['three replicas']}, Alice)\n"
        f"- refactor!: drop the v1 API ({sha['drop the v1']}, Alice)\n"
        f"- docs: explain refunds ({sha['refunds']}, Alice)\n")
    assert "payments team" not in path.read_text()  # another service's commit
    (message,) = slack.requests
    assert message["json"]["text"] == ("*Release notes: checkout 1.1.0* (staging): 5 commit(s): 1 feature(s), "
                                       "1 fix(es), 3 other")
    assert f"- **cart:** add coupon codes ({sha['coupon']}, Alice)" in json.dumps(message["json"]["blocks"])

    # a retry writes the same notes and does not post again
    again = release_notes(ctx)
    assert again.summary.endswith("already posted by an earlier try") and len(slack.requests) == 1


def test_release_notes_without_the_previous_commit_list_the_last_commits(history):
    from airflow_deploy_provider.steps.documentation import release_notes

    result = release_notes(context(history["root"], "release-notes", version="1.1.0", commit=history["v11"]))
    text = Path(result.artifacts["release_notes"]).read_text()
    assert f"The last 6 commits up to {history['v11'][:7]}: the previous version's commit is unknown." in text
    assert "first release" in text and result.summary.endswith("not posted (no notifications.slack)")
    with pytest.raises(StepError, match="the release has no commit sha"):
        release_notes(context(history["root"], "release-notes"))
    with pytest.raises(StepError, match="commit 0000000 is not in the repository"):
        release_notes(context(history["root"], "release-notes", commit="0000000"))
    outside = history["repo"].parent / "not-a-repo"
    outside.mkdir()
    with pytest.raises(StepError, match="is not in a git repository"):
        release_notes(context(outside, "release-notes", commit=history["v11"]))


EXPECTED_DIFF = """\
--- /dev/null
+++ b/.deploy/production.yaml (1.1.0)
@@ -0,0 +1,2 @@
+environment: production
+strategy: rolling
--- a/.deploy/staging.yaml (1.0.0)
+++ b/.deploy/staging.yaml (1.1.0)
@@ -1,3 +1,3 @@
 environment: staging
 strategy: bluegreen
-replicas: 2
+replicas: 3
"""


def test_config_changes_diff_the_previous_versions_snapshot(history, ledger, slack):
    from airflow_deploy_provider.steps.documentation import config_changes

    repo, root = history["repo"], history["root"]
    git(repo, "checkout", "-q", "v1.0.0")
    first = context(root, "document-config-changes", version="1.0.0", commit=history["v1"], ledger=ledger,
                    notification=NOTIFY, deployment_id="dep-1")
    ledger.start_deployment(id="dep-1", service="checkout", environment="staging", version="1.0.0",
                            commit_sha=history["v1"])
    result = config_changes(first)
    assert result.summary == "nothing to compare with (no previous version); snapshot kept" and not slack.requests
    (snapshot,) = ledger.events("dep-1", kind="config")
    assert snapshot.data["files"]["staging.yaml"].endswith("replicas: 2\n")

    git(repo, "checkout", "-q", "v1.1.0")
    ledger.start_deployment(id="dep-2", service="checkout", environment="staging", version="1.1.0")
    second = context(root, "document-config-changes", version="1.1.0", ledger=ledger, notification=NOTIFY,
                     previous_version="1.0.0", deployment_id="dep-2")
    result = config_changes(second)
    assert result.summary == ("2 file(s) changed since 1.0.0: production.yaml (new file): +2 -0, staging.yaml: +1 -1; "
                              "posted to #deployments; snapshot kept")
    assert result.data["compared_with"] == "the snapshot recorded when 1.0.0 was deployed to staging"
    path = Path(result.artifacts["config_changes"])
    assert path.name == "config-changes-1.1.0.diff" and path.read_text() == EXPECTED_DIFF
    (message,) = slack.requests
    assert message["json"]["text"].startswith("*Configuration changes: checkout 1.1.0* (staging): 2 file(s) changed")
    assert "-replicas: 2\\n+replicas: 3" in json.dumps(message["json"]["blocks"])
    config_changes(second)  # a retry keeps one snapshot and posts once
    assert len(ledger.events("dep-2", kind="config")) == 1 and len(slack.requests) == 1


def test_config_changes_fall_back_to_git_for_a_version_without_snapshot(history, ledger):
    from airflow_deploy_provider.steps.documentation import config_changes

    ctx = context(history["root"], "document-config-changes", version="1.1.0", ledger=ledger,
                  previous_version="1.0.0", previous_commit=history["v1"])
    result = config_changes(ctx)
    assert result.data["compared_with"] == f"git at 1.0.0's commit {history['v1'][:7]}"
    assert Path(result.artifacts["config_changes"]).read_text() == EXPECTED_DIFF
    unknown = context(history["root"], "document-config-changes", version="1.1.0", previous_version="0.9.0",
                      deployment_id="other")
    assert config_changes(unknown).summary == ("nothing to compare with (no snapshot of 0.9.0 and its commit is "
                                               "unknown); no ledger: snapshot not kept")


def test_the_checklist_finds_the_notes_the_step_wrote(history, ledger, tmp_path, monkeypatch):
    """Through the operator: the step event names the notes, which production's checklist item accepts."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_deploy_provider.operators.steps import PipelineStepOperator
    from airflow_deploy_provider.operators.validation import ChecklistItemOperator

    monkeypatch.setenv("DEPLOY_REPORTS_DIR", str(tmp_path / "reports"))
    ledger.start_deployment(id="dep-1", service="checkout", environment="staging", version="1.0.0",
                            commit_sha=history["v1"])
    ledger.start_deployment(id="dep-2", service="checkout", environment="staging", version="1.1.0",
                            commit_sha=history["v11"])
    step = PipelineStepOperator(task_id="update_release_notes", service="checkout", environment="staging",
                                deployment_id="dep-2", step="release-notes",
                                runner=resolve_runner("release-notes", {}, "local"), platform=LOCAL,
                                version="1.1.0", commit=history["v11"], previous_version="1.0.0",
                                service_root=str(history["root"]))
    assert step.execute({})["summary"].startswith("5 commit(s)")
    (event,) = ledger.events("dep-2", kind="step")
    assert event.data["artifacts"]["release_notes"].endswith("staging/1.1.0/release-notes/release-notes-1.1.0.md")

    item = ChecklistItemOperator(task_id="release_notes_prepared", service="checkout", environment="production",
                                 item="release_notes", version="1.1.0", settings={"service_root": str(tmp_path)})
    assert item._release_notes({}).startswith("release notes generated by the release-notes step: ")
    item.version = "1.2.0"
    with pytest.raises(AirflowFailException, match="no release notes for 1.2.0"):
        item._release_notes({})


# ---------------------------------------------------------------------------------------- config and DAGs


STEPS_SERVICE = SERVICE_YAML + """\
notifications:
  slack: {connection: slack_test}
approvals:
  staging: {enabled: false}
  production: {enabled: false}
steps:
  terraform: {}
  update-dns:
    dns: {hostedZoneId: Z123, connection: aws_dns, target: lb.example.net}
  configure-alerts:
    http: [{connection: mimir, path: "/prometheus/config/v1/rules/{service}", body: monitoring/rules.yaml,
            contentType: application/yaml}]
  setup-dashboards:
    http: [{connection: grafana, path: /api/dashboards/db, body: monitoring/dashboard.json}]
  annotate-deployment:
    http: [{connection: grafana, path: /api/annotations}]
  release-notes: {}
  document-config-changes: {}
"""


def test_staging_and_production_dags_run_the_steps_in_their_phases(tmp_path):
    from airflow_deploy_provider.factory import build_service_dags
    from tests.test_workflow_graphs import ancestors

    root = write_service(tmp_path / "checkout", {
        "service.yaml": STEPS_SERVICE,
        "staging.yaml": "environment: staging\nstrategy: bluegreen\nreplicas: 2\n",
        "production.yaml": "environment: production\nstrategy: rolling\nreplicas: 2\nmonitoring: {duration: 1m}\n"})
    shutil.copytree(DATA / "terraform", root / "infra")
    result = load_service(root / ".deploy")
    assert result.errors == []
    dags = build_service_dags(result.config)

    staging = dags["deploy_checkout_staging"]
    terraform = staging.task_dict["infrastructure_update.apply_terraform"]
    assert terraform.runner["working_dir"] == "infra" and terraform.mode == "builtin"
    dns = staging.task_dict["infrastructure_update.update_dns"]
    assert dns.runner["dns"] == {"provider": "route53", "connection": "aws_dns", "hosted_zone_id": "Z123",
                                 "target": "lb.example.net", "ttl": 60}
    assert "infrastructure_update.apply_terraform" in ancestors(staging, "infrastructure_update.update_dns")
    assert "infrastructure_update.update_dns" in ancestors(staging, "blue_green_deployment.deploy_green")
    assert {"monitoring_setup.configure_alerts", "monitoring_setup.setup_dashboards",
            "monitoring_setup.annotate_deployment"} <= set(staging.task_dict)
    notes = staging.task_dict["notification_and_documentation.update_release_notes"]
    assert notes.notification["slack_conn_id"] == "slack_test"
    assert "monitoring_setup.annotate_deployment" in ancestors(
        staging, "notification_and_documentation.document_configuration_changes")

    production = dags["deploy_checkout_production"]
    # alert rules, dashboards and the annotation are set up after the start marker, before the rollout
    for step in ("configure_alerts", "setup_dashboards", "annotate_deployment"):
        task = f"pre_deployment_actions.{step}"
        assert "pre_deployment_actions.set_deployment_start_marker" in ancestors(production, task)
        assert task in ancestors(production, "rolling_deployment.deploy_version")
    # a failed set-up request never reaches the watch's restore of the previous version
    restore = production.task_dict["monitoring_and_alerting.restore_previous_version"]
    assert restore.upstream_task_ids == {"monitoring_and_alerting.watch_metrics"}
    assert "post_deployment_tasks.document_configuration_changes" in production.task_dict
    assert "infrastructure_update.apply_terraform" not in production.task_dict  # Terraform runs in staging

