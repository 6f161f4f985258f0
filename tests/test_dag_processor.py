"""A real Airflow dag-processor: a broken service is reported and every other service stays deployable.

Airflow marks all DAGs of a file with an import error as broken and stale. This test proves that the
broken service's error is recorded against the companion file only, so the other services' DAGs stay
active and triggerable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DAGS

pytestmark = pytest.mark.slow

QUERY = """
import json
from airflow.models.dag import DagModel
from airflow.models.errors import ParseImportError
from airflow.utils.session import create_session
with create_session() as s:
    dags = {d.dag_id: [bool(d.has_import_errors), bool(d.is_stale)] for d in s.query(DagModel)}
    errors = {e.filename: e.stacktrace for e in s.query(ParseImportError)}
print(json.dumps({"dags": dags, "errors": errors}))
"""


def test_broken_service_does_not_disable_the_others(tmp_path: Path):
    home = tmp_path / "home"
    dags = tmp_path / "dags"
    shutil.copytree(DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
    broken = dags / "services" / "broken" / ".deploy"
    broken.mkdir(parents=True)
    (broken / "service.yaml").write_text("service: broken\nplatform:\n  command: [run, '{port}']\n")
    (broken / "dev.yaml").write_text("environment: development\nstrategy: recreat\n")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=300)
    proc = subprocess.run([sys.executable, "-m", "airflow", "dag-processor", "--num-runs", "1"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run([sys.executable, "-c", QUERY], env=env, capture_output=True, text=True, timeout=120)
    state = json.loads(out.stdout.strip().splitlines()[-1])

    from tests.test_dagbag import EXPECTED_DAGS

    assert set(state["dags"]) == EXPECTED_DAGS  # every valid service's DAGs, none disabled
    assert all(flags == [False, False] for flags in state["dags"].values()), state["dags"]
    assert list(state["errors"]) == ["deploy_config_errors.py"]
    message = state["errors"]["deploy_config_errors.py"]
    assert "services/broken/.deploy/dev.yaml:2:11: error: strategy: expected one of recreate, rolling, bluegreen, " \
           "canary; got 'recreat' (did you mean 'recreate'?)" in message
