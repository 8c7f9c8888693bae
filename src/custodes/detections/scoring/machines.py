"""Who is at which machine: the owners learned from use (where the directory names none) and the people last seen at
each machine (its seats), so that a record naming only a machine (a removable drive recognised on it) is given to the
person who was there."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from custodes.detections.scoring.identity import machine_name

SEAT_HOURS: Final = 12
"""How long a person seen at a machine is taken to be still there (a working day from one logon, lock or unlock)."""
SEATS_KEPT: Final = 6
"""The people last at a machine kept for it, so that a record arriving late is given to who was there at its time."""


class Machines:
    """Machine owners and seats."""

    __slots__ = ("names", "owners", "seats")

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        """Machines whose owner the directory does not name -> the person who uses them (learned, see baselines)."""
        self.seats: dict[str, list[tuple[datetime, str, bool]]] = {}
        """Machine (its name without its domain: one source names a machine in full, another by its short name) ->
        (when, entity key, whether they left then: a logoff) of the last arrivals at it and departures, by time, at
        most `SEATS_KEPT` (in memory)."""
        self.names: dict[str, str] = {}
        """A machine's name as records give it -> its name without its domain (computed once)."""

    def sit(self, host: str, key: str, when: datetime, left: bool) -> None:
        """Note `key` arriving at machine `host` (lower case) at `when`, or leaving it where `left` (a logoff)."""
        name = self.names.get(host)
        if name is None:
            name = self.names[host] = machine_name(host) or host
        seats = self.seats.get(name)
        entry = (when, key, left)
        if seats is None:
            self.seats[name] = [entry]
            return
        last = seats[-1]
        if when >= last[0]:
            if last[1] == key and last[2] == left:  # the same again (an unlock after a logon): later
                seats[-1] = entry
                return
            seats.append(entry)
        else:  # late: among the earlier ones, in time order
            place = len(seats) - 1
            while place > 0 and seats[place - 1][0] > when:
                place -= 1
            seats.insert(place, entry)
        if len(seats) > SEATS_KEPT:
            del seats[0]

    def seated(self, host: str, when: datetime) -> str | None:
        """The person who arrived at machine `host` (lower case) last at or before `when`, within `SEAT_HOURS`, and
        had not left since."""
        gone: set[str] = set()
        for seen, key, left in reversed(self.seats.get(machine_name(host) or host, ())):
            if seen > when or key in gone:
                continue
            if when - seen > timedelta(hours=SEAT_HOURS):
                return None
            if not left:
                return key
            gone.add(key)
        return None

    def forget(self, before: datetime) -> None:
        """Drop the seats of machines nobody was seen at since `before` (they could no longer be given anything)."""
        self.seats = {host: seats for host, seats in self.seats.items() if seats[-1][0] >= before}
        self.names = {host: name for host, name in self.names.items() if name in self.seats}
