"""YAML loading that remembers where every key and value came from.

PyYAML silently keeps the last of two duplicate keys and reads ``22:00`` as the integer 1320 (YAML 1.1
sexagesimal numbers). Both surprise people editing deployment files, so this loader reports duplicate keys
as errors and reads sexagesimal-looking values as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_deploy_provider.config.errors import ConfigIssue, Loc

try:  # libyaml's parser is several times faster; fall back to the pure-Python one
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader


class DeployYamlLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader without YAML 1.1 sexagesimal numbers."""


# YAML 1.1's int and float patterns without their sexagesimal (base 60) alternatives.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X
)


def _without_sexagesimal(resolvers: list) -> list:
    out = []
    for tag, regexp in resolvers:
        if tag == "tag:yaml.org,2002:int":
            regexp = _INT
        elif tag == "tag:yaml.org,2002:float":
            regexp = _FLOAT
        out.append((tag, regexp))
    return out


# Copy the resolver table so the change does not leak into yaml.SafeLoader.
DeployYamlLoader.yaml_implicit_resolvers = {
    first: _without_sexagesimal(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class YamlDocument:
    """A parsed file: its data and the position of every key and value by location."""

    path: Path
    display_path: str
    data: Any
    value_positions: dict[Loc, Position] = field(default_factory=dict)
    key_positions: dict[Loc, Position] = field(default_factory=dict)

    def position(self, loc: Loc, *, prefer_key: bool = False) -> Position:
        """Position of ``loc``; falls back to the closest enclosing location that exists."""
        loc = tuple(loc)
        while True:
            if prefer_key and loc in self.key_positions:
                return self.key_positions[loc]
            if loc in self.value_positions:
                return self.value_positions[loc]
            if loc in self.key_positions:
                return self.key_positions[loc]
            if not loc:
                return Position(1, 1)
            loc = loc[:-1]

    def issue(self, loc: Loc, message: str, code: str, *, severity: str = "error", prefer_key: bool = False,
              path: str | None = None) -> ConfigIssue:
        from airflow_deploy_provider.config.errors import format_path

        pos = self.position(loc, prefer_key=prefer_key)
        return ConfigIssue(
            file=self.display_path,
            line=pos.line,
            column=pos.column,
            path=path if path is not None else format_path(loc),
            message=message,
            code=code,
            severity=severity,
        )


class YamlLoadError(Exception):
    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


def load_yaml(path: Path, display_path: str | None = None, text: str | None = None) -> YamlDocument:
    """Parse one YAML file. Raises :class:`YamlLoadError` with positioned issues on syntax errors."""
    display = display_path or str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise YamlLoadError([ConfigIssue(display, 1, 1, "(file)", f"file is not UTF-8 text: {exc}",
                                             "yaml-encoding")]) from None
    doc = YamlDocument(path=path, display_path=display, data=None)
    loader = DeployYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            doc.data = None
            return doc
        builder = _Builder(loader, doc)
        doc.data = builder.build(node, ())
        if builder.issues:
            raise YamlLoadError(builder.issues)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{exc.context}, {problem}"
        opened = exc.context_mark
        if opened is not None and exc.context and exc.context.startswith(("while parsing a flow",
                                                                          "while scanning a quoted")):
            # An unclosed bracket or quote: the line that opened it is where the fix goes.
            if exc.problem_mark is not None and exc.problem_mark.line != opened.line:
                problem += f" (it is still open at line {exc.problem_mark.line + 1})"
            mark = opened
        if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
            problem += " (a tab: YAML indentation must use spaces)"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlLoadError([ConfigIssue(display, line, col, "(file)", f"YAML syntax error: {problem}",
                                         "yaml-syntax")]) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError([ConfigIssue(display, 1, 1, "(file)", f"YAML error: {exc}", "yaml-syntax")]) from None
    finally:
        loader.dispose()


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""


class _Builder:
    """Turns a composed node tree into Python data, recording positions and duplicate keys."""

    def __init__(self, loader: Any, doc: YamlDocument):
        self.loader = loader
        self.doc = doc
        self.issues: list[ConfigIssue] = []

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        mark = node.start_mark
        self.doc.value_positions[loc] = Position(mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves "<<" merge keys
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    key = str(key)
                kmark = key_node.start_mark
                if key in out:
                    first = self.doc.key_positions.get((*loc, key))
                    where = f" (first defined on line {first.line})" if first else ""
                    from airflow_deploy_provider.config.errors import format_path

                    self.issues.append(ConfigIssue(self.doc.display_path, kmark.line + 1, kmark.column + 1,
                                                   format_path((*loc, key)), f"duplicate key '{key}'{where}",
                                                   "duplicate-key"))
                    continue
                self.doc.key_positions[(*loc, key)] = Position(kmark.line + 1, kmark.column + 1)
                out[key] = self.build(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        return value
