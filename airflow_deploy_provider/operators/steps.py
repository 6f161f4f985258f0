"""Pipeline steps around the deployment: build, scans, promotion, infrastructure, monitoring set-up."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.registry import NotImplementedForPlatform


class PipelineStepOperator(DeploymentBaseOperator):
    """
    Runs a declared pipeline step (``steps`` in ``service.yaml``): a command on the worker, or a pod
    (``image`` and ``args``) on Kubernetes. The command's placeholders (``{image}``, ``{version}``,
    ``{commit}``, ``{short_sha}``, ``{service}``, ``{environment}``) are filled from the release. Exit status 0
    passes; the result goes to the ledger.

    Template fields: ``deployment_id``, ``version``, ``image``, ``commit``.

    :param step: step name (``build-image``, ``scan-cves``, ...).
    :param runner: ``command`` or ``image``/``args``, ``env``, ``timeout``.
    :param version: version (templated).
    :param image: image of the release (templated).
    :param commit: commit sha (templated).
    :param service_root: folder the command runs in.
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "image", "commit")
    ui_color = "#f1f3f4"

    def __init__(self, *, step: str, runner: dict[str, Any], version: str = "", image: str = "", commit: str = "",
                 service_root: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (runner.get("command") is None) == (runner.get("image") is None):
            raise ValueError(f"{self.task_id}: step {step!r} needs exactly one of command or image")
        self.step = step
        self.runner = runner
        self.version = version
        self.image = image
        self.commit = commit
        self.service_root = service_root
        timeout = runner.get("timeout", timedelta(minutes=30))
        self.step_timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.expected_duration = timedelta(seconds=min(120.0, self.step_timeout))

    def describe(self) -> str:
        if self.runner.get("command"):
            return f"{self.step}: {' '.join(self.runner['command'])}"
        return f"{self.step}: pod {self.runner['image']}"

    def execute(self, context: Any) -> dict[str, Any]:
        if self.runner.get("image"):
            raise NotImplementedForPlatform(
                f"step {self.step!r} runs as a Kubernetes pod, which is not implemented in this version of "
                "airflow-deploy-provider; give it a 'command' to run on the worker")
        values = {"image": self.image, "version": self.version, "commit": self.commit or "",
                  "short_sha": (self.commit or "")[:7], "service": self.service, "environment": self.environment,
                  "region": self.region or "", "port": "", "url": "", "replica": "", "run_id": ""}
        command = [part.format(**values) for part in self.runner["command"]]
        cwd = Path(self.service_root or ".")
        env = {**os.environ, **(self.runner.get("env") or {})}
        self.log.info("Running %s in %s", command, cwd)
        try:
            proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=self.step_timeout)
        except FileNotFoundError:
            self.record("step", f"{self.step}: command {command[0]!r} not found", data={"step": self.step, "ok": False})
            raise AirflowException(f"step {self.step}: command {command[0]!r} not found on the worker") from None
        except subprocess.TimeoutExpired:
            self.record("step", f"{self.step}: timed out", data={"step": self.step, "ok": False})
            raise AirflowException(f"step {self.step} timed out after {self.step_timeout:g}s") from None
        for line in (proc.stdout + proc.stderr).splitlines()[-300:]:
            self.log.info("| %s", line)
        ok = proc.returncode == 0
        self.record("step", f"{self.step}: exit status {proc.returncode}",
                    data={"step": self.step, "ok": ok, "exit_code": proc.returncode, "command": command})
        if not ok:
            raise AirflowException(f"step {self.step} failed with exit status {proc.returncode}")
        return {"step": self.step, "exit_code": proc.returncode}
