"""Bounds on connections: a cap on open ones, and deadlines for an idle connection, for a request's headers and
for its body. A connection that misses one is closed with one log line (never a traceback); one over the cap is
answered 503 and closed.

aiohttp parses and dispatches; this module wraps each connection's protocol to see it open, receive bytes and
close, and the application's middleware (`server.app.observe`) tells it when a request's headers are complete (its
handler starts) and when the handler is done; the payload's end of file marks a complete body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from custodes.config import ServerSettings

log = logging.getLogger(__name__)
BODY = "request body not complete in time"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"


class ConnectionLimits:
    """The open connections of one listening server, and the deadlines each must meet: a sweep a few times per
    shortest deadline closes those past theirs (cheaper per request than a timer each)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.open: dict[asyncio.BaseTransport, Guarded] = {}
        self.tick = min(
            1.0,
            max(
                0.02,
                min(settings.idle_timeout_seconds, settings.header_timeout_seconds, settings.body_timeout_seconds) / 5,
            ),
        )
        self._sweeper: asyncio.TimerHandle | None = None

    def request_started(self, request: web.Request) -> Guarded | None:
        """A request's headers are complete (its handler starts): its connection's guard, told so."""
        connection = self.open.get(request.transport) if request.transport is not None else None
        if connection is not None:
            connection.request_started(request)
        return connection

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that wraps aiohttp's."""
        return lambda: Guarded(self, inner())

    def start(self) -> None:
        """Sweep every `tick` seconds until `stop`."""
        self._sweeper = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def stop(self) -> None:
        """Stop sweeping."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for transport, connection in list(self.open.items()):
            if connection.deadline is not None and now >= connection.deadline and not transport.is_closing():
                assert isinstance(transport, asyncio.Transport)
                self.drop(transport, connection.why)
        self._sweeper = loop.call_later(self.tick, self._sweep)

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
        self.deadline: float | None = None
        """When the connection is closed unless a request starts (or its body completes) first (loop time)."""
        self.why = ""
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
            self._arm(self.limits.settings.body_timeout_seconds, BODY)
            request.content.on_eof(lambda: self._disarm(BODY))

    def request_finished(self) -> None:
        """The handler returned: the connection idles until the next request's first byte."""
        self.busy = False
        self._idle()

    # deadlines -------------------------------------------------------------------------------------
    def _idle(self) -> None:
        self._arm(self.limits.settings.idle_timeout_seconds, "idle")

    def _arm(self, seconds: float, why: str) -> None:
        self.deadline, self.why = asyncio.get_running_loop().time() + seconds, why

    def _disarm(self, only: str | None = None) -> None:
        """Clear the deadline (with `only`: if it is still the one for that reason)."""
        if only is None or self.why == only:
            self.deadline = None


limits_key = web.AppKey("connection_limits", ConnectionLimits)


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a line or header over the limits, a bad Content-Length or chunk,
    an unsupported Content-Encoding) as an error with a traceback, once per request anyone can send: this makes
    it one line at info level, naming what was wrong, as the connection guard's own refusals are."""

    def filter(self, record: logging.LogRecord) -> bool:
        problem = record.exc_info[1] if record.exc_info else None
        if isinstance(problem, HttpProcessingError):
            peer = record.getMessage().rpartition(" from ")[2]  # "Error handling request from <peer>"
            record.msg, record.args = "request refused from %s: %s %s", (peer, problem.code, problem.message)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Install `MalformedRequests` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequests) for existing in logger.filters):
        logger.addFilter(MalformedRequests())


@asynccontextmanager
async def listening(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` on host:port (0 picks a free port) with its `limits_key` bounds on every connection; yield the
    base URL, then stop accepting, close every connection and clean up."""
    limits = app[limits_key]
    quiet_malformed_requests()
    # aiohttp's own keep-alive close is only a backstop: the guard's deadlines come first, with their log line
    backstop = 2 * limits.settings.idle_timeout_seconds + limits.settings.header_timeout_seconds
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=backstop)
    await runner.setup()
    try:
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(limits.factory(runner.server), host, port)
        limits.start()
        try:
            bound_host, bound_port = server.sockets[0].getsockname()[:2]
            authority = f"[{bound_host}]" if ":" in bound_host else bound_host
            yield f"http://{authority}:{bound_port}"
        finally:
            limits.stop()
            server.close()
    finally:
        await runner.cleanup()
    await server.wait_closed()
