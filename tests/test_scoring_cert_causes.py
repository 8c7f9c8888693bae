"""The causes of missed insiders, re-checked on a small hand-built organisation in the CERT CSV layout.

Forty people, an LDAP CSV that names no machine owners (they are learned from use), ten days of history and
default settings: a first-ever USB use, a USB spike, a sustained rise in USB use, a leak-site visit against an
upload, an administrator on an absent colleague's machine and a mail to many recipients must each stand out on
their day.
"""

from __future__ import annotations

import csv
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from custodes.config import ScoringSettings
from custodes.connectors.cert import cert_records
from custodes.detections.scoring.baselines import EntityState, machine_owners
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.evaluate import read_events
from custodes.detections.scoring.explain import sentences
from custodes.detections.scoring.features import Extractor
from custodes.detections.scoring.identity import IdentityResolver, load_directory
from custodes.detections.scoring.risk import DayScore

START = datetime(2010, 1, 4)
DAYS = 19
RISE = 15  # the riser's first day of three connections (after the other causes' days)
ENGINEERS = [f"ENG{n:04d}" for n in range(30)]
ADMINS = [f"ADM{n:04d}" for n in range(5)]
SALES = [f"SAL{n:04d}" for n in range(5)]
FIRST_USB, SPIKE, VISITOR, UPLOADER, MAILER, ABSENT = ENGINEERS[0], ENGINEERS[20], ENGINEERS[1], "ENG0002", "ENG0003", 5
LIST_OWNER, ROAMER = SALES[0], ADMINS[0]
RISER = ENGINEERS[4]  # one USB connection every third day, then three a day for four days
USB_USERS = set(ENGINEERS[20:])
HISTORY = 10


def stamp(when: datetime) -> str:
    return when.strftime("%m/%d/%Y %H:%M:%S")


def pc(user: str) -> str:
    return "PC-" + user


class Org:
    """Rows of the CERT files, built day by day."""

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self.rows: dict[str, list[list[str]]] = {"logon": [], "device": [], "http": [], "email": []}
        self.n = 0

    def row(self, kind: str, when: datetime, user: str, host: str, *rest: str) -> None:
        self.n += 1
        self.rows[kind].append([f"{{R{self.n:08d}}}", stamp(when), f"DTAA/{user}", host, *rest])

    def usb(self, when: datetime, user: str) -> None:
        self.row("device", when, user, pc(user), "Connect")
        self.row("device", when + timedelta(minutes=15), user, pc(user), "Disconnect")

    def mail(self, when: datetime, user: str, to: list[str]) -> None:
        self.row("email", when, user, pc(user), ";".join(to), "", "", f"{user}@dtaa.com", "Send", "2000", "", "x")

    def web(self, when: datetime, user: str, url: str, activity: str = "WWW Visit") -> None:
        self.row("http", when, user, pc(user), url, activity, "x")

    def day(self, day: int, absent: set[str]) -> None:
        base = START + timedelta(days=day)
        rng = self.rng
        colleagues = [f"{u.lower()}@dtaa.com" for u in ENGINEERS]
        for user in ENGINEERS + ADMINS + SALES:
            if user in absent:
                continue
            login = base + timedelta(hours=8, minutes=rng.randint(0, 50))
            self.row("logon", login, user, pc(user), "Logon")
            self.row("logon", login + timedelta(hours=8), user, pc(user), "Logoff")
            for _ in range(rng.randint(2, 4)):
                when = login + timedelta(minutes=rng.randint(10, 460))
                size = 30 if user == LIST_OWNER else rng.randint(1, 2)
                self.mail(when, user, rng.sample(colleagues, size))
                self.web(when + timedelta(minutes=3), user, f"http://news.example.com/{rng.randint(1, 99)}")
            if user in USB_USERS:
                for _ in range(rng.randint(1, 2)):
                    self.usb(login + timedelta(minutes=rng.randint(30, 400)), user)
            if user in ADMINS:  # administrators log on to five colleagues' machines every day
                for other in rng.sample(ENGINEERS[6:], 5):
                    self.row("logon", login + timedelta(minutes=rng.randint(30, 400)), user, pc(other), "Logon")

    def write(self, folder: Path) -> list[Path]:
        headers = {
            "logon": ["id", "date", "user", "pc", "activity"],
            "device": ["id", "date", "user", "pc", "activity"],
            "http": ["id", "date", "user", "pc", "url", "activity", "content"],
            "email": ["id", "date", "user", "pc", "to", "cc", "bcc", "from", "activity", "size", "attachments", "x"],
        }
        paths = []
        for kind, rows in self.rows.items():
            rows.sort(key=lambda r: datetime.strptime(r[1], "%m/%d/%Y %H:%M:%S"))
            path = folder / f"{kind}.csv"
            with path.open("w", newline="") as handle:
                out = csv.writer(handle)
                out.writerow(headers[kind])
                out.writerows(rows)
            paths.append(path)
        with (folder / "LDAP.csv").open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["employee_name", "user_id", "email", "role", "business_unit", "department", "team"])
            for users, role, department in (
                (ENGINEERS, "Engineer", "R&D"),
                (ADMINS, "ITAdmin", "IT"),
                (SALES, "Sales", "Sales"),
            ):
                for user in users:
                    out.writerow([f"Name {user}", user, f"{user}@dtaa.com", role, "1", department, "1"])
        return paths


Rankings = dict[date, list[DayScore]]


@pytest.fixture(scope="module")
def rankings(tmp_path_factory: pytest.TempPathFactory) -> Rankings:
    folder = tmp_path_factory.mktemp("cert-causes")
    org = Org()
    absent_owner = ENGINEERS[ABSENT]
    for day in range(DAYS):
        org.day(day, {absent_owner} if day == HISTORY + 2 else set())
        at = START + timedelta(days=day, hours=13)
        if day < RISE and day % 3 == 0:
            org.usb(at, RISER)
        if day >= RISE:
            for k in range(3):
                org.usb(at + timedelta(hours=k), RISER)
        if day == HISTORY:  # first-ever USB use, where a third of the peers use USB every day
            org.usb(at, FIRST_USB)
        if day == HISTORY + 1:  # 8 connections by someone who makes 1-2 a day
            for k in range(8):
                org.usb(at + timedelta(minutes=20 * k), SPIKE)
        if day == HISTORY + 2:  # an administrator on the machine of a colleague absent that day
            org.row("logon", at + timedelta(hours=7), ROAMER, pc(absent_owner), "Logon")
        if day == HISTORY + 3:  # a mail to 25 colleagues from someone who writes to one or two; an upload
            org.mail(at, MAILER, [f"{u.lower()}@dtaa.com" for u in ENGINEERS[5:30]])
            org.web(at + timedelta(hours=1), UPLOADER, "http://wikileaks.org/submit", "WWW Upload")
        if day == HISTORY + 4:  # a visit to the same leak site by another; an administrator's USB on a colleague's PC
            org.web(at, VISITOR, "http://wikileaks.org/about")
            org.row("logon", at, ADMINS[1], pc(ENGINEERS[10]), "Logon")
            org.row("device", at + timedelta(minutes=2), ADMINS[1], pc(ENGINEERS[10]), "Connect")
    paths = org.write(folder)
    settings = ScoringSettings(directory=folder / "LDAP.csv", pseudonymise=False)
    resolver = IdentityResolver(load_directory(folder / "LDAP.csv"), settings.identities)
    found: Rankings = {}
    engine = ScoringEngine(settings, resolver, org_domains=["dtaa.com"], on_ranking=found.__setitem__)
    for event in read_events(paths):
        engine.observe(event)
    engine.flush()
    owners = engine.machines.owners
    assert owners[pc(absent_owner).lower()] == f"{absent_owner.lower()}@dtaa.com"  # learned from use
    assert pc(ROAMER).lower() in owners and len(owners) == 40  # the roamer owns none of the others
    stored = [
        EntityState.from_json(key, orjson.loads(orjson.dumps(state.to_json()))) for key, state in engine.states.items()
    ]
    assert machine_owners(stored) == owners  # what a restart recomputes from the stored baselines
    return found


def on(rankings: Rankings, day: int, user: str) -> tuple[int, DayScore]:
    ranking = rankings[(START + timedelta(days=day)).date()]
    for rank, score in enumerate(ranking):
        if score.entity == f"{user.lower()}@dtaa.com":
            return rank, score
    raise AssertionError(f"{user} not scored on day {day}")


def points(score: DayScore, *features: str) -> float:
    return sum(c.points for c in score.contributions if c.feature in features)


def test_a_first_ever_usb_use_after_ten_days_ranks_first(rankings: Rankings) -> None:
    rank, score = on(rankings, HISTORY, FIRST_USB)
    assert points(score, "new_channel", "usb") >= 10
    assert rank == 0


def test_a_usb_spike_ranks_first(rankings: Rankings) -> None:
    rank, score = on(rankings, HISTORY + 1, SPIKE)
    assert points(score, "usb") >= 10
    assert rank == 0


def test_a_sustained_rise_in_usb_use_keeps_counting_as_the_days_go_on(rankings: Rankings) -> None:
    """Three connections a day from someone who made one every third day: each day is a modest spike, and each is
    damped into their baseline, so the fourth day still stands out instead of being their new usual."""
    first = points(on(rankings, RISE, RISER)[1], "usb")
    for day in range(RISE, DAYS):
        rank, score = on(rankings, day, RISER)
        assert points(score, "usb") >= 0.75 * first > 0, day
        assert rank == 0, (day, rank)
    _, last = on(rankings, DAYS - 1, RISER)
    assert any("removable media connections" in line and "their usual" in line for line in sentences(last))


def test_a_leak_site_visit_counts_weaker_than_an_upload(rankings: Rankings) -> None:
    _, visit = on(rankings, HISTORY + 4, VISITOR)
    _, upload = on(rankings, HISTORY + 3, UPLOADER)
    assert 0 < points(visit, "leak_visit", "new_channel") < points(upload, "leak_upload", "new_channel")


def test_an_administrator_on_an_absent_owners_machine_ranks_first_and_roaming_is_quiet(rankings: Rankings) -> None:
    rank, score = on(rankings, HISTORY + 2, ROAMER)
    assert points(score, "absent_owner_host") > 0
    assert rank == 0
    for day in range(HISTORY, DAYS):
        if day != HISTORY + 2:
            assert points(on(rankings, day, ROAMER)[1], "other_host", "absent_owner_host") < 10


def test_usb_on_another_persons_machine_counts_for_an_administrator(rankings: Rankings) -> None:
    _, score = on(rankings, HISTORY + 4, ADMINS[1])
    assert points(score, "other_host_channel") >= 10
    for day in range(HISTORY, DAYS):
        for user in [*ADMINS, *USB_USERS]:
            if (day, user) != (HISTORY + 4, ADMINS[1]):
                assert points(on(rankings, day, user)[1], "other_host_channel") == 0


def test_mail_fan_out_is_judged_against_the_persons_own_mail(rankings: Rankings) -> None:
    rank, score = on(rankings, HISTORY + 3, MAILER)
    assert points(score, "mail_fanout") >= 10
    assert rank <= 1
    for day in range(HISTORY, DAYS):
        assert points(on(rankings, day, LIST_OWNER)[1], "mail_fanout") == 0


def test_disconnects_are_not_connections_and_categories_are_configurable(tmp_path: Path) -> None:
    device = tmp_path / "device.csv"
    device.write_text(
        "id,date,user,pc,activity\n{A},01/04/2010 09:00:00,DTAA/X,PC-1,Disconnect\n"
        "{B},01/04/2010 09:01:00,DTAA/X,PC-1,Connect\n"
    )
    http = tmp_path / "http.csv"
    http.write_text(
        "id,date,user,pc,url,activity,content\n"
        "{C},01/04/2010 09:00:00,DTAA/X,PC-1,http://drop.example.net/f,WWW Visit,x\n"
        "{D},01/04/2010 09:00:00,DTAA/X,PC-1,http://drop.example.net/f,WWW Upload,x\n"
    )
    extractor = Extractor(ScoringSettings(personal_cloud_domains=["example.net"]))
    features = []
    for path in (device, http):
        records = cert_records(path.read_text().splitlines(keepends=True))
        assert records is not None
        features += [extractor.extract(raw).features for _, raw, _ in records if isinstance(raw, dict)]  # type: ignore[union-attr]
    assert features == [[], [("usb", 1.0)], [("cloud_visit", 1.0)], [("cloud_upload", 1.0)]]
