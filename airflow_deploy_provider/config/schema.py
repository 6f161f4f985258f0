"""JSON Schema of the ``.deploy`` files, for editors (yaml-language-server, VS Code, JetBrains)."""

from __future__ import annotations

from typing import Any

from airflow_deploy_provider.config.models import EnvironmentFile, MultiRegionFile, ServiceFile

SCHEMA_ID = "https://airflow-deploy-provider.dev/schema/deploy.json"
KINDS = {"service": ServiceFile, "environment": EnvironmentFile, "multi-region": MultiRegionFile}


def json_schema(kind: str | None = None) -> dict[str, Any]:
    """Schema of one kind of file, or of any ``.deploy`` file (the kind chosen by its keys)."""
    if kind is not None:
        schema = KINDS[kind].model_json_schema(by_alias=True, mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return schema
    defs: dict[str, Any] = {}
    refs: dict[str, str] = {}
    for name, model in KINDS.items():
        sub = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        defs[model.__name__] = sub
        refs[name] = f"#/$defs/{model.__name__}"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "airflow-deploy-provider .deploy file",
        "description": "service.yaml (has 'service'), an environment file (has 'environment'), or the "
                       "multi-region file (has 'regions').",
        "if": {"required": ["service"]},
        "then": {"$ref": refs["service"]},
        "else": {
            "if": {"required": ["regions"], "not": {"required": ["strategy"]}},
            "then": {"$ref": refs["multi-region"]},
            "else": {"$ref": refs["environment"]},
        },
        "$defs": defs,
    }
