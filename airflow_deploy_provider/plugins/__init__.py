"""The Airflow plugin of airflow-deploy-provider: webhooks that start deployments and rollbacks, and the DORA
metrics (Prometheus gauges, JSON, a page of the UI).

Registered through the ``airflow.plugins`` entry point of the package (``pyproject.toml``), which Airflow
reads in every process whatever ``[core] lazy_load_plugins`` says (that option only decides whether plugins
load when ``airflow`` is imported or when first needed). The api-server mounts :attr:`DeployPlugin.fastapi_apps`
under ``/deploy``; the UI lists :attr:`DeployPlugin.external_views` in its navigation. See ``docs/webhooks.md``
and ``docs/dora.md``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin


class LazyApp:
    """An ASGI app that builds the plugin's FastAPI app on its first request.

    Why: Airflow imports every plugin in every process, task processes included (for macros and listeners);
    the app needs Airflow's API modules, which take seconds to import where the api-server has not loaded
    them already.
    """

    def __init__(self) -> None:
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from airflow_deploy_provider.plugins.app import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


#: The DORA page in the UI's navigation (menu Browse). With a ``url_route`` the UI shows ``href`` in a frame
#: at ``/plugin/deploy-dora`` (3.x ``ExternalViewResponse``). Why a relative ``href``: the UI resolves it
#: against its ``<base href>``, the api-server's base path, so it also works behind a path prefix
#: (``[api] base_url = https://example.com/airflow``).
DORA_VIEW: dict[str, Any] = {
    "name": "Deployments (DORA)",
    "href": "deploy/dora",
    "destination": "nav",
    "url_route": "deploy-dora",
    "category": "browse",
}


class DeployPlugin(AirflowPlugin):
    """Webhooks (GitHub, GitLab, Alertmanager), status and DORA routes under ``/deploy`` of the api-server,
    and the DORA page in the UI's navigation."""

    name = "airflow_deploy_provider"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": "/deploy", "name": "Deploy webhooks and DORA metrics"}]
    external_views = [DORA_VIEW]


__all__ = ["DeployPlugin"]
