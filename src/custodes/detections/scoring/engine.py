"""The scoring engine: streaming feature updates per entity and local day, day closing, ranking and findings.

`observe` is the hot path: one record becomes counter increments on its actor's open day. A day of an entity is
scored and folded into its baseline when the entity's next day starts; a date is closed for everyone (ranked,
top-k findings raised, peer statistics refreshed) once the event-time watermark has passed its end in every time
zone plus the allowed lateness. `provisional` scores open days so a threshold crossing is raised as it happens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from custodes.config import ScoringSettings
from custodes.detections.scoring.baselines import DayState, EntityState, PeerStats, machine_owners, peer_stats
from custodes.detections.scoring.catalog import BY_NAME, CHANNELS, EXFILTRATION, OTHER_MACHINE, PEAKS
from custodes.detections.scoring.explain import sentences
from custodes.detections.scoring.features import Extractor, record_time
from custodes.detections.scoring.feedback import cause_tags
from custodes.detections.scoring.identity import PERSON, IdentityResolver, Person, zone_of
from custodes.detections.scoring.machines import FORGET_DATES, SEAT_HOURS, Machines
from custodes.detections.scoring.risk import STAGE_MIN_POINTS, DayScore, RiskModel
from custodes.model import Event, Finding, Severity, stable_id
from custodes.timewindow import out_of_window

DETECTOR = "scoring"
EVIDENCE_PER_FEATURE = 5
NOVELTY = {
    "device": "new_device",
    "country": "new_country",
    "asn": "new_asn",
    "resource": "new_resource",
    "owner": "other_host",
    "channel": "new_channel",
    "owner_channel": "other_host_channel",
}
UNREADABLE = (AttributeError, TypeError, ValueError, KeyError, OverflowError)
"""What extracting a vendor record of an unexpected shape may raise: the record is counted as unreadable."""
FAILED_SIGNINS = frozenset({"signin_failed", "mfa_failed"})
"""What an actor the directory does not name must do more than, to become an entity: anyone can fail to sign in under
any name (password spraying, typos), and each name would be a baseline kept, stored and ranked for ever."""
LATEST_ZONE = timedelta(hours=14)
DAMP_POINTS = 15.0
DAMP_SD = 1.0
"""A data-movement amount this many deviations above the person's usual is damped into their baseline whatever the
day's points: a rise sustained over days keeps counting rather than becoming the new normal by its second day."""
REVIEW_STRONGER = 1.5
"""How much stronger a person already under review must be to take a budget place again: in the day's own points,
or in one feature's points against that feature's when they were ranked for it."""
REVIEW_REPEAT = 1 / 3
"""What the points a person under review repeats (features neither new nor stronger) count for a budget place: a
repeat at three times a fresh lead's points still comes before it, so the budget does not go to next to nothing."""
PRUNE_EVERY_DAYS = 7
RECIPROCAL_DAYS = 7
"""How recent an unusual visit to a person's machine must be for that person's account on the visitor's machine to
count as `reciprocal_host` (a later day's: the visit counts once its day has closed and been scored)."""

Ranking = Callable[[date, list[DayScore]], None]


def _tally(today: DayState, name: str, event_id: str) -> None:
    """Count one more of feature `name` today, with its event as evidence (the first `EVIDENCE_PER_FEATURE`)."""
    today.counts[name] = today.counts.get(name, 0.0) + 1.0
    ids = today.evidence.setdefault(name, [])
    if len(ids) < EVIDENCE_PER_FEATURE:
        ids.append(event_id)


def scored_time(event: Event) -> datetime:
    """When an event happened as scoring counts it: the envelope's time, or, where the envelope carries a warning
    (its time may be a stand-in), the record's own where it has one."""
    return event.time if not event.warnings else (record_time(event.raw) or event.time)


def review_places(people: int, share: float) -> int:
    """The daily review budget in places: `share` of `people`, at least one."""
    return max(1, round(people * share))


class ScoringEngine:
    """Behaviour scoring over a stream of events and Sigma findings."""

    def __init__(
        self,
        settings: ScoringSettings,
        resolver: IdentityResolver,
        *,
        org_domains: Iterable[str] | None = None,
        on_ranking: Ranking | None = None,
    ) -> None:
        # Interpreted, a 30th attribute here cost 1.0 % of the engine's instructions (measured with callgrind; CPython
        # shares instance dict keys up to about 30): state read rarely goes elsewhere (analyst feedback is the model's).
        self.settings = settings
        self.resolver = resolver
        self.extractor = Extractor(settings, resolver.org_domains if org_domains is None else org_domains)
        self.model = RiskModel(settings)
        self.default_zone = ZoneInfo(settings.default_timezone)  # an IANA name: the settings check it
        self.states: dict[str, EntityState] = {}
        self.peers = PeerStats()
        self.watermark: datetime | None = None
        self.closed_through: int | None = None
        self.next_close: datetime | None = None
        self.forget = 0.5 ** (1.0 / settings.history_half_life_days)
        self.lateness = timedelta(hours=settings.lateness_hours)
        self.on_ranking = on_ranking
        self.pending: dict[int, list[DayScore]] = {}
        self.present: dict[int, set[str]] = {}
        """Per local day (ordinal): the entities with an event of their own (kept in memory only)."""
        self.bounds: dict[tuple[tzinfo | None, int], tuple[datetime, datetime]] = {}
        """Per time zone and local day (ordinal) of an open day: its start and end in UTC."""
        self.top: set[str] = set()
        self.machines = Machines()
        self.findings: list[Finding] = []
        self.scores: list[DayScore] = []
        self.dirty: set[str] = set()
        self.late_events = 0
        self.late_by_source: Counter[str] = Counter()
        """Events that arrived for a day already closed, by source (persisted with the clock)."""
        self.untimed = 0
        """Events skipped for a time outside the accepted window (see custodes.timewindow)."""
        self.unreadable = 0
        self.unattributed: Counter[str] = Counter()
        """Records naming no actor the extractor reads, or of a shape it does not know, by source (in memory)."""
        self.strangers: Counter[str] = Counter()
        """Failed sign-ins by names neither the directory nor any earlier record holds, by source (in memory): not
        scored (`FAILED_SIGNINS`)."""
        self.observed = 0
        self.days_closed = 0
        """Dates closed on which some entity had a day (see `close_date`)."""

    # state ----------------------------------------------------------------------------------------
    def state_for(self, key: str, kind: str) -> EntityState:
        """The entity's state, created from its directory entry on first sight."""
        state = self.states.get(key)
        if state is None:
            group, department, tz = self._profile(self.resolver.person(key))
            state = EntityState(key=key, kind=kind, group=group, department=department, tz=tz)
            self.states[key] = state
        return state

    def _profile(self, person: Person | None) -> tuple[str, str, ZoneInfo]:
        """The peer group, department and time zone of a directory entry (or of a name it does not hold)."""
        if person is None:
            return "-/-", "-", self.default_zone
        return person.peer_group, person.department or "-", zone_of(person, self.default_zone)

    def adopt(self, resolver: IdentityResolver) -> None:
        """Take the directory as read again (a new export): who is who, the organisation's domains, and each known
        entity's peer group, department, kind and time zone (`align`)."""
        self.resolver = resolver
        self.extractor.org_domains = frozenset(resolver.org_domains)
        if self.align():
            self.refresh_groups()

    def align(self) -> bool:
        """Give each entity the directory names the peer group, department, kind and time zone it now says (a person
        moved to another team, relocated, or listed since first seen) from the day open now on; days closed keep
        what they were scored with. Entities it does not name keep theirs. Whether any changed (peer statistics are
        then out of date: `refresh_groups`)."""
        moved = False
        for key, state in self.states.items():
            person = self.resolver.person(key)
            if person is None:
                continue
            group, department, tz = self._profile(person)
            if (state.group, state.department, state.tz, state.kind) != (group, department, tz, person.kind):
                state.group, state.department, state.tz, state.kind = group, department, tz, person.kind
                self.dirty.add(key)
                moved = True
        return moved

    # streaming ------------------------------------------------------------------------------------
    def observe(self, event: Event) -> str | None:
        """Update features from one event; return the entity key it was attributed to (None: nothing to score)."""
        try:
            obs = self.extractor.extract(event.raw)
        except UNREADABLE:
            self.unreadable += 1
            return None
        if obs is None:
            self.unattributed[event.source] += 1
            return None
        if out_of_window(event):
            self.untimed += 1
            return None
        when = scored_time(event)
        written = obs.written
        if written is not None and (obs.host is None or not self.machines.mounted(obs.host.lower(), written, when)):
            self.unattributed[event.source] += 1  # a file written to a fixed drive: not read
            return None
        if obs.mounted is not None and obs.host is not None:  # known before whoever it is given to
            self.machines.mount(obs.host.lower(), obs.mounted, when)
        if obs.actor:
            key, kind = self.resolver.resolve(obs.actor)
        else:  # a record naming only a machine: the person at it
            found = self._at_machine(obs.host, when)
            if found is None:
                self.unattributed[event.source] += 1
                return None
            key, kind = found
        state = self.states.get(key)
        if state is None:
            if self._stranger(key, obs.features):
                self.strangers[event.source] += 1
                return None
            state = self.state_for(key, kind)
        today = state.open
        if today is not None and today.start is not None and today.start <= when < today.end:  # type: ignore[operator]
            hour = min(23, (when - today.start).seconds // 3600)
        else:
            local = when.astimezone(state.tz)
            today = self._open(state, local.toordinal())
            if today is None:
                self.late_by_source[event.source] += 1
                return None
            if today.start is None:  # the day's first event
                today.start, today.end = self._bounds(local)
                self.present.setdefault(today.day, set()).add(key)
            hour = local.hour
        self.observed += 1
        today.events += 1
        hours = today.hours
        hours[hour] = hours.get(hour, 0) + 1
        counts = today.counts
        evidence = today.evidence
        seen = obs.seen
        for name, amount in obs.features:
            if name in PEAKS:
                counts[name] = max(counts.get(name, 0.0), amount)
            else:
                counts[name] = counts.get(name, 0.0) + amount
            ids = evidence.get(name)
            if ids is None:
                evidence[name] = [event.id]
            elif len(ids) < EVIDENCE_PER_FEATURE:
                ids.append(event.id)
            channel = CHANNELS.get(name)
            if channel is not None:
                seen = [*seen, ("channel", channel)]
        if obs.host is not None:
            host = obs.host.lower()
            machines = self.machines
            owner = self.resolver.host_owner(host) or machines.owners.get(host)
            today.machines.add(host)
            if obs.presence and kind == PERSON:  # arrived at the machine, or left it (machines.py)
                machines.note(obs.presence, host, key, when)
            if owner is not None and owner != key:
                seen = [*(s for s in seen if s[0] != "host"), ("owner", owner)]
                seen += [("owner_channel", f"{owner} {kind_value}") for kind, kind_value in seen if kind == "channel"]
                if owner not in today.owners:
                    today.owners[owner] = event.id
                    self._reciprocal(key, owner, today, event.id)
            elif owner is None:
                seen = [*seen, ("host", obs.host)]
        if seen:
            self._novelty(state, today, seen, event.id)
        self.dirty.add(key)
        if self.watermark is None or when > self.watermark:
            self.watermark = when
            if self.next_close is not None and when >= self.next_close:
                self.sweep()
        return key

    def reseat(self, event: Event) -> None:
        """Note only who arrived at or left a machine, and where a removable drive was mounted on it, by `event` (a
        stored record read again: the seats and drives, held in memory, rebuilt after a restart); nothing is
        scored."""
        try:
            obs = self.extractor.extract(event.raw)
        except UNREADABLE:
            return
        if obs is None or obs.host is None:
            return
        host, when = obs.host.lower(), scored_time(event)
        if obs.mounted is not None:
            self.machines.mount(host, obs.mounted, when)
        if not obs.presence or not obs.actor:
            return
        key, kind = self.resolver.resolve(obs.actor)
        if kind == PERSON:
            self.machines.note(obs.presence, host, key, when)

    def seat_horizon(self) -> datetime | None:
        """The earliest arrival or departure a record still to come can be given by (the watermark less the lateness
        allowed and `SEAT_HOURS`); None before any record."""
        if self.watermark is None:
            return None
        return self.watermark - self.lateness - timedelta(hours=SEAT_HOURS)

    def _at_machine(self, host: str | None, when: datetime) -> tuple[str, str] | None:
        """The entity a record naming only machine `host` at `when` is given to: the person seen at it last, within
        `SEAT_HOURS` before; else its owner (the directory's, or learned from use); None where neither is known."""
        if host is None:
            return None
        name = host.lower()
        key = self.machines.seated(name, when) or self.resolver.host_owner(name) or self.machines.owners.get(name)
        if key is None:
            return None
        state = self.states.get(key)
        if state is not None:
            return key, state.kind
        person = self.resolver.person(key)
        return key, PERSON if person is None else person.kind

    def _stranger(self, key: str, features: list[tuple[str, float]]) -> bool:
        """Whether a record of an actor not yet an entity only fails to sign in under a name a directory in use does
        not hold."""
        return (
            bool(features)
            and all(name in FAILED_SIGNINS for name, _ in features)
            and bool(self.resolver.people)
            and self.resolver.person(key) is None
        )

    def _bounds(self, local: datetime) -> tuple[datetime, datetime]:
        """The start and end (UTC) of the local day `local` falls on; one computation per zone and day."""
        key = (local.tzinfo, local.toordinal())
        found = self.bounds.get(key)
        if found is None:
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            found = (midnight.astimezone(UTC), (midnight + timedelta(days=1)).astimezone(UTC))
            self.bounds[key] = found
        return found

    def _novelty(self, state: EntityState, today: DayState, seen: list[tuple[str, str]], event_id: str) -> None:
        # Everything is new on an entity's first day: that day only fills the memory. Later days count novelty
        # (the baseline learns how often the entity meets new things); it is scored after `warmup_days` (risk.py).
        first_day = state.active_days == 0
        memory_days = self.settings.first_seen_days
        for kind, value in seen:
            memory = state.seen.get(kind)
            if memory is None:
                memory = state.seen[kind] = {}
            last = memory.get(value)
            if not first_day and (last is None or today.day - last > memory_days):
                _tally(today, NOVELTY.get(kind, "new_" + kind), event_id)
            memory[value] = today.day

    def _reciprocal(self, key: str, owner: str, today: DayState, event_id: str) -> None:
        """Count the first use today of a machine of `owner` when `owner` used a machine of `key`'s, unusually for
        them, on a day of the last `RECIPROCAL_DAYS` before: an account on the machine of someone who was just at its
        owner's (a keylogger planted, a password read off a desk, then the account used from the planter's desk)."""
        visitor = self.states.get(owner)
        last = None if visitor is None else visitor.visits.get(key)
        if last is not None and 0 < today.day - last <= RECIPROCAL_DAYS:
            _tally(today, "reciprocal_host", event_id)

    @staticmethod
    def _visited(state: EntityState, today: DayState, score: DayScore) -> None:
        """Remember the owners of the machines used on a day scored for an unusual use of another person's machine
        (see `_reciprocal`), for `RECIPROCAL_DAYS`."""
        if any(c.feature in OTHER_MACHINE and c.points >= STAGE_MIN_POINTS for c in score.contributions):
            kept = {owner: day for owner, day in state.visits.items() if today.day - day <= RECIPROCAL_DAYS}
            state.visits = kept | dict.fromkeys(today.owners, today.day)

    def _open(self, state: EntityState, day: int) -> DayState | None:
        """The entity's open day for `day`, closing an earlier one; None for a day already closed."""
        today = state.open
        if today is not None and today.day == day:
            return today
        if today is not None and day < today.day:
            self.late_events += 1
            return None
        if self.closed_through is None:
            self._start(day)
        elif day <= self.closed_through:
            self.late_events += 1
            return None
        if today is not None:
            self._close(state)
        state.open = DayState(day)
        return state.open

    def _start(self, day: int) -> None:
        self.closed_through = day - 2
        self._schedule()

    def _schedule(self) -> None:
        assert self.closed_through is not None
        following = date.fromordinal(self.closed_through + 2)
        self.next_close = datetime(following.year, following.month, following.day, tzinfo=UTC) + (
            LATEST_ZONE + self.lateness
        )

    def add_finding(self, finding: Finding) -> str | None:
        """Count a Sigma (or other detector's) finding toward its entity's day; return the entity key."""
        if finding.entity is None or finding.detector == DETECTOR:
            return None
        key, kind = self.resolver.resolve(finding.entity)
        state = self.state_for(key, kind)
        today = self._open(state, finding.last_seen.astimezone(state.tz).toordinal())
        if today is None:
            return None
        points = self.settings.sigma_points.get(finding.severity.label, 0.0)
        if all(rule != finding.rule_id for rule, _, _ in today.sigma):
            today.sigma.append((finding.rule_id, finding.title, points))
        ids = today.evidence.setdefault("sigma", [])
        if len(ids) < EVIDENCE_PER_FEATURE:
            ids.extend(finding.event_ids[: EVIDENCE_PER_FEATURE - len(ids)])
        self.dirty.add(key)
        return key

    # scoring --------------------------------------------------------------------------------------
    def watchlists(self, key: str, day: date) -> list[str]:
        """Watchlists the entity is on that day."""
        person = self.resolver.person(key)
        return [] if person is None else person.watchlists_on(day)

    @property
    def learning(self) -> bool:
        """True until `learning_days` dates with activity have closed: baselines are built, nothing is scored."""
        return self.days_closed < self.settings.learning_days

    def score_open(self, state: EntityState) -> DayScore | None:
        """The provisional score of an entity's open day."""
        if state.open is None or self.learning:
            return None
        day = date.fromordinal(state.open.day)
        return self.model.score(state, state.open, self.peers, day, self.watchlists(state.key, day))

    def provisional(self, keys: Iterable[str]) -> None:
        """Raise findings (see `take_findings`) for entities whose open day already crosses the threshold."""
        for key in keys:
            state = self.states.get(key)
            score = None if state is None else self.score_open(state)
            if state is not None and score is not None and score.risk >= self.settings.threshold:
                self._finding(state, score, "threshold", state.active_days)

    def _absent_owners(self, today: DayState) -> None:
        """Count the machines used today whose owners have had no event of their own this day."""
        if not today.owners:
            return
        present = self.present.get(today.day, set())
        absent = [event_id for owner, event_id in today.owners.items() if owner not in present]
        if absent:
            today.counts["absent_owner_host"] = float(len(absent))
            today.evidence["absent_owner_host"] = absent[:EVIDENCE_PER_FEATURE]

    def _close(self, state: EntityState) -> DayScore:
        today = state.open
        assert today is not None
        self._absent_owners(today)
        day = date.fromordinal(today.day)
        history = state.active_days  # the days before this one
        if self.learning:
            score = DayScore(state.key, state.kind, day, 0.0, 0.0, [], {}, [], [])
        else:
            score = self.model.score(state, today, self.peers, day, self.watchlists(state.key, day))
        if score.contributions:
            for stage in self.model.stages_of(score):
                state.stages[stage] = today.day
        state.risk = score.risk
        state.risk_day = today.day
        if today.owners and score.contributions:
            self._visited(state, today, score)
        damped = (  # an unsettled baseline learns everything: its anomalies are judged on too little history
            frozenset(
                c.feature
                for c in score.contributions
                if score.points >= DAMP_POINTS
                or (c.magnitude_sd >= DAMP_SD and BY_NAME[c.feature].family == EXFILTRATION)
            )
            if score.contributions and history >= self.settings.warmup_days
            else frozenset()
        )
        state.fold(today, self.forget, day.weekday() >= 5, damped)
        if state.active_days % PRUNE_EVERY_DAYS == 0:
            state.prune(today.day, self.settings.first_seen_days)
        state.open = None
        self.pending.setdefault(today.day, []).append(score)
        self.dirty.add(state.key)
        if score.risk >= self.settings.threshold:
            self._finding(state, score, "threshold", history)
        return score

    def sweep(self) -> None:
        """Close every date whose end has passed in all time zones (plus lateness) by the watermark."""
        while self.next_close is not None and self.watermark is not None and self.watermark >= self.next_close:
            assert self.closed_through is not None
            self.close_date(self.closed_through + 1)

    def flush(self) -> None:
        """Close every open day (end of a replay or of an evaluation)."""
        last = max((s.open.day for s in self.states.values() if s.open is not None), default=None)
        while last is not None and self.closed_through is not None and self.closed_through < last:
            self.close_date(self.closed_through + 1)

    def close_date(self, day: int) -> list[DayScore]:
        """Close `day` (ordinal) for every entity; rank the day; raise top-k findings; refresh peer statistics.

        A date on which no entity had a day (a gap in the data, or the dates after a stray early record) is ranked
        on carried risk alone: it changes no baseline, so peer statistics are kept, and it is not one of the
        `learning_days`."""
        for state in self.states.values():
            if state.open is not None and state.open.day <= day:
                self._close(state)
        scored = {score.entity: score for score in self.pending.pop(day, [])}
        self.present.pop(day, None)
        for closed in [key for key in self.bounds if key[1] <= day]:
            del self.bounds[closed]
        ranking = list(scored.values())
        when = date.fromordinal(day)
        for state in self.states.values():
            if state.key not in scored and state.risk > 0 and state.risk_day < day:
                carried = self.model.decayed(state, day)
                if carried > 0.01:
                    ranking.append(DayScore(state.key, state.kind, when, 0.0, carried, [], {}, [], []))
        ranking.sort(key=self.model.rank_key, reverse=True)
        k = self.settings.top_k
        top = {s.entity for s in ranking[:k] if s.risk >= self.settings.top_k_min_risk} if k else set()
        for score in ranking[:k]:
            if score.entity in top and score.entity not in self.top and score.contributions:
                state = self.states[score.entity]
                self._finding(state, score, "top_k", state.active_days - 1)  # the day is folded in by now
        self.top = top
        ranking = self._review_order(day, ranking)
        for place, score in enumerate(ranking, start=1):
            score.place = place
        self.scores.extend(s for s in scored.values())
        if self.on_ranking is not None:
            self.on_ranking(when, ranking)
        if scored:
            self.refresh_groups()
            self.days_closed += 1
        if (horizon := self.seat_horizon()) is not None and day % FORGET_DATES == 0:
            self.machines.forget(horizon)
        self.closed_through = day
        self._schedule()
        return ranking

    @property
    def review_slots(self) -> int:
        """The daily review budget in people: `review_budget` of the directory's persons (of the persons seen when
        the directory names none), at least one."""
        people = self.resolver.population or sum(1 for s in self.states.values() if s.kind == "person")
        return review_places(people, self.settings.review_budget)

    def _review_order(self, day: int, ranking: list[DayScore]) -> list[DayScore]:
        """The day's ranking with its first `review_slots` places given to new leads.

        A person ranked within the budget in the last `review_days` days is already with the analysts. They compete
        for the budget with the day's points that come from new or stronger evidence: features they were not ranked
        for (a rise over days of a channel whose single day was reviewed is one), and features now `REVIEW_STRONGER`
        times the points they were ranked for (a USB rate tripled since a first USB day was reviewed), the points
        they repeat counting at `REVIEW_REPEAT`; or with all of them when the day's own points are `REVIEW_STRONGER`
        times those they were ranked for. Those within the budget are marked reviewed.
        """
        slots = self.review_slots
        keyed = sorted(enumerate(ranking), key=lambda item: (-self._lead_key(day, item[1]), item[0]))
        leads = [score for _, score in keyed[:slots]]
        for score in leads:
            if score.points > 0:
                self._reviewed(day, self.states[score.entity], score)
        chosen = {score.entity for score in leads}
        return leads + [score for score in ranking if score.entity not in chosen]

    def _held(self, day: int, state: EntityState) -> bool:
        reviewed = state.reviewed_day
        return reviewed is not None and 0 < day - reviewed <= self.settings.review_days

    def _lead_key(self, day: int, score: DayScore) -> float:
        """What a score counts for a place within the review budget (see `_review_order`)."""
        key = self.model.rank_key(score)[0]
        state = self.states[score.entity]
        if not self._held(day, state) or score.points >= REVIEW_STRONGER * state.reviewed_points:
            return key
        reviewed = state.reviewed_features
        raw = sum(c.points for c in score.contributions)
        fresh = sum(c.points for c in score.contributions if c.points >= REVIEW_STRONGER * reviewed.get(c.feature, 0.0))
        return score.points * (fresh + REVIEW_REPEAT * (raw - fresh)) / raw if raw > 0 else 0.0

    def _reviewed(self, day: int, state: EntityState, score: DayScore) -> None:
        held = self._held(day, state)
        features = dict(state.reviewed_features) if held else {}
        for c in score.contributions:
            features[c.feature] = max(c.points, features.get(c.feature, 0.0))
        state.reviewed_points = max(score.points, state.reviewed_points) if held else score.points
        state.reviewed_features = dict(sorted(features.items()))
        state.reviewed_day = day
        self.dirty.add(state.key)

    def refresh_groups(self) -> None:
        """Recompute what is pooled over entities: peer statistics and learned machine owners."""
        self.peers = peer_stats(self.states.values())
        self.machines.owners = machine_owners(self.states.values())

    def _finding(self, state: EntityState, score: DayScore, reason: str, history: int) -> Finding | None:
        """A finding for the score, unless the day has no evidence of its own (its risk is only carried), the
        person's baseline was not yet settled (`history`, their active days before the scored day, under
        `warmup_days`: they are ranked by what is known, peers standing in for their history, but not alerted on),
        or they had one within the cooldown."""
        if score.points <= 0 or history < self.settings.warmup_days:
            return None
        day = score.day.toordinal()
        last = state.last_finding_day
        if last is not None and 0 <= day - last < max(1, self.settings.finding_cooldown_days):
            return None
        state.last_finding_day = day
        self.dirty.add(state.key)
        lines = sentences(score)
        dedup = stable_id(DETECTOR, state.key, score.day.isoformat())
        at = datetime(score.day.year, score.day.month, score.day.day, tzinfo=state.tz).astimezone(UTC)
        severity = Severity.HIGH if score.risk >= 2 * self.settings.threshold else Severity.MEDIUM
        finding = Finding(
            id=stable_id("finding", dedup),
            dedup_key=dedup,
            detector=DETECTOR,
            rule_id=f"scoring.{reason}",
            title=f"Behaviour risk {score.risk:.0f}: {lines[0] if lines else 'unusual activity'}",
            severity=severity,
            entity=state.key,
            event_ids=score.event_ids,
            tags=[
                "scoring",
                f"scoring.{reason}",
                *(f"watchlist.{w}" for w in score.watchlists),
                *cause_tags(c.feature for c in score.contributions),
            ],
            first_seen=at,
            last_seen=at + timedelta(days=1) - timedelta(seconds=1),
            source=DETECTOR,
            description="; ".join(lines),
        )
        self.findings.append(finding)
        return finding

    def take_findings(self) -> list[Finding]:
        """Findings raised since the last call."""
        found, self.findings = self.findings, []
        return found

    def take_scores(self) -> list[DayScore]:
        """Final day scores produced since the last call."""
        done, self.scores = self.scores, []
        return done
