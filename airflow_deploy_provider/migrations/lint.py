"""Lint of pending migration files: squawk (when its binary is available) plus the engine's own rules.

Findings (:class:`LintFinding`: file, line, rule, category, message, source) fall in three categories:

- ``breaking``: the change breaks the application version that is running while the migration runs
  (dropping or renaming a column or table, adding a ``NOT NULL`` column without a default, ``SET NOT NULL``,
  changing a column's type). Refused in ``expand`` migrations, allowed in ``contract`` migrations.
- ``locking``: the change takes a heavy lock for a long time on an existing table (non-concurrent
  ``CREATE INDEX``/``DROP INDEX``, ``ADD CONSTRAINT`` without ``NOT VALID``, unique/primary key constraints
  built in place, volatile column defaults, table rewrites). Reported, never refused.
- ``advice``: other squawk findings (types, naming). Reported, never refused.

Changes to a table created earlier in the same pending migrations are not findings: nobody uses it yet.

squawk (PyPI ``squawk-cli``) runs once over all pending files with ``--reporter json``; rules the engine
takes care of itself are excluded (timeouts, transaction nesting, re-runnability). Its findings are
mapped to the categories above; an engine rule that squawk reported on the same statement is not repeated.
If squawk is missing or fails, the engine's rules still apply (and a warning says squawk did not run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airflow_deploy_provider.migrations.files import Migration
from airflow_deploy_provider.migrations.statements import Statement, tokenize

BREAKING = "breaking"
LOCKING = "locking"
ADVICE = "advice"

#: squawk rules and the category they fall in (a rule not listed is ``advice``).
SQUAWK_CATEGORIES: dict[str, str] = {
    "ban-drop-column": BREAKING,
    "ban-drop-table": BREAKING,
    "ban-drop-database": BREAKING,
    "ban-drop-schema": BREAKING,
    "renaming-column": BREAKING,
    "renaming-table": BREAKING,
    "renaming-object": BREAKING,
    "ban-set-schema": BREAKING,
    "adding-required-field": BREAKING,
    "adding-not-nullable-field": BREAKING,
    "changing-column-type": BREAKING,
    "require-concurrent-index-creation": LOCKING,
    "require-concurrent-index-deletion": LOCKING,
    "constraint-missing-not-valid": LOCKING,
    "adding-foreign-key-constraint": LOCKING,
    "adding-primary-key-constraint": LOCKING,
    "adding-serial-primary-key-field": LOCKING,
    "disallowed-unique-constraint": LOCKING,
    "adding-field-with-default": LOCKING,
    "ban-create-domain-with-constraint": LOCKING,
    "ban-alter-domain-with-add-constraint": LOCKING,
}

#: squawk rules the engine makes moot: it sets lock/statement timeouts per statement, removes explicit
#: transactions and runs CONCURRENTLY statements alone, and resumes a failed file where it stopped.
SQUAWK_EXCLUDED = (
    "require-timeout-settings",
    "require-lock-timeout",
    "require-statement-timeout",
    "transaction-nesting",
    "ban-concurrent-index-creation-in-transaction",
    "prefer-robust-stmts",
)

#: The engine's rules: category, and the squawk rules that report the same problem.
ENGINE_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "drop-column": (BREAKING, ("ban-drop-column",)),
    "drop-table": (BREAKING, ("ban-drop-table",)),
    "rename-column": (BREAKING, ("renaming-column", "renaming-object")),
    "rename-table": (BREAKING, ("renaming-table", "renaming-object")),
    "add-required-column": (BREAKING, ("adding-required-field",)),
    "set-not-null": (BREAKING, ("adding-not-nullable-field",)),
    "change-column-type": (BREAKING, ("changing-column-type",)),
    "create-index-non-concurrent": (LOCKING, ("require-concurrent-index-creation",)),
    "drop-index-non-concurrent": (LOCKING, ("require-concurrent-index-deletion",)),
    "constraint-without-not-valid": (
        LOCKING,
        ("constraint-missing-not-valid", "adding-foreign-key-constraint"),
    ),
    "add-unique-constraint": (LOCKING, ("disallowed-unique-constraint", "adding-primary-key-constraint")),
    "add-column-volatile-default": (LOCKING, ("adding-field-with-default",)),
    "rewrite-table": (LOCKING, ()),
    "refresh-non-concurrent": (LOCKING, ()),
}

_VOLATILE_DEFAULTS = {
    "RANDOM",
    "GEN_RANDOM_UUID",
    "UUID_GENERATE_V4",
    "UUID_GENERATE_V1",
    "CLOCK_TIMESTAMP",
    "TIMEOFDAY",
    "NEXTVAL",
    "UUIDV7",
    "UUID_GENERATE_V7",
}


@dataclass(frozen=True)
class LintFinding:
    """One problem in a file: where, which rule, its category and what it means."""

    file: str
    line: int
    rule: str
    category: str
    message: str
    source: str = "engine"
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line} [{self.category}] {self.rule}: {self.message}"

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "category": self.category,
            "message": self.message,
            "source": self.source,
            "version": self.version,
        }


@dataclass
class LintReport:
    """Findings of the pending files, and whether squawk ran (``squawk``: its path, or ``None``)."""

    findings: list[LintFinding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    squawk: str | None = None

    def of_category(self, category: str) -> list[LintFinding]:
        return [f for f in self.findings if f.category == category]


def find_squawk(path: str | None = None) -> str | None:
    """The squawk binary: ``path`` if given, else on ``PATH``, else next to this Python (a virtualenv's
    ``bin``, which is not always on ``PATH`` when Airflow runs)."""
    if path:
        return path if Path(path).exists() or shutil.which(path) else None
    found = shutil.which("squawk")
    if found:
        return found
    beside = Path(sys.executable).parent / "squawk"
    return str(beside) if beside.exists() else None


def _unqualified(name: str) -> str:
    return name.rsplit(".", 1)[-1].strip('"').lower()


def _code_words(statement: Statement) -> list[tuple[str, int]]:
    """(upper-cased word, or the operator, or ``\\0`` for literals; line) of the statement's code tokens."""
    out = []
    for token in tokenize(statement.sql):
        if token.kind == "comment":
            continue
        word = token.text.upper() if token.kind == "word" else (token.text if token.kind == "op" else "\0")
        out.append((word, statement.line + statement.sql.count("\n", 0, token.start)))
    return out


def _actions(words: list[tuple[str, int]], start: int) -> list[list[tuple[str, int]]]:
    """ALTER TABLE actions (split at top-level commas) from ``start``."""
    actions, current, depth = [], [], 0
    for word, line in words[start:]:
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        if word == "," and depth == 0:
            actions.append(current)
            current = []
            continue
        current.append((word, line))
    if current:
        actions.append(current)
    return actions


def engine_findings(
    file: str, statement: Statement, *, created: set[str], version: int | None = None
) -> list[LintFinding]:
    """The engine's own rules for one statement (``created``: unqualified names of tables created earlier in
    the pending migrations, whose changes are not findings)."""
    if statement.tables and all(_unqualified(t) in created for t in statement.tables):
        return []
    words = _code_words(statement)
    only = [w for w, _ in words]
    found: list[LintFinding] = []

    def add(rule: str, line: int, message: str) -> None:
        found.append(LintFinding(file, line, rule, ENGINE_RULES[rule][0], message, "engine", version))

    table = statement.tables[0] if statement.tables else "?"
    first = only[0] if only else ""
    if first == "ALTER" and len(only) > 1 and only[1] == "TABLE":
        start = 2
        while start < len(only) and only[start] in ("IF", "EXISTS", "ONLY"):
            start += 1
        start += 1  # the table name (schema-qualified: name . name)
        while start + 1 < len(only) and only[start] == ".":
            start += 2
        for action in _actions(words, start):
            a = [w for w, _ in action]
            if not a:
                continue
            line = action[0][1]
            if (
                a[0] == "DROP"
                and len(a) > 1
                and a[1] not in ("CONSTRAINT", "DEFAULT", "NOT", "IDENTITY", "EXPRESSION")
            ):
                add(
                    "drop-column",
                    line,
                    f"dropping a column of {table} breaks the running application version "
                    "that still reads or writes it (drop it in a contract migration)",
                )
            elif a[0] == "RENAME":
                if len(a) > 1 and a[1] == "TO":
                    add(
                        "rename-table",
                        line,
                        f"renaming table {table} breaks the running application version "
                        "(add the new table/view in expand, drop the old in contract)",
                    )
                elif len(a) > 1 and a[1] != "CONSTRAINT":
                    add(
                        "rename-column",
                        line,
                        f"renaming a column of {table} breaks the running application "
                        "version (add a new column and backfill; drop the old in contract)",
                    )
            elif a[0] == "ADD" and (
                len(a) < 2 or a[1] not in ("CONSTRAINT", "CHECK", "FOREIGN", "UNIQUE", "PRIMARY", "EXCLUDE")
            ):
                text = " ".join(a)
                if "NOT NULL" in text and "DEFAULT" not in a and "GENERATED" not in a:
                    add(
                        "add-required-column",
                        line,
                        f"adding a NOT NULL column without a default to {table} "
                        "makes the running version's inserts fail",
                    )
                if "DEFAULT" in a:
                    after = a[a.index("DEFAULT") + 1 :]
                    if after and after[0] in _VOLATILE_DEFAULTS:
                        add(
                            "add-column-volatile-default",
                            line,
                            f"a volatile default ({after[0].lower()}()) rewrites {table} under an ACCESS "
                            "EXCLUSIVE lock; add the column without default and backfill in batches",
                        )
            elif a[0] == "ADD":
                body = a[3:] if a[1] == "CONSTRAINT" else a[1:]  # after ADD [CONSTRAINT name]
                kind = body[0] if body else ""
                if kind in ("CHECK", "FOREIGN") and "VALID" not in a:
                    add(
                        "constraint-without-not-valid",
                        line,
                        f"adding a {kind.lower()} constraint validates every row of {table} while blocking "
                        "writes; add it NOT VALID, then VALIDATE CONSTRAINT in a later statement",
                    )
                elif kind in ("UNIQUE", "PRIMARY", "EXCLUDE") and "USING" not in a:
                    add(
                        "add-unique-constraint",
                        line,
                        f"building a {kind.lower()} constraint's index locks {table} for the whole build; "
                        "create the index CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX",
                    )
            elif a[0] == "ALTER":
                if "SET" in a and "NOT" in a and "NULL" in a and a[a.index("NOT") - 1] == "SET":
                    add(
                        "set-not-null",
                        line,
                        f"SET NOT NULL on {table} makes the running version's NULL writes fail "
                        "and scans the table under an ACCESS EXCLUSIVE lock",
                    )
                elif "TYPE" in a:
                    add(
                        "change-column-type",
                        line,
                        f"changing a column's type in {table} breaks readers of the "
                        "old type and usually rewrites the table",
                    )
    elif first == "DROP" and len(only) > 1 and only[1] == "TABLE":
        add(
            "drop-table",
            statement.line,
            f"dropping {', '.join(statement.tables)} breaks the running application "
            "version (drop it in a contract migration)",
        )
    elif first == "CREATE" and statement.index_table and not statement.concurrently:
        add(
            "create-index-non-concurrent",
            statement.line,
            f"CREATE INDEX without CONCURRENTLY blocks writes to {statement.index_table} for the whole build",
        )
    elif first == "DROP" and len(only) > 1 and only[1] == "INDEX" and not statement.concurrently:
        if not all(_unqualified(i) in created for i in statement.dropped_indexes):
            add(
                "drop-index-non-concurrent",
                statement.line,
                "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table",
            )
    elif (first == "VACUUM" and "FULL" in only) or (first == "CLUSTER" and statement.tables):
        add("rewrite-table", statement.line, f"{first} rewrites the table under an ACCESS EXCLUSIVE lock")
    elif first == "REFRESH" and not statement.concurrently:
        add(
            "refresh-non-concurrent",
            statement.line,
            "REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks reads of the view while it refreshes",
        )
    return found


def _blank_removed(text: str, removed: Sequence[Statement]) -> str:
    """``text`` with the removed transaction-control statements blanked (line numbers kept) for squawk."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for statement in removed:
        for number in range(statement.line, statement.end_line + 1):
            lines[number - 1] = ""
    return "\n".join(lines)


def run_squawk(
    files: dict[str, str], *, squawk: str, pg_version: str | None = None, timeout: float = 120
) -> tuple[list[dict], list[str]]:
    """Run squawk on ``files`` (name -> text); returns its raw findings (``line`` made 1-based) and
    warnings."""
    with tempfile.TemporaryDirectory(prefix="adp-squawk-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        command = [squawk, "--reporter", "json", f"--exclude={','.join(SQUAWK_EXCLUDED)}"]
        if pg_version:
            command.append(f"--pg-version={pg_version}")
        try:
            done = subprocess.run(
                [*command, *sorted(files)], cwd=tmp, capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], [f"squawk did not run ({exc}); only the engine's lint rules applied"]
    if done.returncode not in (0, 1):
        return [], [
            f"squawk failed (exit {done.returncode}: {done.stderr.strip()[:300]}); only the engine's lint "
            "rules applied"
        ]
    try:
        raw = json.loads(done.stdout or "[]")
    except ValueError:
        return [], [
            f"squawk's output is not JSON ({done.stdout[:200]!r}); only the engine's lint rules applied"
        ]
    for item in raw:
        item["line"] = int(item.get("line", 0)) + 1  # squawk counts lines from 0
    return raw, []


def lint_migrations(
    migrations: Sequence[Migration],
    *,
    use_squawk: bool = True,
    squawk_path: str | None = None,
    pg_version: str | None = None,
) -> LintReport:
    """Lint the up files of ``migrations`` (pending ones, in order). Down files are not linted: undoing an
    expand migration naturally drops what it added."""
    report = LintReport()
    created: set[str] = set()
    created_before: dict[tuple[str, int], set[str]] = {}
    engine: list[LintFinding] = []
    for migration in migrations:
        for statement in migration.up.statements:
            created_before[(migration.file, statement.number)] = set(created)
            engine.extend(
                engine_findings(migration.file, statement, created=created, version=migration.version)
            )
            if statement.creates_table:
                created.add(_unqualified(statement.creates_table))
    squawk = find_squawk(squawk_path) if use_squawk else None
    squawk_findings: list[LintFinding] = []
    if use_squawk and not squawk and migrations:
        report.warnings.append(
            "squawk is not installed (pip install squawk-cli); only the engine's lint rules applied"
        )
    if squawk and migrations:
        report.squawk = squawk
        raw, warnings = run_squawk(
            {m.file: _blank_removed(m.up.text, m.up.removed) for m in migrations},
            squawk=squawk,
            pg_version=pg_version,
        )
        report.warnings.extend(warnings)
        by_file = {m.file: m for m in migrations}
        for item in raw:
            migration = by_file.get(Path(str(item.get("file", ""))).name)
            if migration is None:
                continue
            line = item["line"]
            statement = next((s for s in migration.up.statements if s.line <= line <= s.end_line), None)
            rule = str(item.get("rule_name", ""))
            category = SQUAWK_CATEGORIES.get(rule, ADVICE)
            if statement is not None and statement.tables:
                before = created_before.get((migration.file, statement.number), set())
                if category != ADVICE and all(_unqualified(t) in before for t in statement.tables):
                    continue
            help_text = f" ({item['help']})" if item.get("help") else ""
            squawk_findings.append(
                LintFinding(
                    migration.file,
                    line,
                    rule,
                    category,
                    f"{item.get('message', '')}{help_text}",
                    "squawk",
                    migration.version,
                )
            )
    # An engine finding squawk also reported (same statement, equivalent rule) is not repeated.
    for finding in engine:
        migration = next(m for m in migrations if m.file == finding.file)
        statement = next((s for s in migration.up.statements if s.line <= finding.line <= s.end_line), None)
        equivalents = ENGINE_RULES[finding.rule][1]
        span = (statement.line, statement.end_line) if statement else (finding.line, finding.line)
        if any(
            f.file == finding.file and f.rule in equivalents and span[0] <= f.line <= span[1]
            for f in squawk_findings
        ):
            continue
        squawk_findings.append(finding)
    ignored = {m.file: set(m.lint_ignore) for m in migrations}
    findings = []
    for finding in squawk_findings:
        if finding.rule in ignored.get(finding.file, ()):
            report.warnings.append(
                f"{finding.file}:{finding.line}: lint rule {finding.rule} ignored (lint-ignore header)"
            )
            continue
        findings.append(finding)
    order = {m.file: i for i, m in enumerate(migrations)}
    report.findings = sorted(findings, key=lambda f: (order.get(f.file, 0), f.line, f.rule))
    return report
