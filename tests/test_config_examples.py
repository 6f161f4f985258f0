"""The spec's four example files load verbatim, and every key means what the spec says."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_deploy_provider.config.loader import load_service
from tests.conftest import REPO, SERVICES, write_service

SHARED_SPEC = REPO.parent / "shared" / "spec" / "deployment-workflows.md"
SPEC = REPO / "docs" / "spec" / "deployment-workflows.md"  # a copy of the product spec, kept in the repository


def spec_example(name: str) -> str:
    text = SPEC.read_text()
    match = re.search(r"```yaml\n(# \.deploy/" + re.escape(name) + r"\n.*?)```", text, re.S)
    assert match, name
    return match.group(1)


def test_spec_copy_is_current():
    if not SHARED_SPEC.exists():
        pytest.skip("the shared product spec is not beside this checkout")
    assert SPEC.read_text() == SHARED_SPEC.read_text(), "docs/spec is stale: copy the shared spec again"


@pytest.mark.parametrize("service", ["checkout", "accounts"])
def test_example_services_hold_the_spec_migration_verbatim(service):
    text = SPEC.read_text()
    match = re.search(r"```sql\n(-- V1__add_user_email_index\.sql\n.*?)```", text, re.S)
    assert match
    assert (SERVICES / service / "migrations" / "V1__add_user_email_index.sql").read_text() == match.group(1)


@pytest.mark.parametrize("name", ["dev-config.yaml", "staging-config.yaml", "production-config.yaml",
                                  "multi-region-config.yaml"])
def test_example_service_holds_the_spec_files_verbatim(name):
    assert (SERVICES / "checkout" / ".deploy" / name).read_text() == spec_example(name)


@pytest.fixture(scope="module")
def checkout():
    result = load_service(SERVICES / "checkout" / ".deploy")
    assert result.errors == []
    return result.config


def test_development_example(checkout):
    dev = checkout.environments["development"]
    assert (dev.strategy, dev.replicas, dev.auto_deploy) == ("recreate", 1, True)
    assert dev.resources.limits.cpu.value == Decimal("0.5")
    assert dev.resources.limits.memory.value == 512 * 2**20
    assert dev.health_check.path == "/health"
    assert dev.health_check.initial_delay == timedelta(seconds=10)
    assert dev.health_check.timeout == timedelta(seconds=5)
    assert dev.effective_branch == "develop"


def test_staging_example(checkout):
    staging = checkout.environments["staging"]
    assert (staging.strategy, staging.replicas) == ("bluegreen", 2)
    assert staging.resources.limits.cpu.value == Decimal(1)
    assert staging.resources.limits.memory.value == 2**30
    assert staging.traffic_switch.test_duration == timedelta(minutes=5)
    assert staging.traffic_switch.rollback_on_error is True
    assert staging.post_deployment_tests == ["integration", "smoke", "load"]


def test_production_example(checkout):
    prod = checkout.environments["production"]
    assert (prod.strategy, prod.replicas) == ("canary", 10)
    assert [(s.weight, s.pause) for s in prod.canary.steps] == [
        (5, timedelta(minutes=10)), (25, timedelta(minutes=10)), (50, timedelta(minutes=15)), (100, None)]
    analysis = prod.canary.analysis
    assert (analysis.interval, analysis.threshold) == (timedelta(minutes=1), 5)
    # error_rate is in percent (spec: "Error rate < 0.1%"), latency_p99 in milliseconds ("Latency p99 < 500ms")
    metrics = {m.name: m for m in analysis.metrics}
    assert metrics["error_rate"].max.value("percent") == 0.1
    assert metrics["latency_p99"].max.value("ms") == 500
    assert prod.health_check.failure_threshold == 3
    assert prod.auto_rollback.enabled is True
    conditions = [(c.metric, c.op, c.threshold(unit)) for c, unit in
                  zip(prod.auto_rollback.conditions, ["percent", "ms", "percent"])]
    assert conditions == [("error_rate", ">", 1.0), ("latency_p99", ">", 1000.0), ("availability", "<", 99.9)]
    assert prod.resources.requests.cpu.value == Decimal(1)
    assert prod.monitoring_duration == timedelta(minutes=30)  # spec: watch real-time metrics for 30 minutes


def test_multi_region_example(checkout):
    mr = checkout.multi_region
    assert [(r.name, r.role, r.weight, r.wait_time) for r in mr.regions] == [
        ("us-west-2", "canary", 10.0, timedelta(minutes=30)),
        ("eu-west-1", "secondary", 25.0, timedelta(minutes=15)),
        ("ap-southeast-1", "secondary", 25.0, timedelta(minutes=15)),
        ("us-east-1", "primary", 40.0, timedelta(minutes=20)),
    ]
    assert mr.failure_policy.stop_on_region_failure and mr.failure_policy.rollback_failed_region
    assert mr.environment == "production"


def test_minimal_service_file_is_a_few_lines_and_gets_defaults():
    text = (SERVICES / "hello" / ".deploy" / "service.yaml").read_text()
    assert len([line for line in text.splitlines() if line.strip() and not line.startswith("#")]) <= 5
    config = load_service(SERVICES / "hello" / ".deploy").config
    svc = config.service
    assert svc.platform.type == "local" and svc.metric_provider == "local"
    assert svc.image_repository == "hello"
    assert svc.approvals.production.enabled and [g.name for g in svc.approvals.production.groups] == [
        "tech-lead", "product"]
    assert [g.name for g in svc.approvals.staging.groups] == ["reviewers"]
    assert svc.hotfix.stability_period == timedelta(minutes=5)
    assert svc.hotfix.monitor_duration == timedelta(minutes=30)
    assert [str(c) for c in svc.rollback.conditions] == ["error_rate > 5%", "availability < 99%"]


def test_yaml_11_surprises_are_avoided(tmp_path: Path):
    service = write_service(tmp_path / "svc", {
        "service.yaml": "service: svc\nplatform:\n  command: [run, '{port}']\nmaintenanceWindow:\n"
                        "  schedule: '0 22 * * 2'\n  duration: 2h\n  timezone: UTC\n",
        "dev.yaml": "environment: development\nstrategy: recreate\nbranch: 22:00\n",
    })
    config = load_service(service / ".deploy").config
    assert config.environments["development"].branch == "22:00"  # not the sexagesimal number 1320


def test_all_errors_of_a_file_are_reported_at_once(tmp_path: Path):
    service = write_service(tmp_path / "svc", {
        "service.yaml": "service: svc\nplatform:\n  command: [run, '{port}']\n",
        "prod.yaml": "\n".join([
            "environment: production",
            "strategy: canary",
            "replicas: ten",
            "healthCheck:",
            "  path: health",
            "canary:",
            "  steps:",
            "    - weight: 50",
            "      pause: 10m",
            "    - weight: 25",
            "      pause: 10 minutes",
            "    - weight: 100",
            "  analysis:",
            "    metrics:",
            "      - name: eror_rate",
            "        max: 1",
            "autoRollback:",
            "  conditions:",
            "    - error_rate >> 1%",
        ]) + "\n",
    })
    result = load_service(service / ".deploy", display_base=service)
    got = {(e.line, e.path, e.code) for e in result.errors}
    assert got == {
        (3, "replicas", "int-parsing"),
        (5, "healthCheck.path", "url-path"),
        (10, "canary.steps[1].weight", "canary-weights-order"),
        (11, "canary.steps[1].pause", "duration-parsing"),
        (15, "canary.analysis.metrics[0].name", "metric-unknown"),
        (19, "autoRollback.conditions[0]", "condition-parsing"),
    }
    unknown = next(e for e in result.errors if e.code == "metric-unknown")
    assert "did you mean 'error_rate'" in unknown.message
    assert all(str(e).startswith(".deploy/prod.yaml:") for e in result.errors)
