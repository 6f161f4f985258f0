"""Pipeline steps run as Kubernetes pods, through the cncf.kubernetes provider's pod operator."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import EMPTY_XCOM_RESULT
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.operators.steps import record_step_error, record_step_result, release_history
from airflow_deploy_provider.steps import StepContext, StepError, StepResult

#: Where a pod writes its report: the file the cncf.kubernetes xcom sidecar reads.
REPORT_FILE = "/airflow/xcom/return.json"
LABEL_PREFIX = "deploy.airflow.apache.org"
MANAGED_BY = {"app.kubernetes.io/managed-by": "airflow-deploy-provider"}


class PodStepOperator(DeploymentBaseOperator, KubernetesPodOperator):
    """
    Runs a declared pipeline step (``steps`` in ``service.yaml`` with an ``image``) as a Kubernetes pod through
    the cncf.kubernetes provider's :class:`KubernetesPodOperator`: the runner's image and args (the release's
    placeholders filled in), env, resources and service account; secrets read from Airflow connections or
    variables when the step runs, written to a Kubernetes Secret (``deploy-step-<service>-<step>``) and handed to
    the container as secret references (their values never appear in the pod spec, args, logs or ledger).

    The result goes to the ledger like a worker step's (:class:`PipelineStepOperator`): the exit status of the
    container and, with a ``report``, the findings of the report the pod writes to ``/airflow/xcom/return.json``
    (read through the xcom sidecar); scans block on the configured severities and also record a ``scan`` event.

    Retries converge: the pod's name is fixed per deployment and task, so a retry after a crash of the worker
    reattaches to the running (or finished) pod of the earlier try instead of starting the step a second time.
    A pod that an earlier try already judged (a failure kept for inspection) is replaced. A succeeded pod is
    deleted; a failed one is kept.

    The wait for the pod defers (no worker slot held) unless ``deferrable=False``.

    Template fields: ``deployment_id``, ``version``, ``release_image``, ``commit``, ``previous_version``.

    :param step: step name (``build-image``, ``scan-cves``, ...).
    :param runner: the resolved runner: ``image``, ``args``, ``env``, ``secrets`` (name -> ``{connection,
        field}`` or ``{variable}``), ``pod`` (``connection``, ``namespace``, ``service_account``, ``resources``),
        ``report``, ``block_on``, ``timeout`` (the pod's ``activeDeadlineSeconds``).
    :param platform: platform settings of the service; on Kubernetes the pod runs through the platform's
        connection in its namespace unless ``pod`` says otherwise (elsewhere: ``kubernetes_default``,
        ``default``).
    :param version: version (templated).
    :param image: image of the release (templated; the ``{image}`` placeholder, kept as ``release_image``:
        ``image`` is the pod's own image, ``runner["image"]``).
    :param commit: commit sha (templated).
    :param previous_version: the version this one replaces (templated).
    :param service_root: the service folder.
    :param workflow: ``deploy`` or ``hotfix`` (a hotfix's scan blocks on critical CVEs only by default).
    :param deferrable: defer while the pod runs (default); ``False`` polls on the worker.
    :param kwargs: the deployment operators' parameters (``service``, ``environment``, ...) and
        :class:`KubernetesPodOperator`'s (``poll_interval``, ``startup_timeout_seconds``, ...).
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "release_image", "commit", "previous_version")
    template_fields_renderers: dict[str, str] = {}
    ui_color = "#f1f3f4"

    def __init__(self, *, step: str, runner: dict[str, Any], platform: dict[str, Any], version: str = "",
                 image: str = "", commit: str = "", previous_version: str = "", service_root: str | None = None,
                 workflow: str = "deploy", deferrable: bool = True, **kwargs: Any) -> None:
        if not runner.get("image"):
            raise ValueError(f"{kwargs.get('task_id')}: step {step!r} runs as a pod and needs an image")
        pod = runner.get("pod") or {}
        on_kubernetes = platform.get("type") == "kubernetes"
        timeout = runner.get("timeout", timedelta(minutes=30))
        step_timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        kwargs.setdefault("kubernetes_conn_id", pod.get("connection")
                          or (on_kubernetes and platform.get("connection")) or "kubernetes_default")
        kwargs.setdefault("namespace", pod.get("namespace") or (on_kubernetes and (
            platform.get("namespace") or kwargs.get("environment"))) or "default")
        kwargs.setdefault("service_account_name", pod.get("service_account"))
        kwargs.setdefault("container_resources", resource_requirements(pod.get("resources")))
        kwargs.setdefault("active_deadline_seconds", max(1, int(step_timeout)))  # the cluster stops it, worker or not
        kwargs.setdefault("on_finish_action", "delete_succeeded_pod")  # a failed pod stays for inspection
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("log_events_on_failure", True)
        super().__init__(image=runner["image"], arguments=list(runner.get("args") or []),
                         do_xcom_push=bool(runner.get("report")), random_name_suffix=False, deferrable=deferrable,
                         **kwargs)
        self.step = step
        self.runner = runner
        self.platform = platform
        self.version = version
        self.release_image = image
        self.commit = commit
        self.previous_version = previous_version
        self.service_root = service_root
        self.workflow = workflow
        self.step_timeout = step_timeout
        self.expected_duration = timedelta(seconds=min(120.0, step_timeout))
        self.labels = {**MANAGED_BY, f"{LABEL_PREFIX}/service": _label(self.service),
                       f"{LABEL_PREFIX}/environment": _label(self.environment), f"{LABEL_PREFIX}/step": step}
        self._report_text: str | None = None
        self._final_pod: k8s.V1Pod | None = None
        self._completing = False

    def describe(self) -> str:
        return f"{self.step}: pod {self.runner['image']}"

    # ---------------------------------------------------------------------------------------------- naming

    @property
    def secret_name(self) -> str:
        """The Kubernetes Secret holding the step's secrets (one per service and step, rewritten every run)."""
        return _dns_name(f"deploy-step-{self.service}-{self.step}", 253)

    def step_pod_name(self) -> str:
        """The pod's name: fixed per deployment and task, so that a retry finds the pod of an earlier try."""
        digest = hashlib.sha256(f"{self.deployment_id}|{self.task_id}".encode()).hexdigest()[:10]
        return f"{_dns_name(f'deploy-{self.service}-{self.step}', 52)}-{digest}"

    # ------------------------------------------------------------------------------------------------- run

    def step_context(self) -> StepContext:
        version = str(self.version or "")
        previous_commit, source_image = release_history(self, version, self.previous_version)
        root = Path(self.service_root or ".")
        return StepContext(
            step=self.step, service=self.service, environment=self.environment, region=self.region,
            version=version, image=str(self.release_image or ""), commit=str(self.commit or ""),
            service_root=root, work_dir=root, reports_dir=Path(REPORT_FILE).parent, runner=self.runner,
            platform=self.platform, deployment_id=self.deployment_id, workflow=self.workflow,
            previous_version=self.previous_version or None, previous_commit=previous_commit,
            source_image=source_image, timeout=self.step_timeout, ledger=self.ledger, log=self.log)

    def execute(self, context: Any) -> dict[str, Any]:
        ctx = self.step_context()
        try:
            self.release_pod_fields(ctx)
            self.env_vars = self.container_env(ctx)
        except StepError as exc:
            record_step_error(self, ctx, exc)
        # Deferrable: raises TaskDeferred (a BaseException) once the pod exists; trigger_reentry resumes.
        return self._complete(context, ctx, lambda: KubernetesPodOperator.execute(self, context))

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """Resumed (on a fresh task instance) once the trigger saw the pod finish: judge and record it."""
        if self._completing:  # a reattached pod that had already finished: execute() judges it
            return KubernetesPodOperator.trigger_reentry(self, context, event)
        ctx = self.step_context()
        try:
            self.release_pod_fields(ctx)
        except StepError as exc:
            record_step_error(self, ctx, exc)
        return self._complete(context, ctx, lambda: KubernetesPodOperator.trigger_reentry(self, context, event))

    def release_pod_fields(self, ctx: StepContext) -> None:
        """The pod's name, labels and args from the release; templates are rendered by now (the release's
        values come from the start task's XCom)."""
        self.name = self.step_pod_name()
        self.labels = {**self.labels, f"{LABEL_PREFIX}/deployment": self.deployment_label()}
        self.arguments = fill_args(ctx, list(self.runner.get("args") or []))

    def _complete(self, context: Any, ctx: StepContext, run: Any) -> dict[str, Any]:
        failure: Exception | None = None
        self._completing = True
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - the pod operator fails a failed pod; the ledger says why
            failure = exc
        finally:
            self._completing = False
        try:
            result = self.pod_result(ctx, self._final_pod or self.remote_pod or self.pod, failure)
        except StepError as exc:
            record_step_error(self, ctx, exc)
        out = {**record_step_result(self, ctx, result, "pod"), "pod": result.data.get("pod")}
        if not self.do_xcom_push:  # no report, no sidecar: push the result as worker steps do
            context["ti"].xcom_push(key="return_value", value=out)
        return out

    def pod_result(self, ctx: StepContext, pod: k8s.V1Pod | None, failure: Exception | None) -> StepResult:
        """The step's result from the pod's final state: the exit status of its container, its report."""
        status = _container_status(pod, self.base_container_name)
        terminated = status.state.terminated if status is not None and status.state is not None else None
        exit_code = terminated.exit_code if terminated is not None else None
        name = pod.metadata.name if pod is not None and pod.metadata is not None else self.name
        if exit_code is None:
            reason = _first_line(failure) if failure is not None else "no exit status"
            waiting = status.state.waiting if status is not None and status.state is not None else None
            if waiting is not None and waiting.reason:
                reason = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
            raise StepError(f"pod {name} did not complete: {reason}")
        if failure is not None and exit_code == 0:
            self.log.warning("The pod operator reported %s after the container exited 0", _first_line(failure))
        summary = f"exit status {exit_code}"
        if terminated.reason and exit_code != 0:
            summary += f" ({terminated.reason})"
        result = StepResult(ok=exit_code == 0, summary=summary, exit_code=exit_code,
                            data={"pod": name, "namespace": self.namespace, "pod_image": self.image,
                                  "args": list(self.arguments or [])})
        report = self.runner.get("report")
        if report:
            if not self._report_text:
                problem = f"; reading it failed: {_first_line(failure)}" if failure is not None else ""
                raise StepError(f"{summary}: the pod wrote no {report['format']} report at {REPORT_FILE}"
                                + problem)
            from airflow_deploy_provider.steps.reports import parse_report

            result.findings = parse_report(report["format"], self._report_text)
            result.data["report"] = {"format": report["format"], "location": f"{name}:{REPORT_FILE}"}
        return result

    # ------------------------------------------------------------------------------------ pod and secrets

    def deployment_label(self) -> str:
        return hashlib.sha256(str(self.deployment_id).encode()).hexdigest()[:16]

    def container_env(self, ctx: StepContext) -> list[k8s.V1EnvVar]:
        """Plain env, the release's values, and each secret as a reference to the step's Secret."""
        env = [k8s.V1EnvVar(name=k, value=str(v)) for k, v in (self.runner.get("env") or {}).items()]
        env += [k8s.V1EnvVar(name="DEPLOY_VERSION", value=ctx.version),
                k8s.V1EnvVar(name="DEPLOY_IMAGE", value=ctx.image)]
        secrets = self.runner.get("secrets") or {}
        if secrets:
            self.write_secret(secrets)
            env += [k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=self.secret_name, key=name)))
                for name in secrets]
        return env

    def write_secret(self, secrets: dict[str, dict[str, Any]]) -> None:
        """Create or update the step's Secret with the current values of its connections and variables."""
        from airflow_deploy_provider.steps.secrets import secret_value

        data = {name: base64.b64encode(secret_value(name, ref).encode()).decode() for name, ref in secrets.items()}
        core, namespace = self.hook.core_v1_client, str(self.namespace)
        labels = {**MANAGED_BY, f"{LABEL_PREFIX}/service": _label(self.service), f"{LABEL_PREFIX}/step": self.step}
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                "metadata": {"name": self.secret_name, "namespace": namespace, "labels": labels}}
        try:
            try:
                core.create_namespaced_secret(namespace, body, _preload_content=False)
                self.log.info("Created Secret %s/%s with %s", namespace, self.secret_name, ", ".join(data))
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            import json

            current = json.loads(core.read_namespaced_secret(self.secret_name, namespace,
                                                             _preload_content=False).data).get("data") or {}
            if current == data:
                return
            # A merge patch: keys no longer declared are removed (null), the others replaced.
            patch = {"metadata": {"labels": labels}, "data": {**dict.fromkeys(current), **data}}
            core.patch_namespaced_secret(self.secret_name, namespace, patch, _preload_content=False)
            self.log.info("Updated Secret %s/%s with %s", namespace, self.secret_name, ", ".join(data))
        except ApiException as exc:  # never the body: it holds the values
            raise StepError(f"cannot write Secret {namespace}/{self.secret_name}: {exc.status} {exc.reason}") from None

    def find_pod(self, namespace: str, context: Any, *, exclude_checked: bool = True) -> k8s.V1Pod | None:
        """The pod of this deployment's step, by its fixed name (the pod operator searches by labels)."""
        pod = self._read_pod(str(self.name), namespace)
        if pod is not None and exclude_checked and (pod.metadata.labels or {}).get(self.POD_CHECKED_KEY) == "True":
            return None
        return pod

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        """Reattach to the pod an earlier try started, else create it: a retry never runs the step twice."""
        name, namespace = pod_request_obj.metadata.name, pod_request_obj.metadata.namespace
        existing = self._read_pod(name, namespace)
        if existing is not None and (existing.metadata.labels or {}).get(self.POD_CHECKED_KEY) != "True":
            self.log.info("Reattaching to pod %s/%s (phase %s) of an earlier try", namespace, name,
                          existing.status.phase if existing.status else None)
            self._persist_pod_identity_to_task_state_store(context, existing)
            return existing
        if existing is not None:  # judged by an earlier try (a failure kept for inspection): replaced
            self.log.info("Replacing pod %s/%s, which an earlier try finished with", namespace, name)
            self._delete_and_wait(name, namespace)
        try:
            self.pod_manager.create_pod(pod=pod_request_obj)
        except ApiException as exc:
            if exc.status != 409:
                raise
            found = self._read_pod(name, namespace)  # another try created it a moment ago
            if found is None:
                raise
            self._persist_pod_identity_to_task_state_store(context, found)
            return found
        self._persist_pod_identity_to_task_state_store(context, pod_request_obj)
        return pod_request_obj

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, xcom_result: dict | None = None,
                context: Any = None) -> None:
        # Called with the pod's final state on both paths (sync and deferred): keep it for the verdict.
        self._final_pod = remote_pod
        super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)

    def extract_xcom(self, pod: k8s.V1Pod, *, ignore_kill_failure: bool = True) -> dict[Any, Any] | None:
        # The pod operator would parse the file as JSON and push it to XCom; the report goes to the ledger as
        # findings instead (a scan's report can be megabytes), and it need not be JSON (JUnit XML).
        self._report_text = self.read_report(pod)
        return None

    def read_report(self, pod: k8s.V1Pod) -> str | None:
        """The text the pod wrote to ``/airflow/xcom/return.json``, read with ``cat`` in the xcom sidecar (an
        exec, as the pod operator reads its XCom file), then the sidecar is stopped so the pod can finish."""
        from contextlib import closing

        from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
        from kubernetes.stream import stream

        sidecar = PodDefaults.SIDECAR_CONTAINER_NAME
        if not self.pod_manager.container_is_running(pod, sidecar):
            raise StepError(f"the {sidecar} container of pod {pod.metadata.name} is not running: no report")
        command = f"if [ -s {REPORT_FILE} ]; then cat {REPORT_FILE}; else echo {EMPTY_XCOM_RESULT}; fi"
        try:
            with closing(stream(self.client.connect_get_namespaced_pod_exec, pod.metadata.name,
                                pod.metadata.namespace, container=sidecar, command=["/bin/sh", "-c", command],
                                stdin=False, stdout=True, stderr=True, tty=False,
                                _preload_content=False)) as client:
                client.run_forever(timeout=300)
                text = client.read_stdout(timeout=0) if client.peek_stdout() else ""
        finally:
            try:
                self.pod_manager.extract_xcom_kill(pod)
            except Exception as exc:  # noqa: BLE001 - the report is read; the pod ends at its deadline anyway
                self.log.warning("Could not stop the %s container of pod %s: %s", sidecar, pod.metadata.name, exc)
        return None if not text or text.rstrip() == EMPTY_XCOM_RESULT else text

    def _read_pod(self, name: str, namespace: str) -> k8s.V1Pod | None:
        try:
            return self.client.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _delete_and_wait(self, name: str, namespace: str, timeout: float = 120.0) -> None:
        try:
            self.client.delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + timeout
        while self._read_pod(name, namespace) is not None:
            if time.monotonic() > deadline:
                raise StepError(f"pod {namespace}/{name} of an earlier try is still being deleted")
            time.sleep(0.5)


def resource_requirements(resources: dict[str, Any] | None) -> k8s.V1ResourceRequirements | None:
    """``pod.resources`` (``{limits, requests}`` of quantities) as the container's resource requirements."""
    if not resources:
        return None

    def quantities(values: dict[str, Any] | None) -> dict[str, str] | None:
        if not values:
            return None
        return {k: str(v["text"] if isinstance(v, dict) else v) for k, v in values.items() if v is not None}

    return k8s.V1ResourceRequirements(limits=quantities(resources.get("limits")),
                                      requests=quantities(resources.get("requests")))


def fill_args(ctx: StepContext, args: list[str]) -> list[str]:
    """The pod's args with the release's placeholders filled in (``{image}``, ``{version}``, ...)."""
    try:
        return ctx.fill(args)
    except (KeyError, IndexError, ValueError) as exc:
        raise StepError(f"args: unknown placeholder {exc} (known: {', '.join(ctx.values())})") from None


def _container_status(pod: k8s.V1Pod | None, container: str) -> Any:
    statuses = (pod.status.container_statuses if pod is not None and pod.status is not None else None) or []
    return next((s for s in statuses if s.name == container), None)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _label(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]", "-", str(text))[:63]
    return value.strip("._-") or "none"


def _dns_name(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())[:limit].strip("-")
