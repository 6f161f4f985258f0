"""The configuration reference is generated from the schema and must be current."""

from __future__ import annotations

from airflow_deploy_provider.config.models import EnvironmentFile, ServiceFile
from airflow_deploy_provider.config.reference import render
from tests.conftest import REPO


def test_configuration_reference_is_current():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), "docs/configuration.md is stale: run `make docs`"


def test_every_key_is_documented():
    text = render()
    for model, prefix in ((ServiceFile, ""), (EnvironmentFile, "")):
        for name, info in model.model_fields.items():
            assert f"| `{prefix}{info.alias}` |" in text
            assert info.description, f"{model.__name__}.{name} has no description"
    assert "| `canary.analysis.minRequests` | integer | `20` |" in text
    assert "| `healthCheck.initialDelay` | duration | `10s` |" in text
