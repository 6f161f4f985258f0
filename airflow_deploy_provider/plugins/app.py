"""The plugin's FastAPI app, mounted by the api-server under ``/deploy``.

Two kinds of routes live here:

- the webhooks (``/deploy/webhooks/...``), authenticated by their senders' signatures or tokens
  (:mod:`airflow_deploy_provider.plugins.webhooks`);
- everything else, for people and tools that hold an Airflow login: these depend on :data:`AUTHENTICATED`,
  Airflow's own check of the caller's token (``Authorization: Bearer`` or the UI's cookie) and of the auth
  manager's permission to read DAG runs. A new route for people (such as a metrics page) adds
  ``dependencies=AUTHENTICATED``: ``/deploy/health`` here, the DORA metrics (``/deploy/metrics``,
  ``/deploy/dora.json``, the page ``/deploy/dora``) in :mod:`airflow_deploy_provider.plugins.dora_views`.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request

from airflow_deploy_provider.plugins import signatures
from airflow_deploy_provider.plugins.payloads import MAX_BODY_BYTES, WebhookRejection


def _no_dag_id(request: Request) -> None:
    """Refuse a ``dag_id`` query parameter. Why: Airflow's check of the permission to read DAG runs takes
    ``dag_id`` from the query when there is one, and would then only check that DAG; these routes cover every
    service, so the check must be the one for DAG runs in general."""
    if "dag_id" in request.query_params:
        raise HTTPException(status_code=400, detail="dag_id is not a parameter of this route")


#: Dependencies of every route that is not a webhook: a logged-in Airflow user allowed to read DAG runs
#: (401 without a token, 403 without the permission); the ``dag_id`` guard runs first.
AUTHENTICATED = [Depends(_no_dag_id), Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]

status_router = APIRouter(tags=["status"])


@status_router.get("/health", dependencies=AUTHENTICATED, summary="Webhook set-up")
def health(user: GetUserDep) -> dict[str, Any]:
    """Whether the webhooks can work: the connection and which of its secrets are set (never their values),
    and where services are searched. For Airflow users who may read DAG runs."""
    from airflow_deploy_provider.config.loader import discover
    from airflow_deploy_provider.plugins.services import service_roots

    try:
        settings = signatures.load_settings()
        connection: dict[str, Any] = {
            "found": True, "github_secret": settings.github_secret is not None,
            "gitlab_token": settings.gitlab_token is not None,
            "alertmanager_token": settings.alertmanager_token is not None,
            "repositories": len(settings.repositories),
            "alert_cooldown_minutes": settings.alert_cooldown.total_seconds() / 60}
    except WebhookRejection:
        connection = {"found": False}
    roots = service_roots()
    return {"status": "ok" if connection["found"] else "not configured", "user": user.get_name(),
            "connection": {"conn_id": signatures.conn_id(), **connection},
            "service_roots": [str(r) for r in roots], "service_folders": len(discover(roots)),
            "max_body_bytes": MAX_BODY_BYTES}


def create_app() -> FastAPI:
    """The app: webhooks, status and DORA routes. No OpenAPI page: it would be a route without
    authentication."""
    from airflow_deploy_provider.plugins.dora_views import router as dora_router
    from airflow_deploy_provider.plugins.webhooks import router as webhooks_router

    app = FastAPI(title="airflow-deploy-provider", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(webhooks_router)
    app.include_router(status_router)
    app.include_router(dora_router)
    return app
