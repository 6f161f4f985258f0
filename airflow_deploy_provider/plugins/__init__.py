"""The Airflow plugin of airflow-deploy-provider: webhooks that start deployments and rollbacks.

Registered through the ``airflow.plugins`` entry point of the package (``pyproject.toml``), which Airflow
reads in every process whatever ``[core] lazy_load_plugins`` says (that option only decides whether plugins
load when ``airflow`` is imported or when first needed). The api-server mounts :attr:`DeployPlugin.fastapi_apps`
under ``/deploy``; see ``docs/webhooks.md``.
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


class DeployPlugin(AirflowPlugin):
    """Webhooks (GitHub, GitLab, Alertmanager) and status routes under ``/deploy`` of the api-server."""

    name = "airflow_deploy_provider"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": "/deploy", "name": "Deploy webhooks"}]


__all__ = ["DeployPlugin"]
