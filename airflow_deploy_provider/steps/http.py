"""Steps that send HTTP requests: alert rules, dashboards, tracing settings and deployment annotations.

Each request goes through the http provider's :class:`~airflow.providers.http.hooks.http.HttpHook` and an
Airflow connection (host, credentials, headers in its extra): nothing secret is written in ``.deploy`` files
and nothing from the connection is logged here.

Re-running a step converges as long as the requests overwrite by name (Grafana ``POST /api/dashboards/db`` with
``"overwrite": true``, a Prometheus/Mimir ruler's ``POST /api/v1/rules/<namespace>`` replacing the rule group).
An annotation is an event, not a named object: ``annotate-deployment`` records each request it sent in the
ledger and a retry of the same deployment does not send it again.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_deploy_provider.steps import Finding, StepContext, StepError, StepResult

#: Steps whose requests create something new each time (no name to overwrite): sent once per deployment.
ONCE_PER_DEPLOYMENT = ("annotate-deployment",)
#: Seconds one request may take (less when the step's own time limit is nearer).
REQUEST_TIMEOUT = 60.0


def placeholders(ctx: StepContext) -> dict[str, str]:
    """What ``{name}`` in a request's path and body is replaced with: the step placeholders plus
    ``{deployment_id}`` and ``{step}``."""
    return {**ctx.values(), "deployment_id": ctx.deployment_id, "step": ctx.step}


def fill_text(text: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` for the known ``values`` only: JSON and YAML bodies are full of other braces."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def release_body(ctx: StepContext) -> str:
    """The default body: a JSON description of the release."""
    return json.dumps({
        "service": ctx.service, "environment": ctx.environment, "region": ctx.region, "version": ctx.version,
        "image": ctx.image, "commit": ctx.commit or None, "previous_version": ctx.previous_version,
        "deployment_id": ctx.deployment_id, "step": ctx.step,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, sort_keys=True)


def request_body(ctx: StepContext, request: dict[str, Any], values: dict[str, str]) -> str:
    """The request's body file (relative to the service folder) with its placeholders filled in, or the
    default JSON description of the release."""
    name = request.get("body")
    if not name:
        return release_body(ctx)
    path = Path(name) if Path(name).is_absolute() else ctx.service_root / name
    if not path.is_file():
        raise StepError(f"body file {name!r} of {request.get('method') or 'POST'} {request['path']} not found in "
                        f"the service folder {ctx.service_root}")
    return fill_text(path.read_text(), values)


def run_requests(ctx: StepContext, runner: dict[str, Any]) -> StepResult:
    """Send the step's requests in order; the first refused one (non-2xx) fails the step, naming it."""
    from airflow.providers.http.hooks.http import HttpHook

    values = placeholders(ctx)
    once = ctx.step in ONCE_PER_DEPLOYMENT and ctx.ledger is not None
    done = {e.data.get("key") for e in ctx.ledger.events(ctx.deployment_id, kind="annotation")} if once else set()
    deadline = time.monotonic() + ctx.timeout
    result = StepResult(ok=True, summary="", changed=False, data={"requests": []})
    skipped = 0
    for i, request in enumerate(runner["http"]):
        method = request.get("method") or "POST"
        conn_id = request["connection"]
        path = fill_text(request["path"], values)
        what = f"{method} {conn_id}{path}"
        key = f"{ctx.step}:{i}:{what}"
        if key in done:
            ctx.log.info("%s: already sent for this deployment by an earlier try; not sent again", what)
            result.findings.append(Finding(tool="http", kind="request", id=what, title="already sent",
                                           location=conn_id, passed=True))
            skipped += 1
            continue
        body = request_body(ctx, request, values)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StepError(f"timed out after {ctx.timeout:g}s before {what}")
        hook = HttpHook(method=method, http_conn_id=conn_id)
        try:
            response = hook.run(endpoint=path, data=body.encode(),
                                headers={"Content-Type": request.get("content_type") or "application/json"},
                                extra_options={"check_response": False,
                                               "timeout": min(REQUEST_TIMEOUT, remaining)})
        except Exception as exc:  # noqa: BLE001 - a missing connection, a refused or timed-out connection
            # The exception's type and text name the host at most; the hook's session (headers, auth) is not shown.
            raise StepError(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from None
        status = response.status_code
        ctx.log.info("%s: HTTP %s", what, status)
        if not 200 <= status < 300:
            detail = " ".join((response.text or "").split())[:200]
            raise StepError(f"{what}: HTTP {status}" + (f": {detail}" if detail else ""))
        result.findings.append(Finding(tool="http", kind="request", id=what, title=f"HTTP {status}",
                                       location=conn_id, passed=True))
        result.data["requests"].append({"request": what, "status": status})
        result.changed = True
        if once:
            assert ctx.ledger is not None
            ctx.ledger.record_event(ctx.deployment_id, "annotation", f"{ctx.step}: {what} sent (HTTP {status})",
                                    task_id=None, data={"key": key, "step": ctx.step, "status": status,
                                                        "version": ctx.version})
    sent = len(result.data["requests"])
    result.summary = f"{sent} request(s) sent" + (f": {', '.join(str(r['status']) for r in result.data['requests'])}"
                                                  if sent else "")
    if skipped:
        result.summary += f"; {skipped} already sent for this deployment"
    return result
