"""Connection bounds over raw sockets: idle, slow-header and slow-body connections closed with one log line, a
cap on open connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from custodes.config import DatabaseSettings, Settings
from custodes.server.serve import serving
from custodes.services import Services

TOKEN = "api-token-for-security-tests"


@pytest.fixture
async def guarded(database: DatabaseSettings, tmp_path: Path) -> AsyncIterator[str]:
    """A server with short deadlines and room for three connections."""
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "server": {
                "api_tokens": [{"name": "ann", "token": "env:T_ADMIN", "role": "admin"}],
                "max_connections": 3,
                "idle_timeout_seconds": 0.5,
                "header_timeout_seconds": 0.5,
                "body_timeout_seconds": 0.5,
            },
        },
        context={"environ": {"T_ADMIN": TOKEN}},
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def closed_by_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes = b"") -> bytes:
    """Everything the server sends until it closes the connection, sending `trickle` a byte at a time meanwhile;
    fails after 10 s (the deadlines under test are 0.5 s)."""

    async def feed() -> None:
        for byte in trickle:
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))

    feeding = asyncio.create_task(feed())
    try:
        received = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    except ConnectionResetError:
        return received
    finally:
        feeding.cancel()
        writer.close()


async def test_idle_slow_header_and_slow_body_connections_are_closed(
    guarded: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    idle = await connect(guarded)
    assert await closed_by_server(*idle) == b""
    slow_header = await connect(guarded)
    slow_header[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert await closed_by_server(*slow_header, trickle=b"X-Slow: " + b"a" * 100) == b""
    slow_body = await connect(guarded)
    head = f"POST /api/playbooks/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    slow_body[1].write(head.encode() + b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{")
    assert await closed_by_server(*slow_body, trickle=b'"yaml": "' + b"a" * 100) == b""
    # a prompt request on a kept-alive connection is served, then the connection idles out
    prompt = await connect(guarded)
    prompt[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await closed_by_server(*prompt)).startswith(b"HTTP/1.1 200 OK")
    dropped = [r.getMessage() for r in caplog.records if r.name == "custodes.server.connections"]
    assert dropped == [
        "connection closed: idle",
        "connection closed: request headers not complete in time",
        "connection closed: request body not complete in time",
        "connection closed: idle",
    ]
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


async def test_connections_over_the_cap_are_refused_with_503(guarded: str, caplog: pytest.LogCaptureFixture) -> None:
    held = [await connect(guarded) for _ in range(3)]
    for _, writer in held:  # each keeps its connection busy: headers under way (0.5 s) ...
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        await writer.drain()
    refused = await connect(guarded)
    assert (await closed_by_server(*refused)).startswith(b"HTTP/1.1 503 Service Unavailable")
    assert "connection refused: 3 connections open (server.max_connections)" in caplog.text
    for connection in held:  # ... until the server closes them, which frees room again
        await closed_by_server(*connection)
    again = await connect(guarded)
    again[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await closed_by_server(*again)).startswith(b"HTTP/1.1 200 OK")
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (b"GET /healthz?" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n", "Got more than 65536 bytes"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", "Content-Length"),
        (
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx",
            "content-encoding",
        ),
    ],
)
async def test_a_request_that_does_not_parse_is_one_log_line(
    guarded: str, caplog: pytest.LogCaptureFixture, request_bytes: bytes, why: str
) -> None:
    """aiohttp once logged each at error level with a traceback: anyone could fill the logs with them."""
    caplog.set_level("INFO")
    reader, writer = await connect(guarded)
    writer.write(request_bytes)
    assert (await closed_by_server(reader, writer)).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(refused) == 1 and refused[0].levelname == "INFO" and refused[0].exc_info is None
    assert refused[0].getMessage().startswith("request refused from 127.0.0.1: 400 ") and why in refused[0].getMessage()
