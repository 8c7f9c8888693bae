"""Parsers of log lines, one line a record: JSON object lines (Teleport, Vault's file audit device), sudo's, sshd's
and su's syslog lines, auditd records. The file tail (`filetail`) and log files replayed or evaluated (`files`)
read with them."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

LineParser = Callable[[str, datetime], tuple[dict[str, Any], str | None]]
"""A line and the time it is read at (a BSD syslog time has no year) -> the record, and a warning when the line
is kept as text."""


def parse_json_line(line: str, now: datetime) -> tuple[dict[str, Any], str | None]:
    """A JSON object line (Teleport, Vault file audit device)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return {"line": line}, f"invalid JSON ({error.msg}); kept as text"
    if not isinstance(value, dict):
        return {"line": line}, "a JSON line that is not an object; kept as text"
    return value, None


_SYSLOG = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\dT\S+|[A-Z][a-z]{2}\s+\d{1,2}\s\d\d:\d\d:\d\d)\s+(?P<host>\S+)\s+"
    r"(?P<program>[\w.-]+)\]?(?:\[(?P<pid>\d+)\])?:\s?(?P<message>.*)$"
)
"""A syslog line. GDM's PAM worker names itself `gdm-password]` (`gdm-password][1542]:`): the stray bracket is
dropped."""
_SUDO_COMMAND = re.compile(r"^\s*(?P<user>\S+)\s:\s(?P<rest>.*)$")
_PAM_SESSION = re.compile(
    r"pam_unix\((?P<service>[\w-]+):session\): session (?P<state>opened|closed) for user (?P<run_as>[^\s(]+)"
    r"(?:\(uid=\d+\))?(?: by (?P<user>[^\s(]*))?"
)
"""A PAM session (pam_unix's) opened or closed: its service, the account it is for, and who opened it."""
PRIVILEGE_SERVICES = frozenset({"sudo", "sudo-i", "su", "su-l"})
"""The PAM services of sudo's and su's own sessions (a command's, a switch's)."""


def _syslog_time(stamp: str, now: datetime) -> str:
    if stamp[:4].isdigit():
        return stamp
    parsed = datetime.strptime(f"{now.year} {' '.join(stamp.split())}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
    if parsed > now:
        parsed = parsed.replace(year=now.year - 1)
    return parsed.isoformat()


_SSHD_LOGIN = re.compile(
    r"^(?P<outcome>Accepted|Failed) (?P<method>[\w/-]+) for (?P<invalid>invalid user )?(?P<user>\S+) from "
    r"(?P<address>\S+) port \d+"
)
SSHD_EVENTS = {"Accepted": "login", "Failed": "login_failed"}
"""sshd's logins, accepted or failed, by the word its message starts with."""
_SU_SWITCH = re.compile(
    r"^(?:(?P<failed>FAILED SU )?\(to (?P<run_as>\S+)\) (?P<user>\S+) on (?P<tty>\S+)"
    r"|(?P<outcome>Successful|FAILED) su for (?P<target>\S+) by (?P<by>\S+))"
)
"""su's switch to another account, as util-linux writes it (`(to root) alice on pts/0`, `FAILED SU (to root) ...`)
or shadow's (`Successful su for root by alice`, `FAILED su for root by alice`)."""
SYSLOG_PROGRAMS = frozenset({"sudo", "sshd", "su"})
"""The programs whose syslog lines are read for what they say; any other program's line is `other`, unless it says
who is at the machine or what was plugged into it (`MACHINE_EVENTS`)."""
_REMOVABLE_DISK = re.compile(r"\[(?P<disk>sd[a-z]+)\] Attached SCSI removable disk")
"""The kernel's line when a removable disk (a USB stick, a memory card) is attached: one per disk."""
_UPTIME = re.compile(r"^\[\s*(?P<seconds>\d+)\.\d+\]")
BOOT_SECONDS = 300
"""A removable disk the kernel attached this soon after it started (its uptime, where the line carries it) was there
at boot: a laptop's card reader attaches its slot as a removable disk on every boot, with a card in it or not."""
LOCAL_LOGINS = frozenset(
    {
        "login",  # the text console
        *("gdm-password", "gdm-autologin", "gdm-fingerprint", "gdm-smartcard"),  # GNOME's display manager
        *("lightdm", "lightdm-autologin", "sddm", "sddm-autologin", "xdm", "kdm", "lxdm", "slim", "mdm"),
    }
)
"""PAM services of a session opened at the machine itself (its console or its screen), not over the network."""
MACHINE_EVENTS = {"removable_attached": "kernel", "console_open": "login", "console_close": "login"}
"""The events of a line of another program than `SYSLOG_PROGRAMS` that is read (`machine_event`), and the name its
action is given under (`kernel.removable_attached`, `login.console_open`)."""


def machine_event(program: str, message: str) -> dict[str, Any]:
    """What a line of a program other than `SYSLOG_PROGRAMS` says about the machine: the kernel attached a removable
    disk (``removable_attached``; not at boot, `BOOT_SECONDS`), or a session opened or closed at the machine itself
    (``console_open``, ``console_close``: a PAM session of `LOCAL_LOGINS`, the account); empty for anything else."""
    if program == "kernel":
        disk, uptime = _REMOVABLE_DISK.search(message), _UPTIME.match(message)
        if disk is None or (uptime is not None and int(uptime["seconds"]) < BOOT_SECONDS):
            return {}
        return {"event": "removable_attached", "disk": disk["disk"]}
    session = _PAM_SESSION.search(message)
    if session is None or session["service"] not in LOCAL_LOGINS:
        return {}
    state = "console_open" if session["state"] == "opened" else "console_close"
    return {"event": state, "user": session["run_as"], "service": session["service"]}


def read_record(record: dict[str, Any]) -> bool:
    """Whether a record `syslog_entry` made says something scoring and rules read (not a line of another program)."""
    program, event = record.get("program"), record.get("event")
    return (type(program) is str and program in SYSLOG_PROGRAMS) or (type(event) is str and event in MACHINE_EVENTS)


def read_line(program: Any, message: Any) -> bool:
    """Whether a syslog line (a table's or a SIEM's columns) is one `syslog_entry` reads for what it says."""
    if type(program) is not str:
        return False
    return program in SYSLOG_PROGRAMS or (type(message) is str and bool(machine_event(program, message)))


def parse_syslog_line(line: str, now: datetime) -> tuple[dict[str, Any], str | None]:
    """A syslog line: from sudo, a command (with its I/O log ``TSID`` when recorded), a refusal, or a PAM session
    opening or closing; from sshd, a login accepted or failed (``login``, ``login_failed``: the account, the address
    and the method); from su, a switch to another account (``switch``, ``switch_failed``: the account switched from,
    the one run as) or its PAM session; from another program, a removable disk attached or a session at the machine
    itself (`machine_event`); any other line its program, host and time (``other``). The year of a BSD syslog time is
    the current one (last year if that is ahead)."""
    found = _SYSLOG.match(line)
    if found is None:
        return {"line": line}, "not a syslog line; kept as text"
    time, host, program = _syslog_time(found["stamp"], now), found["host"], found["program"]
    return syslog_entry(line, time, host, program, found["pid"], found["message"]), None


def syslog_entry(line: str, time: Any, host: Any, program: str, pid: Any, message: str) -> dict[str, Any]:
    """The record of a syslog line as `parse_syslog_line` reads it, from its parts: the line, its time, host,
    program and process (its number as text), and what `program`'s `message` says. A syslog table's row (Sentinel's
    `Syslog`) or a SIEM's parsed line (Elastic's `system.auth`) gives the parts as columns."""
    record: dict[str, Any] = {
        "line": line,
        "time": time,
        "host": host,
        "program": program,
        "pid": None if pid is None else str(pid),
        "event": "other",
    }
    if program == "sshd":
        login = _SSHD_LOGIN.match(message)
        if login is not None:
            record.update(
                event=SSHD_EVENTS[login["outcome"]],
                user=login["user"],
                address=login["address"],
                method=login["method"],
                invalid=login["invalid"] is not None,
            )
        return record
    if program not in SYSLOG_PROGRAMS:
        return record | machine_event(program, message)
    session = _PAM_SESSION.search(message)
    if session is not None and session["service"] in PRIVILEGE_SERVICES:
        record.update(
            event="session_open" if session["state"] == "opened" else "session_close",
            run_as=session["run_as"],
            user=session["user"] or None,
        )
        return record
    if program == "su":
        switch = _SU_SWITCH.match(message)
        if switch is not None:
            failed = switch["failed"] is not None or switch["outcome"] == "FAILED"
            record.update(
                event="switch_failed" if failed else "switch",
                user=switch["user"] or switch["by"],
                run_as=switch["run_as"] or switch["target"],
                tty=switch["tty"],
            )
        return record
    command = _SUDO_COMMAND.match(message)
    if command is None:
        return record
    record["user"] = command["user"]
    parts = [part.strip() for part in command["rest"].split(" ; ")]
    fields = {}
    notes = []
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key.isupper():
            fields[key] = value
        else:
            notes.append(part)
    record.update(
        tty=fields.get("TTY"),
        pwd=fields.get("PWD"),
        run_as=fields.get("USER"),
        command=fields.get("COMMAND"),
        tsid=fields.get("TSID"),
        event="denied" if notes else "command",
        reason="; ".join(notes) or None,
    )
    return record


_AUDIT_FIELD = re.compile(r"(\w+)=(\"[^\"]*\"|'[^']*'|[^\s\x1d]+)")
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")
_HEX_FIELDS = frozenset({"cmd", "proctitle", "data"})


def _audit_value(key: str, value: str) -> str:
    """A field's value: unquoted, and the hex auditd writes for untrusted strings (``cmd``, ``proctitle``)
    decoded, NULs between arguments as spaces."""
    if key in _HEX_FIELDS and _HEX.match(value):
        return bytes.fromhex(value).replace(b"\0", b" ").decode("utf-8", errors="replace")
    return value.strip('"')


def parse_auditd_line(line: str, now: datetime) -> tuple[dict[str, Any], str | None]:
    """An auditd record: its ``key=value`` pairs (``node=`` first where auditd names the machine), the quoted
    ``msg='...'`` of user-space records flattened in, hex-encoded commands decoded; the names the enriched log format
    appends (``AUID="alice"``) are kept."""
    pairs = _AUDIT_FIELD.findall(line)
    first = 1 if pairs and pairs[0][0] == "node" else 0  # `name_format` set: the machine's name comes first
    if len(pairs) <= first or pairs[first][0] != "type":
        return {"line": line}, "not an auditd record; kept as text"
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key == "msg" and value.startswith("audit("):
            record["msg"] = value
        elif key == "msg" and value.startswith("'"):
            for inner_key, inner_value in _AUDIT_FIELD.findall(value[1:-1]):
                record.setdefault(inner_key, _audit_value(inner_key, inner_value))
        else:
            record.setdefault(key, _audit_value(key, value))
    if "res" in record and "success" not in record:
        record["success"] = "yes" if record["res"] in ("success", "1") else "no"
    return record, None


PARSERS: dict[str, LineParser] = {"json": parse_json_line, "sudo": parse_syslog_line, "auditd": parse_auditd_line}
