"""The incident workflow's maintenance-mode steps on a real local platform (router and replica), and what they
record; the whole workflow runs in ``tests/test_incident_e2e.py``."""

from __future__ import annotations

import pytest
import requests
from airflow.sdk.exceptions import AirflowSkipException

from airflow_deploy_provider.operators.incident import MaintenanceModeOperator, stage_times
from airflow_deploy_provider.platforms.base import HealthCheckSpec, Target, WorkloadSpec
from airflow_deploy_provider.platforms.local.platform import LocalPlatform
from airflow_deploy_provider.registry import NotImplementedForPlatform
from tests.conftest import wait_ready

APP = ["python", "-m", "airflow_deploy_provider.demo.app", "--port", "{port}", "--version", "{version}"]
INCIDENT = "incident_mm/run-1"


@pytest.fixture
def served(tmp_path):
    settings = {"type": "local", "command": APP, "service_root": str(tmp_path)}
    platform = LocalPlatform(settings, Target("mm", "production"))
    platform.deploy(WorkloadSpec(version="1.0.0", image="mm:1.0.0", replicas=1, health_check=HealthCheckSpec(
        initial_delay=0.1, interval=0.2, timeout=2, failure_threshold=15)), "stable")
    wait_ready(platform, "stable", "1.0.0", timeout=30)
    yield platform
    platform.down()


def step(task_id: str, settings: dict, **kwargs) -> MaintenanceModeOperator:
    return MaintenanceModeOperator(task_id=task_id, service="mm", environment="production", deployment_id=INCIDENT,
                                   targets={"": settings}, message="Back in five minutes.", **kwargs)


def test_maintenance_on_off_and_back_on_only_for_an_incident_that_used_it(served, ledger):
    ledger.start_deployment(id=INCIDENT, service="mm", environment="production", version="1.0.0", kind="incident")
    live = served.endpoint() + "/api"
    back = step("back_into_maintenance", served.settings, enabled=True, only_if_entered=True)
    with pytest.raises(AirflowSkipException, match="did not use maintenance mode"):
        back.execute({})  # another mitigation's verification failed: nothing to put back

    result = step("enter_maintenance_mode", served.settings, enabled=True).execute({})
    assert result["targets"][""]["enabled"] is True
    page = requests.get(live, timeout=5)
    assert page.status_code == 503 and "Back in five minutes." in page.text
    step("enter_maintenance_mode", served.settings, enabled=True).execute({})  # a retry changes nothing
    assert requests.get(live, timeout=5).status_code == 503

    back.execute({})  # nobody confirmed the fix in time: the page stays (nothing changes)
    assert requests.get(live, timeout=5).status_code == 503

    step("leave_maintenance_mode", served.settings, enabled=False).execute({})
    assert requests.get(live, timeout=5).status_code == 200
    back.execute({})  # the watch after leaving failed: the page goes back on
    assert requests.get(live, timeout=5).status_code == 503

    assert [e.data["enabled"] for e in ledger.events(INCIDENT, kind="maintenance")] == [True, True, True, False, True]
    times = stage_times(ledger, INCIDENT)
    assert times["maintenance_on"] <= times["maintenance_kept"] <= times["maintenance_off"] \
        <= times["maintenance_back_on"]


def test_a_platform_without_maintenance_mode_says_why(ledger):
    ledger.start_deployment(id=INCIDENT, service="mm", environment="production", version="1.0.0", kind="incident")
    ecs = {"type": "ecs", "cluster": "shop"}  # no listener rule: nothing to answer from
    with pytest.raises(NotImplementedForPlatform, match="listenerRuleArn"):
        step("enter_maintenance_mode", ecs, enabled=True).execute({})
    assert ledger.events(INCIDENT, kind="maintenance") == []
