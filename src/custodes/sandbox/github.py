"""A local GitHub organisation audit log simulator, written from GitHub's REST documentation.

``GET /orgs/{org}/audit-log`` with ``phrase`` (``created:>=T``, ``created:>T``, ``created:<=T``, ``created:<T``,
``created:A..B``, ``action:NAME``, ``actor:NAME``), ``order`` (``desc`` by default, or ``asc``), ``per_page``
(default 30, at most 100) and ``after``/``before`` cursors; paging in one ``Link`` header with comma-joined rels.
Bearer (or ``token``) authentication; ``X-RateLimit-Limit``/``-Remaining``/``-Used``/``-Reset``/``-Resource`` on
every response and, past the limit, 403 ``API rate limit exceeded`` with ``X-RateLimit-Remaining: 0``. Errors
are ``{"message", "documentation_url", "status"}``. Faults: `faults`, `empty_pages`, `repeat_pages`.
"""

from __future__ import annotations

import base64
import bisect
import copy
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from custodes.sandbox.paging import injected_page
from custodes.sandbox.pathfaults import Fault, Faults, middleware

DOCS = "https://docs.github.com/rest/orgs/orgs#get-the-audit-log-for-an-organization"
_CREATED = re.compile(r"^created:(>=|<=|>|<)?(\S+)$")


def github_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """GitHub's error body."""
    return web.json_response(
        {"message": message, "documentation_url": DOCS, "status": str(status)}, status=status, headers=headers
    )


@dataclass(slots=True)
class GitHubState:
    """An organisation's audit log, the accepted token, the rate limit, faults and a request log."""

    org: str = "example-org"
    token: str = "sandbox-github-token"  # noqa: S105 (the simulator's own)
    rate_limit: int = 5000
    rate_window: float = 3600.0
    clock: Callable[[], float] = time.time
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    empty_pages: int = 0
    repeat_pages: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _used: int = 0
    _reset: float = 0.0

    def add(self, record: dict[str, Any], at_ms: int) -> dict[str, Any]:
        """Add a raw audit record at `at_ms` (its position in time)."""
        key = str(record.get("_document_id") or secrets.token_urlsafe(16))
        bisect.insort(self.events, (at_ms, key, copy.deepcopy(record)), key=lambda item: (item[0], item[1]))
        return record

    def add_event(self, action: str, actor: str, at: float, **extra: Any) -> dict[str, Any]:
        """Add an audit event as GitHub returns it."""
        at_ms = int(at * 1000)
        record = {
            "@timestamp": at_ms,
            "_document_id": secrets.token_urlsafe(16),
            "action": action,
            "actor": actor,
            "actor_id": secrets.randbelow(10**8),
            "actor_location": {"country_code": "CH"},
            "created_at": at_ms,
            "operation_type": "modify",
            "org": self.org,
            "org_id": 4242,
            "user_agent": "Mozilla/5.0",
            "business": "",
            **extra,
        }
        return self.add(record, at_ms)


STATE = web.AppKey("github_state", GitHubState)


def _at(text: str) -> int:
    if len(text) == 10:
        text += "T00:00:00Z"
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


Test = Callable[[int, dict[str, Any]], bool]


def _created(op: str, value: str) -> Test:
    if ".." in value and not op:
        low, high = (_at(part) for part in value.split("..", 1))
        return lambda t, _r: low <= t <= high
    bound = _at(value)
    if op == ">=":
        return lambda t, _r: t >= bound
    if op == ">":
        return lambda t, _r: t > bound
    if op == "<=":
        return lambda t, _r: t <= bound
    if op == "<":
        return lambda t, _r: t < bound
    return lambda t, _r: bound <= t < bound + 86_400_000


def _field(key: str, value: str) -> Test:
    return lambda _t, record: str(record.get(key, "")).startswith(value)


def _matcher(phrase: str) -> Test:
    tests: list[Test] = []
    for term in phrase.split():
        found = _CREATED.match(term)
        if found is not None:
            tests.append(_created(found[1] or "", found[2]))
        elif term.startswith(("action:", "actor:")):
            key, _, value = term.partition(":")
            tests.append(_field(key, value))
        else:
            raise ValueError(f"unsupported search term {term!r}")
    return lambda t, r: all(test(t, r) for test in tests)


def _cursor(at: int, key: str) -> str:
    return base64.urlsafe_b64encode(f"{at}|{key}".encode()).decode().rstrip("=")


def _uncursor(value: str) -> tuple[int, str]:
    at, _, key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().partition("|")
    return int(at), key


async def audit_log(request: web.Request) -> web.Response:
    """The organisation audit log."""
    state = request.app[STATE]
    if request.match_info["org"] != state.org:
        return github_error(404, "Not Found")
    query = request.query
    try:
        matches = _matcher(query.get("phrase", ""))
        size = int(query.get("per_page", "30"))
        after = _uncursor(query["after"]) if "after" in query else None
    except (ValueError, UnicodeDecodeError) as error:
        return github_error(422, f"Validation Failed: {error}")
    order = query.get("order", "desc")
    if order not in {"asc", "desc"} or not 1 <= size <= 100:
        return github_error(422, "Validation Failed")
    rows = [item for item in state.events if matches(item[0], item[2])]
    if order == "desc":
        rows.reverse()
    if after is not None:
        rows = [i for i in rows if ((i[0], i[1]) > after if order == "asc" else (i[0], i[1]) < after)]
    page, advanced = injected_page(state, rows[:size])
    cursor = _cursor(page[-1][0], page[-1][1]) if advanced else query.get("after")
    response = web.json_response([copy.deepcopy(item[2]) for item in page])
    if len(rows) > len(page):
        target = request.url.update_query(after=cursor) if cursor else request.url
        response.headers["Link"] = f'<{target}>; rel="next", <{request.url.with_query({})}>; rel="first"'
    return response


def _render(fault: Fault, request: web.Request) -> web.StreamResponse:
    status = fault.status or 500
    if status == 429:
        return github_error(429, "You have exceeded a secondary rate limit. Please wait a few minutes.")
    return github_error(status, "Server Error")


def create_app(state: GitHubState | None = None) -> web.Application:
    """The audit log API as an aiohttp application (state at ``app[STATE]``)."""
    current = state or GitHubState()

    @web.middleware
    async def protocol(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        now = current.clock()
        if now >= current._reset:
            current._reset, current._used = now + current.rate_window, 0
        current._used += 1
        limits = {
            "X-RateLimit-Limit": str(current.rate_limit),
            "X-RateLimit-Remaining": str(max(0, current.rate_limit - current._used)),
            "X-RateLimit-Used": str(min(current._used, current.rate_limit)),
            "X-RateLimit-Reset": str(math.ceil(current._reset)),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
        }
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in {"bearer", "token"} or not secrets.compare_digest(
            value.encode(), current.token.encode()
        ):
            response: web.StreamResponse = github_error(401, "Bad credentials")
        elif current._used > current.rate_limit:
            response = github_error(403, "API rate limit exceeded for installation.")
        else:
            response = await handler(request)
        response.headers.update(limits)
        current.requests.append((request.method, request.path, response.status))
        return response

    app = web.Application(middlewares=[protocol, middleware(current.faults, _render)])
    app[STATE] = current
    app.router.add_get("/orgs/{org}/audit-log", audit_log)
    return app
