"""A local Elasticsearch simulator that the official client (elasticsearch-py 9) accepts, written from the
Elasticsearch REST documentation.

What it speaks: every response carries ``X-Elastic-Product: Elasticsearch`` and a JSON content type (the
compatibility type ``application/vnd.elasticsearch+json;compatible-with=9`` when the request asks for it); ``GET
/``; ``PUT|POST [/{index}]/_bulk`` (index, create, delete); ``POST /{pattern}/_pit?keep_alive=``, which freezes the
matching documents; ``POST /_search`` with ``pit`` and no index, ``POST /{pattern}/_search`` without one; ``sort``
(fields, ``_shard_doc``, ``_doc``; dates in ``date_fields`` sort as epoch milliseconds), ``search_after`` and
``size``; ``DELETE /_pit``; ``POST /_query`` (ES|QL, below). Queries: ``match_all``, ``bool`` (must, filter, should,
must_not), ``term``, ``terms``, ``exists``, ``range`` (gt/gte/lt/lte; dates as ISO 8601 or epoch millis) and
``query_string`` with a subset of the Lucene syntax: ``field:value``, ``field:"phrase"``, ``*``/``?`` wildcards,
``field:(a OR b)``, ``field:*``, bare terms, AND/OR/NOT (``&&``, ``||``, ``!``), parentheses, backslash escapes;
matching is case-insensitive, as on analysed text. A query it cannot parse is a 400
``search_phase_execution_exception``; an unknown or expired PIT a 404 ``search_context_missing_exception``. ES|QL:
``FROM pattern[, pattern] [METADATA _id, _index]`` then ``WHERE`` (comparisons ``== != < <= > >=`` of columns and
literals, strings, numbers, ``TO_DATETIME("...")``, ``IS [NOT] NULL``, AND/OR/NOT, parentheses; a date compared with
a string literal casts it), ``SORT col [ASC|DESC] [NULLS FIRST|LAST], ...`` and ``LIMIT n`` (1000 when absent);
columns are the documents' leaf fields (strings as ``keyword``, ``date_fields`` as ``date``, numbers
``long``/``double``) sorted by name, then the metadata. A multi-valued field compares as null. Other commands or
functions are a 400 ``parsing_exception``; an unknown column, index or function, or mismatched types, a 400
``verification_exception`` (``Found 1 problem`` then ``line 1:N: ...``). Errors use the Elasticsearch error object;
faults (`Faults`) inject 429 ``es_rejected_execution_exception`` with ``Retry-After``, 5xx, slow answers and dropped
connections.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from custodes.connectors.envelope import dig, parse_time
from custodes.sandbox.pathfaults import Fault, Faults, middleware

COMPAT_JSON = "application/vnd.elasticsearch+json;compatible-with=9"
MISSING = object()


@dataclass(slots=True)
class Doc:
    """A stored document: its index, id, source and insertion order (the `_shard_doc` tiebreaker)."""

    index: str
    id: str
    source: dict[str, Any]
    seq: int


@dataclass(slots=True)
class Pit:
    """A point in time: the documents that matched its index pattern when it opened."""

    docs: list[Doc]
    expires: float


@dataclass(slots=True)
class ElasticsearchState:
    """Indices, open PITs, injected faults and a log of (method, path) answered."""

    date_fields: set[str] = field(default_factory=lambda: {"@timestamp"})
    indices: dict[str, dict[str, Doc]] = field(default_factory=dict)
    pits: dict[str, Pit] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str]] = field(default_factory=list)
    repeat_pages: int = 0
    empty_pages: int = 0
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _last_page: list[dict[str, Any]] | None = None

    def index(self, index: str, doc_id: str, source: dict[str, Any]) -> bool:
        """Store a document; True when it was new."""
        docs = self.indices.setdefault(index, {})
        created = doc_id not in docs
        docs[doc_id] = Doc(index, doc_id, source, next(self._seq))
        return created

    def matching(self, pattern: str) -> list[Doc]:
        """Documents of every index matching a comma-separated pattern, in insertion order."""
        names = [
            name
            for name in self.indices
            if any(fnmatch.fnmatchcase(name, part.strip()) for part in pattern.split(",") if part.strip())
        ]
        return sorted((doc for name in names for doc in self.indices[name].values()), key=lambda d: d.seq)


def es_error(status: int, kind: str, reason: str) -> web.Response:
    """The Elasticsearch error object."""
    body = {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}}
    return _json({**body, "status": status}, status=status)


def _json(body: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers={"X-Elastic-Product": "Elasticsearch", "Content-Type": content_type},
    )


class QueryError(ValueError):
    """A query the simulator cannot parse (Elasticsearch answers 400)."""


# query_string -----------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(\(|\)|&&|\|\||!|"(?:\\.|[^"\\])*"|(?:\\.|[^\s()"])+)')
Matcher = Callable[[dict[str, Any]], bool]


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None or not found.group(1):
            raise QueryError(f"Failed to parse query [{text}] at position {position}")
        tokens.append(found.group(1))
        position = found.end()
    return tokens


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _values(node: Any) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _values(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _values(item)
    elif node is not None:
        yield node


def _term_matcher(path: str | None, raw: str) -> Matcher:
    phrase = raw.startswith('"')
    value = _unescape(raw[1:-1] if phrase else raw)
    if not phrase and value == "*":
        return (lambda doc: True) if path is None else (lambda doc: dig(doc, path) is not None)
    wild = not phrase and any(ch in raw.replace("\\*", "").replace("\\?", "") for ch in "*?")
    if wild:
        parts = re.split(r"(\\.|\*|\?)", raw)
        regex = "".join(
            ".*" if part == "*" else "." if part == "?" else re.escape(_unescape(part)) for part in parts if part
        )
        pattern = re.compile(regex, re.IGNORECASE | re.DOTALL)

        def test(candidate: Any) -> bool:
            return pattern.fullmatch(str(candidate)) is not None

    else:
        wanted = value.lower()

        def test(candidate: Any) -> bool:
            return str(candidate).lower() == wanted

    if path is None:
        return lambda doc: any(test(v) for v in _values(doc))
    return lambda doc: any(test(v) for v in _values(dig(doc, path)))


class _Parser:
    """Recursive descent over query_string tokens: or_expr := and_expr (OR and_expr | and_expr)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> Matcher:
        if not self.tokens:
            return lambda doc: True
        matcher = self._or(None)
        if self.at != len(self.tokens):
            raise QueryError(f"Failed to parse query [{self.text}]: unexpected {self.tokens[self.at]!r}")
        return matcher

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _or(self, path: str | None) -> Matcher:
        parts = [self._and(path)]
        while (following := self._peek()) is not None and following != ")":
            if following in ("OR", "||"):
                self.at += 1
            parts.append(self._and(path))
        return parts[0] if len(parts) == 1 else (lambda doc: any(p(doc) for p in parts))

    def _and(self, path: str | None) -> Matcher:
        parts = [self._not(path)]
        while self._peek() in ("AND", "&&"):
            self.at += 1
            parts.append(self._not(path))
        return parts[0] if len(parts) == 1 else (lambda doc: all(p(doc) for p in parts))

    def _not(self, path: str | None) -> Matcher:
        if self._peek() in ("NOT", "!"):
            self.at += 1
            inner = self._not(path)
            return lambda doc: not inner(doc)
        return self._atom(path)

    def _atom(self, path: str | None) -> Matcher:
        word = self._peek()
        if word is None or word in (")", "AND", "OR", "&&", "||"):
            raise QueryError(f"Failed to parse query [{self.text}]: expected a term")
        self.at += 1
        if word == "(":
            inner = self._or(path)
            if self._peek() != ")":
                raise QueryError(f"Failed to parse query [{self.text}]: missing ')'")
            self.at += 1
            return inner
        split = re.match(r"((?:\\.|[^:\\])+):(.*)$", word, re.DOTALL) if not word.startswith('"') else None
        if split is not None and path is None:
            field_path = _unescape(split.group(1))
            rest = split.group(2)
            if rest == "":
                if self._peek() == "(":
                    self.at += 1
                    inner = self._or(field_path)
                    if self._peek() != ")":
                        raise QueryError(f"Failed to parse query [{self.text}]: missing ')'")
                    self.at += 1
                    return inner
                following = self._peek()
                if following is not None and following.startswith('"'):
                    self.at += 1
                    return _term_matcher(field_path, following)
                raise QueryError(f"Failed to parse query [{self.text}]: no value for field {field_path}")
            return _term_matcher(field_path, rest)
        return _term_matcher(path, word)


# query DSL --------------------------------------------------------------------------------------------
def _comparable(state: ElasticsearchState, path: str, value: Any) -> Any:
    if path in state.date_fields:
        return int(parse_time(value).timestamp() * 1000)
    return value


def compile_query(state: ElasticsearchState, query: dict[str, Any] | None) -> Matcher:
    """A predicate for a query DSL object; QueryError for what the simulator does not know."""
    if not query:
        return lambda doc: True
    if not isinstance(query, dict) or len(query) != 1:
        raise QueryError("a query object has exactly one key")
    kind, body = next(iter(query.items()))
    if kind == "match_all":
        return lambda doc: True
    if kind == "bool":
        musts = [compile_query(state, q) for key in ("must", "filter") for q in _listed(body.get(key))]
        shoulds = [compile_query(state, q) for q in _listed(body.get("should"))]
        nots = [compile_query(state, q) for q in _listed(body.get("must_not"))]
        need_should = bool(shoulds) and (not musts or int(body.get("minimum_should_match", 0)) > 0)
        return lambda doc: (
            all(m(doc) for m in musts)
            and not any(n(doc) for n in nots)
            and (not need_should or any(s(doc) for s in shoulds))
        )
    if kind == "query_string":
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise QueryError("query_string needs a query")
        return _Parser(body["query"]).parse()
    if kind in ("term", "terms"):
        path, wanted = next(iter(body.items()))
        if kind == "term":
            wanted = [wanted["value"] if isinstance(wanted, dict) else wanted]
        return lambda doc: any(v in wanted for v in _values(dig(doc, path)))
    if kind == "exists":
        return lambda doc: dig(doc, body["field"]) is not None
    if kind == "range":
        path, bounds = next(iter(body.items()))
        try:
            limits = {op: _comparable(state, path, bounds[op]) for op in ("gt", "gte", "lt", "lte") if op in bounds}
        except (ValueError, OverflowError, OSError) as exc:
            raise QueryError(f"failed to parse range bound: {exc}") from None
        checks: dict[str, Callable[[Any, Any], bool]] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }

        def in_range(doc: dict[str, Any]) -> bool:
            value = dig(doc, path)
            if value is None:
                return False
            try:
                have = _comparable(state, path, value)
                return all(checks[op](have, limit) for op, limit in limits.items())
            except (ValueError, TypeError, OverflowError, OSError):
                return False

        return in_range
    raise QueryError(f"unknown query [{kind}]")


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# sorting ----------------------------------------------------------------------------------------------
def _sort_spec(sort: Any) -> list[tuple[str, bool]]:
    spec: list[tuple[str, bool]] = []
    for item in _listed(sort):
        if isinstance(item, str):
            spec.append((item, item == "_score"))
        elif isinstance(item, dict) and len(item) == 1:
            name, order = next(iter(item.items()))
            direction = order.get("order", "asc") if isinstance(order, dict) else order
            spec.append((name, direction == "desc"))
        else:
            raise QueryError("unsupported sort")
    return spec


def _sort_values(state: ElasticsearchState, doc: Doc, spec: list[tuple[str, bool]]) -> list[Any]:
    values: list[Any] = []
    for name, _desc in spec:
        if name in ("_shard_doc", "_doc"):
            values.append(doc.seq)
            continue
        value = dig(doc.source, name)
        try:
            values.append(None if value is None else _comparable(state, name, value))
        except (ValueError, OverflowError, OSError):
            values.append(None)
    return values


def _key(values: list[Any], spec: list[tuple[str, bool]]) -> tuple[Any, ...]:
    key: list[Any] = []
    for value, (_name, desc) in zip(values, spec, strict=True):
        if value is None:
            key.append((1, 0))
        elif isinstance(value, int | float):
            key.append((0, -value if desc else value))
        else:
            text = str(value)
            key.append((0, tuple(-ord(c) for c in text) if desc else text))
    return tuple(key)


# ES|QL -------------------------------------------------------------------------------------------------
_ESQL_TOKEN = re.compile(
    r'\s*(?:(?P<string>"""(?:.|\n)*?"""|"(?:\\.|[^"\\])*")|(?P<quoted>`(?:``|[^`])*`)'
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\)|,|\||[=+/%\[\]?!~])|(?P<word>[A-Za-z0-9_@*.\-:]+))"
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_COMMANDS = {
    "from", "row", "show", "where", "sort", "limit", "eval", "keep", "drop", "rename", "stats", "dissect", "grok",
    "enrich", "mv_expand", "lookup", "fork", "inlinestats", "change_point", "completion", "rerank", "sample",
}  # fmt: skip
_METADATA = {"_id", "_index", "_version", "_score", "_source", "_ignored", "_index_mode"}
_NUMERIC = {"integer", "long", "double"}


class EsqlError(ValueError):
    """An ES|QL query Elasticsearch refuses: `kind` is `parsing_exception` or `verification_exception`."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    at: int


def _esql_tokens(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        found = _ESQL_TOKEN.match(text, position)
        if found is None or found.lastgroup is None:
            start = len(text) - len(text[position:].lstrip())
            raise EsqlError("parsing_exception", f"line 1:{start + 1}: token recognition error at: '{text[start]}'")
        kind = found.lastgroup
        tokens.append(_Tok(kind, found.group(kind), found.start(kind) + 1))
        position = found.end()
    return tokens


def _parse_error(token: _Tok | None, text: str, wanted: str) -> EsqlError:
    if token is None:
        return EsqlError("parsing_exception", f"line 1:{len(text) + 1}: mismatched input '<EOF>' expecting {wanted}")
    return EsqlError("parsing_exception", f"line 1:{token.at}: mismatched input '{token.text}' expecting {wanted}")


def _verify(token: _Tok, reason: str) -> EsqlError:
    return EsqlError("verification_exception", f"Found 1 problem\nline 1:{token.at}: {reason}")


def _string_literal(raw: str) -> str:
    if raw.startswith('"""'):
        return raw[3:-3]
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), raw[1:-1])


def _flatten(source: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A document's leaf fields under dotted names; lists of objects become multi-values of their leaves."""
    leaves: dict[str, Any] = {}
    for key, value in source.items():
        name = f"{prefix}{key}"
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, dict) for item in items):
            for item in items:
                if isinstance(item, dict):
                    for sub, leaf in _flatten(item, f"{name}.").items():
                        have = leaves.get(sub)
                        leaves[sub] = leaf if have is None else [*_listed(have), *_listed(leaf)]
        elif value is not None and value != []:
            leaves[name] = value if not isinstance(value, list) or len(value) != 1 else value[0]
    return leaves


def _esql_type(state: ElasticsearchState, name: str, value: Any) -> str:
    if name in state.date_fields:
        return "date"
    sample = value[0] if isinstance(value, list) and value else value
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, int):
        return "long"
    if isinstance(sample, float):
        return "double"
    return "keyword"


@dataclass(slots=True)
class _Expr:
    """A compiled expression: its ES|QL type and how to evaluate it on a row (None is null)."""

    type: str
    run: Callable[[dict[str, Any]], Any]
    text: str


class _EsqlParser:
    """The subset: FROM pattern [METADATA ...] | WHERE boolean expression | SORT ... | LIMIT n."""

    def __init__(self, state: ElasticsearchState, text: str) -> None:
        self.state = state
        self.text = text
        self.tokens = _esql_tokens(text)
        self.at = 0
        self.schema: dict[str, str] = {}

    def _peek(self) -> _Tok | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _word(self, *words: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "word" and token.text.lower() in words

    def _take(self) -> _Tok:
        token = self._peek()
        if token is None:
            raise _parse_error(None, self.text, "an expression")
        self.at += 1
        return token

    def _expect(self, text: str) -> _Tok:
        token = self._peek()
        if token is None or token.text != text:
            raise _parse_error(token, self.text, f"'{text}'")
        self.at += 1
        return token

    def run(self) -> tuple[list[dict[str, str]], list[list[Any]]]:
        rows, metadata = self._from()
        limit: int | None = None
        while self._peek() is not None:
            self._expect("|")
            command = self._peek()
            if command is None or command.kind != "word" or command.text.lower() not in _COMMANDS:
                raise _parse_error(command, self.text, "a processing command")
            self.at += 1
            name = command.text.lower()
            if name == "where":
                condition = self._or()
                if condition.type not in ("boolean", "null"):
                    reason = f"Condition expression needs to be boolean, found [{condition.type.upper()}]"
                    raise _verify(command, reason)
                rows = [row for row in rows if condition.run(row) is True]
            elif name == "sort":
                rows = self._sort(rows)
            elif name == "limit":
                count = self._take()
                if not _NUMBER.fullmatch(count.text) or "." in count.text:
                    raise _parse_error(count, self.text, "INTEGER_LITERAL")
                rows = rows[: int(count.text)]
                limit = int(count.text)
            else:
                raise EsqlError(
                    "parsing_exception",
                    f"line 1:{command.at}: [{command.text.upper()}] is not simulated by the sandbox",
                )
            following = self._peek()
            if following is not None and following.text != "|":
                raise _parse_error(following, self.text, "'|'")
        rows = rows[: 1000 if limit is None else limit]
        names = sorted(name for name in self.schema if name not in metadata) + metadata
        columns = [{"name": name, "type": self.schema[name]} for name in names]
        return columns, [[self._output(name, row.get(name)) for name in names] for row in rows]

    def _output(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if self.schema[name] == "date":
            return [_iso_ms(v) for v in value] if isinstance(value, list) else _iso_ms(value)
        return value

    def _from(self) -> tuple[list[dict[str, Any]], list[str]]:
        first = self._peek()
        if first is None or not self._word("from"):
            raise _parse_error(first, self.text, "{'explain', 'from', 'row', 'show'}")
        self.at += 1
        patterns: list[_Tok] = []
        while True:
            token = self._take()
            if token.kind not in ("word", "quoted", "string"):
                raise _parse_error(token, self.text, "an index pattern")
            patterns.append(token)
            if self._peek() is None or self._peek().text != ",":  # type: ignore[union-attr]
                break
            self.at += 1
        docs: list[Doc] = []
        for token in patterns:
            pattern = token.text.strip('"`')
            found = self.state.matching(pattern)
            if not found and not any(ch in pattern for ch in "*,") and pattern not in self.state.indices:
                raise _verify(token, f"Unknown index [{pattern}]")
            docs += [doc for doc in found if doc not in docs]
        metadata: list[str] = []
        if self._word("metadata"):
            self.at += 1
            while True:
                token = self._take()
                if token.text not in _METADATA:
                    raise _verify(token, f"unsupported metadata field [{token.text}]")
                if token.text not in ("_id", "_index"):
                    raise EsqlError("parsing_exception", f"line 1:{token.at}: [{token.text}] is not simulated")
                metadata.append(token.text)
                if self._peek() is None or self._peek().text != ",":  # type: ignore[union-attr]
                    break
                self.at += 1
        rows: list[dict[str, Any]] = []
        for doc in sorted(docs, key=lambda d: d.seq):
            row = _flatten(doc.source)
            for name, value in row.items():
                kind = _esql_type(self.state, name, value)
                if self.schema.setdefault(name, kind) != kind:
                    self.schema[name] = "unsupported"
            row.update({"_id": doc.id, "_index": doc.index})
            rows.append(row)
        for name, kind in self.schema.items():
            if kind == "date":
                for row in rows:
                    row[name] = self._date_value(row.get(name))
            elif kind == "unsupported":
                for row in rows:
                    row[name] = None
        self.schema.update({name: "keyword" for name in metadata})
        return rows, metadata

    @staticmethod
    def _date_value(value: Any) -> Any:
        if value is None:
            return None
        try:
            if isinstance(value, list):
                return [int(parse_time(v).timestamp() * 1000) for v in value]
            return int(parse_time(value).timestamp() * 1000)
        except (ValueError, TypeError, OverflowError, OSError):
            return None

    def _column(self, token: _Tok) -> str:
        name = token.text[1:-1].replace("``", "`") if token.kind == "quoted" else token.text
        if name not in self.schema:
            raise _verify(token, f"Unknown column [{name}]")
        return name

    def _sort(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys: list[tuple[str, bool, bool]] = []
        while True:
            token = self._take()
            if token.kind not in ("word", "quoted"):
                raise _parse_error(token, self.text, "a column")
            name = self._column(token)
            desc = False
            if self._word("asc", "desc"):
                desc = self._take().text.lower() == "desc"
            nulls_first = desc
            if self._word("nulls"):
                self.at += 1
                if not self._word("first", "last"):
                    raise _parse_error(self._peek(), self.text, "{'first', 'last'}")
                nulls_first = self._take().text.lower() == "first"
            keys.append((name, desc, nulls_first))
            if self._peek() is None or self._peek().text != ",":  # type: ignore[union-attr]
                break
            self.at += 1
        for name, desc, nulls_first in reversed(keys):
            present = [row for row in rows if row.get(name) is not None]
            absent = [row for row in rows if row.get(name) is None]
            present.sort(key=lambda row: _single(row[name], desc), reverse=desc)
            rows = absent + present if nulls_first else present + absent
        return rows

    def _or(self) -> _Expr:
        left = self._and()
        while self._word("or"):
            operator = self._take()
            right = self._and()
            left = self._logic(operator, left, right, "or")
        return left

    def _and(self) -> _Expr:
        left = self._not()
        while self._word("and"):
            operator = self._take()
            right = self._not()
            left = self._logic(operator, left, right, "and")
        return left

    def _logic(self, operator: _Tok, left: _Expr, right: _Expr, kind: str) -> _Expr:
        for side in (left, right):
            if side.type not in ("boolean", "null"):
                reason = f"argument of [{left.text} {kind.upper()} {right.text}] must be [boolean], found [{side.type}]"
                raise _verify(operator, reason)

        def run(row: dict[str, Any]) -> Any:
            a, b = left.run(row), right.run(row)
            if kind == "and":
                return False if a is False or b is False else None if a is None or b is None else True
            return True if a is True or b is True else None if a is None or b is None else False

        return _Expr("boolean", run, f"{left.text} {kind.upper()} {right.text}")

    def _not(self) -> _Expr:
        if self._word("not"):
            operator = self._take()
            inner = self._not()
            if inner.type not in ("boolean", "null"):
                raise _verify(operator, f"argument of [NOT {inner.text}] must be [boolean], found [{inner.type}]")
            return _Expr("boolean", lambda row: None if inner.run(row) is None else not inner.run(row), inner.text)
        return self._compare()

    def _compare(self) -> _Expr:
        left = self._primary()
        token = self._peek()
        if self._word("is"):
            self.at += 1
            negate = self._word("not")
            if negate:
                self.at += 1
            if not self._word("null"):
                raise _parse_error(self._peek(), self.text, "'null'")
            self.at += 1
            return _Expr("boolean", lambda row: (left.run(row) is None) != negate, f"{left.text} IS NULL")
        if token is None or token.text not in ("==", "!=", "<", "<=", ">", ">="):
            return left
        self.at += 1
        right = self._primary()
        return self._comparison(token, left, right)

    def _comparison(self, operator: _Tok, left: _Expr, right: _Expr) -> _Expr:
        text = f"{left.text} {operator.text} {right.text}"
        kinds = {left.type, right.type} - {"null"}
        if "date" in kinds and "keyword" in kinds:
            left, right = (self._cast_date(side, operator) for side in (left, right))
            kinds = {"date"}
        compatible = len(kinds) <= 1 or kinds <= _NUMERIC
        if not compatible or "unsupported" in kinds or ("boolean" in kinds and operator.text not in ("==", "!=")):
            reason = (
                f"first argument of [{text}] is [{left.type}] so second argument must also be [{left.type}] "
                f"but was [{right.type}]"
            )
            raise _verify(operator, reason)
        checks: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: bool(a == b),
            "!=": lambda a, b: bool(a != b),
            "<": lambda a, b: bool(a < b),
            "<=": lambda a, b: bool(a <= b),
            ">": lambda a, b: bool(a > b),
            ">=": lambda a, b: bool(a >= b),
        }
        check = checks[operator.text]

        def run(row: dict[str, Any]) -> Any:
            a, b = left.run(row), right.run(row)
            if a is None or b is None or isinstance(a, list) or isinstance(b, list):
                return None  # a multi-valued field compares as null (Elasticsearch adds a warning header)
            return check(a, b)

        return _Expr("boolean", run, text)

    def _cast_date(self, side: _Expr, operator: _Tok) -> _Expr:
        if side.type != "keyword":
            return side
        if not side.text.startswith('"'):
            raise _verify(operator, f"cannot compare [{side.text}] of type [keyword] with a date")
        try:
            value = int(parse_time(side.run({})).timestamp() * 1000)
        except (ValueError, TypeError, OverflowError, OSError):
            raise _verify(operator, f"Cannot convert string [{side.run({})}] to [DATETIME]") from None
        return _Expr("date", lambda row: value, side.text)

    def _primary(self) -> _Expr:
        token = self._take()
        if token.text == "(":
            inner = self._or()
            self._expect(")")
            return inner
        if token.kind == "string":
            value = _string_literal(token.text)
            return _Expr("keyword", lambda row: value, token.text)
        if token.kind == "word" and _NUMBER.fullmatch(token.text):
            number: float = float(token.text) if "." in token.text else int(token.text)
            return _Expr("double" if "." in token.text else "integer", lambda row: number, token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            flag = token.text.lower() == "true"
            return _Expr("boolean", lambda row: flag, token.text)
        if token.kind == "word" and token.text.lower() == "null":
            return _Expr("null", lambda row: None, "null")
        following = self._peek()
        if token.kind == "word" and following is not None and following.text == "(":
            return self._function(token)
        if token.kind in ("word", "quoted") and token.text not in ("|", ")", ","):
            name = self._column(token)
            kind = self.schema[name]
            return _Expr(kind, lambda row: row.get(name), name)
        raise _parse_error(token, self.text, "an expression")

    def _function(self, token: _Tok) -> _Expr:
        if token.text.lower() != "to_datetime":
            raise _verify(token, f"Unknown function [{token.text.lower()}]")
        self._expect("(")
        argument = self._or()
        self._expect(")")
        if argument.type == "date":
            return argument
        if argument.type != "keyword" or not argument.text.startswith('"'):
            reason = f"argument of [TO_DATETIME({argument.text})] must be a string literal in the sandbox"
            raise _verify(token, reason)
        try:
            value = int(parse_time(argument.run({})).timestamp() * 1000)
        except (ValueError, TypeError, OverflowError, OSError):
            raise _verify(token, f"Cannot convert string [{argument.run({})}] to [DATETIME]") from None
        return _Expr("date", lambda row: value, f"TO_DATETIME({argument.text})")


def _single(value: Any, desc: bool) -> Any:
    if isinstance(value, list):
        return max(value) if desc else min(value)
    return value


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_esql(state: ElasticsearchState, text: str) -> tuple[list[dict[str, str]], list[list[Any]]]:
    """The columns and rows an ES|QL query of the simulated subset answers; EsqlError when refused."""
    return _EsqlParser(state, text).run()


# handlers ---------------------------------------------------------------------------------------------
STATE: web.AppKey[ElasticsearchState] = web.AppKey("state", ElasticsearchState)


def _state(request: web.Request) -> ElasticsearchState:
    return request.app[STATE]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest from None
    if not isinstance(value, dict):
        raise web.HTTPBadRequest
    return value


async def info(request: web.Request) -> web.Response:
    """``GET /``: cluster information."""
    return _json({"name": "sandbox", "cluster_name": "custodes-sandbox", "version": {"number": "9.1.0"}})


async def bulk(request: web.Request) -> web.Response:
    """``PUT|POST [/{index}]/_bulk``: NDJSON action and source lines."""
    state = _state(request)
    lines = [line for line in (await request.read()).splitlines() if line.strip()]
    default_index = request.match_info.get("index")
    items: list[dict[str, Any]] = []
    errors = False
    position = 0
    while position < len(lines):
        try:
            action_line = orjson.loads(lines[position])
        except orjson.JSONDecodeError:
            return es_error(400, "x_content_parse_exception", f"malformed action at line {position + 1}")
        op, meta = next(iter(action_line.items()))
        position += 1
        index = meta.get("_index", default_index)
        doc_id = meta.get("_id") or secrets.token_urlsafe(15)
        if op == "delete":
            found = state.indices.get(index, {}).pop(doc_id, None) is not None
            items.append({op: {"_index": index, "_id": doc_id, "status": 200 if found else 404}})
            continue
        source = orjson.loads(lines[position])
        position += 1
        if op == "create" and doc_id in state.indices.get(index, {}):
            errors = True
            reason = f"[{doc_id}]: version conflict, document already exists"
            error = {"type": "version_conflict_engine_exception", "reason": reason}
            items.append({op: {"_index": index, "_id": doc_id, "status": 409, "error": error}})
            continue
        created = state.index(index, doc_id, source)
        result = "created" if created else "updated"
        items.append({op: {"_index": index, "_id": doc_id, "status": 201 if created else 200, "result": result}})
    return _json({"took": 1, "errors": errors, "items": items}, content_type=_content_type(request))


async def open_pit(request: web.Request) -> web.Response:
    """``POST /{pattern}/_pit``: freeze the documents matching the pattern."""
    state = _state(request)
    pattern = request.match_info["index"]
    docs = state.matching(pattern)
    if not docs and not any(ch in pattern for ch in "*,") and pattern not in state.indices:
        return es_error(404, "index_not_found_exception", f"no such index [{pattern}]")
    keep_alive = _seconds(request.query.get("keep_alive", "1m"))
    pit_id = secrets.token_urlsafe(24)
    state.pits[pit_id] = Pit(docs, time.monotonic() + keep_alive)
    return _json({"id": pit_id}, content_type=_content_type(request))


async def close_pit(request: web.Request) -> web.Response:
    """``DELETE /_pit``."""
    state = _state(request)
    body = await _body(request)
    freed = state.pits.pop(str(body.get("id")), None) is not None
    return _json({"succeeded": True, "num_freed": int(freed)}, content_type=_content_type(request))


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    found = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip())
    if found is None:
        raise web.HTTPBadRequest(text="bad keep_alive")
    return int(found.group(1)) * units[found.group(2)]


async def search(request: web.Request) -> web.Response:
    """``POST [/{pattern}]/_search``: a PIT search when the body names one (then with no index)."""
    state = _state(request)
    body = await _body(request)
    pattern = request.match_info.get("index")
    pit = body.get("pit")
    if pit is not None:
        if pattern is not None:
            return es_error(400, "action_request_validation_exception", "[indices] cannot be used with point in time")
        held = state.pits.get(str(pit.get("id")))
        if held is None or held.expires < time.monotonic():
            state.pits.pop(str(pit.get("id")), None)
            return es_error(404, "search_context_missing_exception", "No search context found for id")
        if "keep_alive" in pit:
            held.expires = time.monotonic() + _seconds(str(pit["keep_alive"]))
        docs = held.docs
    else:
        docs = state.matching(pattern or "*")
    try:
        matcher = compile_query(state, body.get("query"))
        spec = _sort_spec(body.get("sort"))
    except QueryError as exc:
        return _phase_error(400, str(exc))
    size = int(body.get("size", 10))
    hits = [(doc, _sort_values(state, doc, spec)) for doc in docs if matcher(doc.source)]
    total = len(hits)
    if spec:
        hits.sort(key=lambda hit: _key(hit[1], spec))
        after = body.get("search_after")
        if after is not None:
            bound = _key([_comparable_after(state, spec, i, v) for i, v in enumerate(after)], spec)
            hits = [hit for hit in hits if _key(hit[1], spec) > bound]
    page = [
        {
            "_index": doc.index,
            "_id": doc.id,
            "_score": None,
            "_source": doc.source,
            **({"sort": values} if spec else {}),
        }
        for doc, values in hits[:size]
    ]
    if state.empty_pages and page:
        state.empty_pages -= 1
        page = []
    elif state.repeat_pages and state._last_page:
        state.repeat_pages -= 1
        page = state._last_page
    state._last_page = page
    response: dict[str, Any] = {
        "took": 1,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": None, "hits": page},
    }
    if pit is not None:
        response["pit_id"] = pit["id"]
    return _json(response, content_type=_content_type(request))


async def esql_query(request: web.Request) -> web.Response:
    """``POST /_query``: an ES|QL query, answered as ``{"columns": [{"name", "type"}], "values": [[...]]}``."""
    state = _state(request)
    body = await _body(request)
    text = body.get("query")
    if not isinstance(text, str) or not text.strip():
        return es_error(400, "action_request_validation_exception", "Validation Failed: 1: [query] is required;")
    if request.query.get("format", "json") != "json":
        return es_error(400, "illegal_argument_exception", "the sandbox answers ES|QL in format [json] only")
    try:
        columns, values = run_esql(state, text)
    except EsqlError as exc:
        return es_error(400, exc.kind, str(exc))
    response = {"took": 1, "is_partial": False, "columns": columns, "values": values}
    return _json(response, content_type=_content_type(request))


def _comparable_after(state: ElasticsearchState, spec: list[tuple[str, bool]], i: int, value: Any) -> Any:
    if i >= len(spec):
        raise QueryError("search_after has more values than sort")
    return value


def _phase_error(status: int, reason: str) -> web.Response:
    failed = {"shard": 0, "index": "sandbox", "reason": {"type": "query_shard_exception", "reason": reason}}
    body = {
        "error": {
            "root_cause": [{"type": "query_shard_exception", "reason": reason}],
            "type": "search_phase_execution_exception",
            "reason": "all shards failed",
            "phase": "query",
            "grouped": True,
            "failed_shards": [failed],
        },
        "status": status,
    }
    return _json(body, status=status)


def _content_type(request: web.Request) -> str:
    return COMPAT_JSON if "compatible-with" in request.headers.get("Accept", "") else "application/json"


def _render(fault: Fault, request: web.Request) -> web.StreamResponse:
    status = fault.status or 500
    if status == 429:
        return es_error(429, "es_rejected_execution_exception", "rejected execution of coordinating operation")
    if request.path.endswith("_search"):
        return _phase_error(status, "shard failure")
    return es_error(status, "unavailable_shards_exception", "primary shard is not active")


def create_app(state: ElasticsearchState | None = None) -> web.Application:
    """The simulator as an aiohttp application (state at ``app[STATE]``)."""
    current = state or ElasticsearchState()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        current.requests.append((request.method, request.path))
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[record, middleware(current.faults, _render)])
    app[STATE] = current
    app.router.add_get("/", info)
    app.router.add_route("*", "/_bulk", bulk)
    app.router.add_route("*", "/{index}/_bulk", bulk)
    app.router.add_post("/_search", search)
    app.router.add_post("/{index}/_search", search)
    app.router.add_delete("/_pit", close_pit)
    app.router.add_post("/{index}/_pit", open_pit)
    app.router.add_post("/_query", esql_query)
    return app
