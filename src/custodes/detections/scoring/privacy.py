"""Pseudonyms for entity names, and re-identification that needs a role and leaves an audit record.

A pseudonym is `p-` and 16 hex digits of HMAC-SHA256(key, canonical id). Scores, scoring findings and explanations
carry only pseudonyms; stored entities keep theirs beside them (indexed, for lookups by the API). Re-identification
recomputes pseudonyms of the known candidates (directory people and stored entities) and is allowed only to
configured roles; every attempt, allowed or not, is written to the hash-chained audit log.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from custodes.config import ScoringSettings
from custodes.store import Transaction

PREFIX = "p-"


class Pseudonymizer:
    """Keyed, deterministic pseudonyms."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, canonical: str) -> str:
        digest = hmac.digest(self._key, canonical.strip().lower().encode(), "sha256")  # one C call
        return PREFIX + digest[:8].hex()

    @property
    def fingerprint(self) -> str:
        """Names the key without revealing it (which key stored pseudonyms were computed with)."""
        return hmac.digest(self._key, b"custodes pseudonym index", "sha256")[:8].hex()

    def find(self, pseudonym: str, candidates: Iterable[str]) -> str | None:
        """The candidate whose pseudonym this is, if any."""
        wanted = pseudonym.strip().lower()
        for candidate in candidates:
            if hmac.compare_digest(self(candidate), wanted):
                return candidate
        return None


def is_pseudonym(name: str) -> bool:
    """Whether a name has the pseudonym form."""
    text = name.strip().lower()
    return text.startswith(PREFIX) and len(text) == len(PREFIX) + 16 and all(c in "0123456789abcdef" for c in text[2:])


async def reidentify(
    tx: Transaction,
    settings: ScoringSettings,
    pseudonymizer: Pseudonymizer,
    pseudonym: str,
    candidates: Iterable[str],
    *,
    who: str,
    role: str,
    reason: str,
) -> tuple[bool, str | None]:
    """(allowed, name) for a pseudonym; allowed only for configured roles with a reason. Audited either way.

    Refusal is returned, not raised, so that the audit record of a refused attempt commits with the transaction.
    """
    allowed = role in settings.reidentify_roles and bool(reason.strip())
    name = pseudonymizer.find(pseudonym, candidates) if allowed else None
    details = {"role": role, "reason": reason, "allowed": allowed, "found": name is not None}
    await tx.audit(who, "scoring.reidentify", pseudonym, details)
    return allowed, name
