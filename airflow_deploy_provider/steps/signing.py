"""Image signatures: the local platform's built-in ``sign-image`` step, their verification, and production's
refusal of an unsigned image.

**Local platform.** An image is an artifact in the local registry of :mod:`.artifacts` (one JSON record per image
reference, written by the build/push/retag steps). ``sign`` signs a cosign-style "simple signing" payload naming
the image's repository and its digest (plus the artifact file's own sha256) and writes the signature next to
the record (``<sha256 of the reference>.sig``); :func:`verify` checks it again: signed by this key, for this
repository, for the digest the artifact has now, and the file still the one that was signed.

**Keys.** ECDSA P-256 keys, as cosign's own, so one key pair serves both platforms: the Airflow connection
``cosign`` holds the private key in ``extra.private_key`` (cosign's encrypted ``cosign.key``, or a PKCS#8 /
SEC1 PEM), its passphrase in ``password`` and the public key (``cosign.pub``) in ``extra.public_key``. Ed25519
PKCS#8 keys are read too (signed pure Ed25519: cosign itself uses Ed25519ph, so such signatures are not
cosign's).

**Clusters.** ``sign-image`` runs cosign in a pod. Production verifies with ``cosign verify`` when cosign is
on the worker's PATH, else from the ledger (a successful ``sign-image`` step for this image's digest): that
check trusts the ledger, so the real guard on a cluster is an admission policy that verifies signatures
(Kyverno ``verifyImages``, the sigstore policy-controller).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_deploy_provider.steps import StepContext, StepError, StepResult, artifacts

if TYPE_CHECKING:
    from airflow_deploy_provider.ledger.store import DeploymentLedger

DEFAULT_CONNECTION = "cosign"
SIGNATURE_TYPE = "cosign container image signature"
#: Steps whose ledger event records the digest an image reference has (on clusters: from the pods' output).
ARTIFACT_STEPS = ("build-image", "push-image", "retag-image")
COSIGN_TIMEOUT = 120.0


# ------------------------------------------------------------------------------------------ local registry


def registry_root() -> Path:
    return artifacts.registry_root()


def lookup(image: str) -> dict[str, Any] | None:
    """The local registry's record of ``image`` (``image``, ``digest``, ``path``, ``created_at``, ...), or
    ``None``; the registry is :mod:`airflow_deploy_provider.steps.artifacts`' (build, push, retag)."""
    return artifacts.lookup(image)


def signature_path(image: str) -> Path:
    """Where the signature of ``image`` lives: next to its record, ``<sha256 of the reference>.sig`` (re-pointing
    the reference at another digest removes it)."""
    return artifacts.reference_file(image).with_suffix(".sig")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _artifact_file(image: str, record: dict[str, Any]) -> Path:
    path = Path(record.get("path") or "")
    if not path.is_absolute():
        path = registry_root() / path
    if not record.get("path") or not path.is_file():
        raise StepError(f"the artifact of {image} is missing: its record points to {str(path)!r}")
    return path


# ------------------------------------------------------------------------------------------------- keys


def key_refs(secrets: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Where the signing key, its passphrase and the public key are read from: the step's ``secrets``
    (``COSIGN_PRIVATE_KEY``, ``COSIGN_PASSWORD``, ``COSIGN_PUBLIC_KEY``), by default the private key's
    connection (``cosign``) fields ``extra.private_key``, ``password`` and ``extra.public_key``."""
    secrets = secrets or {}
    conn = (secrets.get("COSIGN_PRIVATE_KEY") or {}).get("connection") or DEFAULT_CONNECTION
    return {"private": secrets.get("COSIGN_PRIVATE_KEY") or {"connection": conn, "field": "extra.private_key"},
            "password": secrets.get("COSIGN_PASSWORD") or {"connection": conn, "field": "password"},
            "public": secrets.get("COSIGN_PUBLIC_KEY") or {"connection": conn, "field": "extra.public_key"}}


def read_secret(name: str, ref: dict[str, Any], required: bool = True) -> str | None:
    """A secret of a connection or variable, masked in the logs; ``None`` when empty and not ``required``."""
    from airflow_deploy_provider.steps.secrets import secret_value

    if required:
        return secret_value(name, ref)
    from airflow.sdk import Connection, Variable
    from airflow.sdk.log import mask_secret

    from airflow_deploy_provider.steps.secrets import connection_field

    try:
        value = (Variable.get(ref["variable"], default=None) if ref.get("variable")
                 else connection_field(Connection.get(ref["connection"]), ref.get("field") or "password"))
    except Exception as exc:  # noqa: BLE001 - the message names the source, never a value
        raise StepError(f"secret {name}: cannot read {ref.get('connection') or ref.get('variable')!r}: "
                        f"{type(exc).__name__}") from None
    if not value:
        return None
    mask_secret(str(value))
    return str(value)


def load_private_key(pem: str, password: str | None) -> Any:
    """An ECDSA or Ed25519 private key from cosign's encrypted key or a (possibly encrypted) PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    data = pem.strip().encode()
    try:
        if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
            key = serialization.load_der_private_key(decrypt_cosign_key(data, password or ""), None)
        else:
            try:
                key = serialization.load_pem_private_key(data, password.encode() if password else None)
            except TypeError:  # a passphrase for an unencrypted key (or none for an encrypted one)
                key = serialization.load_pem_private_key(data, None)
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001 - never echo key material
        raise StepError(f"the signing key could not be read ({type(exc).__name__}): a cosign.key, or a PKCS#8 "
                        "PEM, with its passphrase in the connection's password") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise StepError(f"the signing key is {type(key).__name__}; use ECDSA P-256 (cosign's) or Ed25519")
    return key


def load_public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        key = serialization.load_pem_public_key(pem.strip().encode())
    except Exception as exc:  # noqa: BLE001
        raise StepError(f"the public key could not be read ({type(exc).__name__}): a PEM public key such as "
                        "cosign.pub") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise StepError(f"the public key is {type(key).__name__}; use ECDSA P-256 (cosign's) or Ed25519")
    return key


def fingerprint(public_key: Any) -> str:
    """``SHA256:<hex>`` of the public key's DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def _sign_bytes(key: Any, payload: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return key.sign(payload)


def _verify_bytes(key: Any, signature: bytes, payload: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


# cosign's private key file ("ENCRYPTED SIGSTORE PRIVATE KEY"): a PKCS#8 key sealed with NaCl secretbox
# (XSalsa20-Poly1305) under an scrypt key of the passphrase (go-securesystemslib's "encrypted" format). The
# ``cryptography`` package has scrypt (hashlib) and Poly1305 but no Salsa20: the cipher is written out here.

_MASK = 0xFFFFFFFF
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_QUARTERS = ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),  # columns
             (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14))  # rows


def _salsa20_rounds(key: bytes, block: bytes) -> tuple[list[int], list[int]]:
    """The Salsa20/20 state for a 32-byte key and 16 input bytes, before and after the 20 rounds."""
    k, n = struct.unpack("<8I", key), struct.unpack("<4I", block)
    start = [_SIGMA[0], *k[:4], _SIGMA[1], *n, _SIGMA[2], *k[4:], _SIGMA[3]]
    x = list(start)
    for _ in range(10):
        for a, b, c, d in _QUARTERS:
            t = (x[a] + x[d]) & _MASK
            x[b] ^= ((t << 7) | (t >> 25)) & _MASK
            t = (x[b] + x[a]) & _MASK
            x[c] ^= ((t << 9) | (t >> 23)) & _MASK
            t = (x[c] + x[b]) & _MASK
            x[d] ^= ((t << 13) | (t >> 19)) & _MASK
            t = (x[d] + x[c]) & _MASK
            x[a] ^= ((t << 18) | (t >> 14)) & _MASK
    return start, x


def xsalsa20_stream(key: bytes, nonce: bytes, length: int) -> bytes:
    """``length`` bytes of XSalsa20's key stream (32-byte key, 24-byte nonce)."""
    _, h = _salsa20_rounds(key, nonce[:16])  # HSalsa20: the sub-key
    subkey = struct.pack("<8I", h[0], h[5], h[10], h[15], h[6], h[7], h[8], h[9])
    out = bytearray()
    for counter in range((length + 63) // 64):
        start, x = _salsa20_rounds(subkey, nonce[16:24] + struct.pack("<Q", counter))
        out += struct.pack("<16I", *((a + b) & _MASK for a, b in zip(x, start)))
    return bytes(out[:length])


def secretbox_open(box: bytes, nonce: bytes, key: bytes) -> bytes:
    """NaCl ``crypto_secretbox_open``: ``box`` is the 16-byte Poly1305 tag, then the ciphertext."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    stream = xsalsa20_stream(key, nonce, 32 + len(box) - 16)
    try:
        Poly1305.verify_tag(stream[:32], box[16:], box[:16])
    except InvalidSignature:
        raise StepError("the signing key could not be decrypted: wrong passphrase (the connection's "
                        "password)") from None
    return bytes(c ^ s for c, s in zip(box[16:], stream[32:]))


def decrypt_cosign_key(pem: bytes, password: str) -> bytes:
    """The PKCS#8 DER key inside cosign's encrypted private key file."""
    body = b"".join(line for line in pem.splitlines() if line.strip() and not line.startswith(b"-----"))
    sealed = json.loads(base64.b64decode(body))
    kdf, cipher = sealed["kdf"], sealed["cipher"]
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise StepError(f"cosign key sealed with {kdf.get('name')}/{cipher.get('name')}; only scrypt + "
                        "nacl/secretbox (cosign's) is read")
    n, r, p = (int(kdf["params"][k]) for k in ("N", "r", "p"))
    if n > 1 << 20 or r > 32 or p > 16:
        raise StepError("cosign key with unreasonable scrypt parameters")
    key = hashlib.scrypt(password.encode(), salt=base64.b64decode(kdf["salt"]), n=n, r=r, p=p,
                         maxmem=256 * r * (n + p + 1) + (1 << 20), dklen=32)
    return secretbox_open(base64.b64decode(sealed["ciphertext"]), base64.b64decode(cipher["nonce"]), key)


# ------------------------------------------------------------------------------------- sign and verify


def repository(image: str) -> str:
    """The image reference without tag or digest (cosign's ``docker-reference``)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def signing_payload(image: str, digest: str, artifact_sha256: str) -> bytes:
    """cosign's simple-signing payload for the image's repository and digest; the artifact file's sha256 rides
    in the signed ``optional`` section, so a file swapped under an unchanged record does not verify."""
    return json.dumps({"critical": {"identity": {"docker-reference": repository(image)},
                                    "image": {"docker-manifest-digest": digest}, "type": SIGNATURE_TYPE},
                       "optional": {"artifact-sha256": artifact_sha256}},
                      separators=(",", ":"), sort_keys=True).encode()


def sign(ctx: StepContext) -> StepResult:
    """Built-in ``sign-image`` of the local platform: sign the image's artifact with the key of the ``cosign``
    connection (or the step's ``secrets``) and store the signature next to its record. Signing again
    replaces the signature (ECDSA signatures differ each time; each verifies)."""
    image = ctx.image
    record = lookup(image)
    if record is None:
        raise StepError(f"no artifact {image} in the local registry ({registry_root()}): build-image and "
                        "push-image (or retag-image) put it there before it is signed")
    artifact = file_sha256(_artifact_file(image, record))
    refs = key_refs(ctx.runner.get("secrets"))
    key = load_private_key(read_secret("COSIGN_PRIVATE_KEY", refs["private"]) or "",
                           read_secret("COSIGN_PASSWORD", refs["password"], required=False))
    payload = signing_payload(image, record["digest"], artifact)
    signature = base64.b64encode(_sign_bytes(key, payload)).decode()
    key_id = fingerprint(key.public_key())
    sig = {"image": image, "digest": record["digest"], "payload": base64.b64encode(payload).decode(),
           "signature": signature, "public_key_fingerprint": key_id,
           "signed_at": datetime.now(timezone.utc).isoformat()}
    path = signature_path(image)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sig, indent=2))
    tmp.replace(path)  # atomic: a reader never sees half a signature
    ctx.log.info("Signed %s (%s) with key %s: %s", image, record["digest"], key_id, path)
    return StepResult(ok=True, summary=f"signed {image} ({record['digest'][:19]}...) with key {key_id[:23]}...",
                      artifacts={"digest": record["digest"], "signature": signature,
                                 "public_key_fingerprint": key_id, "signature_file": str(path)})


def verify(image: str, public_key_pem: str) -> dict[str, Any]:
    """Check the local signature of ``image`` with the public key; raise :class:`StepError` saying what is
    wrong (no artifact, not signed, another key, another digest, the file changed), else return what was
    verified (``digest``, ``public_key_fingerprint``, ``signed_at``)."""
    record = lookup(image)
    if record is None:
        raise StepError(f"no artifact {image} in the local registry ({registry_root()})")
    path = signature_path(image)
    if not path.is_file():
        raise StepError(f"{image} is not signed: no signature beside its record in the local registry "
                        f"({path}); staging's sign-image step signs it")
    public_key = load_public_key(public_key_pem)
    key_id = fingerprint(public_key)
    try:
        sig = json.loads(path.read_text())
        payload = base64.b64decode(sig["payload"], validate=True)
        signature = base64.b64decode(sig["signature"], validate=True)
        claims = json.loads(payload)["critical"]
        optional = json.loads(payload).get("optional") or {}
    except (ValueError, KeyError, TypeError) as exc:
        raise StepError(f"the signature of {image} is unreadable ({type(exc).__name__}): {path}") from None
    if not _verify_bytes(public_key, signature, payload):
        raise StepError(f"the signature of {image} does not verify with the public key {key_id} (signed with "
                        f"{sig.get('public_key_fingerprint', 'an unknown key')}, or altered)")
    signed_digest = claims["image"]["docker-manifest-digest"]
    if claims.get("type") != SIGNATURE_TYPE or claims["identity"]["docker-reference"] != repository(image):
        raise StepError(f"the signature next to {image} is for {claims['identity']['docker-reference']!r}, "
                        f"not {repository(image)!r}")
    if signed_digest != record["digest"]:
        raise StepError(f"{image} was signed as {signed_digest}, but the artifact is now {record['digest']}: "
                        "rebuilt or re-tagged after it was signed")
    current = file_sha256(_artifact_file(image, record))
    if optional.get("artifact-sha256") != current:
        raise StepError(f"the artifact file of {image} changed after it was signed (sha256 "
                        f"{optional.get('artifact-sha256')} signed, {current} now)")
    return {"digest": signed_digest, "public_key_fingerprint": key_id, "signed_at": sig.get("signed_at")}


# ---------------------------------------------------------------------------------- production's check


def check_image(image: str, *, platform_type: str, secrets: dict[str, Any] | None,
                ledger: DeploymentLedger, service: str) -> str:
    """Production's refusal of an unsigned image (the service declares ``sign-image``): what was verified,
    or :class:`StepError` saying why the image is refused.

    - local platform: :func:`verify` with the public key of the signing key's connection;
    - clusters: ``cosign verify --key env://COSIGN_PUBLIC_KEY <image>`` when cosign is on the worker's PATH,
      else the ledger: a successful ``sign-image`` step for this image with the digest the ledger knows it by.
    """
    if not image:
        raise StepError("no image to verify (the run resolved none)")
    refs = key_refs(secrets)
    if platform_type == "local":
        result = verify(image, read_secret("COSIGN_PUBLIC_KEY", refs["public"]) or "")
        return (f"{image} ({result['digest'][:19]}...) signed {result['signed_at'] or ''} with key "
                f"{result['public_key_fingerprint'][:23]}...: verified")
    cosign = shutil.which("cosign")
    if cosign:
        return cosign_verify(cosign, image, read_secret("COSIGN_PUBLIC_KEY", refs["public"]) or "")
    return ledger_signature(ledger, service, image)


def cosign_verify(cosign: str, image: str, public_key_pem: str) -> str:
    env = {**os.environ, "COSIGN_PUBLIC_KEY": public_key_pem}
    command = [cosign, "verify", "--key", "env://COSIGN_PUBLIC_KEY", image]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=COSIGN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise StepError(f"cosign verify {image} timed out after {COSIGN_TIMEOUT:g}s") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise StepError(f"cosign verify refused {image}: {last[0][:300]}")
    return f"cosign verify {image}: signature verified with the public key"


def ledger_signature(ledger: DeploymentLedger, service: str, image: str) -> str:
    """The ledger's word that ``image`` was signed: the latest successful ``sign-image`` step for it, whose
    digest must be the one the image was last built, pushed or re-tagged with (or pinned to, ``@sha256:``)."""
    events = [e for e in ledger.service_events(service, "step")
              if e.data.get("image") == image and e.data.get("ok")]
    signed = [e for e in events if e.data.get("step") == "sign-image"]
    if not signed:
        raise StepError(f"{image} is not signed: no successful sign-image step for it in the ledger (and no "
                        "cosign on the worker to ask the registry)")
    built = [e for e in events if e.data.get("step") in ARTIFACT_STEPS and (e.data.get("artifacts") or {}).get("digest")]
    pinned = image.split("@", 1)[1] if "@" in image else None
    current = pinned or (built[-1].data["artifacts"]["digest"] if built else None)
    last = signed[-1]
    signed_digest = (last.data.get("artifacts") or {}).get("digest")
    if current and signed_digest != current:
        raise StepError(f"{image} is {current}, but the sign-image step signed "
                        f"{signed_digest or 'an unrecorded digest'}: re-pushed after signing?")
    what = f"{signed_digest[:19]}..." if signed_digest else "digest not recorded"
    return (f"{image} ({what}) signed by {last.deployment_id} at {last.at:%Y-%m-%d %H:%M} per the ledger (no "
            "cosign on the worker; the cluster's admission policy verifies the signature itself)")
