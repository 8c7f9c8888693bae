"""A local Splunk REST simulator that splunk-sdk 2.1 (`splunklib.client`) accepts, written from the Splunk REST
API reference.

What it speaks: ``POST /services/auth/login`` (form body ``username``/``password``; the answer is the XML
``<response><sessionKey>``); ``Authorization: Splunk <key>`` (or ``Bearer <token>``) on everything else, 401
with Splunk's XML message otherwise; ``GET /services/server/info`` as an Atom feed (version 9.3, so the SDK
uses the v2 search endpoints); ``POST /services/search/v2/jobs/export`` (form body without a Content-Type,
as the SDK sends it) streaming ``output_mode=json`` results one JSON document per line, newest first, between
``earliest_time`` (inclusive) and ``latest_time`` (exclusive), given as epoch seconds or ISO 8601. The search
language subset: an optional leading ``search``, then ``field=value`` terms (``*`` wildcards, quoted values,
case-insensitive values) and bare words matched in ``_raw``, ANDed by juxtaposition or ``AND``, with ``OR``, ``NOT``
and parentheses; a pipe is a 400. Faults
(`pathfaults.Faults`) inject 401, 429 and 5xx with ``Retry-After``, slow answers and dropped connections;
`truncate_exports` cuts the next export streams after half their results, `duplicate_exports` sends every
result of the next exports twice.
"""

from __future__ import annotations

import fnmatch
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import orjson
from aiohttp import web

from custodes.connectors.envelope import parse_time
from custodes.sandbox.pathfaults import Fault, Faults, middleware

VERSION = "9.3.0"


@dataclass(slots=True)
class SplunkState:
    """Indexed events, the accepted account, sessions, faults and a log of (method, path, form) answered."""

    username: str = "admin"
    password: str = "sandbox-password"  # noqa: S105 (the simulator's own)
    token: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    truncate_exports: int = 0
    duplicate_exports: int = 0

    def index(self, at: datetime, raw: str, *, index: str = "main", sourcetype: str = "json", **fields: Any) -> None:
        """Index one event with its extracted `fields` (a list a multi-valued field, as the export renders it); its
        `_cd` is ``<bucket>:<offset>`` as Splunk assigns it."""
        offset = len(self.events)
        self.events.append(
            {
                "_time": at.astimezone(UTC),
                "_raw": raw,
                "_cd": f"{offset // 1000}:{offset * 7}",
                "_bkt": f"{index}~{offset // 1000}~sandbox",
                "_indextime": str(int(at.timestamp())),
                "index": index,
                "sourcetype": sourcetype,
                "host": fields.pop("host", "sandbox-host"),
                "source": fields.pop("source", "sandbox"),
                "splunk_server": "sandbox",
                **{
                    key: [str(v) for v in value] if isinstance(value, list) else str(value)
                    for key, value in fields.items()
                },
            }
        )

    def expire_sessions(self) -> None:
        """Forget every session key (the SDK logs in again on the next 401)."""
        self.sessions.clear()


def splunk_error(status: int, text: str, kind: str = "ERROR") -> web.Response:
    """Splunk's XML error body."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<response>\n  <messages>\n'
        f'    <msg type="{kind}">{escape(text)}</msg>\n  </messages>\n</response>\n'
    )
    return web.Response(status=status, text=body, content_type="text/xml")


STATE: web.AppKey[SplunkState] = web.AppKey("state", SplunkState)


async def _form(request: web.Request) -> dict[str, str]:
    raw = (await request.read()).decode("utf-8", errors="replace")
    form = {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}
    form.update({key: value for key, value in request.query.items() if key not in form})
    return form


async def login(request: web.Request) -> web.Response:
    """``POST /services/auth/login``."""
    state = request.app[STATE]
    form = await _form(request)
    if form.get("username") != state.username or form.get("password") != state.password:
        return splunk_error(401, "Login failed", "WARN")
    key = secrets.token_urlsafe(24)
    state.sessions.add(key)
    body = f'<response>\n  <sessionKey>{key}</sessionKey>\n  <messages>\n    <msg code=""></msg>\n  </messages>\n'
    body += "</response>\n"
    return web.Response(text=body, content_type="text/xml")


def _authorised(state: SplunkState, request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme == "Splunk":
        return value in state.sessions
    return scheme == "Bearer" and state.token is not None and value == state.token


async def server_info(request: web.Request) -> web.Response:
    """``GET /services/server/info``: an Atom feed with one entry."""
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:s="http://dev.splunk.com/ns/rest" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
  <title>server-info</title>
  <id>/services/server/info</id>
  <entry>
    <title>server-info</title>
    <id>/services/server/info/server-info</id>
    <content type="text/xml">
      <s:dict>
        <s:key name="version">{VERSION}</s:key>
        <s:key name="serverName">sandbox</s:key>
        <s:key name="product_type">enterprise</s:key>
      </s:dict>
    </content>
  </entry>
</feed>
"""
    return web.Response(text=body, content_type="text/xml")


class SearchError(ValueError):
    """A search the simulator does not understand (Splunk answers 400)."""


Matcher = Callable[[dict[str, Any]], bool]


def _term(word: str) -> Matcher:
    key, sep, value = word.partition("=")
    if sep and key:
        wanted = value.lower()
        return lambda event: fnmatch.fnmatchcase(str(event.get(key, "")).lower(), wanted)
    pattern = f"*{word.lower()}*"
    return lambda event: fnmatch.fnmatchcase(str(event["_raw"]).lower(), pattern)


class _Search:
    """Terms ANDed by juxtaposition or ``AND``, ``OR`` binding looser, ``NOT``, and parentheses (SPL's order)."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.at = 0

    def parse(self) -> Matcher:
        matcher = self._or()
        if self.at < len(self.words):
            raise SearchError(f"Error in 'search' command: unexpected {self.words[self.at]!r}")
        return matcher

    def _peek(self) -> str | None:
        return self.words[self.at] if self.at < len(self.words) else None

    def _or(self) -> Matcher:
        options = [self._and()]
        while self._peek() == "OR":
            self.at += 1
            options.append(self._and())
        return options[0] if len(options) == 1 else lambda event: any(option(event) for option in options)

    def _and(self) -> Matcher:
        parts: list[Matcher] = []
        while self._peek() not in (None, ")", "OR"):
            if self._peek() == "AND":
                self.at += 1
            parts.append(self._not())
        if not parts:
            raise SearchError("Error in 'search' command: a search term is missing")
        return lambda event: all(part(event) for part in parts)

    def _not(self) -> Matcher:
        if self._peek() == "NOT":
            self.at += 1
            inner = self._not()
            return lambda event: not inner(event)
        word = self._peek()
        self.at += 1
        if word == "(":
            inner = self._or()
            if self._peek() != ")":
                raise SearchError("Error in 'search' command: unbalanced parentheses")
            self.at += 1
            return inner
        if word is None or word in (")", "AND", "OR"):
            raise SearchError(f"Error in 'search' command: a search term is missing before {word!r}")
        return _term(word)


def _matcher(search: str) -> Matcher:
    text = search.strip()
    if "|" in text:
        raise SearchError("the simulator runs plain searches only (no pipes)")
    lexer = shlex.shlex(text, posix=True, punctuation_chars="()")
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as exc:
        raise SearchError(f"Error in 'search' command: {exc}") from None
    if words and words[0] == "search":
        words = words[1:]
    return _Search(words).parse() if words else lambda event: True


def _bound(value: str | None) -> datetime | None:
    if value is None or value == "" or value == "0":
        return None
    if value == "now":
        return datetime.now(UTC)
    try:
        return parse_time(value)
    except ValueError:
        raise SearchError(f"Invalid time bound {value!r}") from None


def _result(event: dict[str, Any], serial: int) -> dict[str, Any]:
    stamp = event["_time"].isoformat(timespec="milliseconds")
    return {**event, "_time": stamp, "_serial": str(serial)}


async def export(request: web.Request) -> web.StreamResponse:
    """``POST /services/search/v2/jobs/export``: stream matching events as JSON lines, newest first."""
    state = request.app[STATE]
    form = await _form(request)
    try:
        matcher = _matcher(form.get("search", ""))
        earliest, latest = _bound(form.get("earliest_time")), _bound(form.get("latest_time"))
    except SearchError as exc:
        return splunk_error(400, str(exc), "FATAL")
    if form.get("output_mode") != "json":
        return splunk_error(400, "the simulator streams output_mode=json only")
    found = [
        event
        for event in state.events
        if matcher(event)
        and (earliest is None or event["_time"] >= earliest)
        and (latest is None or event["_time"] < latest)
    ]
    found.sort(key=lambda event: event["_time"], reverse=True)
    lines = [_result(event, serial) for serial, event in enumerate(found)]
    if state.duplicate_exports:
        state.duplicate_exports -= 1
        lines = [line for line in lines for _ in (0, 1)]
    cut = None
    if state.truncate_exports and lines:
        state.truncate_exports -= 1
        cut = len(lines) // 2
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=UTF-8"})
    await response.prepare(request)
    for offset, result in enumerate(lines):
        if offset == cut:
            await response.write(b'{"preview":false,"offset":')
            if request.transport is not None:
                request.transport.abort()
            return response
        document: dict[str, Any] = {"preview": False, "offset": offset}
        if offset == len(lines) - 1:
            document["lastrow"] = True
        document["result"] = result
        await response.write(orjson.dumps(document) + b"\n")
    await response.write_eof()
    return response


def _render(fault: Fault, request: web.Request) -> web.StreamResponse:
    status = fault.status or 500
    if status == 503:
        return splunk_error(503, "Search head is not available", "ERROR")
    if status == 429:
        return splunk_error(429, "Too many requests", "ERROR")
    return splunk_error(status, "Internal server error", "ERROR")


def create_app(state: SplunkState | None = None) -> web.Application:
    """The simulator as an aiohttp application (state at ``app[STATE]``)."""
    current = state or SplunkState()

    @web.middleware
    async def protocol(request: web.Request, handler: Any) -> web.StreamResponse:
        form = {key: ("<redacted>" if key == "password" else value) for key, value in (await _form(request)).items()}
        current.requests.append((request.method, request.path, form))
        if request.path != "/services/auth/login" and not _authorised(current, request):
            return splunk_error(401, "call not properly authenticated", "WARN")
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[middleware(current.faults, _render), protocol])
    app[STATE] = current
    app.router.add_post("/services/auth/login", login)
    app.router.add_get("/services/server/info", server_info)
    app.router.add_post("/services/search/v2/jobs/export", export)
    return app
