"""Cases over real HTTP: findings open a case per person, the analyst's lifecycle, need to know and legal hold on
escalation, analyst feedback that suppresses a pattern and can be revoked, and re-identification on the timeline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from console_support import (
    PEOPLE,
    Served,
    api,
    csrf_of,
    okta_record,
    page,
    post_events,
    served,
    settings_for,
    signed_in,
)
from custodes.cases import feedback
from custodes.cases.filing import file_findings
from custodes.cases.hold import prune_evidence
from custodes.config import DatabaseSettings
from custodes.detections.scoring.service import pseudonymizer_for
from custodes.model import Finding, Severity
from custodes.responder.evidence import collect, custody_entries, open_bundle
from custodes.responder.registry import ActionContext

ALICE = PEOPLE[0]


@pytest.fixture
async def site(database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    settings = settings_for(database, tmp_path, monkeypatch)
    settings.responder.evidence.directory = tmp_path / "evidence"
    async with served(settings) as site:
        yield site


async def pseudonym_of(site: Served, person: str) -> str:
    return (await pseudonymizer_for(site.services.settings.scoring, site.services.store))(person)


async def alice_case(site: Served, who: str = "analyst") -> dict[str, Any]:
    subject = await pseudonym_of(site, ALICE)
    status, page = await api(site.url, "GET", f"/api/cases?subject={subject}", who)
    assert status == 200 and len(page["cases"]) == 1, page
    status, case = await api(site.url, "GET", f"/api/cases/{page['cases'][0]['id']}", who)
    assert status == 200
    return dict(case)


async def bundle(site: Served, key: str) -> str:
    services = site.services
    ctx = ActionContext(
        settings=services.settings.responder,
        http=services.http,
        idempotency_key=key,
        store=services.store,
        app=services.settings,
    )
    now = datetime.now(UTC)
    made = await collect(ctx, entity=ALICE, since=now - timedelta(days=1), until=now, reason="case test")
    return str(made["bundle_id"])


async def test_findings_open_one_case_per_person_due_by_the_sla(site: Served) -> None:
    status, page = await api(site.url, "GET", "/api/cases", "viewer")
    assert status == 200
    subjects = [case["subject"] for case in page["cases"]]
    assert ALICE not in subjects and PEOPLE[1] not in subjects, "people are pseudonymised"
    case = await alice_case(site, "viewer")
    findings = [m["ref"] for m in case["members"] if m["kind"] == "finding"]
    async with site.services.store.transaction() as tx:
        mine = [f.id for f in await tx.list_findings(limit=100) if f.entity == ALICE]
    assert findings == mine and len(mine) == 1, "the finding about alice opened her case"
    settings = site.services.settings.cases
    opened = datetime.fromisoformat(case["opened_at"])
    assert datetime.fromisoformat(case["due_at"]) == opened + timedelta(hours=settings.sla_hours[case["priority"]])
    assert case["status"] == "new" and case["first_triaged_at"] is None
    assert case["timeline"][0]["kind"] == "opened"
    assert case["priority"] != "critical"

    now = datetime.now(UTC)
    worse = Finding("f-worse", "k-worse", "sigma", "r-worse", "Worse", Severity.CRITICAL, ALICE, [], [], now, now)
    async with site.services.store.transaction() as tx:
        await tx.record_finding(worse, timedelta(hours=1))
        assert await file_findings(tx, settings, [worse]) == [case["id"]]
    joined = await alice_case(site, "viewer")
    assert [m["ref"] for m in joined["members"] if m["kind"] == "finding"] == [*mine, "f-worse"]
    assert joined["priority"] == "critical"
    assert datetime.fromisoformat(joined["due_at"]) == opened + timedelta(hours=settings.sla_hours["critical"])
    assert joined["overdue"] is False


async def test_an_analyst_walks_a_case_to_a_disposition(site: Served) -> None:
    case = await alice_case(site)
    path = f"/api/cases/{case['id']}"
    status, refused = await api(site.url, "PATCH", path, "viewer", {"status": "triage"})
    assert status == 403 and refused["error"]["code"] == "forbidden"
    status, moved = await api(site.url, "PATCH", path, "analyst", {"status": "triage", "assignee": "analyst-token"})
    assert status == 200 and moved["status"] == "triage" and moved["first_triaged_at"] is not None
    assert moved["assignee"] == "analyst-token" and moved["overdue"] is False
    status, note = await api(
        site.url, "POST", f"{path}/comments", "analyst", {"text": "benign: handover before leaving"}
    )
    assert status == 201 and note["author"] == "api:analyst-token"
    status, linked = await api(site.url, "POST", f"{path}/members", "analyst", {"kind": "run", "ref": site.run_id})
    assert status == 200 and linked == {"changed": True}
    status, missing = await api(site.url, "POST", f"{path}/members", "analyst", {"kind": "run", "ref": "nope"})
    assert status == 404 and missing["error"]["field"] == "ref"
    score = {"kind": "score", "ref": f"{case['subject']}@{datetime.now(UTC).date()}"}
    assert (await api(site.url, "POST", f"{path}/members", "analyst", score))[1] == {"changed": True}
    status, bad = await api(site.url, "POST", f"{path}/members", "analyst", {"kind": "score", "ref": "x@soon"})
    assert status == 404 and bad["error"]["field"] == "ref"
    status, bad = await api(site.url, "PATCH", path, "analyst", {"status": "done"})
    assert status == 400 and bad["error"]["field"] == "status"
    status, bad = await api(site.url, "POST", f"{path}/close", "analyst", {"reason": "x"})
    assert status == 400 and bad["error"]["field"] == "disposition"
    status, closed = await api(
        site.url, "POST", f"{path}/close", "analyst", {"disposition": "benign", "reason": "handover"}
    )
    assert status == 200 and closed["status"] == "closed" and closed["disposition"] == "benign"
    assert closed["closed_at"] is not None
    again = {"disposition": "benign", "reason": "x"}
    assert (await api(site.url, "POST", f"{path}/close", "analyst", again))[0] == 409
    assert {"kind": "score", "ref": score["ref"]} in [{"kind": m["kind"], "ref": m["ref"]} for m in closed["members"]]
    kinds = [e["kind"] for e in closed["timeline"]]
    assert {"opened", "updated", "commented", "linked", "closed"} <= set(kinds)
    assert [c["text"] for c in closed["comments"]] == ["benign: handover before leaving"]
    status, audit = await api(site.url, "GET", "/api/audit?limit=1000", "admin")
    actions = {(r["action"], r["subject"]) for r in audit["entries"]}
    assert {("case.updated", case["id"]), ("case.commented", case["id"]), ("case.closed", case["id"])} <= actions
    status, closed_only = await api(site.url, "GET", "/api/cases?status=closed", "viewer")
    assert [c["id"] for c in closed_only["cases"]] == [case["id"]]


async def test_escalation_restricts_to_named_people_and_holds_the_evidence(site: Served) -> None:
    held = await bundle(site, "held")
    case = await alice_case(site)
    path = f"/api/cases/{case['id']}"
    status, escalated = await api(
        site.url,
        "PATCH",
        path,
        "analyst",
        {"status": "escalated_legal", "need_to_know": ["approver-token"], "reason": "counsel asked"},
    )
    assert status == 200, escalated
    assert escalated["restricted"] and escalated["legal_hold"]
    assert escalated["access"] == ["analyst-token", "approver-token"]
    assert {"kind": "evidence", "ref": held} in [{"kind": m["kind"], "ref": m["ref"]} for m in escalated["members"]]
    for outsider in ("viewer", "admin"):
        assert (await api(site.url, "GET", path, outsider))[0] == 404
        listed = (await api(site.url, "GET", "/api/cases", outsider))[1]["cases"]
        assert case["id"] not in [c["id"] for c in listed]
    assert (await api(site.url, "GET", path, "approver"))[0] == 200
    assert (await api(site.url, "POST", f"{path}/comments", "approver2", {"text": "let me in"}))[0] == 404

    free = await bundle(site, "free")
    settings = site.services.settings.responder.evidence
    async with site.services.store.transaction() as tx:
        from custodes.responder.evidence import recorded_bundle

        held_row, free_row = await recorded_bundle(tx, held), await recorded_bundle(tx, free)
    assert held_row is not None and free_row is not None
    custody = [entry for _, entry in custody_entries(open_bundle(held_row["location"], settings)) if entry]
    assert any("legal hold placed" in entry["what"] for entry in custody)
    pruned = await prune_evidence(site.services.store, settings, timedelta(0), "custodes:retention")
    assert pruned.deleted == [free] and pruned.refused == {held: [case["id"]]}
    assert not await asyncio.to_thread(Path(free_row["location"]).exists)
    assert await asyncio.to_thread(Path(held_row["location"]).exists)
    custody = [entry for _, entry in custody_entries(open_bundle(held_row["location"], settings)) if entry]
    assert custody[-1]["what"] == "retention delete refused"

    status, granted = await api(
        site.url, "POST", f"{path}/access", "admin", {"principals": ["viewer-token"], "reason": "HR partner"}
    )
    assert status == 200 and granted == {"changed": True}
    assert (await api(site.url, "GET", path, "viewer"))[0] == 200

    lift = {"reason": "matter settled"}
    assert (await api(site.url, "POST", f"{path}/hold/lift", "analyst", lift))[0] == 403
    status, bad = await api(site.url, "POST", f"{path}/hold/lift", "legal", {"reason": " "})
    assert status == 400 and bad["error"]["field"] == "reason"
    assert (await api(site.url, "POST", "/api/cases/case-nope/hold/lift", "legal", lift))[0] == 404
    status, lifted = await api(site.url, "POST", f"{path}/hold/lift", "legal", lift)
    assert status == 200 and lifted == {"released": [held]}
    assert (await api(site.url, "POST", f"{path}/hold/lift", "admin", lift))[1]["error"]["code"] == "conflict"
    custody = [entry for _, entry in custody_entries(open_bundle(held_row["location"], settings)) if entry]
    assert custody[-1]["what"] == f"legal hold lifted (case {case['id']})" and custody[-1]["why"] == "matter settled"
    after = (await api(site.url, "GET", path, "analyst"))[1]
    assert after["restricted"] and not after["legal_hold"] and after["timeline"][-2]["kind"] == "hold_lifted"
    audit = (await api(site.url, "GET", "/api/audit?limit=1000", "admin"))[1]["entries"]
    assert ("case.hold_lifted", case["id"], "api:legal-token") in [
        (a["action"], a["subject"], a["actor"]) for a in audit
    ]
    pruned = await prune_evidence(site.services.store, settings, timedelta(0), "custodes:retention")
    assert pruned.deleted == [held] and not await asyncio.to_thread(Path(held_row["location"]).exists)


async def test_what_a_restricted_case_groups_is_hidden_from_outsiders(site: Served) -> None:
    held = await bundle(site, "need-to-know")
    case = await alice_case(site)
    path = f"/api/cases/{case['id']}"
    assert (await api(site.url, "POST", f"{path}/members", "analyst", {"kind": "run", "ref": site.run_id}))[0] == 200
    finding = next(m["ref"] for m in case["members"] if m["kind"] == "finding")
    subject = case["subject"]
    given = {"finding": finding, "case": case["id"], "verdict": "benign", "reason": "handover"}
    status, verdict = await api(site.url, "POST", "/api/feedback", "analyst", given)
    assert status == 201
    escalate = {"status": "escalated_hr", "need_to_know": ["approver-token"], "reason": "HR review"}
    assert (await api(site.url, "PATCH", path, "analyst", escalate))[0] == 200
    reads = {
        f"/api/findings/{finding}": None,
        f"/api/runs/{site.run_id}": None,
        f"/api/entities/{subject}/timeline": None,
        f"/api/entities/{subject}/risk": None,
    }
    lists = {"/api/findings?limit=500": ("findings", finding), "/api/runs?limit=500": ("runs", site.run_id)}
    lists["/api/evidence?limit=500"] = ("bundles", held)
    lists["/api/feedback"] = ("feedback", verdict["id"])
    for who, sees in (("viewer", False), ("admin", False), ("approver", True), ("analyst", True)):
        for item in reads:
            assert (await api(site.url, "GET", item, who))[0] == (200 if sees else 404), (who, item)
        for listing, (key, ident) in lists.items():
            status, body = await api(site.url, "GET", listing, who)
            assert status == 200 and (ident in [row["id"] for row in body[key]]) == sees, (who, listing)
    for who, status in (("admin", 404), ("analyst", 200)):
        verify = await api(site.url, "POST", f"/api/evidence/{held}/verify", who, {"reason": "check"})
        assert verify[0] == status, (who, verify)
        assert (await api(site.url, "GET", f"/api/entities/{subject}/sessions", who))[0] == status
        opened = await api(site.url, "POST", "/api/cases", who, {"title": "Copy", "findings": [finding]})
        assert opened[0] == (404 if status == 404 else 201), (who, opened)
        again = await api(site.url, "POST", "/api/feedback", who, {**given, "case": None})
        assert again[0] == (404 if status == 404 else 201), (who, again)
        revoked = await api(site.url, "POST", f"/api/feedback/{verdict['id']}/revoke", who)
        assert revoked[0] == (404 if status == 404 else 200), (who, revoked)
    others = (await api(site.url, "GET", "/api/findings?limit=500", "viewer"))[1]["findings"]
    assert others and all(f["entity"] != subject for f in others), "other people's findings stay listed"
    for who, sees in (("viewer", False), ("approver", True)):
        listed = (await api(site.url, "GET", "/api/entities", who))[1]["entities"]
        assert (subject in [e["id"] for e in listed]) == sees and len(listed) > 1, (who, listed)
    async with await signed_in(site.url, "viewer") as http:
        assert (await page(http, site.url, f"/people/{subject}"))[0] == 404
        assert (await page(http, site.url, f"/runs/{site.run_id}"))[0] == 404
        status, board = await page(http, site.url, "/")
        assert status == 200 and f"/people/{subject}" not in board and "/people/p-" in board
    async with await signed_in(site.url, "approver") as http:
        status, html = await page(http, site.url, f"/people/{subject}")
        assert status == 200 and finding in html
        assert f"/people/{subject}" in (await page(http, site.url, "/"))[1]


async def test_feedback_suppresses_the_pattern_for_that_person_until_revoked(site: Served) -> None:
    case = await alice_case(site)
    async with site.services.store.transaction() as tx:
        target = next(f for f in await tx.list_findings(limit=100) if f.entity == ALICE)
    status, given = await api(
        site.url,
        "POST",
        "/api/feedback",
        "analyst",
        {"finding": target.id, "case": case["id"], "verdict": "benign", "reason": "benign: handover before leaving"},
    )
    assert status == 201 and given["pattern"] == target.rule_id and given["effect"] == "suppress"
    assert given["entity"] == await pseudonym_of(site, ALICE)
    shown = (await api(site.url, "GET", f"/api/cases/{case['id']}", "viewer"))[1]["feedback"]
    assert [f["id"] for f in shown] == [given["id"]]
    on_finding = (await api(site.url, "GET", f"/api/findings/{target.id}", "viewer"))[1]
    assert on_finding["cases"] == [case["id"]] and on_finding["feedback"] == [given["id"]]

    async def count() -> int:
        async with site.services.store.transaction() as tx:
            found = await tx.get_finding(target.id)
        assert found is not None
        return found.count

    before = await count()
    kind = {"okta.mfa_deactivate": "user.mfa.factor.deactivate"}.get(target.rule_id, "user.mfa.factor.deactivate")
    await post_events(site.url, [okta_record(101, ALICE, kind, datetime.now(UTC))])
    assert await count() == before, "the suppressed pattern raised nothing for alice"
    status, revoked = await api(site.url, "POST", f"/api/feedback/{given['id']}/revoke", "analyst")
    assert status == 200 and revoked["revoked_at"] is not None
    assert (await api(site.url, "POST", f"/api/feedback/{given['id']}/revoke", "analyst"))[0] == 409
    await post_events(site.url, [okta_record(102, ALICE, kind, datetime.now(UTC))])
    assert await count() == before + 1, "after revoking, the pattern counts again"
    listed = (await api(site.url, "GET", "/api/feedback?active=false", "viewer"))[1]["feedback"]
    assert [f["id"] for f in listed] == [given["id"]]
    assert (await api(site.url, "GET", f"/api/findings/{target.id}", "viewer"))[1]["feedback"] == []


async def test_feedback_on_a_cause_of_a_scoring_finding_is_checked_against_its_causes(site: Served) -> None:
    now = datetime.now(UTC)
    tags = ["scoring", "scoring.threshold", "cause.other_host", "cause.off_hours"]
    scored = Finding(
        "f-score", "k-score", "scoring", "scoring.threshold", "Risk 80", Severity.HIGH, ALICE, [], tags, now, now
    )
    case = await alice_case(site)
    async with site.services.store.transaction() as tx:
        await tx.record_finding(scored, timedelta(hours=1))
        assert await file_findings(tx, site.services.settings.cases, [scored]) == [case["id"]]
        sigma = next(f for f in await tx.list_findings(limit=100) if f.detector != "scoring")
    body = {"finding": "f-score", "cause": "other_host", "verdict": "expected", "reason": "expected: desk-side support"}
    status, given = await api(
        site.url, "POST", "/api/feedback", "analyst", {**body, "effect": "downweight", "weight": 0.25}
    )
    assert status == 201, given
    assert (given["kind"], given["pattern"], given["effect"], given["weight"]) == (
        "cause",
        "other_host",
        "downweight",
        0.25,
    )
    refused = {
        "usb": (400, "cause: 'usb' is not a cause of f-score (its causes are off_hours, other_host)"),
        "Other-Host": (400, None),  # not a feature's name at all
    }
    for cause, (code, message) in refused.items():
        status, error = await api(site.url, "POST", "/api/feedback", "analyst", {**body, "cause": cause})
        assert status == code and error["error"]["field"].endswith("cause"), error
        assert message is None or error["error"]["message"] == message
    status, error = await api(site.url, "POST", "/api/feedback", "analyst", {**body, "finding": sigma.id})
    assert status == 400 and "it is not a behaviour-scoring finding with causes" in error["error"]["message"]
    listed = (await api(site.url, "GET", "/api/feedback?finding=f-score", "viewer"))[1]["feedback"]
    assert [(f["kind"], f["pattern"]) for f in listed] == [("cause", "other_host")]
    async with await signed_in(site.url, "analyst") as http:  # the console offers the finding's causes
        path = f"/cases/{case['id']}"
        status, html = await page(http, site.url, path)
        assert status == 200 and '<option value="off_hours">only the cause off_hours</option>' in html
        form = {"csrf": csrf_of(html), "finding": "f-score", "verdict": "benign", "reason": "night shift"}
        async with http.post(f"{site.url}{path}/feedback", data={**form, "cause": "off_hours"}) as r:
            assert r.status == 200 and "Updated." in await r.text()
            assert "cause <code>off_hours</code>" in await r.text()
    async with site.services.store.transaction() as tx:
        assert await feedback.active_for(tx, [ALICE]) == {}, "a cause's feedback suppresses no finding's rule"
        causes = (await feedback.causes(tx))[ALICE]
    assert [c.feature for c in causes] == ["other_host", "off_hours"]
    on_finding = (await api(site.url, "GET", "/api/findings/f-score", "viewer"))[1]["feedback"]
    assert sorted(on_finding) == sorted(c.id for c in causes)
    assert (await api(site.url, "GET", f"/api/findings/{sigma.id}", "viewer"))[1]["feedback"] == []


async def test_feedback_on_a_cause_can_cover_the_persons_department_or_peer_group(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An analyst who sees a habit of a whole team (desk-side support across machines) says so once for the team."""
    team = [("alice", "Agent"), ("carol", "Agent"), ("erin", "Lead"), ("frank", "Engineer"), ("gina", "Engineer")]
    people = [{"id": f"{name}@example.com", "department": "Support", "title": title} for name, title in team]
    (tmp_path / "people.json").write_text(json.dumps(people))
    settings = settings_for(database, tmp_path, monkeypatch)
    settings.scoring.directory = tmp_path / "people.json"
    async with served(settings) as site:
        now = datetime.now(UTC)
        tags = ["scoring", "scoring.threshold", "cause.other_host"]
        scored = {}
        for person in (ALICE, "carol@example.com", PEOPLE[1]):  # bob is not in the directory
            key = await pseudonym_of(site, person)
            scored[person] = Finding(
                f"f-{key}",
                f"k-{key}",
                "scoring",
                "scoring.threshold",
                "Risk 80",
                Severity.HIGH,
                key,
                [],
                tags,
                now,
                now,
            )
        async with site.services.store.transaction() as tx:
            for finding in scored.values():
                await tx.record_finding(finding, timedelta(hours=1))
            [case_id] = await file_findings(tx, site.services.settings.cases, [scored[ALICE]])
        body = {
            "finding": scored[ALICE].id,
            "cause": "other_host",
            "verdict": "expected",
            "reason": "desk-side support",
        }
        refused = {
            ("peers", scored[ALICE].id, "other_host"): "their department and title counts 2 people in the directory, "
            "fewer than 5; give the feedback on the person instead",
            ("department", scored[PEOPLE[1]].id, "other_host"): "the directory has no department for this person",
            ("department", scored[ALICE].id, None): "feedback on a rule is for its person",
        }
        for (scope, finding_id, cause), message in refused.items():
            asked = {**body, "scope": scope, "finding": finding_id, "cause": cause}
            status, error = await api(site.url, "POST", "/api/feedback", "analyst", asked)
            assert status == 400 and error["error"]["field"].endswith("scope") and message in error["error"]["message"]
        status, given = await api(site.url, "POST", "/api/feedback", "analyst", {**body, "scope": "department"})
        assert status == 201 and (given["scope"], given["scope_name"]) == ("department", "Support"), given
        async with site.services.store.transaction() as tx:
            held = await feedback.causes(tx)
        assert list(held) == [("department", "Support")] and held["department", "Support"][0].id == given["id"]
        carol = scored["carol@example.com"]
        listed = (await api(site.url, "GET", f"/api/feedback?entity={carol.entity}", "viewer"))[1]["feedback"]
        assert [f["id"] for f in listed] == [given["id"]], "the department's feedback is about carol too"
        assert (await api(site.url, "GET", f"/api/findings/{carol.id}", "viewer"))[1]["feedback"] == [given["id"]]
        bob = scored[PEOPLE[1]]
        assert (await api(site.url, "GET", f"/api/findings/{bob.id}", "viewer"))[1]["feedback"] == []
        async with await signed_in(site.url, "analyst") as http:
            path = f"/cases/{case_id}"
            status, html = await page(http, site.url, path)
            assert status == 200 and '<option value="department">a cause: for their department</option>' in html
            form = {"csrf": csrf_of(html), "finding": scored[ALICE].id, "verdict": "benign", "reason": "support desk"}
            async with http.post(
                f"{site.url}{path}/feedback", data={**form, "cause": "other_host", "scope": "department"}
            ) as r:
                assert r.status == 200 and "cause <code>other_host</code> for department Support" in await r.text()


async def test_revealing_names_inside_a_case_is_audited_on_its_timeline(site: Served) -> None:
    case = await alice_case(site)
    path = f"/api/cases/{case['id']}"
    assert (await api(site.url, "GET", f"{path}?reveal=interview", "analyst"))[0] == 403
    status, shown = await api(site.url, "GET", f"{path}?reveal=HR%20interview", "admin")
    assert status == 200 and shown["subject"] == ALICE
    revealed = [e for e in shown["timeline"] if e["kind"] == "revealed"]
    assert revealed and revealed[-1]["details"] == {"reason": "HR interview"}
    assert revealed[-1]["actor"] == "api:admin-token"
    again = (await api(site.url, "GET", f"{path}?reveal=HR%20interview", "admin"))[1]["timeline"]
    assert len([e for e in again if e["kind"] == "revealed"]) == 2, "each API read is its own reveal action"

    async def console_reveals() -> list[dict[str, Any]]:
        timeline = (await api(site.url, "GET", path, "admin"))[1]["timeline"]
        return [e for e in timeline if e["kind"] == "revealed" and "view" in e["details"]]

    for session in range(2):
        async with await signed_in(site.url, "admin") as http:
            for reason in ("case review", "case review", "case review", "legal hold check", "case review"):
                status, html = await page(http, site.url, f"/cases/{case['id']}?reveal={reason.replace(' ', '%20')}")
                assert status == 200 and ALICE in html
        views = await console_reveals()
        assert [e["details"]["reason"] for e in views] == ["case review", "legal hold check"] * (session + 1)
    assert len({e["details"]["view"] for e in views}) == 2, "a new sign-in is a new reveal action"
    status, created = await api(site.url, "POST", "/api/cases", "analyst", {"title": "x", "subject": ALICE})
    assert status == 403 and created["error"]["code"] == "reveal_required"
    incident = {"title": "Badge cloning at the Leeds office", "priority": "high", "findings": ["nope"]}
    assert (await api(site.url, "POST", "/api/cases", "analyst", incident))[0] == 404
    del incident["findings"]
    status, created = await api(site.url, "POST", "/api/cases", "analyst", incident)
    assert status == 201 and created["subject"] is None and created["priority"] == "high"
    assert created["opened_by"] == "api:analyst-token" and created["timeline"][0]["kind"] == "opened"
