"""Every folder under tests/data/broken is a broken service; the loader must report exactly the expected
errors, each at the right file, line, field path and with the expected message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from airflow_deploy_provider.config.loader import load_service

BROKEN = Path(__file__).parent / "data" / "broken"
CASES = sorted(p for p in BROKEN.iterdir() if p.is_dir() and not p.name.startswith("_"))


def test_there_are_at_least_forty_distinct_cases():
    assert len(CASES) >= 40
    codes = {e["code"] for case in CASES for e in yaml.safe_load((case / "expect.yaml").read_text())["errors"]}
    assert len(codes) >= 30, f"only {len(codes)} distinct error codes covered"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_config(case: Path, tmp_path: Path):
    service = tmp_path / case.name
    shutil.copytree(case, service)
    deploy = service / ".deploy"
    if not (deploy / "service.yaml").exists() and not (case / "no-service-file").exists():
        shutil.copy(BROKEN / "_base" / "service.yaml", deploy / "service.yaml")
    expected = yaml.safe_load((case / "expect.yaml").read_text())["errors"]

    result = load_service(deploy, display_base=service)

    assert result.config is None, "a broken config must not load"
    errors = result.errors
    report = "\n".join(str(e) for e in errors)
    for exp in expected:
        matches = [e for e in errors if Path(e.file).name == exp["file"] and e.line == exp["line"]
                   and e.path == exp["path"] and e.code == exp["code"]]
        assert matches, f"expected {exp} among:\n{report}"
        assert any(exp["message"] in e.message for e in matches), f"message of {exp} not in:\n{report}"
        assert all(e.file.startswith(".deploy/") for e in matches)
    assert len(errors) == len(expected), f"unexpected extra errors:\n{report}"
