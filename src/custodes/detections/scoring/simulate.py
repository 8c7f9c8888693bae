"""An organisation simulator: people, peers and HR facts over weeks, as raw vendor records, with insiders injected.

Writes one NDJSON file per source, each in time order and in the vendor's own format (Okta System Log, Entra
sign-ins and directory audits, CloudTrail, Google Workspace Drive reports, ECS endpoint/proxy/mail documents), plus
`directory.json` (IdP/HR data) and labels (`labels.json`, `labels.csv`: incident, scenario, person, role and the
malicious interval of each day). Knobs: population, days, noise, scenario mix, number of insiders, seed.
"""

from __future__ import annotations

import csv
import math
import random
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from zoneinfo import ZoneInfo

import orjson

from custodes.detections.scoring.identity import Person
from custodes.model import utcnow

DOMAIN = "corp.example"
UPN_DOMAIN = "corp.onmicrosoft.com"
ACCOUNT = "123456789012"
SOURCES = ("okta", "entra", "cloudtrail", "gworkspace", "endpoint")
SCENARIOS = (
    "after_hours_usb_leak",
    "job_search_usb",
    "sysadmin_keylogger",
    "other_machine_mail",
    "layoff_dropbox",
    "departure_mass_download",
    "privilege_abuse",
    "external_share_forwarding",
    "mfa_fatigue",
)
ZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Singapore")
DEPARTMENTS: dict[str, tuple[float, tuple[str, ...]]] = {
    "Engineering": (0.30, ("Software Engineer", "Senior Engineer", "SRE")),
    "IT": (0.07, ("Systems Administrator", "Helpdesk Technician")),
    "Sales": (0.17, ("Account Executive", "Sales Manager")),
    "Finance": (0.10, ("Financial Analyst", "Controller")),
    "Marketing": (0.11, ("Designer", "Marketing Manager")),
    "HR": (0.06, ("HR Partner",)),
    "Legal": (0.05, ("Counsel",)),
    "Research": (0.14, ("Scientist", "Research Lead")),
}
# department -> (mail/day, drive views/day, downloads/day, share of USB users, share of printers, external shares/day)
PROFILES: dict[str, tuple[float, float, float, float, float, float]] = {
    "Engineering": (6, 6, 1.5, 0.05, 0.05, 0.02),
    "IT": (8, 4, 1.0, 0.6, 0.1, 0.02),
    "Sales": (14, 8, 2.5, 0.05, 0.3, 0.6),
    "Finance": (9, 10, 3.0, 0.05, 0.7, 0.05),
    "Marketing": (10, 8, 3.0, 0.4, 0.3, 0.3),
    "HR": (12, 8, 2.0, 0.05, 0.6, 0.05),
    "Legal": (10, 9, 2.0, 0.1, 0.8, 0.1),
    "Research": (5, 9, 2.5, 0.15, 0.2, 0.05),
}
COUNTRIES = {
    "America/New_York": ("United States", 7922),
    "America/Los_Angeles": ("United States", 7018),
    "Europe/London": ("United Kingdom", 2856),
    "Asia/Singapore": ("Singapore", 9506),
}
ABROAD = (("Germany", 3320), ("France", 3215), ("Japan", 2516), ("Brazil", 28573), ("Canada", 812))
ATTACKERS = (("Russia", 12389), ("Nigeria", 37148), ("Vietnam", 45899), ("Romania", 8708))
CLIENTS = ("acme.com", "globex.com", "initech.com", "umbrella.com", "hooli.com", "stark.com")
PERSONAL = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com")
SITES = ("news.example.org", "wiki.corp.example", "docs.python.org", "stackoverflow.com", "github.com", "weather.com")
JOB_SITES = ("www.indeed.com", "www.glassdoor.com", "www.monster.com")
FIRST = ("alex", "sam", "kim", "lee", "pat", "jo", "max", "ari", "kai", "ren", "mia", "eva", "noa", "ian", "zoe")
LAST = ("smith", "jones", "brown", "garcia", "miller", "davis", "lopez", "wilson", "clark", "young", "hall", "king")
AWS_DEPARTMENTS = ("Engineering", "IT")
SHAPES = ("office", "noisy", "subtle", "endpoint", "devices", "desktops")
"""Structurally different organisations: `office` as described in docs/scoring.md; `noisy` adds administrators who
log on to colleagues' machines every day, a department that uses USB all day, frequent travellers and benign visits
to job, cloud and paste sites; `subtle` is `noisy` with insiders who move a few files at a time; `endpoint` is
`noisy` seen only through endpoint records (logons, USB, web, mail, files) with a bare directory (no machines, no
HR dates, no watchlists), as in the CERT datasets, so only the endpoint-visible scenarios run; `devices` is
`endpoint` seen only through logons, logoffs and removable-media connections and disconnections (no file writes,
web, mail or file records), so only the scenarios those show run; `desktops` is `devices` with a desktop fleet's
habits: screen unlocks logged as logons (several a day), a pool of shared machines (one for ten people) that some
people use beside their own, people who now and then log on at a colleague's desk, people who log on to their
machine after hours as a habit, and logons missing from the records at random (1 %)."""
ENDPOINT_SCENARIOS = SCENARIOS[:5]
"""The scenarios an endpoint-only organisation shows (the CERT ones)."""
DEVICE_SCENARIOS = ("after_hours_usb_leak", "job_search_usb", "sysadmin_keylogger", "other_machine_mail")
"""The scenarios logons and removable media alone show (a layoff's uploads are web requests)."""
VISIBLE_SCENARIOS = {"endpoint": ENDPOINT_SCENARIOS, "devices": DEVICE_SCENARIOS, "desktops": DEVICE_SCENARIOS}
"""Shapes seen through endpoint records only, and the scenarios each can show."""
DEVICE_ACTIONS = frozenset({"logged-in", "logged-off", "usb-device-connected", "usb-device-disconnected"})
"""The endpoint records the `devices` and `desktops` shapes keep (CERT logon and device files)."""
DEVICE_SHAPES = ("devices", "desktops")
"""Shapes seen through logons and removable media alone."""
MISSING_LOGONS = 0.01
"""The share of logons the `desktops` shape leaves out of the records."""
BENIGN_SITES = ("www.dropbox.com", "pastebin.com", "www.glassdoor.com", "wetransfer.com")
USB_SESSIONS = 1.5
"""Removable-media sessions on a day a person uses removable media."""
READ_CALLS = ("DescribeInstances", "ListBuckets", "DescribeSecurityGroups", "GetCallerIdentity", "ListRoles")


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    """The generator's knobs."""

    population: int = 300
    days: int = 42
    seed: int = 1
    noise: float = 1.0
    shape: str = "office"
    scenarios: tuple[str, ...] = SCENARIOS
    insiders: int | None = None
    warmup_days: int = 21
    start: date = date(2024, 3, 4)

    def insider_count(self) -> int:
        """How many incidents to inject (default: one per 100 people, at least one of each scenario)."""
        if self.insiders is not None:
            return self.insiders
        return max(len(self.scenarios), round(self.population / 100)) if self.scenarios else 0


@dataclass(slots=True)
class Label:
    """A malicious interval of one entity in one incident."""

    incident: str
    scenario: str
    person: str
    role: str
    start: datetime
    end: datetime

    def to_json(self) -> dict[str, str]:
        """Serialisable form."""
        return {
            "incident": self.incident,
            "scenario": self.scenario,
            "person": self.person,
            "role": self.role,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "end": self.end.isoformat().replace("+00:00", "Z"),
        }


@dataclass(slots=True)
class Actor:
    """A simulated person and their habits."""

    person: Person
    user: str
    zone: ZoneInfo
    host: str
    start_hour: float
    length: float
    evening: float
    weekend: float
    devices: list[str]
    country: str
    asn: int
    ip: str
    mail: float
    views: float
    downloads: float
    usb: float
    prints: float
    shares: float
    cloud: float
    personal_mail: float
    docs: list[str]
    roams: bool = False
    traveller: bool = False
    travel_until: int = -1
    abroad: tuple[str, int, str] = ("", 0, "")
    handover: bool = False
    unlocks: float = 0.0
    shared: float = 0.0
    borrows: float = 0.0
    late: float = 0.0

    @property
    def email(self) -> str:
        """Primary address: the Okta login and Google Workspace account."""
        return f"{self.user}@{DOMAIN}"

    @property
    def personal(self) -> str:
        """The person's private mailbox."""
        return f"{self.user.replace('.', '')}@{PERSONAL[zlib.crc32(self.user.encode()) % len(PERSONAL)]}"


@dataclass(slots=True)
class Simulation:
    """What a simulation produced."""

    people: list[Person]
    labels: list[Label]
    events: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    acts: list[Label] = field(default_factory=list)
    """Each malicious act from its first event to its last (the labels are their local days)."""


class Generator:
    """Builds records into per-day buckets, then writes them in time order."""

    def __init__(self, settings: SimulationSettings) -> None:
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.actors: list[Actor] = []
        self.buckets: dict[int, list[tuple[datetime, str, dict[str, Any]]]] = defaultdict(list)
        self.labels: list[Label] = []
        self.insiders: set[str] = set()
        self.layoff_day: int | None = None
        self.acts: dict[tuple[str, str, str, str], list[tuple[datetime, datetime]]] = defaultdict(list)

    # helpers ------------------------------------------------------------------------------------------
    def uid(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def at(self, actor: Actor, day: int, hour: float) -> datetime:
        """UTC time of a local hour (may exceed 24) on simulation day `day`."""
        base = self.s.start + timedelta(days=day)
        local = datetime(base.year, base.month, base.day, tzinfo=actor.zone) + timedelta(hours=hour)
        return local.astimezone(UTC)

    def emit(self, when: datetime, source: str, record: dict[str, Any]) -> None:
        if self.s.shape in VISIBLE_SCENARIOS and source != "endpoint":
            return
        if self.s.shape in DEVICE_SHAPES and _action(record) not in DEVICE_ACTIONS:
            return
        if self.s.shape == "desktops" and _action(record) == "logged-in" and self.rng.random() < MISSING_LOGONS:
            return
        day = (when.date() - self.s.start).days
        self.buckets[day].append((when, source, record))

    def act(self, incident: str, scenario: str, actor: Actor, role: str, *times: datetime) -> None:
        """Label the malicious events at `times` (each act's first and last event, so a labelled day is every
        local day the act's events fall on)."""
        self.acts[(incident, scenario, actor.person.id, role)].append((min(times), max(times)))

    def vary(self, mean: float) -> float:
        """A person's own rate around a department's mean."""
        return mean * self.rng.lognormvariate(0, 0.4)

    def poisson(self, mean: float) -> int:
        if mean <= 0:
            return 0
        if mean > 30:
            return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def client(self, actor: Actor, day: int) -> tuple[str, int, str]:
        """(country, ASN, IP) the person connects from that day (travel is noise)."""
        if day <= actor.travel_until:
            return actor.abroad
        return actor.country, actor.asn, actor.ip

    @staticmethod
    def iso(when: datetime) -> str:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # organisation ---------------------------------------------------------------------------------
    def people(self) -> None:
        rng = self.rng
        names = list(DEPARTMENTS)
        weights = [DEPARTMENTS[n][0] for n in names]
        for i in range(self.s.population):
            department = rng.choices(names, weights)[0]
            title = rng.choice(DEPARTMENTS[department][1])
            user = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}"
            zone = rng.choices(ZONES, (0.45, 0.25, 0.2, 0.1))[0]
            country, asn = COUNTRIES[zone]
            mail, views, downloads, usb_share, print_share, shares = PROFILES[department]
            person = Person(
                id=f"{user}@{DOMAIN}",
                display_name=user.rstrip("0123456789").replace(".", " ").title(),
                department=department,
                title=title,
                groups=[f"dept-{department.lower()}"],
                timezone=zone,
                aliases=[f"{user}@{UPN_DOMAIN}", user.replace(".", ""), user.replace(".", "") + "-gh"],
                hosts=[f"WS-{i:05d}"],
            )
            if title in ("Systems Administrator", "SRE"):
                person.watchlists["privileged"] = date.min
            if rng.random() < 0.08:
                person.watchlists["contractor"] = date.min
            actor = Actor(
                person=person,
                user=user,
                zone=ZoneInfo(zone),
                host=f"WS-{i:05d}",
                start_hour=rng.uniform(7.0, 10.0),
                length=rng.uniform(7.5, 9.5),
                evening=0.35 if rng.random() < 0.12 else 0.0,
                weekend=0.3 if rng.random() < 0.1 else 0.03,
                devices=[self.uid()[:16]],
                country=country,
                asn=asn,
                ip=f"{rng.randint(20, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                mail=self.vary(mail),
                views=self.vary(views),
                downloads=self.vary(downloads),
                usb=self.vary(0.3) if rng.random() < usb_share else 0.0,
                prints=self.vary(1.5) if rng.random() < print_share else 0.0,
                shares=self.vary(shares),
                cloud=self.vary(0.15) if rng.random() < 0.04 else 0.0,
                personal_mail=self.vary(0.05) if rng.random() < 0.3 else 0.0,
                docs=[self.uid()[:20] for _ in range(40)],
            )
            if self.s.shape != "office":
                self.noisy_habits(actor)
            if self.s.shape == "desktops":
                self.desktop_habits(actor)
            self.actors.append(actor)
        departments: dict[str, list[Actor]] = defaultdict(list)
        for actor in self.actors:
            departments[actor.person.department or ""].append(actor)
        self.by_department = departments
        self.team_docs = {d: [self.uid()[:20] for _ in range(150)] for d in departments}

    def noisy_habits(self, actor: Actor) -> None:
        """The `noisy` and `subtle` shapes: roaming administrators, a heavy-USB department, travellers."""
        rng = self.rng
        if actor.person.department == "IT":
            actor.roams = True
        if actor.person.department == "Marketing":
            actor.usb = self.vary(0.9)
        if rng.random() < 0.1:
            actor.traveller = True

    def desktop_habits(self, actor: Actor) -> None:
        """The `desktops` shape: screen unlocks, shared machines, colleagues' desks, habitual after-hours logons."""
        rng = self.rng
        actor.unlocks = self.vary(2.0) if rng.random() < 0.7 else 0.0
        actor.shared = rng.uniform(0.1, 0.5) if rng.random() < 0.15 else 0.0
        actor.borrows = rng.uniform(0.02, 0.1) if rng.random() < 0.12 else 0.0
        actor.late = rng.uniform(0.1, 0.4) if rng.random() < 0.1 else 0.0

    def hr(self) -> None:
        """Benign departures (with handover downloads) and, when a layoff scenario runs, a layoff wave."""
        rng = self.rng
        for actor in self.actors:
            if rng.random() < 0.02 * max(self.s.noise, 0.5):
                notice = rng.randint(self.s.warmup_days // 2, self.s.days - 5)
                actor.person.notice_date = self.s.start + timedelta(days=notice)
                actor.person.departure_date = actor.person.notice_date + timedelta(days=rng.randint(14, 28))
                actor.handover = True
        if "layoff_dropbox" in self.s.scenarios:
            self.layoff_day = rng.randint(self.s.warmup_days, max(self.s.warmup_days, self.s.days - 12))
            since = self.s.start + timedelta(days=self.layoff_day)
            for actor in rng.sample(self.actors, max(1, self.s.population // 25)):
                actor.person.watchlists["on_notice"] = since
                actor.person.departure_date = since + timedelta(days=rng.randint(20, 40))

    # records --------------------------------------------------------------------------------------
    def okta(
        self,
        actor: Actor,
        when: datetime,
        event_type: str,
        *,
        result: str = "SUCCESS",
        client: tuple[str, int, str] | None = None,
        device: str | None = None,
        login: str | None = None,
    ) -> None:
        country, asn, ip = client or (actor.country, actor.asn, actor.ip)
        self.emit(
            when,
            "okta",
            {
                "uuid": self.uid(),
                "published": self.iso(when),
                "eventType": event_type,
                "version": "0",
                "severity": "INFO" if result == "SUCCESS" else "WARN",
                "displayMessage": event_type,
                "actor": {
                    "id": "00u" + actor.user[:8],
                    "type": "User",
                    "alternateId": login or actor.email,
                    "displayName": actor.person.display_name,
                },
                "client": {
                    "ipAddress": ip,
                    "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"},
                    "geographicalContext": {"country": country},
                    "device": "Computer",
                },
                "securityContext": {"asNumber": asn},
                "outcome": {"result": result, "reason": None if result == "SUCCESS" else "User rejected"},
                "debugContext": {"debugData": {"deviceFingerprint": device or actor.devices[0]}},
                "target": [],
            },
        )

    def entra(
        self, actor: Actor, when: datetime, *, error: int = 0, client: tuple[str, int, str] | None = None
    ) -> None:
        country, asn, ip = client or (actor.country, actor.asn, actor.ip)
        self.emit(
            when,
            "entra",
            {
                "id": self.uid(),
                "createdDateTime": self.iso(when),
                "userPrincipalName": f"{actor.user}@{UPN_DOMAIN}",
                "userDisplayName": actor.person.display_name,
                "appDisplayName": self.rng.choice(("Office 365 Exchange Online", "Microsoft Teams", "SharePoint")),
                "ipAddress": ip,
                "clientAppUsed": "Browser",
                "status": {"errorCode": error, "failureReason": None if error == 0 else "Other."},
                "deviceDetail": {"deviceId": actor.devices[0], "operatingSystem": "Windows10", "browser": "Edge"},
                "location": {"countryOrRegion": country[:2].upper()},
                "autonomousSystemNumber": asn,
            },
        )

    def entra_audit(self, actor: Actor, when: datetime, activity: str, target: str) -> None:
        self.emit(
            when,
            "entra",
            {
                "id": self.uid(),
                "category": "RoleManagement",
                "activityDateTime": self.iso(when),
                "activityDisplayName": activity,
                "result": "success",
                "initiatedBy": {"user": {"userPrincipalName": f"{actor.user}@{UPN_DOMAIN}"}},
                "targetResources": [{"type": "User", "userPrincipalName": target}],
            },
        )

    def cloudtrail(
        self,
        actor: Actor,
        when: datetime,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        moved: int | None = None,
        iam_user: bool = False,
    ) -> None:
        if iam_user:
            identity = {
                "type": "IAMUser",
                "userName": actor.user.replace(".", ""),
                "arn": f"arn:aws:iam::{ACCOUNT}:user/{actor.user.replace('.', '')}",
                "accountId": ACCOUNT,
            }
        else:
            identity = {
                "type": "AssumedRole",
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Developer/{actor.email}",
                "accountId": ACCOUNT,
            }
        source = "s3.amazonaws.com" if "Object" in name or "Bucket" in name else "iam.amazonaws.com"
        if name in ("StopLogging", "DeleteTrail"):
            source = "cloudtrail.amazonaws.com"
        record: dict[str, Any] = {
            "eventVersion": "1.08",
            "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": source,
            "eventName": name,
            "awsRegion": "us-east-1",
            "sourceIPAddress": actor.ip,
            "userIdentity": identity,
            "requestParameters": params or {},
            "eventID": self.uid(),
            "eventType": "AwsApiCall",
            "recipientAccountId": ACCOUNT,
        }
        if moved is not None:
            record["additionalEventData"] = {"bytesTransferredOut": moved}
        self.emit(when, "cloudtrail", record)

    def drive(self, actor: Actor, when: datetime, name: str, doc: str, **params: str) -> None:
        parameters = [{"name": "doc_id", "value": doc}, {"name": "doc_title", "value": f"doc {doc[:6]}"}]
        parameters += [{"name": k, "value": v} for k, v in params.items()]
        self.emit(
            when,
            "gworkspace",
            {
                "kind": "admin#reports#activity",
                "id": {
                    "time": self.iso(when),
                    "uniqueQualifier": str(self.rng.getrandbits(63)),
                    "applicationName": "drive",
                    "customerId": "C03az79cb",
                },
                "actor": {"email": actor.email, "profileId": str(zlib.crc32(actor.user.encode()))},
                "ipAddress": actor.ip,
                "events": [{"type": "access", "name": name, "parameters": parameters}],
            },
        )

    def ecs(
        self, actor: Actor, when: datetime, category: str, action: str, host: str | None = None, **extra: Any
    ) -> None:
        record: dict[str, Any] = {
            "@timestamp": self.iso(when),
            "event": {"id": self.uid(), "category": [category], "action": action, "outcome": "success"},
            "user": {"name": actor.user.replace(".", ""), "domain": "CORP"},
            "host": {"name": host or actor.host},
            "source": {"ip": actor.ip},
        }
        record.update(extra)
        self.emit(when, "endpoint", record)

    def mail(self, actor: Actor, when: datetime, to: list[str], attachment: int = 0, action: str = "send") -> None:
        email: dict[str, Any] = {
            "direction": "outbound",
            "from": {"address": [actor.email]},
            "to": {"address": to},
            "subject": "re: update",
        }
        if attachment:
            email["attachments"] = [{"file": {"name": "report.pdf", "size": attachment}}]
        self.ecs(actor, when, "email", action, email=email)

    def web(
        self, actor: Actor, when: datetime, domain: str, method: str = "GET", size: int = 0, path: str = "/"
    ) -> None:
        http = {"request": {"method": method, "bytes": size or 900}, "response": {"status_code": 200}}
        self.ecs(actor, when, "web", "http-request", url={"domain": domain, "path": path}, http=http)

    def usb_copy(self, actor: Actor, when: datetime, files: int, host: str | None = None) -> datetime:
        """Connect a USB device at `when` and write `files` to it; the time of the last write."""
        if self.s.shape == "subtle" and actor.person.id in self.insiders:
            files = max(1, files // 4)
        device = {"id": self.uid()[:12], "type": "usb", "manufacturer": "SanDisk"}
        self.ecs(actor, when, "host", "usb-device-connected", host, device=device)
        for n in range(files):
            size = int(self.rng.lognormvariate(14.5, 1.0))
            path = f"E:\\backup\\{self.uid()[:8]}.docx"
            self.ecs(
                actor,
                when + timedelta(seconds=20 * (n + 1)),
                "file",
                "removable-media-write",
                host,
                device=device,
                file={"path": path, "size": size},
            )
        last = when + timedelta(seconds=20 * files)
        self.ecs(actor, last + timedelta(seconds=30), "host", "usb-device-disconnected", host, device=device)
        return last

    # normal behaviour -----------------------------------------------------------------------------
    def workday(self, actor: Actor, day: int, weekend: bool) -> None:
        rng, noise = self.rng, self.s.noise
        if weekend:
            start, end = rng.uniform(10, 16), 0.0
            end = start + rng.uniform(0.5, 2.0)
        else:
            start = actor.start_hour + rng.gauss(0, 0.4)
            end = start + actor.length + rng.gauss(0, 0.5)
            if rng.random() < 0.01 * noise:
                end += rng.uniform(2, 4)
        client = self.client(actor, day)
        scale = 0.25 if weekend else 1.0
        if rng.random() < 0.02 * noise:
            for _ in range(rng.randint(1, 3)):
                self.okta(
                    actor,
                    self.at(actor, day, start),
                    "user.authentication.auth_via_mfa",
                    result="FAILURE",
                    client=client,
                )
        for _ in range(1 + self.poisson(0.4)):
            self.okta(
                actor,
                self.at(actor, day, start + rng.uniform(0, 0.1)),
                "user.session.start",
                client=client,
                device=rng.choice(actor.devices),
            )
        for _ in range(1 + self.poisson(1.5 * scale)):
            self.entra(actor, self.at(actor, day, rng.uniform(start, end)), client=client)
        if rng.random() < 0.003 * noise:
            self.okta(actor, self.at(actor, day, rng.uniform(start, end)), "user.mfa.factor.activate")
        self.ecs(actor, self.at(actor, day, start + 0.05), "authentication", "logged-in")
        for _ in range(self.poisson(actor.mail * scale)):
            to = [f"{rng.choice(self.actors).user}@{DOMAIN}" for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.2:
                to.append(f"contact@{rng.choice(CLIENTS)}")
            if rng.random() < 0.01:
                to = [f"{a.user}@{DOMAIN}" for a in rng.sample(self.actors, min(len(self.actors), 30))]
            self.mail(actor, self.at(actor, day, rng.uniform(start, end)), to)
        if actor.personal_mail and rng.random() < actor.personal_mail:
            self.mail(
                actor, self.at(actor, day, rng.uniform(start, end)), [actor.personal], int(rng.lognormvariate(12, 1))
            )
        for _ in range(self.poisson(3 * scale)):
            self.web(actor, self.at(actor, day, rng.uniform(start, end)), rng.choice(SITES))
        if rng.random() < 0.01 * noise:
            self.web(actor, self.at(actor, day, rng.uniform(start, end)), rng.choice(JOB_SITES), path="/jobs")
        if actor.cloud and rng.random() < actor.cloud:
            self.web(
                actor,
                self.at(actor, day, rng.uniform(start, end)),
                "www.dropbox.com",
                "POST",
                int(rng.lognormvariate(14, 1)),
            )
        team = self.team_docs[actor.person.department or ""]
        for _ in range(self.poisson(actor.views * scale)):
            doc = rng.choice(team) if rng.random() < 0.6 else rng.choice(actor.docs)
            self.drive(actor, self.at(actor, day, rng.uniform(start, end)), "view", doc)
        downloads = actor.downloads * scale * (5 if rng.random() < 0.01 * noise else 1)
        notice = actor.person.notice_date
        if actor.handover and notice is not None and self.s.start + timedelta(days=day) >= notice:
            downloads *= 2
        for _ in range(self.poisson(downloads)):
            doc = rng.choice(team) if rng.random() < 0.5 else rng.choice(actor.docs)
            self.drive(actor, self.at(actor, day, rng.uniform(start, end)), "download", doc)
        for _ in range(self.poisson(actor.shares * scale)):
            self.drive(
                actor,
                self.at(actor, day, rng.uniform(start, end)),
                "change_user_access",
                rng.choice(actor.docs),
                target_user=f"contact@{rng.choice(CLIENTS)}",
                visibility="shared_externally",
            )
        if actor.usb and rng.random() < actor.usb:
            for _ in range(1 + self.poisson(USB_SESSIONS - 1)):
                self.usb_copy(actor, self.at(actor, day, rng.uniform(start, end)), 1 + self.poisson(2))
        for _ in range(self.poisson(actor.prints * scale)):
            self.ecs(actor, self.at(actor, day, rng.uniform(start, end)), "process", "document-printed")
        department, title = actor.person.department, actor.person.title
        if department in AWS_DEPARTMENTS and not weekend:
            for _ in range(self.poisson(8)):
                self.cloudtrail(actor, self.at(actor, day, rng.uniform(start, end)), rng.choice(READ_CALLS))
            for _ in range(self.poisson(2)):
                key = f"data/{rng.randint(0, 400)}.parquet"
                self.cloudtrail(
                    actor,
                    self.at(actor, day, rng.uniform(start, end)),
                    "GetObject",
                    {"bucketName": "analytics", "key": key},
                    moved=int(rng.lognormvariate(15, 1)),
                )
            if title in ("SRE", "Systems Administrator"):
                if rng.random() < 0.03:
                    self.cloudtrail(
                        actor,
                        self.at(actor, day, rng.uniform(start, end)),
                        "AttachRolePolicy",
                        {"roleName": "app-runtime", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
                    )
                for _ in range(self.poisson(0.3)):
                    self.cloudtrail(
                        actor, self.at(actor, day, rng.uniform(start, end)), "GetSecretValue", {"secretId": "app/db"}
                    )
                for _ in range(self.poisson(1)):
                    when = self.at(actor, day, rng.uniform(start, end))
                    self.emit(
                        when,
                        "endpoint",
                        {
                            "event": "session.start",
                            "uid": self.uid(),
                            "time": self.iso(when),
                            "user": actor.email,
                            "login": "root",
                            "server_hostname": f"srv-{rng.randint(1, 40)}",
                        },
                    )
        if actor.roams and not weekend:
            for _ in range(self.poisson(4)):
                other = rng.choice(self.actors).host
                self.ecs(actor, self.at(actor, day, rng.uniform(start, end)), "authentication", "logged-in", other)
        if self.s.shape != "office" and rng.random() < 0.05 * noise:
            self.web(actor, self.at(actor, day, rng.uniform(start, end)), rng.choice(BENIGN_SITES))
        self.ecs(actor, self.at(actor, day, end), "authentication", "logged-off")
        self.desktop_day(actor, day, start, end, scale)
        if actor.evening and rng.random() < actor.evening:
            evening = rng.uniform(19.5, 22.5)
            self.okta(actor, self.at(actor, day, evening), "user.session.start", client=client)
            for _ in range(self.poisson(3)):
                self.drive(actor, self.at(actor, day, evening + rng.uniform(0, 1)), "view", rng.choice(team))

    def desktop_day(self, actor: Actor, day: int, start: float, end: float, scale: float) -> None:
        """The `desktops` habits of a day: unlocks, a session on a shared machine or at a colleague's desk, an
        after-hours session."""
        rng = self.rng
        for _ in range(self.poisson(actor.unlocks * scale)):
            self.ecs(actor, self.at(actor, day, rng.uniform(start, end)), "authentication", "logged-in")
        if actor.shared and rng.random() < actor.shared:
            self.session(
                actor, day, rng.uniform(start, end - 0.5), f"LAB-{rng.randrange(self.s.population // 10 or 1):04d}"
            )
        if actor.borrows and rng.random() < actor.borrows:
            team = self.by_department[actor.person.department or ""]
            self.session(actor, day, rng.uniform(start, end - 0.5), rng.choice(team).host)
        if actor.late and rng.random() < actor.late:
            self.session(actor, day, rng.uniform(19.5, 23.5), actor.host)

    def session(self, actor: Actor, day: int, hour: float, host: str) -> None:
        """A logon to `host` at a local hour and its logoff a little later."""
        self.ecs(actor, self.at(actor, day, hour), "authentication", "logged-in", host)
        self.ecs(actor, self.at(actor, day, hour + self.rng.uniform(0.2, 1.5)), "authentication", "logged-off", host)

    def noise_events(self, actor: Actor, day: int) -> None:
        rng, noise = self.rng, self.s.noise
        travel = 0.05 if actor.traveller else 0.004
        if day > actor.travel_until and rng.random() < travel * noise:
            country, asn = rng.choice(ABROAD)
            actor.abroad = (country, asn, f"{rng.randint(20, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.9")
            actor.travel_until = day + rng.randint(2, 5)
        if rng.random() < 0.004 * noise:
            actor.devices.insert(0, self.uid()[:16])
        # Benign people take up USB now and then; an insider keeps the habits they were picked for, so that a
        # scenario's premise (the after-hours leak's "someone who never used a drive") holds however long before
        # the act the organisation starts. The draw is made all the same: an organisation changes only where an
        # insider would have taken USB up, from that day on.
        if not actor.usb and rng.random() < 0.0005 * noise and actor.person.id not in self.insiders:
            actor.usb = 0.2

    # scenarios ------------------------------------------------------------------------------------
    def pick(self, test: Callable[[Actor], bool]) -> Actor:
        candidates = [a for a in self.actors if a.person.id not in self.insiders and test(a)]
        if not candidates:
            candidates = [a for a in self.actors if a.person.id not in self.insiders]
        actor = self.rng.choice(candidates)
        self.insiders.add(actor.person.id)
        return actor

    def weekend(self, day: int) -> bool:
        """Whether a day of the simulation falls on a weekend."""
        return (self.s.start + timedelta(days=day)).weekday() >= 5

    def window(self, length: int) -> int:
        return self.rng.randint(self.s.warmup_days, max(self.s.warmup_days, self.s.days - length - 1))

    def leave(self, actor: Actor, day: int, notice: int | None = None) -> None:
        actor.person.departure_date = self.s.start + timedelta(days=day)
        if notice is not None:
            actor.person.notice_date = self.s.start + timedelta(days=notice)

    def inject(self, incident: str, scenario: str) -> None:
        rng = self.rng
        if scenario == "after_hours_usb_leak":
            a = self.pick(lambda x: not x.usb and not x.evening and not x.late and x.person.department != "IT")
            start = self.window(8)
            days = sorted(rng.sample(range(start, start + 8), rng.randint(2, 4)))
            for i, day in enumerate(days):
                when = self.at(a, day, rng.uniform(22, 25))
                self.okta(a, when, "user.session.start")
                self.ecs(a, when + timedelta(minutes=1), "authentication", "logged-in")
                copied = self.usb_copy(a, when + timedelta(minutes=5), 5 + self.poisson(15))
                self.act(incident, scenario, a, "insider", when, copied)
                if i == len(days) - 1:
                    for n in range(rng.randint(1, 3)):
                        leak = when + timedelta(minutes=30 + n)
                        self.web(a, leak, "wikileaks.org", "POST", int(rng.lognormvariate(16, 1)), "/submit")
                        self.act(incident, scenario, a, "insider", leak)
            self.leave(a, days[-1] + rng.randint(2, 6))
        elif scenario == "job_search_usb":
            a = self.pick(lambda x: 0 < x.usb < 0.4)
            if not a.usb:
                a.usb = 0.15
            start = self.window(6)
            for day in range(max(0, start - 14), start):
                if rng.random() < 0.7:
                    for _ in range(1 + self.poisson(3)):
                        self.web(a, self.at(a, day, rng.uniform(9, 17)), rng.choice(JOB_SITES), path="/jobs")
            room = self.s.days - start - 4
            # sessions a day and files a session: at least the first, plus a Poisson draw of mean the second
            if room >= 10 and rng.random() < 0.5:  # weeks at 3-6 times their habit's sessions, a few files each
                rate = rng.uniform(3, 6) * a.usb * USB_SESSIONS
                share, length = min(0.9, rate), rng.randint(10, min(30, room))
                days = [d for d in range(start, start + length) if not self.weekend(d) and rng.random() < share]
                sessions, files, last, gap = (1, rate / share - 1), (2, 6), start + length, (2, 5)
            else:  # a few days in a row of several sessions a day, many files each
                days = list(range(start, start + rng.randint(3, 5)))
                sessions, files, last, gap = (2, 2), (10, 15), start, (6, 9)
            for day in days:
                for when in sorted(
                    self.at(a, day, rng.uniform(10, 17)) for _ in range(sessions[0] + self.poisson(sessions[1]))
                ):
                    copied = self.usb_copy(a, when, files[0] + self.poisson(files[1]))
                    self.act(incident, scenario, a, "insider", when, copied)
            self.leave(a, last + rng.randint(*gap), notice=start - 3)
        elif scenario == "sysadmin_keylogger":
            a = self.pick(lambda x: x.person.title == "Systems Administrator")
            # The keylogger goes on the supervisor's machine and the supervisor's account is misused from the
            # administrator's, as in CERT scenario 3. The account was once a second person's, drawn apart; the draw
            # is made all the same, so an organisation is the one it was but for whose account is misused.
            boss = rng.choice([x for x in self.actors if x is not a])
            rng.choice([x for x in self.actors if x is not a and x is not boss])
            day = self.window(6)
            when = self.at(a, day, rng.uniform(12, 13))
            self.ecs(a, when, "authentication", "logged-in", boss.host)
            copied = self.usb_copy(a, when + timedelta(minutes=2), 1, boss.host)
            self.act(incident, scenario, a, "insider", when, copied)
            later_day = day + rng.randint(2, 5)
            when = self.at(boss, later_day, rng.uniform(21, 23))
            self.okta(boss, when, "user.session.start", client=(a.country, a.asn, a.ip), device=a.devices[0])
            self.ecs(boss, when, "authentication", "logged-in", a.host, source={"ip": a.ip})
            everyone = [f"{x.user}@{DOMAIN}" for x in self.actors]
            self.mail(boss, when + timedelta(minutes=5), everyone)
            self.act(incident, scenario, boss, "compromised", when)
            self.leave(a, later_day + rng.randint(1, 3))
        elif scenario == "other_machine_mail":
            a = self.pick(lambda x: not x.personal_mail)
            victim = rng.choice([x for x in self.by_department[a.person.department or ""] if x is not a] or self.actors)
            start = self.window(3)
            for day in range(start, start + rng.randint(1, 3)):
                when = self.at(a, day, rng.uniform(12, 18))
                self.ecs(a, when, "authentication", "logged-in", victim.host)
                for n in range(20 + self.poisson(40)):
                    self.ecs(
                        a,
                        when + timedelta(seconds=10 * n),
                        "file",
                        "open",
                        victim.host,
                        file={"path": f"C:\\Users\\{victim.user}\\Documents\\{self.uid()[:8]}.xlsx"},
                    )
                for n in range(rng.randint(3, 8)):
                    self.mail(a, when + timedelta(minutes=20 + n), [a.personal], int(rng.lognormvariate(15, 1)))
                self.act(incident, scenario, a, "insider", when)
        elif scenario == "layoff_dropbox":
            assert self.layoff_day is not None
            laid_off = lambda x: "on_notice" in x.person.watchlists and not x.cloud  # noqa: E731
            a = self.pick(laid_off)
            a.person.watchlists.setdefault("on_notice", self.s.start + timedelta(days=self.layoff_day))
            start = min(self.layoff_day + rng.randint(1, 4), self.s.days - 4)
            for day in range(start, start + rng.randint(2, 4)):
                when = self.at(a, day, rng.uniform(10, 17))
                for n in range(5 + self.poisson(15)):
                    self.drive(a, when + timedelta(seconds=30 * n), "download", rng.choice(a.docs))
                for n in range(5 + self.poisson(15)):
                    self.web(
                        a,
                        when + timedelta(minutes=15, seconds=40 * n),
                        "www.dropbox.com",
                        "POST",
                        int(rng.lognormvariate(15, 1)),
                        "/upload",
                    )
                self.act(incident, scenario, a, "insider", when)
        elif scenario == "departure_mass_download":
            a = self.pick(lambda x: not x.handover)
            start = self.window(4)
            company = [d for docs in self.team_docs.values() for d in docs]
            for day in range(start, start + rng.randint(1, 3)):
                when = self.at(a, day, rng.uniform(9, 17))
                for n in range(50 + self.poisson(120)):
                    self.drive(a, when + timedelta(seconds=5 * n), "download", rng.choice(company))
                if a.person.department in AWS_DEPARTMENTS:
                    for n in range(100 + self.poisson(100)):
                        self.cloudtrail(
                            a,
                            when + timedelta(seconds=3 * n),
                            "GetObject",
                            {"bucketName": "customer-exports", "key": f"{n}.csv"},
                            moved=int(rng.lognormvariate(17, 1)),
                        )
                self.act(incident, scenario, a, "insider", when)
            self.leave(a, start + rng.randint(5, 10), notice=start - rng.randint(3, 7))
        elif scenario == "privilege_abuse":
            a = self.pick(lambda x: x.person.title in ("SRE", "Systems Administrator"))
            other = rng.choice([x for x in self.actors if x is not a])
            day = self.window(3)
            when = self.at(a, day, rng.uniform(18, 21))
            self.cloudtrail(
                a,
                when,
                "AttachUserPolicy",
                {"userName": a.user.replace(".", ""), "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
                iam_user=True,
            )
            self.entra_audit(a, when + timedelta(minutes=3), "Add member to role", f"{a.user}@{UPN_DOMAIN}")
            self.act(incident, scenario, a, "insider", when)
            later = self.at(a, day + rng.randint(1, 2), rng.uniform(20, 23))
            self.cloudtrail(a, later, "StopLogging", {"name": "org-trail"}, iam_user=True)
            self.cloudtrail(
                a,
                later + timedelta(minutes=2),
                "CreateAccessKey",
                {"userName": other.user.replace(".", "")},
                iam_user=True,
            )
            self.act(incident, scenario, a, "insider", later)
        elif scenario == "external_share_forwarding":
            a = self.pick(lambda x: x.shares < 0.1)
            start = self.window(3)
            for day in range(start, start + rng.randint(1, 3)):
                when = self.at(a, day, rng.uniform(9, 18))
                for n in range(10 + self.poisson(20)):
                    self.drive(
                        a,
                        when + timedelta(seconds=20 * n),
                        "change_user_access",
                        rng.choice(a.docs),
                        target_user=a.personal,
                        visibility="shared_externally",
                    )
                self.act(incident, scenario, a, "insider", when)
            when = self.at(a, start, 19.0)
            self.ecs(a, when, "email", "mail-forwarding-rule-created", email={"to": {"address": [a.personal]}})
            self.act(incident, scenario, a, "insider", when)
        elif scenario == "mfa_fatigue":
            a = self.pick(lambda x: True)
            day = self.window(2)
            country, asn = rng.choice(ATTACKERS)
            attacker = (country, asn, f"{rng.randint(80, 200)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.66")
            when = self.at(a, day, rng.uniform(1, 5))
            for n in range(10 + self.poisson(15)):
                self.okta(
                    a,
                    when + timedelta(seconds=40 * n),
                    "system.push.send_factor_verify_push",
                    result="FAILURE",
                    client=attacker,
                    device="attacker-device",
                )
            later = when + timedelta(minutes=30)
            self.okta(a, later, "user.session.start", client=attacker, device="attacker-device")
            company = [d for docs in self.team_docs.values() for d in docs]
            for n in range(40 + self.poisson(60)):
                self.drive(a, later + timedelta(seconds=10 + 8 * n), "download", rng.choice(company))
            self.act(incident, scenario, a, "compromised", when)
            self.act(incident, scenario, a, "compromised", later + timedelta(minutes=20))
        else:
            raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")

    # output ---------------------------------------------------------------------------------------
    def run(self, out: Path, progress: Callable[[int], None] | None = None) -> Simulation:
        self.people()
        self.hr()
        for number in range(self.s.insider_count()):
            scenario = self.s.scenarios[number % len(self.s.scenarios)]
            self.inject(f"incident-{number + 1:03d}", scenario)
        acts = []
        for (incident, scenario, person, role), spans in self.acts.items():
            zone = next(a.zone for a in self.actors if a.person.id == person)
            by_day: dict[date, list[datetime]] = defaultdict(list)
            for span in spans:
                acts.append(Label(incident, scenario, person, role, *span))
                for when in span:
                    by_day[when.astimezone(zone).date()].append(when)
            for whens in by_day.values():
                self.labels.append(Label(incident, scenario, person, role, min(whens), max(whens)))
        self.labels.sort(key=lambda label: (label.start, label.person))
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, BinaryIO] = {source: (out / f"{source}.ndjson").open("wb") for source in SOURCES}
        counts = dict.fromkeys(SOURCES, 0)
        try:
            for day in range(self.s.days):
                today = self.s.start + timedelta(days=day)
                for actor in self.actors:
                    departure = actor.person.departure_date
                    if departure is not None and today > departure:
                        continue
                    self.noise_events(actor, day)
                    weekend = self.weekend(day)
                    if weekend and self.rng.random() >= actor.weekend:
                        continue
                    if not weekend and self.rng.random() < 0.04:
                        continue
                    self.workday(actor, day, weekend)
                self._flush(day - 2, files, counts)
                if progress is not None:
                    progress(day + 1)
            self._flush(max(self.buckets, default=0), files, counts)
        finally:
            for handle in files.values():
                handle.close()
        people = [actor.person for actor in self.actors]
        entries = [p.to_json() for p in people]
        if self.s.shape in VISIBLE_SCENARIOS:
            entries = [
                {k: e[k] for k in ("id", "display_name", "department", "title", "timezone", "aliases")} for e in entries
            ]
        (out / "directory.json").write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
        write_labels(self.labels, out / "labels.json", self.s)
        with (out / "labels.csv").open("w", newline="", encoding="utf-8") as text:
            _labels_csv(self.labels, text)
        written = ("endpoint",) if self.s.shape in VISIBLE_SCENARIOS else SOURCES
        for source in SOURCES:
            if source not in written:
                (out / f"{source}.ndjson").unlink()
        paths = [out / f"{source}.ndjson" for source in written]
        return Simulation(people, self.labels, counts, paths, sorted(acts, key=lambda act: act.start))

    def _flush(self, day: int, files: dict[str, BinaryIO], counts: dict[str, int]) -> None:
        """Write the records of UTC days up to `day` in time order (later local days cannot add to them)."""
        ready = [d for d in self.buckets if d <= day]
        records = [item for d in sorted(ready) for item in self.buckets.pop(d)]
        records.sort(key=lambda item: item[0])
        for _, source, record in records:
            files[source].write(orjson.dumps(record) + b"\n")
            counts[source] += 1


def write_labels(labels: list[Label], path: Path, settings: SimulationSettings) -> None:
    """Labels as JSON, with the simulation's knobs for the record."""
    body = {
        "population": settings.population,
        "days": settings.days,
        "seed": settings.seed,
        "noise": settings.noise,
        "start": settings.start.isoformat(),
        "labels": [label.to_json() for label in labels],
    }
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))


def _labels_csv(labels: list[Label], handle: TextIO) -> None:
    writer = csv.DictWriter(handle, fieldnames=["incident", "scenario", "person", "role", "start", "end"])
    writer.writeheader()
    for label in labels:
        writer.writerow(label.to_json())


def simulate(settings: SimulationSettings, out: Path, progress: Callable[[int], None] | None = None) -> Simulation:
    """Generate an organisation's logs into `out` (one NDJSON file per source), its directory and labels;
    `progress` is given the count of days written so far."""
    if settings.shape not in SHAPES:
        raise ValueError(f"unknown --shape {settings.shape!r} (known: {', '.join(SHAPES)})")
    unknown = [s for s in settings.scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})")
    visible = VISIBLE_SCENARIOS.get(settings.shape)
    if visible is not None:
        hidden = [s for s in settings.scenarios if s not in visible]
        if hidden and settings.scenarios != SCENARIOS:
            raise ValueError(
                f"--shape {settings.shape} shows endpoint records only, so --scenario {hidden[0]} cannot be seen "
                f"({settings.shape} scenarios: {', '.join(visible)})"
            )
        settings = replace(settings, scenarios=tuple(s for s in settings.scenarios if s in visible))
    if settings.population < 20:
        raise ValueError(f"--population {settings.population} is too small: 20 people or more (peers to compare)")
    if settings.noise < 0:
        raise ValueError(f"--noise {settings.noise} is below 0: 0 is no benign anomaly, 1 the usual rate")
    if settings.insiders is not None and not 0 <= settings.insiders <= settings.population // 2:
        raise ValueError(
            f"--insiders {settings.insiders} is out of range: 0 to half the people ({settings.population // 2}), "
            "each incident with an insider of its own"
        )
    if settings.warmup_days < 1:
        raise ValueError(f"--warmup-days {settings.warmup_days} is below 1: at least one quiet day comes first")
    if settings.days < 11:
        raise ValueError(f"--days {settings.days} is too short: 11 or more (quiet days, then 10 in which insiders act)")
    latest = (utcnow().date() - settings.start).days
    if settings.days > latest:
        raise ValueError(
            f"--days {settings.days} runs past today: the simulated days start on {settings.start.isoformat()}, so "
            f"{latest} at most (later records would be outside the times a replay or an evaluation accepts)"
        )
    if settings.days < settings.warmup_days + 10:
        raise ValueError(
            f"--days {settings.days} is too short for --warmup-days {settings.warmup_days}: give --days "
            f"{settings.warmup_days + 10} or more, or a smaller --warmup-days (at most {settings.days - 10})"
        )
    return Generator(settings).run(out, progress)


def _action(record: dict[str, Any]) -> str | None:
    """An ECS record's `event.action` (None for records that name their event otherwise, as Teleport's do)."""
    event = record.get("event")
    return event.get("action") if isinstance(event, dict) else None
