"""What the service runs: its Sigma rules (and rejected ones) and its playbooks."""

from __future__ import annotations

from pydantic import Field

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
    """Every loaded playbook."""
    disabled = call.services.pipeline.disabled_playbooks
    return PlaybookList(
        playbooks=[
            PlaybookOut(
                name=p.playbook.name,
                version=p.playbook.version,
                description=p.playbook.description,
                enabled=p.playbook.enabled and p.playbook.name not in disabled,
                file=str(p.file),
            )
            for p in call.services.pipeline.playbooks
        ]
    )
