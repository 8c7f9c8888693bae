"""Security hardening: secrets that must be strong, exact token comparison, YAML without aliases, receivers
whose source exists, approvals by authenticated identity."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner, Result

from conftest import raw_request
from custodes.cli import app
from custodes.config import MIN_SECRET_CHARS, DatabaseSettings, Settings, load_settings
from custodes.errors import ConfigError, CustodesError
from custodes.server.serve import serving
from custodes.services import Services
from custodes.yamlfile import load_yaml

TOKEN = "api-token-for-security-tests"


@pytest.mark.parametrize("value", ["", "   ", "short-secret"])
def test_empty_or_short_secrets_refuse_to_start(tmp_path: Path, value: str) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text(
        "webhooks:\n  hook:\n    kind: generic\n    auth: {scheme: hmac, secret: 'env:HOOK'}\n"
        "server:\n  api_tokens: [{name: ann, token: 'env:TOKEN', role: admin}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"HOOK": value, "TOKEN": value})
    text = str(caught.value)
    assert "webhooks.hook.auth.secret" in text and "server.api_tokens.0.token" in text
    assert f"at least {MIN_SECRET_CHARS} characters" in text
    assert value.strip() == "" or value not in text


@pytest.fixture
async def server(database: DatabaseSettings, tmp_path: Path) -> AsyncIterator[tuple[str, Services]]:
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "server": {"api_tokens": [{"name": "ann", "token": "env:T_ADMIN", "role": "admin"}]},
        },
        context={"environ": {"T_ADMIN": TOKEN}},
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}".encode(), b"200"),
        (f"Bearer  {TOKEN} \t".encode(), b"200"),  # ASCII whitespace around the token is stripped
        (f"Bearer {TOKEN}\u00a0".encode(), b"401"),  # Unicode whitespace is not: the token differs
        ("Bearer \u00a0".encode(), b"401"),
        (b"Bearer ", b"401"),
    ],
)
async def test_tokens_compare_exactly(server: tuple[str, Services], authorization: bytes, status: bytes) -> None:
    request = b"GET /api/findings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + authorization
    response = await raw_request(server[0], request + b"\r\n\r\n")
    assert response.split(b" ", 2)[1] == status, response[:300]


BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


async def test_a_yaml_alias_bomb_is_refused_at_its_first_alias(server: tuple[str, Services]) -> None:
    url, _ = server
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/playbooks/validate",
            json={"yaml": BOMB, "name": "bomb.yml"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["valid"] is False
    assert body["problems"] == [
        {"line": 2, "column": 8, "field": None, "message": "YAML aliases are not allowed (*a): write the value out"}
    ]


def test_configuration_files_refuse_aliases(tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text("server: &s {port: 9000}\nhunts: {paths: [h]}\ndetection: {<<: *s}\n")
    with pytest.raises(CustodesError, match=r"custodes.yaml:3:17: YAML aliases are not allowed \(\*s\)"):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("steps: " + "[" * 100_000 + "]" * 100_000 + "\n", "1:107"),  # once minutes in ruamel's scanner
        ("".join(" " * i + "k:\n" for i in range(3000)), "101:101"),  # once a RecursionError
    ],
)
def test_deeply_nested_yaml_is_refused_where_it_gets_too_deep(tmp_path: Path, text: str, where: str) -> None:
    playbook = tmp_path / "deep.yml"
    playbook.write_text(text)
    result = CliRunner().invoke(app, ["playbook", "validate", str(playbook)])
    assert result.exit_code == 2, result.output
    assert f"deep.yml:{where}: YAML nests deeper than 100 levels" in result.output
    config = tmp_path / "custodes.yaml"
    config.write_text(text)
    with pytest.raises(CustodesError, match=rf"custodes.yaml:{where}: YAML nests deeper than 100 levels"):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("text", "found"), [("", "is empty"), ("- a\n- b\n", "holds a list"), ("text\n", "holds a string")]
)
def test_a_playbook_file_that_is_not_a_mapping_says_so(tmp_path: Path, text: str, found: str) -> None:
    """Once "Input should be a valid dictionary or instance of Playbook"."""
    playbook = tmp_path / "p.yml"
    playbook.write_text(text)
    result = CliRunner().invoke(app, ["playbook", "validate", str(playbook)])
    assert result.exit_code == 2
    assert f"p.yml:1:1: the file {found}; expected a mapping with name, trigger, steps" in result.output


def test_a_playbook_or_hunt_that_is_no_regular_file_is_refused_not_read(tmp_path: Path) -> None:
    """A FIFO named as a playbook, or lying in a playbooks folder, once waited for a writer forever."""
    (tmp_path / "book").mkdir()
    os.mkfifo(tmp_path / "book" / "pipe.yml")
    (tmp_path / "book" / "folder.yml").mkdir()
    for named in (tmp_path / "book" / "pipe.yml", tmp_path / "book"):
        result = CliRunner().invoke(app, ["playbook", "validate", str(named)])
        assert result.exit_code == 2, result.output
        assert "pipe.yml: cannot read file: not a regular file (a folder, a FIFO or a device)" in result.output
    assert "folder.yml: cannot read file: not a regular file" in result.output
    with pytest.raises(CustodesError, match=r"pipe\.yml: cannot read file: not a regular file"):
        load_yaml(tmp_path / "book" / "pipe.yml")


def test_a_graph_receiver_without_its_source_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text("webhooks:\n  graph:\n    kind: graph\n    auth: {scheme: client_state, secret: 'env:STATE'}\n")
    environ = {"STATE": "graph-client-state-0123456789"}
    with pytest.raises(ConfigError, match=r"webhooks.*the graph receiver 'graph' reads its records as source 'graph'"):
        load_settings(config, environ=environ)
    fields = "{id: id, time: subscriptionExpirationDateTime}"
    config.write_text(config.read_text() + f"sources:\n  graph: {{format: generic, fields: {fields}}}\n")
    assert load_settings(config, environ=environ).webhooks["graph"].record_source == "graph"


QUORUM = """\
name: two-keys
trigger: {manual: true}
steps:
  - id: note
    uses: case.note
    with: {case: c1, text: "containing {{ entity }}"}
    approval: {count: 2, expires_after: 3600}
"""
PEOPLE = {"lead1": "lead1-token-0123456789", "lead2": "lead2-token-0123456789", "ann": "ann-token-0123456789"}


async def test_one_person_is_one_approver_through_the_api_and_the_cli(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    """A token's name is the person, whether the API (`api:lead1`) or the CLI (`lead1`) records it: the requester
    cannot approve through the other door, nor one approver count twice towards a quorum."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "two.yml").write_text(QUORUM)
    config = tmp_path / "custodes.yaml"
    tokens = [{"name": name, "token": f"env:T_{name.upper()}", "role": "approver"} for name in PEOPLE]
    config.write_text(
        orjson.dumps(
            {
                "database": database.model_dump(exclude_none=True),
                "detection": {"rules": []},
                "playbooks": {"paths": [str(tmp_path / "playbooks")]},
                "server": {"api_tokens": tokens},
            }
        ).decode()
    )
    environ = {f"T_{name.upper()}": token for name, token in PEOPLE.items()}
    settings = load_settings(config, environ=environ)
    cli = CliRunner()

    def approve_by_cli(run: dict[str, Any], who: str) -> Result:
        step = run["steps"][0]
        args = ["run", "approve", run["id"], "note", "--plan", step["plan_hash"], "-c", str(config)]
        return cli.invoke(app, [*args, "--token", f"env:T_{who.upper()}"], env=environ)

    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:

        async def api(who: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {PEOPLE[who]}"}) as r,
            ):
                return r.status, await r.json()

        status, run = await api("lead1", "/api/playbooks/two-keys/runs", {"entity": "bob"})
        assert status == 201 and run["requested_by"] == "api:lead1" and run["status"] == "waiting"
        own = await asyncio.to_thread(approve_by_cli, run, "lead1")
        assert own.exit_code == 2 and "lead1 requested this run" in own.output
        decision = {"step": "note", "plan_hash": run["steps"][0]["plan_hash"]}
        status, half = await api("lead2", f"/api/runs/{run['id']}/approve", decision)
        assert status == 200 and half["status"] == "waiting"
        twice = await asyncio.to_thread(approve_by_cli, run, "lead2")
        assert twice.exit_code == 2 and "lead2 already decided" in twice.output
        done = await asyncio.to_thread(approve_by_cli, run, "ann")
        assert done.exit_code == 0, done.output
        async with services.store.transaction() as tx:
            assert sorted(d["approver"] for d in await tx.approvals_for(run["id"], "note")) == ["ann", "lead2"]
            assert (await tx.get_run(run["id"])).status.value == "succeeded"  # type: ignore[union-attr]
    no_token = ["run", "approve", run["id"], "note", "--plan", "0" * 16, "-c", str(config)]
    refused = await asyncio.to_thread(cli.invoke, app, no_token, env={**environ, "CUSTODES_API_TOKEN": None})
    assert refused.exit_code == 2 and "CUSTODES_API_TOKEN" in refused.output
