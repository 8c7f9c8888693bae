"""A local Google Workspace Admin SDK Reports API simulator, written from Google's documentation.

``GET /admin/reports/v1/activity/users/{userKey}/applications/{applicationName}`` with ``startTime`` and
``endTime`` (RFC 3339; ``endTime`` defaults to now), ``maxResults`` (1..1000, default 1000) and ``pageToken``;
activities newest first; ``{"kind": "admin#reports#activities", "etag", "items", "nextPageToken"}`` (no ``items``
when there are none). Bearer tokens; errors in Google's JSON error format (``{"error": {"code", "message",
"errors": [{"domain", "reason", "message"}], "status"}}``). Faults: `faults` (429 ``rateLimitExceeded``, 5xx
``backendError``, drops, delays), `empty_pages` and `repeat_pages`.
"""

from __future__ import annotations

import bisect
import copy
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from custodes.sandbox.paging import injected_page, page_token, read_page_token
from custodes.sandbox.pathfaults import Fault, Faults, middleware

APPLICATIONS = frozenset(
    {"login", "drive", "admin", "token", "saml", "groups", "calendar", "chat", "meet", "mobile", "user_accounts"}
)
PREFIX = "/admin/reports/v1/activity/users"
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def rfc3339(epoch: float) -> str:
    """A time as the Reports API writes it (milliseconds, ``Z``)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def google_error(status: int, reason: str, message: str) -> web.Response:
    """Google's JSON error body."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": _STATUS.get(status, "UNKNOWN"),
        }
    }
    return web.json_response(body, status=status)


def _desc(key: str) -> tuple[int, ...]:
    """A sort key that orders strings in reverse (for newest-first lists kept sorted ascending)."""
    return (*(-ord(char) for char in key), 1)


@dataclass(slots=True)
class GoogleState:
    """A customer: activities per application, the accepted bearer token, faults and a request log."""

    token: str = "sandbox-google-token"  # noqa: S105 (the simulator's own)
    customer_id: str = "C03az79cb"
    clock: Callable[[], float] = time.time
    activities: dict[str, list[tuple[float, str, dict[str, Any]]]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    empty_pages: int = 0
    repeat_pages: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def add(self, application: str, record: dict[str, Any], at: float) -> dict[str, Any]:
        """Add a raw activity record of `application` at `at` (its position in time)."""
        key = str(record.get("id", {}).get("uniqueQualifier") if isinstance(record.get("id"), dict) else "")
        rows = self.activities.setdefault(application, [])
        bisect.insort(
            rows, (at, key or secrets.token_hex(8), copy.deepcopy(record)), key=lambda i: (-i[0], _desc(i[1]))
        )
        return record

    def add_activity(
        self, application: str, actor: str, name: str, at: float, *, ip: str = "192.0.2.10", **parameters: str
    ) -> dict[str, Any]:
        """Add an activity as the Reports API returns it."""
        unique = str(-secrets.randbelow(10**18))
        record = {
            "kind": "admin#reports#activity",
            "id": {
                "time": rfc3339(at),
                "uniqueQualifier": unique,
                "applicationName": application,
                "customerId": self.customer_id,
            },
            "etag": f'"{secrets.token_urlsafe(16)}"',
            "actor": {"callerType": "USER", "email": actor, "profileId": str(secrets.randbelow(10**20))},
            "ipAddress": ip,
            "events": [
                {
                    "type": application,
                    "name": name,
                    "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
                }
            ],
        }
        return self.add(application, record, at)


STATE = web.AppKey("google_state", GoogleState)


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def activities(request: web.Request) -> web.Response:
    """List activities of one application, newest first."""
    state = request.app[STATE]
    application = request.match_info["application"]
    if application not in APPLICATIONS:
        return google_error(400, "invalid", f"Invalid value '{application}'. Values must match the allowed values.")
    query = request.query
    try:
        start = _parse(query["startTime"]) if "startTime" in query else None
        end = _parse(query["endTime"]) if "endTime" in query else state.clock()
        size = int(query.get("maxResults", "1000"))
        position = read_page_token(query["pageToken"]) if "pageToken" in query else {}
    except (ValueError, KeyError):
        return google_error(400, "invalid", "Invalid value for a request parameter")
    if not 1 <= size <= 1000:
        return google_error(400, "invalid", "Invalid value for: maxResults must be between 1 and 1000")
    rows = [
        item for item in state.activities.get(application, []) if (start is None or item[0] >= start) and item[0] <= end
    ]
    if "at" in position:
        mark = (float(position["at"]), str(position["key"]))
        rows = [item for item in rows if (item[0], item[1]) < mark]
    page, advanced = injected_page(state, rows[:size])
    following: dict[str, Any] | None = {"at": page[-1][0], "key": page[-1][1]} if advanced else position
    body: dict[str, Any] = {"kind": "admin#reports#activities", "etag": f'"{secrets.token_urlsafe(16)}"'}
    if page:
        body["items"] = [copy.deepcopy(item[2]) for item in page]
    if len(rows) > len(page) and following is not None:
        body["nextPageToken"] = page_token(following) if following else query.get("pageToken", page_token({}))
    return web.json_response(body)


def _render(fault: Fault, request: web.Request) -> web.StreamResponse:
    status = fault.status or 500
    if status == 429:
        return google_error(429, "rateLimitExceeded", "Quota exceeded for quota metric 'Queries'.")
    return google_error(status, "backendError", "Backend Error")


def create_app(state: GoogleState | None = None) -> web.Application:
    """The Reports API as an aiohttp application (state at ``app[STATE]``)."""
    current = state or GoogleState()

    @web.middleware
    async def protocol(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not secrets.compare_digest(value.encode(), current.token.encode()):
            response: web.StreamResponse = google_error(
                401, "authError", "Request had invalid authentication credentials."
            )
        else:
            response = await handler(request)
        current.requests.append((request.method, request.path, response.status))
        return response

    app = web.Application(middlewares=[protocol, middleware(current.faults, _render)])
    app[STATE] = current
    app.router.add_get(PREFIX + "/{user}/applications/{application}", activities)
    return app
