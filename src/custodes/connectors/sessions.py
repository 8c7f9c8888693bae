"""Privileged sessions from stored events: Teleport SSH sessions, sudo and su sessions, each with its start, end,
user, host, the commands run and the reference of its recording.

- Teleport: the events of one ``sid`` (``session.start``, ``session.command``/``exec``, ``session.end``,
  ``session.upload``, whose ``url`` is the recording: ``file://`` for Teleport's file storage, ``s3://`` ...).
- sudo (the `sudo` file tail): the lines of one ``sudo[pid]`` process on one host (the PAM session opening and
  closing and the command); a command logged with an I/O log id (``TSID=00/00/0A``) is recorded, its recording
  being the I/O log folder under sudo's ``iolog_dir`` (``responder.evidence.sudo_iolog_dir``). A line without a
  pid (sudo's traditional syslog format) is a session of its own.
- su (the same file tail): the lines of one ``su[pid]`` on one host, the switch to another account (``login``, the
  account run as) and its PAM session opening and closing; a failed switch is a session without an opening.

Vault has no session in its audit log (requests carry a token accessor, not a session), so none is built for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TELEPORT_COMMANDS = frozenset({"session.command", "exec"})
SYSLOG_SESSION_EVENTS = frozenset({"command", "denied", "session_open", "session_close", "switch", "switch_failed"})
"""The sudo and su lines that belong to a session (the parser's `event`)."""


@dataclass(slots=True)
class Command:
    """One command run in a session."""

    time: datetime
    command: str
    outcome: str


@dataclass(slots=True)
class PrivilegedSession:
    """A privileged session and the events it was built from."""

    kind: str
    id: str
    user: str | None = None
    host: str | None = None
    login: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    commands: list[Command] = field(default_factory=list)
    recording: str | None = None
    events: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (times as ISO 8601)."""
        return {
            "kind": self.kind,
            "id": self.id,
            "user": self.user,
            "host": self.host,
            "login": self.login,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "commands": [
                {"time": item.time.isoformat(), "command": item.command, "outcome": item.outcome}
                for item in self.commands
            ],
            "recording": self.recording,
            "events": self.events,
        }


def _teleport_command(raw: Mapping[str, Any]) -> str | None:
    argv = raw.get("argv")
    if isinstance(argv, list) and raw.get("program"):
        return " ".join([str(raw["program"]), *map(str, argv)])
    value = raw.get("command") or raw.get("program")
    return None if value is None else str(value)


def _teleport(session: PrivilegedSession, row: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    kind = raw.get("event")
    session.user = session.user or row.get("actor")
    session.host = session.host or raw.get("server_hostname")
    session.login = session.login or raw.get("login")
    if kind == "session.start":
        session.start = row["time"]
    elif kind == "session.end":
        session.end = row["time"]
    elif kind == "session.upload" and raw.get("url"):
        session.recording = str(raw["url"])
    elif kind in TELEPORT_COMMANDS:
        command = _teleport_command(raw)
        if command:
            session.commands.append(Command(row["time"], command, str(row.get("outcome"))))


def _syslog(session: PrivilegedSession, row: Mapping[str, Any], raw: Mapping[str, Any]) -> None:
    """A sudo or su line into its session: its user, host and the account run as; its PAM session's opening and
    closing; a sudo command (its recording when logged with an I/O log id); a switch to another account."""
    kind = raw.get("event")
    session.user = session.user or raw.get("user")
    session.host = session.host or raw.get("host")
    session.login = session.login or raw.get("run_as")
    if kind == "session_open":
        session.start = row["time"]
    elif kind == "session_close":
        session.end = row["time"]
    elif kind in ("command", "denied") and raw.get("command"):
        session.start = session.start or row["time"]
        session.commands.append(Command(row["time"], str(raw["command"]), str(row.get("outcome"))))
        if raw.get("tsid"):
            session.recording = f"sudo-io:{raw['tsid']}"
    elif kind in ("switch", "switch_failed"):
        session.start = session.start or row["time"]


def _key(row: Mapping[str, Any], raw: Mapping[str, Any]) -> tuple[str, str] | None:
    if raw.get("sid") and isinstance(raw.get("event"), str) and str(raw.get("event")).startswith(("session.", "exec")):
        return "teleport", str(raw["sid"])
    program = raw.get("program")
    if program in ("sudo", "su") and raw.get("event") in SYSLOG_SESSION_EVENTS:
        if raw.get("pid"):
            return str(program), f"{raw.get('host')}:{raw['pid']}"
        return str(program), str(row["id"])
    return None


def sessions_from(rows: Iterable[Mapping[str, Any]]) -> list[PrivilegedSession]:
    """The privileged sessions among event rows (``id``, ``time``, ``actor``, ``outcome``, ``raw``), by start."""
    found: dict[tuple[str, str], PrivilegedSession] = {}
    for row in sorted(rows, key=lambda item: item["time"]):
        raw = row.get("raw")
        if not isinstance(raw, Mapping):
            continue
        key = _key(row, raw)
        if key is None:
            continue
        session = found.setdefault(key, PrivilegedSession(key[0], key[1]))
        session.events.append(str(row["id"]))
        (_teleport if key[0] == "teleport" else _syslog)(session, row, raw)
    return sorted(found.values(), key=lambda item: (item.start is None, item.start or datetime.min, item.id))
