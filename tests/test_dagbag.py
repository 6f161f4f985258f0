"""The DAG files load in a real DagBag; a broken service yields one import error and hides nothing."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from tests.conftest import DAGS, SERVICES

EXPECTED_DAGS = {
    "deploy_checkout_development", "deploy_checkout_staging", "deploy_checkout_production",
    "deploy_checkout_production_us-west-2", "deploy_checkout_production_eu-west-1",
    "deploy_checkout_production_ap-southeast-1", "deploy_checkout_production_us-east-1",
    "rollback_checkout_development", "rollback_checkout_staging", "rollback_checkout_production",
    "rollback_checkout_production_us-west-2", "rollback_checkout_production_eu-west-1",
    "rollback_checkout_production_ap-southeast-1", "rollback_checkout_production_us-east-1",
    "hotfix_checkout", "migrate_checkout_contract", "repair_checkout_migrations",
    "restore_checkout_production_database",
    *(f"hotfix_{svc}_{region}" for svc in ("checkout", "payments")
      for region in ("us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1")),
    "deploy_hello_development", "deploy_hello_production", "rollback_hello_development",
    "rollback_hello_production", "hotfix_hello",
    "deploy_payments_production", "rollback_payments_production", "hotfix_payments",
    "deploy_accounts_development", "deploy_accounts_production", "rollback_accounts_development",
    "rollback_accounts_production", "hotfix_accounts", "repair_accounts_migrations", "migrate_accounts_contract",
    "restore_accounts_production_database",
    *(f"{kind}_storefront_{env}" for kind in ("deploy", "rollback") for env in ("development", "staging", "production")),
    "hotfix_storefront",
    *(f"incident_{svc}" for svc in ("checkout", "hello", "payments", "accounts", "storefront")),
    *(f"{kind}_payments_production_{region}" for kind in ("deploy", "rollback")
      for region in ("us-west-2", "eu-west-1", "ap-southeast-1", "us-east-1")),
}


def load_dagbag(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(str(folder))
    ours = [w for w in caught if "airflow_deploy_provider" in (w.filename or "")
            or "airflow_deploy_provider" in str(w.message)]
    return bag, ours


@pytest.fixture
def dag_copy(tmp_path: Path) -> Path:
    """dags/ copied, so that services can be added beside the examples."""
    target = tmp_path / "dags"
    shutil.copytree(DAGS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_example_dags_load_without_errors_or_deprecation_warnings():
    bag, ours = load_dagbag(DAGS)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED_DAGS
    assert not [w for w in ours if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in ours]
    for dag in bag.dags.values():
        assert dag.max_active_runs == 1 and dag.catchup is False
        assert dag.doc_md and "Expected duration" in dag.doc_md
        service = next(s for s in ("checkout", "hello", "payments", "accounts", "storefront") if s in dag.dag_id)
        assert service in dag.tags
        assert any(env in dag.tags for env in ("development", "staging", "production"))


def test_broken_service_gives_exactly_one_import_error_and_hides_nothing(dag_copy: Path):
    broken = dag_copy / "services" / "broken" / ".deploy"
    broken.mkdir(parents=True)
    (broken / "service.yaml").write_text("service: broken\nplatform:\n  command: [run, '{port}']\n")
    (broken / "production.yaml").write_text(
        "environment: production\nstrategy: canary\ncanary:\n  steps:\n    - weight: 50\n      pause: 5m\n"
        "    - weight: 20\n  analysis:\n    metrics: [{name: error_rate, max: 1}]\n")
    bag, _ = load_dagbag(dag_copy)
    assert set(bag.dag_ids) == EXPECTED_DAGS  # every other service still loads
    assert len(bag.import_errors) == 1
    (path, message), = bag.import_errors.items()
    assert path.endswith("deploy_config_errors.py")  # the file that holds no DAGs
    assert "services/broken/.deploy/production.yaml:7:15" in message
    assert "canary.steps[1].weight" in message and "expected more than 50" in message


def test_two_broken_services_are_listed_in_the_one_error(dag_copy: Path):
    for name in ("bad-one", "bad-two"):
        d = dag_copy / "services" / name / ".deploy"
        d.mkdir(parents=True)
        (d / "service.yaml").write_text(f"service: {name}\nplatfrom: {{}}\n")
    bag, _ = load_dagbag(dag_copy)
    assert set(bag.dag_ids) == EXPECTED_DAGS
    (message,) = bag.import_errors.values()
    assert "bad-one/.deploy/service.yaml:2:1" in message and "bad-two/.deploy/service.yaml:2:1" in message
    assert "did you mean 'platform'" in message


def test_service_roots_from_environment(monkeypatch, tmp_path: Path):
    from airflow_deploy_provider.factory import register_deploy_dags

    root = tmp_path / "repos"
    shutil.copytree(SERVICES / "hello", root / "hello")
    monkeypatch.setenv("DEPLOY_SERVICE_ROOTS", str(root))
    found = register_deploy_dags({"__file__": str(DAGS / "deploy_dags.py")})
    assert set(found) == {d for d in EXPECTED_DAGS if "hello" in d}


def test_parsing_context_builds_only_the_running_dag(monkeypatch):
    from airflow_deploy_provider.factory import register_deploy_dags

    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "deploy_checkout_staging")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "switch_traffic")
    found = register_deploy_dags({"__file__": str(DAGS / "deploy_dags.py")})
    assert set(found) == {"deploy_checkout_staging"}


def test_duplicate_service_names_are_an_error(dag_copy: Path):
    shutil.copytree(dag_copy / "services" / "hello", dag_copy / "services" / "hello-copy")
    bag, _ = load_dagbag(dag_copy)
    assert set(bag.dag_ids) == EXPECTED_DAGS
    (message,) = bag.import_errors.values()
    assert "service name 'hello' is already used" in message


def test_provider_is_registered():
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "airflow-deploy-provider" in providers
    info = providers["airflow-deploy-provider"]
    assert info.data["package-name"] == "airflow-deploy-provider"
    assert info.data["connection-types"][0]["connection-type"] == "deploy_ledger"


def test_rollout_dns_steps_get_the_settings_the_operator_reads():
    bag, _ = load_dagbag(DAGS)
    task = bag.dags["deploy_payments_production"].get_task("regional_rollout.region_1_us_west_2.shift_dns_weight")
    assert task.dns["hosted_zone_id"] == "Z0123456789ABCDEFGHIJ"
    assert task.dns["record_name"] == "api.payments.example.com"
