"""The dry run: what ``apply`` would do, as data (:class:`MigrationPlan`) with a readable rendering.

:func:`build_plan` is pure (the history rows are passed in): it decides which migrations are pending (or
resumed after a failure or a killed worker), in which order, how their statements are grouped into
transactions and which run alone (and why), with which timeouts; it lints the pending files and collects
the problems ``apply`` refuses on (changed applied files, breaking changes in expand migrations, versions
out of order, contract migrations ahead of their expand migrations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_deploy_provider.migrations.files import Migration, MigrationSet
from airflow_deploy_provider.migrations.history import HistoryRow, current_rows
from airflow_deploy_provider.migrations.lint import BREAKING, LintFinding, LintReport, lint_migrations
from airflow_deploy_provider.migrations.settings import MigrationSettings


@dataclass(frozen=True)
class PlannedStatement:
    number: int
    line: int
    end_line: int
    kind: str
    summary: str
    tables: tuple[str, ...]
    lock_timeout: float
    statement_timeout: float
    indexes: tuple[str, ...] = ()
    concurrent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, tables=list(self.tables), indexes=list(self.indexes))


@dataclass(frozen=True)
class PlannedGroup:
    """Statements run in one transaction, or one statement alone in autocommit (``reason``: why)."""

    transactional: bool
    reason: str
    statements: tuple[PlannedStatement, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactional": self.transactional,
            "reason": self.reason,
            "statements": [s.to_dict() for s in self.statements],
        }


@dataclass(frozen=True)
class PlannedMigration:
    """A pending migration; ``resume_from`` > 1 when an earlier attempt completed statements."""

    version: int
    description: str
    file: str
    phase: str
    checksum: str
    groups: tuple[PlannedGroup, ...]
    resume_from: int = 1
    history_id: int | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "file": self.file,
            "phase": self.phase,
            "checksum": self.checksum,
            "resume_from": self.resume_from,
            "history_id": self.history_id,
            "warnings": list(self.warnings),
            "groups": [g.to_dict() for g in self.groups],
        }


@dataclass
class MigrationPlan:
    """What ``apply`` would do. ``ok`` is False when ``apply`` would refuse (see ``problems``)."""

    database: str
    server_version: str | None
    history_table: str
    phase: str | None
    migrations: list[PlannedMigration] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    lint: LintReport = field(default_factory=LintReport)
    warnings: list[str] = field(default_factory=list)
    checksum_mismatches: list[dict[str, Any]] = field(default_factory=list)
    order_problems: list[str] = field(default_factory=list)
    refused_findings: list[LintFinding] = field(default_factory=list)

    @property
    def versions(self) -> list[int]:
        return [m.version for m in self.migrations]

    @property
    def problems(self) -> list[str]:
        return (
            [checksum_message(m) for m in self.checksum_mismatches]
            + [f"breaking change in an expand migration: {f}" for f in self.refused_findings]
            + list(self.order_problems)
        )

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (for XCom or the ledger)."""
        return {
            "database": self.database,
            "server_version": self.server_version,
            "history_table": self.history_table,
            "phase": self.phase,
            "migrations": [m.to_dict() for m in self.migrations],
            "applied": self.applied,
            "skipped": self.skipped,
            "lint": [f.to_dict() for f in self.lint.findings],
            "warnings": self.warnings + self.lint.warnings,
            "problems": self.problems,
            "ok": self.ok,
        }

    def render(self) -> str:
        """The plan as text for a task log."""
        out = [
            f"Migration plan for database {self.database}"
            + (f" (PostgreSQL {self.server_version})" if self.server_version else "")
            + f", history table {self.history_table}"
            + (f", phase {self.phase}" if self.phase else "")
        ]
        out.append(f"Applied: {', '.join(f'V{v}' for v in self.applied) or 'none'}")
        if not self.migrations:
            out.append("Pending: nothing to run")
        else:
            out.append(f"Pending: {len(self.migrations)} migration(s), in this order:")
        for m in self.migrations:
            resume = f", resuming at statement {m.resume_from}" if m.resume_from > 1 else ""
            out.append(f"  V{m.version} {m.description} [{m.phase}] {m.file}{resume}")
            for warning in m.warnings:
                out.append(f"    warning: {warning}")
            for n, g in enumerate(m.groups, start=1):
                how = "one transaction" if g.transactional else f"alone in autocommit: {g.reason}"
                out.append(f"    group {n}: {how}")
                for s in g.statements:
                    timeouts = (
                        f"lock_timeout {_seconds(s.lock_timeout)}, statement_timeout "
                        f"{_seconds(s.statement_timeout)}"
                    )
                    tables = f" tables: {', '.join(s.tables)};" if s.tables else ""
                    out.append(
                        f"      #{s.number} line {s.line} {s.kind}: {s.summary}  ({tables.strip()} "
                        f"{timeouts})".replace("( ", "(")
                    )
        for skipped in self.skipped:
            out.append(f"Not run now: V{skipped['version']} {skipped['file']}: {skipped['reason']}")
        if self.lint.findings:
            out.append("Lint findings:")
            out.extend(f"  {f} (source: {f.source})" for f in self.lint.findings)
        for warning in self.warnings + self.lint.warnings:
            out.append(f"Warning: {warning}")
        if self.problems:
            out.append("Apply would refuse:")
            out.extend(f"  {p}" for p in self.problems)
        return "\n".join(out)


def _seconds(value: float) -> str:
    return "none" if not value else (f"{value:g}s" if value < 60 else f"{value / 60:g}min")


def checksum_message(mismatch: dict[str, Any]) -> str:
    state = (
        "was applied"
        if mismatch["status"] == "applied"
        else f"is partially applied ({mismatch['last_statement']} statement(s) completed)"
    )
    return (
        f"{mismatch['file']} {state} with checksum {mismatch['stored']} but the file's checksum is now "
        f"{mismatch['current']}: applied migrations must not change (add a new migration); if the change "
        "is intended (comments, formatting), repair() records the new checksum"
    )


def checksum_mismatches(migrations: MigrationSet, rows: list[HistoryRow]) -> list[dict[str, Any]]:
    """Applied (or partially applied) scripts whose file changed."""
    found = []
    downs = current_rows(rows, "down")
    for version, row in sorted(current_rows(rows, "up").items()):
        migration = migrations.get(version)
        if migration is None:
            continue
        partial = row.status in ("running", "failed") and row.last_statement > 0
        if (row.status == "applied" or partial) and row.checksum != migration.checksum:
            found.append(
                {
                    "version": version,
                    "file": migration.file,
                    "direction": "up",
                    "status": row.status,
                    "last_statement": row.last_statement,
                    "stored": row.checksum,
                    "current": migration.checksum,
                    "history_id": row.id,
                }
            )
        down = downs.get(version)
        if (
            down
            and down.id > row.id
            and down.status in ("running", "failed")
            and down.last_statement > 0
            and migration.down
            and down.checksum != migration.down.checksum
        ):
            found.append(
                {
                    "version": version,
                    "file": migration.down.name,
                    "direction": "down",
                    "status": down.status,
                    "last_statement": down.last_statement,
                    "stored": down.checksum,
                    "current": migration.down.checksum,
                    "history_id": down.id,
                }
            )
    return found


def planned_groups(
    migration: Migration, settings: MigrationSettings, *, start: int = 1, down: bool = False
) -> tuple[PlannedGroup, ...]:
    script = migration.down if down else migration.up
    assert script is not None
    groups = []
    for group in script.groups:
        statements = tuple(
            PlannedStatement(
                s.number,
                s.line,
                s.end_line,
                s.kind,
                s.summary,
                s.tables,
                settings.timeouts_for(s.kind).lock_timeout,
                settings.timeouts_for(s.kind).statement_timeout,
                s.dropped_indexes,
                s.concurrently,
            )
            for s in group.statements
            if s.number >= start
        )
        if statements:
            groups.append(PlannedGroup(group.transactional, group.reason, statements))
    return tuple(groups)


def build_plan(
    migrations: MigrationSet,
    rows: list[HistoryRow],
    *,
    settings: MigrationSettings,
    phase: str | None = None,
    database: str = "",
    server_version: str | None = None,
    history_table: str = "",
) -> MigrationPlan:
    """Plan ``apply(migrations, phase)`` against the history ``rows`` (see the module docstring)."""
    if phase not in (None, "expand", "contract"):
        raise ValueError(f"phase must be 'expand', 'contract' or None, not {phase!r}")
    plan = MigrationPlan(
        database=database,
        server_version=server_version,
        history_table=history_table or settings.history_table,
        phase=phase,
    )
    current = current_rows(rows)
    plan.applied = sorted(v for v, r in current.items() if r.status == "applied")
    plan.checksum_mismatches = checksum_mismatches(migrations, rows)
    for version in plan.applied:
        if migrations.get(version) is None:
            plan.warnings.append(
                f"V{version} ({current[version].script}) is applied but its file is no longer in "
                f"{migrations.folder.name}"
            )
    pending: list[Migration] = []
    for migration in migrations:
        row = current.get(migration.version)
        if row is not None and row.status == "applied":
            continue
        if phase is not None and migration.phase != phase:
            plan.skipped.append(
                {
                    "version": migration.version,
                    "file": migration.file,
                    "reason": f"{migration.phase} migration (this run applies {phase} migrations)",
                }
            )
            continue
        pending.append(migration)

    def phase_of(version: int) -> str:
        migration = migrations.get(version)
        return migration.phase if migration else current[version].phase

    max_applied = {
        p: max((v for v in plan.applied if phase_of(v) == p), default=None) for p in ("expand", "contract")
    }
    all_pending = [
        m for m in migrations if (current.get(m.version) is None or current[m.version].status != "applied")
    ]
    for migration in pending:
        highest = max_applied[migration.phase]
        if highest is not None and migration.version < highest and not settings.allow_out_of_order:
            plan.order_problems.append(
                f"{migration.file} is pending but V{highest}, a later {migration.phase} migration, is "
                "already applied (out of order; set allow_out_of_order to run it anyway)"
            )
        if migration.phase == "contract":
            # Expand migrations of this run run first (lower versions); those left for another run do not.
            earlier = [
                m
                for m in all_pending
                if m.phase == "expand" and m.version < migration.version and m not in pending
            ]
            if earlier:
                plan.order_problems.append(
                    f"contract migration {migration.file} would run before expand migration(s) "
                    f"{', '.join(m.file for m in earlier)}, which are pending: apply the expand phase first"
                )
    for migration in pending:
        row = current.get(migration.version)
        resume, history_id = 1, None
        warnings = list(migration.warnings)
        if row is not None and row.status in ("running", "failed"):
            history_id = row.id
            resume = row.last_statement + 1 if row.checksum == migration.checksum else 1
            state = "was interrupted (worker killed?)" if row.status == "running" else "failed"
            warnings.append(
                f"{migration.file} {state} after statement {row.last_statement} of "
                f"{row.statements_total}: resuming at statement {resume}"
                + (f" (last error: {row.error.splitlines()[0]})" if row.error else "")
            )
        plan.migrations.append(
            PlannedMigration(
                version=migration.version,
                description=migration.description,
                file=migration.file,
                phase=migration.phase,
                checksum=migration.checksum,
                groups=planned_groups(migration, settings, start=resume),
                resume_from=resume,
                history_id=history_id,
                warnings=tuple(warnings),
            )
        )
    plan.lint = lint_migrations(
        pending, use_squawk=settings.use_squawk, squawk_path=settings.squawk_path, pg_version=server_version
    )
    if settings.refuse_breaking_in_expand:
        phases = {m.file: m.phase for m in pending}
        plan.refused_findings = [
            f for f in plan.lint.findings if f.category == BREAKING and phases.get(f.file) == "expand"
        ]
    return plan
