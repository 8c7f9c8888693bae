"""Run a simulator (any aiohttp application) on loopback for the demo and the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def running(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on `host` (an ephemeral port unless `port` is given); yield its base URL, then stop it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        authority = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{authority}:{bound_port}"
    finally:
        await runner.cleanup()
