"""Risk: surprise-based points per feature, Sigma findings, sequences, caps, watchlists and decay.

A feature's surprise (in bits) is how unlikely it is that the entity does it at all on a day (its own rate shrunk
toward its peers') plus how far today's amount is above its usual amount (in standard deviations of
log(1 + value), again shrunk toward peers; twice the bits per deviation on exfiltration channels). Points are
the surprise above a dead band times the feature's weight;
each family's points are capped; watchlists multiply the day's points; yesterday's risk decays by the half-life.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from custodes.config import ScoringSettings
from custodes.detections.scoring.baselines import (
    AMOUNT,
    LAST,
    LOGGED,
    LOGGED2,
    NZ,
    S1,
    S2,
    USED,
    DayState,
    EntityState,
    PeerStats,
)
from custodes.detections.scoring.catalog import BY_NAME, EXFILTRATION, FAMILIES, RISE_OF, RISE_WINDOWS
from custodes.detections.scoring.feedback import CauseFeedback, Holder, holders, in_force

DEAD_BAND_BITS = 4.0
BITS_PER_SD = 1.5
EXFILTRATION_BITS_PER_SD = 3.0
"""A rate spike on a data-movement channel weighs twice as much as one elsewhere."""
POINTS_PER_BIT = 3.0
MAX_OCCURRENCE_BITS = 9.0
MAX_MAGNITUDE_SD = 8.0
MIN_VAR_LOG = 0.25
OFF_HOURS_PROBABILITY = 0.03
HOUR_PRIOR_DAYS = 5.0
SEQUENCE_WINDOW_DAYS = 7
STAGE_MIN_POINTS = 2.0
FAMILY_REST = 0.5
"""Within a family, the features after the day's strongest count this much: one act is often seen through several
of them (a USB copy's connections, files and bytes), and should count once in full, not once per measure."""
MIN_REFERENCE_DAYS = 5.0
"""Active days before a rise window an entity needs before a rise over that window is judged."""
STREAK_MIN_DAYS = 10
"""The shortest rise window whose days used are judged (`streak_bits`): a few days' run of a habit is common."""
SEQUENCE_POINTS = {
    "collect_exfiltrate": 8.0,
    "staged": 4.0,
    "exfiltrate_delete": 6.0,
    "departure_data": 10.0,
    "takeover_collect": 8.0,
}


@dataclass(slots=True)
class Contribution:
    """One feature's part in a day's score."""

    feature: str
    value: float
    usual: float
    peer_usual: float
    points: float
    occurrence_bits: float
    magnitude_sd: float
    last_seen_days_ago: int | None
    history_days: int
    event_ids: list[str] = field(default_factory=list)
    days: int = 1
    """The active days `value` and `usual` cover: 1, or a rise's window."""
    share: float = 1.0
    """The share of the entity's active days with the feature, so `usual / share` is their usual amount on the days
    they have any (for a rise, the share of their active days before the window: its `usual` is already for as many
    days)."""
    hits: int = 0
    """For a rise: the window's active days with the channel (0 for a day's own feature)."""

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return {
            "feature": self.feature,
            "value": self.value,
            "usual": round(self.usual, 4),
            "peer_usual": round(self.peer_usual, 4),
            "points": round(self.points, 3),
            "occurrence_bits": round(self.occurrence_bits, 3),
            "magnitude_sd": round(self.magnitude_sd, 3),
            "last_seen_days_ago": self.last_seen_days_ago,
            "history_days": self.history_days,
            "event_ids": self.event_ids,
            "days": self.days,
            "share": round(self.share, 4),
            "hits": self.hits,
        }


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def streak_bits(share: float, days: float, hits: int, span: int) -> float:
    """Bits of surprise at using a channel on `hits` of `span` active days, for a habit seen on `share` of `days`
    active days before them: the tail of the beta-binomial predictive (Jeffreys prior), so a habit known from few
    days surprises less. A habit drifts (a project's weeks of daily copies), so it is taken as known at most as well
    as from as many days as the window holds."""
    known = min(days, span)
    a, b = share * known + 0.5, max(0.0, 1.0 - share) * known + 0.5
    if hits <= 0 or hits / span <= a / (a + b):
        return 0.0
    term = math.exp(_log_beta(a + span, b) - _log_beta(a, b))  # every day
    tail = term
    for j in range(span, hits, -1):  # the predictive of j - 1 days from that of j
        term *= j / (span - j + 1) * (b + span - j) / (a + j - 1)
        tail += term
    return -math.log2(min(1.0, tail))


class Rise(NamedTuple):
    """A channel used more over an entity's last active days than its own habit before them gives."""

    feature: str
    total: float
    """The channel's amount over the window, today included."""
    usual: float
    """What the entity's habit gives for as many active days."""
    sd: float
    """Standard deviations above the habit (capped at `MAX_MAGNITUDE_SD`)."""
    days: int
    """The window's active days."""
    share: float
    """The share of the entity's active days before the window with the channel."""
    hits: int
    """The window's active days with the channel, today included."""
    streak: float
    """The surprise, in bits, of using the channel on `hits` of the window's days (`streak_bits`; 0 in a window
    shorter than `STREAK_MIN_DAYS`)."""

    @property
    def bits(self) -> float:
        """The rise's surprise: the larger of its amount's (`sd` at `BITS_PER_SD`) and its days'."""
        return max(BITS_PER_SD * self.sd, self.streak)


@dataclass(slots=True)
class DayScore:
    """An entity's score for one local day, with everything needed to explain it; `place` is its place in the
    day's review order once the day is closed (1 first), None while the day is open."""

    entity: str
    kind: str
    day: date
    points: float
    risk: float
    contributions: list[Contribution]
    modifiers: dict[str, float]
    watchlists: list[str]
    sigma: list[tuple[str, str, float]]
    place: int | None = None

    @property
    def event_ids(self) -> list[str]:
        """Evidence behind the contributions, strongest first."""
        ids: list[str] = []
        for contribution in sorted(self.contributions, key=lambda c: -c.points):
            ids += [i for i in contribution.event_ids if i not in ids]
        return ids[:50]

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return {
            "entity": self.entity,
            "kind": self.kind,
            "day": self.day.isoformat(),
            "points": round(self.points, 3),
            "risk": round(self.risk, 3),
            "contributions": [c.to_json() for c in self.contributions],
            "modifiers": {k: round(v, 3) for k, v in self.modifiers.items()},
            "watchlists": self.watchlists,
            "sigma": [list(s) for s in self.sigma],
        }


CORROBORATING = frozenset(name for name, feature in BY_NAME.items() if feature.within)
"""Features that only corroborate others of the day (`Feature.within`)."""


def _corroborated(contributions: list[Contribution]) -> list[Contribution]:
    """The day's contributions with each corroborating feature's points at most those of the strongest feature it
    corroborates, and dropped without one: an account on the machine of someone who was just at its owner's is a
    takeover sign where that use of another person's machine is itself unusual for the account, not where it is
    what the account does every day (an administrator at colleagues' desks)."""
    strongest = {c.feature: c.points for c in contributions}
    kept = []
    for c in contributions:
        within = BY_NAME[c.feature].within
        if within:
            c.points = min(c.points, max(strongest.get(name, 0.0) for name in within))
        if c.points > 0:
            kept.append(c)
    return kept


def _with_feedback(
    contributions: list[Contribution], feedback: Mapping[str, tuple[float, str]], modifiers: dict[str, float]
) -> list[Contribution]:
    """The contributions as analyst feedback on their causes leaves them: each scaled by its feature's factor (a
    rise by its channel's, when it has none of its own; 0 leaves it out), the points it took off in `modifiers`
    (`feedback:<feature>:<feedback id>`)."""
    kept = []
    for c in contributions:
        found = feedback.get(c.feature)
        if found is None and (channel := BY_NAME[c.feature].rise_of) is not None:
            found = feedback.get(channel)
        if found is not None:
            factor, ident = found
            modifiers[f"feedback:{c.feature}:{ident}"] = c.points * (1.0 - factor)
            c.points *= factor
        if c.points > 0:
            kept.append(c)
    return kept


def off_hours(state: EntityState, today: DayState, peers: PeerStats, group: str, weekend: bool) -> int:
    """Hours today with activity at an hour of the week the entity (shrunk toward its peer `group`) is rarely
    active in."""
    offset = 24 if weekend else 0
    own, scale = state.hours, state.scale
    peer = peers.hours.get(group)
    part = state.part_days(weekend)
    count = 0
    for hour in today.hours:
        peer_share = peer[offset + hour] if peer is not None else 0.0
        share = (own[offset + hour] / scale + HOUR_PRIOR_DAYS * peer_share) / (part + HOUR_PRIOR_DAYS)
        if share < OFF_HOURS_PROBABILITY:
            count += 1
    return count


def _deviation(sums: list[float], days: float, scale: float, span: int, amounts: list[float]) -> float:
    """Standard deviations the log(1 + amount) of a window's `span` days (`amounts`: the days that moved data) lie
    above what a reference (`sums` times `scale`, over `days`) gives for as many days."""
    logged = sums[LOGGED] / sums[USED]  # a day's amount when used, and its second moment (the scale cancels)
    second = max(sums[LOGGED2] / sums[USED], logged * logged + MIN_VAR_LOG)
    rate = (sums[USED] / scale + 0.5) / (days + 1.0)
    mean = rate * logged
    daily = rate * second - mean * mean
    shared = rate * (1.0 - rate) / (days + 2.0) * logged * logged  # the rate's uncertainty, common to all days
    var = span * daily + span * (span - 1) * shared
    return (sum(math.log1p(a) for a in amounts) - span * mean) / math.sqrt(var)


class RiskModel:
    """Scores an entity's day from its baseline and its peers'."""

    def __init__(self, settings: ScoringSettings) -> None:
        self.settings = settings
        self.weights = {name: settings.feature_weights.get(name, f.weight) for name, f in BY_NAME.items()}
        self.decay_per_day = 0.5 ** (1.0 / settings.risk_half_life_days)
        self.feedback: dict[Holder, list[CauseFeedback]] = {}
        """Analyst feedback on causes, in force or revoked, by whom it covers: an entity key, or a peer group or
        department (the scoring service reads it from the store; `custodes.detections.scoring.feedback`)."""

    def surprise(
        self, state: EntityState, peers: PeerStats, group: str, name: str, value: float
    ) -> tuple[float, float]:
        """(occurrence bits, magnitude in standard deviations) of doing `value` of a feature today."""
        k = self.settings.shrinkage_days
        peer = peers.feature(group, name)
        rate, mean_g, var_g = (peer.rate, peer.mean_log, peer.var_log) if peer is not None else (0.0, 0.0, 1.0)
        own = state.stats.get(name)
        nz = own[NZ] / state.scale if own is not None else 0.0
        probability = min(1.0, (nz + k * rate + 0.1) / (state.days + k + 1.0))
        occurrence = min(MAX_OCCURRENCE_BITS, -math.log2(probability))
        if own is not None and nz > 0:  # moments of the person's own days (ratios of sums: the scale cancels)
            mean_p = own[S1] / own[NZ]
            var_p = max(own[S2] / own[NZ] - mean_p * mean_p, 0.0)
        else:
            mean_p, var_p = mean_g, var_g
        weight = nz / (nz + k)
        mean = weight * mean_p + (1 - weight) * mean_g
        var = max(weight * var_p + (1 - weight) * var_g, MIN_VAR_LOG)
        magnitude = min(MAX_MAGNITUDE_SD, max(0.0, (math.log1p(value) - mean) / math.sqrt(var)))
        return occurrence, magnitude

    def _points(self, name: str, bits: float) -> float:
        """A feature's points for its surprise: the bits above the dead band, times its weight."""
        return self.weights[name] * POINTS_PER_BIT * max(0.0, bits - DEAD_BAND_BITS)

    @staticmethod
    def rises(state: EntityState, counts: dict[str, float]) -> list[Rise]:
        """The rise of each channel used today that the entity has used before, over the window of `RISE_WINDOWS`
        where it is strongest.

        Measured in log(1 + amount) per day, as a day's amounts are (a clumpy channel, dozens of files in one
        copy, does not make a rise of one busy day), against the entity's own days before the window, learned in
        full: not shrunk toward peers nor damped, since a biased habit adds up to a false rise over several days.
        How often the habit uses the channel is uncertain after few days (a Beta posterior, Jeffreys prior), and that
        uncertainty is shared by the window's days; a day's amount varies at least as `MIN_VAR_LOG` allows. A window
        is not judged before its reference has `MIN_REFERENCE_DAYS`. In windows of `STREAK_MIN_DAYS` or more, how
        many of the days used the channel is judged too (`streak_bits`): a few copies on every working day for weeks,
        from someone who copied on half of them, is a rise that the amounts, each day ordinary, show only weakly."""
        used = [(base, name, value) for base, value in counts.items() if value > 0 and (name := RISE_OF.get(base))]
        if not used:
            return []
        found: dict[str, Rise] = {}
        for span, reference, days in zip(RISE_WINDOWS, state.references, state.reference_days, strict=True):
            if days < MIN_REFERENCE_DAYS:  # a window's reference counts days only once the window is full
                continue
            first = state.active_days - (span - 1)  # the oldest recent day in the window is after this one
            inside: list[dict[str, float]] | None = None
            for base, name, value in used:
                sums = reference.get(base)
                if sums is None or sums[USED] <= 0:
                    continue
                if inside is None:
                    inside = [kept for day, kept in state.recent.items() if day > first]
                amounts = [value, *(kept.get(base, 0.0) for kept in inside)]
                share = sums[USED] / state.scale / days
                hits = sum(1 for amount in amounts if amount > 0)
                streak = streak_bits(share, days, hits, span) if span >= STREAK_MIN_DAYS else 0.0
                sd = min(MAX_MAGNITUDE_SD, max(0.0, _deviation(sums, days, state.scale, span, amounts)))
                rise = Rise(name, sum(amounts), span * sums[AMOUNT] / state.scale / days, sd, span, share, hits, streak)
                strongest = found.get(name)
                if rise.bits > 0 and (strongest is None or rise.bits > strongest.bits):
                    found[name] = rise
        return list(found.values())

    def score(
        self, state: EntityState, today: DayState, peers: PeerStats, day: date, watchlists: list[str]
    ) -> DayScore:
        """The day's score; sets the day's derived `off_hours` count, does not change `state` (see `fold`)."""
        weekend = day.weekday() >= 5
        group = peers.group_for(state)
        late = off_hours(state, today, peers, group, weekend) if state.active_days >= self.settings.warmup_days else 0
        if late:
            today.counts["off_hours"] = float(late)
        else:
            today.counts.pop("off_hours", None)
        counts = today.counts
        contributions: list[Contribution] = []
        by_family: dict[str, list[float]] = {}
        stages: set[str] = set()
        novel = state.active_days >= self.settings.novelty_days
        for name, value in counts.items():
            feature = BY_NAME.get(name)
            if feature is None or value <= 0 or (feature.novelty and not novel):
                continue
            occurrence, magnitude = self.surprise(state, peers, group, name, value)
            per_sd = EXFILTRATION_BITS_PER_SD if feature.family == EXFILTRATION else BITS_PER_SD
            points = self._points(name, occurrence + per_sd * magnitude)
            if points <= 0:
                continue
            own = state.stats.get(name)
            last = None if own is None or own[NZ] <= 0 else day.toordinal() - int(own[LAST])
            peer = peers.feature(group, name)
            contributions.append(
                Contribution(
                    feature=name,
                    value=value,
                    usual=state.usual(name),
                    share=state.share(name),
                    peer_usual=0.0 if peer is None else peer.median,
                    points=points,
                    occurrence_bits=occurrence,
                    magnitude_sd=magnitude,
                    last_seen_days_ago=last,
                    history_days=state.active_days,
                    event_ids=list(today.evidence.get(name, ())),
                )
            )
        if not CORROBORATING.isdisjoint(counts):
            contributions = _corroborated(contributions)
        for rise in self.rises(state, counts):
            points = self._points(rise.feature, rise.bits)
            if points <= 0:
                continue
            base = BY_NAME[rise.feature].rise_of or rise.feature
            contributions.append(
                Contribution(
                    feature=rise.feature,
                    value=rise.total,
                    usual=rise.usual,
                    peer_usual=0.0,
                    points=points,
                    occurrence_bits=rise.streak,
                    magnitude_sd=rise.sd,
                    last_seen_days_ago=None,
                    history_days=state.active_days,
                    event_ids=list(today.evidence.get(base, ())),
                    days=rise.days,
                    share=rise.share,
                    hits=rise.hits,
                )
            )
        modifiers: dict[str, float] = {}
        given = self._feedback_on(state) if self.feedback else None
        if given and (in_day := in_force(given, state.tz, day)):
            contributions = _with_feedback(contributions, in_day, modifiers)
        for c in contributions:
            feature = BY_NAME[c.feature]
            by_family.setdefault(feature.family, []).append(c.points)
            if feature.stage is not None and c.points >= STAGE_MIN_POINTS:
                stages.add(feature.stage)
        capped = self._capped(by_family, today.sigma, modifiers) if by_family or today.sigma else 0.0
        bonus = self._sequences(state, today.day, stages, watchlists, modifiers)
        multiplier = 1.0
        for name in watchlists:
            factor = self.settings.watchlists.get(name, 1.0)
            if factor != 1.0:
                modifiers[f"watchlist:{name}"] = factor
                multiplier *= factor
        points = (capped + bonus) * multiplier if capped + bonus > 0 else 0.0
        risk = self.decayed(state, today.day) + points
        contributions.sort(key=lambda c: -c.points)
        return DayScore(state.key, state.kind, day, points, risk, contributions, modifiers, watchlists, today.sigma)

    def _feedback_on(self, state: EntityState) -> list[CauseFeedback]:
        """The feedback on causes that covers the entity: given on it, its peer group or its department."""
        return [
            item for key in holders(state.key, state.group, state.department) for item in self.feedback.get(key, ())
        ]

    def _capped(
        self, by_family: dict[str, list[float]], sigma: list[tuple[str, str, float]], modifiers: dict[str, float]
    ) -> float:
        """The day's points summed by family (after the strongest of a family, its features at `FAMILY_REST`) and
        capped per family; the overlaps and caps applied go into `modifiers`."""
        families = dict.fromkeys(FAMILIES, 0.0)
        for family, values in by_family.items():
            strongest = max(values)
            rest = sum(values) - strongest
            families[family] += strongest + FAMILY_REST * rest
            if rest > 0:
                modifiers[f"overlap:{family}"] = (1 - FAMILY_REST) * rest
        families["sigma"] += sum(points for _, _, points in sigma)
        capped = 0.0
        for family, points in families.items():
            cap = self.settings.family_caps.get(family, math.inf)
            if points > cap:
                modifiers[f"cap:{family}"] = points - cap
            capped += min(points, cap)
        return capped

    def _sequences(
        self, state: EntityState, day: int, stages: set[str], watchlists: list[str], modifiers: dict[str, float]
    ) -> float:
        if not stages:  # every sequence ends with a stage of today's
            return 0.0
        window = {
            stage: last for stage, last in state.stages.items() if 0 <= day - last <= SEQUENCE_WINDOW_DAYS
        } | dict.fromkeys(stages, day)
        bonus = 0.0
        if "exfiltrate" in stages and "collect" in window and window["collect"] <= day:
            bonus += SEQUENCE_POINTS["collect_exfiltrate"]
            modifiers["sequence:collect->exfiltrate"] = SEQUENCE_POINTS["collect_exfiltrate"]
            if "stage" in window and window["collect"] <= window["stage"] <= day:
                bonus += SEQUENCE_POINTS["staged"]
                modifiers["sequence:collect->stage->exfiltrate"] = SEQUENCE_POINTS["staged"]
        if "delete" in stages and "exfiltrate" in window:
            bonus += SEQUENCE_POINTS["exfiltrate_delete"]
            modifiers["sequence:exfiltrate->delete"] = SEQUENCE_POINTS["exfiltrate_delete"]
        if stages & {"collect", "exfiltrate"} and {"departing", "on_notice"} & set(watchlists):
            bonus += SEQUENCE_POINTS["departure_data"]
            modifiers["sequence:departure->data movement"] = SEQUENCE_POINTS["departure_data"]
        if "collect" in stages and "takeover" in stages:
            bonus += SEQUENCE_POINTS["takeover_collect"]
            modifiers["sequence:takeover->collect"] = SEQUENCE_POINTS["takeover_collect"]
        return bonus

    @staticmethod
    def rank_key(score: DayScore) -> tuple[float, float]:
        """How a day's ranking orders entities: the day's own points plus the risk carried from earlier days, the
        carried part counting at most as much as the day's own points (so people already surfaced on earlier days
        do not crowd out fresh evidence, while small acts on consecutive days still add up); carried risk breaks ties.
        """
        carried = max(0.0, score.risk - score.points)
        return score.points + min(carried, score.points), score.risk

    def decayed(self, state: EntityState, day: int) -> float:
        """The entity's risk carried into `day` (ordinal)."""
        if state.risk <= 0:
            return 0.0
        return float(state.risk * self.decay_per_day ** max(0, day - state.risk_day))

    def stages_of(self, score: DayScore) -> set[str]:
        """The sequence stages a score shows anomalous activity in."""
        return {
            stage
            for c in score.contributions
            if c.points >= STAGE_MIN_POINTS and (stage := BY_NAME[c.feature].stage) is not None
        }
