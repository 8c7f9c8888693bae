"""Behaviour scoring on data it was not built for: first channel use, spikes, disconnects, visits, roaming admins."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from custodes.config import ScoringSettings
from custodes.detections.scoring.baselines import EntityState
from custodes.detections.scoring.catalog import BY_NAME
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.explain import sentence, sentences
from custodes.detections.scoring.features import Extractor
from custodes.detections.scoring.identity import IdentityResolver, Person
from custodes.detections.scoring.risk import (
    BITS_PER_SD,
    DEAD_BAND_BITS,
    FAMILY_REST,
    Contribution,
    DayScore,
    RiskModel,
    streak_bits,
)
from custodes.detections.scoring.service import day_score
from custodes.model import Event, LogSource

START = datetime(2024, 3, 4, tzinfo=UTC)
PEOPLE = 30
ADMIN = 29

Extra = Callable[[int], list[dict[str, Any]]]


def person(i: int) -> Person:
    department, title = ("IT", "Systems Administrator") if i == ADMIN else ("Finance", "Analyst")
    return Person(id=f"user{i}@corp.example", department=department, title=title, timezone="UTC", hosts=[f"WS-{i}"])


def record(user: int, when: datetime, category: str, action: str, **extra: Any) -> dict[str, Any]:
    raw = {"@timestamp": when.isoformat(), "event": {"category": [category], "action": action}}
    raw["user"] = {"name": f"user{user}"}
    raw.update(extra)
    return raw


def logon(user: int, when: datetime, host: str) -> dict[str, Any]:
    return record(user, when, "authentication", "logged-in", host={"name": host})


def usb(user: int, when: datetime, action: str = "usb-device-connected") -> dict[str, Any]:
    return record(user, when, "host", action, device={"type": "usb"}, host={"name": f"WS-{user}"})


def office_day(rng: random.Random, user: int, day: int) -> list[dict[str, Any]]:
    """A benign day: logon, some mail; everyone but person 0 uses USB a few times a day (a heavy-USB team)."""
    base = START + timedelta(days=day)
    records = [logon(user, base + timedelta(hours=9), f"WS-{user}")]
    for _ in range(rng.randint(2, 5)):
        to = {"address": [f"user{rng.randint(0, PEOPLE - 1)}@corp.example"]}
        when = base + timedelta(hours=rng.uniform(9, 17))
        records.append(record(user, when, "email", "send", email={"direction": "outbound", "to": to}))
    if user not in (0, ADMIN):
        for _ in range(rng.randint(1, 3)):
            when = base + timedelta(hours=rng.uniform(9, 17))
            records += [usb(user, when), usb(user, when + timedelta(minutes=20), "usb-device-disconnected")]
    if user == ADMIN:  # roams: logs on to six colleagues' machines every day, different ones each day
        for other in rng.sample(range(1, ADMIN), 6):
            records.append(logon(ADMIN, base + timedelta(hours=rng.uniform(9, 17)), f"WS-{other}"))
    return records


def run(
    days: int, extra: Extra, skip: Callable[[int, int], bool] | None = None, **knobs: Any
) -> dict[date, list[DayScore]]:
    """Score `days` of office life plus `extra(day)` records; the rankings of every closed date."""
    settings = ScoringSettings(pseudonymise=False, warmup_days=5, **knobs)
    resolver = IdentityResolver([person(i) for i in range(PEOPLE)], settings.identities)
    rankings: dict[date, list[DayScore]] = {}
    engine = ScoringEngine(settings, resolver, org_domains=["corp.example"], on_ranking=rankings.__setitem__)
    rng = random.Random(11)
    number = 0
    for day in range(days):
        records = [r for i in range(PEOPLE) if not (skip and skip(i, day)) for r in office_day(rng, i, day)]
        records += extra(day)
        for raw in sorted(records, key=lambda r: str(r["@timestamp"])):
            number += 1
            engine.observe(Event(f"e{number}", datetime.fromisoformat(raw["@timestamp"]), "ep", LogSource(), raw))
    engine.flush()
    return rankings


def day_of(rankings: dict[date, list[DayScore]], day: int, user: int) -> tuple[int, DayScore]:
    ranking = rankings[(START + timedelta(days=day)).date()]
    for rank, score in enumerate(ranking):
        if score.entity == f"user{user}@corp.example":
            return rank, score
    raise AssertionError(f"user{user} not scored on day {day}")


def points(score: DayScore, *features: str) -> float:
    return sum(c.points for c in score.contributions if c.feature in features)


def test_a_usb_disconnect_is_not_a_connection() -> None:
    x = Extractor(ScoringSettings())
    when = START
    assert x.extract(usb(1, when)).features == [("usb", 1.0)]  # type: ignore[union-attr]
    assert x.extract(usb(1, when, "usb-device-disconnected")).features == []  # type: ignore[union-attr]


def test_visits_to_leak_and_cloud_sites_are_signals_weaker_than_uploads() -> None:
    x = Extractor(ScoringSettings(competitor_domains=["rival.example/products"]))

    def web(domain: str, path: str = "/", method: str = "GET") -> list[tuple[str, float]]:
        raw = record(1, START, "web", "http-request", url={"domain": domain, "path": path})
        raw["http"] = {"request": {"method": method}}
        return x.extract(raw).features  # type: ignore[union-attr]

    assert web("pastebin.com") == [("leak_visit", 1.0)]
    assert web("pastebin.com", method="POST") == [("leak_upload", 1.0)]
    assert web("www.dropbox.com") == [("cloud_visit", 1.0)]
    assert web("www.dice.com") == [("job_search", 1.0)]
    assert web("www.linkedin.com", "/jobs/view/1") == [("job_search", 1.0)]
    assert web("www.linkedin.com", "/feed") == []
    assert web("notdropbox.com") == []
    assert web("rival.example", "/products/x") == [("competitor_visit", 1.0)]
    assert web("rival.example", "/blog") == []
    weights = ScoringSettings().feature_weights
    assert weights == {}  # the catalogue's weights apply
    assert BY_NAME["leak_visit"].weight < BY_NAME["leak_upload"].weight
    assert BY_NAME["cloud_visit"].weight < BY_NAME["cloud_upload"].weight


def test_a_first_ever_usb_use_counts_although_peers_use_usb_daily() -> None:
    rankings = run(20, lambda day: [usb(0, START + timedelta(days=day, hours=14))] if day == 16 else [])
    rank, score = day_of(rankings, 16, 0)
    assert points(score, "new_channel") > 0
    assert rank == 0, [(s.entity, round(s.risk)) for s in rankings[(START + timedelta(days=16)).date()][:3]]


def test_a_usb_spike_scores_substantially() -> None:
    spike = [usb(3, START + timedelta(days=15, hours=10, minutes=m)) for m in range(0, 120, 10)]
    rankings = run(17, lambda day: spike if day == 15 else [])
    rank, score = day_of(rankings, 15, 3)
    assert points(score, "usb") >= 10
    assert rank == 0


def test_a_channel_used_markedly_more_over_several_days_scores_as_a_rise() -> None:
    """Person 0 connects a drive on one day in four; then three times a day, four days running. No day alone is
    far from their habit; the run of days is, judged against their own days before it. The habit never rises."""

    def extra(day: int) -> list[dict[str, Any]]:
        connections = 3 if day >= 24 else int(day % 4 == 0)
        return [usb(0, START + timedelta(days=day, hours=10, minutes=20 * m)) for m in range(connections)]

    rankings = run(28, extra)
    assert [points(day_of(rankings, day, 0)[1], "usb_rise") for day in range(24)] == [0.0] * 24
    first = points(day_of(rankings, 24, 0)[1], "usb_rise")
    rank, score = day_of(rankings, 27, 0)
    assert points(score, "usb_rise") > max(first, points(score, "usb"), 10)
    assert rank == 0
    rise = next(c for c in score.contributions if c.feature == "usb_rise")
    assert rise.value == 12 and rise.event_ids
    assert any(
        line.startswith("12 removable media connections in their last 5 active days") for line in sentences(score)
    )


def test_weeks_of_a_channel_used_more_often_score_as_a_rise_over_the_longer_window() -> None:
    """Person 0 connects a drive once on one day in five; then once on four days in five, for weeks. Every such day
    is what they do; the weeks are not, and only the longer window, whose reference has not yet taken them in,
    shows it."""

    def extra(day: int) -> list[dict[str, Any]]:
        used = day % 5 != 4 if day >= 30 else day % 5 == 0
        return [usb(0, START + timedelta(days=day, hours=10))] if used else []

    rankings = run(50, extra)
    assert [points(day_of(rankings, day, 0)[1], "usb") for day in range(30, 50)] == [0.0] * 20
    assert [points(day_of(rankings, day, 0)[1], "usb_rise") for day in range(30)] == [0.0] * 30
    rises = [
        (rank, rise)
        for day in range(30, 50)
        for rank, score in [day_of(rankings, day, 0)]
        for rise in score.contributions
        if rise.feature == "usb_rise"
    ]
    rank, strongest = max(rises, key=lambda item: item[1].points)
    assert rank == 0 and strongest.days == 15 and strongest.points > 5
    assert 2 * strongest.usual < strongest.value <= 15
    # One connection a day: the days used, more than the amounts, make the rise, and the explanation says so.
    assert strongest.hits == strongest.value and 0.15 < strongest.share < 0.25
    assert strongest.occurrence_bits > BITS_PER_SD * strongest.magnitude_sd
    assert sentence(strongest) == (
        f"removable media connections on {strongest.hits} of their last 15 active days ({strongest.value:.0f} in all), "
        f"against {strongest.share:.0%} of their days before"
    )


def test_a_habit_of_half_the_days_become_every_day_for_weeks_scores_its_days_used() -> None:
    """Person 0 connects a drive on every other day (one or two connections), then on every day for three weeks (as
    many): a job seeker's thefts. Each day's amount is what the habit gives, and their sum over the window too little
    to score; the days used are not, and the rise says so in those terms."""

    def extra(day: int) -> list[dict[str, Any]]:
        connections = 1 + day % 2 if day >= 14 else (1 + day % 4 // 2 if day % 2 == 0 else 0)
        return [usb(0, START + timedelta(days=day, hours=10, minutes=20 * m)) for m in range(connections)]

    rankings = run(35, extra)
    rises = [c for day in range(14, 35) for c in day_of(rankings, day, 0)[1].contributions if c.feature == "usb_rise"]
    assert rises and all(c.days >= 10 and c.hits > c.share * c.days for c in rises)
    strongest = max(rises, key=lambda c: c.points)
    assert strongest.points > 5 and BITS_PER_SD * strongest.magnitude_sd < DEAD_BAND_BITS < strongest.occurrence_bits
    assert "removable media connections on" in sentence(strongest)
    assert [points(day_of(rankings, day, 0)[1], "usb_rise") for day in range(14)] == [0.0] * 14


def test_days_used_surprise_by_how_well_the_habit_is_known() -> None:
    """The beta-binomial tail of `streak_bits`: nothing at or under the habit's share, more for more days used, less
    for a habit known from fewer days, and a long habit known no better than from the window's own length."""
    assert streak_bits(0.5, 30, 5, 10) == 0.0 and streak_bits(0.5, 30, 0, 10) == 0.0
    steps = [streak_bits(0.5, 30, hits, 10) for hits in range(6, 11)]
    assert steps == sorted(steps) and steps[0] < 2.0 < 6.0 < steps[-1]
    assert streak_bits(0.5, 4, 10, 10) < streak_bits(0.5, 10, 10, 10) == streak_bits(0.5, 300, 10, 10)
    assert streak_bits(0.5, 30, 7, 10) < 4.0  # seven days of ten from a habit of half: no more than a drift


def test_one_act_seen_through_several_features_of_a_family_counts_once_in_full() -> None:
    """A copy of 40 files to USB shows as connections, files written and bytes: the strongest counts in full, the
    others of the family at half, and the explanation says how much that left out."""
    when = START + timedelta(days=15, hours=11)
    writes = [
        usb(3, when + timedelta(seconds=n), "removable-media-write") | {"file": {"path": f"E:\\{n}.docx", "size": 9e6}}
        for n in range(40)
    ]
    copy = [usb(3, when + timedelta(minutes=m)) for m in range(0, 60, 10)] + writes
    rankings = run(17, lambda day: copy if day == 15 else [])
    _, score = day_of(rankings, 15, 3)
    measures = sorted(c.points for c in score.contributions if c.feature in ("usb", "usb_files", "upload_bytes"))
    assert len(measures) == 3 and all(m > 0 for m in measures)
    family = [c.points for c in score.contributions if BY_NAME[c.feature].family == "exfiltration"]
    assert score.modifiers["overlap:exfiltration"] == pytest.approx((1 - FAMILY_REST) * (sum(family) - max(family)))
    assert any("exfiltration signs after the strongest counted at half" in line for line in sentences(score))


def test_a_newcomer_on_a_colleagues_machine_counts_from_their_novelty_days() -> None:
    """Person 7 starts on day 12; on their fourth day they log on to person 8's machine. How often they meet new
    machines is their peers' (who keep to their own) until their history says: it counts, before their warm-up."""
    late = lambda person, day: person == 7 and day < 12  # noqa: E731
    visit = lambda day: [logon(7, START + timedelta(days=day, hours=15), "WS-8")] if day == 15 else []  # noqa: E731
    rank, score = day_of(run(17, visit, late), 15, 7)
    assert points(score, "other_host") > 0 and rank == 0
    _, waiting = day_of(run(17, visit, late, novelty_days=5), 15, 7)
    assert points(waiting, "other_host") == 0


def test_a_roaming_administrator_is_quiet_on_an_ordinary_day() -> None:
    rankings = run(20, lambda day: [])
    settings = ScoringSettings()
    for day in range(6, 20):
        _, score = day_of(rankings, day, ADMIN)
        assert score.risk < settings.top_k_min_risk / 2, (day, score.to_json())
        assert points(score, "other_host") < 10


def test_an_administrator_on_an_absent_owners_machine_is_visible() -> None:
    def extra(day: int) -> list[dict[str, Any]]:
        return [logon(ADMIN, START + timedelta(days=day, hours=20), "WS-5")] if day in (4, 16) else []

    rankings = run(18, extra, skip=lambda user, day: user == 5 and day == 16)
    rank, score = day_of(rankings, 16, ADMIN)
    assert points(score, "absent_owner_host") > 0
    assert rank == 0
    contribution = next(c for c in score.contributions if c.feature == "absent_owner_host")
    assert contribution.value == 1 and contribution.event_ids


@pytest.mark.parametrize(("gap", "counted"), [(0, False), (1, True), (3, True), (7, True), (8, False)])
def test_an_account_on_the_machine_of_someone_just_at_its_owners_is_a_takeover_sign(gap: int, counted: bool) -> None:
    """Person 3 plugs a drive into person 4's machine; `gap` days later person 4's account logs on at person 3's
    machine in the evening (a keylogger's harvest used from the planter's own desk). On the days of the week after
    it counts on person 4's day and ranks them first; on the day of the visit (not yet closed and scored) or later
    than a week it does not."""
    plant, harvest = 10, 10 + gap

    def extra(day: int) -> list[dict[str, Any]]:
        records = []
        if day == plant:
            when = START + timedelta(days=day, hours=12)
            records += [logon(3, when, "WS-4"), usb(3, when + timedelta(minutes=2)) | {"host": {"name": "WS-4"}}]
        if day == harvest:
            records.append(logon(4, START + timedelta(days=day, hours=21), "WS-3"))
        return records

    rankings = run(harvest + 2, extra)
    rank, score = day_of(rankings, harvest, 4)
    assert (points(score, "reciprocal_host") > 0) is counted
    if counted:
        contribution = next(c for c in score.contributions if c.feature == "reciprocal_host")
        assert contribution.value == 1 and len(contribution.event_ids) == 1
        assert rank == 0 and "takeover" in RiskModel(ScoringSettings()).stages_of(score)
        assert any("who used theirs in the week before" in line for line in sentences(score))


def test_a_colleague_at_ones_machine_makes_no_other_machine_a_takeover_sign() -> None:
    """Person 3 used person 4's machine; person 4 then logs on at person 5's: no reciprocal use."""

    def extra(day: int) -> list[dict[str, Any]]:
        if day == 10:
            return [logon(3, START + timedelta(days=day, hours=12), "WS-4")]
        return [logon(4, START + timedelta(days=day, hours=15), "WS-5")] if day == 12 else []

    _, score = day_of(run(14, extra), 12, 4)
    assert points(score, "other_host") > 0 and points(score, "reciprocal_host") == 0


def test_a_roaming_administrator_at_the_desk_of_someone_who_was_at_theirs_is_quiet() -> None:
    """Person 5 logs on at the administrator's machine; two days later the administrator, who logs on at six
    colleagues' desks a day, logs on at person 5's: what they do every day corroborates no takeover."""

    def extra(day: int) -> list[dict[str, Any]]:
        if day == 10:
            return [logon(5, START + timedelta(days=day, hours=12), f"WS-{ADMIN}")]
        return [logon(ADMIN, START + timedelta(days=day, hours=15), "WS-5")] if day == 12 else []

    _, score = day_of(run(14, extra), 12, ADMIN)
    assert points(score, "reciprocal_host") <= points(score, "other_host", "absent_owner_host") < 10
    assert score.risk < ScoringSettings().top_k_min_risk / 2


def test_an_account_at_the_desk_of_an_administrator_whose_visit_was_routine_is_no_takeover_sign() -> None:
    """The administrator logs on at person 5's desk, as at six colleagues' a day; two days later person 5 logs on at
    the administrator's desk in the evening. Unusual for person 5, but the visit before it was what the administrator
    does every day: no reciprocal use."""

    def extra(day: int) -> list[dict[str, Any]]:
        if day == 10:
            return [logon(ADMIN, START + timedelta(days=day, hours=15), "WS-5")]
        return [logon(5, START + timedelta(days=day, hours=21), f"WS-{ADMIN}")] if day == 12 else []

    _, score = day_of(run(14, extra), 12, 5)
    assert points(score, "other_host") > 0 and points(score, "reciprocal_host") == 0


def test_domain_lists_match_a_domain_its_subdomains_and_path_prefixes() -> None:
    from custodes.detections.scoring.features import DomainList

    def listed(target: str, entries: list[str]) -> bool:  # the rule, entry by entry
        host, _, path = target.partition("/")
        for entry in (e.lower() for e in entries):
            domain, slash, prefix = entry.partition("/")
            if (host == domain or host.endswith("." + domain)) and (not slash or path.startswith(prefix)):
                return True
        return False

    rng = random.Random(3)
    labels = ["mega", "nz", "jobs", "example", "com", "co", "uk", "www", "x"]
    entries = ["Mega.nz", "example.com/Careers", "jobs.example.co.uk", "x/", "com/a/b", "uk"]
    domains = DomainList(entries)
    for _ in range(3000):
        host = ".".join(rng.choice(labels) for _ in range(rng.randint(1, 4)))
        path = rng.choice(["", "/", "/careers", "/careers/1", "/a/b/c", "/a", "/x"])
        target = host + path
        assert (target in domains) == listed(target, entries), target
    assert "www.mega.nz" in domains and "notmega.nz" not in domains and "example.com/careers/x" in domains


def test_an_attack_on_the_accounts_mfa_and_data_collection_on_one_day_add_the_takeover_sequence() -> None:
    """Denied MFA pushes (an attack on the account's authentication) and, the same day, reads of files the person
    never opens: the account taken over and used to collect data adds the takeover -> collect sequence. The
    reads alone, the attack alone, and reads the day after an attack, do not."""

    def denied(user: int, when: datetime) -> list[dict[str, Any]]:
        stamps = [(when + timedelta(minutes=n)).isoformat() for n in range(12)]
        return [
            {
                "eventType": "user.mfa.okta_verify.deny_push",
                "published": at,
                "@timestamp": at,
                "actor": {"alternateId": f"user{user}@corp.example"},
                "outcome": {"result": "DENY"},
            }
            for at in stamps
        ]

    def reads(user: int, when: datetime) -> list[dict[str, Any]]:
        return [
            record(user, when + timedelta(minutes=n), "file", "open", file={"path": f"\\\\fs\\finance\\{n}.xlsx"})
            for n in range(40)
        ]

    def extra(day: int) -> list[dict[str, Any]]:
        base = START + timedelta(days=day, hours=10)
        if day == 14:
            return denied(5, base)
        if day == 15:
            return [*denied(3, base), *reads(3, base + timedelta(hours=1)), *reads(4, base), *reads(5, base)]
        return denied(6, base) if day == 16 else []

    rankings = run(18, extra)
    _, taken_over = day_of(rankings, 15, 3)
    assert points(taken_over, "mfa_failed") > 0 and points(taken_over, "file_access") > 0
    assert taken_over.modifiers["sequence:takeover->collect"] == 8.0
    assert "sequence takeover->collect (+8)" in sentences(taken_over)
    _, reader = day_of(rankings, 15, 4)
    _, attacked_before = day_of(rankings, 14, 5)
    _, read_after = day_of(rankings, 15, 5)
    _, attacked = day_of(rankings, 16, 6)
    assert points(reader, "file_access") > 0 and points(read_after, "file_access") > 0
    assert points(attacked_before, "mfa_failed") > 0 and points(attacked, "mfa_failed") > 0
    for score in (reader, attacked_before, read_after, attacked):
        assert not any(name.startswith("sequence:") for name in score.modifiers), score.entity


def test_a_count_of_first_times_reads_as_one_whatever_the_count() -> None:
    def first_times(feature: str, value: float, peer: float) -> str:
        return sentence(Contribution(feature, value, 0.0, peer, 20.0, 6.0, 0.0, None, 12))

    assert first_times("new_channel", 1, 0.05) == (
        "first uses of a data-movement channel: 1; 20x the peer median first uses of a data-movement channel"
    )
    assert first_times("new_device", 2, 0.0) == "sign-ins from a new device: 2"


def test_an_intermittent_habit_is_told_for_the_days_it_is_used() -> None:
    """Person 0 connects two drives every third day, then eight on one day. Their usual is two on the days they use
    a drive, a third of their days: an average over all their days (0.7) would make eight look like 12x."""

    def extra(day: int) -> list[dict[str, Any]]:
        connections = 8 if day == 24 else 2 * int(day % 3 == 0)
        return [usb(0, START + timedelta(days=day, hours=10, minutes=20 * m)) for m in range(connections)]

    _, score = day_of(run(25, extra), 24, 0)
    [used] = [c for c in score.contributions if c.feature == "usb"]
    assert 0.25 < used.share < 0.4 and used.usual / used.share == pytest.approx(2)
    assert sentence(used).startswith(
        f"8 removable media connections, 4.0x their usual 2 on days with any ({used.share:.0%} of their days)"
    )
    assert sentence(replace(used, share=0.95)).startswith("8 removable media connections, 12x their usual 0.7;")
    stored = day_score(score.to_json())
    assert [c.share for c in stored.contributions] == [round(c.share, 4) for c in score.contributions]


def test_unusual_visits_are_kept_with_a_stored_state() -> None:
    state = EntityState("k", "person", "Finance/Analyst", "Finance", ZoneInfo("UTC"), visits={"user4@corp.example": 9})
    data = orjson.loads(orjson.dumps(state.to_json()))
    assert EntityState.from_json("k", data).visits == {"user4@corp.example": 9}
    del data["visits"]  # stored before visits were kept
    assert EntityState.from_json("k", data).visits == {}
