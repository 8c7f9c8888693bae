"""Plain sentences for a day score: what was unusual, against what, and which modifiers applied."""

from __future__ import annotations

from custodes.detections.scoring.catalog import BY_NAME
from custodes.detections.scoring.risk import BITS_PER_SD, Contribution, DayScore

MEMORY_DAYS = 180
FIRST = {
    "usb": "first USB use",
    "usb_files": "first files written to USB",
    "print": "first print job",
    "cloud_upload": "first upload to personal cloud",
    "leak_upload": "first upload to a leak or paste site",
    "personal_mail": "first mail to a personal address",
    "mail_forwarding": "first mail forwarding rule",
    "external_share": "first external share",
    "privilege_grant": "first privilege grant",
    "self_grant": "first privilege granted to themselves",
    "sensitive_api": "first sensitive cloud API call",
    "access_key_other": "first access key created for another user",
    "mfa_failed": "first failed MFA prompt",
    "factor_change": "first MFA factor change",
    "absent_owner_host": "first logon to the machine of a person absent that day",
    "reciprocal_host": "first logon to the machine of a person who used theirs in the week before",
    "leak_visit": "first visit to a leak or paste site",
    "cloud_visit": "first visit to personal cloud storage",
    "competitor_visit": "first visit to a competitor's site",
    "off_hours": "first activity outside their usual hours",
    "job_search": "first visit to a job site",
    "archive": "first archive created",
    "delete": "first deletion",
    "pam_session": "first privileged session",
}


def amount(feature: str, value: float) -> str:
    """A feature value as a person would write it."""
    if BY_NAME[feature].bytes:
        for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} bytes"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _ratio(value: float, usual: float) -> str:
    ratio = value / usual
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


INTERMITTENT = 0.9
"""A feature on fewer of a person's active days than this is intermittent: their usual is told for the days they
have any, with how often that is, since an average over all their days would understate what a day of use holds
(two connections every third day are not "0.7 a day")."""


def _often(share: float) -> str:
    return "under 1%" if share < 0.005 else f"{share:.0%}"


def _against(c: Contribution, usual: float) -> str:
    return f"{_ratio(c.value, usual)} their usual {amount(c.feature, usual)}"


def _against_usual(c: Contribution) -> str:
    if c.share >= INTERMITTENT or c.share <= 0:
        return _against(c, c.usual)
    return f"{_against(c, c.usual / c.share)} on days with any ({_often(c.share)} of their days)"


def sentence(c: Contribution) -> str:
    """One contribution as a sentence fragment."""
    feature = BY_NAME[c.feature]
    peers = f"; {_ratio(c.value, c.peer_usual)} the peer median {feature.noun}" if c.peer_usual > 0 else ""
    if feature.novelty:  # a count of first times: "sign-ins from a new device: 2"
        return f"{feature.noun}: {amount(c.feature, c.value)}{peers}"
    if feature.rise_of is not None:  # judged against their own days before the window, not their peers
        within = f"in their last {c.days} active days"
        if c.occurrence_bits > BITS_PER_SD * c.magnitude_sd:  # the days used, more than the amounts, make the rise
            return (
                f"{feature.noun} on {c.hits} of their last {c.days} active days ({amount(c.feature, c.value)} in all), "
                f"against {_often(c.share)} of their days before"
            )
        return f"{amount(c.feature, c.value)} {feature.noun} {within}, {_against(c, c.usual)} for as many days"
    if c.last_seen_days_ago is None or c.usual <= 0:
        window = f"{MEMORY_DAYS} days" if c.history_days >= MEMORY_DAYS else f"{c.history_days} days of history"
        first = FIRST.get(c.feature, f"first {feature.noun}")
        return f"{first} in {window} ({amount(c.feature, c.value)}){peers}"
    if c.usual < 0.05:
        return f"{amount(c.feature, c.value)} {feature.noun}, rare for them{peers}"
    return f"{amount(c.feature, c.value)} {feature.noun}, {_against_usual(c)}{peers}"


def sentences(score: DayScore) -> list[str]:
    """The day's contributions (strongest first), Sigma findings and modifiers, one sentence each."""
    lines = [sentence(c) for c in score.contributions]
    lines += [f"Sigma rule '{title}' matched (+{points:.0f})" for _, title, points in score.sigma if points > 0]
    for name, value in score.modifiers.items():
        kind, _, what = name.partition(":")
        if kind == "watchlist":
            lines.append(f"on the {what} watchlist (x{value:g})")
        elif kind == "sequence":
            lines.append(f"sequence {what} (+{value:.0f})")
        elif kind == "cap":
            lines.append(f"{what} points capped ({value:.0f} not counted)")
        elif kind == "overlap":
            lines.append(f"{what} signs after the strongest counted at half ({value:.0f} not counted)")
        elif kind == "feedback":
            cause, _, ident = what.partition(":")
            noun = BY_NAME[cause].noun if cause in BY_NAME else cause
            lines.append(f"{noun}: analyst feedback {ident} on this cause ({value:.0f} not counted)")
    return lines
