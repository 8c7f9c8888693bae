"""`custodes demo`: one night of an insider story, played through the real pipeline against the sandbox.

Alice signs in to Okta at 02:00 from an unusual address, removes her MFA factor, creates an API token, then
in AWS reads finance reports, stops CloudTrail and mints an access key for a service user. Her Okta events
arrive through the signed generic webhook; the CloudTrail log file is replayed by the file connector. The
shipped rules raise findings; the shipped playbooks tell the SOC channel and ask for approval to suspend her.
A SOC lead (a different person from the one who started the run) approves exactly the plan shown, over the
REST API, and she is suspended in the Okta simulator; the run queued behind hers then finds her suspended
already. Her findings opened a case, which the analyst takes on (investigating, her runs linked, a comment) and
the privacy officer shows with her name. Everything printed is read back from the API, the store and the
simulators.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from custodes.config import (
    ApiToken,
    DatabaseSettings,
    DetectionSettings,
    NotifyChannel,
    OktaConnection,
    PlaybookSettings,
    ReceiverAuth,
    ReceiverSettings,
    ResponderSettings,
    ServerSettings,
    Settings,
)
from custodes.connectors.files import FileConnector, iter_records
from custodes.demo.casework import open_case_for_alice
from custodes.errors import CustodesError
from custodes.model import Run, utcnow
from custodes.reports.compliance import period_of
from custodes.reports.produce import produce
from custodes.sandbox import chat, okta
from custodes.sandbox.server import running
from custodes.server.app import create_app
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.server.connections import listening
from custodes.server.context import tasks_key
from custodes.services import Services

STORY = Path(__file__).parent
OKTA_TOKEN_REFERENCE = "env:CUSTODES_DEMO_OKTA_TOKEN"  # noqa: S105 - a reference, not a secret
SEVERITY_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "informational": "dim",
}
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "running": "yellow",
    "waiting": "cyan",
    "pending": "dim",
}


def _secret_env(name: str) -> str:
    os.environ[name] = secrets.token_urlsafe(24)
    return f"env:{name}"


def demo_settings(project: Path, workdir: Path, okta_url: str, chat_url: str, port: int) -> Settings:
    """Settings for the demo: a fresh SQLite store, the checkout's rules and playbooks, the sandbox."""
    rules, playbooks = project / "detections" / "rules", project / "playbooks"
    for folder in (rules, playbooks):
        if not folder.is_dir():
            raise CustodesError(f"{folder} not found", hint="run the demo from the Custodes checkout, or --project")
    os.environ["CUSTODES_DEMO_OKTA_TOKEN"] = okta.DEFAULT_TOKEN
    os.environ["CUSTODES_DEMO_SOC_HOOK"] = f"{chat_url}/hooks/soc"
    return Settings(
        database=DatabaseSettings(
            url=f"sqlite+aiosqlite:///{workdir / 'custodes.db'}",
            audit_checkpoint=str(workdir / "audit-checkpoints.jsonl"),
        ),
        detection=DetectionSettings(rules=[rules]),
        playbooks=PlaybookSettings(paths=[playbooks]),
        webhooks={
            "generic": ReceiverSettings(
                kind="generic",
                source="okta",
                auth=ReceiverAuth(scheme="hmac", secret=_secret_env("CUSTODES_DEMO_WEBHOOK_SECRET")),
            )
        },
        server=ServerSettings(
            port=port,
            api_tokens=[
                ApiToken(name="demo", role="analyst", token=_secret_env("CUSTODES_DEMO_API_TOKEN")),
                ApiToken(name="soc-lead", role="approver", token=_secret_env("CUSTODES_DEMO_APPROVER_TOKEN")),
                ApiToken(name="privacy", role="privacy_officer", token=_secret_env("CUSTODES_DEMO_PRIVACY_TOKEN")),
            ],
        ),
        responder=ResponderSettings(
            okta=OktaConnection(base_url=okta_url, token=OKTA_TOKEN_REFERENCE),
            channels={"soc": NotifyChannel(url="env:CUSTODES_DEMO_SOC_HOOK")},
            protected_accounts=["breakglass@example.com"],
        ),
    )


async def _post_signed(http: aiohttp.ClientSession, url: str, secret: str, records: list[Any]) -> dict[str, Any]:
    body = orjson.dumps(records)
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, stamp, body),
    }
    async with http.post(url, data=body, headers=headers) as response:
        payload: dict[str, Any] = await response.json()
        if response.status != 202:
            raise CustodesError(f"webhook refused the story: {response.status} {payload}")
        return payload


async def _api(http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        payload = await response.json()
        if response.status >= 300:
            raise CustodesError(f"{method} {url} answered {response.status}: {payload}")
        return payload


async def _approve_waiting(http: aiohttp.ClientSession, url: str, services: Services, console: Console) -> None:
    """The SOC lead approves each plan waiting for approval, exactly as shown; queued runs then proceed."""
    approver = os.environ["CUSTODES_DEMO_APPROVER_TOKEN"]
    decided: set[tuple[str, str, str]] = set()
    for _ in range(5):
        await services.runner.reap()
        waiting = (await _api(http, "GET", f"{url}/api/runs?status=waiting", approver))["runs"]
        pending = [
            (run, step)
            for run in waiting
            for step in run["steps"]
            if step["status"] == "waiting" and (run["id"], step["step_id"], step["plan_hash"]) not in decided
        ]
        if not pending:
            for run in waiting:
                console.print(
                    Text.assemble(
                        ("Still waiting", "yellow"),
                        f": {run['playbook']} needs another approver "
                        "(soc-lead has decided already, and one person's approval does not count twice)",
                    )
                )
            return
        for run, step in pending:
            plan = "; ".join(item["description"] for item in step["plan"] or [])
            console.print(
                Text.assemble(
                    ("Approval requested", "bold"),
                    f" by {run['requested_by']} for {run['playbook']}: {plan} (plan {step['plan_hash'][:12]})",
                )
            )
            body = {
                "step": step["step_id"],
                "plan_hash": step["plan_hash"],
                "comment": "Confirmed with HR: departing employee, containment approved.",
            }
            await _api(http, "POST", f"{url}/api/runs/{run['id']}/approve", approver, body)
            decided.add((run["id"], step["step_id"], step["plan_hash"]))
            console.print(
                Text.assemble(("Approved", "green"), " by soc-lead (role approver) through POST /api/runs/<id>/approve")
            )


async def _findings(http: aiohttp.ClientSession, url: str, console: Console) -> list[dict[str, Any]]:
    """The findings as an analyst sees them (pseudonymised), then as the privacy officer reveals them."""
    analyst = os.environ["CUSTODES_DEMO_API_TOKEN"]
    shown = (await _api(http, "GET", f"{url}/api/findings", analyst))["findings"]
    people = sorted({finding["entity"] for finding in shown if finding["entity"]})
    console.print(f"The API shows people pseudonymised by default: {', '.join(people)}")
    officer = os.environ["CUSTODES_DEMO_PRIVACY_TOKEN"]
    revealed: list[dict[str, Any]] = (await _api(http, "GET", f"{url}/api/findings?reveal=demo+walkthrough", officer))[
        "findings"
    ]
    console.print("The privacy officer revealed them for this walkthrough (recorded in the audit log):")
    return revealed


def _story_table() -> Table:
    table = Table(title="The story (raw vendor records)", title_justify="left")
    for column in ("time (UTC)", "source", "who", "what"):
        table.add_column(column)
    rows: list[tuple[str, str, str, str]] = []
    for _, record, _ in iter_records(STORY / "okta.ndjson"):
        rows.append((record["published"][11:19], "okta", record["actor"]["alternateId"], record["eventType"]))
    for _, record, _ in iter_records(STORY / "cloudtrail.json"):
        who = record["userIdentity"]["arn"].rsplit("/", 1)[1]
        rows.append((record["eventTime"][11:19], "cloudtrail", who, record["eventName"]))
    for row in sorted(rows):
        table.add_row(*row)
    return table


def _techniques(tags: list[str]) -> str:
    return ", ".join(tag.removeprefix("attack.").upper() for tag in tags if tag.lower().startswith("attack.t"))


def _findings_table(found: list[dict[str, Any]]) -> Table:
    table = Table(title="Findings (GET /api/findings)", title_justify="left")
    for column in ("severity", "finding", "entity", "events", "ATT&CK"):
        table.add_column(column)
    for finding in found:
        style = SEVERITY_STYLE.get(finding["severity"], "")
        table.add_row(
            Text(finding["severity"], style=style),
            finding["title"],
            finding["entity"] or "-",
            str(finding["count"]),
            _techniques(finding["tags"]),
        )
    return table


def _outcome(step: Any) -> str:
    result = step.result or {}
    if step.error:
        return str(step.error)
    if "changed" in result:
        return "changed" if result["changed"] else "no change: already so"
    if result.get("delivered"):
        return f"delivered to #{result.get('channel', '?')}"
    return orjson.dumps(result).decode() if result else "-"


def _actions_table(runs: list[Run]) -> Table:
    table = Table(title="Playbook runs and actions (from the store)", title_justify="left")
    for column in ("run", "step", "action", "status", "outcome"):
        table.add_column(column)
    for number, run in enumerate(sorted(runs, key=lambda r: r.created_at), start=1):
        if not run.steps:
            table.add_row(
                f"{number}. {run.playbook}",
                "-",
                "-",
                Text(run.status.value, style="dim"),
                run.error or "queued behind another containment run for this person",
            )
        for step in run.steps:
            style = STATUS_STYLE.get(step.status.value, "")
            label = f"{number}. {run.playbook}" if step.position == 0 else ""
            table.add_row(label, step.step_id, step.action, Text(step.status.value, style=style), _outcome(step))
        table.add_section()
    return table


async def _compliance_report(services: Services) -> Path:
    """The SOC 2 evidence of the last 30 days as a PDF beside the system's temporary files (kept after the demo)."""
    today = utcnow().date()
    period = period_of((today - timedelta(days=30)).isoformat(), today.isoformat())
    data = await produce(services.store, services.settings, "soc2", period, "pdf", "custodes:demo")
    path = Path(tempfile.gettempdir()) / "custodes-demo-compliance-soc2.pdf"
    await asyncio.to_thread(path.write_bytes, data)
    return path


def _sandbox_table(okta_state: okta.OktaState, chat_state: chat.ChatState) -> Table:
    table = Table(title="What the systems saw (sandbox state)", title_justify="left")
    table.add_column("system")
    table.add_column("state")
    for user in okta_state.users.values():
        table.add_row("Okta", f"{user['profile']['login']}: {user['status']}")
    for message in chat_state.messages_for("soc"):
        table.add_row("SOC channel", str(message.get("text", message)))
    return table


async def run_demo(project: Path, *, port: int, once: bool, console: Console) -> None:
    """Play the story, print what happened, then keep serving the API unless `once`."""
    project = await asyncio.to_thread(project.resolve)
    okta_state, chat_state = okta.OktaState(), chat.ChatState()
    for login in ("alice@example.com", "bob@example.com", "breakglass@example.com"):
        okta_state.add_user(login, first_name=login.split("@")[0].title(), last_name="Example")
    with tempfile.TemporaryDirectory(prefix="custodes-demo-") as workdir:
        async with (
            running(okta.create_app(okta_state)) as okta_url,
            running(chat.create_app(chat_state)) as chat_url,
        ):
            settings = demo_settings(project, Path(workdir), okta_url, chat_url, port)
            async with await Services.open(settings) as services:
                app = create_app(services)
                async with listening(app, "127.0.0.1", port) as api_url, aiohttp.ClientSession() as http:
                    console.print(
                        Panel.fit(
                            f"Custodes demo: API at {api_url}, Okta sandbox at {okta_url}\n"
                            f"{len(services.rules.rules)} rules, {len(services.playbooks)} playbook(s), "
                            f"store in {workdir}",
                            title="custodes demo",
                        )
                    )
                    console.print(_story_table())
                    okta_records = [record for _, record, _ in iter_records(STORY / "okta.ndjson")]
                    secret = os.environ["CUSTODES_DEMO_WEBHOOK_SECRET"]
                    posted = await _post_signed(http, f"{api_url}/webhooks/generic", secret, okta_records)
                    console.print(
                        f"Okta events posted to the signed webhook: {posted['stored']} stored, "
                        f"{len(posted['findings'])} finding(s)"
                    )
                    trail = FileConnector(
                        "demo:cloudtrail",
                        "cloudtrail",
                        settings.source("cloudtrail"),
                        [STORY / "cloudtrail.json"],
                    )
                    report = await services.pipeline.replay(trail)
                    console.print(
                        f"CloudTrail log file replayed: {report.stored} stored, "
                        f"{len(report.new_findings)} finding(s), {len(report.runs)} playbook run(s)"
                    )
                    await app[tasks_key].drain()
                    token = os.environ["CUSTODES_DEMO_API_TOKEN"]
                    console.print(_findings_table(await _findings(http, api_url, console)))
                    await _approve_waiting(http, api_url, services, console)
                    async with services.store.transaction() as tx:
                        runs = await tx.list_runs()
                    console.print(_actions_table(runs))
                    console.print(_sandbox_table(okta_state, chat_state))

                    async def call(method: str, where: str, token: str, body: Any) -> Any:
                        return await _api(http, method, where, token, body)

                    await open_case_for_alice(call, api_url, console)
                    console.print(f"Compliance report (SOC 2, last 30 days): {await _compliance_report(services)}")
                    if once:
                        return
                    console.print(
                        f"\nServing until Ctrl-C. Try:\n  curl -H 'Authorization: Bearer {token}' "
                        f"{api_url}/api/findings"
                    )
                    await asyncio.Event().wait()
