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


def target_platforms(service_doc: YamlDocument, base_model: Any, environments: dict[str, EnvironmentFile],
                     env_docs: dict[str, YamlDocument], multi_region: MultiRegionFile | None,
                     multi_doc: YamlDocument | None) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """Target -> its platform model, and the issues of the overrides. ``base_model`` is the service's (valid)
    platform: a target without overrides gets it as it is; an environment's override is validated once, not
    once per region."""
    base = {**service_doc.data["platform"], "type": base_model.type}
    issues: list[ConfigIssue] = []
    platforms: dict[str, Any] = {}
    layers: dict[str, list[_Layer]] = {}
    for name, env in environments.items():
        env_layer = _Layer(env_docs[name], ("platform",), env.platform) if env.platform else None
        merged, model = base, base_model
        if env_layer is not None:
            merged = _merge(base, env_layer, issues)
            found, model = _validate(merged, env_layer, set())
            issues.extend(found)
        if name != "production" or multi_region is None or multi_doc is None:
            layers[name] = [env_layer] if env_layer else []
            if model is not None:
                platforms[name] = model
            continue
        for i, region in enumerate(multi_region.regions):
            values = {"connection": region.connection} if region.connection else {}
            if base_model.type == "ecs":
                values["region"] = region.name  # a region of the rollout is an AWS region
            values.update(region.platform or {})
            region_layer = _Layer(multi_doc, ("regions", i, "platform"), values)
            key = target_key(name, region.name)
            layers[key] = [la for la in (env_layer, region_layer) if la]
            found, region_model = _validate(_merge(merged, region_layer, issues), region_layer,
                                            set(env.platform or {})) if values else ([], model)
            issues.extend(found)
            if model is not None and region_model is not None:
                platforms[key] = region_model
    if base_model.type == "local":
        issues.extend(_shared_ports(platforms, layers, service_doc))
    return platforms, issues


def _merge(merged: dict[str, Any], layer: _Layer, issues: list[ConfigIssue]) -> dict[str, Any]:
    """``layer``'s keys over ``merged``; a ``type`` in the layer is refused."""
    if "type" in layer.values:
        issues.append(layer.doc.issue((*layer.prefix, "type"), "the platform type is set in service.yaml; an "
                                      "override only changes its settings", "platform-override-type",
                                      prefer_key=True))
    return {**merged, **{k: v for k, v in layer.values.items() if k != "type"}}


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
