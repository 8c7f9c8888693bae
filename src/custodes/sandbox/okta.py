"""A local Okta Management API simulator, written from Okta's documentation.

What it speaks, as Okta does: ``Authorization: SSWS <token>``; ``GET /api/v1/users`` (``limit``/``after``
paging with one ``link`` header per rel), ``GET /api/v1/users/{id or login}``,
``POST /api/v1/users/{id}/lifecycle/suspend`` (ACTIVE users only) and ``.../unsuspend`` (SUSPENDED only),
answering ``{}``; Okta's error object (``errorCode``, ``errorSummary``, ``errorLink``, ``errorId``,
``errorCauses``); ``X-Rate-Limit-Limit``/``-Remaining``/``-Reset`` (epoch seconds) on every response and
429 ``E0000047`` past the per-window limit.

The System Log, ``GET /api/v1/logs``: ``since`` (default seven days ago), ``until`` (exclusive), ``limit``
(1..1000, default 100), ``after`` (an opaque cursor) and ``sortOrder``; events ordered by ``published`` (then
``uuid``); one ``link`` header per rel. A polling request (no ``until``) always gets a ``rel="next"`` link, even
on an empty page; a bounded one only while more events remain.

Identity inventory: ``GET /api/v1/groups`` and ``GET /api/v1/groups/{id}/users`` (``limit``/``after`` paging,
one ``link`` header per rel), ``GET /api/v1/users/{id}/factors`` (enrolled factors) and
``GET /api/v1/users/{id}/roles`` (admin role assignments); seed them with `add_group`, `enroll_factor`,
`assign_role` and `set_last_login`.

Containment: ``DELETE /api/v1/users/{id}/sessions`` (``oauthTokens=true`` also revokes the user's OAuth
tokens; 204 whether or not there were any), ``POST /api/v1/users/{id}/lifecycle/expire_password`` (ACTIVE users
only; answers the user, now PASSWORD_EXPIRED), ``POST .../lifecycle/reset_factors`` (every factor unenrolled;
``{}``), ``GET /api/v1/groups/{id}``, ``GET /api/v1/groups?q=`` (name prefix), ``GET /api/v1/users/{id}/groups``
and ``PUT``/``DELETE /api/v1/groups/{groupId}/users/{userId}`` (204, idempotent; only ``OKTA_GROUP`` membership can
be changed). Seed sessions and tokens with `add_session` and `grant_token`.

Tests seed users and log events, inject faults (429 or 5xx; dropped connections and slow
answers through `faults`; an empty page or a repeated cursor through `empty_pages`/`repeat_pages`) and read the
request log through `OktaState`.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hmac
import math
import secrets
import string
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from custodes.sandbox.paging import injected_page
from custodes.sandbox.pathfaults import Fault, Faults, middleware

DEFAULT_TOKEN = "sandbox-okta-token"  # noqa: S105 (the simulator's own, not a credential)
USER_STATUSES = frozenset(
    {
        "STAGED",
        "PROVISIONED",
        "ACTIVE",
        "RECOVERY",
        "PASSWORD_EXPIRED",
        "LOCKED_OUT",
        "SUSPENDED",
        "DEPROVISIONED",
    }
)
MAX_PAGE = 200
MAX_LOG_PAGE = 1000
DEFAULT_LOG_PAGE = 100

_ALPHANUMERIC = string.ascii_letters + string.digits
_USERS = "/api/v1/users"


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def okta_error(
    status: int, code: str, summary: str, causes: Iterable[str] = (), headers: Mapping[str, str] | None = None
) -> web.Response:
    """An Okta error response: the documented error object with a fresh ``errorId``."""
    body = {
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": _random_id("oae", 22),
        "errorCauses": [{"errorSummary": cause} for cause in causes],
    }
    return web.json_response(body, status=status, headers=headers)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the simulator answered."""

    method: str
    path: str
    query: str
    status: int

    @property
    def mutating(self) -> bool:
        """Whether the method can change state (anything but GET, HEAD and OPTIONS)."""
        return self.method not in {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    reset_in: float


class OktaState:
    """The simulated org: users, the API token, the rate-limit window, injected faults and the request log."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        rate_limit: int = 600,
        rate_window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self.rate_window_seconds = rate_window_seconds
        self.clock = clock
        self.users: dict[str, dict[str, Any]] = {}
        self.log_events: list[tuple[float, str, dict[str, Any]]] = []
        self.groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self.factors: dict[str, list[dict[str, Any]]] = {}
        self.roles: dict[str, list[dict[str, Any]]] = {}
        self.sessions: dict[str, list[dict[str, Any]]] = {}
        self.oauth_tokens: dict[str, list[dict[str, Any]]] = {}
        self.faults = Faults()
        self.empty_pages = 0
        self.repeat_pages = 0
        self.requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._window_reset = 0.0
        self._window_count = 0

    def add_user(
        self,
        login: str,
        *,
        status: str = "ACTIVE",
        email: str | None = None,
        first_name: str = "Sandbox",
        last_name: str = "User",
    ) -> dict[str, Any]:
        """Seed a user (login unique, case-insensitive) and return a snapshot of it as Okta would show it."""
        if status not in USER_STATUSES:
            valid = ", ".join(sorted(USER_STATUSES))
            raise ValueError(f"unknown Okta user status {status!r} (expected one of: {valid})")
        if self.find_user(login) is not None:
            raise ValueError(f"an Okta user with login {login!r} already exists")
        now = _timestamp(self.clock())
        user_id = _random_id("00u", 17)
        self.users[user_id] = {
            "id": user_id,
            "status": status,
            "created": now,
            "activated": now if status != "STAGED" else None,
            "statusChanged": now,
            "lastLogin": None,
            "lastUpdated": now,
            "passwordChanged": None,
            "type": {"id": "oty1sandboxdefault0x7"},
            "profile": {
                "firstName": first_name,
                "lastName": last_name,
                "email": email or login,
                "login": login,
                "mobilePhone": None,
            },
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
        }
        return copy.deepcopy(self.users[user_id])

    def add_log_event(
        self,
        event_type: str = "user.session.start",
        *,
        actor: str = "ann@example.com",
        published: float | None = None,
        outcome: str = "SUCCESS",
        ip: str = "198.51.100.7",
        target: str | None = None,
    ) -> dict[str, Any]:
        """Append a System Log event (a LogEvent as Okta returns it) and return it."""
        at = self.clock() if published is None else published
        record: dict[str, Any] = {
            "uuid": str(uuid_module.uuid4()),
            "published": _timestamp(at),
            "eventType": event_type,
            "version": "0",
            "severity": "INFO",
            "legacyEventType": None,
            "displayMessage": event_type.replace(".", " "),
            "actor": {"id": _random_id("00u", 17), "type": "User", "alternateId": actor, "displayName": actor},
            "client": {
                "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"},
                "zone": "null",
                "device": "Computer",
                "ipAddress": ip,
            },
            "outcome": {"result": outcome, "reason": None},
            "target": [] if target is None else [{"id": _random_id("00u", 17), "type": "User", "alternateId": target}],
            "transaction": {"type": "WEB", "id": _random_id("", 27)},
            "authenticationContext": {"externalSessionId": _random_id("", 24)},
        }
        self.add_log_record(record, published=at)
        return copy.deepcopy(record)

    def add_log_record(self, record: dict[str, Any], *, published: float | None = None) -> None:
        """Append a raw System Log record as is (bad ones too); `published` orders it (default: now)."""
        at = self.clock() if published is None else published
        key = str(record.get("uuid") or _random_id("", 32))
        bisect.insort(self.log_events, (at, key, copy.deepcopy(record)), key=lambda item: (item[0], item[1]))

    def _user_id(self, login: str) -> str:
        user = self._lookup(login)
        if user is None:
            raise KeyError(f"no Okta user {login!r}")
        return str(user["id"])

    def set_last_login(self, login: str, at: float | None) -> None:
        """Set a user's ``lastLogin`` (None: never signed in)."""
        user = self._lookup(login)
        if user is None:
            raise KeyError(f"no Okta user {login!r}")
        user["lastLogin"] = None if at is None else _timestamp(at)

    def add_group(self, name: str, members: Iterable[str], *, group_type: str = "OKTA_GROUP") -> str:
        """Add a group with these member logins; return its id."""
        group_id = _random_id("00g", 17)
        now = _timestamp(self.clock())
        group = {
            "id": group_id,
            "created": now,
            "lastUpdated": now,
            "lastMembershipUpdated": now,
            "objectClass": ["okta:user_group"],
            "type": group_type,
            "profile": {"name": name, "description": None},
        }
        self.groups[group_id] = (group, [self._user_id(login) for login in members])
        return group_id

    def enroll_factor(self, login: str, factor_type: str = "push", *, status: str = "ACTIVE") -> dict[str, Any]:
        """Enroll a factor (``push``, ``token:software:totp``, ``sms``, ``webauthn`` ...) for a user."""
        provider = {"push": "OKTA", "token:software:totp": "GOOGLE", "sms": "OKTA", "webauthn": "FIDO"}
        factor = {
            "id": _random_id("opf", 17),
            "factorType": factor_type,
            "provider": provider.get(factor_type, "OKTA"),
            "vendorName": provider.get(factor_type, "OKTA"),
            "status": status,
            "created": _timestamp(self.clock()),
            "lastUpdated": _timestamp(self.clock()),
            "profile": {},
        }
        self.factors.setdefault(self._user_id(login), []).append(factor)
        return copy.deepcopy(factor)

    def assign_role(self, login: str, role_type: str) -> dict[str, Any]:
        """Assign an admin role (``SUPER_ADMIN``, ``ORG_ADMIN``, ``APP_ADMIN``, ``READ_ONLY_ADMIN`` ...)."""
        now = _timestamp(self.clock())
        role = {
            "id": _random_id("ra1", 17),
            "label": role_type.replace("_", " ").title().replace("Admin", "Administrator"),
            "type": role_type,
            "status": "ACTIVE",
            "created": now,
            "lastUpdated": now,
            "assignmentType": "USER",
        }
        self.roles.setdefault(self._user_id(login), []).append(role)
        return copy.deepcopy(role)

    def add_session(self, login: str, *, ip: str = "198.51.100.7") -> dict[str, Any]:
        """Start a sign-in session for a user (cleared by ``DELETE /api/v1/users/{id}/sessions``)."""
        now = _timestamp(self.clock())
        session = {"id": _random_id("102", 22), "status": "ACTIVE", "createdAt": now, "ip": ip}
        self.sessions.setdefault(self._user_id(login), []).append(session)
        return copy.deepcopy(session)

    def grant_token(self, login: str, *, client_id: str = "0oasandboxclient0x7") -> dict[str, Any]:
        """Issue an OAuth refresh token to a user (revoked by clearing sessions with ``oauthTokens=true``)."""
        token = {"id": _random_id("oar", 17), "status": "ACTIVE", "clientId": client_id, "issuer": "sandbox"}
        self.oauth_tokens.setdefault(self._user_id(login), []).append(token)
        return copy.deepcopy(token)

    def members(self, group_id: str) -> list[str]:
        """The user ids in a group."""
        return list(self.groups[group_id][1])

    def find_user(self, key: str) -> dict[str, Any] | None:
        """A snapshot of the user with this id or login (case-insensitive), or None."""
        user = self._lookup(key)
        return copy.deepcopy(user) if user is not None else None

    def fail_next(self, count: int = 1, *, status: int = 429, reset_in: float = 1.0) -> None:
        """Answer the next `count` requests with `status` (429 with rate-limit headers resetting in
        `reset_in` seconds, or a 5xx), whatever they ask for."""
        if status != 429 and not 500 <= status <= 599:
            raise ValueError("an injected fault is a 429 or a 5xx status")
        self._faults.extend(_Fault(status, reset_in) for _ in range(count))

    def calls(self, method: str | None = None) -> list[RecordedRequest]:
        """The request log, optionally only one method's requests."""
        return [r for r in self.requests if method is None or r.method == method.upper()]

    def mutations(self) -> list[RecordedRequest]:
        """The logged requests that could change state."""
        return [r for r in self.requests if r.mutating]

    def _lookup(self, key: str) -> dict[str, Any] | None:
        if key in self.users:
            return self.users[key]
        folded = key.casefold()
        for user in self.users.values():
            if user["profile"]["login"].casefold() == folded:
                return user
        return None

    def _transition(self, user: dict[str, Any], status: str) -> None:
        now = _timestamp(self.clock())
        user["status"] = status
        user["statusChanged"] = now
        user["lastUpdated"] = now

    def _admit(self, now: float) -> tuple[dict[str, str], bool]:
        """Count a request in the current window; its rate-limit headers and whether it is over the limit."""
        if now >= self._window_reset:
            self._window_reset = now + self.rate_window_seconds
            self._window_count = 0
        self._window_count += 1
        headers = {
            "X-Rate-Limit-Limit": str(self.rate_limit),
            "X-Rate-Limit-Remaining": str(max(0, self.rate_limit - self._window_count)),
            "X-Rate-Limit-Reset": str(math.ceil(self._window_reset)),
        }
        return headers, self._window_count > self.rate_limit

    def _next_fault(self) -> _Fault | None:
        return self._faults.popleft() if self._faults else None


STATE = web.AppKey("okta_state", OktaState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _rate_limited(headers: Mapping[str, str]) -> web.Response:
    return okta_error(429, "E0000047", "API call exceeded rate limit due to too many requests.", headers=headers)


async def _answer(request: web.Request, handler: Handler, state: OktaState, now: float) -> web.StreamResponse:
    limit_headers, over_limit = state._admit(now)
    fault = state._next_fault()
    if fault is not None and fault.status == 429:
        reset = str(math.ceil(now + fault.reset_in))
        return _rate_limited({**limit_headers, "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": reset})
    if fault is not None:
        return okta_error(fault.status, "E0000009", "Internal Server Error", headers=limit_headers)
    if over_limit:
        return _rate_limited(limit_headers)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "SSWS" or not hmac.compare_digest(token.encode(), state.token.encode()):
        return okta_error(401, "E0000011", "Invalid token provided", headers=limit_headers)
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed:
        response = okta_error(405, "E0000022", "The endpoint does not support the provided HTTP method")
    except web.HTTPNotFound:
        response = okta_error(404, "E0000007", f"Not found: Resource not found: {request.path}")
    response.headers.update(limit_headers)
    return response


@web.middleware
async def _okta_protocol(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    response = await _answer(request, handler, state, state.clock())
    response.headers["X-Okta-Request-Id"] = _random_id("", 27)
    state.requests.append(RecordedRequest(request.method, request.path, request.query_string, response.status))
    return response


def _user_not_found(key: str) -> web.Response:
    return okta_error(404, "E0000007", f"Not found: Resource not found: {key} (User)")


def _render(user: dict[str, Any], request: web.Request) -> dict[str, Any]:
    href = f"{request.url.origin()}{_USERS}/{user['id']}"
    links: dict[str, Any] = {"self": {"href": href}}
    if user["status"] == "ACTIVE":
        links["suspend"] = {"href": f"{href}/lifecycle/suspend", "method": "POST"}
    if user["status"] == "ACTIVE":
        links["expirePassword"] = {"href": f"{href}/lifecycle/expire_password", "method": "POST"}
        links["resetFactors"] = {"href": f"{href}/lifecycle/reset_factors", "method": "POST"}
    if user["status"] == "SUSPENDED":
        links["unsuspend"] = {"href": f"{href}/lifecycle/unsuspend", "method": "POST"}
    return {**copy.deepcopy(user), "_links": links}


async def _list_users(request: web.Request) -> web.Response:
    return _paged(request, list(request.app[STATE].users.values()), lambda user: _render(user, request))


async def _get_user(request: web.Request) -> web.Response:
    key = request.match_info["user"]
    user = request.app[STATE]._lookup(key)
    if user is None:
        return _user_not_found(key)
    return web.json_response(_render(user, request))


def _paged(
    request: web.Request,
    items: list[dict[str, Any]],
    render: Callable[[dict[str, Any]], dict[str, Any]] = copy.deepcopy,
) -> web.Response:
    """A page of `items` by ``limit`` (1..200) and ``after`` (the last id of the previous page), each item as
    `render` shows it (a copy by default)."""
    try:
        limit = min(int(request.query.get("limit", str(MAX_PAGE))), MAX_PAGE)
    except ValueError:
        limit = 0
    if limit < 1:
        return _invalid("limit", "must be a positive integer")
    after = request.query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    response = web.json_response([render(item) for item in page])
    response.headers.add("link", f'<{request.url}>; rel="self"')
    if len(items) > limit:
        following = request.url.update_query(after=page[-1]["id"], limit=str(limit))
        response.headers.add("link", f'<{following}>; rel="next"')
    return response


async def _list_groups(request: web.Request) -> web.Response:
    groups = [group for group, _ in request.app[STATE].groups.values()]
    prefix = request.query.get("q")
    if prefix is not None:
        folded = prefix.casefold()
        groups = [group for group in groups if str(group["profile"]["name"]).casefold().startswith(folded)]
    return _paged(request, groups)


def _group_not_found(key: str) -> web.Response:
    return okta_error(404, "E0000007", f"Not found: Resource not found: {key} (UserGroup)")


async def _get_group(request: web.Request) -> web.Response:
    key = request.match_info["group"]
    found = request.app[STATE].groups.get(key)
    if found is None:
        return _group_not_found(key)
    return web.json_response(copy.deepcopy(found[0]))


async def _user_groups(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["user"]
    user = state._lookup(key)
    if user is None:
        return _user_not_found(key)
    return _paged(request, [group for group, members in state.groups.values() if user["id"] in members])


async def _membership(request: web.Request) -> web.Response:
    """``PUT`` adds, ``DELETE`` removes; both 204 whether or not the membership already was as asked."""
    state = request.app[STATE]
    group_key, user_key = request.match_info["group"], request.match_info["user"]
    found = state.groups.get(group_key)
    if found is None:
        return _group_not_found(group_key)
    user = state._lookup(user_key)
    if user is None:
        return _user_not_found(user_key)
    group, members = found
    if group["type"] != "OKTA_GROUP":
        return okta_error(403, "E0000006", "You do not have permission to perform the requested action")
    if request.method == "PUT" and user["id"] not in members:
        members.append(user["id"])
    elif request.method == "DELETE" and user["id"] in members:
        members.remove(user["id"])
    else:
        return web.Response(status=204)
    group["lastMembershipUpdated"] = _timestamp(state.clock())
    return web.Response(status=204)


async def _clear_sessions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["user"]
    user = state._lookup(key)
    if user is None:
        return _user_not_found(key)
    state.sessions.pop(user["id"], None)
    if request.query.get("oauthTokens", "false").lower() == "true":
        state.oauth_tokens.pop(user["id"], None)
    return web.Response(status=204)


async def _expire_password(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["user"]
    user = state._lookup(key)
    if user is None:
        return _user_not_found(key)
    if user["status"] != "ACTIVE":
        return okta_error(
            400,
            "E0000001",
            "Api validation failed: expirePassword",
            ["Cannot expire the password of a user that is not active"],
        )
    state._transition(user, "PASSWORD_EXPIRED")
    return web.json_response(_render(user, request))


async def _reset_factors(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["user"]
    user = state._lookup(key)
    if user is None:
        return _user_not_found(key)
    state.factors.pop(user["id"], None)
    user["lastUpdated"] = _timestamp(state.clock())
    return web.json_response({})


async def _group_users(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["group"]
    if key not in state.groups:
        return _group_not_found(key)
    members = [_render(state.users[user_id], request) for user_id in state.groups[key][1] if user_id in state.users]
    return _paged(request, members)


def _per_user(table: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        key = request.match_info["user"]
        user = state._lookup(key)
        if user is None:
            return _user_not_found(key)
        found = state.factors if table == "factors" else state.roles
        return web.json_response(copy.deepcopy(found.get(user["id"], [])))

    return handle


def _lifecycle(operation: str, allowed_from: str, to: str, refusal: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        key = request.match_info["user"]
        user = state._lookup(key)
        if user is None:
            return _user_not_found(key)
        if user["status"] != allowed_from:
            return okta_error(400, "E0000001", f"Api validation failed: {operation}", [refusal])
        state._transition(user, to)
        return web.json_response({})

    return handle


def _parse_time(value: str) -> float:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _cursor(at: float, key: str) -> str:
    return base64.urlsafe_b64encode(f"{at!r}|{key}".encode()).decode().rstrip("=")


def _uncursor(value: str) -> tuple[float, str]:
    text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    at, _, key = text.partition("|")
    return float(at), key


def _invalid(field: str, message: str) -> web.Response:
    return okta_error(400, "E0000001", f"Api validation failed: {field}", [f"{field}: {message}"])


async def _list_logs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = request.query
    now = state.clock()
    try:
        since = _parse_time(query["since"]) if "since" in query else now - timedelta(days=7).total_seconds()
        until = _parse_time(query["until"]) if "until" in query else None
    except ValueError:
        return _invalid("since", "The date format in your query is not recognized. Use ISO 8601.")
    try:
        limit = int(query.get("limit", str(DEFAULT_LOG_PAGE)))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LOG_PAGE:
        return _invalid("limit", f"must be between 1 and {MAX_LOG_PAGE}")
    order = query.get("sortOrder", "ASCENDING")
    if order not in {"ASCENDING", "DESCENDING"}:
        return _invalid("sortOrder", "must be ASCENDING or DESCENDING")
    after = query.get("after")
    position: tuple[float, str] | None = None
    if after is not None:
        try:
            position = _uncursor(after)
        except (ValueError, UnicodeDecodeError):
            return _invalid("after", "invalid cursor")
    matching = [item for item in state.log_events if item[0] >= since and (until is None or item[0] < until)]
    if order == "DESCENDING":
        matching.reverse()
    if position is not None:
        descending = order == "DESCENDING"
        matching = [i for i in matching if ((i[0], i[1]) < position if descending else (i[0], i[1]) > position)]
    page, advanced = injected_page(state, matching[:limit])
    following = _cursor(page[-1][0], page[-1][1]) if advanced else after
    response = web.json_response([copy.deepcopy(item[2]) for item in page])
    response.headers.add("link", f'<{request.url}>; rel="self"')
    more = len(matching) > len(page) or (page == [] and bool(matching))
    if until is None or more:
        target = request.url if following is None else request.url.update_query(after=following)
        response.headers.add("link", f'<{target.update_query(limit=str(limit))}>; rel="next"')
    return response


def _render_fault(fault: Fault, request: web.Request) -> web.StreamResponse:
    status = fault.status or 500
    if status == 429:
        return _rate_limited({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(math.ceil(time.time()))})
    return okta_error(status, "E0000009", "Internal Server Error")


def create_app(state: OktaState | None = None) -> web.Application:
    """The simulator as an aiohttp application; pass an `OktaState` to seed and inspect it."""
    current = state if state is not None else OktaState()
    app = web.Application(middlewares=[_okta_protocol, middleware(current.faults, _render_fault)])
    app[STATE] = current
    app.router.add_get("/api/v1/logs", _list_logs)
    app.router.add_get(_USERS, _list_users)
    app.router.add_get(_USERS + "/{user}", _get_user)
    app.router.add_get(_USERS + "/{user}/factors", _per_user("factors"))
    app.router.add_get(_USERS + "/{user}/roles", _per_user("roles"))
    app.router.add_get("/api/v1/groups", _list_groups)
    app.router.add_get(_USERS + "/{user}/groups", _user_groups)
    app.router.add_delete(_USERS + "/{user}/sessions", _clear_sessions)
    app.router.add_post(_USERS + "/{user}/lifecycle/expire_password", _expire_password)
    app.router.add_post(_USERS + "/{user}/lifecycle/reset_factors", _reset_factors)
    app.router.add_get("/api/v1/groups/{group}", _get_group)
    app.router.add_get("/api/v1/groups/{group}/users", _group_users)
    app.router.add_put("/api/v1/groups/{group}/users/{user}", _membership)
    app.router.add_delete("/api/v1/groups/{group}/users/{user}", _membership)
    app.router.add_post(
        _USERS + "/{user}/lifecycle/suspend",
        _lifecycle("suspendUser", "ACTIVE", "SUSPENDED", "Cannot suspend a user that is not active"),
    )
    app.router.add_post(
        _USERS + "/{user}/lifecycle/unsuspend",
        _lifecycle("unsuspendUser", "SUSPENDED", "ACTIVE", "Cannot unsuspend a user that is not suspended"),
    )
    return app
