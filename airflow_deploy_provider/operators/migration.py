"""Database migrations (PostgreSQL): apply, revert, check (dry run), repair checksums, back up and restore.

The operators decide when; :mod:`airflow_deploy_provider.migrations` (through
:class:`~airflow_deploy_provider.hooks.migration.PostgresMigrationHook`) decides how.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator, check_choice

#: Engine report kinds worth a ledger event (the rest, such as each statement, go to the task log only).
LEDGER_REPORTS = {"lock_wait", "plan", "warning", "lint", "preflight", "resumed", "retry", "invalid_index", "blocking", "cancelled",
                  "deadlock", "replication_lag", "failed", "applied", "reverted", "repaired", "locked"}
#: SQLSTATE classes a retry can get past: transaction rollback (deadlock, serialization), lock not available,
#: operator intervention (cancelled, shut down), connection, resources, system errors.
TRANSIENT_SQLSTATES = ("40", "55P03", "57", "08", "53", "58")
#: How often a run waiting for another run's migration lock tries again (in the triggerer meanwhile).
LOCK_POLL = timedelta(seconds=5)


def _fail_on_bad_input(exc: Exception) -> AirflowFailException:
    return AirflowFailException(str(exc))


class _MigrationTask(DeploymentBaseOperator):
    """What the migration operators share: the files, the connection, the engine settings, reporting."""

    def __init__(self, *, migrations_path: str, conn_id: str, settings: dict[str, Any] | None = None,
                 record_deployment: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.migrations_path = migrations_path
        self.conn_id = conn_id
        self.settings = settings or {}
        self.record_deployment = record_deployment

    def record(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        if self.record_deployment:
            super().record(kind, message, data)
        else:
            self.log.info("%s: %s", kind, message)

    @cached_property
    def hook(self) -> Any:
        from airflow_deploy_provider.hooks.migration import PostgresMigrationHook

        return PostgresMigrationHook(self.conn_id)

    def load(self) -> Any:
        from airflow_deploy_provider.migrations import MigrationError, load_migrations

        try:
            return load_migrations(Path(self.migrations_path), require_down=self.environment == "production")
        except MigrationError as exc:  # a bad file: nothing ran, retrying cannot help
            raise _fail_on_bad_input(exc) from None

    def report(self, kind: str, data: dict[str, Any]) -> None:
        """The engine's observations: every one to the task log, the significant ones to the ledger too."""
        message = data.get("message") or kind
        (self.log.warning if kind in ("warning", "failed", "blocking", "cancelled", "deadlock", "replication_lag",
                                      "retry", "invalid_index") else self.log.info)("migration %s: %s", kind, message)
        if kind in LEDGER_REPORTS:
            self.record("migration", f"{kind}: {message}", data={"report": kind, **{
                k: v for k, v in data.items() if k != "message" and isinstance(v, (str, int, float, bool, type(None)))}})

    def runner(self, context: Any) -> Any:
        ti = context.get("ti")
        run = f"{getattr(ti, 'dag_id', '')}/{getattr(ti, 'run_id', '')}/{self.task_id}"
        return self.hook.runner(self.settings, report=self.report, who=self._who(context), run=run)

    def _who(self, context: Any) -> str:
        from airflow_deploy_provider.notifications.slack import triggering_user

        return triggering_user(context) or "airflow"

    def record_run(self, migration: Any, *, direction: str, status: str, database: str, started: datetime,
                   statements: int = 0, error: str | None = None) -> None:
        self.ledger.record_migration(
            service=self.service, environment=self.environment, database=database, version=str(migration.version),
            direction=direction, status=status, deployment_id=self.deployment_id if self.record_deployment else None,
            description=migration.description, phase=migration.phase, checksum=migration.checksum,
            statements_done=statements, error=error, started_at=started, finished_at=datetime.now(timezone.utc))


class MigrationOperator(_MigrationTask):
    """
    Applies (``direction="up"``) the pending migrations of one phase, reverts (``down``) those the deployment
    being rolled back applied, or only plans and checks them (``dry_run``): files, statement order,
    transaction grouping, lint findings, and for ``down`` what would be reverted.

    Only one run migrates a database at a time (an advisory lock): a run that finds the lock taken waits in
    the triggerer, ``lock_wait`` at most, then fails naming the holder. An Airflow retry resumes after the last
    statement completed. Production applies only after a verified backup of this deployment (the checklist's
    ``database_backup_completed``, or one taken here).

    Template fields: ``deployment_id``, ``version``, ``target_version``.

    :param migrations_path: folder of the migration files.
    :param conn_id: connection of the target database.
    :param direction: ``up`` or ``down``.
    :param phase: ``expand`` (runs with deployments) or ``contract``.
    :param dry_run: plan and check only.
    :param backup: take (or find) and verify a backup first.
    :param backup_location: folder of the backups; default ``$AIRFLOW_HOME/deploy-backups/<service>/<env>``.
    :param settings: the engine's settings (``MigrationSettings``).
    :param record_deployment: record events on the run's deployment in the ledger (a DAG without one records
        migration runs only).
    :param lock_wait: how long to wait for another run's lock; 0 fails at once.
    :param version: the application version being deployed (templated).
    :param target_version: ``down``: the version being rolled back to (templated).
    :param deferrable: wait for the lock in the triggerer (``False``: on the worker).
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "target_version")
    ui_color = "#fde293"
    expected_duration = timedelta(seconds=30)

    def __init__(self, *, direction: str = "up", phase: str = "expand", dry_run: bool = False,
                 backup: bool = False, backup_location: str | None = None, lock_wait: timedelta = timedelta(minutes=30),
                 version: str = "", target_version: str = "", deferrable: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=15))
        super().__init__(**kwargs)
        check_choice(self.task_id, "direction", direction, ("up", "down"))
        check_choice(self.task_id, "phase", phase, ("expand", "contract"))
        self.direction = direction
        self.phase = phase
        self.dry_run = dry_run
        self.backup = backup
        self.backup_location = backup_location
        self.lock_wait = lock_wait
        self.version = version
        self.target_version = target_version
        self.deferrable = deferrable

    def describe(self) -> str:
        if self.dry_run:
            what = "revert" if self.direction == "down" else f"apply ({self.phase})"
            return f"plan and check the migrations to {what} from {self.migrations_path} (nothing executed)"
        if self.direction == "down":
            return f"run the down migrations of the versions being rolled back, newest first, on {self.conn_id}"
        return f"run the pending {self.phase} migrations from {self.migrations_path} on {self.conn_id}" + (
            " after a verified backup" if self.backup else "")

    # ------------------------------------------------------------------------------------------ execution

    def execute(self, context: Any, deadline: str | None = None) -> dict[str, Any]:
        from airflow_deploy_provider.migrations import MigrationError

        migrations = self.load()
        try:
            with self.runner(context) as runner:
                if self.dry_run:
                    return self._check(runner, migrations)
                lock = runner.try_lock()
                while not lock.acquired:
                    self._wait_for_lock(lock, deadline)  # defers, or with deferrable=False sleeps here
                    deadline = deadline or (datetime.now(timezone.utc) + self.lock_wait).isoformat()
                    lock = runner.try_lock()
                if self.direction == "down":
                    return self._revert(runner, migrations)
                return self._apply(runner, migrations)
        except MigrationError as exc:
            self.record("migration", f"stopped: {exc}", data={"report": "stopped", "error": type(exc).__name__})
            raise self._failure(exc) from None

    def resume_after_lock_wait(self, context: Any, event: Any = None, deadline: str | None = None) -> dict[str, Any]:
        return self.execute(context, deadline=deadline)

    def _wait_for_lock(self, lock: Any, deadline: str | None) -> None:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        holder = lock.holder.describe() if lock.holder else "another session"
        now = datetime.now(timezone.utc)
        until = datetime.fromisoformat(deadline) if deadline else now + self.lock_wait
        if now >= until:
            raise AirflowFailException(
                f"another run is migrating this database ({holder}); waited {self.lock_wait} for it (migrations.lockWait)")
        self.report("lock_wait", {"message": f"another run is migrating this database ({holder}); waiting until "
                                             f"{until:%H:%M:%S} UTC"})
        if self.deferrable:
            self.defer(trigger=TimeDeltaTrigger(LOCK_POLL), method_name="resume_after_lock_wait",
                       kwargs={"deadline": until.isoformat()})
        import time

        time.sleep(LOCK_POLL.total_seconds())

    def _failure(self, exc: Exception) -> Exception:
        from airflow_deploy_provider.migrations import (
            ChecksumMismatch,
            LintRefused,
            MigrationFileError,
            MigrationPlanError,
            RevertRefused,
        )

        if isinstance(exc, (ChecksumMismatch, LintRefused, MigrationFileError, MigrationPlanError, RevertRefused)):
            return AirflowFailException(str(exc))  # the files must change first: retrying cannot help
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate and not sqlstate.startswith(TRANSIENT_SQLSTATES):
            return AirflowFailException(str(exc))  # a data or SQL error: the same statement fails again
        return AirflowException(str(exc))  # a lock, a timeout, a lost connection: a retry resumes

    def _check(self, runner: Any, migrations: Any) -> dict[str, Any]:
        if self.direction == "down":
            versions = self._versions_to_revert(runner)
            refused = []
            for version in versions:
                migration = migrations.get(version)
                if migration is None:
                    refused.append(f"V{version} has no file any more")
                elif migration.phase == "contract":
                    refused.append(f"V{version} is a contract migration: it is not reverted")
                elif migration.down is None:
                    refused.append(f"V{version} is irreversible ({migration.irreversible})")
            summary = (f"would revert {', '.join(f'V{v}' for v in reversed(versions))}" if versions
                       else "no migration to revert")
            self.report("plan", {"message": summary + (f"; refused: {'; '.join(refused)}" if refused else "")})
            if refused:
                raise AirflowFailException("the database cannot be rolled back with down migrations: "
                                           + "; ".join(refused) + " (restore from backup is the last resort)")
            return {"revert": versions}
        plan = runner.plan(migrations, phase=self.phase)
        self.log.info("Migration plan:\n%s", plan.render())
        pending = [f"V{v}" for v in plan.versions]
        self.record("migration", f"plan: {', '.join(pending) or 'nothing pending'}"
                    + (f"; problems: {'; '.join(plan.problems)}" if plan.problems else ""),
                    data={"report": "plan", "pending": plan.versions, "problems": plan.problems})
        if not plan.ok:
            raise AirflowFailException("the pending migrations cannot run: " + "; ".join(plan.problems))
        return {"pending": plan.versions, "warnings": plan.warnings}

    def _apply(self, runner: Any, migrations: Any) -> dict[str, Any]:
        runner.verify_checksums(migrations)
        # What is pending, from the history alone: apply() plans (and lints) itself, once.
        applied = {row.version for row in runner.applied()}
        if not [m for m in migrations if m.phase == self.phase and m.version not in applied]:
            self.report("applied", {"message": f"no pending {self.phase} migration"})
            return {"applied": []}
        if self.backup:
            self._ensure_backup()
        started = datetime.now(timezone.utc)
        try:
            result = runner.apply(migrations, phase=self.phase)
        except Exception as exc:
            failed = next((r for r in runner.history() if r.status == "failed"), None)
            if failed is not None and migrations.get(failed.version) is not None:
                self.record_run(migrations.get(failed.version), direction="up", status="failed",
                                database=runner.database, started=started, statements=failed.last_statement,
                                error=str(exc)[:2000])
            raise
        database = runner.database
        for version in result.applied:
            migration = migrations.get(version)
            done = sum(1 for s in result.statements if s.version == version)
            self.record_run(migration, direction="up", status="applied", database=database, started=started,
                            statements=done)
        return result.to_dict()

    def _revert(self, runner: Any, migrations: Any) -> dict[str, Any]:
        versions = self._versions_to_revert(runner)
        if not versions:
            self.report("reverted", {"message": "no migration of the versions rolled back to revert"})
            return {"reverted": []}
        started = datetime.now(timezone.utc)
        result = runner.revert(migrations, versions)
        database = runner.database
        for version in result.reverted:
            self.record_run(migrations.get(version), direction="down", status="reverted", database=database,
                            started=started)
        return result.to_dict()

    def _versions_to_revert(self, runner: Any) -> list[int]:
        """Migrations applied (and still applied) by the deployments after the last one of the version rolled
        back to, newest first."""
        database = runner.database
        target = str(self.target_version or self.version or "")
        back_to = next((d for d in self.ledger.deployments(self.service, self.environment)
                        if d.version == target and d.kind != "rollback"
                        and d.status in ("succeeded", "rolled_back")), None)
        if back_to is None:  # never guess: without the target's deployment nothing is known to be newer
            self.report("warning", {"message": f"no deployment of {target!r} in the ledger: no migration reverted"})
            return []
        latest: dict[str, Any] = {}
        for run in self.ledger.migration_runs(self.service, self.environment, database):
            latest[run.version] = run
        in_database = {row.version for row in runner.applied()}
        # what the version rolled back to ran with stays: only later deployments' migrations are reverted
        versions = [int(v) for v, run in latest.items()
                    if run.direction == "up" and run.status == "applied" and int(v) in in_database
                    and run.deployment_id != back_to.id and run.started_at >= back_to.started_at]
        return sorted(versions, reverse=True)

    def _ensure_backup(self) -> dict[str, Any]:
        """This deployment's verified backup (taken by the checklist), or a new one."""
        database = self.hook.database
        deployment = self.ledger.get(self.deployment_id) if self.record_deployment else None
        # a region's deployment uses the backup its rollout's checklist took
        for owner in [self.deployment_id, *([deployment.parent_id] if deployment and deployment.parent_id else [])]:
            for event in reversed(self.ledger.events(owner, kind="backup")):
                if event.data.get("verified") and event.data.get("database") == database:
                    self.log.info("Verified backup of %s: %s", owner, event.data.get("location"))
                    return event.data
        return take_backup(self, self.hook)


def take_backup(task: DeploymentBaseOperator, hook: Any, location: str | None = None) -> dict[str, Any]:
    """A verified ``pg_dump`` backup, recorded as a ``backup`` event of the task's deployment."""
    from airflow_deploy_provider.hooks.migration import default_backup_folder

    folder = Path(location) / task.service / task.environment if location else default_backup_folder(
        task.service, task.environment)
    try:
        result = hook.backup(folder)
    except Exception as exc:
        raise AirflowException(f"database backup failed: {exc}") from None
    if not result.verified:
        raise AirflowException(f"the backup {result.location} could not be verified (pg_restore --list)")
    data = {"location": result.location, "database": result.database, "size_bytes": result.size_bytes,
            "toc_entries": result.toc_entries, "verified": True, "duration_seconds": result.duration_seconds}
    task.record("backup", f"backup of {result.database}: {result.location} ({result.size_bytes} bytes, "
                f"{result.toc_entries} entries, verified)", data=data)
    return data


class ContractReadinessOperator(DeploymentBaseOperator):
    """
    Lets contract migrations (dropping what the old application version used) run only once the ledger shows
    that version retired for ``delay``: the deployment that applied the newest expand migration (or, without
    one, the current deployment) succeeded at least ``delay`` ago, nothing went back to an older version since,
    and no deployment of the environment is running.

    :param delay: how long the old version must have been retired (spec: one week).
    """

    template_fields: Sequence[str] = ("deployment_id",)

    def __init__(self, *, delay: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def describe(self) -> str:
        from airflow_deploy_provider.config.types import format_duration

        return f"check the old version has been retired for {format_duration(self.delay)} (ledger)"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_deploy_provider.config.types import format_duration

        history = [d for d in self.ledger.deployments(self.service, self.environment)  # newest first
                   if d.kind != "incident"]
        running = [d for d in history if d.status == "running"]
        if running:
            raise AirflowFailException(f"{running[0].id} is deploying {running[0].version} to {self.environment} now")
        expand = [r for r in self.ledger.migration_runs(self.service, self.environment)
                  if r.direction == "up" and r.status == "applied" and (r.phase or "expand") == "expand"
                  and r.deployment_id]
        anchor = self.ledger.get(expand[-1].deployment_id) if expand else next(
            (d for d in history if d.status == "succeeded"), None)
        if anchor is None:
            raise AirflowFailException(f"nothing deployed to {self.environment} in the ledger: no version to retire")
        why = (f"{anchor.version} ({anchor.id}) applied the latest expand migration V{expand[-1].version}" if expand
               else f"{anchor.version} ({anchor.id}) is the current version")
        if anchor.status not in ("succeeded", "rolled_back") or anchor.finished_at is None:
            raise AirflowFailException(f"{why}, but that deployment is {anchor.status}: the old version is not retired")
        old = {d.version for d in history if d.started_at < anchor.started_at and d.version != anchor.version}
        back = [d for d in history if d.started_at > anchor.started_at and d.version in old
                and d.status in ("succeeded", "running")]
        if back:
            raise AirflowFailException(f"{why}; since then {back[0].id} went back to {back[0].version}, which may "
                                       "still use what the contract migrations drop")
        if anchor.status == "rolled_back" and anchor.kind != "rollback":
            raise AirflowFailException(f"{why}, but it was rolled back: the old version runs again")
        retired = datetime.now(timezone.utc) - anchor.finished_at
        if retired < self.delay:
            raise AirflowFailException(
                f"{why}; the old version was retired {format_duration(retired)} ago, contract migrations wait "
                f"{format_duration(self.delay)} (migrations.contractDelay): from "
                f"{anchor.finished_at + self.delay:%Y-%m-%d %H:%M} UTC")
        message = f"{why}; the old version was retired {format_duration(retired)} ago"
        self.log.info(message)
        return {"anchor": anchor.id, "retired_seconds": retired.total_seconds()}


class MigrationRepairOperator(_MigrationTask):
    """
    Accepts edited migration files: the checksums stored for applied versions are replaced with the files'
    current ones (recorded in the history table with who and when). Only for the intended case, such as a
    comment fixed in an applied file; it runs nothing else.

    :param migrations_path: folder of the migration files.
    :param conn_id: connection of the target database.
    :param confirm: must equal ``expected`` (templated): a person typed it; otherwise the task skips (the
        DAG's other environment's task matches it).
    :param expected: the confirmation text.
    """

    template_fields: Sequence[str] = ("deployment_id", "confirm")

    def __init__(self, *, confirm: str, expected: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.confirm = confirm
        self.expected = expected

    def describe(self) -> str:
        return "accept the current checksums of applied migration files (explicitly confirmed)"

    def execute(self, context: Any) -> list[dict[str, Any]]:
        if str(self.confirm).strip() != self.expected:  # the confirmation names another environment
            raise AirflowSkipException(f"not this environment: 'confirm' is not {self.expected!r}")
        migrations = self.load()
        with self.runner(context) as runner:
            repaired = runner.repair(migrations)
        self.log.info("Repaired: %s", repaired or "nothing (every checksum matches)")
        return repaired


class DatabaseRestoreOperator(_MigrationTask):
    """
    The last resort of a database rollback: restores a verified ``pg_dump`` backup over the database (objects
    in the dump dropped and recreated, in one transaction). Runs only when a person confirmed it.

    Template fields: ``deployment_id``, ``backup_location``, ``confirm``.

    :param backup_location: the backup file; empty means the newest verified backup of this environment in the
        ledger.
    :param confirm: must equal ``expected`` (templated).
    :param expected: the confirmation text.
    """

    template_fields: Sequence[str] = ("deployment_id", "backup_location", "confirm")
    ui_color = "#f28b82"

    def __init__(self, *, backup_location: str = "", confirm: str = "", expected: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backup_location = backup_location
        self.confirm = confirm
        self.expected = expected

    def describe(self) -> str:
        return "restore the database from a verified backup (explicitly confirmed; last resort)"

    def execute(self, context: Any) -> dict[str, Any]:
        if str(self.confirm).strip() != self.expected:
            raise AirflowFailException(f"not confirmed (set 'confirm' to {self.expected!r}): nothing restored")
        path = str(self.backup_location or "").strip()
        if not path:
            backups = [e.data for e in self.ledger.service_events(self.service, kind="backup")
                       if e.data.get("verified") and e.data.get("location")]
            mine = [b for b in backups if f"/{self.environment}/" in b["location"]]
            if not mine:
                raise AirflowFailException(f"no verified backup of {self.service} in {self.environment} in the ledger")
            path = mine[-1]["location"]
        if not Path(path).is_file():
            raise AirflowFailException(f"backup {path} does not exist on this worker")
        result = self.hook.restore(Path(path))
        self.record("restore", f"database {result.database} restored from {path}",
                    data={"location": path, "database": result.database, "duration_seconds": result.duration_seconds})
        return {"location": path, "database": result.database}
