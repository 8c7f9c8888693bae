"""Directory entries from identity providers' user objects, as their APIs return them.

An organisation's directory is usually an export of its identity provider: Okta's Users API (`GET /api/v1/users`),
Microsoft Graph's users (`GET /users`, Entra ID), or Google Workspace's Directory API (`GET
admin/directory/v1/users`). Each user object becomes a directory entry in the Custodes form (`id`, `display_name`,
`department`, `title`, `timezone`, `aliases`, `watchlists`, `notice_date`, `departure_date`), its id the sign-in name
events carry (Okta login, UPN, primary e-mail) and every other name of the user an alias. A bad date names the
vendor's field.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

LIST_KEYS = ("people", "value", "users")
"""Where a directory file that is a JSON object holds its people: Custodes' `people`, a Microsoft Graph page's
`value`, a Google Directory API page's `users`."""
PAGE_LINKS = ("@odata.nextLink", "nextPageToken")
"""What says a saved Graph or Google page is not the last: its people are not all there."""


def day(value: Any, name: str) -> date | None:
    """The date `value` starts with (None: no value); `name` is the field a bad one is reported as."""
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None


def user_entry(record: dict[str, Any]) -> dict[str, Any] | None:
    """The directory entry of an Okta, Microsoft Graph or Google Workspace user object (None: the record is none of
    them, so a Custodes entry)."""
    if isinstance(record.get("profile"), dict):
        return _okta(record, record["profile"])
    if "userPrincipalName" in record:
        return _graph(record)
    if "primaryEmail" in record:
        return _google(record)
    return None


def _okta(record: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """Okta: the login, its e-mail addresses and the user id; `userType: contractor`; HR dates as custom profile
    attributes `noticeDate` and `terminationDate`."""
    contractor = str(profile.get("userType", "")).lower() == "contractor"
    return _entry(
        str(profile.get("login") or record["id"]),
        display_name=" ".join(str(profile[k]) for k in ("firstName", "lastName") if profile.get(k)),
        department=profile.get("department"),
        title=profile.get("title"),
        names=[profile.get(k) for k in ("login", "email", "secondEmail")] + [record["id"]],
        watchlists=["contractor"] if contractor else [],
        timezone=profile.get("timezone"),
        notice=day(profile.get("noticeDate"), "profile.noticeDate"),
        departure=day(profile.get("terminationDate"), "profile.terminationDate"),
    )


def _graph(record: dict[str, Any]) -> dict[str, Any]:
    """Microsoft Graph: the UPN, mail, other mails, SMTP proxy addresses, the on-premises account name and the
    object id; a guest (`userType: Guest`) or `employeeType: Contractor` is a contractor; `employeeLeaveDateTime` is
    the departure; the mailbox's time zone when it was selected (an IANA name counts; a Windows one is reported)."""
    smtp = [str(a)[5:] for a in _listed(record.get("proxyAddresses")) if str(a).lower().startswith("smtp:")]
    names = [record["userPrincipalName"], record.get("mail"), *_listed(record.get("otherMails")), *smtp]
    contractor = str(record.get("userType", "")).lower() == "guest" or (
        str(record.get("employeeType") or "").lower() == "contractor"
    )
    mailbox = record.get("mailboxSettings")
    return _entry(
        str(record["userPrincipalName"]),
        display_name=record.get("displayName"),
        department=record.get("department"),
        title=record.get("jobTitle"),
        names=[*names, record.get("onPremisesSamAccountName"), record.get("id")],
        watchlists=["contractor"] if contractor else [],
        timezone=mailbox.get("timeZone") if isinstance(mailbox, dict) else None,
        departure=day(record.get("employeeLeaveDateTime"), "employeeLeaveDateTime"),
    )


def _google(record: dict[str, Any]) -> dict[str, Any]:
    """Google Workspace: the primary e-mail, its aliases, other addresses and the user id; department and title from
    the primary organisation (else the first); a super or delegated administrator is privileged."""
    organisations = [o for o in _listed(record.get("organizations")) if isinstance(o, dict)]
    organisation = next((o for o in organisations if o.get("primary")), organisations[0] if organisations else {})
    emails = [e.get("address") for e in _listed(record.get("emails")) if isinstance(e, dict)]
    aliases = [*_listed(record.get("aliases")), *_listed(record.get("nonEditableAliases"))]
    name = record.get("name")
    admin = bool(record.get("isAdmin") or record.get("isDelegatedAdmin"))
    return _entry(
        str(record["primaryEmail"]),
        display_name=name.get("fullName") if isinstance(name, dict) else None,
        department=organisation.get("department"),
        title=organisation.get("title"),
        names=[record["primaryEmail"], *aliases, *emails, record.get("id")],
        watchlists=["privileged"] if admin else [],
    )


def _text(value: Any) -> str | None:
    """A user object's text field (None when empty or absent)."""
    if value is None:
        return None
    return str(value).strip() or None


def _listed(value: Any) -> list[Any]:
    """A user object's list field as a list (a single value as one item; nothing as none)."""
    if isinstance(value, list):
        return value
    return [value] if value else []


def _entry(
    login: str,
    *,
    display_name: Any,
    department: Any,
    title: Any,
    names: Iterable[Any],
    watchlists: list[str],
    timezone: Any = None,
    notice: date | None = None,
    departure: date | None = None,
) -> dict[str, Any]:
    """A Custodes directory entry: the login (lower case) as its id, the other names given as its aliases."""
    aliases = list(dict.fromkeys(str(name) for name in names if name))
    return {
        "id": login.lower(),
        "display_name": _text(display_name),
        "department": _text(department),
        "title": _text(title),
        "timezone": _text(timezone),
        "aliases": aliases,
        "watchlists": dict.fromkeys(watchlists),
        "notice_date": None if notice is None else notice.isoformat(),
        "departure_date": None if departure is None else departure.isoformat(),
    }
