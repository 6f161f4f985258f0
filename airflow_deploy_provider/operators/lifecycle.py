"""Start and finish of a deployment: the ledger record, the release being deployed, the notifications."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_deploy_provider.config.models import NOTIFY_EVENTS
from airflow_deploy_provider.operators.base import DeploymentBaseOperator, check_choice

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
COMMIT_PATTERN = r"^[0-9a-f]{7,40}$"
ISSUE_PATTERN = r"^[A-Za-z][A-Za-z0-9]{0,19}-[0-9]{1,10}$|^[0-9]{1,10}$"
BRANCH_PATTERN = r"^(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<!/)(?<!\.lock)$"
KINDS = ("deploy", "hotfix", "rollback", "rollout", "incident")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def _check(name: str, value: str, pattern: str, example: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{name} {value!r} is not valid: expected something like {example}")
    return value


def _run_type(value: Any) -> str:
    """``manual``/``scheduled``/...: a run type renders as ``DagRunType.SCHEDULED`` in a template."""
    text = str(value)
    return text.split(".", 1)[1].lower() if text.startswith("DagRunType.") else text


class NotifyingMixin:
    """Sends deployment notifications once per deployment and event, even when a task is retried."""

    notification: dict[str, Any] | None

    def notify(self, event: str, message: Any, context: Any, key: str | None = None) -> str:
        """Send ``message`` for ``event`` (once per ``key``); returns what happened (``sent``, ``skipped: ...``)."""
        settings = self.notification or {}
        conn_id = settings.get("slack_conn_id")
        if not conn_id:
            return "skipped: no notification channel configured"
        if event not in settings.get("events", NOTIFY_EVENTS):
            return f"skipped: {event} notifications are turned off"
        ledger = self.ledger  # type: ignore[attr-defined]
        deployment_id = self.deployment_id  # type: ignore[attr-defined]
        # One start, outcome and rollback message per deployment, however many tasks or tries reach here.
        key = key or (event if event != "approval" else f"{event}:{getattr(self, 'task_id', '')}")
        if any(e.data.get("key") == key for e in ledger.events(deployment_id, kind="notification")):
            return "skipped: already sent by an earlier try"
        from airflow_deploy_provider.notifications.slack import DeploymentNotifier

        DeploymentNotifier(slack_webhook_conn_id=conn_id, message=message).notify(context)
        ledger.record_event(deployment_id, "notification", message.text(), task_id=getattr(self, "task_id", None),
                            data={"key": key, "event": event, "channel": settings.get("channel")})
        return "sent"


class StartDeploymentOperator(NotifyingMixin, DeploymentBaseOperator):
    """
    Starts a deployment: validates what the person or webhook supplied, resolves the version and image,
    records the deployment in the ledger and announces it. Returns the release (version, image, previous
    version, commit, ...) that later tasks read.

    Re-running it returns the release recorded the first time: a retry cannot change what is deployed.

    :param kind: ``deploy``, ``hotfix``, ``rollback`` or ``rollout`` (multi-region orchestration).
    :param image_repository: image repository without tag.
    :param tag_template: image tag, with ``{version}``, ``{short_sha}`` and ``{issue_id}`` placeholders.
    :param version: version to deploy (templated). Empty for development means the commit's short sha; for a
        rollback, the last stable version before the current one.
    :param commit: commit sha (templated).
    :param commit_time: when the commit was made, ISO 8601 (templated); the start of the lead time for changes.
    :param branch: git branch (templated).
    :param author: commit author (templated).
    :param commit_message: commit message (templated).
    :param reason: why this deployment happens (templated).
    :param issue_id: hotfix issue id (templated).
    :param severity: hotfix severity, ``critical`` or ``major`` (templated).
    :param trigger: what started the run (templated); default the DAG run's type.
    :param parent_id: ledger id of the orchestrating deployment for a regional run (templated).
    :param parent_dag_id: a regional deployment or hotfix: the DAG that orchestrates it. The run must then come
        from that DAG's running rollout of the same version (its approval, checklist and window); a direct
        run is refused before anything is recorded.
    :param promote_from: the environment versions are promoted from (scheduled and asset-triggered runs).
    :param across_regions: a hotfix or rollback of every region of a multi-region service: the previous version
        is that of the last complete rollout or hotfix across the regions; a rollback goes back to the one before
        the current one.
    :param config_fingerprint: hash of the ``.deploy`` files the DAG was built from.
    :param notification: where to announce it, see :class:`NotificationSettings`.
    """

    template_fields: Sequence[str] = (
        "deployment_id", "version", "commit", "commit_time", "branch", "author", "commit_message", "reason",
        "issue_id", "severity", "trigger", "parent_id",
    )
    ui_color = "#d2e3fc"

    def __init__(
        self,
        *,
        kind: str = "deploy",
        image_repository: str,
        tag_template: str = "{version}",
        version: str | None = "{{ params.version }}",
        commit: str | None = None,
        commit_time: str | None = None,
        branch: str | None = None,
        author: str | None = None,
        commit_message: str | None = None,
        reason: str | None = None,
        issue_id: str | None = None,
        severity: str | None = None,
        trigger: str | None = "{{ dag_run.run_type }}",
        parent_id: str | None = None,
        parent_dag_id: str | None = None,
        across_regions: bool = False,
        promote_from: str | None = None,
        config_fingerprint: str | None = None,
        notification: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "kind", kind, KINDS)
        for placeholder in re.findall(r"{(\w+)}", tag_template):
            check_choice(self.task_id, "tag_template placeholder", placeholder, ("version", "short_sha", "issue_id"))
        self.kind = kind
        self.image_repository = image_repository
        self.tag_template = tag_template
        self.version = version
        self.commit = commit
        self.commit_time = commit_time
        self.branch = branch
        self.author = author
        self.commit_message = commit_message
        self.reason = reason
        self.issue_id = issue_id
        self.severity = severity
        self.trigger = trigger
        self.parent_id = parent_id
        self.parent_dag_id = parent_dag_id
        self.across_regions = across_regions
        self.promote_from = promote_from
        self.config_fingerprint = config_fingerprint
        self.notification = notification

    def describe(self) -> str:
        return f"record the {self.kind} in the ledger, resolve version and image ({self.image_repository}:" \
               f"{self.tag_template}), announce the start"

    def resolve(self) -> dict[str, Any]:
        """Validate the inputs and work out version and image (no side effects)."""
        commit = None if _blank(self.commit) else _check("commit", str(self.commit).lower(), COMMIT_PATTERN,
                                                          "'3f2c9ab' (7 to 40 hex digits)")
        short_sha = commit[:7] if commit else None
        version = None if _blank(self.version) else _check("version", str(self.version).strip(), VERSION_PATTERN,
                                                           "'1.4.2' or 'abc1234' (letters, digits, '.', '_', '-')")
        branch = None if _blank(self.branch) else _check("branch", str(self.branch), BRANCH_PATTERN, "'develop'")
        commit_time = None
        if not _blank(self.commit_time):
            try:
                commit_time = datetime.fromisoformat(str(self.commit_time).strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"commit_time {str(self.commit_time)[:40]!r} is not an ISO 8601 time such as "
                                 "'2026-11-26T14:03:00Z'") from None
            if commit_time.tzinfo is None:
                commit_time = commit_time.replace(tzinfo=timezone.utc)
        issue_id = None if _blank(self.issue_id) else _check("issue_id", str(self.issue_id), ISSUE_PATTERN,
                                                             "'INC-1234' or '1234'")
        severity = None if _blank(self.severity) else str(self.severity)
        if severity is not None:
            check_choice("hotfix", "severity", severity, ("critical", "major"))
        if self.kind == "hotfix" and (issue_id is None or severity is None):
            raise ValueError("a hotfix needs issue_id (such as 'INC-1234') and severity (critical or major)")
        if self.kind == "hotfix" and (_blank(self.reason) or len(str(self.reason).strip()) < 10):
            raise ValueError("a hotfix needs a reason of at least 10 characters: it is recorded as the emergency "
                             "override of staging and the maintenance window")
        across: list[Any] = []
        if self.kind == "rollout" or self.across_regions:  # the last complete rollout or hotfix across the regions
            across = self.ledger.across_regions(self.service, self.environment)
            previous = next((d for d in across if d.status == "succeeded"), None)
        else:
            previous = self.ledger.last_stable(self.service, self.environment, self.region)
        image: str | None = None
        if self.kind == "rollback" and self.across_regions:
            # What runs now is what the latest rollout or hotfix across the regions brought (complete or not);
            # the target is the version of the last complete one before it. Each region's rollback checks the
            # version against its own history.
            current = across[0] if across else None
            if version is None:
                before = next((d for d in across if d.status == "succeeded" and d.version != (
                    current.version if current else None)), None)
                if before is None:
                    raise ValueError(f"no earlier complete rollout or hotfix of {self.service} across the regions "
                                     "in the ledger to roll back to; give target_version")
                version, image = before.version, before.image
            elif not self.ledger.has_passed(self.service, self.environment, version):
                raise ValueError(f"version {version!r} was never deployed successfully to {self.environment}; "
                                 "a rollback only goes to a known stable version")
            previous = current
        elif self.kind == "rollback":
            target = version
            if target is None:
                before = self.ledger.last_stable(self.service, self.environment, self.region,
                                                 exclude_version=previous.version if previous else None)
                if before is None:
                    raise ValueError(f"no earlier stable version of {self.service} in {self.environment} in the "
                                     "ledger to roll back to; give target_version")
                target = before.version
                image = before.image
            elif not self.ledger.has_passed(self.service, self.environment, target):
                raise ValueError(f"version {target!r} was never deployed successfully to {self.environment}; "
                                 "a rollback only goes to a known stable version")
            version = target
        if version is None and short_sha is not None:
            version = short_sha
        if version is None:
            raise ValueError("no version given: set the 'version' parameter" +
                             (" or 'commit'" if "short_sha" in self.tag_template else ""))
        if commit is None and self.promote_from:
            # a promotion someone triggered with only the version: the commit is the one that passed before
            # (release notes and the lead time need it)
            passed = next((d for d in self.ledger.deployments(self.service, self.promote_from, status=["succeeded"])
                           if d.version == version and d.commit_sha), None)
            if passed is not None:
                commit, short_sha = passed.commit_sha, passed.commit_sha[:7]
                commit_time = commit_time or passed.commit_time
        if image is None:
            if self.kind == "rollback":
                row = next((d for d in self.ledger.deployments(self.service, self.environment,
                                                                status=["succeeded", "rolled_back"])
                            if d.version == version and d.image), None)
                image = row.image if row else None
            if image is None:
                if "{short_sha}" in self.tag_template and short_sha is None:
                    raise ValueError(f"the image tag {self.tag_template!r} needs a commit sha")
                if "{issue_id}" in self.tag_template and issue_id is None:
                    raise ValueError(f"the image tag {self.tag_template!r} needs an issue id")
                image = f"{self.image_repository}:" + self.tag_template.format(
                    version=version, short_sha=short_sha, issue_id=issue_id)
        return {
            "service": self.service, "environment": self.environment, "region": self.region, "kind": self.kind,
            "version": version, "image": image, "commit": commit, "short_sha": short_sha, "branch": branch,
            "commit_time": commit_time.isoformat() if commit_time else None,
            "author": None if _blank(self.author) else str(self.author)[:250],
            "commit_message": None if _blank(self.commit_message) else str(self.commit_message)[:2000],
            "reason": None if _blank(self.reason) else str(self.reason)[:2000],
            "issue_id": issue_id, "severity": severity,
            "previous_version": previous.version if previous else None,
        }

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.notifications.slack import DeploymentMessage, run_url, triggering_user

        existing = self.ledger.get(self.deployment_id)
        if existing is None and _blank(self.version):
            self._promoted_release(context)
        if existing is not None:
            release = dict(self._release_from(existing), **{"deployment_id": self.deployment_id})
            self.log.info("Deployment %s already recorded (retry): %s %s", self.deployment_id, release["version"],
                          release["image"])
            return release
        try:
            release = self.resolve()
            self._check_parent(release["version"])
        except ValueError as exc:  # bad input: retrying cannot fix it
            raise AirflowFailException(str(exc)) from None
        who = triggering_user(context) or release["author"]
        dag_run = context.get("dag_run")
        deployment = self.ledger.start_deployment(
            id=self.deployment_id, service=self.service, environment=self.environment, region=self.region,
            kind=self.kind, version=release["version"], image=release["image"],
            previous_version=release["previous_version"], commit_sha=release["commit"], branch=release["branch"],
            commit_time=datetime.fromisoformat(release["commit_time"]) if release["commit_time"] else None,
            author=release["author"], trigger=None if _blank(self.trigger) else _run_type(self.trigger),
            triggered_by=who, reason=release["reason"], dag_id=getattr(dag_run, "dag_id", None),
            run_id=getattr(dag_run, "run_id", None), parent_id=None if _blank(self.parent_id) else self.parent_id,
            config_fingerprint=self.config_fingerprint,
        )
        release.update(deployment_id=deployment.id, triggered_by=who)
        self._close_abandoned(dag_run)
        self.record("phase", f"{self.kind} of {self.service} {release['version']} ({release['image']}) to "
                    f"{self.environment}{'/' + self.region if self.region else ''} started"
                    + (f"; previous version {release['previous_version']}" if release["previous_version"] else ""),
                    data={k: v for k, v in release.items() if k != "commit_message"})
        message = DeploymentMessage(
            event="start", kind=self.kind, service=self.service, environment=self.environment, region=self.region,
            version=release["version"], previous_version=release["previous_version"], who=who,
            reason=release["reason"], run_url=run_url(getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None)),
            details=[("Image", release["image"])]
            + ([("Commit", f"{release['short_sha']} by {release['author'] or 'unknown'}")] if release["short_sha"] else []),
        )
        self.log.info("Start notification: %s", self.notify("start", message, context))
        return release

    def _check_parent(self, version: str) -> None:
        """A regional run belongs to a running rollout (or hotfix) of the same version: the governance steps
        (approval, checklist, maintenance window) live in the orchestrating DAG, so a direct run would skip them."""
        if not self.parent_dag_id:
            return
        hint = (f"{self.service} deploys to {self.environment} in {self.region} only as part of a run of "
                f"{self.parent_dag_id} (its approval, checklist and maintenance window); trigger that DAG")
        if _blank(self.parent_id):
            raise ValueError(f"{hint}. This run has no parent_id")
        parent = self.ledger.get(str(self.parent_id))
        if parent is None or parent.dag_id != self.parent_dag_id or parent.service != self.service:
            raise ValueError(f"{hint}. parent_id {self.parent_id!r} is not a deployment of {self.parent_dag_id}")
        if parent.status != "running":
            raise ValueError(f"{hint}. Its run {self.parent_id} is {parent.status}, not running")
        if parent.version != version:
            raise ValueError(f"{hint}. Its run {self.parent_id} deploys {parent.version}, not {version}")

    def _promoted_release(self, context: Any) -> None:
        """A run nobody gave a version: started by the previous environment's asset (its event carries the
        release) or by the schedule (maintenance window: the newest version that passed ``promote_from`` and
        is not here yet; none ends the run quietly as skipped)."""
        dag_run = context.get("dag_run")
        run_type = str(getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", "")))
        events = [e for evs in (context.get("triggering_asset_events") or {}).values() for e in evs]
        if events:
            extra = dict(events[-1].extra or {})
            self.version = extra.get("version") or self.version
            if _blank(self.commit) and extra.get("commit"):
                self.commit = extra["commit"]
            if _blank(self.commit_time) and extra.get("commit_time"):
                self.commit_time = extra["commit_time"]
            self.log.info("promoted by the asset event of %s: %s", extra.get("deployment_id"), extra)
            return
        if run_type == "scheduled" and self.promote_from:
            here = set(self.ledger.versions_passed(self.service, self.environment))
            newest = next((v for v in self.ledger.versions_passed(self.service, self.promote_from) if v not in here),
                          None)
            if newest is None:
                raise AirflowSkipException(f"nothing to deploy: no version that passed {self.promote_from} is "
                                           f"missing from {self.environment}")
            self.log.info("scheduled run: %s, the newest version that passed %s", newest, self.promote_from)
            self.version = newest

    def _close_abandoned(self, dag_run: Any) -> None:
        """A deployment DAG runs one run at a time (``max_active_runs=1``), so an earlier deployment of this DAG
        still marked running was cut off (a killed worker, a deleted run): record it as failed."""
        dag_id = getattr(dag_run, "dag_id", None)
        for older in self.ledger.deployments(self.service, self.environment, status=["running"]):
            if older.id != self.deployment_id and older.dag_id == dag_id:
                reason = f"abandoned: its run ended without an outcome; superseded by {self.deployment_id}"
                self.ledger.finish_deployment(older.id, "failed", reason)
                self.ledger.record_event(older.id, "phase", reason, task_id=self.task_id)
                self.log.warning("Deployment %s %s", older.id, reason)

    def _release_from(self, deployment: Any) -> dict[str, Any]:
        return {
            "service": deployment.service, "environment": deployment.environment,
            "region": deployment.region or None, "kind": deployment.kind, "version": deployment.version,
            "image": deployment.image, "commit": deployment.commit_sha,
            "commit_time": deployment.commit_time.isoformat() if deployment.commit_time else None,
            "short_sha": deployment.commit_sha[:7] if deployment.commit_sha else None, "branch": deployment.branch,
            "author": deployment.author, "reason": deployment.reason, "triggered_by": deployment.triggered_by,
            "previous_version": deployment.previous_version,
            "issue_id": None if _blank(self.issue_id) else self.issue_id,
            "severity": None if _blank(self.severity) else self.severity,
        }


class FinishDeploymentOperator(NotifyingMixin, DeploymentBaseOperator):
    """
    Finishes a deployment: records the outcome in the ledger and announces it.

    With ``outcome="failed"`` it runs when an upstream task failed (trigger rule ``one_failed``); a deployment
    already recorded as rolled back keeps that outcome and the rollback's own notification.

    :param outcome: ``succeeded`` or ``failed``.
    :param record: write the outcome to the ledger.
    :param announce: send the notification.
    :param notification: where to announce it.
    :param regions: for a multi-region rollout, its regions in rollout order: the outcome of each regional
        deployment (from the ledger) is recorded and shown as a table in the notification.
    """

    ui_color = "#ceead6"

    def __init__(self, *, outcome: str, record: bool = True, announce: bool = True,
                 notification: dict[str, Any] | None = None, regions: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice(self.task_id, "outcome", outcome, ("succeeded", "failed"))
        if not record and not announce:
            raise ValueError(f"{self.task_id}: a finish task must record or announce (or both)")
        self.outcome = outcome
        self.record_outcome = record
        self.announce = announce
        self.notification = notification
        self.regions = list(regions or [])
        if outcome == "failed":
            self.ui_color = "#fad2cf"

    def describe(self) -> str:
        parts = (["record the outcome in the ledger"] if self.record_outcome else []) + (
            ["announce it"] if self.announce else [])
        return f"{' and '.join(parts)} ({self.outcome})"

    def execute(self, context: Any) -> None:
        from airflow_deploy_provider.notifications.slack import DeploymentMessage, run_url

        deployment = self.ledger.get(self.deployment_id)
        if deployment is None:
            raise AirflowSkipException("the deployment never started (its start task did not run), nothing to record")
        reason = None
        if self.outcome == "failed":
            reason = self._failure_reason(context)
        table = self.region_table() if self.regions else None
        if self.record_outcome:
            deployment = self.ledger.finish_deployment(self.deployment_id, self.outcome, reason)
            if deployment.kind == "rollback" and deployment.status == "succeeded":
                self._mark_replaced(deployment)
            self.record("phase", f"deployment outcome: {deployment.status}" + (f" ({reason})" if reason else ""),
                        data={"status": deployment.status, **({"regions": table} if table else {})})
            if table:
                self.log.info("per-region outcome:\n%s", "\n".join("  ".join(f"{c:<16}" for c in row)
                                                                  for row in table))
        if self.outcome == "succeeded" and deployment.status == "succeeded":
            for asset in self.outlets:  # the next environment's DAG runs on this event, with this release
                context["outlet_events"][asset].extra = {
                    "version": deployment.version, "image": deployment.image, "commit": deployment.commit_sha,
                    "commit_time": deployment.commit_time.isoformat() if deployment.commit_time else None,
                    "deployment_id": deployment.id}
        if not self.announce:
            return
        if deployment.status == "rolled_back" and self.outcome == "failed":
            self.log.info("Deployment was rolled back; the rollback already announced it.")
            return
        event = "success" if self.outcome == "succeeded" else "failure"
        finished = deployment.finished_at or datetime.now(timezone.utc)
        message = DeploymentMessage(
            event=event, kind=deployment.kind, service=self.service, environment=self.environment,
            region=self.region, version=deployment.version, previous_version=deployment.previous_version,
            who=deployment.triggered_by, duration_seconds=(finished - deployment.started_at).total_seconds(),
            reason=deployment.outcome_reason or reason,
            run_url=run_url(deployment.dag_id, deployment.run_id), table=table,
        )
        self.log.info("%s notification: %s", event, self.notify(event, message, context))

    def region_table(self) -> list[list[str]]:
        """One row per region of the rollout: its outcome, version and duration."""
        from airflow_deploy_provider.operators.region import region_table

        return region_table(self.ledger, self.deployment_id, self.regions)

    def _mark_replaced(self, rollback: Any) -> None:
        """The deployment a successful rollback replaced is recorded as rolled back, so that it is no longer a
        "last stable version" (a second rollback must not go back to it) and counts as a failed change."""
        replaced = self.ledger.replaced_by(rollback)
        if replaced is None:
            return
        from airflow_deploy_provider.ledger.store import REPLACED

        why = f"rolled back to {rollback.version} by {rollback.id}" + (f": {rollback.reason}" if rollback.reason else "")
        # The event first: a completed deployment replaced by a rollback still "passed" (it may be chosen as a
        # rollback target again), one rolled back during its own rollout never did.
        self.ledger.record_event(replaced.id, REPLACED, why, task_id=self.task_id,
                                 data={"by": rollback.id, "to": rollback.version})
        # It keeps the time it completed at (lead time counts to then); the event has when it was replaced.
        self.ledger.finish_deployment(replaced.id, "rolled_back", why, finished_at=replaced.finished_at)
        self.log.info("Deployment %s (%s) %s", replaced.id, replaced.version, why)

    def _failure_reason(self, context: Any) -> str:
        """Name the failed tasks (through the task SDK, never the metadata database)."""
        ti = context.get("ti")
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
            failed = sorted(t for t, s in (states.get(ti.run_id) or {}).items() if s == "failed")
        except Exception:  # the SDK call is best effort: the outcome is recorded either way
            failed = []
        gate = next((e for e in reversed(self.ledger.events(self.deployment_id))
                     if (e.kind in ("gate", "rollback") and e.data.get("decision") in ("rollback", "fail"))
                     or (e.kind == "approval" and e.data.get("decision") in ("rejected", "expired"))), None)
        parts = []
        if failed:
            parts.append("failed: " + ", ".join(failed))
        if gate is not None and gate.message:
            parts.append(gate.message)
        return "; ".join(parts) or "an upstream task failed"


class EmergencyOverrideOperator(DeploymentBaseOperator):
    """
    Records a hotfix's emergency override in the ledger: staging and the maintenance window are skipped, by
    whom and why (the run's reason).

    Template fields: ``deployment_id``, ``version``.

    :param version: the hotfix version (templated).
    """

    template_fields: Sequence[str] = ("deployment_id", "version")
    ui_color = "#fad2cf"

    def __init__(self, *, version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    def describe(self) -> str:
        return "record the emergency override (staging and maintenance window skipped; who and why)"

    def execute(self, context: Any) -> dict[str, Any]:
        deployment = self.ledger.get(self.deployment_id)
        if deployment is None:
            raise ValueError(f"deployment {self.deployment_id} was not started")
        if any(e.kind == "override" for e in self.ledger.events(self.deployment_id, kind="override")):
            self.log.info("override already recorded (retry)")
            return {"who": deployment.triggered_by, "why": deployment.reason}
        override = {"who": deployment.triggered_by, "why": deployment.reason, "skipped": ["staging",
                                                                                        "maintenance window"]}
        self.record("override", f"emergency override by {deployment.triggered_by or 'unknown'}: staging and the "
                    f"maintenance window are skipped for {self.version} ({deployment.reason})", data=override)
        return override
