"""The access review over the stored inventory: dormant accounts, privileged accounts without MFA, access not
used in N days, and separation-of-duty conflicts from configured role pairs. A pure function of the accounts,
the settings and the time, so a review is reproducible."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from custodes.config import AccessReviewSettings
from custodes.inventory.model import Account, Grant
from custodes.inventory.store import account_id


@dataclass(frozen=True, slots=True)
class Dormant:
    """An enabled account with no sign-in (or key use) for `dormant_days`; `last_activity` None: never."""

    entity: str
    account: str
    login: str | None
    last_activity: datetime | None
    idle_days: int | None
    privileged: bool


@dataclass(frozen=True, slots=True)
class PrivilegedWithoutMfa:
    """An enabled account holding privileged access with no MFA (`mfa` None: the source did not say)."""

    entity: str
    account: str
    login: str | None
    privileges: list[str]
    mfa: bool | None


@dataclass(frozen=True, slots=True)
class UnusedAccess:
    """Access not used for `unused_days`: an access key (by its last use, else its creation) or a privileged
    role, group or policy of an account with no activity in that time."""

    entity: str
    account: str
    login: str | None
    kind: str
    grant: str
    last_used: datetime | None
    idle_days: int | None


@dataclass(frozen=True, slots=True)
class SodConflict:
    """One entity holding both roles of a configured pair; `held_by` names the accounts granting each."""

    entity: str
    roles: tuple[str, str]
    held_by: dict[str, list[str]]


@dataclass(slots=True)
class Review:
    """The access review's four lists, and accounts whose vendor data was kept with warnings."""

    as_of: datetime
    dormant_days: int
    unused_days: int
    dormant: list[Dormant] = field(default_factory=list)
    privileged_without_mfa: list[PrivilegedWithoutMfa] = field(default_factory=list)
    unused_access: list[UnusedAccess] = field(default_factory=list)
    sod_conflicts: list[SodConflict] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)

    def figures(self) -> dict[str, int]:
        """How many of each finding kind: what the audit log records of a review (`access.review`)."""
        return {
            "dormant": len(self.dormant),
            "privileged_without_mfa": len(self.privileged_without_mfa),
            "unused_access": len(self.unused_access),
            "sod_conflicts": len(self.sod_conflicts),
        }

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (times as ISO 8601)."""

        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {key: plain(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [plain(item) for item in value]
            return value

        return {
            "as_of": self.as_of.isoformat(),
            "dormant_days": self.dormant_days,
            "unused_days": self.unused_days,
            "dormant": [plain(asdict(item)) for item in self.dormant],
            "privileged_without_mfa": [plain(asdict(item)) for item in self.privileged_without_mfa],
            "unused_access": [plain(asdict(item)) for item in self.unused_access],
            "sod_conflicts": [plain(asdict(item)) for item in self.sod_conflicts],
            "warnings": self.warnings,
        }


def _idle(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else max(0, (now - since).days)


def review(
    accounts: list[Account],
    settings: AccessReviewSettings,
    now: datetime,
    *,
    dormant_days: int | None = None,
    unused_days: int | None = None,
) -> Review:
    """Review `accounts` as of `now` (thresholds default to the settings)."""
    result = Review(now, dormant_days or settings.dormant_days, unused_days or settings.unused_days)
    dormant_cut = now - timedelta(days=result.dormant_days)
    unused_cut = now - timedelta(days=result.unused_days)
    extra = {name.lower() for name in settings.privileged_roles}

    def privileged(grant: Grant) -> bool:
        return grant.privileged or grant.name.lower() in extra

    held: dict[str, dict[str, list[str]]] = {}
    for account in sorted(accounts, key=lambda a: (str(a.entity), a.connector, a.native_id)):
        entity, ident = str(account.entity), account_id(account.connector, account.native_id)
        if account.warnings:
            result.warnings[ident] = list(account.warnings)
        if not account.enabled:
            continue
        activity = account.last_activity
        power = [g for g in account.grants if g.kind != "access_key" and privileged(g)]
        if (activity or account.created or now) < dormant_cut or (activity is None and account.created is None):
            result.dormant.append(Dormant(entity, ident, account.login, activity, _idle(activity, now), bool(power)))
        if power and account.mfa is not True:
            names = sorted({g.name for g in power})
            result.privileged_without_mfa.append(PrivilegedWithoutMfa(entity, ident, account.login, names, account.mfa))
        for grant in account.grants:
            if grant.kind == "access_key":
                if grant.attributes.get("status", "Active") != "Active":
                    continue
                since = grant.last_used or grant.created
                if since is None or since < unused_cut:
                    idle = _idle(since, now)
                    result.unused_access.append(
                        UnusedAccess(entity, ident, account.login, grant.kind, grant.name, grant.last_used, idle)
                    )
            elif privileged(grant) and (activity or account.created or now) < unused_cut:
                result.unused_access.append(
                    UnusedAccess(entity, ident, account.login, grant.kind, grant.name, activity, _idle(activity, now))
                )
            held.setdefault(entity, {}).setdefault(grant.name.lower(), []).append(ident)
    for entity, grants in sorted(held.items()):
        for first, second in settings.sod_conflicts:
            a, b = first.lower(), second.lower()
            if a in grants and b in grants and a != b:
                holders = {first: sorted(set(grants[a])), second: sorted(set(grants[b]))}
                result.sod_conflicts.append(SodConflict(entity, (first, second), holders))
    return result
