"""Each step's default when the service declares it without a runner (an empty entry, ``scan-secrets: {}``).

A default is either a runner (a command or a pod, as if written in the config) or a built-in step, a function
``(StepContext) -> StepResult`` named as ``module:function``. Defaults may differ per platform type: the local
platform builds and signs its own artifacts; on a cluster the same steps run as pods.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_deploy_provider.steps.artifacts import EXCLUDED

KANIKO = "gcr.io/kaniko-project/executor:v1.23.2"
CRANE = "gcr.io/go-containerregistry/crane:v0.20.2"
COSIGN = "ghcr.io/sigstore/cosign/cosign:v2.4.1"
TRIVY = "aquasec/trivy:0.58.1"

#: Paths detect-secrets leaves out (a regex on the path): what the local build leaves out of the artifact (VCS
#: data, caches, virtualenvs, reports), so the scan covers what ships and not, say, the unit tests' pytest cache
#: (whose CACHEDIR.TAG reads as a high-entropy string).
SECRET_SCAN_EXCLUDED = "(^|/)(" + "|".join(re.escape(name) for name in sorted(EXCLUDED)) + ")/"

_BUILTIN = "builtin"
_CLUSTER = ("kubernetes", "ecs")

#: step -> platform type ("*": any) -> runner dict, or {"builtin": "module:function"}.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "unit-tests": {"*": {"command": ["python", "-m", "pytest", "-q", "--junitxml={reports}/unit-tests.xml"],
                         "report": {"format": "junit", "path": "{reports}/unit-tests.xml"}}},
    "build-image": {"local": {_BUILTIN: "airflow_deploy_provider.steps.artifacts:build"},
                    "*": {"image": KANIKO, "args": ["--context=dir:///workspace", "--destination={image}"]}},
    "push-image": {"local": {_BUILTIN: "airflow_deploy_provider.steps.artifacts:push"},
                   "*": {"image": CRANE, "args": ["push", "/workspace/image.tar", "{image}"]}},
    "retag-image": {"local": {_BUILTIN: "airflow_deploy_provider.steps.artifacts:retag"},
                    "*": {"image": CRANE, "args": ["copy", "{source_image}", "{image}"]}},
    "sign-image": {"local": {_BUILTIN: "airflow_deploy_provider.steps.signing:sign"},
                   "*": {"image": COSIGN, "args": ["sign", "--yes", "--key", "env://COSIGN_PRIVATE_KEY", "{image}"],
                         "secrets": {"COSIGN_PRIVATE_KEY": {"connection": "cosign", "field": "extra.private_key"},
                                     "COSIGN_PASSWORD": {"connection": "cosign", "field": "password"}}}},
    "scan-cves": {"local": {"command": ["pip-audit", "--requirement", "requirements.txt", "--format", "json",
                                        "--progress-spinner", "off", "--no-deps", "--disable-pip"],
                            "report": {"format": "pip-audit"}},
                  "*": {"image": TRIVY, "args": ["image", "--format", "json", "--output",
                                                 "/airflow/xcom/return.json", "{image}"],
                        "report": {"format": "trivy"}}},
    "scan-secrets": {"*": {"command": ["detect-secrets", "scan", "--all-files", "--exclude-files",
                                       SECRET_SCAN_EXCLUDED],
                           "report": {"format": "detect-secrets"}}},
    "generate-sbom": {"*": {"command": ["cyclonedx-py", "requirements", "requirements.txt", "--output-format", "JSON",
                                        "--output-file", "{reports}/sbom.json"],
                            "report": {"format": "cyclonedx", "path": "{reports}/sbom.json"}}},
    "terraform": {"*": {_BUILTIN: "airflow_deploy_provider.steps.terraform:plan_and_apply", "working_dir": "infra"}},
    # The built-in DNS update needs the step's ``dns`` setting (which record, which zone): the config check
    # refuses an empty ``update-dns: {}``.
    "update-dns": {"*": {_BUILTIN: "airflow_deploy_provider.steps.dns:update_records"}},
    "release-notes": {"*": {_BUILTIN: "airflow_deploy_provider.steps.documentation:release_notes"}},
    "document-config-changes": {"*": {_BUILTIN: "airflow_deploy_provider.steps.documentation:config_changes"}},
    # configure-alerts, setup-dashboards, annotate-deployment and enable-tracing need an ``http`` list or a
    # command: where alert rules and dashboards live differs too much between teams for a default.
}


def default_runner(step: str, platform_type: str) -> dict[str, Any] | None:
    """The step's default runner on ``platform_type``, or ``None`` when the step has no default."""
    options = DEFAULTS.get(step)
    if not options:
        return None
    return options.get(platform_type) or options.get("*")


#: Tools whose report format is known from the command's (or image's) name.
KNOWN_TOOLS = {"trivy": "trivy", "pip-audit": "pip-audit", "detect-secrets": "detect-secrets",
               "cyclonedx-py": "cyclonedx", "locust": "locust"}


def resolve_runner(step: str, declared: dict[str, Any], platform_type: str) -> dict[str, Any] | None:
    """The runner a declared step uses: what the config says, or the step's default for an empty entry.

    A declared command or pod without a ``report`` gets the report format of a known tool (``trivy ...``,
    ``detect-secrets ...``), read from its standard output (pod: ``/airflow/xcom/return.json``).
    ``None``: an empty entry for a step that has no default.
    """
    if not (declared.get("image") or declared.get("command") or declared.get("http")):
        default = default_runner(step, platform_type)
        if default is None:
            return None
        return {**declared, **{k: v for k, v in default.items() if not declared.get(k)}}
    runner = dict(declared)
    if not runner.get("report"):
        program = (runner.get("command") or [runner.get("image") or ""])[0]
        name = program.rsplit("/", 1)[-1].split(":", 1)[0]
        if name in KNOWN_TOOLS:
            runner["report"] = {"format": KNOWN_TOOLS[name]}
    return runner


def builtin_function(name: str):
    """Import a built-in step's function from its ``module:function`` name."""
    import importlib

    module, _, func = name.partition(":")
    return getattr(importlib.import_module(module), func)
