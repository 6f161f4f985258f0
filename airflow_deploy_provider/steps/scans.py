"""Security scan reports -> findings: Trivy (CVEs and secrets of an image), pip-audit (CVEs of pinned Python
requirements), detect-secrets (secrets in the service folder) and CycloneDX (the SBOM's components).

Each parser takes the report's text and returns :class:`~airflow_deploy_provider.steps.Finding` objects; a
report that is not the tool's format raises (the step fails: an unreadable scan never counts as a clean one).
The verdict (which findings block) is :func:`airflow_deploy_provider.operators.steps.judge`'s.

A finding never carries a secret's value: secrets are named by their type and where they are (file:line).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_deploy_provider.steps import SEVERITIES, Finding, StepError

#: Scanners' severity names that are not ours (GitHub advisories say MODERATE).
SEVERITY_ALIASES = {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NEGLIGIBLE": "LOW", "NONE": "LOW"}

#: pip-audit reports no severity (see :func:`parse_pip_audit`).
PIP_AUDIT_SEVERITY = "HIGH"
#: detect-secrets reports no severity; every secret blocks whatever its severity.
SECRET_SEVERITY = "HIGH"


def severity(value: Any) -> str:
    """A scanner's severity as one of :data:`~airflow_deploy_provider.steps.SEVERITIES` (else ``UNKNOWN``)."""
    name = str(value or "").strip().upper()
    name = SEVERITY_ALIASES.get(name, name)
    return name if name in SEVERITIES else "UNKNOWN"


def _load(text: str, tool: str, hint: str) -> dict[str, Any]:
    if text.lstrip().startswith("<"):
        raise StepError(f"the {tool} report is XML (or HTML), not JSON: {hint}")
    report = json.loads(text)
    if not isinstance(report, dict):
        raise StepError(f"not a {tool} JSON report (a JSON {type(report).__name__}): {hint}")
    return report


def parse_trivy(text: str) -> list[Finding]:
    """Trivy's JSON report (``trivy image --format json``, schema version 2).

    ``Results[].Vulnerabilities[]`` -> ``cve`` findings (id, Trivy's severity, ``PkgName@InstalledVersion``,
    title with the fixed version when there is one); ``Results[].Secrets[]`` -> ``secret`` findings
    (rule id, ``Target:StartLine``; never the matched text). A clean image has no ``Results`` or empty ones; a
    report without ``SchemaVersion`` is not Trivy's JSON (the table output, for example).
    """
    report = _load(text, "trivy", "run trivy with --format json")
    if "SchemaVersion" not in report:
        raise StepError("not a Trivy JSON report (no SchemaVersion): run trivy with --format json")
    findings = []
    for result in report.get("Results") or []:
        target = result.get("Target") or ""
        for vuln in result.get("Vulnerabilities") or []:
            fixed = vuln.get("FixedVersion")
            title = vuln.get("Title") or (vuln.get("Description") or "").split("\n")[0][:200]
            findings.append(Finding(
                tool="trivy", kind="cve", id=vuln["VulnerabilityID"], severity=severity(vuln.get("Severity")),
                title=f"{title} (fixed in {fixed})" if fixed else f"{title} (no fixed version)",
                location=f"{vuln.get('PkgName', '?')}@{vuln.get('InstalledVersion', '?')}"))
        for secret in result.get("Secrets") or []:
            # Match and Code hold the (masked) line: left out all the same
            findings.append(Finding(
                tool="trivy", kind="secret", id=secret.get("RuleID") or "secret",
                severity=severity(secret.get("Severity")), title=secret.get("Title") or secret.get("Category") or "",
                location=f"{target}:{secret.get('StartLine', '?')}"))
    return findings


def parse_pip_audit(text: str) -> list[Finding]:
    """pip-audit's JSON report (``pip-audit --format json``): ``dependencies[].vulns[]`` -> ``cve`` findings.

    pip-audit gives no severity, and neither its ``aliases`` nor its ``fix_versions`` say how severe a
    vulnerability is (one without a fix is no less severe), so every finding is HIGH: it blocks a deployment
    (``[CRITICAL, HIGH]``) but not a hotfix (``[CRITICAL]``), which the image scan (Trivy, with the advisories'
    own severities) still guards. The finding's id is the vulnerability's CVE alias when it has one.

    A dependency pip-audit could not audit (``skip_reason``: not on the index, not found) is an ``unaudited``
    finding; when it could audit none at all (the vulnerability service unreachable, for example) the report
    is an error: an audit of nothing is not a clean audit.
    """
    report = _load(text, "pip-audit", "run pip-audit with --format json")
    dependencies = report.get("dependencies")
    if not isinstance(dependencies, list):
        raise StepError("not a pip-audit JSON report (no 'dependencies' list)")
    findings, skipped = [], []
    for dep in dependencies:
        name = dep["name"]
        if "skip_reason" in dep:
            skipped.append(dep)
            findings.append(Finding(tool="pip-audit", kind="unaudited", id=name, title=dep["skip_reason"][:300]))
            continue
        for vuln in dep.get("vulns") or []:
            ids = [vuln["id"], *(vuln.get("aliases") or [])]
            cve = next((i for i in ids if i.startswith("CVE-")), None)
            fixes = vuln.get("fix_versions") or []
            other = ", ".join(i for i in ids if i != (cve or vuln["id"]))
            description = (vuln.get("description") or "").split("\n")[0][:200]
            title = f"{description} ({'fixed in ' + ', '.join(fixes) if fixes else 'no fixed version'}" \
                    f"{'; also ' + other if other else ''})".strip()
            findings.append(Finding(tool="pip-audit", kind="cve", id=cve or vuln["id"], severity=PIP_AUDIT_SEVERITY,
                                    title=title, location=f"{name}@{dep.get('version', '?')}"))
    if dependencies and len(skipped) == len(dependencies):
        raise StepError(f"pip-audit could audit none of the {len(dependencies)} dependencies: "
                        f"{skipped[0]['skip_reason']}")
    return findings


def parse_detect_secrets(text: str) -> list[Finding]:
    """detect-secrets' JSON output (``detect-secrets scan``, the baseline format): one ``secret`` finding per
    secret, located ``file:line``, its detectors' types in the title.

    A secret that several detectors flag (an AWS key is also a high-entropy string) is one finding; a baseline
    entry audited as a false positive (``is_secret: false``) is none. The secret's hash is never copied out.
    """
    report = _load(text, "detect-secrets", "run detect-secrets scan")
    results = report.get("results")
    if not isinstance(results, dict):
        raise StepError("not a detect-secrets report (no 'results' mapping)")
    found: dict[tuple[str, int, str], list[str]] = {}
    verified: set[tuple[str, int, str]] = set()
    for filename, entries in results.items():
        for entry in entries:
            if entry.get("is_secret") is False:  # audited: not a secret
                continue
            key = (entry.get("filename") or filename, int(entry.get("line_number") or 0),
                   entry.get("hashed_secret") or "")
            found.setdefault(key, [])
            if entry["type"] not in found[key]:
                found[key].append(entry["type"])
            if entry.get("is_verified"):
                verified.add(key)
    return [Finding(tool="detect-secrets", kind="secret", id=types[0], severity=SECRET_SEVERITY,
                    title=", ".join(types) + (" (verified live)" if key in verified else ""),
                    location=f"{key[0]}:{key[1]}")
            for key, types in found.items()]


def parse_cyclonedx(text: str) -> list[Finding]:
    """A CycloneDX JSON SBOM (``cyclonedx-py ... --output-format JSON``): one ``component`` finding per
    component (nested ones too), identified by its package URL.

    An SBOM without components is an error: it was made from the wrong input (an empty or missing
    requirements file, an empty environment), and an empty inventory must not pass for the image's.
    """
    report = _load(text, "CycloneDX", "write the SBOM as JSON (--output-format JSON)")
    if report.get("bomFormat") != "CycloneDX":
        raise StepError(f"not a CycloneDX SBOM (bomFormat {report.get('bomFormat')!r})")
    findings = []
    todo = list(report.get("components") or [])
    while todo:
        component = todo.pop(0)
        todo.extend(component.get("components") or [])
        name = "/".join(p for p in (component.get("group"), component.get("name")) if p)
        version = component.get("version") or ""
        findings.append(Finding(tool="cyclonedx", kind="component",
                                id=component.get("purl") or component.get("bom-ref") or f"{name}@{version}",
                                title=f"{name} {version}".strip(), location=component.get("type") or ""))
    if not findings:
        raise StepError("the SBOM lists no components: it was generated from the wrong input (an empty or "
                        "missing requirements file?)")
    return findings
