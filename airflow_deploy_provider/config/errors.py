"""Config problems with their position: ``file:line:column``, the field path and what is expected."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

Loc = tuple[str | int, ...]


def format_path(loc: Sequence[str | int]) -> str:
    """Render a location tuple as a field path: ``("canary", "steps", 2, "weight")`` -> ``canary.steps[2].weight``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(file)"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    candidates = [c for c in candidates if isinstance(c, str)]
    by_lower = {c.lower(): c for c in candidates}
    if word.lower() in by_lower:
        return f" (did you mean '{by_lower[word.lower()]}'?)"
    if len(word) >= 3:
        prefixed = [c for c in candidates if c.lower().startswith(word.lower())]
        if len(prefixed) == 1:
            return f" (did you mean '{prefixed[0]}'?)"
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not match:
        match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
        match = [by_lower[m] for m in match]
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a ``.deploy`` file."""

    file: str
    line: int
    column: int
    path: str
    message: str
    code: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.severity}: {self.path}: {self.message} [{self.code}]"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IssueList:
    """Accumulates the issues of one service, in file order."""

    issues: list[ConfigIssue] = field(default_factory=list)

    def add(self, issue: ConfigIssue) -> None:
        if issue not in self.issues:
            self.issues.append(issue)

    def extend(self, issues: Iterable[ConfigIssue]) -> None:
        for issue in issues:
            self.add(issue)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    def sorted(self) -> list[ConfigIssue]:
        return sorted(self.issues, key=lambda i: (i.file, i.line, i.column, i.path, i.message))


class DeployConfigError(ValueError):
    """Raised when one or more ``.deploy`` files are invalid. ``str()`` lists every error."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | Path | None = None):
        self.issues = list(issues)
        self.source = str(source) if source else None
        errors = [i for i in self.issues if i.severity == "error"]
        head = f"{len(errors)} error(s) in {self.source}" if self.source else f"{len(errors)} config error(s)"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in errors))

    def to_json(self) -> str:
        return json.dumps([i.to_dict() for i in self.issues], indent=2)
