"""notify.webhook escapes what expressions put into `text` for the channel's markup (Slack, Teams, plain), over real
HTTP to the chat simulator: event data arrives as written while the playbook's own markup keeps working."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custodes.config import PlaybookSettings, ResponderSettings
from custodes.markup import slack, teams
from custodes.model import Event, Finding, LogSource, RunStatus, Severity
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder import catalog
from custodes.responder.registry import Registry
from custodes.sandbox import chat
from custodes.sandbox.server import running
from custodes.store import Store

T0 = datetime(2026, 11, 19, 2, 14, tzinfo=UTC)
HOSTILE: dict[str, Any] = {
    "userAgent": "<!channel> <https://evil.example|Open the case> & [Open the case](https://evil.example)",
    "fileName": "<@U123> payroll.xlsx",
    "names": ["<!here>", "[x](https://evil.example)"],
}
AUTHORED = {  # each format's own markup, written in the playbook
    "slack": "*Alert* <https://console.example/cases/{{ finding.id }}|Open the case>",
    "teams": "**Alert** [Open the case](https://console.example/cases/{{ finding.id }})",
    "plain": "Alert: case {{ finding.id }}",
}
SENT = {  # what the chat receives: the authored markup with the finding's id, the event data escaped
    "slack": [
        "*Alert* <https://console.example/cases/f1|Open the case> for alice@example.com: &lt;!channel&gt; "
        "&lt;https://evil.example|Open the case&gt; &amp; [Open the case](https://evil.example)",
        "&lt;@U123&gt; payroll.xlsx",
        "user &lt;!here&gt;",
        "user [x](https://evil.example)",
    ],
    "teams": [
        "**Alert** [Open the case](https://console.example/cases/f1) for alice@example.com: &lt;!channel&gt; "
        "&lt;https://evil.example|Open the case&gt; &amp; \\[Open the case\\]\\(https://evil.example\\)",
        "&lt;@U123&gt; payroll.xlsx",
        "user &lt;!here&gt;",
        "user \\[x\\]\\(https://evil.example\\)",
    ],
    "plain": [
        f"Alert: case f1 for alice@example.com: {HOSTILE['userAgent']}",
        HOSTILE["fileName"],
        *(f"user {name}" for name in HOSTILE["names"]),
    ],
}
PLAYBOOK = """\
name: markup
trigger: {{findings: {{min_severity: low}}}}
steps:
  - id: sentence
    uses: notify.webhook
    with:
      channel: room
      text: "{authored} for {{{{ entity }}}}: {{{{ events[0].userAgent }}}}"
  - id: whole
    uses: notify.webhook
    with:
      channel: "{{{{ 'ro' ~ 'om' }}}}"
      text: "{{{{ events[0].fileName }}}}"
  - id: each
    uses: notify.webhook
    for_each: events[0]['names']
    with:
      channel: room
      text: "user {{{{ item }}}}"
"""


@pytest.fixture
async def room() -> AsyncIterator[tuple[chat.ChatState, str]]:
    state = chat.ChatState()
    async with running(chat.create_app(state)) as url:
        yield state, url


def finding() -> Finding:
    return Finding(
        id="f1",
        dedup_key="k-f1",
        detector="sigma",
        rule_id="r1",
        title="Mass download",
        severity=Severity.HIGH,
        entity="alice@example.com",
        event_ids=["e1"],
        tags=[],
        first_seen=T0,
        last_seen=T0,
    )


async def store_event(store: Store) -> None:
    event = Event("e1", T0, "okta", LogSource("okta", "okta"), HOSTILE, actor="alice@example.com")
    async with store.transaction() as tx:
        await tx.insert_events([event])


def load(tmp_path: Path, text: str) -> LoadedPlaybook:
    (tmp_path / "markup.yml").write_text(text)
    [loaded] = load_playbooks([tmp_path], catalog)
    return loaded


def settings(channel: dict[str, Any]) -> ResponderSettings:
    return ResponderSettings.model_validate({"channels": {"room": channel}})


@pytest.mark.parametrize("markup", ["slack", "teams", "plain", None])
async def test_event_data_arrives_as_written_and_the_authored_markup_works(
    markup: str | None,
    tmp_path: Path,
    store: Store,
    room: tuple[chat.ChatState, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, url = room
    monkeypatch.setenv("T_ROOM", f"{url}/hooks/room")
    channel = {"url": "env:T_ROOM"} if markup is None else {"url": "env:T_ROOM", "format": markup}
    loaded = load(tmp_path, PLAYBOOK.format(authored=AUTHORED[markup or "slack"]))
    await store_event(store)
    async with aiohttp.ClientSession() as session:
        run = await Runner(store, catalog, settings(channel), session).start(loaded, finding())
    assert run is not None and run.status is RunStatus.SUCCEEDED, run
    assert [message["text"] for message in state.messages_for("room")] == SENT[markup or "slack"]  # slack: default


@pytest.mark.parametrize("dry_run", [True, False])
async def test_a_dry_run_and_a_channel_without_url_show_the_text_as_it_would_be_sent(
    dry_run: bool, tmp_path: Path, store: Store, room: tuple[chat.ChatState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = room
    monkeypatch.setenv("T_ROOM", f"{url}/hooks/room")
    manual = PLAYBOOK.replace("{{findings: {{min_severity: low}}}}", "{{manual: true}}")
    loaded = load(tmp_path, manual.format(authored=AUTHORED["teams"]))
    channel = {"url": "env:T_ROOM", "format": "teams"} if dry_run else {"format": "teams"}
    await store_event(store)
    async with aiohttp.ClientSession() as session:
        runner = Runner(store, catalog, settings(channel), session)
        run = await runner.start_manual(loaded, {}, requested_by="ann", finding=finding(), dry_run=dry_run)
    assert run.status is RunStatus.SUCCEEDED, run
    results = [step.result or {} for step in run.steps if step.step_id in ("sentence", "whole")]
    shown = [result["body"]["text"] if dry_run else result["text"] for result in results]
    assert shown == SENT["teams"][:2] and state.messages_for("room") == []


SECRET = """\
name: key
trigger: {manual: true}
steps:
  - {id: tell, uses: notify.webhook, with: {channel: room, text: "key {{ secrets.key }}"}}
"""


async def test_a_secret_in_the_text_is_sent_escaped_and_stored_masked(
    tmp_path: Path, store: Store, room: tuple[chat.ChatState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = room
    monkeypatch.setenv("T_ROOM", f"{url}/hooks/room")
    monkeypatch.setenv("T_KEY", "sk_live&7d1e9a<0>")
    engine = PlaybookSettings.model_validate({"secrets": {"key": "env:T_KEY"}})
    async with aiohttp.ClientSession() as session:
        runner = Runner(store, catalog, settings({"url": "env:T_ROOM", "format": "teams"}), session, engine=engine)
        run = await runner.start_manual(load(tmp_path, SECRET), {}, requested_by="ann")
    assert [message["text"] for message in state.messages_for("room")] == ["key sk\\_live&amp;7d1e9a&lt;0&gt;"]
    async with store.transaction() as tx:
        stored = await tx.get_run(run.id)
    assert stored is not None and stored.steps[0].arguments["text"] == "key ***"


def test_the_escapers() -> None:
    data = "# Title\n  - item\n12. twelve\n1) one\n+ plus\n=== rule\n*b* _i_ ~s~ `c` \\ @channel 2.5 a-b"
    assert teams(data) == (
        "\\# Title\n  \\- item\n12\\. twelve\n1\\) one\n\\+ plus\n\\=== rule\n"
        "\\*b\\* \\_i\\_ \\~s\\~ \\`c\\` \\\\ @channel 2.5 a-b"
    )
    # Slack's documented escaping is &, < and >; a typed @channel is text when no link_names is sent
    assert slack(data + " <!here> &amp;") == data + " &lt;!here&gt; &amp;amp;"


def test_an_action_escapes_only_its_own_arguments() -> None:
    registry = Registry()

    async def fn(ctx: Any, *, text: str) -> dict[str, Any]:
        return {}

    with pytest.raises(TypeError, match="escaped 'body' not among its parameters"):
        registry.action("x.y", escape={"body": lambda arguments, settings: slack})(fn)
