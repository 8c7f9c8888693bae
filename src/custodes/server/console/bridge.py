"""The console calls the REST API's own handlers in process: the same role checks, validation, pseudonymisation
and audit as over HTTP, with the signed-in token as the caller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from custodes.server.console.session import Session
from custodes.server.context import services_key
from custodes.server.endpoints import ENDPOINTS, ApiError, Call, Endpoint, Handler, NoInput, RevealQuery, allowed


def spec_of(handler: Handler) -> Endpoint:
    """The endpoint declaration of an API handler."""
    return next(spec for spec in ENDPOINTS if spec.handler is handler)


def may(session: Session, handler: Handler) -> bool:
    """Whether the signed-in role may call this API operation (drives which buttons a page shows)."""
    return allowed(session.role, spec_of(handler).role)


def _field_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return ApiError(400, "invalid_input", f"{where}: {first['msg']}", field=where)


async def invoke(
    request: web.Request,
    session: Session,
    handler: Handler,
    *,
    query: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
) -> Any:
    """Call an API handler as the signed-in token; ApiError (403 for a role that may not, 400 naming the field
    for bad input, or the handler's own) when it refuses."""
    spec = spec_of(handler)
    if not allowed(session.role, spec.role):
        raise ApiError(403, "forbidden", f"this needs the {spec.role} role; you are signed in as {session.role}")
    try:
        parsed_query = spec.query.model_validate(dict(query or {}))
        parsed_body = spec.body.model_validate(dict(body or {})) if spec.body is not None else NoInput()
    except ValidationError as exc:
        raise _field_error(exc) from None
    call = Call(request, request.app[services_key], session.token_name, session.role, parsed_query, parsed_body)
    return await handler(call)


def call_for(request: web.Request, session: Session) -> Call[RevealQuery, NoInput]:
    """A call context for the console's own read queries: it shows people as the API would to this role."""
    return Call(request, request.app[services_key], session.token_name, session.role, RevealQuery(), NoInput())
