"""An entity's behaviour risk: its current score, recent day scores and what made each one."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from custodes.detections.scoring.explain import sentences
from custodes.detections.scoring.privacy import is_pseudonym
from custodes.detections.scoring.risk import DayScore
from custodes.detections.scoring.service import entity_scores
from custodes.server.api.entities import visible_person
from custodes.server.endpoints import Call, Model, NoInput, RevealQuery, endpoint


class RiskQuery(RevealQuery):
    """How many recent day scores."""

    days: int = Field(default=7, ge=1, le=90, description="how many recent day scores")


class ContributionOut(Model):
    """One feature's part in a day's score."""

    feature: str
    value: float = Field(description="the day's amount")
    usual: float = Field(description="the entity's usual amount per active day (a day without any counting as 0)")
    peer_usual: float = Field(description="the median of the peers' usual amounts per active day")
    points: float
    last_seen_days_ago: int | None
    history_days: int
    days: int = Field(description="the active days `value` and `usual` cover: 1, or a rise's window")
    share: float = Field(
        description="the share of the entity's active days with the feature: `usual / share` is their usual amount on "
        "the days they have any (for a rise, the share of their active days before its window, whose `usual` is "
        "already for as many days)"
    )
    hits: int = Field(description="for a rise: the active days of its window with the channel; 0 otherwise")
    event_ids: list[str] = Field(description="the events behind it")


class SigmaOut(Model):
    """A Sigma finding counted in the day's score."""

    rule_id: str
    title: str
    points: float


class DayScoreOut(Model):
    """An entity's score for one local day, explained."""

    day: date
    risk: float
    points: float
    provisional: bool = Field(description="the day is still open: the score may rise until it closes")
    place: int | None = Field(
        description="its place in the closed day's review order (1 first: new leads within the review budget, then "
        "by risk); null while the day is open"
    )
    contributions: list[ContributionOut]
    modifiers: dict[str, float]
    watchlists: list[str]
    sigma: list[SigmaOut]
    event_ids: list[str] = Field(description="evidence behind the contributions, strongest first")
    explanation: list[str] = Field(description="the contributions, Sigma findings and modifiers, one sentence each")

    @classmethod
    def of(cls, score: DayScore, *, provisional: bool) -> DayScoreOut:
        """The API view of a day score."""
        return cls(
            day=score.day,
            risk=round(score.risk, 3),
            points=round(score.points, 3),
            provisional=provisional,
            place=score.place,
            contributions=[
                ContributionOut(
                    feature=c.feature,
                    value=c.value,
                    usual=round(c.usual, 4),
                    peer_usual=round(c.peer_usual, 4),
                    points=round(c.points, 3),
                    last_seen_days_ago=c.last_seen_days_ago,
                    history_days=c.history_days,
                    days=c.days,
                    share=round(c.share, 4),
                    hits=c.hits,
                    event_ids=c.event_ids,
                )
                for c in score.contributions
            ],
            modifiers={k: round(v, 3) for k, v in score.modifiers.items()},
            watchlists=score.watchlists,
            sigma=[SigmaOut(rule_id=rule, title=title, points=points) for rule, title, points in score.sigma],
            event_ids=score.event_ids,
            explanation=sentences(score),
        )


class EntityRisk(Model):
    """An entity's current risk and its recent day scores, newest first."""

    entity: str
    kind: str | None = Field(description="person or service account; null when the entity was never scored")
    risk: float | None = Field(description="the newest day's risk (the open day's, when it is scored); null if none")
    day: date | None = Field(description="the day of `risk`")
    scores: list[DayScoreOut]


@endpoint(
    "GET",
    "/api/entities/{id}/risk",
    role="viewer",
    summary="An entity's risk and its explanation",
    query=RiskQuery,
    response=EntityRisk,
    tags=("entities",),
)
async def entity_risk(call: Call[RiskQuery, NoInput]) -> EntityRisk:
    """Current risk, recent day scores and each score's contributions (feature, value, usual, peers' usual,
    points), modifiers and evidence event ids; an entity never scored has no scores."""
    names = await call.people()
    revealed = names("probe") == "probe"
    asked = call.request.match_info["id"]
    await visible_person(call, asked)
    settings = call.services.settings.scoring
    service = call.services.pipeline.scoring
    resolver = await call.resolver()
    if is_pseudonym(asked):
        # scores are keyed by pseudonym when pseudonymisation is on; by the stored name otherwise
        key = asked.strip().lower() if settings.pseudonymise else resolver.resolve(await call.person(asked))[0]
    else:
        key = resolver.resolve(await call.person(asked))[0]
    async with call.services.store.transaction() as tx:
        stored = await entity_scores(tx, key, limit=call.query.days)
    scores = [DayScoreOut.of(score, provisional=False) for score in stored]
    kind = stored[0].kind if stored else None
    state = None if service is None else service.engine.states.get(key)
    current = None if service is None or state is None else service.engine.score_open(state)
    if current is not None and all(s.day != current.day for s in stored):
        scores = [DayScoreOut.of(current, provisional=True), *scores][: call.query.days]
        kind = current.kind
    if state is not None:
        kind = state.kind
    shown = names(key) or key
    if revealed and is_pseudonym(key):
        person = resolver.person(key)
        shown = person.id if person is not None else await call.person(key)
    return EntityRisk(
        entity=shown,
        kind=kind,
        risk=scores[0].risk if scores else None,
        day=scores[0].day if scores else None,
        scores=scores,
    )
