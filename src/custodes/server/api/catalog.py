"""What the service runs: its Sigma rules (and rejected ones) and its playbooks."""

from __future__ import annotations

from pydantic import Field

from custodes.model import utcnow
from custodes.playbooks.startcap import HOUR
from custodes.server.endpoints import Call, Model, NoInput, endpoint


class RuleOut(Model):
    """A loaded Sigma rule."""

    id: str
    title: str
    level: str
    logsource: str
    tags: list[str]
    enabled: bool = Field(description="false when disabled through the API: its matches raise no findings")


class RejectedRule(Model):
    """A rule file or rule that did not load, and why."""

    file: str
    rule_id: str | None
    reason: str
    line: int | None
    column: int | None


class RuleList(Model):
    """Loaded and rejected rules."""

    rules: list[RuleOut]
    rejected: list[RejectedRule]


class PlaybookOut(Model):
    """A loaded playbook."""

    name: str
    version: str
    description: str
    enabled: bool = Field(description="as the file says, and not disabled through the API")
    file: str
    max_runs_per_hour: int = Field(description="runs its findings and webhook records may start an hour (0: no cap)")
    started_last_hour: int = Field(description="runs the service started for it in the last hour")
    owed_starts: int = Field(
        description="starts the outbox owes it: waiting for the hour to allow them once started_last_hour reached "
        "max_runs_per_hour"
    )


class PlaybookList(Model):
    """Loaded playbooks."""

    playbooks: list[PlaybookOut]


@endpoint("GET", "/api/rules", role="viewer", summary="List Sigma rules", response=RuleList, tags=("catalog",))
async def list_rules(call: Call[NoInput, NoInput]) -> RuleList:
    """Every loaded rule, and every rejected one with its reason."""
    ruleset = call.services.rules
    disabled = call.services.pipeline.disabled_rules
    return RuleList(
        rules=[
            RuleOut(
                id=r.id,
                title=r.title,
                level=r.level.label,
                logsource=str(r.logsource),
                tags=list(r.tags),
                enabled=r.id not in disabled,
            )
            for r in ruleset.rules
        ],
        rejected=[
            RejectedRule(file=str(r.file), rule_id=r.rule_id, reason=r.reason, line=r.line, column=r.column)
            for r in ruleset.rejections
        ],
    )


@endpoint("GET", "/api/playbooks", role="viewer", summary="List playbooks", response=PlaybookList, tags=("catalog",))
async def list_playbooks(call: Call[NoInput, NoInput]) -> PlaybookList:
    """Every loaded playbook, with the runs it started in the last hour and the starts it is owed."""
    pipeline = call.services.pipeline
    cap = pipeline.start_cap
    async with call.services.store.transaction() as tx:
        started, owed = await tx.starts_by_playbook(utcnow() - HOUR, cap.actor)
    return PlaybookList(
        playbooks=[
            PlaybookOut(
                name=p.playbook.name,
                version=p.playbook.version,
                description=p.playbook.description,
                enabled=p.playbook.enabled and p.playbook.name not in pipeline.disabled_playbooks,
                file=str(p.file),
                max_runs_per_hour=cap.limit(p.playbook),
                started_last_hour=started.get(p.playbook.name, 0),
                owed_starts=owed.get(p.playbook.name, 0),
            )
            for p in pipeline.playbooks
        ]
    )
