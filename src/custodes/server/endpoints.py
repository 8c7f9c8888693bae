"""REST endpoints declared once: route, role, typed query/body/response. The declaration drives
authentication, validation (400 naming the field), the audit of every change, and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from custodes.detections.scoring.identity import IdentityResolver
from custodes.detections.scoring.privacy import Pseudonymizer, is_pseudonym
from custodes.detections.scoring.service import current_resolver, entity_for_pseudonym, pseudonymizer_for
from custodes.server.auth import AuthError, token_role
from custodes.server.context import services_key
from custodes.server.limits import json_depth_exceeds
from custodes.server.responses import error, json_response
from custodes.services import Services

ROLES = ("viewer", "analyst", "approver", "admin", "privacy_officer", "legal")
RANK = {"viewer": 0, "privacy_officer": 0, "legal": 0, "analyst": 1, "approver": 2, "admin": 3}
"""Viewer < analyst < approver < admin. The privacy officer and legal read like a viewer; besides admin, the
privacy officer alone may re-identify and legal alone may lift a legal hold."""
SPECIALISTS = ("privacy_officer", "legal")
"""Roles that, besides admin, alone may call the endpoints that need them."""

QueryT = TypeVar("QueryT", bound=BaseModel)
BodyT = TypeVar("BodyT", bound=BaseModel)


class Model(BaseModel):
    """Base of API models: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


MAX_SEQ = 2**63 - 1
"""The largest sequence number the store can hold (a signed 64-bit integer)."""


def _iso_datetime(value: object) -> object:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-19T02:00:00Z") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime), Field(json_schema_extra={"format": "date-time"})]
"""A date-time given as ISO 8601 text (naive means UTC); numbers are not taken for timestamps."""


class NoInput(Model):
    """An endpoint without query parameters or body."""


class RevealQuery(Model):
    """Query parameters of endpoints that show people: pseudonyms unless a privacy role reveals names."""

    reveal: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="show real names, for this reason (privacy officer or admin; audited with the reason)",
    )


Names = Callable[[str | None], str | None]


class ApiError(Exception):
    """A request that cannot be served as asked; becomes a JSON error response."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


@dataclass(slots=True)
class Call(Generic[QueryT, BodyT]):
    """What a handler receives: the caller, the services, and the validated query and body."""

    request: web.Request
    services: Services
    caller: str
    role: str
    query: QueryT
    body: BodyT

    revealed: bool | None = None

    async def revealing(self) -> bool:
        """Whether this call shows real names: asked with `reveal=<reason>` by a re-identification role (audited,
        allowed or not, once per call; 403 when the role may not)."""
        if self.revealed is None:
            self.revealed = False
            scoring = self.services.settings.scoring
            if isinstance(self.query, RevealQuery) and self.query.reveal is not None:
                reason = self.query.reveal
                if self.role not in scoring.reidentify_roles:
                    await self.audit("api.reidentify", self.request.path, {"allowed": False, "reason": reason})
                    raise ApiError(
                        403,
                        "forbidden",
                        f"revealing names needs one of the roles {', '.join(scoring.reidentify_roles)}; "
                        f"your token has {self.role}",
                    )
                await self.audit("api.reidentify", self.request.path, {"allowed": True, "reason": reason})
                self.revealed = True
        return self.revealed

    async def people(self) -> Names:
        """How this call shows people: pseudonyms by default; real names when a privacy role asks, with a
        reason, for this call (the re-identification is audited)."""
        if not self.services.settings.scoring.pseudonymise or await self.revealing():
            return lambda name: name
        pseudonymizer = await _pseudonymizer(self.services)
        return lambda name: name if name is None or is_pseudonym(name) else pseudonymizer(name)

    async def person(self, name: str) -> str:
        """The stored name a request refers to: the known entity a pseudonym stands for (looked up by the
        pseudonym stored beside each entity), or a real name, which links the name to its pseudonym and so needs
        this call to reveal names (403 `reveal_required` otherwise) and is audited (`api.lookup`)."""
        if not self.services.settings.scoring.pseudonymise:
            return name
        if is_pseudonym(name):
            return await entity_for_pseudonym(self.services.store, await _pseudonymizer(self.services), name) or name
        if not await self.revealing():
            raise ApiError(
                403,
                "reveal_required",
                "looking a person up by name links the name to their pseudonym: use the pseudonym, or pass "
                "reveal=<reason> with a re-identification role (audited)",
            )
        await self.audit("api.lookup", name, {"path": self.request.path})
        return name

    async def resolver(self) -> IdentityResolver:
        """The directory's people and how names map to entity keys (`current_resolver`)."""
        services = self.services
        return await current_resolver(services.settings.scoring, services.store, services.pipeline.scoring)

    async def audit(self, action: str, subject: str | None, details: dict[str, Any]) -> None:
        """Record a change made through the API in the hash-chained audit log."""
        async with self.services.store.transaction() as tx:
            await tx.audit(f"api:{self.caller}", action, subject, {"role": self.role, **details})


Handler = Callable[[Call[Any, Any]], Awaitable[Any]]


async def _pseudonymizer(services: Services) -> Pseudonymizer:
    scoring = services.pipeline.scoring
    if scoring is not None:
        return scoring.pseudonymizer
    return await pseudonymizer_for(services.settings.scoring, services.store)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One REST operation."""

    method: str
    path: str
    role: str
    summary: str
    handler: Handler
    query: type[BaseModel] = NoInput
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    tags: tuple[str, ...] = field(default_factory=tuple)
    errors: tuple[tuple[int, str], ...] = ()
    """Further error statuses the handler answers (status, when), documented in the OpenAPI document."""
    media: tuple[str, ...] = ()
    """Media types other than JSON that the handler may answer with, documented in the OpenAPI document."""

    @property
    def operation_id(self) -> str:
        """A stable operation id (the handler's name)."""
        return self.handler.__name__


ENDPOINTS: list[Endpoint] = []


def endpoint(
    method: str,
    path: str,
    *,
    role: str,
    summary: str,
    query: type[BaseModel] = NoInput,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    tags: tuple[str, ...] = (),
    errors: dict[int, str] | None = None,
    media: tuple[str, ...] = (),
) -> Callable[[Handler], Handler]:
    """Declare a REST operation; `role` is the least role allowed to call it; `errors` documents further error
    statuses it may answer (e.g. `{409: "already decided"}`); `media` the media types besides JSON it answers."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}")
    documented = tuple(sorted((errors or {}).items()))

    def register(handler: Handler) -> Handler:
        ENDPOINTS.append(
            Endpoint(method, path, role, summary, handler, query, body, response, status, tags, documented, media)
        )
        return handler

    return register


def allowed(role: str, needed: str) -> bool:
    """Whether `role` may call an endpoint that needs `needed`."""
    if needed in SPECIALISTS:
        return role in {needed, "admin"}
    return RANK[role] >= RANK[needed]


def _validation_error(exc: ValidationError, where: str) -> ApiError:
    first = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in first["loc"]) or where
    message = "is required" if first["type"] == "missing" else str(first["msg"])
    if first["type"] == "extra_forbidden":
        message = "is not a known field"
    return ApiError(400, "invalid_parameter" if where == "query" else "invalid_body", f"{path}: {message}", field=path)


async def _body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    body = await request.read()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"invalid JSON at byte {exc.pos}: {exc.msg}") from None
    services = request.app[services_key]
    if json_depth_exceeds(body, document, services.settings.server.max_json_depth):
        raise ApiError(400, "too_deep", "JSON nests too deeply")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise _validation_error(exc, "body") from None


def handler_for(spec: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler that authenticates, validates, calls and serialises one endpoint."""

    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[services_key]
        try:
            caller, role = token_role(services.settings.server.api_tokens, request.headers.get("Authorization"))
        except AuthError as exc:
            return error(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
        if not allowed(role, spec.role):
            return error(403, "forbidden", f"this needs the {spec.role} role; your token has {role}")
        try:
            try:
                query = spec.query.model_validate(dict(request.query))
            except ValidationError as exc:
                raise _validation_error(exc, "query") from None
            body = await _body(request, spec.body) if spec.body is not None else NoInput()
            result = await spec.handler(Call(request, services, caller, role, query, body))
        except ApiError as exc:
            return error(exc.status, exc.code, str(exc), field=exc.field)
        if isinstance(result, web.StreamResponse):
            return result
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        return json_response(data, status=spec.status)

    handle.__name__ = spec.operation_id
    return handle


NO_NUL = "^[^\\x00]*$"
"""Parameters never hold a NUL character (the server answers 400 invalid_parameter)."""


def _no_nul(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter schema whose free strings exclude NUL."""
    if schema.get("type") == "string" and not {"pattern", "enum", "format", "const"} & schema.keys():
        return {**schema, "pattern": NO_NUL}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return {**schema, key: [_no_nul(item) for item in schema[key]]}
    return schema


def openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared endpoint."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
            }
        },
    }
    for spec in ENDPOINTS:
        parameters = [
            {
                "name": info.alias or name,
                "in": "query",
                "required": info.is_required(),
                "schema": _no_nul(spec.query.model_json_schema()["properties"][info.alias or name]),
                "description": info.description or "",
            }
            for name, info in spec.query.model_fields.items()
        ]
        parameters += [
            {"name": part[1:-1], "in": "path", "required": True, "schema": _no_nul({"type": "string"})}
            for part in spec.path.split("/")
            if part.startswith("{")
        ]
        content = {"application/json": {"schema": ref(spec.response)}} if spec.response else {}
        content.update({media: {"schema": {"type": "string", "format": "binary"}} for media in spec.media})
        responses: dict[str, Any] = {
            str(spec.status): {"description": "OK", **({"content": content} if content else {})},
            "401": {
                "description": "missing or unknown token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "403": {
                "description": f"needs the {spec.role} role",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "400": {
                "description": "invalid parameter or body",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "404": {
                "description": "not found",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        }
        for code, when in spec.errors:
            responses[str(code)] = {
                "description": when,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        operation: dict[str, Any] = {
            "operationId": spec.operation_id,
            "summary": spec.summary,
            "tags": list(spec.tags),
            "parameters": parameters,
            "responses": responses,
            "security": [{"bearer": []}],
            "x-custodes-role": spec.role,
        }
        if spec.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(spec.body)}}}
            responses["415"] = {
                "description": "not JSON",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            responses["413"] = {
                "description": "body over server.max_body_bytes",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    schemas["Error"] = error_schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Custodes API",
            "version": version,
            "description": "Findings, entities, playbook runs and approvals. Bearer tokens carry a role: "
            + ", ".join(ROLES)
            + ".",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def register(app: web.Application) -> None:
    """Add every declared endpoint, and GET /api/openapi.json, to the application."""
    for spec in ENDPOINTS:
        app.router.add_route(spec.method, spec.path, handler_for(spec))
