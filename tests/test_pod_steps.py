"""Pod-mode steps (issue 9): a step declared with an ``image`` runs through the cncf.kubernetes pod operator
against the Kubernetes API emulator (kmock). The test plays the cluster: it reads the pod the operator
submitted, asserts its spec (image, args with the release's values, secrets as references and never as values,
resources, service account, namespace, labels), then reports the container's completion on ``/status``.

The wait defers (``deferrable=True``, as generated): the test plays the triggerer, running the serialized
``KubernetesPodTrigger`` against the emulator and resuming the task with its event on a fresh copy of the task,
as Airflow does. The emulator also answers ``pods/<name>/exec`` (a websocket speaking the API server's channel
protocol): the ``cat`` of the report in the xcom sidecar gets the file the test gives the pod, so reports are read
as on a cluster, and the sidecar's stop (``kill -2``) is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib
import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.utils.pod_manager import EMPTY_XCOM_RESULT
from kmock._internal import enums

from tests.conftest import UNGOVERNED, write_service
from tests.kube import ApiServerEmulator, KubeCluster

PASSWORD = "pa55-w0rd-for-the-registry"
RELEASE = {"version": "1.4.0", "image": "registry.example.com/shop/checkout:1.4.0",
           "commit": "0123456789abcdef0123456789abcdef01234567", "previous_version": ""}
KANIKO = "gcr.io/kaniko-project/executor:v1.23.2"
NAMESPACE = "builds"

JUNIT_FAILED = """<?xml version="1.0"?><testsuite name="pytest" tests="2" failures="1">
<testcase classname="tests.test_cart" name="test_total"/>
<testcase classname="tests.test_cart" name="test_discount"><failure message="assert 9 == 10"/></testcase>
</testsuite>"""


# ------------------------------------------------------------------------------------------- the cluster


class PodApiServer(ApiServerEmulator):
    """The emulator plus ``pods/<name>/exec`` over a websocket (the channel protocol of the API server): a
    ``cat`` of ``/airflow/xcom/return.json`` answers with ``report_files[pod]`` (else the sidecar's "empty"
    marker); any other command (the sidecar's kill) is read and closed."""

    report_files: dict[str, str]
    execs: list[tuple[str, str, str]]  # (pod, container, command)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and getattr(request.resource, "plural", None) == "pods" and \
                request.subresource == "exec":
            import aiohttp.web

            raw = request._raw_request
            ws = aiohttp.web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
            await ws.prepare(raw)
            command = " ".join(raw.query.getall("command", []))
            if "return.json" in command:
                await ws.send_bytes(b"\x01" + self.report_files.get(request.name, EMPTY_XCOM_RESULT).encode())
                await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
            else:  # an interactive shell: the command comes on stdin (channel 0)
                msg = await ws.receive(timeout=5)
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    command = data[1:].decode().strip()
            self.execs.append((request.name, raw.query.get("container", ""), command))
            await ws.close()
            return ws
        if request.resource is not None and getattr(request.resource, "plural", None) == "pods" and \
                request.action == enums.action.CREATE and isinstance(request.data, dict):
            request.data.setdefault("status", {"phase": "Pending"})  # as the API server sets it
        return await super()._handle(request)


class PodCluster(KubeCluster):
    async def _serve(self) -> None:
        import kmock

        from tests.kube import RESOURCES

        async with PodApiServer() as emulator, kmock.Server(emulator) as server:
            for path, kind in (*RESOURCES, ("v1/events", "Event")):
                emulator.resources[path] = {"kind": kind, "namespaced": True}
            emulator.pod_logs, emulator.report_files, emulator.execs = {}, {}, []
            self.emulator, self.port = emulator, server.port
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def cluster():
    cluster = PodCluster()
    yield cluster
    cluster.stop()


class Kube:
    """The test's hands on the cluster: raw objects (as the API server stores them) and the pod's status."""

    def __init__(self, cluster: PodCluster):
        from kubernetes import client

        self.cluster = cluster
        self.core = client.CoreV1Api(cluster.client())

    def pods(self) -> list[dict[str, Any]]:
        return json.loads(self.core.list_namespaced_pod(NAMESPACE, _preload_content=False).data)["items"]

    def pod(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client import ApiException

        try:
            return json.loads(self.core.read_namespaced_pod(name, NAMESPACE, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret(self, name: str) -> dict[str, Any]:
        return json.loads(self.core.read_namespaced_secret(name, NAMESPACE, _preload_content=False).data)

    def creations(self, name: str) -> int:
        """How many times a pod of this name was created (kmock keeps every version, ``None`` when deleted)."""
        history = self.cluster.history("v1/pods", NAMESPACE, name)
        return sum(1 for before, now in zip([None, *history], history) if before is None and now is not None)

    def play(self, name: str, phase: str, exit_code: int | None = None, sidecar: bool = False) -> None:
        """Report the pod's state as the kubelet would: running, or the base container terminated."""
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if exit_code is None else {"terminated": {
            "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}}
        statuses = [{"name": "base", "image": KANIKO, "imageID": "", "restartCount": 0, "ready": exit_code is None,
                     "state": state}]
        if sidecar:
            statuses.append({"name": "airflow-xcom-sidecar", "image": "alpine", "imageID": "", "restartCount": 0,
                             "ready": True, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        self.core.patch_namespaced_pod_status(name, NAMESPACE, {"status": {
            "phase": phase, "containerStatuses": statuses,
            "conditions": [{"type": "PodScheduled", "status": "True"}]}}, _preload_content=False)


# ------------------------------------------------------------------------------------------ the service


def service_files(steps: str) -> dict[str, str]:
    return {
        "service.yaml": textwrap.dedent("""\
            service: checkout
            image: registry.example.com/shop/checkout
            platform:
              type: kubernetes
              connection: k8s_steps
            """) + UNGOVERNED + steps,
        "development.yaml": "environment: development\nstrategy: recreate\nreplicas: 1\n",
    }


BUILD = textwrap.dedent(f"""\
    steps:
      build-image:
        image: {KANIKO}
        args: ["--context=git://example.com/shop/checkout#{{commit}}", "--destination={{image}}",
               "--label=version={{version}}"]
        env: {{DOCKER_CONFIG: /kaniko/.docker}}
        secrets:
          REGISTRY_PASSWORD: {{connection: registry}}
        pod:
          namespace: {NAMESPACE}
          serviceAccount: image-builder
          resources: {{requests: {{cpu: 500m, memory: 1Gi}}, limits: {{cpu: "2", memory: 4Gi}}}}
    """)

UNIT_TESTS = textwrap.dedent(f"""\
    steps:
      unit-tests:
        image: python:3.12
        args: ["sh", "-c", "pytest -q --junitxml=/airflow/xcom/return.json"]
        report: {{format: junit}}
        pod: {{namespace: {NAMESPACE}}}
    """)


SCAN = textwrap.dedent(f"""\
    steps:
      scan-cves:  # no report declared: trivy's, known from the image
        image: aquasec/trivy:0.58.1
        args: ["image", "--format", "json", "--output", "/airflow/xcom/return.json", "{{image}}"]
        pod: {{namespace: {NAMESPACE}}}
    """)


def parse_cves(text: str) -> list[Any]:
    """A stand-in for the trivy parser (``{"cves": [[id, severity], ...]}``): the test is about the pod."""
    from airflow_deploy_provider.steps import Finding

    return [Finding(tool="trivy", kind="cve", id=cve, severity=severity) for cve, severity in json.loads(text)["cves"]]


class FakeTI:
    """What the pod operator reads from its task instance: ids, try number, XComs (the release from the start
    task; what it pushes is kept)."""

    def __init__(self, task: Any, try_number: int):
        self.dag_id, self.task_id, self.map_index = task.dag_id, task.task_id, -1
        self.try_number, self.start_date = try_number, datetime.now(UTC)
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return dict(RELEASE)

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.pushed[key] = value


class Run:
    """One DAG run of the step's task: the task from the generated DAG, tries of it (fresh copies with their
    templates rendered, as a worker gets them), the triggerer's part, and the run's ledger events."""

    def __init__(self, tmp_path: Path, ledger: Any, steps: str, task_id: str, deferrable: bool = True):
        from airflow_deploy_provider.config.loader import load_service
        from airflow_deploy_provider.factory import build_service_dags

        root = write_service(tmp_path / "checkout", service_files(steps))
        loaded = load_service(root / ".deploy")
        assert loaded.config is not None, loaded
        self.dag = build_service_dags(loaded.config, deferrable=deferrable)["deploy_checkout_development"]
        self.task = self.dag.get_task(task_id)
        self.run_id = f"manual__{tmp_path.name}"  # a deployment (and pod name) per test
        self.deployment = f"{self.dag.dag_id}/{self.run_id}"
        self.ledger = ledger
        ledger.start_deployment(id=self.deployment, service="checkout", environment="development",
                                version=RELEASE["version"], image=RELEASE["image"])

    def context(self, try_number: int = 1) -> dict[str, Any]:
        return {"ti": FakeTI(self.task, try_number), "dag": self.dag, "run_id": self.run_id, "params": {},
                "task": self.task}

    def rendered(self, context: dict[str, Any]) -> Any:
        op = copy.deepcopy(self.task)
        op.render_template_fields(context)
        return op

    def start(self, context: dict[str, Any]) -> tuple[Any, Any]:
        """Run a try until it defers; returns it and its trigger, serialized and rebuilt as the triggerer does."""
        from airflow.sdk.exceptions import TaskDeferred

        op = self.rendered(context)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        assert deferred.value.method_name == "trigger_reentry"
        path, kwargs = deferred.value.trigger.serialize()
        module, _, cls = path.rpartition(".")
        return op, getattr(importlib.import_module(module), cls)(**kwargs)

    @staticmethod
    def triggerer(trigger: Any) -> dict[str, Any]:
        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return event.payload
            raise AssertionError("the trigger ended without an event")

        return asyncio.run(asyncio.wait_for(first_event(), 20))

    def resume(self, context: dict[str, Any], trigger: Any) -> Any:
        """The trigger's event resumes the task on a fresh copy of it, as Airflow does."""
        return self.rendered(context).trigger_reentry(context, self.triggerer(trigger))

    def events(self, kind: str = "step") -> list[Any]:
        return self.ledger.events(self.deployment, kind)


@pytest.fixture
def kube(monkeypatch, ledger, cluster):
    monkeypatch.setenv("AIRFLOW_CONN_K8S_STEPS", cluster.connection_uri())
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRY", json.dumps({"conn_type": "generic", "login": "ci",
                                                            "password": PASSWORD}))
    kube = Kube(cluster)
    yield kube
    for pod in kube.pods():  # each test starts with an empty namespace
        kube.core.delete_namespaced_pod(pod["metadata"]["name"], NAMESPACE, _preload_content=False)


# ------------------------------------------------------------------------------------------------ tests


def test_build_runs_as_a_pod_with_secrets_as_references(tmp_path, kube, ledger, capsys):
    run = Run(tmp_path, ledger, BUILD, "build.build_image")
    assert run.task.describe() == f"build-image: pod {KANIKO}"
    context = run.context()
    op, trigger = run.start(context)

    [pod] = kube.pods()
    name = pod["metadata"]["name"]
    assert name == op.name and name.startswith("deploy-checkout-build-image-")
    assert pod["metadata"]["namespace"] == NAMESPACE
    labels = pod["metadata"]["labels"]
    assert {k.rsplit("/", 1)[-1]: v for k, v in labels.items() if k.startswith("deploy.airflow.apache.org/")
            and not k.endswith("/deployment")} == {"service": "checkout", "environment": "development",
                                                  "step": "build-image"}
    assert len(labels["deploy.airflow.apache.org/deployment"]) == 16
    assert "app" not in labels  # the service's Services select app=checkout: never a build pod
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "image-builder"
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 1800
    [container] = spec["containers"]  # no report: no xcom sidecar
    assert container["image"] == KANIKO
    assert container["args"] == [f"--context=git://example.com/shop/checkout#{RELEASE['commit']}",
                                 f"--destination={RELEASE['image']}", "--label=version=1.4.0"]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    env = {e["name"]: e for e in container["env"]}
    assert env["DOCKER_CONFIG"] == {"name": "DOCKER_CONFIG", "value": "/kaniko/.docker"}
    assert env["DEPLOY_VERSION"]["value"] == "1.4.0"
    assert env["REGISTRY_PASSWORD"] == {"name": "REGISTRY_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "deploy-step-checkout-build-image", "key": "REGISTRY_PASSWORD"}}}
    for text in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
        assert text not in json.dumps(pod)

    secret = kube.secret("deploy-step-checkout-build-image")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["REGISTRY_PASSWORD"]).decode() == PASSWORD

    kube.cluster.emulator.pod_logs[name] = "INFO: Pushed registry.example.com/shop/checkout:1.4.0\n"
    kube.play(name, "Running")
    kube.play(name, "Succeeded", exit_code=0)
    out = run.resume(context, trigger)

    assert out["ok"] is True and out["exit_code"] == 0 and out["pod"] == name
    [recorded] = run.events()
    assert recorded.message == "build-image: ok, exit status 0"
    assert recorded.data["mode"] == "pod" and recorded.data["pod"] == name
    assert recorded.data["args"][1] == f"--destination={RELEASE['image']}"
    assert kube.pod(name) is None  # a succeeded pod is deleted
    log = capsys.readouterr().out  # the task log (Airflow's structlog writes to standard output here)
    assert "[base] logs: INFO: Pushed registry.example.com/shop/checkout:1.4.0" in log
    for text in (log, json.dumps([e.data for e in ledger.events(run.deployment)])):
        assert PASSWORD not in text


def test_exit_status_1_fails_the_task_and_keeps_the_pod(tmp_path, kube, ledger):
    from airflow.sdk.exceptions import AirflowException

    run = Run(tmp_path, ledger, BUILD, "build.build_image")
    context = run.context()
    op, trigger = run.start(context)
    kube.play(op.name, "Failed", exit_code=1)
    with pytest.raises(AirflowException, match="step build-image failed: exit status 1"):
        run.resume(context, trigger)
    [recorded] = run.events()
    assert recorded.message == "build-image: FAILED, exit status 1 (Error)"
    assert recorded.data["ok"] is False and recorded.data["exit_code"] == 1
    kept = kube.pod(op.name)  # kept for inspection, marked as judged
    assert kept is not None and kept["metadata"]["labels"]["already_checked"] == "True"


def test_a_retry_after_a_crash_reattaches_to_the_running_pod(tmp_path, kube, ledger):
    run = Run(tmp_path, ledger, BUILD, "build.build_image")
    first, _ = run.start(run.context())  # then the worker dies while the build runs
    kube.play(first.name, "Running")

    context = run.context(try_number=2)
    second, trigger = run.start(context)  # the retry finds the pod and waits for it
    assert second.name == first.name
    assert [p["metadata"]["name"] for p in kube.pods()] == [first.name]
    assert kube.creations(first.name) == 1  # never a second build

    kube.play(first.name, "Succeeded", exit_code=0)
    assert run.resume(context, trigger)["ok"] is True
    assert [e.message for e in run.events()] == ["build-image: ok, exit status 0"]


def test_a_retry_adopts_a_pod_that_finished_while_the_worker_was_down(tmp_path, kube, ledger):
    run = Run(tmp_path, ledger, BUILD, "build.build_image")
    first, _ = run.start(run.context())
    kube.play(first.name, "Succeeded", exit_code=0)  # nobody was waiting for it

    op = run.rendered(run.context(try_number=2))
    out = op.execute(run.context(try_number=2))  # finished already: judged at once, no deferral
    assert out["ok"] is True and out["pod"] == first.name
    assert kube.creations(first.name) == 1
    assert [e.message for e in run.events()] == ["build-image: ok, exit status 0"]


def test_a_retry_after_a_failure_replaces_the_judged_pod(tmp_path, kube, ledger, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    run = Run(tmp_path, ledger, BUILD, "build.build_image")
    context = run.context()
    op, trigger = run.start(context)
    kube.play(op.name, "Failed", exit_code=1)
    with pytest.raises(AirflowException):
        run.resume(context, trigger)

    rotated = PASSWORD + "-rotated"  # read again when the step runs: the Secret follows the connection
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRY", json.dumps({"conn_type": "generic", "password": rotated}))
    context = run.context(try_number=2)
    op, trigger = run.start(context)
    assert kube.creations(op.name) == 2  # the same name, a new pod
    assert "already_checked" not in kube.pod(op.name)["metadata"]["labels"]
    data = kube.secret("deploy-step-checkout-build-image")["data"]
    assert base64.b64decode(data["REGISTRY_PASSWORD"]).decode() == rotated
    kube.play(op.name, "Succeeded", exit_code=0)
    assert run.resume(context, trigger)["ok"] is True
    assert [e.message for e in run.events()] == ["build-image: FAILED, exit status 1 (Error)",
                                                 "build-image: ok, exit status 0"]


def test_a_missing_secret_fails_the_step_before_any_pod_starts(tmp_path, kube, ledger, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    monkeypatch.delenv("AIRFLOW_CONN_REGISTRY")
    run = Run(tmp_path, ledger, BUILD, "build.build_image")
    context = run.context()
    with pytest.raises(AirflowException, match="secret REGISTRY_PASSWORD: cannot read connection 'registry'"):
        run.rendered(context).execute(context)
    assert kube.pods() == []
    [recorded] = run.events()
    assert recorded.message.startswith("build-image: FAILED, secret REGISTRY_PASSWORD: cannot read connection")


def test_a_junit_report_is_read_through_the_xcom_sidecar(tmp_path, kube, ledger):
    from airflow.sdk.exceptions import AirflowException

    run = Run(tmp_path, ledger, UNIT_TESTS, "build.run_unit_tests")
    context = run.context()
    op, trigger = run.start(context)
    pod = kube.pod(op.name)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["base", "airflow-xcom-sidecar"]
    kube.cluster.emulator.report_files[op.name] = JUNIT_FAILED
    kube.play(op.name, "Running", exit_code=0, sidecar=True)  # pytest exited 0, yet a test failed
    with pytest.raises(AirflowException, match="1 failed test"):
        run.resume(context, trigger)
    [recorded] = run.events()
    assert recorded.message == ("unit-tests: FAILED, exit status 0; 1 failed test(s): "
                                "tests.test_cart::test_discount")
    assert recorded.data["report"] == {"format": "junit", "location": f"{op.name}:/airflow/xcom/return.json"}
    assert recorded.data["findings_total"] == 2
    execs = [(container, command) for pod_name, container, command in kube.cluster.emulator.execs
             if pod_name == op.name]
    assert [c for c, _ in execs] == ["airflow-xcom-sidecar"] * 2  # read the report, then stop the sidecar
    assert "cat /airflow/xcom/return.json" in execs[0][1] and execs[1][1].startswith("kill -2")


def test_a_scan_pod_blocks_on_its_findings_and_records_the_scan(tmp_path, kube, ledger, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    from airflow_deploy_provider.steps import reports

    monkeypatch.setitem(reports.PARSERS, "trivy", f"{__name__}:parse_cves")
    run = Run(tmp_path, ledger, SCAN, "security_scan.scan_cves")
    context = run.context()
    op, trigger = run.start(context)
    assert kube.pod(op.name)["spec"]["containers"][0]["args"][-1] == RELEASE["image"]
    kube.cluster.emulator.report_files[op.name] = json.dumps({"cves": [["CVE-2024-0001", "HIGH"],
                                                                       ["CVE-2024-0002", "LOW"]]})
    kube.play(op.name, "Running", exit_code=0, sidecar=True)
    with pytest.raises(AirflowException, match="1 blocking"):
        run.resume(context, trigger)
    [step] = run.events()
    assert step.message.startswith("scan-cves: FAILED, 1 high, 1 low; 1 blocking")
    [scan] = run.events("scan")
    assert scan.data["counts"] == {"HIGH": 1, "LOW": 1} and scan.data["blocking"] == 1
    assert scan.data["tool"] == "trivy" and scan.data["block_on"] == ["CRITICAL", "HIGH"]


def test_without_deferral_the_worker_waits_for_the_pod(tmp_path, kube, ledger):
    """``deferrable=False`` (``build_service_dags(deferrable=False)``): the pod operator polls on the worker;
    the test plays the kubelet from a thread."""
    import threading

    run = Run(tmp_path, ledger, BUILD, "build.build_image", deferrable=False)
    assert run.task.deferrable is False
    context = run.context()
    op = run.rendered(context)
    name = op.step_pod_name()

    def kubelet() -> None:
        for _ in range(400):
            if kube.pod(name) is not None:
                kube.play(name, "Succeeded", exit_code=0)
                return
            time.sleep(0.025)

    player = threading.Thread(target=kubelet)
    player.start()
    out = op.execute(context)
    player.join()
    assert out["ok"] is True and out["pod"] == name
    assert [e.message for e in run.events()] == ["build-image: ok, exit status 0"]
    assert context["ti"].pushed["return_value"] == out  # no report, no sidecar: the result still goes to XCom
