"""``deploy_<service>_development``: the spec's development workflow (recreate by default)."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_deploy_provider.factory.builder import (
    ServiceDagBuilder,
    branch_param,
    chain_phases,
    commit_param,
    phase,
    reason_param,
    text_param,
    version_param,
)
from airflow_deploy_provider.factory.common import migration_task, smoke_tests


def build(b: ServiceDagBuilder) -> DAG:
    params = {
        "commit": commit_param(),
        "version": version_param(required=False, description="Version name; default: the commit's short sha."),
        "branch": branch_param(),
        "author": text_param("Author", "Commit author.", 250),
        "message": text_param("Commit message", "Commit message."),
        "committed_at": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?$",
                              title="Commit time", description="When the commit was made (ISO 8601); for the lead time."),
        "reason": reason_param(),
    }
    dag = b.dag(f"deploy_{b.name}_development", title="deploy to development", params=params, tags=["deploy"])
    with dag:
        with phase("code_push", "Git webhook triggers the pipeline; commit metadata (author, message, SHA)"):
            start = b.start(
                "extract_commit_metadata", tag_template="dev-{short_sha}", version="{{ params.version or '' }}",
                commit="{{ params.commit }}", branch="{{ params.branch or '' }}", author="{{ params.author or '' }}",
                commit_message="{{ params.message or '' }}", commit_time="{{ params.committed_at or '' }}")
        with phase("build", "Run unit tests, build the image tagged {service}:dev-{short-sha}, push it") as build:
            chain_phases(*b.steps(["unit-tests", "build-image", "push-image"]))
        with phase("security_scan", "Scan for CVEs, check for secrets, generate the SBOM") as scan:
            b.steps(["scan-cves", "scan-secrets", "generate-sbom"])
        with phase("deploy_to_dev", "Apply configuration, run migrations, update the deployment, wait until "
                   "ready") as deploy:
            migrate = migration_task(b)
            head, tail = b.strategy_tasks()
            chain_phases(migrate, head)
        with phase("smoke_tests", "Health check endpoint, basic functionality tests, log validation") as smoke:
            smoke_tests(b, role="stable")
        with phase("notification", "Slack notification with the deployment status"):
            success = b.finish_success("notify_success", publish=True)  # staging runs on it
            failure = b.finish_failure("notify_failure")
        chain_phases(start, build, scan, deploy, smoke)
        chain_phases(smoke, [success, failure])  # siblings: both stay leaves, so a failure also fails the run
    return b.finalize(dag, "development")
