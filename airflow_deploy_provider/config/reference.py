"""Writes ``docs/configuration.md`` from the schema: every key with its type, default and meaning.

Run ``python -m airflow_deploy_provider.config.reference > docs/configuration.md`` (``make docs``); a test
checks the committed file is current.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from airflow_deploy_provider.config.models import (
    COMMAND_PLACEHOLDERS,
    STEP_NAMES,
    EnvironmentFile,
    MultiRegionFile,
    ServiceFile,
)
from airflow_deploy_provider.config.types import (
    BUILTIN_METRICS,
    Condition,
    Quantity,
    Threshold,
    format_duration,
)

INTRO = """# Configuration reference

A service keeps its deployment configuration in a `.deploy/` folder beside its code:

```
checkout/
  .deploy/
    service.yaml                # the service: name, platform, metrics, notifications, approvals, ...
    dev-config.yaml             # one file per environment (any name; `environment:` says which)
    staging-config.yaml
    production-config.yaml
    multi-region-config.yaml    # optional: the production rollout across regions
  migrations/                   # optional: V<n>__*.sql / U<n>__*.sql
```

Files are YAML. Keys are camelCase and unknown keys are errors (with a suggestion for a near miss). Every
error names `file:line:column`, the field path and what is expected, and all errors of a file are reported
at once; check files with `airflow-deploy validate PATH` (exit status 1 on errors), and let your editor
check them as you type with the JSON Schema from `airflow-deploy schema`.

## Value types

| type | written as | notes |
|---|---|---|
| duration | `30s`, `10m`, `1h30m`, `2d`, `500ms` | each unit once, largest first; a bare number is an error (seconds or minutes?) |
| percentage | `10%` or `10` | 0-100 |
| quantity | `500m`, `2`, `512Mi`, `1Gi`, `1G` | Kubernetes resource quantities; memory written `512m` (milli-bytes) is an error |
| condition | `error_rate > 1%`, `latency_p99 > 1000ms`, `availability < 99.9%` | `<metric> <op> <value>[unit]`, op one of `>`, `>=`, `<`, `<=`; the unit must fit the metric |
| threshold | `0.1`, `500`, `500ms`, `99.9%` | a number in the metric's unit, or with a unit |
| command | `[python, -m, app, --port, "{port}"]` or `"python -m app --port {port}"` | split like a shell would, but run without one |
| cron | `"0 22 * * 2,4"` | five fields |

Placeholders in commands: {placeholders}.

## Metrics

Built-in metrics usable in `canary.analysis.metrics` and in conditions; declare others under
`metrics.custom` in `service.yaml`.

| metric | unit | healthy | meaning |
|---|---|---|---|
{metrics}

Gate thresholds are in the metric's unit: `error_rate` `max: 0.1` means 0.1 %, `latency_p99` `max: 500`
means 500 ms (the spec's "Error rate < 0.1%", "Latency p99 < 500ms").
"""

SECTIONS = [
    ("service.yaml", ServiceFile, "The service itself. Only `service` and `platform` are required; a minimal "
     "file is:\n\n```yaml\nservice: hello\nplatform:\n  command: [python, -m, myapp, --port, \"{port}\"]\n```"),
    ("Environment files", EnvironmentFile, "One per environment; the spec's `dev-config.yaml`, "
     "`staging-config.yaml` and `production-config.yaml` load verbatim."),
    ("Multi-region file", MultiRegionFile, "The production rollout across regions (the spec's "
     "`multi-region-config.yaml`)."),
]


def render() -> str:
    metrics = "\n".join(f"| `{m.name}` | {m.unit} | {m.healthy} | {m.description} |" for m in BUILTIN_METRICS.values())
    out = [INTRO.replace("{placeholders}", ", ".join(f"`{{{p}}}`" for p in COMMAND_PLACEHOLDERS))
           .replace("{metrics}", metrics)]
    for title, model, intro in SECTIONS:
        out.append(f"\n## {title}\n\n{intro}\n\n| key | type | default | meaning |\n|---|---|---|---|")
        out.extend(_rows(model, ""))
    out.append("\n## Pipeline step names\n\nKeys of `steps` in `service.yaml`, each run only when declared: "
               + ", ".join(f"`{s}`" for s in STEP_NAMES) + ".\n")
    return "\n".join(out) + "\n"


def _rows(model: type[BaseModel], prefix: str, instance: Any = None, only: str = "") -> list[str]:
    """Rows of a model's keys; ``instance`` supplies defaults that differ from the class's (a nested
    default such as the production approval policy)."""
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        annotation = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        default = _default(info, instance, name)
        description = " ".join((info.description or "").split()).replace("``", "`").replace("|", "\\|")
        if only:
            description = f"*{only}:* {description}"
        rows.append(f"| `{key}` | {_type(annotation)} | {default} | {description} |")
        value = getattr(instance, name, None) if instance is not None else _factory_value(info)
        for sub, suffix, tag in _nested(annotation):
            nested = value if isinstance(value, sub) else None
            rows.extend(_rows(sub, f"{key}{suffix}.", nested, only=tag or only))
    return rows


def _factory_value(info: Any) -> Any:
    if info.default_factory is not None:
        try:
            return info.default_factory()
        except TypeError:
            return None
    return None if info.default is PydanticUndefined else info.default


def _nested(annotation: Any) -> list[tuple[type[BaseModel], str, str]]:
    """Models inside an annotation: (model, key suffix, tag of a union member such as ``type: kubernetes``)."""
    out: list[tuple[type[BaseModel], str, str]] = []
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "", "")]
    if origin is typing.Annotated:
        return _nested(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if all(isinstance(_strip(m), type) and issubclass(_strip(m), BaseModel) for m in members) and len(members) > 1:
            return [(_strip(m), "", "type: " + typing.get_args(_strip(m).model_fields["type"].annotation)[0])
                    for m in members]
        for m in members:
            out.extend(_nested(m))
        return out
    if origin is list:
        return [(m, "[]", t) for m, _, t in _nested(args[0])]
    if origin is dict:
        return [(m, ".<name>", t) for m, _, t in _nested(args[1])]
    return out


def _strip(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        base = args[0]
        if base is timedelta:
            return "duration"
        if base is Quantity:
            return "quantity"
        if base is Condition:
            return "condition"
        if base is Threshold:
            return "threshold"
        if base is float:
            return "percentage"
        if typing.get_origin(base) is list and any("command" in repr(a) for a in args[1:]):
            return "command"
        if base is str and any("croniter" in repr(a) or "_cron" in repr(a) for a in args[1:]):
            return "cron"
        return _type(base)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) > 1 and all(isinstance(_strip(m), type) and issubclass(_strip(m), BaseModel) for m in members):
            return "mapping (keys depend on `type`)"
        return " or ".join(_type(m) for m in members)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict and args[1] is typing.Any:
        return "mapping (`platform` keys)"
    if origin is dict:
        return f"mapping of name to {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {str: "text", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _default(info: Any, instance: Any = None, name: str = "") -> str:
    if instance is not None and name in instance.__dict__:
        value = getattr(instance, name)
    elif info.is_required():
        return "**required**"
    elif info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "-"
    else:
        value = info.default
    if value is None:
        return "-"
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    try:
        dumped = TypeAdapter(type(value)).dump_python(value, mode="json")
    except Exception:
        dumped = str(value)
    if isinstance(value, list) and value and isinstance(value[0], (Condition,)):
        dumped = [str(v) for v in value]
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "`" + json.dumps([v.model_dump(mode="json", exclude_defaults=True) for v in value]) + "`"
    if dumped in ([], {}):
        return "empty"
    text = json.dumps(dumped) if not isinstance(dumped, str) else dumped
    return f"`{text}`"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
