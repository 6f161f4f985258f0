"""The security scan and signing steps.

- Each scanner's report format, from real reports (``tests/data/scans``: detect-secrets, cyclonedx-py and pip-audit
  wrote theirs; Trivy's is written by hand to its JSON schema, as Trivy does not run here).
- The real tools from PyPI run by the real :class:`PipelineStepOperator` with each step's default command line:
  detect-secrets on a folder with a planted key, cyclonedx-py on a requirements file, pip-audit against an OSV
  stand-in (``osv-answers.json``) and, when reachable, against PyPI itself. The ledger's ``step``/``scan`` events
  and the task's outcome are what is checked; the severity policy (a HIGH blocks a deployment, not a hotfix) too.
- The production checklist's security scan item against the scans recorded for the version.
- Image signatures on the local platform (sign, verify, tampering), cosign's key format, the cluster checks
  (cosign on the PATH, else the ledger), and a production run refusing an unsigned image before deploying.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_deploy_provider.operators.steps import PipelineStepOperator
from airflow_deploy_provider.operators.validation import ChecklistItemOperator, ImageSignatureOperator
from airflow_deploy_provider.steps import StepError, artifacts, signing
from airflow_deploy_provider.steps.defaults import resolve_runner
from airflow_deploy_provider.steps.reports import parse_report
from airflow_deploy_provider.steps.scans import (
    parse_cyclonedx,
    parse_detect_secrets,
    parse_pip_audit,
    parse_trivy,
)
from tests.conftest import DATA, UNGOVERNED, write_service

SCANS = DATA / "scans"
SERVICE = "shop"
VERSION = "1.4.0"
DEPLOYMENT = "deploy_shop_development/run"
IMAGE = f"{SERVICE}:staging-{VERSION}"
# AWS's documented example key, split so that a scan of this repository does not flag the test itself
FAKE_AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


@pytest.fixture(autouse=True)
def reports(monkeypatch, tmp_path):
    """Reports in this test's folder. (The scanners, installed beside Airflow, are found by the worker's
    environment: :func:`airflow_deploy_provider.steps.worker_env`.)"""
    monkeypatch.setenv("DEPLOY_REPORTS_DIR", str(tmp_path / "reports"))


@pytest.fixture
def deployment(ledger):
    ledger.start_deployment(id=DEPLOYMENT, service=SERVICE, environment="development", version=VERSION)
    return ledger


def run_step(step: str, runner: dict, root: Path, *, workflow: str = "deploy", image: str = IMAGE,
             deployment_id: str = DEPLOYMENT) -> tuple[bool, str]:
    """Run a step through the real operator: (succeeded, its return summary or its failure message)."""
    op = PipelineStepOperator(task_id=step.replace("-", "_"), service=SERVICE, environment="development",
                              deployment_id=deployment_id, step=step, runner=runner, platform={"type": "local"},
                              version=VERSION, image=image, commit="3f2c9ab00d", service_root=str(root),
                              workflow=workflow)
    try:
        return True, op.execute({})["summary"]
    except AirflowException as exc:
        return False, str(exc)


def last_event(ledger, kind: str, step: str, deployment_id: str = DEPLOYMENT):
    return [e for e in ledger.events(deployment_id, kind=kind) if e.data.get("step") == step][-1]


def default(step: str) -> dict:
    runner = resolve_runner(step, {}, "local")
    assert runner is not None
    return runner


# --------------------------------------------------------------------------------------------- parsers


def test_trivy_report_gives_cves_and_secrets_never_the_matched_text():
    text = (SCANS / "trivy-image.json").read_text()
    findings = parse_trivy(text)
    cves = {f.id: f for f in findings if f.kind == "cve"}
    assert {i: f.severity for i, f in cves.items()} == {
        "CVE-2024-45490": "CRITICAL", "CVE-2023-45853": "CRITICAL", "CVE-2024-2961": "HIGH",
        "CVE-2011-3374": "LOW", "CVE-2024-6345": "HIGH", "CVE-2024-35195": "MEDIUM"}
    assert cves["CVE-2024-2961"].location == "libc6@2.36-9+deb12u4"
    assert cves["CVE-2024-2961"].title.endswith("(fixed in 2.36-9+deb12u6)")
    assert cves["CVE-2023-45853"].title.endswith("(no fixed version)")
    (secret,) = [f for f in findings if f.kind == "secret"]
    assert (secret.id, secret.severity, secret.location) == ("aws-access-key-id", "CRITICAL",
                                                             "/app/checkout/settings.py:12")
    assert "****" not in json.dumps([f.to_dict() for f in findings])  # neither Match nor Code is copied
    # a clean image: no Results at all; the table output (or any other JSON) is not a clean report
    assert parse_trivy(json.dumps({"SchemaVersion": 2, "ArtifactName": "shop:1"})) == []
    for unreadable in ("shop:1 (debian 12.7)\nTotal: 0 (UNKNOWN: 0, LOW: 0)", "{}", "[]"):
        with pytest.raises(StepError):
            parse_report("trivy", unreadable)


def test_pip_audit_report_rates_every_vulnerability_high():
    findings = parse_pip_audit((SCANS / "pip-audit.json").read_text())
    assert [(f.id, f.severity, f.location) for f in findings] == [
        ("CVE-2019-10906", "HIGH", "jinja2@2.10"), ("CVE-2020-28493", "HIGH", "jinja2@2.10"),
        ("PYSEC-2026-0001", "HIGH", "legacy-widgets@0.3")]  # no fix: still HIGH
    assert "fixed in 2.10.1" in findings[0].title and "PYSEC-2019-217" in findings[0].title
    assert "no fixed version" in findings[2].title
    # a dependency it could not audit is said; an audit of nothing at all is not a clean audit
    partial = {"dependencies": [{"name": "jinja2", "version": "3.1.6", "vulns": []},
                                {"name": "internal-lib", "skip_reason": "Dependency not found on PyPI"}]}
    assert [(f.kind, f.id) for f in parse_pip_audit(json.dumps(partial))] == [("unaudited", "internal-lib")]
    nothing = {"dependencies": [{"name": "jinja2", "skip_reason": "Dependency not found on PyPI and could not be "
                                 "audited: jinja2 (2.10)"}], "fixes": []}
    with pytest.raises(StepError, match="could audit none of the 1 dependencies"):
        parse_pip_audit(json.dumps(nothing))
    assert parse_pip_audit(json.dumps({"dependencies": [], "fixes": []})) == []


def test_detect_secrets_report_names_where_never_what():
    text = (SCANS / "detect-secrets.json").read_text()
    (finding,) = parse_detect_secrets(text)
    assert (finding.kind, finding.id, finding.location) == ("secret", "AWS Access Key", "app/settings.py:3")
    report = json.loads(text)
    hashed = report["results"]["app/settings.py"][0]["hashed_secret"]
    assert hashed not in json.dumps(finding.to_dict())
    # one secret flagged by three detectors is one finding; an audited false positive is none
    entry = {"filename": "conf.py", "hashed_secret": "ab" * 20, "is_verified": False, "line_number": 2}
    report["results"] = {"conf.py": [{**entry, "type": t} for t in ("AWS Access Key", "Base64 High Entropy String",
                                                                     "Secret Keyword")]
                         + [{**entry, "type": "Secret Keyword", "line_number": 9, "is_secret": False}]}
    (merged,) = parse_detect_secrets(json.dumps(report))
    assert merged.title == "AWS Access Key, Base64 High Entropy String, Secret Keyword"
    assert merged.location == "conf.py:2"


def test_cyclonedx_sbom_lists_components_and_refuses_an_empty_one():
    findings = parse_cyclonedx((SCANS / "cyclonedx-sbom.json").read_text())
    assert [f.id for f in findings] == ["pkg:pypi/jinja2@2.10", "pkg:pypi/markupsafe@1.1.1",
                                        "pkg:pypi/requests@2.31.0"]
    assert {f.kind for f in findings} == {"component"}
    with pytest.raises(StepError, match="no components"):
        parse_cyclonedx(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []}))
    with pytest.raises(StepError, match="not JSON"):
        parse_cyclonedx('<?xml version="1.0"?><bom xmlns="http://cyclonedx.org/schema/bom/1.6"/>')


# --------------------------------------------------------------------------- the real tools, as steps


def test_detect_secrets_finds_a_planted_key_and_the_step_fails(tmp_path, deployment):
    ledger = deployment
    leaky = write_service(tmp_path / "leaky", {"service.yaml": f"service: {SERVICE}\n"})
    (leaky / "app").mkdir()
    (leaky / "app" / "settings.py").write_text(f'REGION = "eu-west-1"\nAWS_ACCESS_KEY_ID = "{FAKE_AWS_KEY}"\n')
    ok, message = run_step("scan-secrets", default("scan-secrets"), leaky)
    assert not ok and "1 blocking" in message
    scan = last_event(ledger, "scan", "scan-secrets")
    assert (scan.data["blocking"], scan.data["counts"], scan.data["tool"]) == (1, {"HIGH": 1}, "detect-secrets")
    step = last_event(ledger, "step", "scan-secrets")
    assert step.data["ok"] is False and step.data["findings"][0]["location"] == "app/settings.py:2"
    assert FAKE_AWS_KEY not in json.dumps([e.data for e in ledger.events(DEPLOYMENT)])

    clean = write_service(tmp_path / "clean", {"service.yaml": f"service: {SERVICE}\n"})
    (clean / "app.py").write_text('import os\nKEY = os.environ["AWS_ACCESS_KEY_ID"]\n')
    # what the build leaves out of the artifact is not scanned either: the unit tests' pytest cache (its tag
    # reads as a high-entropy string), a virtualenv's third-party code
    (clean / ".pytest_cache").mkdir()
    (clean / ".pytest_cache" / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (clean / ".venv" / "lib").mkdir(parents=True)
    (clean / ".venv" / "lib" / "vendored.py").write_text(f'KEY = "{FAKE_AWS_KEY}"\n')
    ok, message = run_step("scan-secrets", default("scan-secrets"), clean)
    assert ok, message
    assert last_event(ledger, "scan", "scan-secrets").data["blocking"] == 0


def test_cyclonedx_writes_the_sbom_and_the_step_records_it(tmp_path, deployment):
    ledger = deployment
    root = tmp_path / "svc"
    root.mkdir()
    (root / "requirements.txt").write_text("jinja2==3.1.6\nmarkupsafe==3.0.2\n")
    ok, message = run_step("generate-sbom", default("generate-sbom"), root)
    assert ok, message
    step = last_event(ledger, "step", "generate-sbom")
    sbom = Path(step.data["report"]["location"])
    assert sbom.name == "sbom.json" and sbom.is_relative_to(tmp_path / "reports")
    assert json.loads(sbom.read_text())["bomFormat"] == "CycloneDX"
    assert [f["id"] for f in step.data["findings"]] == ["pkg:pypi/jinja2@3.1.6", "pkg:pypi/markupsafe@3.0.2"]
    # an empty requirements file gives an SBOM without components: the wrong input, not an empty image
    (root / "requirements.txt").write_text("")
    ok, message = run_step("generate-sbom", default("generate-sbom"), root)
    assert not ok and "no components" in message


def affects(vuln: dict, name: str, version: str) -> bool:
    """Whether an OSV record's ``ECOSYSTEM`` ranges include ``version`` (as the OSV API decides)."""
    from packaging.version import Version

    for affected in vuln["affected"]:
        if affected["package"]["name"] != name:
            continue
        for events in (r["events"] for r in affected.get("ranges", []) if r["type"] == "ECOSYSTEM"):
            introduced = next((e["introduced"] for e in events if "introduced" in e), "0")
            fixed = next((e["fixed"] for e in events if "fixed" in e), None)
            if Version(introduced) <= Version(version) and (fixed is None or Version(version) < Version(fixed)):
                return True
    return False


@pytest.fixture
def osv():
    """A stand-in for the OSV API (``POST /v1/query``): the records of ``osv-answers.json`` that affect the
    queried version, ``{}`` when none does."""
    answers = json.loads((SCANS / "osv-answers.json").read_text())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name, version = query["package"]["name"], query["version"]
            vulns = [v for v in answers.get(name, {}).get("vulns", []) if affects(v, name, version)]
            body = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()


def test_pip_audit_blocks_vulnerable_pins_in_a_deployment_not_in_a_hotfix(tmp_path, deployment, osv):
    ledger = deployment
    root = tmp_path / "svc"
    root.mkdir()
    # the default command line, asking the OSV stand-in instead of PyPI
    runner = default("scan-cves")
    runner["command"] = [*runner["command"], "--vulnerability-service", "osv", "--osv-url", osv]
    (root / "requirements.txt").write_text("jinja2==2.10\nlegacy-widgets==0.3\nrequests==2.32.3\n")
    ok, message = run_step("scan-cves", runner, root)
    assert not ok and "3 high; 3 blocking" in message
    scan = last_event(ledger, "scan", "scan-cves")
    assert (scan.data["blocking"], scan.data["counts"], scan.data["tool"]) == (3, {"HIGH": 3}, "pip-audit")
    ids = {f["id"] for f in last_event(ledger, "step", "scan-cves").data["findings"]}
    assert ids == {"CVE-2019-10906", "CVE-2020-28493", "PYSEC-2026-0001"}

    ok, message = run_step("scan-cves", runner, root, workflow="hotfix")  # blocking CVEs only: CRITICAL
    assert ok, message
    scan = last_event(ledger, "scan", "scan-cves")
    assert (scan.data["blocking"], scan.data["block_on"]) == (0, ["CRITICAL"])

    (root / "requirements.txt").write_text("jinja2==3.1.6\n")
    ok, message = run_step("scan-cves", runner, root)
    assert ok and "no findings" in message


def test_pip_audit_against_pypi(tmp_path, deployment):
    """The default command line as it runs on a worker: pip-audit asks PyPI's JSON API."""
    import requests

    try:
        status = requests.get("https://pypi.org/pypi/jinja2/2.10/json", timeout=10).status_code
    except requests.RequestException as exc:
        status = f"{type(exc).__name__}"
    if status != 200:
        reason = f"PyPI's JSON API is not reachable from here (https://pypi.org/pypi/jinja2/2.10/json: {status})"
        print(reason)
        pytest.skip(reason)
    root = tmp_path / "svc"
    root.mkdir()
    (root / "requirements.txt").write_text("jinja2==2.10\n")
    ok, message = run_step("scan-cves", default("scan-cves"), root)
    assert not ok and "blocking" in message
    ids = {f["id"] for f in last_event(deployment, "step", "scan-cves").data["findings"]}
    assert "CVE-2019-10906" in ids


def test_one_high_cve_blocks_a_deployment_and_passes_a_hotfix(tmp_path, deployment):
    ledger = deployment
    runner = {"command": ["cat", str(SCANS / "trivy-one-high.json")], "report": {"format": "trivy"}}
    ok, message = run_step("scan-cves", runner, tmp_path)
    assert not ok and "1 high, 1 low; 1 blocking (CRITICAL/HIGH CVEs and secrets block)" in message
    assert last_event(ledger, "scan", "scan-cves").data["block_on"] == ["CRITICAL", "HIGH"]
    ok, message = run_step("scan-cves", runner, tmp_path, workflow="hotfix")
    assert ok and "0 blocking (CRITICAL CVEs and secrets block)" in message
    scan = last_event(ledger, "scan", "scan-cves")
    assert (scan.data["blocking"], scan.data["counts"], scan.data["tool"]) == (0, {"HIGH": 1, "LOW": 1}, "trivy")


# ----------------------------------------------------------------------- the checklist's scan item


def scan_item(settings: dict) -> tuple[bool, str]:
    op = ChecklistItemOperator(task_id="security_scan_clean", service=SERVICE, environment="production",
                               deployment_id="deploy_shop_production/run", item="security_scan_clean",
                               version=VERSION, settings=settings)
    try:
        return True, op.execute({})["detail"]
    except AirflowFailException as exc:
        return False, str(exc)


def test_security_scan_clean_looks_at_every_scan_step_of_the_version(tmp_path, deployment):
    ledger = deployment
    ledger.start_deployment(id="deploy_shop_production/run", service=SERVICE, environment="production",
                            version=VERSION)
    both = {"scan_steps": ["scan-cves", "scan-secrets"]}
    ok, detail = scan_item(both)
    assert not ok and "no security scan result recorded for 1.4.0" in detail and "scan-cves, scan-secrets" in detail

    (tmp_path / "app.py").write_text("print('hello')\n")
    assert run_step("scan-secrets", default("scan-secrets"), tmp_path)[0]
    ok, detail = scan_item(both)
    assert not ok and detail.endswith("not clean: scan-cves recorded no result for it")

    high = {"command": ["cat", str(SCANS / "trivy-one-high.json")], "report": {"format": "trivy"}}
    assert not run_step("scan-cves", high, tmp_path)[0]
    ok, detail = scan_item(both)
    assert not ok and detail.endswith("not clean: scan-cves has 1 blocking finding(s)")

    # the latest result of each step counts: the hotfix rules passed the same report
    assert run_step("scan-cves", high, tmp_path, workflow="hotfix")[0]
    ok, detail = scan_item(both)
    assert ok and detail.startswith("1.4.0: scan-secrets clean") and "scan-cves clean" in detail
    # another version's blocking scan is not this version's
    ledger.record_event(DEPLOYMENT, "scan", "scan-secrets of 9.9.9",
                        data={"step": "scan-secrets", "version": "9.9.9", "blocking": 2})
    assert scan_item(both)[0]
    items = [e.data for e in ledger.events("deploy_shop_production/run", kind="checklist")]
    assert [i["ok"] for i in items] == [False, False, False, True, True]


# ----------------------------------------------------------------------------------------- signing


def ec_key_pair(passphrase: str | None = None) -> tuple[str, str]:
    """A fresh ECDSA P-256 key pair as PEM (private key encrypted when a passphrase is given)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.decode(), public.decode()


def cosign_sealed(der: bytes, password: str) -> str:
    """``der`` sealed as cosign seals its private keys (scrypt + NaCl secretbox), PEM type
    ``ENCRYPTED SIGSTORE PRIVATE KEY``; small scrypt parameters to keep the test fast."""
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    salt, nonce = os.urandom(32), os.urandom(24)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1024, r=8, p=1, dklen=32)
    stream = signing.xsalsa20_stream(key, nonce, 32 + len(der))
    ciphertext = bytes(a ^ b for a, b in zip(der, stream[32:]))
    sealed = {"kdf": {"name": "scrypt", "params": {"N": 1024, "r": 8, "p": 1},
                      "salt": base64.b64encode(salt).decode()},
              "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
              "ciphertext": base64.b64encode(Poly1305.generate_tag(stream[:32], ciphertext) + ciphertext).decode()}
    body = base64.b64encode(json.dumps(sealed).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----", *lines,
                      "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----", ""])


def put_artifact(image: str, content: bytes = b"service tarball") -> dict:
    """An artifact in the local registry, stored as build-image stores one."""
    return artifacts.store(image, content)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_REGISTRY_DIR", str(tmp_path / "registry"))
    return artifacts.registry_root()


SIGNING_PASSPHRASE = "correct horse battery staple"


def signing_connection(passphrase: str = SIGNING_PASSPHRASE) -> str:
    """An Airflow connection (``AIRFLOW_CONN_COSIGN``) with a fresh ECDSA P-256 key pair: the encrypted private key
    in ``extra.private_key``, its passphrase as the password, the public key in ``extra.public_key``."""
    private, public = ec_key_pair(passphrase)
    return json.dumps({"conn_type": "generic", "password": passphrase,
                       "extra": {"private_key": private, "public_key": public}})


@pytest.fixture
def cosign_key(monkeypatch):
    """The ``cosign`` connection of :func:`signing_connection`."""
    connection = signing_connection()
    monkeypatch.setenv("AIRFLOW_CONN_COSIGN", connection)
    extra = json.loads(connection)["extra"]
    return {"private": extra["private_key"], "public": extra["public_key"], "passphrase": SIGNING_PASSPHRASE}


def test_sign_then_verify_and_every_way_a_signature_fails(tmp_path, deployment, registry, cosign_key, caplog):
    ledger = deployment
    record = put_artifact(IMAGE)
    ok, message = run_step("sign-image", default("sign-image"), tmp_path)
    assert ok, message
    sig_file = signing.signature_path(IMAGE)
    sig = json.loads(sig_file.read_text())
    assert sig["digest"] == record["digest"] and set(sig) >= {"signature", "public_key_fingerprint", "signed_at"}
    artifacts_ = last_event(ledger, "step", "sign-image").data["artifacts"]
    assert (artifacts_["digest"], artifacts_["signature"]) == (record["digest"], sig["signature"])
    everything = json.dumps([e.data for e in ledger.events(DEPLOYMENT)]) + sig_file.read_text() + caplog.text
    assert cosign_key["passphrase"] not in everything and "PRIVATE KEY" not in everything

    verified = signing.verify(IMAGE, cosign_key["public"])
    assert verified["digest"] == record["digest"]
    assert verified["public_key_fingerprint"] == sig["public_key_fingerprint"]

    _, other_public = ec_key_pair()
    with pytest.raises(StepError, match="does not verify with the public key"):
        signing.verify(IMAGE, other_public)
    # the record edited to name another digest, the signature left in place
    reference = artifacts.reference_file(IMAGE)
    reference.write_text(json.dumps({**record, "digest": "sha256:" + "0" * 64}))
    with pytest.raises(StepError, match=f"signed as {record['digest']}, but the artifact is now sha256:0000"):
        signing.verify(IMAGE, cosign_key["public"])
    # the same record, the blob swapped underneath
    reference.write_text(json.dumps(record))
    blob = Path(record["path"])
    original = blob.read_bytes()
    blob.write_bytes(b"something else")
    with pytest.raises(StepError, match="changed after it was signed"):
        signing.verify(IMAGE, cosign_key["public"])
    blob.write_bytes(original)
    assert signing.verify(IMAGE, cosign_key["public"])["digest"] == record["digest"]
    # rebuilt under the same tag: the registry drops the old digest's signature
    put_artifact(IMAGE, b"rebuilt service tarball")
    with pytest.raises(StepError, match="is not signed"):
        signing.verify(IMAGE, cosign_key["public"])
    put_artifact(f"{SERVICE}:staging-9.9.9")
    with pytest.raises(StepError, match="is not signed"):
        signing.verify(f"{SERVICE}:staging-9.9.9", cosign_key["public"])
    ok, message = run_step("sign-image", default("sign-image"), tmp_path, image=f"{SERVICE}:never-built")
    assert not ok and "no artifact shop:never-built in the local registry" in message


def test_a_cosign_key_file_signs_locally(tmp_path, deployment, registry, monkeypatch):
    """cosign's own ``cosign.key`` format (the same connection serves the cosign pods on a cluster)."""
    from cryptography.hazmat.primitives import serialization

    private, public = ec_key_pair()
    der = serialization.load_pem_private_key(private.encode(), None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cosign_key = cosign_sealed(der, "s3cret-pass")
    monkeypatch.setenv("AIRFLOW_CONN_RELEASE_SIGNING", json.dumps({
        "conn_type": "generic", "password": "s3cret-pass", "extra": {"private_key": cosign_key, "public_key": public}}))
    put_artifact(IMAGE)
    runner = resolve_runner("sign-image", {"secrets": {
        "COSIGN_PRIVATE_KEY": {"connection": "release_signing", "field": "extra.private_key"}}}, "local")
    ok, message = run_step("sign-image", runner, tmp_path)
    assert ok, message
    assert signing.verify(IMAGE, public)["digest"].startswith("sha256:")
    with pytest.raises(StepError, match="wrong passphrase"):
        signing.load_private_key(cosign_key, "not-the-pass")


def check(image: str, platform_type: str = "local", ledger=None) -> tuple[bool, str]:
    op = ImageSignatureOperator(task_id="verify_image_signature", service=SERVICE, environment="production",
                                deployment_id="deploy_shop_production/run", version=VERSION, image=image,
                                platform_type=platform_type)
    try:
        return True, op.execute({})["detail"]
    except AirflowFailException as exc:
        return False, str(exc)


def test_cluster_check_uses_cosign_when_on_the_path(tmp_path, deployment, cosign_key, monkeypatch):
    ledger = deployment
    ledger.start_deployment(id="deploy_shop_production/run", service=SERVICE, environment="production",
                            version=VERSION)
    fake = tmp_path / "bin" / "cosign"
    fake.parent.mkdir()
    # a stand-in for cosign's CLI: the arguments and the key are what production passes
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1 $2 $3" = "verify --key env://COSIGN_PUBLIC_KEY" ] || exit 64
        case "$COSIGN_PUBLIC_KEY" in "-----BEGIN PUBLIC KEY-----"*) ;; *) exit 65 ;; esac
        [ "$4" = "{IMAGE}" ] && exit 0
        echo "Error: no signatures found" >&2; exit 1
        """))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    ok, detail = check(IMAGE, "kubernetes")
    assert ok and detail == f"cosign verify {IMAGE}: signature verified with the public key"
    ok, detail = check(f"{SERVICE}:staging-9.9.9", "kubernetes")
    assert not ok and detail.endswith("cosign verify refused shop:staging-9.9.9: Error: no signatures found")


def test_cluster_check_without_cosign_trusts_the_ledger_for_the_digest(deployment, monkeypatch):
    ledger = deployment
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no cosign on this worker
    ledger.start_deployment(id="deploy_shop_production/run", service=SERVICE, environment="production",
                            version=VERSION)
    ok, detail = check(IMAGE, "kubernetes")
    assert not ok and "is not signed: no successful sign-image step for it in the ledger" in detail

    def step(name: str, digest: str, ok: bool = True) -> None:
        ledger.record_event("deploy_shop_staging/run", "step", f"{name}: ok",
                            data={"step": name, "ok": ok, "image": IMAGE, "artifacts": {"digest": digest}})

    ledger.start_deployment(id="deploy_shop_staging/run", service=SERVICE, environment="staging", version=VERSION)
    step("retag-image", "sha256:" + "a" * 64)
    step("sign-image", "sha256:" + "a" * 64, ok=False)
    assert not check(IMAGE, "kubernetes")[0]
    step("sign-image", "sha256:" + "a" * 64)
    ok, detail = check(IMAGE, "kubernetes")
    assert ok and "per the ledger" in detail and "admission policy" in detail
    step("push-image", "sha256:" + "b" * 64)  # pushed again after signing: another image under the tag
    ok, detail = check(IMAGE, "kubernetes")
    assert not ok and f"{IMAGE} is sha256:{'b' * 64}, but the sign-image step signed sha256:{'a' * 64}" in detail


SIGNED_SERVICE = {
    "service.yaml": textwrap.dedent("""\
        service: signed
        platform:
          command: [python, -m, airflow_deploy_provider.demo.app, --port, "{port}", --version, "{version}"]
        steps:
          sign-image: {}
        """) + UNGOVERNED,
    "production.yaml": "environment: production\nstrategy: rolling\nreplicas: 1\nmonitoring: {duration: 0s}\n",
}


def test_production_refuses_an_unsigned_image_before_deploying(tmp_path, dags_folder, airflow_db, ledger, slack,
                                                               registry, cosign_key):
    from airflow.dag_processing.dagbag import DagBag

    write_service(tmp_path / "services" / "signed", SIGNED_SERVICE)
    (dags_folder / "signed.py").write_text(
        "from airflow_deploy_provider.factory import register_deploy_dags\n"
        f"register_deploy_dags(globals(), roots=[{str(tmp_path / 'services')!r}])\n")
    bag = DagBag(str(dags_folder))
    assert bag.import_errors == {}
    dag = bag.dags["deploy_signed_production"]
    verify = dag.task_dict["pre_deployment_checklist.verify_image_signature"]
    assert verify.upstream_task_ids == {"start_deployment"}
    assert dag.task_dict["pre_deployment_checklist.checklist_report"].items == ["image_signature"]

    put_artifact("signed:2.0.0")  # built and pushed, never signed
    run = dag.test(run_conf={"version": "2.0.0"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states["pre_deployment_checklist.verify_image_signature"] == "failed"
    assert states["pre_deployment_checklist.checklist_report"] == "failed"
    deploy = [t for t in states if t.startswith(("pre_deployment_actions.", "rolling_deployment."))]
    assert deploy and {states[t] for t in deploy} == {"upstream_failed"}  # nothing was deployed
    (deployment,) = ledger.deployments("signed", "production")
    (item,) = [e.data for e in ledger.events(deployment.id, kind="checklist")
               if e.data["item"] == "image_signature"]
    assert item["ok"] is False
    assert item["detail"].startswith("refusing the image: signed:2.0.0 is not signed: no signature beside its record")
    assert any("checklist: 1 of 1 items failed: image signature" in t for t in slack.texts), slack.texts


def test_production_check_passes_a_signed_image_on_the_local_platform(tmp_path, deployment, registry, cosign_key):
    deployment.start_deployment(id="deploy_shop_production/run", service=SERVICE, environment="production",
                                version=VERSION)
    put_artifact(IMAGE)
    assert run_step("sign-image", default("sign-image"), tmp_path)[0]
    ok, detail = check(IMAGE)
    assert ok and detail.startswith(f"{IMAGE} (sha256:") and detail.endswith("verified")

