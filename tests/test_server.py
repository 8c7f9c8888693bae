"""The HTTP service over real loopback HTTP: health, signed generic webhook, findings API."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import raw_request
from custodes.config import DatabaseSettings, Settings
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.server.serve import serving, settle_garbage_collector
from custodes.services import Services

ROOT = Path(__file__).resolve().parents[1]
SECRET = "webhook-secret-for-tests"
TOKEN = "api-token-for-tests"


def okta_event(uuid: str, event_type: str = "user.mfa.factor.deactivate") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "published": "2026-11-19T02:03:40.077Z",
        "eventType": event_type,
        "actor": {"alternateId": "alice@example.com", "type": "User"},
        "outcome": {"result": "SUCCESS"},
        "client": {"ipAddress": "185.220.101.4"},
    }


@asynccontextmanager
async def serve(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **sections: Any
) -> AsyncIterator[tuple[str, Services]]:
    """The service on a loopback port with the generic webhook and an analyst token; `sections` add settings."""
    monkeypatch.setenv("T_SECRET", SECRET)
    monkeypatch.setenv("T_TOKEN", TOKEN)
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(ROOT / "detections" / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "webhooks": {
                "generic": {
                    "kind": "generic",
                    "source": "okta",
                    "auth": {"scheme": "hmac", "secret": "env:T_SECRET", "tolerance_seconds": 300},
                }
            },
            "server": {
                "max_body_bytes": 4096,
                "max_json_depth": 8,
                "api_tokens": [{"name": "analyst", "token": "env:T_TOKEN", "role": "analyst"}],
            },
            **sections,
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


@pytest.fixture
async def server(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    async with serve(database, tmp_path, monkeypatch) as served:
        yield served


async def post(
    url: str,
    body: bytes,
    *,
    secret: str = SECRET,
    stamp: int | None = None,
    content_type: str = "application/json",
    path: str = "/webhooks/generic",
) -> tuple[int, dict[str, Any]]:
    sent = str(int(time.time()) if stamp is None else stamp)
    headers = {"Content-Type": content_type, TIMESTAMP_HEADER: sent, SIGNATURE_HEADER: sign(secret, sent, body)}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}{path}", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def get(url: str, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}", headers=headers) as response:
        return response.status, await response.json()


async def test_health(server: tuple[str, Services]) -> None:
    status, body = await get(server[0], "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})


async def test_signed_events_are_stored_and_detected(server: tuple[str, Services]) -> None:
    url, services = server
    status, body = await post(url, orjson.dumps([okta_event("u1"), okta_event("u2", "user.session.start")]))
    assert status == 202 and body["stored"] == 2 and len(body["findings"]) == 1
    status, again = await post(url, orjson.dumps(okta_event("u1")))
    assert status == 202 and again["stored"] == 0 and again["duplicates"] == 1
    async with services.store.transaction() as tx:
        assert await tx.count_events() == 2
    status, listed = await get(url, "/api/findings")
    assert status == 200 and [f["title"] for f in listed["findings"]] == ["Okta MFA Factor Removed or Reset"]
    assert listed["findings"][0]["entity"].startswith("p-")


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"secret": "wrong"}, 401, "unauthorized"),
        ({"stamp": 1_000_000_000}, 401, "unauthorized"),
        ({"content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"path": "/webhooks/nope"}, 404, "unknown_receiver"),
    ],
)
async def test_refusals(server: tuple[str, Services], change: dict[str, Any], status: int, code: str) -> None:
    got, body = await post(server[0], orjson.dumps(okta_event("u1")), **change)
    assert (got, body["error"]["code"]) == (status, code)
    async with server[1].store.transaction() as tx:
        assert await tx.count_events() == 0


async def test_bad_bodies_get_clear_4xx_and_the_server_keeps_serving(server: tuple[str, Services]) -> None:
    url, _ = server
    cases = {
        b'{"uuid": "x",': (400, "invalid_json"),
        b"[1, 2]": (400, "invalid_record"),
        orjson.dumps({"a": [[[[[[[[[["deep"]]]]]]]]]]}): (400, "too_deep"),
        orjson.dumps({"n": "[[[[[[[[[[", "a": [[[[[[["eight", "deep"]]]]]]]}): (202, None),
        orjson.dumps({"pad": "x" * 5000}): (413, "body_too_large"),
    }
    for body, (status, code) in cases.items():
        got, answer = await post(url, body)
        assert (got, answer.get("error", {}).get("code")) == (status, code), body[:40]
    async with aiohttp.ClientSession() as http, http.post(f"{url}/webhooks/generic", data=b"{}") as response:
        assert response.status == 415
    status, _ = await get(url, "/healthz", token=None)
    assert status == 200
    status, answer = await post(url, orjson.dumps(okta_event("after")))
    assert status == 202 and answer["stored"] == 1


async def test_missing_headers_and_replays(server: tuple[str, Services]) -> None:
    url, _ = server
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/webhooks/generic", data=b"{}", headers={"Content-Type": "application/json"}) as response,
    ):
        assert response.status == 401
        assert "missing" in (await response.json())["error"]["message"]
    status, body = await post(url, orjson.dumps(okta_event("u1")), stamp=int(time.time()) - 301)
    assert status == 401 and "replay window" in body["error"]["message"]


async def raw_status(url: str, request: bytes) -> bytes:
    """The status code the server answers exact request bytes with (no client normalising the headers)."""
    return (await raw_request(url, request)).split(b" ", 2)[1]


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (b"1" + b"0" * 400, None),  # once an OverflowError comparing it with the clock
        (b"9" * 5000, None),  # more digits than int() converts
        (b"-" + b"1" * 400, None),
        ("\uff11\uff17\uff19\uff16".encode(), None),  # full-width digits: int() takes them, senders never send them
        (b"1_796_000_000", None),
        (None, "sha256=\u00e9".encode()),  # non-ASCII: once a TypeError in compare_digest
        (None, b"sha256=\xff\xfe"),  # not UTF-8
    ],
)
async def test_odd_timestamps_and_signatures_are_401(
    server: tuple[str, Services], timestamp: bytes | None, signature: bytes | None
) -> None:
    stamp = timestamp if timestamp is not None else str(int(time.time())).encode()
    body = orjson.dumps(okta_event("odd"))
    mac = signature if signature is not None else sign(SECRET, stamp.decode(), body).encode()
    request = (
        b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + b"%s: %s\r\n%s: %s\r\n" % (TIMESTAMP_HEADER.encode(), stamp, SIGNATURE_HEADER.encode(), mac)
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert await raw_status(server[0], request) == b"401"
    async with server[1].store.transaction() as tx:
        assert await tx.count_events() == 0


@pytest.mark.parametrize("authorization", [b"Bearer \xff\xfe", b"\xff\xfe", "Bearer \u00e9".encode()])
async def test_a_token_that_is_not_utf8_is_401(server: tuple[str, Services], authorization: bytes) -> None:
    request = b"GET /api/findings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + authorization
    assert await raw_status(server[0], request + b"\r\n\r\n") == b"401"


async def test_findings_api_requires_a_token_and_pages(server: tuple[str, Services]) -> None:
    url, _ = server
    assert (await get(url, "/api/findings", token=None))[0] == 401
    assert (await get(url, "/api/findings", token="nope"))[0] == 401
    events = [okta_event(f"m{i}") for i in range(3)] + [okta_event("t1", "system.api_token.create")]
    events[-1]["actor"]["alternateId"] = "bob@example.com"
    for index, event in enumerate(events[:3]):
        event["actor"]["alternateId"] = f"user{index}@example.com"
    assert (await post(url, orjson.dumps(events)))[0] == 202
    seen: list[str] = []
    cursor = ""
    while True:
        status, page = await get(url, f"/api/findings?limit=3{cursor}")
        assert status == 200
        seen += [f["id"] for f in page["findings"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 4
    status, filtered = await get(url, "/api/findings?min_severity=high")
    assert status == 200 and filtered["findings"] == []
    for query, field in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("min_severity=urgent", "min_severity"),
        ("status=gone", "status"),
    ]:
        status, body = await get(url, f"/api/findings?{query}")
        assert status == 400 and body["error"]["field"] == field, query
    status, body = await get(url, "/api/findings?cursor=unknown")
    assert status == 404 and body["error"]["code"] == "unknown_cursor"


async def test_unknown_routes_are_json_404(server: tuple[str, Services]) -> None:
    status, body = await get(server[0], "/nowhere", token=None)
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_readiness_metrics_and_request_ids(server: tuple[str, Services]) -> None:
    url, _ = server
    status, body = await get(url, "/readyz", token=None)
    assert (status, body) == (200, {"status": "ready"})
    assert (await post(url, orjson.dumps(okta_event("m1"))))[0] == 202
    assert (await post(url, orjson.dumps(okta_event("m1"))))[0] == 202
    assert (await post(url, b"{}", secret="wrong"))[0] == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz", headers={"X-Request-Id": "trace-42"}) as response:
            assert response.headers["X-Request-Id"] == "trace-42"
        given = set()
        for _ in range(3):
            async with http.get(f"{url}/healthz") as response:
                given.add(response.headers["X-Request-Id"])
        assert len(given) == 3 and all(len(ident) == 24 for ident in given)
        async with http.get(f"{url}/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            text = await response.text()
    assert 'custodes_ingest_records_total{outcome="stored",receiver="generic"} 1.0' in text
    assert 'custodes_ingest_records_total{outcome="duplicate",receiver="generic"} 1.0' in text
    assert 'custodes_http_requests_total{route="/webhooks/{name}",status="401"} 1.0' in text
    assert 'custodes_findings_total{detector="sigma",severity="medium"} 1.0' in text
    assert "custodes_detection_latency_seconds_count 2.0" in text
    assert "custodes_ingest_queue_depth 0.0" in text
    assert "custodes_ingest_batch_records_count 2.0" in text and "custodes_ingest_batch_records_sum 2.0" in text


def test_logs_are_json_with_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from custodes import logs

    logs.configure()
    token = logs.request_id.set("req-7")
    try:
        logging.getLogger("custodes.test").warning("refused", extra={"status": 401})
    finally:
        logs.request_id.reset(token)
        logging.getLogger().handlers.clear()
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "refused" and line["request_id"] == "req-7" and line["status"] == 401
    assert line["level"] == "warning" and line["time"].endswith("Z")


def test_settling_the_garbage_collector_freezes_what_is_loaded() -> None:
    threshold = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (10_000, threshold[1], 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_the_metrics_say_which_directory_scoring_holds_and_when_an_export_could_not_be_read(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from custodes.detections.scoring import service as service_module

    monkeypatch.setattr(service_module, "DIRECTORY_REFRESH_SECONDS", 0.0)
    people = tmp_path / "people.json"
    people.write_bytes(orjson.dumps([{"id": "alice@example.com"}, {"id": "bob@example.com"}]))
    scoring = {"directory": str(people), "pseudonym_key_file": str(tmp_path / "pseudonym.key")}

    async def scraped(url: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
            return await response.text()

    async with serve(database, tmp_path, monkeypatch, scoring=scoring) as (url, _):
        before = await scraped(url)
        people.write_text('[{"id": "alice@example.com"}, ')  # an export cut short
        assert (await post(url, orjson.dumps(okta_event("d1", "user.session.start"))))[0] == 202
        after = await scraped(url)
    assert "custodes_directory_people 2.0" in before and "custodes_directory_change_unread 0.0" in before
    assert "custodes_directory_failed_reads_total 0.0" in before
    assert "custodes_directory_people 2.0" in after, "the directory read before is kept"
    assert "custodes_directory_change_unread 1.0" in after and "custodes_directory_failed_reads_total 1.0" in after
    assert "custodes_directory_read_timestamp_seconds " in after
