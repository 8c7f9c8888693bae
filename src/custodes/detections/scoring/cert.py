"""CERT insider-threat dataset directory and answers: the LDAP CSV as directory entries, the answers as labels.

An LDAP CSV (one a month in the datasets' `LDAP/` folder) becomes directory entries, and the datasets' answers
(`insiders.csv` with each insider's details file) become labels. The event CSVs themselves are read as any log file
is (`custodes.connectors.cert`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from custodes.connectors.cert import DIRECTORY_COLUMNS, cert_time, cert_user, csv_rows
from custodes.connectors.envelope import parse_time
from custodes.connectors.files import text_lines
from custodes.errors import CustodesError


def _department(row: dict[str, str]) -> str | None:
    """An LDAP row's department within its functional unit: departments of two units may share a name (a `Sales`
    of each), and a peer group is one department's people."""
    unit, department = ((row.get(name) or "").strip() for name in ("functional_unit", "department"))
    return (f"{unit} / {department}" if unit and department and unit != department else department or unit) or None


def cert_people(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Directory entries (Custodes JSON form) of a CERT LDAP CSV (employee_name, user_id, email, role, functional_unit,
    department)."""
    named, rows = csv_rows(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    header = [name.lower() for name in named]
    if not set(header) >= DIRECTORY_COLUMNS:
        raise CustodesError.at(path, "a CSV directory needs the CERT LDAP columns user_id and email")
    people = []
    for number, fields in rows:
        if isinstance(fields, str):
            raise CustodesError.at(path, f"line {number}: not a CSV row ({fields})")
        row = dict(zip(header, fields, strict=False))
        user, email = row.get("user_id", "").strip(), row.get("email", "").strip()
        if not user or not email:
            raise CustodesError.at(path, f"line {number}: user_id and email are required")
        people.append(
            {
                "id": email.lower(),
                "display_name": row.get("employee_name", "").strip() or None,
                "department": _department(row),
                "title": (row.get("role") or "").strip() or None,
                "aliases": [user],
            }
        )
    return people


SCENARIOS = {
    "1": "after_hours_usb_leak",
    "2": "job_search_usb",
    "3": "sysadmin_keylogger",
    "4": "other_machine_mail",
    "5": "layoff_dropbox",
}
"""The datasets' scenario numbers by the names `custodes simulate` gives the same scenarios."""


def _answer_time(path: Path, line: int, row: dict[str, str], name: str) -> str:
    """A time of an `insiders.csv` row: the datasets' own form, or ISO 8601 as it is."""
    value = row[name]
    try:
        return cert_time(value)
    except ValueError:
        try:
            parse_time(value)
        except (ValueError, TypeError):
            raise CustodesError.at(
                path, f"line {line}: {name} {value!r} is not a time; write MM/DD/YYYY HH:MM:SS as the datasets do"
            ) from None
        return value.strip()


def cert_answers(
    path: Path, rows: Iterable[dict[str, str]], dataset: str | None, warnings: list[str] | None = None
) -> list[dict[str, str]]:
    """Label rows (incident, scenario, person, role, start, end) of the answers' `insiders.csv` (`path`) for one
    dataset release (`dataset`, e.g. "4.2"; needed when the file lists several).

    Each insider's details file (`r4.2-1/r4.2-1-AAM0658.csv` beside the list: the malicious records themselves)
    gives one row per person and day it has acts on, the person being the record's user (an account other than the
    insider's is labelled `compromised`) and the kinds of record its acts are in (`kinds`: `http device`). Without
    it, the insider's whole interval counts, with a warning.
    """
    rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in rows]
    releases = sorted({row["dataset"].removeprefix("r") for row in rows})
    wanted = (dataset or "").strip().removeprefix("r") or (releases[0] if len(releases) == 1 else None)
    if wanted is None or wanted not in releases:
        named = f"dataset {dataset} is not among them" if dataset else "name the one the events are from"
        raise CustodesError.at(
            path, f"lists insiders of CERT datasets {', '.join(releases) or 'none'}: {named} with --dataset"
        )
    labels: list[dict[str, str]] = []
    missing: list[str] = []
    for line, row in enumerate(rows, start=2):
        if row["dataset"].removeprefix("r") != wanted or not row["user"]:
            continue
        insider, scenario = cert_user(row["user"]), row["scenario"]
        name = row.get("details") or ""
        incident = Path(name).stem if name else f"r{wanted}-{scenario}-{insider}"
        label = {"incident": incident, "scenario": SCENARIOS.get(scenario, f"scenario {scenario}"), "person": insider}
        places = (path.parent / f"r{wanted}-{scenario}" / name, path.parent / name) if name else ()
        details = next((p for p in places if p.is_file()), None)
        if details is None:
            missing.append(name or incident)
            times = {edge: _answer_time(path, line, row, edge) for edge in ("start", "end")}
            labels.append(label | times)
            continue
        for (user, _), (first, last, kinds) in _acts(details).items():
            role = "insider" if user.lower() == insider.lower() else "compromised"
            labels.append(label | {"person": user, "role": role, "start": first, "end": last, "kinds": kinds})
    if missing and warnings is not None:
        warnings.append(
            f"{len(missing)} insiders' details files are not beside {path} (for example r{wanted}-*/{missing[0]}): "
            "each of them counts every day from its start to its end as malicious"
        )
    return labels


def _acts(details: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(user, UTC date) -> first and last time and the kinds (`http device`) of the malicious records of an answers'
    details file (rows of `kind,id,date,user,pc,...` without a header)."""
    acts: dict[tuple[str, str], tuple[str, str, str]] = {}
    with text_lines(details) as lines:
        for number, fields in enumerate(csv.reader(lines), start=1):
            if not fields:
                continue
            try:
                when = cert_time(fields[2])
                user = cert_user(fields[3])
            except (IndexError, ValueError) as exc:
                raise CustodesError.at(details, f"line {number}: not a CERT answers record ({exc})") from None
            key = (user, when[:10])
            first, last, kinds = acts.get(key, (when, when, ""))
            kind = fields[0].strip().lower()
            kinds = kinds if kind in kinds.split() else f"{kinds} {kind}".strip()
            acts[key] = (min(first, when), max(last, when), kinds)
    return acts
