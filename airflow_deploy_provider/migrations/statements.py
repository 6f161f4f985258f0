"""Splitting a migration file into statements and classifying them (pure functions, no database).

``split_statements(sql)`` returns :class:`Statement` objects in file order, each with its 1-based line
range, its ``kind`` (which timeouts apply), whether PostgreSQL refuses it inside a transaction block
(``needs_own_transaction`` and the ``reason``), the tables it touches and, for ``CREATE INDEX
CONCURRENTLY``, the index it builds. Statements are separated by top-level semicolons; the lexer knows
``--`` and nested ``/* */`` comments, single-quoted strings (``''`` doubling, ``E''`` backslash escapes),
double-quoted identifiers, dollar-quoted bodies (``$$ ... $$``, ``$tag$ ... $tag$``) and SQL-standard
function bodies (``BEGIN ATOMIC ... END``), so semicolons inside any of those do not split.

``group_statements(statements)`` cuts a file into :class:`StatementGroup` objects: consecutive
transactional statements form one group run in one transaction; every statement that PostgreSQL
refuses inside a transaction block is a group of its own, run in autocommit.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from airflow_deploy_provider.migrations.errors import SqlSplitError

#: Statement kinds; each has its own lock_timeout / statement_timeout (see ``MigrationSettings.timeouts``).
KIND_DDL = "ddl"
KIND_DML = "dml"
KIND_CONCURRENT = "concurrent"
KIND_MAINTENANCE = "maintenance"
KIND_QUERY = "query"
KIND_SESSION = "session"
KIND_TRANSACTION = "transaction"
KINDS = (KIND_DDL, KIND_DML, KIND_CONCURRENT, KIND_MAINTENANCE, KIND_QUERY, KIND_SESSION)


@dataclass(frozen=True)
class Token:
    """One lexical token: ``word`` (keyword or bare identifier), ``ident`` (double-quoted), ``string``,
    ``dollar`` (dollar-quoted body), ``number``, ``param`` (``$1``), ``comment`` or ``op``."""

    kind: str
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file (without its terminating semicolon).

    :param number: 1-based position in the file (after transaction control statements are removed).
    :param line: first line of the statement in the file (1-based); ``end_line`` its last line.
    :param kind: ``ddl``, ``dml``, ``concurrent``, ``maintenance``, ``query`` or ``session`` (``transaction``
        for ``BEGIN``/``COMMIT``, which the loader removes).
    :param needs_own_transaction: PostgreSQL refuses it inside a transaction block (or it must commit before
        the rest may use it): it runs alone in autocommit; ``reason`` says why.
    :param tables: tables (and views) it touches, as SQL identifiers (unquoted names lower-cased).
    :param creates_table: the table a ``CREATE TABLE`` creates.
    :param index_name: the index a ``CREATE INDEX`` builds (``None`` if unnamed), ``index_table`` its table;
        ``dropped_indexes`` the indexes a ``DROP INDEX`` removes.
    """

    number: int
    sql: str
    line: int
    end_line: int
    kind: str
    needs_own_transaction: bool = False
    reason: str = ""
    tables: tuple[str, ...] = ()
    creates_table: str | None = None
    index_name: str | None = None
    index_table: str | None = None
    dropped_indexes: tuple[str, ...] = ()
    concurrently: bool = False
    keywords: tuple[str, ...] = field(default=(), repr=False)

    @property
    def summary(self) -> str:
        """The statement on one line, shortened (for plans and logs)."""
        text = " ".join(_strip_comments(self.sql).split())
        return text if len(text) <= 100 else text[:97] + "..."

    @property
    def is_concurrent_index_build(self) -> bool:
        return self.concurrently and self.keywords[:1] == ("CREATE",) and "INDEX" in self.keywords[:3]


@dataclass(frozen=True)
class StatementGroup:
    """Statements run together: in one transaction (``transactional``), or one statement alone in
    autocommit."""

    statements: tuple[Statement, ...]
    transactional: bool
    reason: str = ""

    @property
    def first(self) -> int:
        return self.statements[0].number

    @property
    def last(self) -> int:
        return self.statements[-1].number


_WORD_START = re.compile(r"[A-Za-z_\u0080-\uffff]")
_WORD = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_NUMBER = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?")


class _Lines:
    """Offset -> 1-based line number."""

    def __init__(self, text: str) -> None:
        self._newlines = [i for i, ch in enumerate(text) if ch == "\n"]

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql`` (whitespace dropped, comments kept). Raises :class:`SqlSplitError` for an
    unterminated comment, string, quoted identifier or dollar-quoted body, naming the line it starts on."""
    tokens: list[Token] = []
    lines: _Lines | None = None
    i, n = 0, len(sql)

    def unterminated(what: str, start: int) -> SqlSplitError:
        nonlocal lines
        lines = lines or _Lines(sql)
        return SqlSplitError(
            f"unterminated {what} starting at line {lines.line(start)}", line=lines.line(start)
        )

    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
            continue
        start = i
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            tokens.append(Token("comment", sql[start:i], start, i))
            continue
        if sql.startswith("/*", i):
            depth, i = 1, i + 2  # PostgreSQL block comments nest
            while depth:
                if i >= n:
                    raise unterminated("/* comment", start)
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            tokens.append(Token("comment", sql[start:i], start, i))
            continue
        if ch == "'" or (ch in "eE" and sql.startswith("'", i + 1)):
            backslash = ch != "'"
            i = i + 2 if backslash else i + 1
            while True:
                if i >= n:
                    raise unterminated("string", start)
                c = sql[i]
                if backslash and c == "\\":
                    i += 2
                elif c == "'":
                    if sql.startswith("''", i):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
            tokens.append(Token("string", sql[start:i], start, i))
            continue
        if ch == '"':
            i += 1
            while True:
                end = sql.find('"', i)
                if end < 0:
                    raise unterminated("quoted identifier", start)
                if sql.startswith('""', end):
                    i = end + 2
                    continue
                i = end + 1
                break
            tokens.append(Token("ident", sql[start:i], start, i))
            continue
        if ch == "$":
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                close = sql.find(tag.group(0), tag.end())
                if close < 0:
                    raise unterminated(f"dollar-quoted body {tag.group(0)}", start)
                i = close + len(tag.group(0))
                tokens.append(Token("dollar", sql[start:i], start, i))
                continue
            param = re.compile(r"\$\d+").match(sql, i)
            if param:
                i = param.end()
                tokens.append(Token("param", sql[start:i], start, i))
                continue
        if _WORD_START.match(ch):
            # U&'...' and B'...'/X'...' are strings introduced by a word; the word then the string lexes fine.
            i = _WORD.match(sql, i + 1).end()
            tokens.append(Token("word", sql[start:i], start, i))
            continue
        number = _NUMBER.match(sql, i)
        if ch.isdigit() or (ch == "." and number):
            i = number.end() if number else i + 1
            tokens.append(Token("number", sql[start:i], start, i))
            continue
        i += 1
        tokens.append(Token("op", ch, start, i))
    return tokens


def _strip_comments(sql: str) -> str:
    """``sql`` with its comments removed (strings and bodies untouched)."""
    try:
        tokens = tokenize(sql)
    except SqlSplitError:
        return sql
    out, pos = [], 0
    for token in tokens:
        if token.kind == "comment":
            out.append(sql[pos : token.start])
            out.append(" ")
            pos = token.end
    out.append(sql[pos:])
    return "".join(out)


def _raw_statements(sql: str) -> list[list[Token]]:
    """Tokens of ``sql`` cut at top-level semicolons (comments kept inside statements, dropped between)."""
    statements: list[list[Token]] = []
    current: list[Token] = []
    atomic_depth = 0  # inside BEGIN ATOMIC ... END of a CREATE FUNCTION/PROCEDURE
    for token in tokenize(sql):
        if token.kind == "comment" and not current:
            continue
        if token.kind == "op" and token.text == ";" and not atomic_depth:
            if any(t.kind != "comment" for t in current):
                statements.append(current)
            current = []
            continue
        current.append(token)
        word = token.upper
        if word and current[0].upper == "CREATE":
            previous = next((t.upper for t in reversed(current[:-1]) if t.kind != "comment"), "")
            if (word == "ATOMIC" and previous == "BEGIN") or (atomic_depth and word == "CASE"):
                atomic_depth += 1
            elif atomic_depth and word == "END":
                atomic_depth -= 1
    if any(t.kind != "comment" for t in current):
        statements.append(current)
    return statements


def split_statements(sql: str) -> list[Statement]:
    """Split ``sql`` into classified statements (numbered from 1, transaction control included with kind
    ``transaction``; :func:`airflow_deploy_provider.migrations.files.load_migrations` removes those)."""
    lines = _Lines(sql)
    result: list[Statement] = []
    for tokens in _raw_statements(sql):
        while tokens and tokens[-1].kind == "comment":
            tokens = tokens[:-1]
        start, end = tokens[0].start, tokens[-1].end
        result.append(
            classify(
                sql[start:end],
                tokens,
                number=len(result) + 1,
                line=lines.line(start),
                end_line=lines.line(end - 1),
            )
        )
    return result


# --- classification -------------------------------------------------------------------------------------

_DML = {"INSERT", "UPDATE", "DELETE", "MERGE", "COPY"}
_DDL = {"CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "TRUNCATE", "LOCK", "SECURITY", "IMPORT"}
_MAINTENANCE = {"VACUUM", "ANALYZE", "ANALYSE", "CLUSTER", "REINDEX", "REFRESH"}
_SESSION = {"SET", "RESET", "SAVEPOINT", "RELEASE"}
_TRANSACTION = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE"}


def _identifier_at(tokens: list[Token], i: int) -> tuple[str | None, int]:
    """A possibly schema-qualified name starting at ``tokens[i]`` (SQL form: unquoted parts lower-cased,
    quoted parts kept quoted) and the index after it."""
    parts: list[str] = []
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "word":
            parts.append(token.text.lower())
        elif token.kind == "ident":
            parts.append(token.text)
        else:
            break
        i += 1
        if i < len(tokens) and tokens[i].kind == "op" and tokens[i].text == ".":
            i += 1
            continue
        break
    return (".".join(parts) if parts else None), i


def _skip(words: list[str], i: int, *optional: tuple[str, ...]) -> int:
    """Skip optional keyword sequences (e.g. ``("IF", "NOT", "EXISTS")``) at position ``i``."""
    moved = True
    while moved:
        moved = False
        for seq in optional:
            if tuple(words[i : i + len(seq)]) == seq:
                i += len(seq)
                moved = True
    return i


def classify(
    sql: str,
    tokens: list[Token] | None = None,
    *,
    number: int = 1,
    line: int = 1,
    end_line: int | None = None,
) -> Statement:
    """Classify one statement (see :class:`Statement`)."""
    if tokens is None:
        tokens = [t for t in tokenize(sql) if not (t.kind == "op" and t.text == ";")]
    code = [t for t in tokens if t.kind != "comment"]
    words = [t.upper if t.kind == "word" else ("\0" if t.kind != "op" else t.text) for t in code]
    keywords = tuple(w for w in words if w and w[0].isalpha())
    first = words[0] if words else ""
    second = words[1] if len(words) > 1 else ""
    kind, own, reason = KIND_QUERY, False, ""
    concurrently = "CONCURRENTLY" in keywords
    tables: list[str] = []
    creates_table = index_name = index_table = None
    dropped_indexes: list[str] = []

    def table_after(i: int, *optional: tuple[str, ...]) -> int:
        i = _skip(words, i, *optional)
        name, j = _identifier_at(code, i)
        if name:
            tables.append(name)
        return j

    def tables_list(i: int, *optional: tuple[str, ...]) -> None:
        i = _skip(words, i, *optional)
        while True:
            i = _skip(words, i, ("ONLY",))
            name, i = _identifier_at(code, i)
            if name:
                tables.append(name)
            if i < len(words) and words[i] == "*":
                i += 1
            if i < len(words) and words[i] == ",":
                i += 1
                continue
            break

    if first in _TRANSACTION and not (first == "BEGIN" and second == "ATOMIC"):
        kind = KIND_TRANSACTION
    elif first in _SESSION:
        kind = KIND_SESSION
    elif first in _DML or (first == "WITH" and _DML & set(keywords)):
        kind = KIND_DML
        verb = first if first != "WITH" else next(w for w in keywords if w in _DML)
        at = words.index(verb)
        if verb == "INSERT":
            table_after(at + 1, ("INTO",))
        elif verb in ("UPDATE", "COPY"):
            table_after(at + 1, ("ONLY",))
        elif verb == "DELETE":
            table_after(at + 1, ("FROM",), ("ONLY",))
        elif verb == "MERGE":
            table_after(at + 1, ("INTO",), ("ONLY",))
            if "USING" in words:
                table_after(words.index("USING") + 1, ("ONLY",))
    elif first in _MAINTENANCE:
        kind = KIND_MAINTENANCE
        if first == "VACUUM":
            own, reason = True, "VACUUM cannot run inside a transaction block"
            i = (words.index(")") + 1 if ")" in words else len(words)) if second == "(" else 1
            i = _skip(words, i, ("FULL",), ("FREEZE",), ("VERBOSE",), ("ANALYZE",), ("ANALYSE",))
            if i < len(words):
                tables_list(i)
        elif first in ("ANALYZE", "ANALYSE"):
            tables_list(_skip(words, 1, ("VERBOSE",)))
        elif first == "CLUSTER":
            if len(words) == 1 or words[1:] == ["VERBOSE"]:
                # Measured on PostgreSQL 15: "CLUSTER cannot run inside a transaction block" without a table.
                own, reason = True, "CLUSTER without a table cannot run inside a transaction block"
            else:
                table_after(_skip(words, 1, ("VERBOSE",)))
        elif first == "REINDEX":
            i = 1
            if second == "(":
                i = words.index(")") + 1 if ")" in words else 2
            target = words[i] if i < len(words) else ""
            if concurrently:
                kind, own, reason = (
                    KIND_CONCURRENT,
                    True,
                    "REINDEX CONCURRENTLY cannot run inside a transaction block",
                )
            elif target in ("SCHEMA", "DATABASE", "SYSTEM"):
                own, reason = True, f"REINDEX {target} cannot run inside a transaction block"
            if target == "TABLE":
                table_after(i + 1, ("CONCURRENTLY",))
            elif target == "INDEX":
                name, _ = _identifier_at(code, _skip(words, i + 1, ("CONCURRENTLY",)))
                if name:
                    dropped_indexes.append(name)  # resolved to its table by the pre-flight
        elif first == "REFRESH":
            # REFRESH MATERIALIZED VIEW CONCURRENTLY is allowed in a transaction block.
            table_after(3, ("CONCURRENTLY",))
    elif first in _DDL:
        kind = KIND_DDL
        i = 1
        if first == "CREATE":
            i = _skip(
                words,
                1,
                ("OR", "REPLACE"),
                ("UNIQUE",),
                ("GLOBAL",),
                ("LOCAL",),
                ("TEMPORARY",),
                ("TEMP",),
                ("UNLOGGED",),
            )
            obj = words[i] if i < len(words) else ""
            if obj == "INDEX":
                j = i + 1
                if j < len(words) and words[j] == "CONCURRENTLY":
                    kind, own = KIND_CONCURRENT, True
                    reason = "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
                    j += 1
                j = _skip(words, j, ("IF", "NOT", "EXISTS"))
                if j < len(words) and words[j] != "ON":
                    index_name, j = _identifier_at(code, j)
                if j < len(words) and words[j] == "ON":
                    j = _skip(words, j + 1, ("ONLY",))
                    index_table, _ = _identifier_at(code, j)
                    if index_table:
                        tables.append(index_table)
                if index_name and index_table and "." in index_table and "." not in index_name:
                    # An index lives in its table's schema.
                    index_name = index_table.rsplit(".", 1)[0] + "." + index_name
            elif obj == "TABLE":
                j = _skip(words, i + 1, ("IF", "NOT", "EXISTS"))
                creates_table, _ = _identifier_at(code, j)
                if "REFERENCES" in words:
                    for k, w in enumerate(words):
                        if w == "REFERENCES":
                            table_after(k + 1)
                if "PARTITION" in words and "OF" in words:
                    table_after(words.index("OF") + 1)
            elif obj in ("DATABASE", "TABLESPACE", "SUBSCRIPTION"):
                own, reason = True, f"CREATE {obj} cannot run inside a transaction block"
            elif (
                obj in ("TRIGGER", "POLICY", "RULE") or (obj == "CONSTRAINT" and "TRIGGER" in words)
            ) and "ON" in words:
                table_after(words.index("ON") + 1)
        elif first == "DROP":
            obj = second
            if obj == "INDEX":
                j = 2
                if j < len(words) and words[j] == "CONCURRENTLY":
                    kind, own = KIND_CONCURRENT, True
                    reason = "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
                    j += 1
                j = _skip(words, j, ("IF", "EXISTS"))
                while j < len(words):
                    name, j = _identifier_at(code, j)
                    if name:
                        dropped_indexes.append(name)
                    if j < len(words) and words[j] == ",":
                        j += 1
                        continue
                    break
            elif obj in ("TABLE", "VIEW") or (obj == "MATERIALIZED" and len(words) > 2):
                tables_list(3 if obj == "MATERIALIZED" else 2, ("IF", "EXISTS"))
            elif obj in ("DATABASE", "TABLESPACE", "SUBSCRIPTION"):
                own, reason = True, f"DROP {obj} cannot run inside a transaction block"
            elif obj in ("TRIGGER", "POLICY", "RULE") and "ON" in words:
                table_after(words.index("ON") + 1)
        elif first == "ALTER":
            obj = second
            if obj == "TABLE" or (
                obj in ("MATERIALIZED", "FOREIGN") and len(words) > 2 and words[2] in ("VIEW", "TABLE")
            ):
                j = 2 if obj == "TABLE" else 3
                j = table_after(j, ("IF", "EXISTS"), ("ONLY",))
                if "DETACH" in words and "PARTITION" in words and concurrently:
                    own = True
                    reason = (
                        "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY cannot run inside a "
                        "transaction block"
                    )
                for k, w in enumerate(words):
                    if w == "REFERENCES":
                        table_after(k + 1)
                    elif w in ("ATTACH", "DETACH") and k + 1 < len(words) and words[k + 1] == "PARTITION":
                        table_after(k + 2)
            elif obj == "VIEW":
                table_after(2, ("IF", "EXISTS"))
            elif obj == "SYSTEM":
                own, reason = True, "ALTER SYSTEM cannot run inside a transaction block"
            elif obj == "DATABASE" and "TABLESPACE" in words:
                own, reason = True, "ALTER DATABASE ... SET TABLESPACE cannot run inside a transaction block"
            elif obj == "TYPE" and "ADD" in words and "VALUE" in words:
                own = True
                reason = (
                    "ALTER TYPE ... ADD VALUE: the new value cannot be used until committed, and PostgreSQL "
                    "before 12 refuses it inside a transaction block"
                )
            elif obj in ("SUBSCRIPTION",) and ("REFRESH" in words or "ENABLE" in words or "DISABLE" in words):
                own, reason = True, "ALTER SUBSCRIPTION ... REFRESH cannot run inside a transaction block"
        elif first == "TRUNCATE" or first == "LOCK":
            tables_list(1, ("TABLE",))
        elif first == "COMMENT" and "ON" in words:
            j = words.index("ON") + 1
            if j < len(words) and words[j] in ("TABLE", "COLUMN"):
                name, _ = _identifier_at(code, j + 1)
                if name:
                    tables.append(name.rsplit(".", 1)[0] if words[j] == "COLUMN" else name)
        elif first in ("GRANT", "REVOKE") and "ON" in words:
            j = _skip(words, words.index("ON") + 1, ("TABLE",))
            if j < len(words) and words[j] not in ("ALL", "SCHEMA", "SEQUENCE", "FUNCTION", "DATABASE"):
                tables_list(j)
    elif first == "DISCARD" and second == "ALL":
        kind, own, reason = KIND_SESSION, True, "DISCARD ALL cannot run inside a transaction block"

    unique_tables = tuple(dict.fromkeys(t for t in tables if t))
    return Statement(
        number=number,
        sql=sql,
        line=line,
        end_line=end_line or line,
        kind=kind,
        needs_own_transaction=own,
        reason=reason,
        tables=unique_tables,
        creates_table=creates_table,
        index_name=index_name,
        index_table=index_table,
        dropped_indexes=tuple(dropped_indexes),
        concurrently=concurrently,
        keywords=keywords,
    )


def group_statements(statements: list[Statement]) -> list[StatementGroup]:
    """Consecutive transactional statements form one group; a statement PostgreSQL refuses inside a
    transaction block is a group of its own (autocommit)."""
    groups: list[StatementGroup] = []
    pending: list[Statement] = []
    for statement in statements:
        if statement.needs_own_transaction:
            if pending:
                groups.append(StatementGroup(tuple(pending), transactional=True))
                pending = []
            groups.append(StatementGroup((statement,), transactional=False, reason=statement.reason))
        else:
            pending.append(statement)
    if pending:
        groups.append(StatementGroup(tuple(pending), transactional=True))
    return groups
