"""A local ServiceNow Table API simulator for the incident table.

Follows ServiceNow's documentation for the parts Custodes uses: basic auth (401 ``User Not Authenticated``),
``GET /api/now/table/incident`` with ``sysparm_query`` (``field=value`` conditions joined by ``^``),
``sysparm_fields`` and ``sysparm_limit`` (200 ``{"result": [...]}``), ``POST /api/now/table/incident``
(201 ``{"result": record}`` with a ``Location`` header; every value a string; ``sys_id`` and an ``INC``
number assigned), and error bodies ``{"error": {"message", "detail"}, "status": "failure"}``: 400 for a body
that is not JSON, 403 for a data policy (``short_description`` is mandatory). Tests can make the next
requests answer 429 with ``Retry-After`` and ``X-RateLimit-*`` headers, or a 5xx.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from custodes.model import utcnow
from custodes.sandbox.statusfaults import StatusFaults


@dataclass(slots=True)
class ServiceNowState:
    """The instance's account, its incident records, and injected faults."""

    username: str
    password: str
    incidents: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    _faults: StatusFaults = field(default_factory=StatusFaults)

    def fail_next(self, count: int = 1, *, status: int = 429, retry_after: int = 1) -> None:
        """Answer the next `count` requests with `status` (429 carries ``Retry-After``)."""
        self._faults.add(count, status, retry_after)


STATE = web.AppKey("servicenow_state", ServiceNowState)


def _failure(status: int, message: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests += 1
    if (fault := state._faults.take()) is not None:
        if fault.status == 429:
            reset = int(utcnow().timestamp()) + fault.retry_after
            return _failure(
                429,
                "Rate limit exceeded",
                "The rate limit rule for this user has been exceeded.",
                {
                    "Retry-After": str(fault.retry_after),
                    "X-RateLimit-Limit": "100",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                },
            )
        return _failure(fault.status, "Internal Server Error", "The instance could not process the request.")
    expected = base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
    if request.headers.get("Authorization") != f"Basic {expected}":
        return _failure(401, "User Not Authenticated", "Required to provide Auth information")
    response: web.StreamResponse = await handler(request)
    return response


def _conditions(query: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in query.split("^"):
        name, equals, value = part.partition("=")
        if part and equals:
            pairs.append((name.strip(), value))
    return pairs


async def _list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    conditions = _conditions(request.query.get("sysparm_query", ""))
    try:
        limit = int(request.query.get("sysparm_limit", "10000"))
    except ValueError:
        return _failure(400, "Invalid sysparm_limit", "sysparm_limit must be a number")
    fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
    found = [r for r in state.incidents if all(r.get(name, "") == value for name, value in conditions)][:limit]
    return web.json_response({"result": [{k: r.get(k, "") for k in fields} if fields else r for r in found]})


async def _insert(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
    if not isinstance(body, dict):
        return _failure(400, "Exception while reading request", "The payload must be a JSON object.")
    if not str(body.get("short_description") or "").strip():
        return _failure(
            403, "Operation Failed", "Data Policy Exception: The following fields are mandatory: Short description"
        )
    now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
    record = {str(k): "" if v is None else str(v) for k, v in body.items()}
    record.update(
        sys_id=uuid.uuid4().hex,
        number=f"INC{10001 + len(state.incidents):07d}",
        state=record.get("state") or "1",
        sys_created_on=now,
        sys_updated_on=now,
        sys_created_by=state.username,
    )
    state.incidents.append(record)
    location = f"{request.scheme}://{request.host}/api/now/table/incident/{record['sys_id']}"
    return web.json_response({"result": record}, status=201, headers={"Location": location})


async def _get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    for record in state.incidents:
        if record["sys_id"] == request.match_info["sys_id"]:
            return web.json_response({"result": record})
    return _failure(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def create_app(state: ServiceNowState) -> web.Application:
    """The simulator as an aiohttp application."""
    app = web.Application(middlewares=[_guard])
    app[STATE] = state
    app.router.add_get("/api/now/table/incident", _list)
    app.router.add_post("/api/now/table/incident", _insert)
    app.router.add_get("/api/now/table/incident/{sys_id}", _get)
    return app
