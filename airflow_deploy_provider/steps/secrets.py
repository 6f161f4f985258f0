"""Secrets of steps: read from Airflow connections or variables at run time and masked in every log."""

from __future__ import annotations

import json
from typing import Any

from airflow_deploy_provider.steps import StepError


def secret_value(name: str, ref: dict[str, Any]) -> str:
    """The value of one ``secrets`` entry (``{connection, field}`` or ``{variable}``), registered with Airflow's
    secrets masker so it never appears in task logs."""
    from airflow.sdk import Connection, Variable
    from airflow.sdk.log import mask_secret

    try:
        if ref.get("variable"):
            value = Variable.get(ref["variable"])
        else:
            value = connection_field(Connection.get(ref["connection"]), ref.get("field") or "password")
    except Exception as exc:  # noqa: BLE001 - a missing connection/variable is the step's error
        source = f"variable {ref.get('variable')!r}" if ref.get("variable") else f"connection {ref.get('connection')!r}"
        raise StepError(f"secret {name}: cannot read {source}: {type(exc).__name__}") from None
    if value is None or value == "":
        raise StepError(f"secret {name}: {ref.get('connection') or ref.get('variable')} has no "
                        f"{ref.get('field') or 'value'}")
    value = str(value)
    mask_secret(value)
    return value


def connection_field(conn: Any, field: str) -> Any:
    if field == "uri":
        return conn.get_uri()
    if field == "extra":
        return conn.extra
    if field.startswith("extra."):
        extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
        return extra.get(field.split(".", 1)[1])
    return getattr(conn, field)


def secret_env(secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: secret_value(name, ref) for name, ref in (secrets or {}).items()}
