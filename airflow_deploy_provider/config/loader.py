"""Find services' ``.deploy`` folders and load them into validated :class:`ServiceConfig` objects.

Every problem of every file is collected (YAML syntax, unknown keys, types, cross-field and cross-file rules)
and reported with ``file:line:column``, the field path and what is expected.
"""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from airflow_deploy_provider.config import checks
from airflow_deploy_provider.config.errors import (
    ConfigIssue,
    DeployConfigError,
    IssueList,
    did_you_mean,
    format_path,
)
from airflow_deploy_provider.config.models import (
    ENVIRONMENTS,
    EnvironmentFile,
    MultiRegionFile,
    ServiceFile,
    TestSuite,
)
from airflow_deploy_provider.config.targets import target_key, target_platforms
from airflow_deploy_provider.config.types import BUILTIN_METRICS, MetricInfo
from airflow_deploy_provider.config.yaml_loader import YamlDocument, YamlLoadError, load_yaml

DEPLOY_DIR = ".deploy"
SERVICE_FILES = ("service.yaml", "service.yml")
YAML_SUFFIXES = (".yaml", ".yml")
# Folders never searched for services: they are big and never hold one.
_SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache",
              ".pytest_cache", "site-packages"}


@dataclass(frozen=True)
class ServiceConfig:
    """One service: its ``service.yaml``, its environment files and its optional multi-region file."""

    root: Path
    """The service folder (the parent of ``.deploy``)."""
    deploy_dir: Path
    service: ServiceFile
    environments: dict[str, EnvironmentFile]
    environment_files: dict[str, Path]
    multi_region: MultiRegionFile | None = None
    multi_region_file: Path | None = None
    service_file: Path | None = None
    warnings: tuple[ConfigIssue, ...] = ()
    fingerprint: str = ""
    """sha256 over the files' contents: changes whenever the configuration does."""
    platforms: dict[str, Any] = field(default_factory=dict)
    """Target (``staging``, ``production/us-west-2``) -> its platform: the service's with the overrides of the
    environment file and the region."""

    @property
    def name(self) -> str:
        return self.service.service

    def environment(self, name: str) -> EnvironmentFile:
        try:
            return self.environments[name]
        except KeyError:
            raise KeyError(f"service {self.name} has no {name} environment file") from None

    def platform_for(self, environment: str, region: str | None = None) -> Any:
        """The platform settings of one environment (and production region)."""
        return self.platforms.get(target_key(environment, region)) or self.service.platform

    @property
    def metrics(self) -> dict[str, MetricInfo]:
        return checks.metric_registry(self.service)

    def suite(self, name: str) -> TestSuite | None:
        """A named test suite; ``None`` for the built-in ``smoke`` suite when it is not overridden."""
        if name in self.service.tests:
            return self.service.tests[name]
        if name in self.service.validation:
            return self.service.validation[name]  # type: ignore[index]
        if name in checks.BUILTIN_SUITES:
            return None
        raise KeyError(f"service {self.name} has no test suite '{name}'")

    @property
    def dag_ids(self) -> list[str]:
        """Every DAG id this service produces."""
        ids = []
        for env in ENVIRONMENTS:
            if env in self.environments:
                ids.append(f"deploy_{self.name}_{env}")
                ids.append(f"rollback_{self.name}_{env}")
        if "production" in self.environments:
            ids.append(f"hotfix_{self.name}")
            for r in self.multi_region.regions if self.multi_region is not None else []:
                ids.extend(f"{kind}_{self.name}_production_{r.name}" for kind in ("deploy", "rollback"))
                ids.append(f"hotfix_{self.name}_{r.name}")
        return ids


@dataclass
class LoadResult:
    """Outcome of loading one ``.deploy`` folder: a config, or the issues that prevent it."""

    deploy_dir: Path
    config: ServiceConfig | None
    issues: list[ConfigIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.config is not None

    def raise_for_errors(self) -> ServiceConfig:
        if self.config is None:
            raise DeployConfigError(self.errors, self.deploy_dir)
        return self.config


# ----------------------------------------------------------------------------------------------- discovery


def discover(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every ``.deploy`` folder under ``roots`` (a root may itself be a service folder or a ``.deploy``)."""
    found: set[Path] = set()
    for root in roots:
        path = Path(root)
        if path.name == DEPLOY_DIR and path.is_dir():
            found.add(path)
            continue
        if (path / DEPLOY_DIR).is_dir():
            found.add(path / DEPLOY_DIR)
            continue
        if not path.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(path):
            if DEPLOY_DIR in dirnames:
                found.add(Path(dirpath) / DEPLOY_DIR)
            # A service folder's subfolders (code, migrations) hold no further services.
            dirnames[:] = [] if DEPLOY_DIR in dirnames else sorted(
                d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
            )
    return sorted(found)


def load_services(roots: Iterable[str | os.PathLike[str]], display_base: Path | None = None) -> list[LoadResult]:
    return [load_service(d, display_base=display_base) for d in discover(roots)]


# ------------------------------------------------------------------------------------------------ loading


def _display(path: Path, base: Path | None) -> str:
    base = base or Path.cwd()
    try:
        return os.path.relpath(path, base) if path.is_absolute() and path.is_relative_to(base) else str(path)
    except ValueError:
        return str(path)


def load_service(deploy_dir: str | os.PathLike[str], display_base: Path | None = None) -> LoadResult:
    """Load and validate every file of one ``.deploy`` folder; never raises for bad config."""
    deploy_dir = Path(deploy_dir)
    if deploy_dir.name != DEPLOY_DIR and (deploy_dir / DEPLOY_DIR).is_dir():
        deploy_dir = deploy_dir / DEPLOY_DIR
    root = deploy_dir.parent.resolve()
    issues = IssueList()
    digest = hashlib.sha256()

    files = sorted(p for p in deploy_dir.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()) \
        if deploy_dir.is_dir() else []
    docs: list[YamlDocument] = []
    for path in files:
        display = _display(path.resolve() if not path.is_absolute() else path, display_base)
        try:
            text = path.read_text(encoding="utf-8")
            digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
            docs.append(load_yaml(path, display, text))
        except YamlLoadError as exc:
            issues.extend(exc.issues)
        except (OSError, UnicodeDecodeError) as exc:
            issues.add(ConfigIssue(display, 1, 1, "(file)", f"cannot read file: {exc}", "file-unreadable"))

    service_docs = [d for d in docs if d.path.name in SERVICE_FILES]
    other_docs = [d for d in docs if d.path.name not in SERVICE_FILES]
    deploy_display = _display(deploy_dir.resolve(), display_base)

    service: ServiceFile | None = None
    service_doc: YamlDocument | None = None
    if not service_docs:
        if not any(i.file.endswith(SERVICE_FILES) for i in issues.issues):
            issues.add(ConfigIssue(f"{deploy_display}/service.yaml", 1, 1, "(file)",
                                   "missing service.yaml: every .deploy folder needs one with at least 'service' and "
                                   "'platform'", "service-file-missing"))
    else:
        if len(service_docs) > 1:
            issues.add(service_docs[1].issue((), "both service.yaml and service.yml exist; keep one",
                                             "service-file-duplicate"))
        service_doc = service_docs[0]
        checked = _validate(ServiceFile, service_doc, issues)
        service = checked.model
        if checked.target is not None:
            for f in checks.check_service(checked.target, root, partial=service is None):
                issues.add(_to_issue(service_doc, f))

    environments: dict[str, EnvironmentFile] = {}
    environment_files: dict[str, Path] = {}
    env_docs: dict[str, YamlDocument] = {}
    multi_region: MultiRegionFile | None = None
    multi_doc: YamlDocument | None = None
    for doc in other_docs:
        kind = _kind(doc)
        if kind is None:
            issues.add(doc.issue((), "not a .deploy file this provider knows: an environment file needs "
                                 "'environment:', a multi-region file needs 'regions:'", "file-kind-unknown"))
            continue
        if kind == "multi-region":
            checked = _validate(MultiRegionFile, doc, issues)
            mr = checked.model
            if checked.target is not None:
                for f in checks.check_multi_region(checked.target, partial=mr is None):
                    issues.add(_to_issue(doc, f))
            if checked.bad_sections and "regions" in checked.bad_sections:
                for f in checks.element_findings("multi-region", doc.data, None):
                    issues.add(_to_issue(doc, f))
            if multi_doc is not None:
                issues.add(doc.issue(("regions",), f"a second multi-region file; {multi_doc.display_path} already "
                                     "defines the regions", "multi-region-duplicate", prefer_key=True))
            elif mr is not None:
                multi_region, multi_doc = mr, doc
            continue
        checked = _validate(EnvironmentFile, doc, issues)
        env = checked.model
        if checked.target is not None:
            for f in checks.check_environment(checked.target, service, set(doc.data), partial=env is None):
                issues.add(_to_issue(doc, f))
        if checked.bad_sections:
            bad = {k: v for k, v in doc.data.items() if k in checked.bad_sections}
            for f in checks.element_findings("environment", bad, service):
                issues.add(_to_issue(doc, f))
        name = env.environment if env is not None else (
            doc.data.get("environment") if isinstance(doc.data, dict) else None)
        if isinstance(name, str) and name in env_docs:
            issues.add(doc.issue(("environment",), f"environment '{name}' is already configured in "
                                 f"{env_docs[name].display_path}; each environment has one file",
                                 "environment-duplicate"))
            continue
        if isinstance(name, str) and name in ENVIRONMENTS:
            env_docs[name] = doc
        if env is not None:
            environments[env.environment] = env
            environment_files[env.environment] = doc.path

    if multi_region is not None and multi_doc is not None:
        env_names = {n: e for n, e in environments.items()}
        if "production" not in env_docs:
            for f in checks.check_multi_region_against(multi_region, env_names):
                issues.add(_to_issue(multi_doc, f))

    platforms: dict[str, Any] = {}
    if service is not None and service_doc is not None:
        platforms, found = target_platforms(service_doc, service.platform, environments, env_docs,
                                            multi_region, multi_doc)
        issues.extend(found)

    if not other_docs and not issues.errors and service is not None:
        issues.add(ConfigIssue(deploy_display, 1, 1, "(folder)", "no environment files: add at least one file with "
                               "'environment: development|staging|production'", "no-environments", "warning"))

    ordered = issues.sorted()
    if issues.errors or service is None:
        return LoadResult(deploy_dir, None, ordered)
    config = ServiceConfig(
        root=root,
        deploy_dir=deploy_dir.resolve(),
        service=service,
        environments={e: environments[e] for e in ENVIRONMENTS if e in environments},
        environment_files=environment_files,
        multi_region=multi_region,
        multi_region_file=multi_doc.path if multi_doc is not None else None,
        service_file=service_doc.path if service_doc is not None else None,
        warnings=tuple(i for i in ordered if i.severity == "warning"),
        fingerprint=digest.hexdigest(),
        platforms=platforms,
    )
    return LoadResult(deploy_dir, config, ordered)


def _kind(doc: YamlDocument) -> str | None:
    if not isinstance(doc.data, dict):
        return "environment"  # validation reports "expected a mapping"
    if "regions" in doc.data and "environment" not in doc.data:
        return "multi-region"
    if "regions" in doc.data and "strategy" not in doc.data:
        return "multi-region"
    if "environment" in doc.data or "strategy" in doc.data:
        return "environment"
    return None


def _to_issue(doc: YamlDocument, finding: checks.Finding) -> ConfigIssue:
    return doc.issue(finding.loc, finding.message, finding.code, severity=finding.severity,
                     prefer_key=finding.prefer_key)


# ------------------------------------------------------------------------------------------ validation


@dataclass
class _Validated:
    """A valid model, or for an invalid file a model built from its valid parts only (invalid fields are
    absent, so rules that read them are skipped)."""

    model: Any = None
    partial: Any = None
    bad_sections: set[str] | None = None

    @property
    def target(self) -> Any:
        return self.model if self.model is not None else self.partial


def _validate(model: type[BaseModel], doc: YamlDocument, issues: IssueList) -> _Validated:
    """Validate a document, adding its issues. For an invalid file, every part that is valid on its own is
    kept (recursively, inside sections), so the rules about those parts still run and every error of the
    file shows at once."""
    data = doc.data
    if not isinstance(data, dict):
        issues.add(doc.issue((), f"expected a mapping of keys such as {', '.join(_aliases(model)[:3])}; got "
                             f"{_kind_of(data)}", "file-not-mapping"))
        return _Validated()
    try:
        return _Validated(model=model.model_validate(data))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    bad: set[tuple] = set()
    for err in errors:
        loc = _data_loc(err["loc"], data)
        issues.add(_translate(err, loc, doc, model))
        bad.add(loc[:-1] if err["type"] == "missing" else loc)
    if () in bad:
        return _Validated()
    return _Validated(partial=_partial(model, data, bad), bad_sections={str(loc[0]) for loc in bad})


def _partial(model: type[BaseModel], data: dict, bad: set[tuple]) -> BaseModel:
    """``model`` built from the valid parts of ``data``; ``bad`` holds the data locations of errors."""
    values: dict[str, Any] = {}
    absent: list[str] = []
    for name, info in model.model_fields.items():
        alias = info.alias or name
        inner = {loc[1:] for loc in bad if loc and loc[0] == alias}
        if alias not in data:
            if inner:  # a required key is missing
                absent.append(name)
            continue
        if not inner:
            try:
                values[name] = _adapter(model, name).validate_python(data[alias])
                continue
            except ValidationError:
                pass
        value = data[alias]
        sub = _model_of(info.annotation, value)
        item = _list_item_model(info.annotation)
        entry = _dict_value_model(info.annotation)
        if sub is not None and isinstance(value, dict) and () not in inner:
            values[name] = _partial(sub, value, inner)
        elif item is not None and isinstance(value, list) and () not in inner:
            # Element by element, keeping every index so that rules report the right position.
            values[name] = [_partial_element(item, element, {loc[1:] for loc in inner if loc and loc[0] == i})
                            for i, element in enumerate(value)]
        elif entry is not None and isinstance(value, dict) and () not in inner:
            # Entry by entry; an entry that is wrong as a whole is left out, so rules do not see it twice.
            kept = {key: _partial_element(entry, element, {loc[1:] for loc in inner if loc and loc[0] == key})
                    for key, element in value.items()}
            values[name] = {key: element for key, element in kept.items() if element is not None}
        else:
            absent.append(name)
    partial = model.model_construct(**values)
    for name in absent:  # absent, not defaulted: rules reading an invalid field are skipped
        partial.__dict__.pop(name, None)
    return partial


def _partial_element(model: type[BaseModel], element: Any, bad: set[tuple]) -> BaseModel | None:
    """One list element or mapping value: validated when it has no errors, else built from its valid parts
    (``None`` when it is wrong as a whole)."""
    if not bad:
        try:
            return model.model_validate(element)
        except ValidationError:
            pass
    return _partial(model, element, bad) if isinstance(element, dict) and () not in bad else None


def _dict_value_model(annotation: Any) -> type[BaseModel] | None:
    tp = _unwrap(annotation, None)
    if typing.get_origin(tp) is dict:
        _, value = typing.get_args(tp)
        value = _unwrap(value, None)
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value
    return None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    tp = _unwrap(annotation, None)
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        item = _unwrap(item, None)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _model_of(annotation: Any, data: Any) -> type[BaseModel] | None:
    tp = _unwrap(annotation, data)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    info = model.model_fields[name]
    annotation = info.annotation
    if info.metadata:
        annotation = typing.Annotated[(annotation, *info.metadata)]  # type: ignore[valid-type]
    return TypeAdapter(annotation)


def _data_loc(loc: tuple, data: Any) -> tuple:
    """Map pydantic's error location onto the YAML data, dropping union tags such as ``'kubernetes'`` and
    pydantic's own labels such as ``'[key]'``."""
    out: list = []
    cur = data
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(cur, dict):
            if part in cur:
                out.append(part)
                cur = cur[part]
            elif isinstance(part, str) and part.endswith("]") and "[" in part:
                pass  # pydantic's own union member label ("list[str]"): not in the data
            elif isinstance(part, str) and cur.get("type", "local" if "command" in cur else None) == part:
                pass  # a discriminated union's tag (the value of "type")
            elif i + 1 < len(parts) and parts[i + 1] in cur and not isinstance(parts[i + 1], int):
                pass  # a discriminated union's tag
            else:
                out.append(part)
                cur = None
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and (part.endswith("]") or part in ("function-after", "function-before")):
            pass
        else:
            out.append(part)
            cur = None
        i += 1
    return tuple(out)


def _translate(err: dict, loc: tuple, doc: YamlDocument, model: type[BaseModel]) -> ConfigIssue:
    etype = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    code = etype.replace("_", "-")
    prefer_key = "[key]" in err["loc"]  # the error is about a mapping key itself: point at the key
    if etype == "extra_forbidden":
        key = loc[-1] if loc else "?"
        allowed = _allowed_keys(model, loc[:-1], doc.data)
        hint = did_you_mean(str(key), allowed) if allowed else ""
        listing = f"; allowed here: {', '.join(allowed)}" if allowed and not hint else ""
        message = f"unknown key '{key}'{hint}{listing}"
        code, prefer_key = "unknown-key", True
    elif etype == "missing":
        message = f"required key '{loc[-1]}' is missing"
        code = "missing-key"
        # Point at the key of the mapping that lacks it (``canary:``), not at its first entry.
        return doc.issue(loc[:-1], message, code, path=format_path(loc), prefer_key=True)
    elif etype == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        hint = did_you_mean(str(value), options) if isinstance(value, str) else ""
        message = f"expected one of {', '.join(options)}; got {_show(value)}{hint}"
        what = loc[-1] if loc else ""
        code = {"environment": "environment-name", "strategy": "strategy-name", "type": "type-name"}.get(
            str(what), "value-not-allowed")
    elif etype in ("int_type", "int_parsing", "int_from_float"):
        message = f"expected a whole number; got {_show(value)}"
    elif etype in ("float_type", "float_parsing"):
        message = f"expected a number; got {_show(value)}"
    elif etype in ("bool_type", "bool_parsing"):
        message = f"expected true or false; got {_show(value)}"
    elif etype in ("string_type",):
        message = f"expected text; got {_show(value)}"
    elif etype in ("list_type",):
        message = f"expected a list; got {_show(value)}"
    elif etype in ("dict_type", "model_type", "model_attributes_type"):
        message = f"expected a mapping of keys; got {_show(value)}"
        if len(loc) >= 2 and isinstance(loc[-1], str) and _is_named_entries(model, loc[:-1], doc.data):
            message += (f" ('{loc[-1]}' is read as the name of an entry of {format_path(loc[:-1])}; check its "
                        "indentation)")
    elif etype in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[etype]
        bound = next(iter(ctx.values()), "?")
        message = f"expected a number {op} {bound}; got {_show(value)}"
        code = "out-of-range"
    elif etype == "too_short":
        message = f"expected at least {ctx.get('min_length', 1)} item(s); got {ctx.get('actual_length', 0)}"
    elif etype == "string_too_short":
        message = f"expected text of at least {ctx.get('min_length', 1)} character(s); got {_show(value)}"
    elif etype == "string_too_long":
        message = f"expected text of at most {ctx.get('max_length')} characters; got {len(str(value))}"
    elif etype == "platform_type":
        message = f"expected platform type local, kubernetes or ecs; got {_show(value.get('type') if isinstance(value, dict) else value)}"
        hint = did_you_mean(str(value.get("type")), ("local", "kubernetes", "ecs")) if isinstance(value, dict) else ""
        message += hint
        code = "type-name"
        loc = (*loc, "type") if isinstance(value, dict) and "type" in value else loc
    elif etype == "value_error":
        message = str(err.get("msg", "")).removeprefix("Value error, ")
    else:
        message = err.get("msg", etype)
    return doc.issue(loc, message, code, prefer_key=prefer_key)


def _show(value: Any) -> str:
    from airflow_deploy_provider.config.types import _show as show

    return show(value)


def _kind_of(value: Any) -> str:
    if value is None:
        return "an empty file"
    return _show(value)


def _aliases(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _allowed_keys(model: type[BaseModel], loc: tuple, data: Any) -> list[str]:
    """The keys allowed at ``loc`` (a data location), found by walking the model's annotations."""
    tp: Any = model
    cur = data
    for part in loc:
        tp = _unwrap(tp, cur)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fld = next((f for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
            if fld is None:
                return []
            tp = fld.annotation
        else:
            origin = typing.get_origin(tp)
            args = typing.get_args(tp)
            if origin in (list, tuple) and args:
                tp = args[0]
            elif origin is dict and len(args) == 2:
                tp = args[1]
            else:
                return []
        cur = cur.get(part) if isinstance(cur, dict) else (
            cur[part] if isinstance(cur, list) and isinstance(part, int) and part < len(cur) else None)
    tp = _unwrap(tp, cur)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _aliases(tp)
    return []


def _is_named_entries(model: type[BaseModel], loc: tuple, data: Any) -> bool:
    """Whether ``loc`` is a mapping of named entries (``tests``, ``steps``) rather than of fixed keys."""
    tp: Any = model
    cur = data
    for part in loc:
        tp = _unwrap(tp, cur)
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return False
        fld = next((f for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
        if fld is None:
            return False
        tp = fld.annotation
        cur = cur.get(part) if isinstance(cur, dict) else None
    return typing.get_origin(_unwrap(tp, cur)) is dict


def _unwrap(tp: Any, cur: Any) -> Any:
    """Strip Annotated/Optional; pick a discriminated union's member by the data's ``type``."""
    for _ in range(10):
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            wanted = cur.get("type", "local") if isinstance(cur, dict) else None
            chosen = None
            for member in members:
                inner = typing.get_args(member)[0] if typing.get_origin(member) is typing.Annotated else member
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    type_field = inner.model_fields.get("type")
                    if type_field is not None and wanted in typing.get_args(type_field.annotation):
                        chosen = inner
                        break
            if chosen is None:
                return tp
            tp = chosen
        else:
            return tp
    return tp


# ------------------------------------------------------------------------------------------ conveniences


def load_service_or_raise(deploy_dir: str | os.PathLike[str]) -> ServiceConfig:
    return load_service(deploy_dir).raise_for_errors()


def iter_issues(results: Iterable[LoadResult]) -> Iterator[ConfigIssue]:
    for r in results:
        yield from r.issues


def expected_metric(config: ServiceConfig, name: str) -> MetricInfo:
    return config.metrics.get(name) or BUILTIN_METRICS[name]


__all__ = [
    "LoadResult",
    "ServiceConfig",
    "discover",
    "load_service",
    "load_service_or_raise",
    "load_services",
]
