"""Bounds on connections: a cap on open ones, and deadlines for an idle connection, for a request's headers and
for its body. A connection that misses one is closed with one log line (never a traceback); one over the cap is
answered 503 and closed.

aiohttp parses and dispatches; this module wraps each connection's protocol to see it open, receive bytes and
close, and the `guard` middleware marks when a request's headers are complete (its handler starts) and when its
body is complete (the payload's end of file).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Middleware

from custodes.config import ServerSettings

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"


class ConnectionLimits:
    """The open connections of one listening server, and the deadlines each must meet."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.open: dict[asyncio.BaseTransport, Guarded] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that wraps aiohttp's."""
        return lambda: Guarded(self, inner())

    def drop(self, transport: asyncio.Transport, why: str) -> None:
        """Close a connection that missed a deadline, with one log line."""
        peer = transport.get_extra_info("peername")
        log.info("connection closed: %s", why, extra={"peer": str(peer[0]) if peer else None})
        transport.abort()


class Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the deadlines: `idle_timeout_seconds` with no request
    under way and no byte of a new one; `header_timeout_seconds` from a request's first byte to its complete
    headers; `body_timeout_seconds` from complete headers to the body's last byte."""

    def __init__(self, limits: ConnectionLimits, inner: asyncio.Protocol) -> None:
        self.limits = limits
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.busy = False
        self.waiting_headers = False
        self.closed_by_us = False

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        limits = self.limits
        if len(limits.open) >= limits.settings.max_connections:
            peer = transport.get_extra_info("peername")
            log.warning(
                "connection refused: %d connections open (server.max_connections)",
                len(limits.open),
                extra={"peer": str(peer[0]) if peer else None},
            )
            transport.write(BUSY)
            transport.close()
            self.closed_by_us = True
            return
        limits.open[transport] = self
        self.inner.connection_made(transport)
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self.closed_by_us:
            return
        if not self.busy and not self.waiting_headers:
            self.waiting_headers = True
            self._arm(self.limits.settings.header_timeout_seconds, "request headers not complete in time")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.closed_by_us else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.closed_by_us:
            return
        if self.transport is not None:
            self.limits.open.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # request life cycle (from the middleware) -----------------------------------------------------
    def request_started(self, request: web.Request) -> None:
        """Headers are complete: the body, if any and not yet in, must arrive within its deadline."""
        self.busy = True
        self.waiting_headers = False
        self._disarm()
        if request.body_exists and not request.content.is_eof():
            self._arm(self.limits.settings.body_timeout_seconds, "request body not complete in time")
            body_timer = self.timer
            request.content.on_eof(lambda: self._disarm(body_timer))

    def request_finished(self) -> None:
        """The handler returned: the connection idles until the next request's first byte."""
        self.busy = False
        self._idle()

    # timers ----------------------------------------------------------------------------------------
    def _idle(self) -> None:
        self._arm(self.limits.settings.idle_timeout_seconds, "idle")

    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(seconds, self._expire, why)

    def _disarm(self, only: asyncio.TimerHandle | None = None) -> None:
        """Cancel the running deadline (with `only`: if it is still that one)."""
        if self.timer is not None and (only is None or self.timer is only):
            self.timer.cancel()
            self.timer = None

    def _expire(self, why: str) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.limits.drop(self.transport, why)


limits_key = web.AppKey("connection_limits", ConnectionLimits)


@asynccontextmanager
async def listening(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` on host:port (0 picks a free port) with its `limits_key` bounds on every connection; yield the
    base URL, then stop accepting, close every connection and clean up."""
    limits = app[limits_key]
    # aiohttp's own keep-alive close is only a backstop: the guard's deadlines come first, with their log line
    backstop = 2 * limits.settings.idle_timeout_seconds + limits.settings.header_timeout_seconds
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=backstop)
    await runner.setup()
    try:
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(limits.factory(runner.server), host, port)
        try:
            bound_host, bound_port = server.sockets[0].getsockname()[:2]
            authority = f"[{bound_host}]" if ":" in bound_host else bound_host
            yield f"http://{authority}:{bound_port}"
        finally:
            server.close()
    finally:
        await runner.cleanup()
    await server.wait_closed()


def guard_middleware(limits: ConnectionLimits) -> Middleware:
    """The middleware that tells each connection's guard when a request's headers are in and when it is done."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = limits.open.get(request.transport) if request.transport is not None else None
        if connection is None:
            return await handler(request)
        connection.request_started(request)
        try:
            return await handler(request)
        except ConnectionResetError:
            if request.transport is None or request.transport.is_closing():
                # the guard closed the connection (a body too slow): nobody is left to answer
                return web.Response(status=408)
            raise
        finally:
            connection.request_finished()

    return guard
