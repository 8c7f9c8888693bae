"""Faults matched by method and path prefix, for simulators whose one operation spans several endpoints
(an Elasticsearch sweep opens a PIT, searches, closes it; a CloudTrail poll talks to SQS and S3).

A fault is an error status (with ``Retry-After``), a slow answer or a dropped connection; faults fire in
order of injection. A simulator renders the error body in its vendor's own shape through `render`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[["Fault", web.Request], web.StreamResponse]
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("proxy_session", aiohttp.ClientSession)


@dataclass(slots=True)
class Fault:
    """One injected failure: `status` (429 or 5xx), or `drop` (close the connection unanswered), or `delay`
    seconds before answering normally (to trip client timeouts); for requests whose path starts with `path`."""

    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    delay: float = 0.0
    path: str = "/"
    method: str | None = None
    times: int = 1

    def matches(self, request: web.Request) -> bool:
        """Whether this fault applies to `request`."""
        same_method = self.method is None or self.method.upper() == request.method
        return same_method and request.path.startswith(self.path)


@dataclass(slots=True)
class Faults:
    """Pending faults, consumed in order of injection, and how many fired."""

    pending: list[Fault] = field(default_factory=list)
    fired: int = 0

    def add(self, fault: Fault) -> None:
        """Queue `fault` for the next `fault.times` matching requests."""
        if fault.status is not None and not (fault.status == 429 or fault.status >= 500):
            raise ValueError("an injected status is 429 or 5xx")
        if fault.times < 1:
            raise ValueError("a fault fires at least once")
        self.pending.append(fault)

    def take(self, request: web.Request) -> Fault | None:
        """The first pending fault matching `request`, counting one use of it."""
        for fault in self.pending:
            if fault.matches(request):
                fault.times -= 1
                if fault.times == 0:
                    self.pending.remove(fault)
                self.fired += 1
                return fault
        return None


def middleware(faults: Faults, render: Render) -> Middleware:
    """An aiohttp middleware applying `faults`; `render` builds the vendor's error response for a status."""

    @web.middleware
    async def apply(request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = faults.take(request)
        if fault is None:
            return await handler(request)
        if fault.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if fault.delay:
            await request.read()
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return await handler(request)
        response = render(fault, request)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    return apply


def proxy_app(upstream: str, faults: Faults, render: Render) -> web.Application:
    """A reverse proxy to `upstream` (a simulator or moto server) that injects `faults` on the way.

    Requests and responses pass through unchanged (method, path, query, headers, body).
    """
    hop = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {key: value for key, value in request.headers.items() if key.lower() not in hop}
        session: aiohttp.ClientSession = request.app[_SESSION]
        async with session.request(
            request.method,
            upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            auto_decompress=False,
        ) as answer:
            payload = await answer.read()
            kept = {key: value for key, value in answer.headers.items() if key.lower() not in hop}
            return web.Response(status=answer.status, headers=kept, body=payload)

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        app[_SESSION] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[_SESSION].close()

    app = web.Application(middlewares=[middleware(faults, render)], client_max_size=1 << 30)
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
