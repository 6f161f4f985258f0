"""Storefront, the example service: what the build packs, scans and signs, and what the local platform runs.

It serves the demo web app (``airflow_deploy_provider.demo.app``) with the shop's banner in its answers.
"""

from __future__ import annotations

import sys

BANNER = "storefront"


def title(version: str) -> str:
    """The page title of a version."""
    return f"{BANNER} {version}"


if __name__ == "__main__":
    from airflow_deploy_provider.demo.app import main

    sys.exit(main())
