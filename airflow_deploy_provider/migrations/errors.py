"""Exceptions of the migration engine; all derive from :class:`MigrationError`."""

from __future__ import annotations

from typing import Any


class MigrationError(Exception):
    """Base class of every error the migration engine raises."""


class SqlSplitError(MigrationError):
    """A statement could not be split (an unterminated string, comment or dollar-quoted body)."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class MigrationFileError(MigrationError):
    """A migration file is misnamed, duplicated, missing its down file, or has an invalid header or SQL."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class ChecksumMismatch(MigrationError):
    """Applied migration files changed since they ran (``mismatches``: dicts with version, file, stored,
    current)."""

    def __init__(self, message: str, mismatches: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.mismatches = mismatches


class MigrationLockTimeout(MigrationError):
    """Another session held the migration lock until the deadline (``holder``: a ``LockHolder`` or None)."""

    def __init__(self, message: str, holder: Any = None) -> None:
        super().__init__(message)
        self.holder = holder


class PreflightRefused(MigrationError):
    """The database is not in a state to migrate safely (``report``: the ``PreflightReport``)."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class LintRefused(MigrationError):
    """Pending migrations contain changes their phase does not allow (``findings``: ``LintFinding`` list)."""

    def __init__(self, message: str, findings: list[Any]) -> None:
        super().__init__(message)
        self.findings = findings


class MigrationPlanError(MigrationError):
    """The pending migrations cannot run in this order (out of order, contract before its expand)."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class MigrationFailed(MigrationError):
    """A statement failed (after its retries); the history row is marked ``failed`` with the error."""

    def __init__(
        self,
        message: str,
        *,
        version: int | None = None,
        statement: int | None = None,
        line: int | None = None,
        sqlstate: str | None = None,
        file: str | None = None,
    ) -> None:
        super().__init__(message)
        self.version = version
        self.statement = statement
        self.line = line
        self.sqlstate = sqlstate
        self.file = file


class RevertRefused(MigrationError):
    """A revert was asked for a migration that cannot be reverted (contract, irreversible, not applied)."""


class BackupError(MigrationError):
    """``pg_dump``, its verification, or ``pg_restore`` failed."""
