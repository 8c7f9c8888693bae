"""The HTTP listener of a detection worker or a playbook runner: /healthz, /readyz and /metrics only, on
`server.host`:`server.port` (receivers serve the whole application there)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from custodes.config import ServerSettings
from custodes.errors import ConfigError
from custodes.server.connections import ConnectionLimits, limits_key, listening
from custodes.server.context import metrics_key
from custodes.server.metrics import CONTENT_TYPE_LATEST, Metrics
from custodes.server.responses import error, json_response
from custodes.store import Store

Readiness = Callable[[], Awaitable[str | None]]
"""Why the process is not ready, or None when it is."""
readiness_key: web.AppKey[Readiness] = web.AppKey("readiness")


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process serves requests."""
    return json_response({"status": "ok"})


async def store_unready(store: Store) -> str | None:
    """Why the store does not answer `SELECT 1`, or None when it does."""
    try:
        async with store.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (OSError, SQLAlchemyError) as exc:
        return f"the store does not answer: {type(exc).__name__}"
    return None


async def _readyz(request: web.Request) -> web.Response:
    reason = await request.app[readiness_key]()
    if reason is not None:
        return error(503, "not_ready", reason)
    return json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[metrics_key].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@asynccontextmanager
async def listening_on(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """`listening`, with a port that cannot be bound reported as a configuration error naming it."""
    async with AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(listening(app, host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="choose another port with --port or server.port",
            ) from None
        yield url


@asynccontextmanager
async def health_serving(settings: ServerSettings, metrics: Metrics, ready: Readiness) -> AsyncIterator[str]:
    """Serve /healthz, /readyz (`ready`) and /metrics (`metrics`) on the server's host and port; yield the URL."""
    from custodes.server.app import observe

    app = web.Application(middlewares=[observe])
    app[limits_key] = ConnectionLimits(settings)
    app[readiness_key] = ready
    app[metrics_key] = metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    async with listening_on(app, settings.host, settings.port) as url:
        yield url
