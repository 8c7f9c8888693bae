"""JSON responses and errors in one shape: {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from custodes.model import json_bytes
from custodes.redaction import redact


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """An application/json response (`model.json_bytes`: orjson, else an encoder for what orjson refuses)."""
    return web.Response(body=json_bytes(data), status=status, content_type="application/json", headers=headers)


def error(
    status: int, code: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON error response (secrets in the message masked)."""
    body: dict[str, Any] = {"code": code, "message": redact(message)}
    if field is not None:
        body["field"] = field
    return json_response({"error": body}, status=status, headers=headers)
