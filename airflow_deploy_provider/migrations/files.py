"""Loading a migrations folder: ``V<n>__<description>.sql`` (up) and ``U<n>__<description>.sql`` (down).

Rules (each violation is a :class:`MigrationFileError` naming the file; all problems of a folder are
reported together):

- every ``.sql`` file must match one of the two names (it is never silently skipped); other files (a
  README) are ignored, as are sub-folders;
- a version has at most one up and one down file (``V1__a.sql`` and ``V01__b.sql`` are duplicates);
- a down file needs an up file of the same version;
- with ``require_down=True`` (production) every up file needs a down file, unless its header declares it
  irreversible.

The header is the run of ``--`` comment lines before the first statement. Directives (case-insensitive):

- ``-- phase: expand`` or ``-- phase: contract`` (default ``expand``): expand changes keep the running
  application version working; contract changes (dropping, renaming, tightening) run once no running
  version needs the old schema. Breaking changes are refused in expand migrations.
- ``-- irreversible: <reason>``: the migration has no down file on purpose (the reason is required).
- ``-- lint-ignore: <rule>[, <rule>...]``: findings of these lint rules are not reported for this file.

The checksum of a file is the sha256 of its text with line endings normalised to ``\\n`` and trailing
whitespace stripped from every line (and trailing blank lines dropped), so re-saving a file on another
system does not count as a change.

Explicit ``BEGIN``/``START TRANSACTION``/``COMMIT``/``END`` statements are removed when the file is loaded:
the engine decides transactions itself (see
:func:`airflow_deploy_provider.migrations.statements.group_statements`)
and each migration's ``warnings`` say what was done. ``ROLLBACK``/``ABORT`` and two-phase commit statements
are refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from airflow_deploy_provider.migrations.errors import MigrationFileError, SqlSplitError
from airflow_deploy_provider.migrations.statements import (
    KIND_SESSION,
    KIND_TRANSACTION,
    Statement,
    StatementGroup,
    group_statements,
    split_statements,
)

PHASES = ("expand", "contract")
FILE_NAME = re.compile(
    r"^(?P<direction>[VU])(?P<version>\d+)__(?P<description>[A-Za-z0-9][A-Za-z0-9_\-]*)\.sql$"
)
_DIRECTIVE = re.compile(r"^--\s*(?P<key>phase|irreversible|lint-ignore)\s*:(?P<value>.*)$", re.IGNORECASE)
_TIMEOUT_SET = re.compile(
    r"^\s*SET\s+(SESSION\s+|LOCAL\s+)?(lock_timeout|statement_timeout)\b", re.IGNORECASE
)


def normalise(text: str) -> str:
    """The text the checksum is computed on: ``\\n`` line endings, no trailing whitespace, no BOM."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n") + "\n"


def checksum(text: str) -> str:
    """sha256 (hex) of :func:`normalise`'d text."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MigrationScript:
    """One file: its statements (transaction control removed, numbered from 1) and what loading noticed."""

    path: Path
    text: str
    checksum: str
    statements: tuple[Statement, ...]
    removed: tuple[Statement, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def groups(self) -> list[StatementGroup]:
        return group_statements(list(self.statements))


@dataclass(frozen=True)
class Migration:
    """A version: its up script, its down script (if any), its phase and header declarations."""

    version: int
    description: str
    up: MigrationScript
    down: MigrationScript | None = None
    phase: str = "expand"
    irreversible: str | None = None
    lint_ignore: tuple[str, ...] = ()

    @property
    def file(self) -> str:
        return self.up.name

    @property
    def checksum(self) -> str:
        return self.up.checksum

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.up.warnings


@dataclass(frozen=True)
class MigrationSet:
    """The migrations of a folder, ordered by version."""

    folder: Path
    migrations: tuple[Migration, ...] = field(default=())
    require_down: bool = False

    def __iter__(self) -> Iterator[Migration]:
        return iter(self.migrations)

    def __len__(self) -> int:
        return len(self.migrations)

    @property
    def versions(self) -> list[int]:
        return [m.version for m in self.migrations]

    def get(self, version: int) -> Migration | None:
        return next((m for m in self.migrations if m.version == version), None)


def _header(text: str) -> list[tuple[int, str]]:
    """The header comment lines (line number, text) before the first statement."""
    lines = []
    for number, line in enumerate(normalise(text).split("\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        lines.append((number, stripped))
    return lines


def _describe_groups(name: str, groups: list[StatementGroup]) -> str:
    parts = []
    for group in groups:
        first, last = group.statements[0].line, group.statements[-1].end_line
        lines = f"line {first}" if first == last else f"lines {first}-{last}"
        span = (
            f"statement {group.first} ({lines}) runs"
            if group.first == group.last
            else f"statements {group.first}-{group.last} ({lines}) run"
        )
        parts.append(
            f"{span} alone in autocommit because {group.reason}"
            if not group.transactional
            else f"{span} in one transaction"
        )
    return "; ".join(parts)


def load_script(path: Path) -> MigrationScript:
    """Read and split one file (raises :class:`MigrationFileError` naming it)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationFileError(f"{path.name}: cannot be read: {exc}", file=path.name) from exc
    try:
        statements = split_statements(text)
    except SqlSplitError as exc:
        raise MigrationFileError(f"{path.name}: {exc}", file=path.name, line=exc.line) from exc
    kept: list[Statement] = []
    removed: list[Statement] = []
    warnings: list[str] = []
    for statement in statements:
        words = statement.keywords
        if statement.kind == KIND_TRANSACTION:
            if words[:2] in (("ROLLBACK", "TO"),) or words[:1] in (("SAVEPOINT",), ("RELEASE",)):
                kept.append(dataclasses.replace(statement, kind=KIND_SESSION))
                continue
            if words[:1] in (("ROLLBACK",), ("ABORT",)) or "PREPARED" in words or words[:1] == ("PREPARE",):
                raise MigrationFileError(
                    f"{path.name}: line {statement.line}: {statement.summary!r} is not supported in a "
                    "migration file (the engine commits or rolls back each group itself)",
                    file=path.name,
                    line=statement.line,
                )
            removed.append(statement)
            continue
        if words[:2] == ("DISCARD", "ALL"):
            raise MigrationFileError(
                f"{path.name}: line {statement.line}: DISCARD ALL is not supported in a migration file (it "
                "would release the migration lock)",
                file=path.name,
                line=statement.line,
            )
        if _TIMEOUT_SET.match(statement.sql):
            warnings.append(
                f"{path.name}: line {statement.line}: {statement.summary!r} is overridden: the engine "
                "sets lock_timeout and statement_timeout before every statement (see MigrationSettings)"
            )
        kept.append(dataclasses.replace(statement, number=len(kept) + 1))
    if removed:
        listed = " and ".join(f"{s.keywords[0]} (line {s.line})" for s in removed)
        warnings.insert(
            0,
            f"{path.name}: removed {listed}: the engine decides transactions itself; "
            + _describe_groups(path.name, group_statements(kept)),
        )
    return MigrationScript(
        path=path,
        text=text,
        checksum=checksum(text),
        statements=tuple(kept),
        removed=tuple(removed),
        warnings=tuple(warnings),
    )


def load_migrations(folder: Path | str, *, require_down: bool) -> MigrationSet:
    """Load and check the migrations of ``folder`` (see the module docstring for the rules)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MigrationFileError(f"migrations folder {folder} does not exist", file=str(folder))
    errors: list[tuple[str, str]] = []
    ups: dict[int, Path] = {}
    downs: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() != ".sql":
            continue
        match = FILE_NAME.match(path.name)
        if not match:
            errors.append(
                (
                    path.name,
                    f"{path.name}: not a migration file name: expected V<n>__<description>.sql "
                    "(up) or U<n>__<description>.sql (down), description of letters, digits, '_' and '-'",
                )
            )
            continue
        version = int(match["version"])
        target = ups if match["direction"] == "V" else downs
        if version in target:
            errors.append(
                (path.name, f"{path.name}: duplicate version {version} (also {target[version].name})")
            )
            continue
        target[version] = path
    for version, path in sorted(downs.items()):
        if version not in ups:
            errors.append(
                (
                    path.name,
                    f"{path.name}: down file for version {version}, which has no up file "
                    f"(V{version}__<description>.sql)",
                )
            )
    migrations: list[Migration] = []
    for version, path in sorted(ups.items()):
        try:
            up = load_script(path)
            down = load_script(downs[version]) if version in downs else None
        except MigrationFileError as exc:
            errors.append((exc.file or path.name, str(exc)))
            continue
        phase, irreversible, ignore = "expand", None, ()
        for number, line in _header(up.text):
            directive = _DIRECTIVE.match(line)
            if not directive:
                continue
            key, value = directive["key"].lower(), directive["value"].strip()
            if key == "phase":
                if value.lower() not in PHASES:
                    errors.append(
                        (
                            path.name,
                            f"{path.name}: line {number}: phase {value!r} is not one of {', '.join(PHASES)}",
                        )
                    )
                phase = value.lower()
            elif key == "irreversible":
                if not value:
                    errors.append(
                        (
                            path.name,
                            f"{path.name}: line {number}: '-- irreversible:' needs a reason "
                            "(e.g. '-- irreversible: drops the legacy table')",
                        )
                    )
                irreversible = value or None
            else:
                ignore = tuple(r.strip() for r in value.split(",") if r.strip())
        if irreversible and down is not None:
            errors.append(
                (path.name, f"{path.name}: declares itself irreversible but has a down file {down.name}")
            )
        if require_down and down is None and not irreversible:
            errors.append(
                (
                    path.name,
                    f"{path.name}: has no down file U{version}__<description>.sql; add one or "
                    "declare the migration irreversible with '-- irreversible: <reason>'",
                )
            )
        if not up.statements:
            errors.append((path.name, f"{path.name}: contains no statement"))
        migrations.append(
            Migration(
                version=version,
                description=match_description(path.name),
                up=up,
                down=down,
                phase=phase,
                irreversible=irreversible,
                lint_ignore=ignore,
            )
        )
    if errors:
        message = "; ".join(text for _, text in errors) if len(errors) > 1 else errors[0][1]
        raise MigrationFileError(f"{folder}: {message}" if len(errors) > 1 else message, file=errors[0][0])
    return MigrationSet(folder=folder, migrations=tuple(migrations), require_down=require_down)


def match_description(name: str) -> str:
    """``V1__add_user_email_index.sql`` -> ``add user email index``."""
    match = FILE_NAME.match(name)
    return match["description"].replace("_", " ") if match else name
