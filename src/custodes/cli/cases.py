"""`custodes case ...` and `custodes feedback ...`: the case queue and analyst feedback from the shell, as the token
presented (`--token`): the same roles, need to know, pseudonyms and audit as the API."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from custodes.cli.common import ConfigOption, JsonOption, TokenOption, console, identify, run, settings_from
from custodes.cli.root import app
from custodes.errors import CustodesError

if TYPE_CHECKING:
    from custodes.detections.scoring.identity import IdentityResolver

case_app = typer.Typer(
    help="Cases: list, show, open, update, comment, link, grant, lift-hold, close.", no_args_is_help=True
)
feedback_app = typer.Typer(help="Analyst feedback: list, give, revoke.", no_args_is_help=True)
app.add_typer(case_app, name="case")
app.add_typer(feedback_app, name="feedback")

RevealOption = Annotated[
    str | None,
    typer.Option("--reveal", help="Show real names, for this reason (a re-identification role; audited)."),
]
CaseArgument = Annotated[str, typer.Argument(help="The case id.")]


@dataclass(slots=True)
class Session:
    """Who runs a command, and how people are shown and looked up for them."""

    services: Any
    name: str
    role: str
    reveal: str | None

    @property
    def actor(self) -> str:
        """The actor recorded on timelines and in the audit log."""
        return f"cli:{self.name}"

    async def shown(self) -> Callable[[str | None], str | None]:
        """Pseudonyms, unless a re-identification role asked with --reveal (audited)."""
        settings = self.services.settings.scoring
        if not settings.pseudonymise or await self.revealing():
            return lambda name: name
        from custodes.detections.scoring.privacy import is_pseudonym
        from custodes.detections.scoring.service import pseudonymizer_for

        pseudonymizer = await pseudonymizer_for(settings, self.services.store)
        return lambda name: name if name is None or is_pseudonym(name) else pseudonymizer(name)

    async def resolver(self) -> IdentityResolver:
        """The directory's people and how names map to entity keys (`current_resolver`)."""
        from custodes.detections.scoring.service import current_resolver

        services = self.services
        return await current_resolver(services.settings.scoring, services.store, services.pipeline.scoring)

    async def revealing(self) -> bool:
        """Whether --reveal was given by a role allowed to; refused (and audited) otherwise."""
        if self.reveal is None:
            return False
        allowed = self.role in self.services.settings.scoring.reidentify_roles
        async with self.services.store.transaction() as tx:
            await tx.audit(self.actor, "cli.reidentify", None, {"allowed": allowed, "reason": self.reveal})
        if not allowed:
            raise CustodesError(
                f"--reveal needs one of the roles {', '.join(self.services.settings.scoring.reidentify_roles)}"
            )
        return True

    async def person(self, name: str) -> str:
        """The stored name a pseudonym stands for; a real name needs --reveal."""
        from custodes.detections.scoring.privacy import is_pseudonym
        from custodes.detections.scoring.service import entity_for_pseudonym, pseudonymizer_for

        settings = self.services.settings.scoring
        if not settings.pseudonymise:
            return name
        if is_pseudonym(name):
            pseudonymizer = await pseudonymizer_for(settings, self.services.store)
            return await entity_for_pseudonym(self.services.store, pseudonymizer, name) or name
        if not await self.revealing():
            raise CustodesError(
                f"{name}: looking a person up by name links the name to their pseudonym",
                hint="use the pseudonym, or pass --reveal REASON with a re-identification role",
            )
        return name


def _session(
    config: Any, token: str | None, role: str, reveal: str | None, body: Callable[[Session], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    """The command's work as `token` (at least `role`), with a case's refusals as one line naming the option."""
    from custodes.cases.book import CaseError
    from custodes.services import Services

    async def work() -> None:
        settings = settings_from(config)
        name, held = identify(settings, token, role)
        async with await Services.open(settings) as services:
            try:
                await body(Session(services, name, held, reveal))
            except CaseError as exc:
                raise _failed(exc) from None

    return work


def _json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def _when(value: Any) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M}"


async def _visible(session: Session, tx: Any, case_id: str) -> dict[str, Any]:
    from custodes.cases import book

    case = await book.get_case(tx, case_id)
    if case is None or not await book.visible(tx, case, session.name):
        raise CustodesError(f"no case {case_id!r} you may see")
    return case


def _failed(exc: Exception) -> CustodesError:
    """A case error as a user error naming the option (`status: ...` -> `--status: ...`)."""
    field = getattr(exc, "field", None)
    text = str(exc)
    if field and text.startswith(f"{field}: "):
        return CustodesError(f"--{field.replace('_', '-')}: {text.removeprefix(f'{field}: ')}")
    return CustodesError(text)


@case_app.command("list")
def case_list(
    status: Annotated[str | None, typer.Option(help="Only cases with this status.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only cases about this person (pseudonym).")] = None,
    assignee: Annotated[str | None, typer.Option(help="Only cases assigned to this name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    reveal: RevealOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The case queue, newest first (restricted cases only for the people on their access list)."""
    from custodes.cases import book

    async def body(session: Session) -> None:
        names = await session.shown()
        who = await session.person(subject) if subject else None
        async with session.services.store.transaction() as tx:
            rows = await book.list_cases(
                tx, principal=session.name, limit=limit, status=status, subject=who, assignee=assignee
            )
        rows = [{**row, "subject": names(row["subject"])} for row in rows]
        if as_json:
            _json(rows)
            return
        table = Table("case", "subject", "title", "status", "priority", "assignee", "due", "opened")
        for row in rows:
            state = row["status"] + (f" ({row['disposition']})" if row["disposition"] else "")
            table.add_row(
                row["id"],
                row["subject"] or "",
                row["title"][:60],
                state + (" [restricted]" if row["restricted"] else ""),
                row["priority"],
                row["assignee"] or "",
                _when(row["due_at"]),
                _when(row["opened_at"]),
            )
        console.print(table)

    run(_session(config, token, "viewer", reveal, body))


@case_app.command("show")
def case_show(
    case: CaseArgument,
    reveal: RevealOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A case: its header, members, timeline and comments."""
    from custodes.cases import book

    async def body(session: Session) -> None:
        names = await session.shown()
        async with session.services.store.transaction() as tx:
            row = await _visible(session, tx, case)
            if session.reveal is not None:
                await book.reveal(tx, case, session.actor, session.reveal)
            detail = {
                **row,
                "subject": names(row["subject"]),
                "members": await book.members(tx, case),
                "timeline": await book.timeline(tx, case),
                "comments": await book.comments(tx, case),
                "access": await book.access_list(tx, case),
            }
        if as_json:
            _json(detail)
            return
        decided = f" ({row['disposition']})" if row["disposition"] else ""
        console.print(
            Text.assemble(
                f"case {row['id']} ",
                (row["title"], "bold"),
                f": {row['status']}{decided}, {row['priority']} priority, about {detail['subject'] or 'no one'}, "
                f"assigned to {row['assignee'] or 'no one'}, due {_when(row['due_at'])}",
            ),
            highlight=False,
        )
        if row["restricted"]:
            console.print(f"restricted to: {', '.join(detail['access'])}; legal hold: {row['legal_hold']}")
        members = Table("kind", "ref", "added by", "at")
        for member in detail["members"]:
            members.add_row(member["kind"], member["ref"], member["added_by"], _when(member["added_at"]))
        console.print(members)
        timeline = Table("at", "who", "what", "details")
        for event in detail["timeline"]:
            timeline.add_row(_when(event["at"]), event["actor"], event["kind"], orjson.dumps(event["details"]).decode())
        console.print(timeline)
        for note in detail["comments"]:
            console.print(f"{_when(note['created_at'])} {note['author']}: {note['text']}", highlight=False)

    run(_session(config, token, "viewer", reveal, body))


@case_app.command("open")
def case_open(
    title: Annotated[str, typer.Option(help="What the case is about.")],
    subject: Annotated[str | None, typer.Option(help="The person (pseudonym; a name needs --reveal).")] = None,
    priority: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    assignee: Annotated[str | None, typer.Option(help="Who works it.")] = None,
    finding: Annotated[list[str] | None, typer.Option(help="A finding id to link (repeatable).")] = None,
    reveal: RevealOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open a case (due by the SLA of its priority)."""
    from custodes.cases import book

    async def body(session: Session) -> None:
        who = await session.person(subject) if subject else None
        async with session.services.store.transaction() as tx:
            for ident in finding or []:
                if await tx.get_finding(ident) is None:
                    raise CustodesError(f"--finding: no finding {ident!r}")
            row = await book.open_case(
                tx,
                session.services.settings.cases,
                actor=session.actor,
                title=title,
                subject=who,
                priority=priority,
                assignee=assignee,
                members=[("finding", ident) for ident in finding or []],
            )
        if as_json:
            _json({"id": row["id"], "due_at": row["due_at"]})
        else:
            console.print(f"opened case {row['id']}, due {_when(row['due_at'])}", highlight=False)

    run(_session(config, token, "analyst", reveal, body))


@case_app.command("update")
def case_update(
    case: CaseArgument,
    status: Annotated[str | None, typer.Option(help="triage, investigating, escalated_hr, escalated_legal.")] = None,
    assignee: Annotated[str | None, typer.Option(help="Who works it.")] = None,
    priority: Annotated[str | None, typer.Option(help="low, medium, high or critical.")] = None,
    need_to_know: Annotated[
        list[str] | None, typer.Option("--need-to-know", help="Who may see it once escalated (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (on the timeline).")] = "",
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Move a case on; escalating to HR or legal restricts it to --need-to-know and holds its evidence."""
    from custodes.cases import book
    from custodes.cases.hold import place_hold

    async def body(session: Session) -> None:
        if status == "closed":
            raise CustodesError("--status: close a case with `custodes case close`")
        async with session.services.store.transaction() as tx:
            before = await _visible(session, tx, case)
            change = await book.update(
                tx,
                session.services.settings.cases,
                case,
                session.actor,
                status=status,
                assignee=assignee,
                priority=priority,
                need_to_know=need_to_know or (),
                reason=reason,
            )
        held = []
        if change.case["legal_hold"] and not before["legal_hold"]:
            held = await place_hold(session.services, case, session.actor, reason or str(status))
        changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in change.changed.items()) or "nothing changed"
        console.print(f"case {case}: {changed}", highlight=False)
        if held:
            console.print(f"legal hold placed on evidence: {', '.join(held)}", highlight=False)

    run(_session(config, token, "analyst", None, body))


@case_app.command("comment")
def case_comment(
    case: CaseArgument,
    text: Annotated[str, typer.Argument(help="The comment.")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Comment on a case."""
    from custodes.cases import book

    async def body(session: Session) -> None:
        async with session.services.store.transaction() as tx:
            await _visible(session, tx, case)
            await book.comment(tx, case, session.actor, text)
        console.print(f"commented on case {case}", highlight=False)

    run(_session(config, token, "analyst", None, body))


@case_app.command("link")
def case_link(
    case: CaseArgument,
    kind: Annotated[str, typer.Argument(help="finding, run, evidence or score.")],
    ref: Annotated[str, typer.Argument(help="Its id (a day score: <scored entity>@<YYYY-MM-DD>).")],
    remove: Annotated[bool, typer.Option("--remove", help="Unlink instead.")] = False,
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Link an item to a case (or unlink it with --remove); a bundle linked to a case under legal hold is held."""
    from custodes.cases import book
    from custodes.cases.hold import place_hold

    async def body(session: Session) -> None:
        async with session.services.store.transaction() as tx:
            await _visible(session, tx, case)
            if not remove and not await book.member_exists(tx, kind, ref):
                raise CustodesError(f"no {kind} {ref!r} (REF names no stored {kind})")
            change = book.unlink if remove else book.link
            done = await change(tx, case, session.actor, kind, ref)
        if done and kind == "evidence" and not remove:
            await place_hold(session.services, case, session.actor, "linked")
        verb = "unlinked" if remove else "linked"
        console.print(f"{kind} {ref} {verb}" if done else f"{kind} {ref}: nothing to change", highlight=False)

    run(_session(config, token, "analyst", None, body))


@case_app.command("grant")
def case_grant(
    case: CaseArgument,
    principals: Annotated[list[str], typer.Argument(help="Token or user names to put on its access list.")],
    reason: Annotated[str, typer.Option(help="Why (audited).")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Put people on a case's access list (admin; works on a restricted case you cannot see; audited)."""
    from custodes.cases import book

    async def body(session: Session) -> None:
        async with session.services.store.transaction() as tx:
            added = await book.grant_access(tx, case, session.actor, principals, reason)
        console.print(f"case {case}: added {', '.join(added)}" if added else f"case {case}: nothing to change")

    run(_session(config, token, "admin", None, body))


@case_app.command("lift-hold")
def case_lift_hold(
    case: CaseArgument,
    reason: Annotated[str, typer.Option(help="Why (audited, and in each bundle's chain of custody).")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Lift a case's legal hold (legal or admin): retention may then delete its evidence bundles."""
    from custodes.cases.hold import lift_hold
    from custodes.responder.registry import ActionError

    async def body(session: Session) -> None:
        evidence = session.services.settings.responder.evidence
        try:
            released = await lift_hold(session.services.store, evidence, case, session.actor, reason)
        except ActionError as exc:
            raise CustodesError(f"the hold stays; a bundle's storage failed: {exc}") from None
        console.print(f"case {case}: legal hold lifted; released {', '.join(released) or 'no bundles'}")

    run(_session(config, token, "legal", None, body))


@case_app.command("close")
def case_close(
    case: CaseArgument,
    disposition: Annotated[str, typer.Option(help="malicious, negligent, compromised or benign.")],
    reason: Annotated[str, typer.Option(help="Why (on the timeline).")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Close a case with a disposition."""
    from custodes.cases import book

    async def body(session: Session) -> None:
        async with session.services.store.transaction() as tx:
            row = await _visible(session, tx, case)
            if row["status"] == "closed":
                raise CustodesError(f"case {case} is already closed")
            await book.update(
                tx,
                session.services.settings.cases,
                case,
                session.actor,
                status="closed",
                disposition=disposition,
                reason=reason,
            )
        console.print(f"case {case} closed: {disposition}", highlight=False)

    run(_session(config, token, "analyst", None, body))


@feedback_app.command("list")
def feedback_list(
    subject: Annotated[str | None, typer.Option(help="Only about this person (pseudonym).")] = None,
    case: Annotated[str | None, typer.Option(help="Only given on this case.")] = None,
    active: Annotated[bool | None, typer.Option("--active/--revoked", help="Only active, or only revoked.")] = None,
    reveal: RevealOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Analyst feedback, newest first."""
    from custodes.cases import feedback

    async def body(session: Session) -> None:
        names = await session.shown()
        who = await session.person(subject) if subject else None
        groups = feedback.groups_of(await session.resolver(), who) if who else None
        async with session.services.store.transaction() as tx:
            rows = await feedback.listing(tx, entity=who, groups=groups, case_id=case, active=active)
        rows = [{**row, "entity": names(row["entity"])} for row in rows]
        if as_json:
            _json(rows)
            return
        table = Table("id", "person", "pattern", "verdict", "effect", "reason", "by", "state")
        for row in rows:
            effect = row["effect"] + (f" x{row['weight']:g}" if row["effect"] == "downweight" else "")
            state = "active" if row["revoked_at"] is None else f"revoked {_when(row['revoked_at'])}"
            table.add_row(
                row["id"],
                row["entity"],
                _pattern(row),
                row["verdict"],
                effect,
                row["reason"],
                row["created_by"],
                state,
            )
        console.print(table)

    run(_session(config, token, "viewer", reveal, body))


def _whom(row: dict[str, Any]) -> str | None:
    """The group a feedback record covers beyond its person: a peer group or department (None: the person)."""
    group = {"peers": "peer group", "department": "department"}.get(row["scope"])
    return None if group is None else f"{group} {row['scope_name']}"


def _pattern(row: dict[str, Any]) -> str:
    """What a feedback record is on, and the group it covers, if any."""
    if row["pattern_kind"] == "rule":
        return str(row["pattern"])
    whom = _whom(row)
    return f"cause {row['pattern']}" + ("" if whom is None else f" for {whom}")


@feedback_app.command("give")
def feedback_give(
    finding: Annotated[str, typer.Option(help="The finding whose person and rule the verdict is about.")],
    verdict: Annotated[str, typer.Option(help="benign, expected, false_positive, malicious, ...")],
    reason: Annotated[str, typer.Option(help="Why, e.g. 'benign: handover before leaving'.")],
    effect: Annotated[str, typer.Option(help="suppress, or downweight (with --weight).")] = "suppress",
    weight: Annotated[
        float, typer.Option(help="Severity scale (a cause's: points scale) for downweight, 0 to below 1.")
    ] = 0.0,
    cause: Annotated[
        str | None,
        typer.Option(
            help="One cause of a behaviour-scoring finding (a feature its tags name cause.<feature>, as other_host): "
            "scale that cause's points in the person's day scores instead of suppressing the finding's rule."
        ),
    ] = None,
    scope: Annotated[
        str,
        typer.Option(
            help="With --cause, whom it covers: person, peers (everyone of the person's department and title in the "
            "directory) or department; a group of fewer than 5 people is refused."
        ),
    ] = "person",
    case: Annotated[str | None, typer.Option(help="The case it was decided on.")] = None,
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Suppress or down-weight a finding's pattern for its person from now on: its rule, or with --cause one cause of
    a behaviour-scoring finding (the person's day scores leave it out or count it at --weight; with --scope, the day
    scores of everyone in their peer group or department)."""
    from custodes.cases import feedback

    async def body(session: Session) -> None:
        resolver = await session.resolver() if scope != "person" else None
        async with session.services.store.transaction() as tx:
            found = await tx.get_finding(finding)
            if found is None or found.entity is None:
                raise CustodesError(f"--finding: no finding {finding!r} about a person")
            kind, pattern = feedback.pattern_of(found, cause)
            scope_name = feedback.scope_of(resolver, found.entity, kind, scope)
            row = await feedback.give(
                tx,
                actor=session.actor,
                entity=found.entity,
                pattern=pattern,
                kind=kind,
                scope=scope,
                scope_name=scope_name,
                verdict=verdict,
                reason=reason,
                effect=effect,
                weight=weight,
                case_id=case,
                finding_id=finding,
            )
        what = pattern if kind == "rule" else f"the scoring cause {pattern}"
        console.print(f"feedback {row['id']}: {effect} {what} for {_whom(row) or 'this person'}", highlight=False)

    run(_session(config, token, "analyst", None, body))


@feedback_app.command("revoke")
def feedback_revoke(
    ident: Annotated[str, typer.Argument(metavar="FEEDBACK", help="The feedback id.")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke feedback: the pattern counts again from now on."""
    from custodes.cases import feedback

    async def body(session: Session) -> None:
        async with session.services.store.transaction() as tx:
            await feedback.revoke(tx, ident, session.actor)
        console.print(f"feedback {ident} revoked", highlight=False)

    run(_session(config, token, "analyst", None, body))
