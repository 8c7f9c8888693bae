"""`custodes case` and `custodes feedback` as a user runs them: replayed findings open a case, which is triaged,
commented, closed with a disposition; feedback is given, listed and revoked; access is granted and a legal hold
lifted by the roles allowed; bad input is one line and exit 2."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import DatabaseSettings

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "src" / "custodes" / "demo"
TOKENS = {"ann": ("tok-analyst-0123456789", "analyst"), "vic": ("tok-viewer-0123456789", "viewer")}


@dataclass(frozen=True, slots=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def custodes(config: Path, *args: str, who: str = "ann", tokens: dict[str, tuple[str, str]] = TOKENS) -> Outcome:
    env = {f"T_{name.upper()}": token for name, (token, _) in tokens.items()}
    env |= {"COLUMNS": "200", "CUSTODES_API_TOKEN": tokens[who][0]}
    result = CliRunner().invoke(app, [*args, "--config", str(config)], env=env)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def test_a_case_from_replayed_findings_to_a_disposition(tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    (tmp_path / "playbooks").mkdir()
    tokens = ", ".join(f"{{name: {n}, token: 'env:T_{n.upper()}', role: {r}}}" for n, (_, r) in TOKENS.items())
    config.write_text(
        f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'c.db'}\n"
        f"detection:\n  rules: [{ROOT / 'detections' / 'rules'}]\n"
        f"playbooks:\n  paths: [{tmp_path / 'playbooks'}]\n"
        f"server:\n  api_tokens: [{tokens}]\n"
    )
    replayed = custodes(config, "replay", "--source", "cloudtrail", str(STORY / "cloudtrail.json"))
    assert replayed.returncode == 0, replayed.stderr

    listed = custodes(config, "case", "list", "--json", who="vic")
    assert listed.returncode == 0, listed.stderr
    [case] = json.loads(listed.stdout)
    assert case["status"] == "new" and case["subject"].startswith("p-"), "the person is pseudonymised"

    refused = custodes(config, "case", "update", case["id"], "--status", "triage", who="vic")
    assert refused.returncode == 2 and "needs the analyst role" in refused.stderr
    bad = custodes(config, "case", "update", case["id"], "--status", "done")
    assert bad.returncode == 2 and "--status: 'done' is not one of" in bad.stderr
    moved = custodes(config, "case", "update", case["id"], "--status", "triage", "--assignee", "ann")
    assert moved.returncode == 0 and "status new -> triage" in moved.stdout
    noted = custodes(config, "case", "comment", case["id"], "benign: handover before leaving")
    assert noted.returncode == 0, noted.stderr

    shown = json.loads(custodes(config, "case", "show", case["id"], "--json").stdout)
    finding = next(m["ref"] for m in shown["members"] if m["kind"] == "finding")
    given = custodes(
        config,
        "feedback",
        "give",
        "--finding",
        finding,
        "--verdict",
        "benign",
        "--reason",
        "handover",
        "--case",
        case["id"],
    )
    assert given.returncode == 0, given.stderr
    on_cause = ["--finding", finding, "--verdict", "expected", "--reason", "r", "--cause", "other_host"]
    refused_cause = custodes(config, "feedback", "give", *on_cause)
    assert refused_cause.returncode == 2 and "is not a behaviour-scoring finding with causes" in refused_cause.stderr
    [feedback] = json.loads(custodes(config, "feedback", "list", "--active", "--json").stdout)
    assert feedback["case_id"] == case["id"] and feedback["entity"].startswith("p-")
    assert custodes(config, "feedback", "revoke", feedback["id"]).returncode == 0
    assert json.loads(custodes(config, "feedback", "list", "--active", "--json").stdout) == []

    closed = custodes(config, "case", "close", case["id"], "--disposition", "benign", "--reason", "handover")
    assert closed.returncode == 0 and "closed: benign" in closed.stdout
    table = custodes(config, "case", "show", case["id"]).stdout
    assert f"case {case['id']}" in table and "closed (benign)" in table and "assigned to ann" in table
    assert "benign: handover before leaving" in table and "cli:ann" in table


def test_granting_access_lifting_a_hold_and_linking_only_what_exists(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    config = tmp_path / "custodes.yaml"
    (tmp_path / "playbooks").mkdir()
    people = TOKENS | {"ada": ("tok-admin-0123456789", "admin"), "lee": ("tok-legal-0123456789", "legal")}
    tokens = ", ".join(f"{{name: {n}, token: 'env:T_{n.upper()}', role: {r}}}" for n, (_, r) in people.items())
    schema = f"\n  schema_name: {database.schema_name}" if database.schema_name else ""
    config.write_text(
        f"database:\n  url: '{database.url}'{schema}\n"
        f"detection:\n  rules: [{ROOT / 'detections' / 'rules'}]\n"
        f"playbooks:\n  paths: [{tmp_path / 'playbooks'}]\n"
        f"responder:\n  evidence:\n    directory: {tmp_path / 'evidence'}\n"
        f"server:\n  api_tokens: [{tokens}]\n"
    )

    def as_(who: str, *args: str) -> Outcome:
        return custodes(config, *args, who=who, tokens=people)

    assert as_("ann", "replay", "--source", "cloudtrail", str(STORY / "cloudtrail.json")).returncode == 0
    [case] = json.loads(as_("ann", "case", "list", "--json").stdout)
    for kind in ("finding", "run", "evidence"):
        missing = as_("ann", "case", "link", case["id"], kind, "nope")
        assert missing.returncode == 2 and f"no {kind} 'nope'" in missing.stderr, missing
    assert "--kind: 'badge' is not one of" in as_("ann", "case", "link", case["id"], "badge", "x").stderr

    escalate = ("case", "update", case["id"], "--status", "escalated_legal", "--need-to-know", "lee")
    assert as_("ann", *escalate, "--reason", "counsel").returncode == 0
    assert "you may see" in as_("vic", "case", "show", case["id"]).stderr
    grant = ("case", "grant", case["id"], "vic", "--reason", "HR partner")
    assert "needs the admin role" in as_("ann", *grant).stderr
    assert "no case 'case-nope'" in as_("ada", "case", "grant", "case-nope", "vic", "--reason", "x").stderr
    assert (
        "--reason: granting access needs one" in as_("ada", "case", "grant", case["id"], "vic", "--reason", " ").stderr
    )
    granted = as_("ada", *grant)
    assert granted.returncode == 0 and "added vic" in granted.stdout
    assert as_("vic", "case", "show", case["id"]).returncode == 0

    lift = ("case", "lift-hold", case["id"], "--reason", "matter settled")
    assert "needs the legal role" in as_("ann", *lift).stderr
    lifted = as_("lee", *lift)
    assert lifted.returncode == 0 and "legal hold lifted" in lifted.stdout, lifted
    again = as_("ada", *lift)
    assert again.returncode == 2 and "is not under legal hold" in again.stderr
    shown = json.loads(as_("lee", "case", "show", case["id"], "--json").stdout)
    assert shown["legal_hold"] is False and shown["restricted"] is True
    assert [e["kind"] for e in shown["timeline"]][-1] == "hold_lifted"
