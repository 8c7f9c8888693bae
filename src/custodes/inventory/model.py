"""What an identity inventory holds: accounts of one source and the grants (groups, roles, policies, keys) they
carry. Vendor values that cannot be read are kept as warnings on the account, never dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from custodes.connectors.envelope import parse_time

Provider = Literal["entra", "okta", "aws_iam"]
GrantKind = Literal["group", "role", "policy", "access_key"]


@dataclass(slots=True)
class Grant:
    """Access an account holds: a group, an admin role, a policy or an access key (with when it was last used)."""

    kind: GrantKind
    name: str
    privileged: bool = False
    created: datetime | None = None
    last_used: datetime | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Account:
    """One account in one source, as collected; `entity` is filled in by identity mapping when stored."""

    provider: Provider
    native_id: str
    login: str | None
    display_name: str | None
    email: str | None
    status: str
    enabled: bool
    created: datetime | None = None
    last_sign_in: datetime | None = None
    mfa: bool | None = None
    service: bool = False
    grants: list[Grant] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    entity: str | None = None
    connector: str = ""

    @property
    def privileged(self) -> bool:
        """Whether any grant is privileged."""
        return any(grant.privileged for grant in self.grants)

    @property
    def last_activity(self) -> datetime | None:
        """The newest of the last sign-in and the last use of any access key."""
        times = [self.last_sign_in, *(g.last_used for g in self.grants if g.kind == "access_key")]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def time(self, record: dict[str, Any], key: str, what: str) -> datetime | None:
        """A time from a vendor record: None when absent or null; unreadable ones become a warning."""
        value = record.get(key)
        if value is None or value == "":
            return None
        try:
            return parse_time(value)
        except (ValueError, OverflowError, OSError):
            self.warnings.append(f"{what}: unreadable time {value!r}")
            return None


@dataclass(slots=True)
class Snapshot:
    """Everything one configured connector's source holds, collected at one time."""

    connector: str
    provider: Provider
    collected_at: datetime
    accounts: list[Account] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
