"""Checks around a deployment: health, test suites, logs, configuration, readiness of a rollback."""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_deploy_provider.operators.base import (
    DeploymentBaseOperator,
    PlatformOperatorBase,
    check_choice,
    wait_for,
)
from airflow_deploy_provider.operators.lifecycle import NotifyingMixin


class HealthCheckOperator(PlatformOperatorBase):
    """
    The spec's ``health_check.py``: ``GET <path>`` must answer 200 with a JSON body, tried ``attempts`` times
    ``delay`` apart, and ``GET <metrics_path>`` must expose ``deployment_version``. When ``version`` is given the
    exposed version must match it. Retries wait in a trigger.

    Template fields: ``deployment_id``, ``version``.

    :param role: which replicas to probe: ``canary``, ``stable``, or ``None`` for the service's entry point.
    :param path: health path.
    :param metrics_path: metrics path.
    :param attempts: tries of the check (inside one task try; ``retries`` stays Airflow's task retries).
    :param delay: seconds between attempts.
    :param timeout: seconds per request.
    :param version: expected version (templated), or empty to skip that check.
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#ceead6"
    expected_duration = timedelta(seconds=3)

    def __init__(self, *, role: str | None = None, path: str = "/health", metrics_path: str = "/metrics",
                 attempts: int = 10, delay: float = 5.0, timeout: float = 5.0, version: str | None = None,
                 deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        if role is not None:
            check_choice(self.task_id, "role", role, ("stable", "canary"))
        if not path.startswith("/") or not metrics_path.startswith("/"):
            raise ValueError(f"{self.task_id}: paths must start with '/'")
        if attempts < 1:
            raise ValueError(f"{self.task_id}: attempts must be at least 1")
        self.role = role
        self.path = path
        self.metrics_path = metrics_path
        self.attempts = attempts
        self.delay = delay
        self.timeout = timeout
        self.version = version

    def describe(self) -> str:
        return f"GET {self.path} must answer 200 with JSON and {self.metrics_path} must expose deployment_version " \
               f"({self.attempts} tries, {self.delay:g}s apart)"

    def execute(self, context: Any) -> Any:
        from airflow_deploy_provider.triggers.http import HealthCheckTrigger

        url = self.get_platform().endpoint(self.role)  # type: ignore[arg-type]
        trigger = HealthCheckTrigger(url=url, path=self.path, metrics_path=self.metrics_path, retries=self.attempts,
                                     delay=self.delay, timeout=self.timeout, version=self.version or None,
                                     end_task=self.deferrable,
                                     ledger={"deployment_id": self.deployment_id, "ledger_conn_id": self.ledger_conn_id,
                                             "task_id": self.task_id})
        return wait_for(self, trigger, "execute_complete", context,
                        timedelta(seconds=self.attempts * (self.delay + 2 * self.timeout) + 60), self.deferrable)

    def execute_complete(self, context: Any, event: dict[str, Any] | str) -> dict[str, Any] | None:
        if event == "success":  # the trigger recorded the passed check and ended the task
            return None
        assert isinstance(event, dict)
        for line in event.get("log", []):
            self.log.info("%s", line)
        if event.get("ok"):
            return event  # recorded by the trigger
        self.record("check", f"health check of {event.get('url')}: FAILED", data={k: v for k, v in event.items()
                                                                                  if k != "log"})
        raise AirflowException(f"health check failed: {event.get('reason')}")


class TestSuiteOperator(PlatformOperatorBase):
    """
    Runs a named test suite against a version: a command on the worker (exit status 0 passes; ``{url}`` is
    the version's address) or HTTP checks (status and body). The built-in ``smoke`` suite, when the service
    does not define one, probes the health path and checks that the metrics endpoint exposes the version.

    Template fields: ``deployment_id``, ``version``.

    :param suite_name: the suite's name.
    :param suite: the suite (``command`` or ``http``, ``timeout``, ``env``, ``working_dir``), or ``None`` for the
        built-in smoke suite.
    :param role: ``canary`` (green), ``stable``, or ``None`` for the service's entry point.
    :param version: the version under test (templated).
    :param service_root: folder the command runs in (the service folder).
    :param health_path: health path of the built-in smoke suite.
    """

    __test__ = False  # not a pytest class
    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#ceead6"

    def __init__(self, *, suite_name: str, suite: dict[str, Any] | None, role: str | None = None, version: str = "",
                 service_root: str | None = None, health_path: str = "/health",
                 metrics_provider: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics_provider = metrics_provider
        if suite is not None and (suite.get("command") is None) == (suite.get("http") is None):
            raise ValueError(f"{self.task_id}: suite {suite_name!r} needs exactly one of command or http")
        self.suite_name = suite_name
        self.suite = suite
        self.role = role
        self.version = version
        self.service_root = service_root
        self.health_path = health_path
        timeout = (suite or {}).get("timeout", timedelta(minutes=10))
        self.suite_timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.expected_duration = timedelta(seconds=min(60.0, self.suite_timeout) if suite and suite.get("command")
                                           else 3)

    def describe(self) -> str:
        if self.suite is None:
            return f"built-in {self.suite_name} suite: {self.health_path} and the metrics endpoint"
        if self.suite.get("command"):
            return f"run {self.suite_name}: {' '.join(self.suite['command'])}"
        return f"{self.suite_name}: {len(self.suite['http'])} HTTP check(s)"

    def execute(self, context: Any) -> dict[str, Any]:
        url = self.get_platform().endpoint(self.role)  # type: ignore[arg-type]
        if self.suite is None:
            results = http_checks(url, [{"path": self.health_path, "status": 200, "json": True},
                                        {"path": "/metrics", "status": 200, "contains": "deployment_version"}])
        elif self.suite.get("http"):
            results = http_checks(url, self.suite["http"])
        else:
            results = [self._run_command(url)]
        failed = [r for r in results if not r["ok"]]
        for r in results:
            self.log.info("%s %s", "PASS" if r["ok"] else "FAIL", r["what"])
        self.record("test", f"suite {self.suite_name} against {url}: "
                    f"{'passed' if not failed else f'{len(failed)} of {len(results)} failed'}",
                    data={"suite": self.suite_name, "url": url, "results": results, "version": self.version,
                          "environment": self.environment})
        if failed:
            raise AirflowException(f"test suite {self.suite_name} failed: " + "; ".join(r["what"] for r in failed))
        return {"suite": self.suite_name, "passed": len(results)}

    def _run_command(self, url: str) -> dict[str, Any]:
        from airflow_deploy_provider.operators.steps import report_dir
        from airflow_deploy_provider.steps import fill, worker_env

        suite = self.suite or {}
        reports = report_dir(self.service, self.environment, self.version, f"suite-{self.suite_name}")
        values = {"url": url, "version": self.version, "service": self.service, "environment": self.environment,
                  "region": self.region or "", "port": "", "image": "", "commit": "", "short_sha": "",
                  "replica": "", "run_id": "", "reports": str(reports), **self._load_values(suite)}
        command = fill(suite["command"], values)
        cwd = Path(self.service_root or ".") / (suite.get("working_dir") or "")
        env = worker_env({**(suite.get("env") or {}), "DEPLOY_URL": url, "DEPLOY_VERSION": self.version,
                          "DEPLOY_REPORTS": str(reports)})
        try:
            proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=self.suite_timeout)
        except FileNotFoundError as exc:
            return {"ok": False, "what": f"{command[0]}: command not found ({exc})"}
        except subprocess.TimeoutExpired:
            return {"ok": False, "what": f"{' '.join(command)} timed out after {self.suite_timeout:g}s"}
        for line in (proc.stdout + proc.stderr).splitlines()[-200:]:
            self.log.info("| %s", line)
        result = {"ok": proc.returncode == 0, "what": f"{' '.join(command)} exited with {proc.returncode}",
                  "exit_code": proc.returncode}
        report = suite.get("report")
        if report:
            from airflow_deploy_provider.steps import StepError
            from airflow_deploy_provider.steps.reports import read_report
            from airflow_deploy_provider.steps.verdict import judge_suite

            path = report.get("path")
            try:
                findings, where = read_report(report["format"], fill([path], values)[0] if path else None,
                                              proc.stdout, cwd)
            except StepError as exc:
                return {**result, "ok": False, "what": f"{result['what']}; {exc}"}
            previous = self._last_passing_stats()
            verdict = judge_suite(report["format"], findings, suite.get("criteria"), proc.returncode, previous)
            result = {**result, **verdict, "report": where,
                      "what": f"{' '.join(command[:3])}...: {verdict['what']}"}
        return result

    def _load_values(self, suite: dict[str, Any]) -> dict[str, str]:
        """``{rps}`` and ``{users}``: the suite's share of production's current request rate."""
        share = suite.get("traffic_share")
        if share is None:
            return {"rps": "", "users": ""}
        rate = self._production_rate()
        source = "production's request rate"
        if rate is None:
            rate, source = suite.get("baseline_rps"), "baselineRps"
        if rate is None:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"suite {self.suite_name}: production's request rate cannot be measured and "
                                       "the suite has no baselineRps for its trafficShare")
        rps = max(1.0, rate * share / 100)
        self.log.info("Load: %g%% of %s (%.1f rps) = %.1f rps", share, source, rate, rps)
        return {"rps": f"{rps:.1f}", "users": str(math.ceil(rps))}

    def _production_rate(self) -> float | None:
        if not self.metrics_provider:
            return None
        import asyncio

        from airflow_deploy_provider.config.types import BUILTIN_METRICS
        from airflow_deploy_provider.metrics.base import MetricQuery
        from airflow_deploy_provider.registry import get_metric_provider

        version = self.ledger.last_stable_version(self.service, "production")
        if version is None:
            return None
        settings = {**self.metrics_provider, "namespace": "production"}
        query = MetricQuery(BUILTIN_METRICS["request_rate"], self.service, "production", version,
                            timedelta(minutes=1))
        try:
            result = asyncio.run(get_metric_provider(settings).evaluate(query))
        except Exception as exc:  # noqa: BLE001 - no measurement: fall back to the baseline
            self.log.warning("production request rate unavailable: %s", exc)
            return None
        return result.value if result.value else None

    def _last_passing_stats(self) -> dict[str, Any] | None:
        """Aggregated stats of the last passing run of this suite in this environment (for ``maxRegression``)."""
        for event in reversed(self.ledger.service_events(self.service, kind="test")):
            data = event.data or {}
            if data.get("suite") != self.suite_name or data.get("environment", self.environment) != self.environment:
                continue
            stats = next((r.get("stats") for r in data.get("results", []) if r.get("stats")), None)
            if stats and all(r.get("ok") for r in data.get("results", [])):
                return stats
        return None


def http_checks(base_url: str, checks: list[dict[str, Any]], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run HTTP checks; each returns ``{"ok", "what", ...}``."""
    import json

    import requests

    results = []
    for check in checks:
        method = check.get("method", "GET")
        url = base_url.rstrip("/") + check["path"]
        expected = int(check.get("status", 200))
        try:
            resp = requests.request(method, url, data=check.get("body"), timeout=timeout)
        except requests.RequestException as exc:
            results.append({"ok": False, "what": f"{method} {check['path']}: {exc.__class__.__name__}: {exc}"})
            continue
        problems = []
        if resp.status_code != expected:
            problems.append(f"status {resp.status_code}, expected {expected}")
        if check.get("contains") and check["contains"] not in resp.text:
            problems.append(f"body lacks {check['contains']!r}")
        if check.get("json"):
            try:
                json.loads(resp.text)
            except ValueError:
                problems.append("body is not JSON")
        results.append({"ok": not problems, "status": resp.status_code,
                        "what": f"{method} {check['path']}: " + ("; ".join(problems) or f"{resp.status_code} ok")})
    return results


class LogValidationOperator(PlatformOperatorBase):
    """
    Checks that the new version's logs reach the log pipeline and hold no fatal errors: the newest lines of
    its replicas must exist and match none of ``fatal_patterns``.

    :param role: ``canary`` or ``stable``.
    :param fatal_patterns: regular expressions of lines that fail the check.
    """

    DEFAULT_PATTERNS = (r"Traceback \(most recent call last\)", r"\bFATAL\b", r"\bpanic:", r"OutOfMemory")

    def __init__(self, *, role: str = "stable", fatal_patterns: Sequence[str] = DEFAULT_PATTERNS,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "role", role, ("stable", "canary"))
        self.role = role
        self.fatal_patterns = list(fatal_patterns)
        for pattern in self.fatal_patterns:
            re.compile(pattern)

    def describe(self) -> str:
        return "check the new version's logs arrive and hold no fatal errors"

    def execute(self, context: Any) -> None:
        lines = self.get_platform().logs(self.role)  # type: ignore[arg-type]
        if not lines:
            raise AirflowException(f"no log lines from the {self.role} replicas: logs are not collected")
        fatal = [line for line in lines if any(re.search(p, line) for p in self.fatal_patterns)]
        self.record("check", f"{len(lines)} log line(s) read, {len(fatal)} fatal",
                    data={"lines": len(lines), "fatal": fatal[:20]})
        if fatal:
            raise AirflowException(f"{len(fatal)} fatal log line(s), first: {fatal[0]}")


class ConfigValidationOperator(DeploymentBaseOperator):
    """
    Validates the service's ``.deploy`` files again at run time and records what changed since the last
    deployment to this environment (the configuration fingerprint).

    :param deploy_dir: the service's ``.deploy`` folder.
    :param fingerprint: fingerprint of the files the DAG was built from.
    """

    def __init__(self, *, deploy_dir: str, fingerprint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deploy_dir = deploy_dir
        self.fingerprint = fingerprint

    def describe(self) -> str:
        return "validate the .deploy files and record configuration changes"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.config.loader import load_service

        result = load_service(self.deploy_dir)
        for issue in result.issues:
            self.log.info("%s", issue)
        if result.config is None:
            raise AirflowFailException(f"the configuration is invalid ({len(result.errors)} error(s)): "
                                       + "; ".join(str(e) for e in result.errors[:5]))
        current = result.config.fingerprint
        if current != self.fingerprint:
            raise AirflowFailException("the .deploy files changed after this DAG was parsed; trigger the run again "
                                       "so that it follows the current configuration")
        last = next((d for d in self.ledger.deployments(self.service, self.environment, status=["succeeded"])
                     if d.config_fingerprint), None)
        changed = last is None or last.config_fingerprint != current
        self.record("check", "configuration valid; " + ("changed since the last deployment" if changed else
                                                        "unchanged since the last deployment"),
                    data={"fingerprint": current, "previous": last.config_fingerprint if last else None,
                          "changed": changed, "warnings": [str(w) for w in result.warnings]})
        return {"fingerprint": current, "changed": changed}


class PromotionCheckOperator(DeploymentBaseOperator):
    """
    Refuses a version that has not passed the previous environment (development before staging, staging
    before production), from the ledger. Hotfixes skip this check.

    Template fields: ``deployment_id``, ``version``.

    :param version: the version to deploy (templated).
    :param previous_environment: the environment it must have passed.
    """

    template_fields: Sequence[str] = ("deployment_id", "version")

    def __init__(self, *, version: str, previous_environment: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.previous_environment = previous_environment

    def describe(self) -> str:
        return f"the version must have passed {self.previous_environment} (ledger)"

    def execute(self, context: Any) -> None:
        self.record("check", check_passed(self.ledger, self.service, self.previous_environment, self.version))


def check_passed(ledger: Any, service: str, environment: str, version: str) -> str:
    """``"<version> passed <environment>"``, or AirflowFailException naming the versions that did."""
    if not ledger.has_passed(service, environment, version):
        passed = ledger.versions_passed(service, environment)[:5]
        raise AirflowFailException(f"version {version} has not passed {environment}; versions that did: "
                                   f"{', '.join(passed) or 'none'}")
    return f"{version} passed {environment}"


class RollbackReadinessOperator(DeploymentBaseOperator):
    """
    Confirms a rollback is possible before changing anything: the previous stable version is known in the
    ledger and the rollback DAG exists. A first deployment has nothing to roll back to, which is logged.

    :param rollback_dag_id: the environment's rollback DAG.
    """

    def __init__(self, *, rollback_dag_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rollback_dag_id = rollback_dag_id

    def describe(self) -> str:
        return f"confirm rollback readiness (previous stable version known, {self.rollback_dag_id} present)"

    def execute(self, context: Any) -> dict[str, Any]:
        previous = self.ledger.last_stable(self.service, self.environment, self.region)
        if previous is None:
            self.record("check", "first deployment: no earlier version to roll back to; a failed rollout removes the "
                        "new version", data={"previous": None, "rollback_dag": self.rollback_dag_id})
            return {"previous": None}
        self.record("check", f"rollback ready: {self.rollback_dag_id} restores {previous.version}",
                    data={"previous": previous.version, "image": previous.image, "rollback_dag": self.rollback_dag_id})
        return {"previous": previous.version}


class IdentifyStableVersionOperator(PlatformOperatorBase):
    """
    Confirms the rollback target: a version that succeeded in this environment before, different from what
    runs now (read from the platform).

    Template fields: ``deployment_id``, ``version``.

    :param version: the rollback target resolved at the start (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")

    def __init__(self, *, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    def describe(self) -> str:
        return "identify the last stable version (ledger) and what runs now (platform)"

    def execute(self, context: Any) -> dict[str, Any]:
        if not self.ledger.has_passed(self.service, self.environment, self.version):
            raise AirflowFailException(f"{self.version} never succeeded in {self.environment}; refusing to roll back to it")
        split = self.get_platform().traffic()
        self.record("rollback", f"rolling back from {split.stable_version} to {self.version}",
                    data={"from": split.stable_version, "to": self.version, "traffic": split.to_dict()})
        return {"from": split.stable_version, "to": self.version}


class ChecklistItemOperator(DeploymentBaseOperator):
    """
    One item of the production pre-deployment checklist. A failed item stops the run before anything
    changes.

    Template fields: ``deployment_id``, ``version``.

    :param item: ``staging_tests_passed``, ``security_scan_clean``, ``release_notes``, ``rollback_plan``,
        ``on_call_notified``, ``maintenance_window``, ``database_backup`` or ``image_signature`` (see
        :class:`ImageSignatureOperator`).
    :param version: the version to deploy (templated).
    :param settings: item settings (for example the release notes location; ``security_scan_clean``:
        ``scan_steps``, the scan steps the service declares).
    """

    ITEMS = ("staging_tests_passed", "security_scan_clean", "release_notes", "rollback_plan", "on_call_notified",
             "maintenance_window", "database_backup", "image_signature")
    template_fields: Sequence[str] = ("deployment_id", "version")

    def __init__(self, *, item: str, version: str, settings: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "item", item, self.ITEMS)
        self.item = item
        self.version = version
        self.settings = settings or {}

    def describe(self) -> str:
        return f"checklist: {self.item.replace('_', ' ')}"

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            detail = getattr(self, f"_{self.item}")(context)
        except AirflowFailException as exc:
            self.record("checklist", f"checklist: {self.item.replace('_', ' ')}: FAILED, {exc}",
                        data={"item": self.item, "ok": False, "detail": str(exc)})
            raise
        self.record("checklist", f"checklist: {self.item.replace('_', ' ')}: ok, {detail}",
                    data={"item": self.item, "ok": True, "detail": detail})
        return {"item": self.item, "ok": True, "detail": detail}

    # Each item returns what it found, or raises AirflowFailException saying what is missing.

    def _staging_tests_passed(self, context: Any) -> str:
        if not self.settings.get("has_staging", True):
            return "the service has no staging environment"
        return check_passed(self.ledger, self.service, "staging", self.version)

    def _security_scan_clean(self, context: Any) -> str:
        """Every scan step of the version is clean: the latest result of each (``scan-cves``, ``scan-secrets``)
        has no blocking finding, and each scan step the service declares recorded one."""
        latest: dict[str, Any] = {}
        for event in self.ledger.service_events(self.service, kind="scan"):
            if event.data.get("version") == self.version:
                latest[event.data.get("step") or "scan"] = event  # oldest first: the last one stays
        expected = list(self.settings.get("scan_steps") or [])
        missing = [step for step in expected if step not in latest]
        if not latest:
            raise AirflowFailException(
                f"no security scan result recorded for {self.version}"
                + (f" ({', '.join(expected)} did not run for it, or could not read its report)" if expected
                   else " (the build's scan steps record it)") + "; configure the scan or turn the item off")
        blocking = {step: int(e.data.get("blocking") or 0) for step, e in latest.items()
                    if int(e.data.get("blocking") or 0)}
        problems = [f"{step} has {n} blocking finding(s)" for step, n in blocking.items()]
        problems += [f"{step} recorded no result for it" for step in missing]
        if problems:
            raise AirflowFailException(f"the security scan of {self.version} is not clean: {'; '.join(problems)}")
        return f"{self.version}: " + ", ".join(f"{step} clean ({e.at:%Y-%m-%d %H:%M})" for step, e in latest.items())

    def _image_signature(self, context: Any) -> str:
        from airflow_deploy_provider.steps import StepError
        from airflow_deploy_provider.steps.signing import check_image

        try:
            return check_image(self.settings.get("image") or "", platform_type=self.settings.get("platform_type")
                               or "local", secrets=self.settings.get("secrets"), ledger=self.ledger,
                               service=self.service)
        except StepError as exc:
            raise AirflowFailException(f"refusing the image: {exc}") from None

    def _release_notes(self, context: Any) -> str:
        # Notes the release-notes step generated for this version (staging's run) count first.
        generated = [e for e in self.ledger.service_events(self.service, kind="step")
                     if e.data.get("step") == "release-notes" and e.data.get("version") == self.version
                     and e.data.get("ok") and (e.data.get("artifacts") or {}).get("release_notes")]
        for event in reversed(generated):
            path = Path(event.data["artifacts"]["release_notes"])
            if path.is_file() and path.stat().st_size:
                return f"release notes generated by the release-notes step: {path}"
        location = self.settings.get("release_notes_location")
        root = Path(self.settings.get("service_root") or ".")
        if location and location.startswith(("http://", "https://")):
            import requests

            url = location.replace("{version}", self.version)
            try:
                resp = requests.get(url, timeout=15)
            except requests.RequestException as exc:
                raise AirflowFailException(f"release notes {url} could not be read: {exc}") from None
            if resp.status_code != 200 or not resp.text.strip():
                raise AirflowFailException(f"release notes {url}: HTTP {resp.status_code}")
            return f"release notes at {url}"
        candidates = [location.replace("{version}", self.version)] if location else ["CHANGELOG.md", "RELEASE_NOTES.md"]
        for name in candidates:
            path = root / name
            if path.is_file() and path.stat().st_size:
                if location and "{version}" in location:
                    return f"release notes in {name}"
                if self.version in path.read_text(errors="replace"):
                    return f"{self.version} in {name}"
        raise AirflowFailException(f"no release notes for {self.version}: looked for it in "
                                   f"{', '.join(candidates)} (checklist.releaseNotesLocation names a file or URL)")

    def _rollback_plan(self, context: Any) -> str:
        dag_id = self.settings.get("rollback_dag_id")
        previous = self.ledger.last_stable(self.service, self.environment, self.region)
        if previous is None:
            return f"first deployment: nothing to roll back to; a failed rollout removes {self.version}"
        return f"{dag_id} goes back to {previous.version} ({previous.image})"

    def _on_call_notified(self, context: Any) -> str:
        notification = self.settings.get("notification") or {}
        if not notification.get("slack_conn_id"):
            raise AirflowFailException("no notification channel configured (notifications.slack): the on-call "
                                       "team cannot have been notified")
        sent = [e for e in self.ledger.events(self.deployment_id, kind="notification") if e.data.get("event") == "start"]
        if not sent:
            raise AirflowFailException("the start of this deployment was not announced (notifications.events "
                                       "leaves out 'start'?)")
        return f"announced in {notification.get('channel') or 'the notification channel'} at {sent[0].at:%H:%M:%S}"

    def _database_backup(self, context: Any) -> str:
        from airflow_deploy_provider.hooks.migration import PostgresMigrationHook
        from airflow_deploy_provider.operators.migration import take_backup

        conn_id = self.settings.get("conn_id")
        if not conn_id:
            raise AirflowFailException("no database connection configured (migrations.connection)")
        done = [e.data for e in self.ledger.events(self.deployment_id, kind="backup") if e.data.get("verified")]
        if done:  # a retry: the backup of this deployment exists
            backup = done[-1]
        else:
            try:
                backup = take_backup(self, PostgresMigrationHook(conn_id), self.settings.get("backup_location"))
            except AirflowException as exc:
                raise AirflowFailException(str(exc)) from None
        return (f"{backup['database']} backed up to {backup['location']} ({backup['toc_entries']} entries, "
                "verified with pg_restore --list)")

    def _maintenance_window(self, context: Any) -> str:
        from datetime import datetime, timezone

        from airflow_deploy_provider.sensors.maintenance_window import freeze_at, window_at

        window = self.settings["window"]
        now = datetime.now(timezone.utc)
        freeze = freeze_at(window, now)
        if freeze is not None:
            raise AirflowFailException(f"inside the freeze {freeze['name']!r}")
        end, following = window_at(window, now)
        where = f"{window['schedule']} {window.get('timezone', 'UTC')}"
        if end is None and window.get("outside_window", "wait") == "wait":
            return f"outside the maintenance window ({where}) now: the run waits for it ({following:%Y-%m-%d %H:%M %Z})"
        if end is None:
            raise AirflowFailException(f"outside the maintenance window ({where}); the next one starts "
                                       f"{following:%Y-%m-%d %H:%M %Z}")
        return f"inside the maintenance window until {end:%Y-%m-%d %H:%M %Z}"


class ImageSignatureOperator(ChecklistItemOperator):
    """
    Production refuses an unsigned image (the service declares ``sign-image``): a pre-deployment checklist
    item. On the local platform the artifact's signature is verified with the public key of the signing key's
    connection; on a cluster with ``cosign verify`` when cosign is on the worker, else from the ledger (a
    successful ``sign-image`` step for this image's digest; an admission policy on the cluster is the real
    guard there). See :func:`airflow_deploy_provider.steps.signing.check_image`.

    Template fields: ``deployment_id``, ``version``, ``image``.

    :param image: the image to deploy (templated).
    :param platform_type: ``local``, ``kubernetes`` or ``ecs``.
    :param secrets: the ``sign-image`` step's secrets (where the keys are); default the ``cosign`` connection.
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "image")

    def __init__(self, *, image: str, version: str, platform_type: str,
                 secrets: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(item="image_signature", version=version, **kwargs)
        self.image = image
        self.platform_type = platform_type
        self.secrets = secrets or {}

    def describe(self) -> str:
        how = "with the public key" if self.platform_type == "local" else "with cosign, else from the ledger"
        return f"checklist: refuse an unsigned image (verify its signature {how})"

    def execute(self, context: Any) -> dict[str, Any]:
        self.settings = {"image": self.image, "platform_type": self.platform_type, "secrets": self.secrets}
        return super().execute(context)


class ChecklistReportOperator(NotifyingMixin, DeploymentBaseOperator):
    """
    Reports the production checklist item by item, once every item has run (trigger rule ``all_done``): one
    notification with each item's result (from the ledger), and the task fails when any item failed or left
    no result, so nothing after the checklist runs.

    Template fields: ``deployment_id``, ``version``.

    :param items: the checklist items of this DAG, in order.
    :param version: the version to deploy (templated).
    :param notification: where to announce it (event ``checklist``).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")

    def __init__(self, *, items: list[str], version: str, notification: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        for item in items:
            check_choice(self.task_id, "item", item, ChecklistItemOperator.ITEMS)
        self.items = items
        self.version = version
        self.notification = notification

    def describe(self) -> str:
        return "report the checklist item by item (ledger, notification); fail if any item failed"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.notifications.slack import DeploymentMessage, run_url

        deployment = self.ledger.get(self.deployment_id)
        if deployment is None:  # the start ended the run quietly (a scheduled run with nothing to deploy)
            raise AirflowSkipException("no deployment in this run: nothing to report")
        latest: dict[str, dict[str, Any]] = {}
        for event in self.ledger.events(self.deployment_id, kind="checklist"):
            latest[event.data.get("item")] = event.data  # the last try of each item counts
        rows, failed = [], []
        version = self.version or deployment.version
        for item in self.items:
            result = latest.get(item)
            ok = bool(result and result.get("ok"))
            if not ok:
                failed.append(item.replace("_", " "))
            detail = (result or {}).get("detail") or "no result (the check did not run to the end)"
            rows.append(["ok" if ok else "FAILED", item.replace("_", " "), detail[:120]])
        summary = (f"all {len(rows)} items passed" if not failed
                   else f"{len(failed)} of {len(rows)} items failed: {', '.join(failed)}")
        dag_run = context.get("dag_run")
        message = DeploymentMessage(
            event="checklist", kind=deployment.kind, service=self.service,
            environment=self.environment, region=self.region, version=version, reason=summary,
            table=[["", "item", "result"], *rows],
            run_url=run_url(getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None)))
        self.log.info("Pre-deployment checklist: %s\n%s", summary, "\n".join("  ".join(r) for r in rows))
        self.log.info("Checklist notification: %s", self.notify("checklist", message, context))
        if failed:
            raise AirflowFailException(f"pre-deployment checklist: {summary}")
        return {"passed": True, "items": rows}


class RecordIncidentOperator(DeploymentBaseOperator):
    """Writes an incident record to the ledger: what was rolled back, from and to which version, and the
    deployment's timeline."""

    def describe(self) -> str:
        return "write the incident report (timeline) to the ledger"

    def execute(self, context: Any) -> dict[str, Any]:
        deployment = self.ledger.get(self.deployment_id)
        timeline = [{"at": e.at.isoformat(), "kind": e.kind, "message": e.message}
                    for e in self.ledger.events(self.deployment_id)]
        report = {"deployment": self.deployment_id, "version": deployment.version if deployment else None,
                  "from": deployment.previous_version if deployment else None,
                  "reason": deployment.reason if deployment else None, "timeline": timeline}
        self.record("incident", f"incident report: {len(timeline)} event(s)", data=report)
        return report
