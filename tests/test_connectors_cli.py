"""`custodes connectors poll|status|start|stop` as real processes: one round of any kind (CloudTrail SQS from
moto included), and every failure as one line with what to check, never a traceback."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path
from typing import Any

import orjson

from conftest import ROOT
from custodes.sandbox import github, google
from custodes.sandbox.server import running
from test_serve_live import sqs_bucket

CUSTODES = str(ROOT / ".venv" / "bin" / "custodes")


async def cli(*args: str, env: dict[str, str] | None = None, expect: int = 0) -> str:
    process = await asyncio.create_subprocess_exec(
        CUSTODES,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    out, err = await process.communicate()
    assert process.returncode == expect, (out + err).decode()
    return (out if expect == 0 else err).decode()


def config(tmp_path: Path, connectors: dict[str, Any]) -> str:
    (tmp_path / "empty").mkdir(exist_ok=True)
    path = tmp_path / "custodes.yaml"
    path.write_bytes(
        orjson.dumps(
            {
                "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"},
                "detection": {"rules": [str(tmp_path / "empty")]},
                "playbooks": {"paths": [str(tmp_path / "empty")]},
                "connectors": connectors,
            }
        )
    )
    return str(path)


async def test_poll_drains_a_cloudtrail_queue_once_then_finds_nothing(tmp_path: Path, moto_url: str) -> None:
    s3, bucket, queue = sqs_bucket(moto_url, f"cli-{os.getpid()}")
    records = [{"eventID": f"q{n}", "eventTime": "2026-12-01T10:00:00Z", "eventName": "GetObject"} for n in range(5)]
    key = "AWSLogs/1/CloudTrail/us-east-1/2026/12/01/1_CloudTrail_us-east-1_20261201T1000Z_a.json.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(orjson.dumps({"Records": records})))
    path = config(
        tmp_path,
        {
            "trail": {
                "kind": "cloudtrail_sqs",
                "credentials": {"access_key_id": "env:K", "secret_access_key": "env:K"},
                "options": {"endpoint_url": moto_url, "queue_url": queue, "wait_seconds": 0},
            }
        },
    )
    env = {"K": "testing"}
    first = orjson.loads(await cli("connectors", "poll", "trail", "-c", path, "--json", env=env))
    assert first == [{"connector": "trail", "received": 5, "stored": 5, "duplicates": 0, "new_findings": 0}]
    again = orjson.loads(await cli("connectors", "poll", "trail", "-c", path, "--json", env=env))
    assert again[0]["received"] == 0
    [row] = orjson.loads(await cli("connectors", "status", "trail", "-c", path, "--json", env=env))
    assert row["events_total"] == 5 and row["last_error"] is None


async def test_a_refused_token_is_one_line_naming_the_credential(tmp_path: Path) -> None:
    async with (
        running(github.create_app(github.GitHubState())) as gh,
        running(google.create_app(google.GoogleState())) as gws,
    ):
        retry = {"attempts": 1, "backoff": 0.01}
        path = config(
            tmp_path,
            {
                "gh": {
                    "kind": "github",
                    "credentials": {"token": "env:BAD"},
                    "options": {"org": "example-org", "base_url": gh, "retry": retry},
                },
                "gws": {
                    "kind": "google_workspace",
                    "credentials": {"token": "env:BAD"},
                    "options": {"base_url": gws, "applications": ["login"], "retry": retry},
                },
            },
        )
        env = {"BAD": "wrong-token"}
        for args in (
            ("connectors", "poll", "gh", "-c", path),
            ("connectors", "backfill", "gws", "--from", "2026-12-01", "--to", "2026-12-02", "-c", path),
        ):
            err = await cli(*args, env=env, expect=2)
            lines = err.strip().splitlines()
            assert len(lines) == 2 and "HTTP 401" in lines[0] and "Traceback" not in err, err
            assert lines[0].startswith("error: ") and "wrong-token" not in err
            name = args[2]
            assert f"check connectors.{name}.credentials" in lines[1]


async def test_start_stop_without_a_running_service_and_unknown_names(tmp_path: Path) -> None:
    path = config(tmp_path, {"sudo": {"kind": "file_tail", "options": {"path": "/nonexistent", "parser": "sudo"}}})
    env = {"TOKEN": "x"}
    err = await cli("connectors", "stop", "sudo", "-c", path, "--url", "http://127.0.0.1:9", "--token", "env:TOKEN",
                    env=env, expect=2)  # fmt: skip
    assert err.startswith("error: cannot reach custodes serve at http://127.0.0.1:9") and "--url" in err
    err = await cli("connectors", "status", "nope", "-c", path, expect=2)
    assert "unknown connector 'nope' (configured under connectors: sudo)" in err
    err = await cli("connectors", "start", "sudo", "-c", path, "--token", "env:UNSET_TOKEN_VAR", expect=2)
    assert "--token" in err and "UNSET_TOKEN_VAR" in err
