"""Privacy for roles without reveal: pseudonyms everywhere, audited name lookups, the key outside the store, an
index for pseudonym lookups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa
from aiohttp import web

from custodes.config import DatabaseSettings, ScoringSettings, Settings
from custodes.connectors.envelope import to_event
from custodes.detections.scoring.privacy import Pseudonymizer
from custodes.detections.scoring.service import pseudonymizer_for
from custodes.model import utcnow
from custodes.sandbox.server import running
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import Store
from custodes.store.tables import entities, scoring_meta

ROOT = Path(__file__).resolve().parents[1]
PRIVACY_TOKENS = {"viewer": "viewer-token-0123456789", "privacy_officer": "privacy-token-0123456789"}
NOTIFY = """\
name: tell
trigger: {manual: true}
steps:
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "contain {{ entity }}"}
"""


async def test_viewers_see_pseudonyms_everywhere_and_names_need_an_audited_reveal(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    async def echo(request: web.Request) -> web.Response:  # a vendor whose error names the person
        text = (await request.json())["text"]
        return web.json_response({"errorCode": "E1", "errorSummary": f"refused: {text}"}, status=400)

    vendor = web.Application()
    vendor.router.add_post("/hook", echo)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "tell.yml").write_text(NOTIFY)
    key_file = tmp_path / "keys" / "pseudonym.key"
    async with running(vendor) as vendor_url:
        environ = {f"T_{role.upper()}": token for role, token in PRIVACY_TOKENS.items()}
        settings = Settings.model_validate(
            {
                "detection": {"rules": [str(ROOT / "detections" / "rules")]},
                "playbooks": {"paths": [str(tmp_path / "playbooks")]},
                "responder": {"channels": {"soc": {"url": "env:HOOK"}}},
                "scoring": {"pseudonym_key_file": str(key_file)},
                "server": {
                    "api_tokens": [
                        {"name": role, "token": f"env:T_{role.upper()}", "role": role} for role in PRIVACY_TOKENS
                    ]
                },
            },
            context={"environ": {**environ, "HOOK": f"{vendor_url}/hook"}},
        )
        settings.database = database
        async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
            event = {
                "uuid": "u1",
                "published": "2026-11-19T02:03:40.077Z",
                "eventType": "user.mfa.factor.deactivate",
                "actor": {"alternateId": "ann@example.com", "type": "User"},
                "target": [{"alternateId": "bob@example.com", "type": "User"}],
                "outcome": {"result": "SUCCESS"},
                "client": {"ipAddress": "185.220.101.4"},
            }
            await services.pipeline.ingest([to_event(event, settings.source("okta"), "okta")])
            run = await services.runner.start_manual(
                services.playbooks[0], {}, requested_by="api:privacy_officer", entity="ann@example.com"
            )

            async def get(path: str, role: str = "viewer") -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {PRIVACY_TOKENS[role]}"}
                async with aiohttp.ClientSession() as http, http.get(f"{url}{path}", headers=headers) as response:
                    return response.status, await response.json()

            status, listed = await get("/api/findings")
            [pseudonym] = {f["entity"] for f in listed["findings"]}
            assert status == 200 and pseudonym.startswith("p-")
            status, refused = await get("/api/findings?entity=ann@example.com")
            assert status == 403 and refused["error"]["code"] == "reveal_required"
            status, by_pseudonym = await get(f"/api/findings?entity={pseudonym}")
            assert status == 200 and len(by_pseudonym["findings"]) == len(listed["findings"])
            status, named = await get("/api/findings?entity=ann@example.com&reveal=case+12", "privacy_officer")
            assert status == 200 and {f["entity"] for f in named["findings"]} == {"ann@example.com"}
            status, timeline = await get(f"/api/entities/{pseudonym}/timeline")
            assert status == 200 and timeline["events"]
            status, shown_run = await get(f"/api/runs/{run.id}")
            assert run.status.value == "failed" and "ann@example.com" in (run.steps[0].error or "")
            seen = orjson.dumps([listed, by_pseudonym, timeline, shown_run]).decode()
            assert [leak for leak in ("ann@example.com", "bob@example.com", "185.220.101.4") if leak in seen] == []
            assert f"refused: contain {pseudonym}" in shown_run["steps"][0]["error"]
            async with services.store.transaction() as tx:
                audit = [(e.action, e.subject) for e in await tx.audit_entries()]
                indexed = dict((await tx.conn.execute(sa.select(entities.c.pseudonym, entities.c.id))).all())
                kept = await tx.conn.execute(sa.select(scoring_meta.c.key))
    assert ("api.lookup", "ann@example.com") in audit and ("api.reidentify", "/api/findings") in audit
    assert indexed[pseudonym] == "ann@example.com"  # the pseudonym is stored beside the entity, looked up by index
    assert "pseudonym_key" not in {row[0] for row in kept} and len(key_file.read_text().strip()) == 64
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_a_pseudonym_key_kept_in_the_store_is_moved_out(store: Store, tmp_path: Path) -> None:
    async with store.transaction() as tx:
        await tx.conn.execute(
            sa.insert(scoring_meta), [{"key": "pseudonym_key", "value": "ab" * 32, "updated_at": utcnow()}]
        )
    settings = ScoringSettings(pseudonym_key_file=str(tmp_path / "pseudonym.key"))
    before = Pseudonymizer(bytes.fromhex("ab" * 32))("ann@example.com")
    assert (await pseudonymizer_for(settings, store))("ann@example.com") == before  # the same pseudonyms
    assert (tmp_path / "pseudonym.key").read_text().strip() == "ab" * 32
    async with store.transaction() as tx:
        assert (await tx.conn.execute(sa.select(scoring_meta.c.key))).all() == []
    opted = ScoringSettings(pseudonym_key_file=str(tmp_path / "unused.key"), pseudonym_key_in_store=True)
    await pseudonymizer_for(opted, store)
    assert not (tmp_path / "unused.key").exists()
