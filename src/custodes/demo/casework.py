"""The demo's ending: the case Alice's findings opened, taken on by the analyst over the REST API (her playbook runs
linked, moved to investigating, a comment), then shown with her name revealed by the privacy officer (audited on
the case's timeline)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from custodes.errors import CustodesError

ALICE = "alice@example.com"
REASON = "demo+walkthrough"

Api = Callable[[str, str, str, Any], Awaitable[Any]]


async def open_case_for_alice(api: Api, url: str, console: Console) -> dict[str, Any]:
    """Find Alice's case, work it as the analyst, print it; return the case as the privacy officer sees it."""
    analyst, officer = os.environ["CUSTODES_DEMO_API_TOKEN"], os.environ["CUSTODES_DEMO_PRIVACY_TOKEN"]
    found = await api("GET", f"{url}/api/cases?subject={ALICE}&reveal={REASON}", officer, None)
    if not found["cases"]:
        raise CustodesError("no case was opened for alice@example.com")
    case_id = found["cases"][0]["id"]
    path = f"{url}/api/cases/{case_id}"
    runs = await api("GET", f"{url}/api/runs?limit=100", analyst, None)
    seen = await api("GET", path, analyst, None)
    for run in runs["runs"]:
        if run["entity"] == seen["subject"]:
            await api("POST", f"{path}/members", analyst, {"kind": "run", "ref": run["id"]})
    await api(
        "PATCH", path, analyst, {"status": "investigating", "assignee": "demo", "reason": "night-time MFA removal"}
    )
    note = "MFA removed and CloudTrail stopped within minutes at 02:00; she is suspended, evidence next."
    await api("POST", f"{path}/comments", analyst, {"text": note})
    case: dict[str, Any] = await api("GET", f"{path}?reveal={REASON}", officer, None)
    console.print(case_table(case))
    return case


def case_table(case: dict[str, Any]) -> Table:
    """A case as the demo prints it: its header, then what it groups."""
    table = Table(title=f"Case {case['id']} opened for {case['subject']}", show_lines=False)
    table.add_column("")
    table.add_column("")
    table.add_row("title", case["title"])
    table.add_row("status", f"{case['status']} (assigned to {case['assignee']})")
    table.add_row("priority", f"{case['priority']}, due for triage by {case['due_at']}")
    table.add_row("triaged", str(case["first_triaged_at"]))
    for member in case["members"]:
        table.add_row(member["kind"], member["ref"])
    table.add_row("timeline", ", ".join(event["kind"] for event in case["timeline"]))
    return table
