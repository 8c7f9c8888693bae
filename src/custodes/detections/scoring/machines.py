"""Who is at which machine: the owners learned from use (where the directory names none) and the people who arrived
at each machine and had not left (its seats), so that a record naming only a machine (a removable drive recognised
on it) is given to the person who was there; and the drives removable drives were mounted at on each machine, so
that a file written to one of them is known for a copy to removable media."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from custodes.detections.scoring.identity import machine_name
from custodes.detections.scoring.observation import LEFT

FORGET_DATES: Final = 28
"""How often (in dates closed) the arrivals and departures nothing could be given to any more are dropped: each time
walks all of them, which on every date cost 3 % of the engine's instructions on a 300-person organisation."""
SEAT_HOURS: Final = 12
"""How long a person who arrived at a machine is taken to be still there, unless they left (a working day from one
logon)."""
DRIVE_HOURS: Final = SEAT_HOURS
"""How long a removable drive mounted is taken to be still there (nothing logs its removal): as long as a seat, so
that the read after a start and the forgetting of seats (`ScoringEngine.seat_horizon`) cover the drives too."""


class Machines:
    """Machine owners and seats: each arrival or departure (`note`) is one time in `arrived` or `left` under the
    machine and the person."""

    __slots__ = ("arrived", "drives", "left", "names", "owners")

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        """Machines whose owner the directory does not name -> the person who uses them (learned, see baselines)."""
        self.arrived: dict[str, dict[str, datetime]] = {}
        """Machine (lower case, as records name it) -> entity key -> when they last arrived (in memory)."""
        self.left: dict[str, dict[str, datetime]] = {}
        """Machine -> entity key -> when they last left (a departure before their arrival is an earlier visit's)."""
        self.names: dict[str, set[str]] = {}
        """A machine's name without its domain -> the names records gave it (one source names a machine in full,
        another by its short name)."""
        self.drives: dict[str, dict[str, set[datetime]]] = {}
        """A machine's name without its domain -> drive (`e:`) -> when a removable drive was mounted there."""

    def mount(self, host: str, drive: str, when: datetime) -> None:
        """A removable drive was mounted at `drive` on machine `host` (lower case) at `when`."""
        self.drives.setdefault(machine_name(host) or host, {}).setdefault(drive, set()).add(when)

    def mounted(self, host: str, drive: str, when: datetime) -> bool:
        """Whether a removable drive was mounted at `drive` on machine `host` (lower case, any of its names) at or
        before `when`, within `DRIVE_HOURS`."""
        earliest = when - timedelta(hours=DRIVE_HOURS)
        times = self.drives.get(machine_name(host) or host, {}).get(drive, ())
        return any(earliest <= mounted <= when for mounted in times)

    def note(self, presence: int, host: str, key: str, when: datetime) -> None:
        """`key` arrived at machine `host` (lower case) at `when`, or left it (`presence`: `ARRIVED` or `LEFT`)."""
        book = self.left if presence == LEFT else self.arrived
        times = book.get(host)
        if times is None:
            times = self.place(book, host)
        times[key] = when

    def place(self, book: dict[str, dict[str, datetime]], host: str) -> dict[str, datetime]:
        """The times of machine `host` (lower case) in `book` (`arrived` or `left`), made on its first."""
        times = book[host] = {}
        self.names.setdefault(machine_name(host) or host, set()).add(host)
        return times

    def seated(self, host: str, when: datetime) -> str | None:
        """The person who arrived at machine `host` (lower case, under any of its names) last at or before `when`,
        within `SEAT_HOURS`, and had not left by then."""
        earliest = when - timedelta(hours=SEAT_HOURS)
        names = self.names.get(machine_name(host) or host, ())
        departures = [self.left[name] for name in names if name in self.left]  # a logoff may name it otherwise
        there = []
        for name in names:
            for key, arrived in self.arrived.get(name, {}).items():
                if earliest <= arrived <= when and not any(
                    arrived <= gone <= when for book in departures if (gone := book.get(key)) is not None
                ):
                    there.append((arrived, key))
        return max(there)[1] if there else None

    def forget(self, before: datetime) -> None:
        """Drop the arrivals and departures before `before` (nothing could be given to them any more)."""
        for book in (self.arrived, self.left):
            for host in list(book):
                recent = {key: when for key, when in book[host].items() if when >= before}
                if recent:
                    book[host] = recent
                else:
                    del book[host]
        kept = self.arrived.keys() | self.left.keys()
        self.names = {name: hosts & kept for name, hosts in self.names.items() if hosts & kept}
        drives = {
            host: {drive: later for drive, times in letters.items() if (later := {t for t in times if t >= before})}
            for host, letters in self.drives.items()
        }
        self.drives = {host: letters for host, letters in drives.items() if letters}
