"""Playbooks: validation with file:line:column, sandboxed expressions, and runs recorded step by step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from custodes.config import ResponderSettings
from custodes.errors import CustodesError
from custodes.model import Event, Finding, LogSource, RunStatus, Severity
from custodes.playbooks.expressions import ExpressionError, render
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder import catalog, http
from custodes.sandbox import chat, okta
from custodes.sandbox.server import running
from custodes.store import Store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 19, 2, 14, tzinfo=UTC)

GOOD = """\
name: contain
version: 2
trigger:
  findings:
    min_severity: high
    tags: [attack.defense-evasion]
steps:
  - id: tell
    uses: notify.webhook
    with:
      channel: soc
      text: "{{ finding.title }} by {{ entity }}"
  - id: suspend
    if: entity is not none
    uses: okta.suspend_user
    with:
      user: "{{ entity }}"
  - id: confirm
    uses: notify.webhook
    with:
      channel: soc
      text: "{{ steps.suspend.status }}: changed={{ steps.suspend.result.changed | default('n/a') }}"
"""


def write(tmp_path: Path, text: str, name: str = "playbook.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(CustodesError) as caught:
        load_playbooks([write(tmp_path, text)], catalog)
    return str(caught.value)


def test_a_good_playbook_loads(tmp_path: Path) -> None:
    [loaded] = load_playbooks([write(tmp_path, GOOD)], catalog)
    assert loaded.playbook.name == "contain" and loaded.playbook.version == "2"
    assert [s.uses for s in loaded.playbook.steps] == [
        "notify.webhook",
        "okta.suspend_user",
        "notify.webhook",
    ]


def test_shipped_playbooks_validate() -> None:
    loaded = load_playbooks([ROOT / "playbooks"], catalog)
    assert {item.playbook.name for item in loaded} >= {"logging-tampering", "departing-employee-data-theft"}


def test_schema_errors_point_at_line_and_column(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        GOOD.replace("min_severity: high", "min_severity: urgent").replace("    uses: okta", "    usez: okta"),
    )
    path = tmp_path / "playbook.yml"
    assert f"{path}:5:19 (trigger.findings.min_severity)" in text
    assert f"{path}:13:5 (steps.1.uses): missing required field 'uses'" in text or "steps.1" in text
    assert "unknown field 'usez'" in text


def test_unknown_action_argument_and_types_are_located(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        GOOD.replace("uses: okta.suspend_user", "uses: okta.suspend").replace(
            '      channel: soc\n      text: "{{ finding', '      channell: soc\n      text: "{{ finding'
        ),
    )
    path = tmp_path / "playbook.yml"
    assert f"{path}:15:11 (steps.1.uses): unknown action 'okta.suspend'" in text
    assert f"{path}:11:7 (steps.0.with.channell): notify.webhook has no argument 'channell'" in text
    assert "notify.webhook requires argument 'channel'" in text
    typed = problems(
        tmp_path,
        GOOD.replace('      channel: soc\n      text: "{{ finding', '      channel: [a, b]\n      text: "{{ finding'),
    )
    assert "argument 'channel' Input should be a valid string" in typed


def test_expressions_are_checked(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        GOOD.replace('{{ entity }}"\n', '{{ usr }}"\n')
        .replace("steps.suspend.result", "steps.later.result")
        .replace("{{ finding.title }}", "{{ finding.title "),
    )
    assert "unknown variable 'usr'" in text
    assert "steps.later does not name a step that runs before this one" in text
    assert "invalid expression" in text
    assert "'if' is a bare expression" in problems(
        tmp_path, GOOD.replace("if: entity is not none", 'if: "{{ entity }}"')
    )


def test_duplicate_ids_and_names_and_bad_yaml(tmp_path: Path) -> None:
    assert "duplicate step id 'tell'" in problems(tmp_path, GOOD.replace("id: confirm", "id: tell"))
    write(tmp_path, GOOD, "a.yml")
    write(tmp_path, GOOD, "b.yml")
    with pytest.raises(CustodesError, match="playbook name 'contain' is also used by"):
        load_playbooks([tmp_path], catalog)
    assert "invalid YAML" in problems(tmp_path, "name: [unclosed\n")


def test_event_data_is_never_rendered_as_a_template() -> None:
    hostile = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    context = {"finding": {"title": hostile}, "events": [{"msg": "{% for x in range(10**9) %}{% endfor %}"}]}
    assert render("{{ finding.title }}", context) == hostile
    assert render("seen: {{ events[0].msg }}", context) == "seen: {% for x in range(10**9) %}{% endfor %}"
    assert render("{{ finding }}", context) == context["finding"]
    with pytest.raises(ExpressionError, match=r"unsafe"):
        render("{{ ''.__class__.__mro__ }}", {})
    with pytest.raises(ExpressionError, match="undefined"):
        render("{{ missing }}", {})


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("{{ 9 ** 999999999 }}", "a power of more than 1000000 bits"),  # once minutes of CPU (the loop held)
        ("{{ (10 ** 100000) ** 100 }}", "a power of more than 1000000 bits"),
        (
            "n={{ 'x' * 10 ** 11 }}",
            r"repeating 1 item\(s\) that often makes more than 1000000",
        ),  # once 100 GB asked for
        ("{{ 10 ** 10 * [finding] }}", r"repeating 1 item\(s\) that often makes more than 1000000"),
        ("{{ 'x' | center(10 ** 10) }}", "center"),  # each of these once built the string, gigabytes at a time
        ("{{ 'x'.rjust(10 ** 9) }}", "rjust"),
        ("{{ 'x'.zfill(10 ** 9) }}", "zfill"),
        ("{{ ('\t' * 1000).expandtabs(10 ** 6) }}", "expandtabs"),
        ("{{ ('a' * 1000).replace('a', 'a' * 2000) }}", "replace"),
        ("{{ ('a' * 1000) | replace('a', 'a' * 2000) }}", "replace"),
        ("{{ 'x' | indent(10 ** 9) }}", "indent"),
        ("{{ '%0999999999d' % 1 }}", "the format"),
        ("{{ '%.999999999f' % 1.5 }}", "the format"),
        ("{{ '%*d' % (10 ** 9, 1) }}", "the format"),
        ("{{ '%0999999999d' | format(1) }}", "the format"),
        ("{{ '{:>999999999}'.format(1) }}", "the format"),
        ("{{ '{:{w}}'.format(1, w=10 ** 9) }}", "the format"),
        ("{{ '{x:>999999999}'.format_map({'x': 1}) }}", "the format"),
        ("{{ '%0" + "9" * 5000 + "d' % 1 }}", "the format"),  # a width past int()'s digit limit
    ],
)
def test_an_expression_too_costly_to_evaluate_is_refused(expression: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=rf"cannot evaluate .*: {why}"):
        render(expression, {"finding": {}})
    assert render("{{ 2 ** 10 }} {{ 'ab' * 2 }} {{ [0] * 3 }} {{ 3 * 4 }}", {}) == "1024 abab [0, 0, 0] 12"
    fair = (
        "{{ 'ab' | center(6) }}|{{ '%05d' % 42 }}|{{ '%*d' % (4, 3) }}|{{ '{:>4}'.format('x') }}|"
        "{{ '{a:>{w}}'.format(a='y', w=3) }}|{{ '{x}'.format_map({'x': 3}) }}|{{ 'a\tb'.expandtabs(4) }}|"
        "{{ 'aa'.replace('a', 'bb') }}|{{ 'aa' | replace('a', 'c', 1) }}|{{ 'x\ny' | indent(2, first=True) }}|"
        "{{ '%s-%s' | format(1, 2) }}|{{ 10 % 3 }}|{{ 'ab'.ljust(3) }}|"
    )
    assert render(fair, {}) == "  ab  |00042|   3|   x|  y|3|a   b|bbbb|ca|  x\n  y|1-2|1|ab |"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "retry_policy", http.RetryPolicy(attempts=2, max_wait=0.01, backoff=0.001))


@pytest.fixture
async def systems(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[okta.OktaState, chat.ChatState, ResponderSettings]]:
    okta_state, chat_state = okta.OktaState(token="okta-token"), chat.ChatState()
    okta_state.add_user("alice@example.com")
    okta_state.add_user("breakglass@example.com")
    async with (
        running(okta.create_app(okta_state)) as okta_url,
        running(chat.create_app(chat_state)) as chat_url,
    ):
        monkeypatch.setenv("T_OKTA", "okta-token")
        monkeypatch.setenv("T_HOOK", f"{chat_url}/hooks/soc")
        settings = ResponderSettings.model_validate(
            {
                "okta": {"base_url": okta_url, "token": "env:T_OKTA"},
                "channels": {"soc": {"url": "env:T_HOOK"}},
                "protected_accounts": ["breakglass@example.com"],
            }
        )
        yield okta_state, chat_state, settings


def finding(entity: str | None, ident: str = "f1") -> Finding:
    return Finding(
        id=ident,
        dedup_key=f"k-{ident}",
        detector="sigma",
        rule_id="r1",
        title="AWS CloudTrail Logging Disabled",
        severity=Severity.HIGH,
        entity=entity,
        event_ids=["e1"],
        tags=["attack.defense-evasion"],
        first_seen=T0,
        last_seen=T0,
        source="cloudtrail",
    )


async def test_a_run_records_every_step_and_acts_for_real(
    tmp_path: Path, store: Store, systems: tuple[okta.OktaState, chat.ChatState, ResponderSettings]
) -> None:
    okta_state, chat_state, settings = systems
    [loaded] = load_playbooks([write(tmp_path, GOOD)], catalog)
    hostile = {"eventName": "StopLogging", "note": "{{ 7 * 7 }}"}
    async with store.transaction() as tx:
        await tx.insert_events(
            [
                Event(
                    id="e1",
                    time=T0,
                    source="cloudtrail",
                    logsource=LogSource("aws", "cloudtrail"),
                    raw=hostile,
                    actor="alice@example.com",
                )
            ]
        )
    async with aiohttp.ClientSession() as session:
        runner = Runner(store, catalog, settings, session)
        run = await runner.start(loaded, finding("alice@example.com"))
        assert run is not None and run.status is RunStatus.SUCCEEDED, run
        assert await runner.start(loaded, finding("alice@example.com")) is None
        second = await runner.start(loaded, finding("alice@example.com", ident="f2"))
    assert okta_state.find_user("alice@example.com")["status"] == "SUSPENDED"  # type: ignore[index]
    assert [m["text"] for m in chat_state.messages_for("soc")] == [
        "AWS CloudTrail Logging Disabled by alice@example.com",
        "succeeded: changed=True",
        "AWS CloudTrail Logging Disabled by alice@example.com",
        "succeeded: changed=False",
    ]
    assert len(okta_state.mutations()) == 1
    assert second is not None and second.steps[1].result is not None and second.steps[1].result["changed"] is False
    async with store.transaction() as tx:
        stored = await tx.get_run(run.id)
        audit = await tx.audit_entries()
    assert stored is not None
    assert [(s.step_id, s.status) for s in stored.steps] == [
        ("tell", RunStatus.SUCCEEDED),
        ("suspend", RunStatus.SUCCEEDED),
        ("confirm", RunStatus.SUCCEEDED),
    ]
    assert stored.steps[1].arguments == {"user": "alice@example.com"}
    assert len({s.idempotency_key for s in stored.steps}) == 3
    actions = [entry.action for entry in audit if entry.subject == run.id]
    assert actions == ["run.started"] + ["action.request", "action.response"] * 3 + ["run.finished"]
    assert "okta-token" not in str([entry.details for entry in audit])


async def test_a_failing_step_fails_the_run_and_stops_it(
    tmp_path: Path, store: Store, systems: tuple[okta.OktaState, chat.ChatState, ResponderSettings]
) -> None:
    okta_state, chat_state, settings = systems
    [loaded] = load_playbooks([write(tmp_path, GOOD)], catalog)
    async with aiohttp.ClientSession() as session:
        run = await Runner(store, catalog, settings, session).start(loaded, finding("breakglass@example.com"))
        skipped = await Runner(store, catalog, settings, session).start(loaded, finding(None, ident="f9"))
    assert run is not None and run.status is RunStatus.FAILED
    assert run.error is not None and "protected_account" in run.error
    assert [s.status for s in run.steps] == [RunStatus.SUCCEEDED, RunStatus.FAILED]
    assert okta_state.mutations() == []
    assert skipped is not None and [s.status for s in skipped.steps] == [
        RunStatus.SUCCEEDED,
        RunStatus.SKIPPED,
        RunStatus.SUCCEEDED,
    ]
    assert len(chat_state.messages_for("soc")) == 3


async def test_dry_run_describes_without_acting(
    tmp_path: Path, store: Store, systems: tuple[okta.OktaState, chat.ChatState, ResponderSettings]
) -> None:
    okta_state, chat_state, settings = systems
    loaded = load_playbooks([write(tmp_path, GOOD.replace("version: 2", "version: 2\ndry_run: true"))], catalog)[0]
    assert isinstance(loaded, LoadedPlaybook)
    async with aiohttp.ClientSession() as session:
        run = await Runner(store, catalog, settings, session).start(loaded, finding("alice@example.com"))
    assert run is not None and run.dry_run and run.status is RunStatus.SUCCEEDED
    assert okta_state.mutations() == [] and chat_state.messages == []
    assert run.steps[1].result == {
        "changed": False,
        "dry_run": True,
        "would": "suspend alice@example.com in Okta",
    }
