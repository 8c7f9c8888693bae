"""The daily review budget: its places go to new leads, not to people the analysts already have."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from custodes.config import ScoringSettings
from custodes.detections.scoring.baselines import EntityState
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.identity import IdentityResolver
from custodes.detections.scoring.risk import FAMILY_REST, Contribution, DayScore
from custodes.model import Event
from test_scoring_engine import START, ecs, normal_day, person, theft_day

PEOPLE = 30


def small_theft(i: int, day: int) -> list[Event]:
    base = START + timedelta(days=day, hours=14)
    user = f"user{i}"
    events = [ecs(user, base, "host", "usb-device-connected", device={"type": "usb"})]
    for n in range(6):
        file = {"path": f"E:\\{n}.xlsx", "size": 1_000_000}
        events.append(ecs(user, base + timedelta(seconds=n + 1), "file", "removable-media-write", file=file))
    return events


def rankings(
    settings: ScoringSettings, extra: dict[int, list[Event]], findings: list[str] | None = None
) -> dict[date, list[DayScore]]:
    rng = random.Random(5)
    resolver = IdentityResolver([person(i) for i in range(PEOPLE)], settings.identities)
    seen: dict[date, list[DayScore]] = {}
    engine = ScoringEngine(
        settings, resolver, org_domains=["corp.example"], on_ranking=lambda day, ranking: seen.update({day: ranking})
    )
    for day in range(24):
        events = [e for i in range(PEOPLE) for e in normal_day(rng, i, day)] + extra.get(day, [])
        for event in sorted(events, key=lambda e: e.time):
            engine.observe(event)
    engine.flush()
    if findings is not None:
        findings += [f"{f.entity} {f.first_seen.date()} {f.rule_id}" for f in engine.take_findings()]
    return seen


def test_a_person_already_ranked_within_the_budget_leaves_the_next_place_to_a_new_lead() -> None:
    extra = {20: theft_day(7, 20), 21: theft_day(7, 21) + small_theft(3, 21)}
    second = (START + timedelta(days=21)).date()
    settings = ScoringSettings(
        pseudonymise=False, warmup_days=5, review_budget=1 / PEOPLE, top_k=1, top_k_min_risk=1, threshold=500
    )
    plain: list[str] = []
    without_review = rankings(settings.model_copy(update={"review_days": 0}), extra, plain)[second]
    assert [s.entity for s in without_review[:2]] == ["user7@corp.example", "user3@corp.example"]
    reviewed: list[str] = []
    with_review = rankings(settings, extra, reviewed)
    # Findings are for the strongest days whoever has them: the review budget reorders the ranking only.
    assert reviewed == plain and any("user7" in f for f in plain), (reviewed, plain)
    assert with_review[(START + timedelta(days=20)).date()][0].entity == "user7@corp.example"
    assert [s.entity for s in with_review[second][:2]] == ["user3@corp.example", "user7@corp.example"]


def _score(entity: str, points: float, feature: str = "usb_files") -> DayScore:
    contribution = Contribution(feature, 1.0, 0.0, 0.0, points, 9.0, 0.0, None, 20)
    return DayScore(entity, "person", date(2024, 3, 20), points, points, [contribution], {}, [], [])


def test_clearly_stronger_or_new_evidence_takes_a_place_again_and_the_hold_ends() -> None:
    settings = ScoringSettings(pseudonymise=False, review_budget=1 / PEOPLE, review_days=3)
    engine = ScoringEngine(settings, IdentityResolver([person(i) for i in range(PEOPLE)], settings.identities))
    for name in ("a", "b"):
        engine.state_for(name, "person")
    assert engine.review_slots == 1

    def order(day: int, *scores: DayScore) -> list[str]:
        return [s.entity for s in engine._review_order(day, list(scores))]

    assert order(100, _score("a", 60), _score("b", 30)) == ["a", "b"]
    assert engine.states["a"].reviewed_points == 60
    assert order(101, _score("a", 80), _score("b", 30)) == ["b", "a"]
    assert order(102, _score("a", 95), _score("b", 40)) == ["a", "b"]
    assert engine.states["a"].reviewed_points == 95
    assert order(103, _score("a", 100), _score("b", 50)) == ["b", "a"]
    assert order(104, _score("a", 100, "download"), _score("b", 30)) == ["a", "b"]
    assert engine.states["a"].reviewed_features == {"download": 100, "usb_files": 95}
    # Held, a repeat counts at a third: ahead of a new lead of under a third of its points, behind one of more.
    assert order(105, _score("a", 100, "download"), _score("b", 30, "print")) == ["a", "b"]
    assert order(106, _score("a", 100, "download"), _score("b", 40, "print")) == ["b", "a"]
    assert order(109, _score("a", 100, "download"), _score("b", 80)) == ["a", "b"]


def test_one_kind_of_evidence_clearly_stronger_than_when_it_was_ranked_takes_a_place_again() -> None:
    settings = ScoringSettings(pseudonymise=False, review_budget=1 / PEOPLE, review_days=7)
    engine = ScoringEngine(settings, IdentityResolver([person(i) for i in range(PEOPLE)], settings.identities))
    for name in ("a", "b"):
        engine.state_for(name, "person")

    def day_of(entity: str, **points: float) -> DayScore:
        parts = [Contribution(feature, 1.0, 0.0, 0.0, value, 9.0, 0.0, None, 20) for feature, value in points.items()]
        total = sum(points.values())
        return DayScore(entity, "person", date(2024, 3, 20), total, total, parts, {}, [], [])

    def first(day: int, *scores: DayScore) -> str:
        return engine._review_order(day, list(scores))[0].entity

    # A first USB day at night, ranked for its odd hours and first use more than for its one connection ...
    assert first(100, day_of("a", off_hours=16, new_channel=15, usb=8), day_of("b", off_hours=10)) == "a"
    # ... then the same connections and hours again: held, the place goes to the new lead.
    assert first(101, day_of("a", off_hours=7, usb=7), day_of("b", off_hours=6)) == "b"
    # A USB rate three times the one it was ranked for is stronger evidence, though the day's total is lower.
    assert first(102, day_of("a", usb=27), day_of("b", off_hours=17)) == "a"
    assert engine.states["a"].reviewed_features == {"new_channel": 15, "off_hours": 16, "usb": 27}
    assert first(103, day_of("a", usb=30), day_of("b", off_hours=17)) == "b"  # not 1.5 times 27


def test_a_state_stored_with_reviewed_features_as_a_list_reads_them_at_the_days_points() -> None:
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver([person(0)], settings.identities))
    stored = engine.state_for("a", "person").to_json()
    stored.update(reviewed_day=100, reviewed_points=40.0, reviewed_features=["usb", "off_hours"])
    assert EntityState.from_json("a", stored).reviewed_features == {"usb": 40.0, "off_hours": 40.0}


def test_a_mail_to_everyone_is_not_capped_with_soft_behaviour_signals() -> None:
    everyone = {"address": [f"user{i}@corp.example" for i in range(PEOPLE)]}
    when = START + timedelta(days=20, hours=22)
    mass = ecs("user5", when, "email", "send", email={"direction": "outbound", "to": everyone})
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    day = rankings(settings, {20: [mass]})[when.date()]
    top = day[0]
    assert top.entity == "user5@corp.example"
    fanout = next(c for c in top.contributions if c.feature == "mail_fanout")
    soft = sorted((c.points for c in top.contributions if c.feature in ("mail_recipients", "off_hours")), reverse=True)
    behaviour = soft[0] + FAMILY_REST * sum(soft[1:])  # signs of one family after its strongest count at half
    assert fanout.points > 20 and behaviour > 10
    assert top.points == pytest.approx(fanout.points + behaviour)
    assert top.points > settings.family_caps["behaviour"]
    assert not [m for m in top.modifiers if m.startswith("cap:")]


def test_each_closed_days_scores_carry_their_place_in_the_review_order() -> None:
    extra = {20: theft_day(7, 20), 21: theft_day(7, 21) + small_theft(3, 21)}
    settings = ScoringSettings(pseudonymise=False, warmup_days=5, review_budget=1 / PEOPLE)
    ranked = rankings(settings, extra)
    for day, ranking in ranked.items():
        assert [score.place for score in ranking] == list(range(1, len(ranking) + 1)), day
    second = ranked[(START + timedelta(days=21)).date()]
    assert second[0].entity == "user3@corp.example" and second[0].place == 1  # the new lead, not the risk leader
    assert next(s for s in second if s.entity == "user7@corp.example").place == 2
