"""Behaviour scoring: identity resolution, vendor features, baselines, risk, explanations and privacy."""

from __future__ import annotations

import math
import random
import re
from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from custodes.config import IdentitySettings, ScoringSettings
from custodes.detections.scoring.baselines import (
    DAMPED_WEIGHT,
    SCALE_LIMIT,
    DayState,
    EntityState,
    PeerStats,
    machine_owners,
    peer_stats,
)
from custodes.detections.scoring.catalog import FEATURES, RISE_WINDOWS
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.explain import sentences
from custodes.detections.scoring.features import Extractor
from custodes.detections.scoring.feedback import CauseFeedback, Holder
from custodes.detections.scoring.identity import IdentityResolver, Person, load_directory, zone_of, zone_warning
from custodes.detections.scoring.privacy import Pseudonymizer, is_pseudonym
from custodes.detections.scoring.risk import MIN_VAR_LOG, DayScore, RiskModel
from custodes.errors import CustodesError
from custodes.model import Event, Finding, LogSource, Severity

START = datetime(2024, 3, 4, tzinfo=UTC)


def person(i: int, department: str = "Finance") -> Person:
    return Person(
        id=f"user{i}@corp.example",
        department=department,
        title="Analyst",
        timezone="UTC",
        aliases=[f"user{i}@corp.onmicrosoft.com", f"user{i}"],
        hosts=[f"WS-{i}"],
    )


def ecs(user: str, when: datetime, category: str, action: str, **extra: Any) -> Event:
    record = {
        "@timestamp": when.isoformat(),
        "event": {"category": [category], "action": action},
        "user": {"name": user},
    }
    record.update(extra)
    return Event(f"{user}-{when.timestamp()}-{action}-{random.random()}", when, "endpoint", LogSource(), record)


def normal_day(rng: random.Random, i: int, day: int) -> list[Event]:
    base = START + timedelta(days=day)
    user = f"user{i}"
    events = [ecs(user, base + timedelta(hours=9), "authentication", "logged-in", host={"name": f"WS-{i}"})]
    for _ in range(rng.randint(2, 6)):
        when = base + timedelta(hours=rng.uniform(9, 17))
        to = {"address": [f"user{rng.randint(0, 29)}@corp.example"]}
        events.append(ecs(user, when, "email", "send", email={"direction": "outbound", "to": to}))
    for _ in range(rng.randint(1, 4)):
        when = base + timedelta(hours=rng.uniform(9, 17))
        events.append(ecs(user, when, "web", "http-request", url={"domain": "news.example.org"}))
    return sorted(events, key=lambda e: e.time)


def theft_day(i: int, day: int) -> list[Event]:
    base = START + timedelta(days=day, hours=23)
    user = f"user{i}"
    events = [ecs(user, base, "host", "usb-device-connected", device={"type": "usb"})]
    for n in range(30):
        file = {"path": f"E:\\{n}.docx", "size": 2_000_000}
        events.append(ecs(user, base + timedelta(seconds=n + 1), "file", "removable-media-write", file=file))
    for n in range(8):
        http = {"request": {"method": "POST", "bytes": 5_000_000}}
        events.append(
            ecs(
                user,
                base + timedelta(minutes=5, seconds=n),
                "web",
                "upload",
                url={"domain": "www.dropbox.com"},
                http=http,
            )
        )
    return events


def run_org(
    settings: ScoringSettings,
    days: int,
    thief: int,
    theft: int,
    feedback: dict[Holder, list[CauseFeedback]] | None = None,
) -> tuple[ScoringEngine, list[DayScore]]:
    rng = random.Random(5)
    resolver = IdentityResolver([person(i) for i in range(30)], settings.identities)
    rankings: list[DayScore] = []

    def on_ranking(day: date, ranking: list[DayScore]) -> None:
        if day == (START + timedelta(days=theft)).date():
            rankings.extend(ranking)

    engine = ScoringEngine(settings, resolver, org_domains=["corp.example"], on_ranking=on_ranking)
    engine.model.feedback = feedback or {}
    for day in range(days):
        events = [e for i in range(30) for e in normal_day(rng, i, day)]
        if day == theft:
            events += theft_day(thief, day)
        for event in sorted(events, key=lambda e: e.time):
            engine.observe(event)
    engine.flush()
    return engine, rankings


def test_identity_resolution_joins_every_source_and_separates_service_accounts() -> None:
    settings = IdentitySettings(
        aliases={"jdoe-gh": "jane.doe@corp.example"}, domains={"corp.onmicrosoft.com": "corp.example"}
    )
    jane = Person(id="jane.doe@corp.example", aliases=["jdoe"])
    resolver = IdentityResolver([jane], settings)
    key = resolver.resolve("jane.doe@corp.example")
    assert key == ("jane.doe@corp.example", "person")
    for alias in ("Jane.Doe@corp.onmicrosoft.com", "jdoe", "CORP\\jdoe", "jdoe-gh", "JANE.DOE@CORP.EXAMPLE"):
        assert resolver.resolve(alias) == key, alias
    assert resolver.resolve("svc-backup") == ("svc-backup", "service")
    assert resolver.resolve("dependabot[bot]")[1] == "service"
    assert resolver.resolve("someone@else.example") == ("someone@else.example", "person")
    assert resolver.resolve("jdoe@gmail.com")[0] != key[0]


def test_a_directory_entry_that_cannot_be_read_names_its_position_and_field(tmp_path: Path) -> None:
    broken = {
        '[{"display_name": "x"}]': "person #1: id is missing",
        '[{"id": "a"}, {"id": "b", "notice_date": "soon"}]': "person #2: notice_date: 'soon' is not a date",
        '[{"id": "a", "watchlists": {"vip": "x"}}]': "person #1: watchlists.vip: 'x' is not a date",
        '[{"id": "a", "watchlists": ["vip"]}]': "person #1: watchlists: an object of watchlist names",
        '[{"id": "a", "profile": {"login": "a@b", "terminationDate": 7}}]': "person #1: profile.terminationDate: 7",
        '["a"]': "person #1: not an object",
        '{"people": 3}': "a directory is a JSON list of people",
    }
    for number, (text, message) in enumerate(broken.items()):
        (tmp_path / f"{number}.json").write_text(text)
        with pytest.raises(CustodesError, match=re.escape(message)):
            load_directory(tmp_path / f"{number}.json")
    (tmp_path / "good.json").write_text('[{"id": "a", "watchlists": {"vip": null}, "notice_date": "2024-03-04"}]')
    [person] = load_directory(tmp_path / "good.json")
    assert person.watchlists == {"vip": date.min} and person.notice_date == date(2024, 3, 4)


def test_a_time_zone_that_is_not_one_is_refused_in_settings_and_said_of_directory_people() -> None:
    with pytest.raises(ValidationError, match="'Mars/Base' is not an IANA time zone name"):
        ScoringSettings(default_timezone="Mars/Base")
    zones = ["Europe/London", "CET+1", None, "Pacific Standard Time"]
    people = [Person(id=f"p{n}@corp.example", timezone=zone) for n, zone in enumerate(zones)]
    assert zone_warning(people[::2], "UTC") is None
    assert zone_warning(people, "Asia/Tokyo") == (
        "1 people in the directory have a time zone that is neither an IANA name (Europe/London) nor a Windows one "
        "(GMT Standard Time), so their days are Asia/Tokyo's: p1@corp.example: 'CET+1'"
    )
    assert zone_of(people[3], ZoneInfo("UTC")) == ZoneInfo("America/Los_Angeles"), "Windows names as CLDR maps them"


def test_pseudonymised_resolver_never_exposes_the_name() -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    resolver = IdentityResolver([Person(id="jane.doe@corp.example", aliases=["jdoe"])], IdentitySettings(), pseudonym)
    key, _ = resolver.resolve("jdoe")
    assert is_pseudonym(key) and "jane" not in key
    assert key == pseudonym("Jane.Doe@corp.example")
    assert Pseudonymizer(b"x" * 32)("jane.doe@corp.example") != key
    assert pseudonym.find(key, ["bob@corp.example", "jane.doe@corp.example"]) == "jane.doe@corp.example"


def test_vendor_records_become_features() -> None:
    x = Extractor(ScoringSettings(), ["corp.example"])
    okta = {
        "eventType": "user.session.start",
        "published": "2024-03-04T09:00:00Z",
        "actor": {"alternateId": "jane@corp.example"},
        "client": {"geographicalContext": {"country": "France"}},
        "securityContext": {"asNumber": 3215},
        "debugContext": {"debugData": {"deviceFingerprint": "fp1"}},
        "outcome": {"result": "SUCCESS"},
    }
    obs = x.extract(okta)
    assert obs is not None and obs.actor == "jane@corp.example" and obs.features == [("signin", 1.0)]
    assert ("country", "France") in obs.seen and ("device", "fp1") in obs.seen and ("asn", "3215") in obs.seen
    grant = {
        "eventName": "AttachUserPolicy",
        "eventSource": "iam.amazonaws.com",
        "userIdentity": {"type": "IAMUser", "userName": "jdoe"},
        "requestParameters": {"userName": "jdoe"},
    }
    obs = x.extract(grant)
    assert obs is not None and obs.actor == "jdoe" and ("self_grant", 1.0) in obs.features
    key = {
        "eventName": "CreateAccessKey",
        "eventSource": "iam.amazonaws.com",
        "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/Admin/jane@corp.example"},
        "requestParameters": {"userName": "bob"},
    }
    obs = x.extract(key)
    assert obs is not None and obs.actor == "jane@corp.example" and ("access_key_other", 1.0) in obs.features
    share = {
        "id": {"time": "2024-03-04T09:00:00Z", "applicationName": "drive"},
        "actor": {"email": "jane@corp.example"},
        "events": [{"name": "change_user_access", "parameters": [{"name": "target_user", "value": "me@gmail.com"}]}],
    }
    obs = x.extract(share)
    assert obs is not None and obs.features == [("external_share", 1.0)]
    internal = {
        **share,
        "events": [{"name": "change_user_access", "parameters": [{"name": "target_user", "value": "bo@corp.example"}]}],
    }
    assert x.extract(internal).features == []  # type: ignore[union-attr]
    mail = ecs(
        "jdoe",
        START,
        "email",
        "send",
        email={"to": {"address": ["j@gmail.com"]}, "attachments": [{"file": {"size": 9}}]},
    )
    obs = x.extract(mail.raw)
    assert obs is not None and ("personal_mail", 1.0) in obs.features and ("upload_bytes", 9.0) in obs.features
    upload = ecs(
        "jdoe", START, "web", "x", url={"domain": "www.dropbox.com"}, http={"request": {"method": "POST", "bytes": 7}}
    )
    assert ("cloud_upload", 1.0) in x.extract(upload.raw).features  # type: ignore[union-attr]
    jobs = ecs("jdoe", START, "web", "x", url={"domain": "www.indeed.com", "path": "/jobs"})
    assert x.extract(jobs.raw).features == [("job_search", 1.0)]  # type: ignore[union-attr]
    entra = {
        "activityDisplayName": "Add member to role",
        "initiatedBy": {"user": {"userPrincipalName": "jane@corp.onmicrosoft.com"}},
        "targetResources": [{"userPrincipalName": "jane@corp.onmicrosoft.com"}],
    }
    assert ("self_grant", 1.0) in x.extract(entra).features  # type: ignore[union-attr]
    assert x.extract({"unknown": "shape"}) is None


@pytest.mark.parametrize(
    ("code", "features"),
    [
        (0, [("signin", 1.0)]),
        (500121, [("mfa_failed", 1.0)]),  # the second factor denied or timed out
        (50074, []),  # "strong authentication is required": the prompt every MFA sign-in starts with
        (50076, []),
        (50140, []),  # keep me signed in
        (50058, []),  # no single sign-on session yet
        (50126, [("signin_failed", 1.0)]),  # a wrong password
        (53003, [("signin_failed", 1.0)]),  # blocked by conditional access: a failure, not an MFA one
    ],
)
def test_an_entra_sign_in_is_a_success_a_failure_or_an_interrupt_by_its_code(
    code: int, features: list[tuple[str, float]]
) -> None:
    """Once 50074 and 50076 counted as failed MFA: every person who passes MFA daily failed it daily."""
    signin = {
        "createdDateTime": "2024-03-04T09:00:00Z",
        "userPrincipalName": "jane@corp.example",
        "status": {"errorCode": code},
        "deviceDetail": {"deviceId": "d-1"},
    }
    obs = Extractor(ScoringSettings()).extract(signin)
    assert obs is not None and obs.actor == "jane@corp.example" and obs.features == features
    refreshed = {**signin, "isInteractive": False, "signInEventTypes": ["nonInteractiveUser"]}
    assert Extractor(ScoringSettings()).extract(refreshed) is None, "a token refreshed is no act of the person's"


def test_a_first_time_usb_and_cloud_exfiltration_ranks_first_and_is_explained() -> None:
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    engine, ranking = run_org(settings, days=26, thief=7, theft=22)
    assert ranking and ranking[0].entity == "user7@corp.example"
    top = ranking[0]
    features = {c.feature for c in top.contributions}
    assert {"usb_files", "cloud_upload", "off_hours"} <= features
    text = "; ".join(sentences(top))
    assert "first USB use" in text or "first files written to USB" in text
    assert "first upload to personal cloud" in text
    usb = next(c for c in top.contributions if c.feature == "usb_files")
    assert usb.value == 30 and usb.usual == 0 and usb.last_seen_days_ago is None and usb.event_ids
    assert top.risk > ranking[1].risk * 2
    found = [f for f in engine.take_findings() if f.entity == "user7@corp.example"]
    assert found and found[0].detector == "scoring" and "USB" in (found[0].description or "")
    assert all(f.entity == "user7@corp.example" for f in engine.take_findings())


THEFT = START + timedelta(days=22, hours=12)


def theft_under(feedback: dict[Holder, list[CauseFeedback]]) -> tuple[ScoringEngine, dict[str, float], DayScore]:
    """The thief's points on the theft day without feedback, and with it the engine and the thief's day score."""
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    _, plain = run_org(settings, days=26, thief=7, theft=22)
    before = {c.feature: c.points for c in plain[0].contributions}
    assert {"usb_files", "cloud_upload", "off_hours"} <= before.keys()
    engine, ranking = run_org(settings, days=26, thief=7, theft=22, feedback=feedback)
    return engine, before, next(score for score in ranking if score.entity == "user7@corp.example")


def test_feedback_on_a_cause_leaves_it_out_or_scales_it_for_that_person_on_the_days_it_covers() -> None:
    theft = THEFT
    given: dict[Holder, list[CauseFeedback]] = {
        "user7@corp.example": [
            CauseFeedback("fb-1", "usb_files", 0.0, theft - timedelta(days=3)),
            CauseFeedback("fb-2", "cloud_upload", 0.5, theft - timedelta(days=3)),
            CauseFeedback("fb-3", "cloud_upload", 0.8, theft - timedelta(days=5)),  # the lower factor counts
            CauseFeedback("fb-4", "off_hours", 0.0, theft - timedelta(days=9), theft - timedelta(days=1)),  # revoked
            CauseFeedback("fb-5", "usb", 0.0, theft + timedelta(days=1)),  # given after the day
        ],
        "user8@corp.example": [CauseFeedback("fb-6", "cloud_upload", 0.0, theft - timedelta(days=3))],
    }
    engine, before, top = theft_under(given)
    after = {c.feature: c.points for c in top.contributions}
    assert "usb_files" not in after and after["cloud_upload"] == pytest.approx(before["cloud_upload"] / 2)
    assert {name: after[name] for name in after if name != "cloud_upload"} == {
        name: points for name, points in before.items() if name not in ("usb_files", "cloud_upload")
    }
    assert top.modifiers["feedback:usb_files:fb-1"] == pytest.approx(before["usb_files"])
    assert top.modifiers["feedback:cloud_upload:fb-2"] == pytest.approx(before["cloud_upload"] / 2)
    text = sentences(top)
    assert "files written to removable media: analyst feedback fb-1 on this cause" in "; ".join(text)
    assert not any("files written to removable media" in line and "feedback" not in line for line in text)
    found = next(f for f in engine.take_findings() if f.entity == "user7@corp.example")
    assert "cause.cloud_upload" in found.tags and "cause.usb_files" not in found.tags


def test_feedback_on_a_cause_for_a_department_or_peer_group_covers_their_people_only() -> None:
    since = THEFT - timedelta(days=3)
    given: dict[Holder, list[CauseFeedback]] = {
        ("department", "Finance"): [CauseFeedback("fb-1", "usb_files", 0.0, since)],
        ("peers", "Finance/Analyst"): [CauseFeedback("fb-2", "cloud_upload", 0.5, since)],
        ("department", "Sales"): [CauseFeedback("fb-3", "off_hours", 0.0, since)],  # not theirs
        ("peers", "Finance/Manager"): [CauseFeedback("fb-4", "off_hours", 0.0, since)],  # not theirs either
        ("department", "Finance/Analyst"): [CauseFeedback("fb-5", "off_hours", 0.0, since)],  # a group, no department
    }
    _, before, top = theft_under(given)
    after = {c.feature: c.points for c in top.contributions}
    assert "usb_files" not in after and after["cloud_upload"] == pytest.approx(before["cloud_upload"] / 2)
    assert after["off_hours"] == pytest.approx(before["off_hours"])
    assert {name.rpartition(":")[2] for name in top.modifiers if name.startswith("feedback:")} == {"fb-1", "fb-2"}


def test_feedback_on_a_channel_covers_its_rise_over_days() -> None:
    state = EntityState(key="k", kind="person", group="g", department="d", tz=ZoneInfo("UTC"))
    for day in range(30):  # a drive one day in three, then five connections every day
        counts = {"usb": 5.0} if day >= 26 else {"usb": 1.0} if day % 3 == 0 else {"signin": 1.0}
        state.fold(DayState(day, counts=counts), 0.9, weekend=False)
    model = RiskModel(ScoringSettings(pseudonymise=False))
    since = datetime(1, 1, 29, tzinfo=UTC)  # the day before the one scored (ordinal 30)

    def scored(*given: tuple[str, float, str]) -> DayScore:
        model.feedback = {"k": [CauseFeedback(ident, feature, factor, since) for feature, factor, ident in given]}
        return model.score(state, DayState(30, counts={"usb": 5.0}), PeerStats(), date.fromordinal(30), [])

    plain = {c.feature: c.points for c in scored().contributions}
    assert plain.keys() == {"usb", "usb_rise"}
    muted = scored(("usb", 0.0, "fb-1"))
    assert not muted.contributions and muted.points == 0
    assert muted.modifiers["feedback:usb_rise:fb-1"] == pytest.approx(plain["usb_rise"])
    own = scored(("usb", 0.0, "fb-1"), ("usb_rise", 0.5, "fb-2"))  # a rise's own feedback comes first
    assert [c.feature for c in own.contributions] == ["usb_rise"]
    assert own.contributions[0].points == pytest.approx(plain["usb_rise"] / 2)


def test_the_same_day_without_theft_raises_nothing() -> None:
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    engine, _ = run_org(settings, days=26, thief=7, theft=99)
    assert engine.take_findings() == []
    assert all(score.risk < settings.top_k_min_risk for score in engine.take_scores())


def test_the_day_leader_below_threshold_is_ranked_not_raised_unless_top_k_asks() -> None:
    # A finding for whoever leads each day is a daily quota: on quiet days it goes to benign people.
    settings = ScoringSettings(pseudonymise=False, warmup_days=5, threshold=10_000)
    engine, ranking = run_org(settings, days=26, thief=7, theft=22)
    assert ranking[0].entity == "user7@corp.example" and ranking[0].risk >= settings.top_k_min_risk
    assert engine.take_findings() == []
    engine, _ = run_org(settings.model_copy(update={"top_k": 1}), days=26, thief=7, theft=22)
    assert [f.rule_id for f in engine.take_findings() if f.entity == "user7@corp.example"] == ["scoring.top_k"]


def test_watchlists_multiply_and_sigma_findings_add_points() -> None:
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    _, plain_rank = run_org(settings, days=26, thief=7, theft=22)
    base = plain_rank[0].risk
    resolver_people = [person(i) for i in range(30)]
    resolver_people[7].notice_date = date(2024, 3, 1)
    rng = random.Random(5)
    scores: list[DayScore] = []
    engine = ScoringEngine(
        settings,
        IdentityResolver(resolver_people, settings.identities),
        org_domains=["corp.example"],
        on_ranking=lambda day, ranking: scores.extend(ranking) if day == date(2024, 3, 26) else None,
    )
    when = START + timedelta(days=22, hours=23, minutes=30)
    sigma = Finding("f1", "d1", "sigma", "r1", "USB mass copy", Severity.HIGH, "CORP\\user7", ["e1"], [], when, when)
    for day in range(26):
        events = [e for i in range(30) for e in normal_day(rng, i, day)]
        if day == 22:
            events += theft_day(7, day)
        for event in sorted(events, key=lambda e: e.time):
            engine.observe(event)
        if day == 22:
            assert engine.add_finding(sigma) == "user7@corp.example"
    engine.flush()
    top = scores[0]
    assert top.entity == "user7@corp.example"
    assert top.modifiers["watchlist:departing"] == settings.watchlists["departing"]
    assert "sequence:departure->data movement" in top.modifiers
    assert top.risk > base * 1.4
    assert any("USB mass copy" in line for line in sentences(top))


def test_malformed_records_are_skipped_not_fatal() -> None:
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver([], settings.identities))
    bad: list[dict[str, Any]] = [
        {"eventType": "user.session.start", "published": "2024-03-04T09:00:00Z", "actor": "not-an-object"},
        {"eventName": "GetObject", "eventSource": "s3", "userIdentity": ["x"]},
        {"id": {"applicationName": "drive"}, "actor": "a@b.c", "events": [{"name": "download"}]},
        {"event": {"category": "email"}, "user": {"name": "u"}, "email": {"to": "not-a-dict"}},
        {"event": {"category": ["web"]}, "user": "u", "url": 5},
    ]
    for n, record in enumerate(bad):
        engine.observe(Event(str(n), START, "x", LogSource(), record))
    assert engine.unreadable >= 2 and engine.unreadable + sum(engine.unattributed.values()) == len(bad)
    assert engine.states == {} and engine.take_findings() == []  # each skipped: unreadable, or naming no actor


def test_an_amount_that_is_none_counts_as_no_amount_and_one_past_a_float_is_unreadable() -> None:
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver([], settings.identities))

    def write(size: object) -> dict[str, Any]:
        event = {"category": ["file"], "action": "removable-write"}
        return {"event": event, "user": {"name": "u"}, "host": {"name": "H1"}, "file": {"path": "E:/a", "size": size}}

    sizes: list[object] = [1000, -5, -(10**40), math.inf, -math.inf, math.nan, "\u00b2", "12a", "", True, 2.5e3]
    for n, size in enumerate([*sizes, 10**400]):  # the last one converts to no float: the record is skipped
        engine.observe(Event(str(n), START + timedelta(minutes=n), "x", LogSource(), write(size)))
    today = engine.states["u"].open
    assert today is not None and engine.unreadable == 1
    assert today.counts["usb_files"] == len(sizes) and today.counts["upload_bytes"] == 1000 + 2500


def okta_signin(name: str, when: datetime, result: str) -> Event:
    record = {
        "eventType": "user.session.start",
        "published": when.isoformat(),
        "actor": {"alternateId": name, "type": "User"},
        "outcome": {"result": result},
    }
    return Event(f"{name}-{when.timestamp()}-{result}", when, "okta", LogSource(), record)


def test_failed_sign_ins_under_names_the_directory_does_not_hold_make_no_entities() -> None:
    """A password spray under random names once made each name an entity: a baseline kept, stored and ranked."""
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver([person(1), person(2)], settings.identities))
    rng = random.Random(4)
    for n in range(1000):
        when = START + timedelta(hours=9, seconds=n)
        engine.observe(okta_signin(f"{rng.getrandbits(48):x}@corp.example", when, "FAILURE"))
    assert engine.states == {} and engine.strangers == {"okta": 1000}
    assert engine.observe(okta_signin("user1@corp.example", START + timedelta(hours=10), "FAILURE")) is not None
    later = START + timedelta(hours=11)
    assert engine.observe(okta_signin("contractor@corp.example", later, "FAILURE")) is None
    assert engine.observe(okta_signin("contractor@corp.example", later, "SUCCESS")) == "contractor@corp.example"
    assert engine.observe(okta_signin("contractor@corp.example", later, "FAILURE")) == "contractor@corp.example"
    assert sorted(engine.states) == ["contractor@corp.example", "user1@corp.example"]
    assert engine.strangers == {"okta": 1001}
    without = ScoringEngine(settings, IdentityResolver([], settings.identities))  # no directory: nobody is a stranger
    assert without.observe(okta_signin("anyone@corp.example", later, "FAILURE")) == "anyone@corp.example"


def test_a_theft_on_the_fourth_date_is_ranked_first_and_raised_only_once_the_person_is_settled() -> None:
    # Cold start: three dates close before anything is scored; a person's own warm-up (warmup_days active days)
    # gates findings, not the ranking. The old single warm-up scored nothing for the first warmup_days dates.
    settings = ScoringSettings(pseudonymise=False, learning_days=3, warmup_days=7)
    engine, ranking = run_org(settings, days=12, thief=7, theft=4)
    assert ranking and ranking[0].entity == "user7@corp.example" and ranking[0].points > 0
    assert ranking[0].place == 1
    assert engine.take_findings() == []  # four active days of their own: ranked, not alerted on
    old = settings.model_copy(update={"learning_days": 7})
    _, unscored = run_org(old, days=12, thief=7, theft=4)
    assert all(score.points == 0 for score in unscored)
    engine, _ = run_org(settings, days=12, thief=7, theft=9)  # settled by then: the same theft is raised
    assert [f.entity for f in engine.take_findings()] == ["user7@corp.example"]


def test_a_day_without_evidence_of_its_own_raises_nothing_whatever_it_carries() -> None:
    # The theft falls on the person's fourth active day, a Thursday (unsettled: ranked, not raised); on the Friday
    # they are settled, ordinary, and carry most of the theft's risk: that alone is no finding.
    settings = ScoringSettings(pseudonymise=False, learning_days=3, warmup_days=4, threshold=30)
    engine, _ = run_org(settings, days=5, thief=7, theft=3)
    scores = {s.day: s for s in engine.take_scores() if s.entity == "user7@corp.example"}
    assert scores[(START + timedelta(days=3)).date()].points >= settings.threshold
    after = scores[(START + timedelta(days=4)).date()]
    assert after.points == 0 and after.risk >= settings.threshold
    assert [f for f in engine.take_findings() if f.entity == "user7@corp.example"] == []


def test_forgetting_by_scale_keeps_the_sums_a_day_by_day_forgetting_gives() -> None:
    """Forgetting divides one scale rather than every sum; the sums read, stored and pooled are the forgotten ones,
    also after the scale has been brought back to 1 (here after about 330 days at a forget factor of a half)."""
    forget = 0.5
    state = EntityState(key="k", kind="person", group="g", department="d", tz=ZoneInfo("UTC"))
    expected = {"usb": [0.0, 0.0, 0.0, 0.0], "hour": 0.0, "machine": 0.0}
    for day in range(400):
        today = DayState(day, counts={"usb": float(1 + day % 3)}, machines={"ws-1"})
        today.hours[9] = 1
        damped = frozenset({"usb"}) if day % 5 == 0 else frozenset()
        state.fold(today, forget, weekend=False, damped=damped)
        weight = DAMPED_WEIGHT if damped else 1.0
        logged = math.log1p(1 + day % 3)
        sums = expected["usb"]
        assert isinstance(sums, list)
        sums[:] = [s * forget for s in sums]
        sums[0] += weight
        sums[1] += weight * logged
        sums[2] += weight * logged * logged
        sums[3] += weight * (1 + day % 3)
        expected["hour"] = float(expected["hour"]) * forget + 1.0  # type: ignore[arg-type]
        expected["machine"] = float(expected["machine"]) * forget + 1.0  # type: ignore[arg-type]
        assert state.scale <= SCALE_LIMIT
        if day in (10, 320, 399):
            assert state.feature_sums()["usb"][:4] == pytest.approx(expected["usb"])
            assert state.hour_profile()[9] == pytest.approx(expected["hour"])
            assert state.machine_days() == pytest.approx({"ws-1": expected["machine"]})
            assert state.usual("usb") == pytest.approx(expected["usb"][3] / state.days)  # type: ignore[index]
            for reference, days in zip(state.reference_sums(), state.reference_days, strict=True):
                assert reference.get("usb", [0.0])[0] == pytest.approx(days)  # used on every day
    assert state.scale < 2.0**100  # brought back to 1 once, and grown again since
    stored = EntityState.from_json("k", orjson.loads(orjson.dumps(state.to_json())))
    assert stored.scale == 1.0
    assert stored.feature_sums()["usb"] == pytest.approx(state.feature_sums()["usb"])
    pooled = [astuple(peer_stats([s]).features["*"]["usb"]) for s in (stored, state)]
    assert pooled[0] == pytest.approx(pooled[1])
    assert stored.machine_days() == pytest.approx(state.machine_days())
    for restored, reference in zip(stored.reference_sums(), state.reference_sums(), strict=True):
        assert restored["usb"] == pytest.approx(reference["usb"])
    assert machine_owners([stored]) == machine_owners([state])


def test_an_open_days_hours_are_stored_as_24_counts_and_read_back_as_the_hours_with_events() -> None:
    """A day keeps only the hours that have events; its stored form lists all 24 (as days stored before did), so a
    stored open day reads back the same whichever form wrote it, and closing it counts only those hours."""
    today = DayState(3, hours={2: 1, 14: 5})
    stored = orjson.loads(orjson.dumps(today.to_json()))
    assert stored["hours"] == [0, 0, 1, *[0] * 11, 5, *[0] * 9]
    assert DayState.from_json(stored).hours == {2: 1, 14: 5}
    state = EntityState(key="k", kind="person", group="g", department="d", tz=ZoneInfo("UTC"))
    state.fold(DayState.from_json(stored), 1.0, weekend=True)
    assert [hour for hour, days in enumerate(state.hour_profile()) if days] == [24 + 2, 24 + 14]


def test_the_docs_features_table_is_the_catalogue() -> None:
    """The names an analyst writes in feature_weights, playbook cause tags and feedback, as docs/scoring.md lists
    them, with the family, weight and stage the engine uses."""
    text = (Path(__file__).parent.parent / "docs" / "scoring.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| ([\d.]+) \| ([\w-]+) \|", text, flags=re.MULTILINE)
    assert rows == [(f.name, f.family, f"{f.weight:g}", f.stage or "-") for f in FEATURES]


def _rise_sd(sums: list[float], days: float, window: list[float]) -> float:
    """A rise's standard deviations as docs/scoring.md states them: log(1 + amount) a day over the window against
    the reference's days used (Jeffreys prior on the rate) and log amounts (spread at least MIN_VAR_LOG)."""
    used, _, logged, logged2 = sums
    span = len(window)
    rate = (used + 0.5) / (days + 1)
    mean = rate * logged / used
    second = rate * max(logged2 / used, (logged / used) ** 2 + MIN_VAR_LOG)
    var = span * (second - mean * mean) + span * (span - 1) * rate * (1 - rate) / (days + 2) * (logged / used) ** 2
    return (sum(math.log1p(a) for a in window) - span * mean) / math.sqrt(var)


def test_a_rise_is_judged_against_the_days_before_each_window_and_survives_a_store_round_trip() -> None:
    """Recent days stay apart; a day leaving a window joins that window's reference (forgotten, in full), which a
    rise over the window is measured against. The stronger window is the rise."""
    short, long = RISE_WINDOWS[0], RISE_WINDOWS[-1]
    forget = 0.9
    state = EntityState(key="k", kind="person", group="g", department="d", tz=ZoneInfo("UTC"))
    for day in range(12):
        state.fold(DayState(day, counts={"usb": 2.0} if day % 3 == 0 else {"signin": 1.0}), forget, weekend=False)
    assert state.recent == {1: {"usb": 2.0}, 4: {"usb": 2.0}, 7: {"usb": 2.0}, 10: {"usb": 2.0}}
    kept = 12 - short + 1  # days 0-7 are the short window's reference; the channel was used on days 0, 3 and 6
    weights = [forget ** (kept - 1 - day) for day in range(0, kept, 3)]
    days = sum(forget**k for k in range(kept))
    # a window's reference counts the days that have left it: none yet from the longest
    assert state.reference_days == pytest.approx([sum(forget**k for k in range(max(0, 13 - w))) for w in RISE_WINDOWS])
    assert state.reference_days[0] == pytest.approx(days) and state.reference_days[-1] == 0.0
    logged = math.log1p(2.0)
    sums = state.reference_sums()
    assert sums[0]["usb"] == pytest.approx([sum(weights) * x for x in (1.0, 2.0, logged, logged * logged)])
    assert "signin" not in sums[0] and sums[-1] == {}
    stored = EntityState.from_json("k", orjson.loads(orjson.dumps(state.to_json())))
    assert (stored.recent, stored.reference_days) == (state.recent, state.reference_days)
    assert stored.reference_sums()[0]["usb"] == pytest.approx(sums[0]["usb"])
    ((name, total, usual, rise, span, *_),) = RiskModel.rises(stored, {"usb": 6.0})
    assert (name, total, span) == ("usb_rise", 8.0, short) and usual == pytest.approx(short * 2.0 * sum(weights) / days)
    assert rise == pytest.approx(_rise_sd(sums[0]["usb"], days, [6.0, 2.0, 0.0, 0.0, 0.0]))  # today's 6, day 9's 2
    assert RiskModel.rises(stored, {"signin": 3.0}) == []
    for day in range(12, 30):  # weeks of daily use: the short window's reference takes them in, the long one's not
        state.fold(DayState(day, counts={"usb": 2.0}), forget, weekend=False)
    assert list(state.recent) == list(range(17, 31))
    sums = state.reference_sums()
    ((_, total, usual, rise, span, *_),) = RiskModel.rises(state, {"usb": 2.0})
    assert (total, span) == (2.0 * long, long)
    assert usual == pytest.approx(long * sums[-1]["usb"][1] / state.reference_days[-1])
    assert rise == pytest.approx(_rise_sd(sums[-1]["usb"], state.reference_days[-1], [2.0] * long))
    assert rise > _rise_sd(sums[0]["usb"], state.reference_days[0], [2.0] * short)
    assert state.reference_days[-1] == pytest.approx(sum(forget**k for k in range(30 - long + 1)))
    legacy = state.to_json() | {"reference": sums[0], "reference_days": state.reference_days[0]}
    del legacy["references"], legacy["rise_windows"]
    restored = EntityState.from_json("k", legacy)  # stored with one reference: every window starts from it
    assert [reference["usb"] for reference in restored.reference_sums()] == [sums[0]["usb"]] * len(RISE_WINDOWS)
    assert restored.reference_days == pytest.approx([state.reference_days[0]] * len(RISE_WINDOWS))


def test_a_state_stored_with_other_rise_windows_gives_each_window_the_reference_of_one_at_least_as_long() -> None:
    # The days before a longer window are those before a shorter one less a few, none of them inside it; a window
    # longer than any stored starts empty and fills as days leave it.
    def stored(spans: list[int] | None) -> dict[str, Any]:
        data = EntityState(key="k", kind="person", group="g", department="d", tz=ZoneInfo("UTC")).to_json()
        data["references"] = [{"usb": [float(span), 0.0, 0.0, 0.0]} for span in spans or (5, 15)]
        data["reference_days"] = [float(span) for span in spans or (5, 15)]
        if spans is None:  # stored before the windows were stored with it: two windows were 5 and 15 days
            del data["rise_windows"]
        else:
            data["rise_windows"] = spans
        return data

    def spans_taken(data: dict[str, Any]) -> list[float]:
        state = EntityState.from_json("k", data)
        assert [r["usb"][0] if r else 0.0 for r in state.reference_sums()] == state.reference_days
        return state.reference_days

    assert RISE_WINDOWS == (5, 10, 15)
    assert spans_taken(stored(None)) == [5.0, 15.0, 15.0]
    assert spans_taken(stored([15, 5])) == [5.0, 15.0, 15.0]
    assert spans_taken(stored([3, 12])) == [12.0, 12.0, 0.0]
    assert spans_taken(stored([5, 10, 15])) == [5.0, 10.0, 15.0]
    assert spans_taken(stored([5, 20, 40])) == [5.0, 20.0, 20.0]


def test_local_days_follow_each_persons_zone_across_a_clock_change() -> None:
    """31 March 2024 is 23 hours long in London: two people there, one in New York, each day bounded by its zone."""
    people = [
        Person(id=f"{name}@corp.example", department="Finance", title="Analyst", timezone=zone)
        for name, zone in (("ann", "Europe/London"), ("bob", "Europe/London"), ("cy", "America/New_York"))
    ]
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver(people, settings.identities), org_domains=["corp.example"])
    times = {
        "ann": ["2024-03-31T00:30:00+00:00", "2024-03-31T22:30:00+00:00", "2024-03-31T23:10:00+00:00"],
        "bob": ["2024-03-31T09:00:00+00:00", "2024-03-31T23:30:00+00:00"],
        "cy": ["2024-03-31T03:30:00+00:00", "2024-03-31T04:30:00+00:00", "2024-04-01T03:00:00+00:00"],
    }
    events = [
        ecs(name, datetime.fromisoformat(when), "authentication", "logged-in")
        for name, stamps in times.items()
        for when in stamps
    ]
    days: dict[tuple[str, date], int] = {}  # each person's local day -> the events it holds
    for event in sorted(events, key=lambda e: e.time):
        key = engine.observe(event)
        assert key is not None
        today = engine.states[key].open
        assert today is not None
        days[(key.partition("@")[0], date.fromordinal(today.day))] = today.events
    engine.flush()
    assert {(score.entity.partition("@")[0], score.day) for score in engine.scores} == set(days)  # each closed once
    assert len(engine.scores) == len(days)
    assert sorted((name, day, events) for (name, day), events in days.items()) == [
        ("ann", date(2024, 3, 31), 2),  # 00:30 GMT and 23:30 BST
        ("ann", date(2024, 4, 1), 1),  # 00:10 BST
        ("bob", date(2024, 3, 31), 1),
        ("bob", date(2024, 4, 1), 1),  # 00:30 BST
        ("cy", date(2024, 3, 30), 1),  # 23:30 EDT
        ("cy", date(2024, 3, 31), 2),
    ]
