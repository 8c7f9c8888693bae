"""The behaviour features: what each counts, how much it matters for data theft or abuse, how it reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Feature:
    """One daily feature of an entity.

    `weight` scales its surprise into points; `family` groups features whose points are capped together;
    `stage` places it in the collect -> stage -> exfiltrate -> delete sequence (or marks an attack on the account's
    authentication: `takeover`); `noun` is how a sentence names it;
    `novelty` marks first-seen counters (they only count once an entity has a history); `peak` marks features
    whose daily value is the day's largest single amount rather than a sum; `rise_of` names the channel feature
    whose total over the entity's last active days a rise feature measures (see `RISE_WINDOWS`); `within` names
    features a sign only corroborates: it counts at most the points of the strongest of them that day, and nothing
    without one.
    """

    name: str
    family: str
    weight: float
    noun: str
    stage: str | None = None
    novelty: bool = False
    bytes: bool = False
    peak: bool = False
    rise_of: str | None = None
    within: tuple[str, ...] = ()


EXFILTRATION = "exfiltration"
"""The family of data-movement channels (their rate spikes weigh more, and are damped into baselines)."""

OTHER_MACHINE = ("other_host", "absent_owner_host", "other_host_channel")
"""The features of using another person's machine in a way unusual for the user: a first logon to it, a logon while its
owner is away, a first data movement on it."""

FEATURES: tuple[Feature, ...] = (
    Feature("signin", "identity", 0.2, "sign-ins"),
    Feature("signin_failed", "identity", 0.6, "failed sign-ins"),
    Feature("mfa_failed", "identity", 1.2, "failed or denied MFA prompts", stage="takeover"),
    Feature("factor_change", "identity", 1.0, "MFA factor changes", stage="takeover"),
    Feature("new_device", "identity", 1.0, "sign-ins from a new device", novelty=True),
    Feature("new_country", "identity", 1.2, "sign-ins from a new country", novelty=True),
    Feature("new_asn", "identity", 0.6, "sign-ins from a new network (ASN)", novelty=True),
    Feature("off_hours", "behaviour", 1.2, "active hours outside their usual hours"),
    Feature("new_host", "behaviour", 0.8, "logons to a machine they never used", novelty=True),
    Feature("other_host", "access", 2.0, "logons to a machine of another person they never used", novelty=True),
    Feature("absent_owner_host", "access", 2.5, "logons to the machine of a person absent that day"),
    Feature(
        "reciprocal_host",
        "identity",
        2.0,
        "logons to the machine of a person who used theirs in the week before",
        stage="takeover",
        within=OTHER_MACHINE,
    ),
    Feature("job_search", "behaviour", 0.6, "visits to job sites"),
    Feature("competitor_visit", "behaviour", 0.6, "visits to competitors' sites"),
    Feature("mail_recipients", "behaviour", 0.8, "mail recipients"),
    Feature("mail_fanout", "communication", 2.0, "recipients of their widest mail", peak=True),
    Feature("privilege_grant", "access", 1.5, "privilege or role grants"),
    Feature("self_grant", "access", 3.0, "privileges granted to themselves"),
    Feature("sensitive_api", "access", 1.5, "sensitive cloud API calls"),
    Feature("access_key_other", "access", 2.5, "access keys created for another user"),
    Feature("pam_session", "access", 0.6, "privileged (PAM) sessions"),
    Feature("access_denied", "access", 1.0, "actions refused for want of rights"),
    Feature("download", "data", 1.0, "downloads", stage="collect"),
    Feature("download_bytes", "data", 1.0, "bytes downloaded", stage="collect", bytes=True),
    Feature("file_access", "data", 0.8, "file reads", stage="collect"),
    Feature("new_resource", "data", 0.8, "first accesses to a resource", stage="collect", novelty=True),
    Feature("archive", "data", 1.0, "archives created", stage="stage"),
    Feature("delete", "data", 0.8, "deletions", stage="delete"),
    Feature("usb", "exfiltration", 1.5, "removable media connections", stage="exfiltrate"),
    Feature("usb_files", "exfiltration", 1.5, "files written to removable media", stage="exfiltrate"),
    Feature("print", "exfiltration", 0.8, "print jobs", stage="exfiltrate"),
    Feature("cloud_upload", "exfiltration", 2.0, "uploads to personal cloud", stage="exfiltrate"),
    Feature("upload_bytes", "exfiltration", 1.0, "bytes sent out", stage="exfiltrate", bytes=True),
    Feature("cloud_visit", "exfiltration", 0.8, "visits to personal cloud storage", stage="exfiltrate"),
    Feature("leak_visit", "exfiltration", 1.2, "visits to leak or paste sites", stage="exfiltrate"),
    Feature(
        "new_channel",
        "exfiltration",
        2.0,
        "first uses of a data-movement channel",
        stage="exfiltrate",
        novelty=True,
    ),
    Feature(
        "other_host_channel",
        "exfiltration",
        2.0,
        "first data movements on the machine of another person",
        stage="exfiltrate",
        novelty=True,
    ),
    Feature("leak_upload", "exfiltration", 3.0, "uploads to leak or paste sites", stage="exfiltrate"),
    Feature("personal_mail", "exfiltration", 1.5, "mails to personal addresses", stage="exfiltrate"),
    Feature("mail_forwarding", "exfiltration", 2.5, "mail forwarding rules", stage="exfiltrate"),
    Feature("external_share", "exfiltration", 1.5, "external shares", stage="exfiltrate"),
)

CHANNELS: dict[str, str] = {
    "usb": "usb",
    "usb_files": "usb",
    "cloud_upload": "personal cloud",
    "cloud_visit": "personal cloud",
    "leak_upload": "leak site",
    "leak_visit": "leak site",
    "personal_mail": "personal mail",
    "external_share": "external share",
}
"""Features of a data-movement channel -> the channel: a person's first use of a channel (in `first_seen_days`) also
counts once as `new_channel`, however many of its features the day shows."""

RISE_WINDOWS = (5, 10, 15)
"""A rise feature's windows, in the entity's last active days (today included): a few days of several copies, and
one to three weeks of a few copies on most days. The strongest of them is the rise."""
RISES: tuple[Feature, ...] = tuple(
    Feature(
        f"{base.name}_rise",
        EXFILTRATION,
        base.weight,
        base.noun,
        stage="exfiltrate",
        bytes=base.bytes,
        rise_of=base.name,
    )
    for base in FEATURES
    if base.name in CHANNELS
)
"""A channel used markedly more over several days than the entity's own habit before them (a job seeker's weeks of
thumb-drive copies at a higher rate): each day alone may be ordinary for them, the run of days is not."""
FEATURES += RISES
RISE_OF: dict[str, str] = {feature.rise_of: feature.name for feature in RISES if feature.rise_of is not None}
"""Channel feature -> its rise feature."""

PEAKS: frozenset[str] = frozenset(feature.name for feature in FEATURES if feature.peak)

BY_NAME: dict[str, Feature] = {feature.name: feature for feature in FEATURES}
FAMILIES: tuple[str, ...] = ("identity", "access", "data", "exfiltration", "communication", "behaviour", "sigma")
