"""Identity resolution: one entity per person across sources, from IdP/HR data and configured mappings.

A person is known by many names: an Entra UPN, an Okta login, an AWS IAM user or an assumed-role session name, a
Google Workspace address, a GitHub login, a Windows account on an endpoint. The directory lists each person with
their aliases (and HR facts: department, title, time zone, watchlists, notice and departure dates); configured
aliases and domain rules fill the gaps. Actors that look like service accounts become entities of their own kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from tzlocal.windows_tz import win_tz as WINDOWS_ZONES

from custodes.config import IdentitySettings
from custodes.connectors.files import file_bytes
from custodes.detections.scoring.cert import cert_people
from custodes.detections.scoring.idp_users import LIST_KEYS, PAGE_LINKS, day, user_entry
from custodes.detections.scoring.observation import name_key, normalise
from custodes.errors import CustodesError

PERSON = "person"
SERVICE = "service"


@dataclass(slots=True)
class Person:
    """A directory entry: who someone is, where they sit, and what HR knows about them."""

    id: str
    display_name: str | None = None
    kind: str = PERSON
    department: str | None = None
    title: str | None = None
    groups: list[str] = field(default_factory=list)
    timezone: str | None = None
    aliases: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    watchlists: dict[str, date] = field(default_factory=dict)
    notice_date: date | None = None
    departure_date: date | None = None

    @property
    def peer_group(self) -> str:
        """Department and title; what the person's baseline shrinks toward."""
        return f"{self.department or '-'}/{self.title or '-'}"

    def watchlists_on(self, day: date) -> list[str]:
        """Watchlists the person is on that day (`departing` from the notice date)."""
        if not self.watchlists and self.notice_date is None:
            return []
        names = [name for name, since in self.watchlists.items() if since <= day]
        if self.notice_date is not None and self.notice_date <= day and "departing" not in names:
            names.append("departing")
        return sorted(names)

    def to_json(self) -> dict[str, Any]:
        """The directory-file form of this person."""
        return {
            "id": self.id,
            "display_name": self.display_name,
            "kind": self.kind,
            "department": self.department,
            "title": self.title,
            "groups": self.groups,
            "timezone": self.timezone,
            "aliases": self.aliases,
            "hosts": self.hosts,
            "watchlists": {name: since.isoformat() for name, since in self.watchlists.items()},
            "notice_date": None if self.notice_date is None else self.notice_date.isoformat(),
            "departure_date": None if self.departure_date is None else self.departure_date.isoformat(),
        }


def person_from_json(record: dict[str, Any]) -> Person:
    """A Person from a Custodes directory entry, or an identity provider's user object (`idp_users`)."""
    record = user_entry(record) or record
    listed = record.get("watchlists") or {}
    if not isinstance(listed, dict):
        raise ValueError("watchlists: an object of watchlist names and the dates they start (or null)")
    watchlists = {str(k): day(v, f"watchlists.{k}") or date.min for k, v in listed.items()}
    return Person(
        id=str(record["id"]),
        display_name=record.get("display_name"),
        kind=str(record.get("kind") or PERSON),
        department=record.get("department"),
        title=record.get("title"),
        groups=[str(g) for g in record.get("groups") or []],
        timezone=record.get("timezone"),
        aliases=[str(a) for a in record.get("aliases") or []],
        hosts=[str(h) for h in record.get("hosts") or []],
        watchlists=watchlists,
        notice_date=day(record.get("notice_date"), "notice_date"),
        departure_date=day(record.get("departure_date"), "departure_date"),
    )


def load_directory(path: Path) -> list[Person]:
    """People from a JSON file (a list of Custodes entries or identity providers' user objects, or an object holding
    one: `people`, or a Graph or Google Directory page), a CERT LDAP CSV, or a folder of CERT LDAP CSVs (the
    datasets' monthly snapshots: everyone in any of them, as the latest names them); a bad entry names its position.
    """
    try:
        if path.is_dir():
            data: Any = _snapshots(path)
        else:
            raw = file_bytes(path)
            data = cert_people(path, raw) if path.suffix.lower() == ".csv" else orjson.loads(raw)
    except FileNotFoundError:
        raise CustodesError.at(path, "directory file not found") from None
    except orjson.JSONDecodeError as exc:
        raise CustodesError.at(path, f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno) from None
    if isinstance(data, dict):
        if more := next((key for key in PAGE_LINKS if data.get(key)), None):
            raise CustodesError.at(
                path,
                f"this is one page of several ({more} is set), so people are missing: save every page's people in "
                "one JSON list",
            )
        data = next((data[key] for key in LIST_KEYS if key in data), None)
    if not isinstance(data, list):
        raise CustodesError.at(
            path,
            "a directory is a JSON list of people (or {'people': [...]}, a Microsoft Graph page {'value': [...]}, a "
            "Google Directory page {'users': [...]})",
        )
    entries = data
    people = []
    for number, entry in enumerate(entries, start=1):
        try:
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            people.append(person_from_json(entry))
        except KeyError as exc:
            raise CustodesError.at(path, f"person #{number}: {exc.args[0]} is missing") from None
        except (ValueError, TypeError) as exc:
            raise CustodesError.at(path, f"person #{number}: {exc}") from None
    return people


def time_zone(name: str | None) -> ZoneInfo | None:
    """The time zone `name`, an IANA name or a Windows one (`W. Europe Standard Time`, as Microsoft Graph gives a
    mailbox's; read as CLDR maps it); None when none is named or it is neither."""
    if not name:
        return None
    try:
        return ZoneInfo(WINDOWS_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_of(person: Person | None, default: ZoneInfo) -> ZoneInfo:
    """The time zone a person's local days are in: theirs, else `default`."""
    return (time_zone(person.timezone) if person is not None else None) or default


def zone_warning(people: Iterable[Person], default: str) -> str | None:
    """What to say of the people whose time zone is neither an IANA nor a Windows name (their local days are the
    `default` zone's); None when there are none."""
    unknown = [f"{p.id}: {p.timezone!r}" for p in people if p.timezone and time_zone(p.timezone) is None]
    if not unknown:
        return None
    return (
        f"{len(unknown)} people in the directory have a time zone that is neither an IANA name (Europe/London) nor "
        f"a Windows one (GMT Standard Time), so their days are {default}'s: {', '.join(unknown[:5])}"
        f"{' ...' if len(unknown) > 5 else ''}"
    )


def _snapshots(folder: Path) -> list[dict[str, Any]]:
    """The people of every CERT LDAP CSV in `folder`, read in name order (`2010-01.csv` before `2010-02.csv`): each
    person once, with the attributes of the last file naming them. Who left stays (their events are still theirs);
    when they left is not read: it would tell the evaluation which people go, as a label does."""
    files = sorted(file for file in folder.iterdir() if file.suffix.lower() == ".csv" and file.is_file())
    if not files:
        raise CustodesError.at(folder, "a directory folder holds CERT LDAP CSV files (one a month); none found")
    people: dict[str, dict[str, Any]] = {}
    for file in files:
        people.update((person["id"], person) for person in cert_people(file, file_bytes(file)))
    return list(people.values())


def machine_name(host: str) -> str | None:
    """A machine's name without its domain (`ws-alice.corp.example` -> `ws-alice`); None for a name without one or
    an IPv4 address."""
    label, dot, _ = host.partition(".")
    return label if dot and label and not label.isdigit() else None


class IdentityResolver:
    """Maps any actor name to (entity key, kind); the key is a pseudonym when `pseudonym` is given."""

    def __init__(
        self,
        people: Iterable[Person],
        settings: IdentitySettings,
        pseudonym: Callable[[str], str] | None = None,
    ) -> None:
        self.people: dict[str, Person] = {}
        self.domains = {k.lower(): v.lower() for k, v in settings.domains.items()}
        self.service_patterns = [re.compile(p, re.IGNORECASE) for p in settings.service_patterns]
        self.pseudonym = pseudonym
        self._aliases: dict[str, str] = {}
        self._locals: dict[str, str | None] = {}
        self._names: dict[str, str | None] = {}
        """A full display name (two words or more, its spaces collapsed) -> the one person of that name (None:
        several): Duo's administrator log names administrators so."""
        self._hosts: dict[str, str] = {}
        self._cache: dict[str, tuple[str, str]] = {}
        self._by_key: dict[str, Person] = {}
        self.shared: dict[str, set[str]] = {}
        """Names (as matched) two or more people claim -> their ids: the last added holds the name."""
        for person in people:
            self.add(person)
        for alias, target in settings.aliases.items():
            canonical = self._aliases.get(self.canonical(target), self.canonical(target))
            self._aliases[self.canonical(alias)] = canonical

    def canonical(self, name: str) -> str:
        """A name as it is matched: lower-cased, without a Windows domain prefix, its mail domain mapped (`domains`)."""
        text = normalise(name)
        local, at, domain = text.partition("@")
        if at and domain in self.domains:
            return f"{local}@{self.domains[domain]}"
        return text

    def add(self, person: Person) -> None:
        """Register a person and every alias of theirs."""
        self.people[person.id] = person
        self._by_key[self.key_of(person.id)] = person
        for alias in [person.id, *person.aliases]:
            canonical = self.canonical(alias)
            holder = self._aliases.get(canonical, person.id)
            if holder != person.id:
                self.shared.setdefault(canonical, {holder}).add(person.id)
            self._aliases[canonical] = person.id
            local, at, _ = canonical.partition("@")
            if at:
                known = self._locals.get(local, person.id)
                self._locals[local] = person.id if known == person.id else None
        for host in person.hosts:
            self._hosts[host.lower()] = person.id
            short = machine_name(host.lower())
            if short is not None:
                self._hosts.setdefault(short, person.id)
        name = name_key(person.display_name or "")
        if " " in name:
            known = self._names.get(name, person.id)
            self._names[name] = person.id if known == person.id else None
        self._cache.clear()

    @property
    def org_domains(self) -> set[str]:
        """The organisation's mail domains: those of the directory's people's ids."""
        return {person.id.rpartition("@")[2].lower() for person in self.people.values() if "@" in person.id}

    @property
    def population(self) -> int:
        """How many persons (not service accounts) the directory names."""
        return sum(1 for person in self.people.values() if person.kind == PERSON)

    def key_of(self, canonical: str) -> str:
        """The entity key scores are stored under: the pseudonym, or the canonical id."""
        return canonical if self.pseudonym is None else self.pseudonym(canonical)

    def resolve(self, name: str) -> tuple[str, str]:
        """(entity key, kind) of an actor name from any source."""
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        canonical = self.canonical(name)
        person_id = self._aliases.get(canonical)
        if person_id is None and "@" not in canonical:
            person_id = self._locals.get(canonical) or self._names.get(" ".join(canonical.split()))
        person = None if person_id is None else self.people.get(person_id)
        if person is not None:
            hit = (self.key_of(person.id), person.kind)
        else:  # no one the directory holds: the name, or the one a configured alias gives it
            named = person_id or canonical
            kind = SERVICE if any(p.search(named) for p in self.service_patterns) else PERSON
            hit = (self.key_of(named), kind)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[name] = hit
        return hit

    def person(self, key: str) -> Person | None:
        """The directory entry behind an entity key, if any."""
        return self._by_key.get(key)

    def host_owner(self, host: str) -> str | None:
        """The entity key of the person a machine is assigned to, if known: by its name as given, else without its
        domain (a Windows event names a domain member by its full name, a directory often by its short one, or the
        other way round)."""
        name = host.lower()
        owner = self._hosts.get(name)
        if owner is None and "." in name:
            short = machine_name(name)
            owner = None if short is None else self._hosts.get(short)
        return None if owner is None else self.key_of(owner)
