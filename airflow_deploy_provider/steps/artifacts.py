"""Build, push and re-tag for the local platform: a registry of content-addressed artifacts on this machine.

The local platform's "image" is a reproducible tarball of the service folder. ``build`` packs it (sorted
entries, zeroed times and owners: the same sources give the same sha256 digest, so a retried build converges),
stores the blob once under its digest and records the image reference, like a registry's tag. ``retag``
points a new reference at the same digest without rebuilding (staging's promotion), and the local platform
runs exactly the blob a reference names (``unpacked``), so what was built, scanned and signed is what runs.

Layout under ``$DEPLOY_REGISTRY_DIR`` (default ``$AIRFLOW_HOME/deploy-registry``)::

    blobs/sha256-<digest>.tar.gz      the artifacts
    <sha256 of the image reference>.json   {image, digest, path, created_at, ...}: one per reference
    <same>.sig                         signature of the digest (see :mod:`.signing`)
    unpacked/<digest>/                 what the local platform runs
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_deploy_provider.steps import StepContext, StepError, StepResult

#: Never packed: VCS data, caches, virtualenvs and the step reports.
EXCLUDED = {".git", "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache",
            ".terraform", "deploy-reports"}


def registry_root() -> Path:
    from airflow_deploy_provider.platforms.local.state import airflow_home

    return Path(os.environ.get("DEPLOY_REGISTRY_DIR") or airflow_home() / "deploy-registry")


def reference_file(image: str) -> Path:
    return registry_root() / f"{hashlib.sha256(image.encode()).hexdigest()}.json"


def lookup(image: str) -> dict[str, Any] | None:
    """The record of an image reference (``image``, ``digest``, ``path``, ...), or ``None`` if never built."""
    file = reference_file(image)
    if not file.is_file():
        return None
    return json.loads(file.read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)  # atomic: a reader never sees half a record


def pack(source: Path) -> bytes:
    """A reproducible gzipped tarball of ``source`` (same files and modes -> same bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(_files(source)):
            rel = path.relative_to(source).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and not name.endswith((".pyc", ".pyo")):
                yield path


def store(image: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    """Store ``blob`` under its digest and point ``image`` at it; returns the record."""
    digest = hashlib.sha256(blob).hexdigest()
    path = registry_root() / "blobs" / f"sha256-{digest}.tar.gz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    return point(image, digest, str(path), **extra)


def point(image: str, digest: str, path: str, **extra: Any) -> dict[str, Any]:
    old = lookup(image)
    if old is not None and old["digest"] == digest:
        return old  # a retry (or a rebuild of the same sources): nothing changes
    record = {"image": image, "digest": f"sha256:{digest}" if ":" not in digest else digest, "path": path,
              "created_at": datetime.now(timezone.utc).isoformat(), **extra}
    _write_json(reference_file(image), record)
    signature = reference_file(image).with_suffix(".sig")
    signature.unlink(missing_ok=True)  # a signature belongs to the digest the reference had before
    return record


def unpacked(image: str) -> Path:
    """The folder holding the artifact ``image`` names, unpacked once per digest (safe with parallel deploys)."""
    record = lookup(image)
    if record is None:
        raise StepError(f"image {image} is not in the local registry ({registry_root()}); the build-image step "
                        "records it")
    blob = Path(record["path"])
    digest = record["digest"].split(":", 1)[-1]
    if not blob.is_file() or hashlib.sha256(blob.read_bytes()).hexdigest() != digest:
        raise StepError(f"the artifact of {image} is missing or does not match its digest {record['digest']}")
    target = registry_root() / "unpacked" / digest
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    with tarfile.open(blob, "r:gz") as tar:
        tar.extractall(tmp, filter="data")  # the data filter refuses absolute paths and links out of the folder
    try:
        os.rename(tmp, target)
    except OSError:  # another deploy unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------------ built-ins


def build(ctx: StepContext) -> StepResult:
    """``build-image`` on the local platform: pack the service folder as the artifact tagged ``ctx.image``."""
    if not ctx.image:
        raise StepError("the release has no image reference to build")
    source = ctx.work_dir
    if not source.is_dir():
        raise StepError(f"the build context {source} does not exist")
    blob = pack(source)
    record = store(ctx.image, blob, version=ctx.version, commit=ctx.commit, service=ctx.service, pushed=False)
    files = sum(1 for _ in _files(source))
    return StepResult(ok=True, summary=f"built {ctx.image} ({files} files, {len(blob) / 1024:.0f} KiB, "
                      f"{record['digest'][:19]})", artifacts={"image": ctx.image, "digest": record["digest"],
                                                             "path": record["path"], "size": len(blob)})


def push(ctx: StepContext) -> StepResult:
    """``push-image`` on the local platform: the registry is this machine's, so pushing checks the reference
    exists and its blob matches its digest, and marks it pushed."""
    record = lookup(ctx.image)
    if record is None:
        raise StepError(f"nothing to push: {ctx.image} was not built")
    unpacked(ctx.image)  # verifies the blob against the digest
    if not record.get("pushed"):
        record = {**record, "pushed": True}
        _write_json(reference_file(ctx.image), record)
    return StepResult(ok=True, summary=f"pushed {ctx.image} ({record['digest'][:19]})",
                      artifacts={"image": ctx.image, "digest": record["digest"]})


def retag(ctx: StepContext) -> StepResult:
    """``retag-image`` on the local platform: point ``ctx.image`` at the digest of the image this version had
    in the previous environment, without rebuilding."""
    if not ctx.source_image:
        raise StepError(f"no earlier image of {ctx.version} is recorded in the ledger to re-tag")
    source = lookup(ctx.source_image)
    if source is None:
        raise StepError(f"the source image {ctx.source_image} is not in the local registry")
    record = point(ctx.image, source["digest"], source["path"], version=ctx.version, commit=ctx.commit,
                   service=ctx.service, source=ctx.source_image, pushed=True)
    return StepResult(ok=True, summary=f"tagged {ctx.source_image} as {ctx.image} ({record['digest'][:19]})",
                      artifacts={"image": ctx.image, "digest": record["digest"], "source": ctx.source_image})
