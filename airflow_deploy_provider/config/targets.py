"""Per-target platform settings: ``service.yaml``'s ``platform`` with the overrides of each environment file and,
for production in a multi-region rollout, of each region (region over production over the service).

A target is where one router, service or set of replicas lives: an environment (``staging``) or a production
region (``production/us-west-2``). Each override is validated merged with what it overrides, and its errors are
reported at the override's own file, line and field path; errors of the service's own keys are reported once,
in ``service.yaml``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import ValidationError

from airflow_deploy_provider.config.errors import ConfigIssue, format_path
from airflow_deploy_provider.config.models import DeployModel, EnvironmentFile, MultiRegionFile, Platform
from airflow_deploy_provider.config.yaml_loader import YamlDocument


class _PlatformOnly(DeployModel):
    platform: Platform


def target_key(environment: str, region: str | None = None) -> str:
    return f"{environment}/{region}" if region else environment


@dataclasses.dataclass
class _Layer:
    doc: YamlDocument
    prefix: tuple  # location of the override mapping in its document
    values: dict[str, Any]


def target_platforms(service_doc: YamlDocument, base_type: str, environments: dict[str, EnvironmentFile],
                     env_docs: dict[str, YamlDocument], multi_region: MultiRegionFile | None,
                     multi_doc: YamlDocument | None) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """Target -> its platform model, and the issues of the overrides. ``base_type`` is the type of the
    service's (valid) platform."""
    base = dict(service_doc.data["platform"])
    base.setdefault("type", base_type)
    issues: list[ConfigIssue] = []
    layers: dict[str, list[_Layer]] = {}
    for name, env in environments.items():
        chain = []
        if env.platform:
            chain.append(_Layer(env_docs[name], ("platform",), env.platform))
        if name == "production" and multi_region is not None and multi_doc is not None:
            for i, region in enumerate(multi_region.regions):
                values = {"connection": region.connection} if region.connection else {}
                if base_type == "ecs":
                    values["region"] = region.name  # a region of the rollout is an AWS region
                values.update(region.platform or {})
                layers[target_key(name, region.name)] = [*chain, _Layer(multi_doc, ("regions", i, "platform"), values)]
        else:
            layers[target_key(name)] = chain

    platforms: dict[str, Any] = {}
    reported: set[tuple] = set()
    for target, chain in layers.items():
        merged = dict(base)
        model = _PlatformOnly.model_validate({"platform": merged}).platform if not chain else None
        earlier: set[str] = set()  # keys set by the layers before (their errors are reported there)
        failed = False
        for layer in chain:
            if "type" in layer.values:
                issues.extend(_once(reported, [layer.doc.issue(
                    (*layer.prefix, "type"), "the platform type is set in service.yaml; an override only changes "
                    "its settings", "platform-override-type", prefer_key=True)]))
            merged.update({k: v for k, v in layer.values.items() if k != "type"})
            found, model = _validate(merged, layer, earlier)
            issues.extend(_once(reported, found))
            failed = failed or model is None
            earlier |= set(layer.values)
        if model is not None and not failed:
            platforms[target] = model
    if base_type == "local":
        issues.extend(_once(reported, _shared_ports(platforms, layers, service_doc)))
    return platforms, issues


def _once(reported: set[tuple], issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """The issues not reported yet (an environment's override is checked once per region too)."""
    fresh = []
    for issue in issues:
        key = (issue.file, issue.line, issue.path, issue.code)
        if key not in reported:
            reported.add(key)
            fresh.append(issue)
    return fresh


def _validate(merged: dict[str, Any], layer: _Layer, earlier: set[str]) -> tuple[list[ConfigIssue], Any]:
    """Validate ``merged`` (the service's settings with the layers up to ``layer`` over them); the errors of
    ``layer``'s keys at ``layer``'s positions (those of ``earlier`` layers' keys are reported there)."""
    from airflow_deploy_provider.config.loader import _data_loc, _translate

    try:
        return [], _PlatformOnly.model_validate({"platform": merged}).platform
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    view = _view(layer, merged)
    found = []
    for err in errors:
        loc = _data_loc(err["loc"], view.data)
        if len(loc) >= 2 and loc[1] in earlier and loc[1] not in layer.values:
            continue
        issue = _translate(err, loc, view, _PlatformOnly)
        if len(loc) < 2 or loc[1] not in layer.values:
            # A rule across keys, set here and in service.yaml: reported at the override as a whole.
            issue = layer.doc.issue(layer.prefix, f"with these settings the platform is not valid: {issue.message}",
                                    "platform-override", prefer_key=True)
        found.append(dataclasses.replace(issue, path=format_path((*layer.prefix, *loc[1:]))))
    return found, None


def _view(layer: _Layer, merged: dict[str, Any]) -> YamlDocument:
    """The override's document seen as ``{"platform": <merged settings>}`` with the override's positions: what
    the error translation expects."""
    n = len(layer.prefix)

    def remap(positions: dict) -> dict:
        return {("platform", *loc[n:]): pos for loc, pos in positions.items() if tuple(loc[:n]) == layer.prefix}

    return YamlDocument(layer.doc.path, layer.doc.display_path, {"platform": merged},
                        remap(layer.doc.value_positions), remap(layer.doc.key_positions))


def _shared_ports(platforms: dict[str, Any], layers: dict[str, list[_Layer]],
                  service_doc: YamlDocument) -> list[ConfigIssue]:
    """Every target has its own router: two targets with the same fixed port cannot both run."""
    issues = []
    owner: dict[int, str] = {}
    for target, platform in platforms.items():
        port = getattr(platform, "port", None)
        if port is None:
            continue
        if port not in owner:
            owner[port] = target
            continue
        layer = next((la for la in reversed(layers[target]) if "port" in la.values), None)
        doc, loc = (layer.doc, (*layer.prefix, "port")) if layer else (service_doc, ("platform", "port"))
        issues.append(doc.issue(
            loc, f"port {port} is also the router port of {owner[port]}: each environment and region has its own "
            "router; set 'port' in each environment file's (or region's) 'platform'", "local-port-shared"))
    return issues
