"""What one vendor record says about one actor (`Observation`), and the small readers of record values that every
vendor's reader uses (`features`, `saas`, `pam`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

ARRIVED: Final = 1
"""`Observation.presence` of a logon or unlock at the machine."""
LEFT: Final = 2
"""`Observation.presence` of a logoff from the machine."""
MACHINE: Final = ""
"""The actor of what a record naming only a machine says (a removable drive recognised on it): the engine gives it
to the person at the machine then (`machines`)."""


@dataclass(slots=True)
class Observation:
    """What one record says about one actor."""

    actor: str
    features: list[tuple[str, float]]
    seen: list[tuple[str, str]]
    host: str | None = None
    presence: int = 0
    """What the record says of the actor's presence at `host`: `ARRIVED` (a logon or unlock there), `LEFT` (a
    logoff), or nothing (0). A record naming only the machine is given to whoever arrived last and has not left."""
    mounted: str | None = None
    """The drive (`e:`) a removable drive was mounted at on `host` by this record (Defender's `UsbDriveMounted`)."""
    written: str | None = None
    """The drive (`e:`) on `host` a file was written to: the features count only where a removable drive was mounted
    there before (`Machines.mounted`), since Defender's file events give only the path."""


def counting(name: str, feature: str | None) -> Observation:
    """What a record says of `name`: once `feature` (its action's in a vendor's table), or nothing yet."""
    return Observation(name, [(feature, 1.0)] if feature else [], [])


def on_machine(host: str | None, features: list[tuple[str, float]]) -> Observation | None:
    """What a record naming only machine `host` says: `features` there, for whoever was at it; None without a
    machine."""
    return None if host is None else Observation(MACHINE, features, [], host)


def copied(size: Any) -> list[tuple[str, float]]:
    """What a file written to removable media counts: the file, and its `size` in bytes where the record states one
    (`whole`)."""
    features = [("usb_files", 1.0)]
    sent(size, features)
    return features


def sent(size: Any, features: list[tuple[str, float]]) -> None:
    """Count `size` (as a record states it, `whole`) as bytes sent out, where it is one."""
    amount = whole(size)
    if amount:
        features.append(("upload_bytes", float(amount)))


def name_of(value: Any) -> str | None:
    """A name as a record gives it: text that is not blank; anything else (a number, an object, a list) names no
    one."""
    return value if isinstance(value, str) and value.strip() else None


def normalise(name: str) -> str:
    """Lower-case, without a Windows domain prefix (`CORP\\jdoe`) or surrounding space."""
    text = name.strip().lower()
    if "\\" in text:
        text = text.rsplit("\\", 1)[1]
    return text


def name_key(name: str) -> str:
    """A name as two records are compared by: `normalise`d, its inner spaces collapsed (a full name as identity
    providers write it, `Bob  Cat`)."""
    return " ".join(normalise(name).split())


def domain_of(address: str) -> str:
    """The domain of a mail address, lower-cased (the whole text when it has no `@`)."""
    return address.rpartition("@")[2].lower()


def as_list(value: Any) -> list[Any]:
    """A value a record gives as one or as a list, as a list (none: empty)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def whole(value: Any) -> int:
    """A count, size or code as a record states it (a whole number, 0 or more); 0 for anything else: a negative or
    non-finite number, a boolean, text other than ASCII digits."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float):
        return int(value) if 0.0 <= value < math.inf else 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return 0
