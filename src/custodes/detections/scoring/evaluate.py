"""Evaluating behaviour scoring against labels: recall at daily budgets, percentiles, delays, false findings.

Events are read from files the file connector reads (merged in time order), scored by the same engine the pipeline
uses, and each closed day's ranking is compared with the labelled malicious user-days. An incident is caught when
one of its entities ranks within the budget on a malicious day no later than the incident's last malicious day.
"""

from __future__ import annotations

import csv
import heapq
import io
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson

from custodes.config import ScoringSettings
from custodes.connectors.cert import RECORD_KINDS, cert_times, is_answers, is_csv, quoted
from custodes.connectors.envelope import parse_time
from custodes.connectors.files import file_bytes, is_cert_csv, iter_records, text_lines
from custodes.detections.scoring.cert import cert_answers
from custodes.detections.scoring.engine import ScoringEngine, review_places
from custodes.detections.scoring.explain import sentences
from custodes.detections.scoring.features import record_time
from custodes.detections.scoring.identity import IdentityResolver, load_directory, zone_of, zone_warning
from custodes.detections.scoring.risk import DayScore
from custodes.detections.scoring.timesort import in_time_order
from custodes.errors import CustodesError
from custodes.model import Event, LogSource, utcnow
from custodes.timewindow import TimeWindow

FIXED_BUDGETS = (25, 50, 100)
TRUE_FINDING_GRACE_DAYS = 7
PROGRESS_EVENTS = 10_000
LABEL_COLUMNS = ("person", "start", "end")
"""The columns every labels CSV needs (incident, scenario, role and kinds are optional)."""
NO_SOURCE = LogSource()


@dataclass(slots=True)
class LabelRow:
    """One labelled malicious interval."""

    incident: str
    scenario: str
    person: str
    role: str
    start: datetime
    end: datetime
    kinds: frozenset[str] = frozenset()
    """The kinds of record the acts are in (CERT: logon, device, http, email, file); empty: not said."""


class RankedDay(NamedTuple):
    """A labelled malicious user-day on a closed date: its scenario, rank (None: unranked) and percentile."""

    scenario: str
    rank: int | None
    percentile: float
    user_day: tuple[str, date]


@dataclass(slots=True)
class InData:
    """The measures of the labelled malicious user-days whose acts are in records of the kinds the files scored
    hold, where some are not (a CERT web log's job-site visits, say, when only logons and removable media are
    scored)."""

    kinds: list[str]
    """The kinds of record the files scored hold."""
    malicious_user_days: int
    recall: float
    """Share of those user-days ranked within the daily budget."""
    mean_percentile: float

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return {
            "kinds": self.kinds,
            "malicious_user_days": self.malicious_user_days,
            "recall_at_budget": round(self.recall, 4),
            "mean_percentile": round(self.mean_percentile, 3),
        }


@dataclass(slots=True)
class BestDay:
    """An incident's best-ranked malicious day: what its person's score held, and the day's own points of the
    places within the budget that it did not reach (or reached)."""

    day: date
    rank: int
    points: float
    risk: float
    budget_points: tuple[float, float]
    """The day's own points of the places within the budget: the lowest, the highest."""
    reasons: list[str]
    """The score's explanation, strongest first (`explain.sentences`)."""

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return {
            "day": self.day.isoformat(),
            "rank": self.rank,
            "points": round(self.points, 3),
            "risk": round(self.risk, 3),
            "budget_points": [round(value, 3) for value in self.budget_points],
            "reasons": self.reasons,
        }


@dataclass(slots=True)
class IncidentResult:
    """How one incident fared."""

    incident: str
    scenario: str
    entities: list[str]
    first_day: date
    last_day: date
    best_rank: int | None = None
    detected: date | None = None
    finding: date | None = None
    best_day: BestDay | None = None
    """Its best-ranked malicious day (the first of them on a tie), explained."""

    @property
    def caught(self) -> bool:
        """Ranked within the budget on a malicious day, before the incident ended."""
        return self.detected is not None

    @property
    def delay_days(self) -> int | None:
        """Days from the first malicious act to detection."""
        return None if self.detected is None else (self.detected - self.first_day).days


@dataclass(slots=True)
class ScenarioResult:
    """How the incidents of one scenario fared together."""

    scenario: str
    incidents: int = 0
    caught: int = 0
    malicious_user_days: int = 0
    within_budget: int = 0
    """Malicious user-days ranked within the daily budget."""
    percentiles: list[float] = field(default_factory=list)
    in_data: InData | None = None
    """The measures of the scenario's days with acts in the files scored, where some have none there."""

    @property
    def recall(self) -> float:
        """Share of the scenario's malicious user-days ranked within the daily budget."""
        return self.within_budget / self.malicious_user_days if self.malicious_user_days else 0.0

    @property
    def mean_percentile(self) -> float:
        """Mean percentile of the scenario's malicious user-days on closed dates (0 where unranked)."""
        return sum(self.percentiles) / len(self.percentiles) if self.percentiles else 0.0


@dataclass(slots=True)
class Evaluation:
    """The report of `custodes eval scoring`."""

    population: int
    days: int
    events: int
    seconds: float
    budget: int
    malicious_user_days: int
    recall: dict[int, float]
    mean_percentile: float
    incidents: list[IncidentResult]
    false_findings: int
    true_findings: int
    catchable: int
    percentiles: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scenarios: list[ScenarioResult] = field(default_factory=list)
    """Each scenario's incidents, caught, recall at the budget and mean percentile (labels name them)."""
    in_data: InData | None = None
    """The measures of the malicious user-days with acts in the files scored, where some have none there."""

    @property
    def false_findings_per_1000_user_days(self) -> float:
        """False findings per 1,000 users per day."""
        return 1000.0 * self.false_findings / max(1, self.population * self.days)

    @property
    def caught(self) -> int:
        """Incidents caught within the budget."""
        return sum(1 for i in self.incidents if i.caught)

    def to_json(self) -> dict[str, Any]:
        """Serialisable form (recall and mean percentile are null without malicious user-days to measure)."""
        labelled = self.malicious_user_days > 0
        return {
            "population": self.population,
            "days": self.days,
            "events": self.events,
            "events_per_second": round(self.events / self.seconds) if self.seconds else None,
            "budget": self.budget,
            "malicious_user_days": self.malicious_user_days,
            "recall": {str(k): round(v, 4) if labelled else None for k, v in self.recall.items()},
            "mean_percentile": round(self.mean_percentile, 3) if labelled else None,
            "incidents_caught": self.caught,
            "incidents_catchable": self.catchable,
            "incidents": [
                {
                    "incident": i.incident,
                    "scenario": i.scenario,
                    "caught": i.caught,
                    "best_rank": i.best_rank,
                    "delay_days": i.delay_days,
                    "finding": None if i.finding is None else i.finding.isoformat(),
                    "best_day": None if i.best_day is None else i.best_day.to_json(),
                }
                for i in self.incidents
            ],
            "false_findings": self.false_findings,
            "true_findings": self.true_findings,
            "false_findings_per_1000_user_days": round(self.false_findings_per_1000_user_days, 4),
            "scenarios": [
                {
                    "scenario": s.scenario,
                    "incidents": s.incidents,
                    "caught": s.caught,
                    "malicious_user_days": s.malicious_user_days,
                    "recall_at_budget": round(s.recall, 4),
                    "mean_percentile": round(s.mean_percentile, 3),
                    "in_data": None if s.in_data is None else s.in_data.to_json(),
                }
                for s in self.scenarios
            ],
            "in_data": None if self.in_data is None else self.in_data.to_json(),
            "warnings": self.warnings,
        }


def _best_day(day: date, rank: int, ranking: list[DayScore], budget: int) -> BestDay:
    """The explanation of the score at `rank` (from 0) of a day's `ranking`, beside the budget's places."""
    score = ranking[rank]
    within = [place.points for place in ranking[:budget]]
    return BestDay(day, rank + 1, score.points, score.risk, (min(within), max(within)), sentences(score))


def most_catchable(chances: Mapping[str, Collection[date]], budget: int) -> int:
    """The most incidents any ranking could catch with `budget` places a day, each incident on one of its
    malicious days (`chances`): a maximum matching of incidents to days' places (augmenting paths).

    A bound on `Evaluation.caught`: where incidents crowd the same days beyond the budget, no ranking catches
    them all, and the report says so rather than counting it against the engine alone.
    """
    taken: dict[date, list[str]] = defaultdict(list)

    def place(incident: str, seen: set[date]) -> bool:
        for day in chances[incident]:
            if day in seen:
                continue
            seen.add(day)
            holders = taken[day]
            if len(holders) < budget:
                holders.append(incident)
                return True
            for n, holder in enumerate(holders):
                if place(holder, seen):
                    holders[n] = incident
                    return True
        return False

    return sum(1 for incident in chances if place(incident, set()))


def load_labels(path: Path, *, dataset: str | None = None, warnings: list[str] | None = None) -> list[LabelRow]:
    """Labels from JSON (a list, or {"labels": [...]}), CSV with incident, scenario, person, role, start, end, or
    the CERT datasets' answers (`insiders.csv`, or the folder holding it, for the release `dataset`)."""
    if path.is_dir():
        if not (path / "insiders.csv").is_file():
            raise CustodesError.at(path, "a labels folder is the CERT answers folder, with insiders.csv; none here")
        path = path / "insiders.csv"
    try:
        data = file_bytes(path)
    except OSError as exc:
        raise CustodesError.at(path, f"cannot read labels: {exc.strerror}") from None
    rows: list[dict[str, Any]]
    answers = False
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
        rows = list(reader)
        answers = is_answers(reader.fieldnames)
        if answers:
            rows = cert_answers(path, rows, dataset, warnings)
        else:
            _label_header(path, reader.fieldnames)
    else:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CustodesError.at(path, f"invalid JSON: {exc.msg}") from None
        if isinstance(body, dict) and "labels" not in body:
            raise CustodesError.at(path, 'a JSON object of labels holds them under "labels": {"labels": [...]}')
        rows = body["labels"] if isinstance(body, dict) else body
        if not isinstance(rows, list):
            raise CustodesError.at(path, 'labels are a JSON list of objects, or {"labels": [...]}')
    if dataset is not None and not answers:
        raise CustodesError.at(path, "--dataset names a CERT release, but these labels are not a CERT answers list")
    labels = []
    for number, row in enumerate(rows, start=1):
        where = f"line {number + 1}" if path.suffix.lower() == ".csv" and not answers else f"label #{number}"
        if not isinstance(row, dict):
            raise CustodesError.at(path, f"{where}: a label is an object with person, start and end")
        person = str(_label_field(path, where, row, "person"))
        label = LabelRow(
            incident=str(row.get("incident") or person),
            scenario=str(row.get("scenario") or "-"),
            person=person,
            role=str(row.get("role") or "insider"),
            start=_label_time(path, where, row, "start"),
            end=_label_time(path, where, row, "end"),
            kinds=_label_kinds(path, where, row),
        )
        if label.end < label.start:
            raise CustodesError.at(
                path,
                f"{where} ({label.person}): end {label.end.isoformat()} is before start "
                f"{label.start.isoformat()}; fix the interval",
            )
        labels.append(label)
    if not labels and warnings is not None:
        warnings.append(
            f"{path} holds no labels: only false findings are measured (recall, percentiles and incidents need "
            "malicious user-days)"
        )
    return labels


def _label_header(path: Path, header: Sequence[str] | None) -> None:
    """Refuse a labels CSV whose header lacks a column every label needs (an empty file, another CSV, a binary)."""
    missing = [name for name in LABEL_COLUMNS if name not in (header or ())]
    if missing:
        raise CustodesError.at(
            path,
            f"not a labels CSV: its header lacks {', '.join(missing)} (line 1 holds {quoted(header)}); give a CSV with "
            "incident, scenario, person, role, start, end, or a CERT dataset's answers (insiders.csv)",
        )


def _label_field(path: Path, where: str, row: dict[str, Any], name: str) -> Any:
    value = row.get(name)
    if value is None or value == "":
        raise CustodesError.at(path, f"{where}: {name} is missing; every label needs person, start and end")
    return value


def _label_kinds(path: Path, where: str, row: dict[str, Any]) -> frozenset[str]:
    value = row.get("kinds") or []
    names = value.replace(",", " ").replace(";", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CustodesError.at(
            path, f'{where}: kinds {value!r} is not a list of record kinds; write them as ["http", "device"]'
        )
    return frozenset(name.strip().lower() for name in names if name.strip())


def _label_time(path: Path, where: str, row: dict[str, Any], name: str) -> datetime:
    value = _label_field(path, where, row, name)
    try:
        return parse_time(value)
    except (ValueError, TypeError, OverflowError, OSError):
        raise CustodesError.at(
            path, f"{where}: {name} {value!r} is not a time; write ISO 8601 (2024-03-04T09:00:00Z) or epoch seconds"
        ) from None


SKIPPED = {
    "unreadable": "not a JSON object",
    "bad_row": "not a row of the CERT file's kind",
    "bad_csv": "not a CSV row",
    "untimed": "without a time",
    "outside": "with a time outside the accepted window (custodes.timewindow)",
}
"""Why `_records` skips a record, as the warning says it."""


@dataclass(slots=True)
class Skipped:
    """The records of one file that `_records` skipped, by reason (`SKIPPED`), and the first malformed line's own
    warning."""

    counts: Counter[str] = field(default_factory=Counter)
    first: str | None = None

    def warning(self, path: Path) -> str | None:
        """What to tell of them (None: none were skipped)."""
        parts = [f"{self.counts[reason]} {text}" for reason, text in SKIPPED.items() if self.counts[reason]]
        if not parts:
            return None
        example = f" (the first: {self.first})" if self.first else ""
        return f"{path}: {self.counts.total()} records were not scored: {', '.join(parts)}{example}"


def _records(
    path: Path, skipped: Skipped | None = None, kinds: set[str] | None = None
) -> Iterator[tuple[datetime, int, Event]]:
    """(time, record number, event) of a log file or CERT CSV, as they stand in the file; records that are not
    objects (rows not of their CERT file's kind), without a time or with one outside the default ingest window
    (custodes.timewindow) are skipped, and counted in `skipped`. A CERT CSV's kinds of record go into `kinds`."""
    tag = path.name
    window, now = TimeWindow(), utcnow()
    cert = is_cert_csv(path)
    unreadable = "bad_row" if cert else "bad_csv" if is_csv(path) else "unreadable"
    tally = Skipped() if skipped is None else skipped
    for number, record, warning in iter_records(path):
        if not isinstance(record, dict):
            tally.counts[unreadable] += 1
            tally.first = tally.first or (warning or "").removesuffix("; kept as text") or None
            continue
        when = record_time(record)
        if when is None or not window.accepts(when, now):
            tally.counts["untimed" if when is None else "outside"] += 1
            continue
        if cert and kinds is not None:
            kinds.add(RECORD_KINDS[record["event"]["category"][0]])
        yield when, number, Event(f"{tag}:{number}", when, tag, NO_SOURCE, record)


def out_of_order(path: Path) -> int:
    """How many records of a file are earlier than a record before them."""
    if is_cert_csv(path):
        with text_lines(path) as lines:
            return _late(cert_times(lines))  # the date column alone: a bad row is reported by the reading pass
    return _late(when for when, _, _ in _records(path))


def _late(times: Iterable[Any]) -> int:
    late = 0
    latest = None
    for when in times:
        if latest is not None and when < latest:
            late += 1
        else:
            latest = when
    return late


class Repeats:
    """Records read again (the same record at the same time: exports that overlap, a record repeated), which the
    store would keep once (an event's id is the vendor's, else its content's): only records of one time are compared,
    so what is kept is bounded by the most records of one time."""

    __slots__ = ("count", "first", "seen", "time")

    def __init__(self) -> None:
        self.count = 0
        self.time: datetime | None = None
        self.first: Any = None
        self.seen: set[bytes] | None = None

    def repeated(self, when: datetime, record: Any) -> bool:
        """Whether `record` at `when` repeats one read before it (records arrive in time order)."""
        if when != self.time:
            self.time, self.first, self.seen = when, record, None
            return False
        if self.seen is None:  # a second record of this time: the first is compared from now on
            self.seen = {orjson.dumps(self.first, option=orjson.OPT_SORT_KEYS)}
        content = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        if content in self.seen:
            self.count += 1
            return True
        self.seen.add(content)
        return False


def read_events(
    paths: Sequence[Path], warnings: list[str] | None = None, kinds: set[str] | None = None
) -> Iterator[Event]:
    """Events from log files, merged in time order; a file not in time order is sorted (in bounded memory:
    `timesort`), a file given twice is read once, a record read again (`Repeats`) is scored once, and records that
    cannot be scored are skipped, each with a warning. The kinds of record read from CERT CSVs (logon, device, http,
    email, file) go into `kinds`."""
    names: dict[Path, list[Path]] = {}  # each file's names, in the order given
    for path in paths:
        names.setdefault(path.resolve(), []).append(path)
    distinct = [given[0] for given in names.values()]
    again = [str(given[0]) for given in names.values() if len(given) > 1]
    if warnings is not None and again:
        warnings.append(f"files given more than once were read once: {', '.join(again)}")
    streams: list[Iterator[tuple[datetime, int, Event]]] = []
    skipped = {path: Skipped() for path in distinct}
    for path in distinct:
        late = out_of_order(path)
        records = _records(path, skipped[path], kinds)
        if late:
            if warnings is not None:
                warnings.append(f"{path}: {late} records out of time order; the file was sorted by time")
            streams.append(in_time_order(records, NO_SOURCE))
        else:
            streams.append(records)
    repeats = Repeats()
    for when, _, event in heapq.merge(*streams, key=lambda item: item[0]):
        if not repeats.repeated(when, event.raw):
            yield event
    if warnings is not None:
        warnings += [text for path in distinct if (text := skipped[path].warning(path))]
        if repeats.count:
            warnings.append(
                f"{repeats.count} records repeat a record read before them (the same record at the same time: "
                "exports that overlap, or a record written twice) and were scored once"
            )


def evaluate(
    paths: Sequence[Path],
    labels: list[LabelRow],
    settings: ScoringSettings,
    *,
    budget_share: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Score the events with a fresh engine and measure it against the labels.

    The budget is the engine's daily review budget (`review_budget`, or `budget_share` in its place): the ranking
    evaluated is the one the engine orders for that budget. `progress` is given the count of events read so far,
    every `PROGRESS_EVENTS` and at the end.
    """
    if budget_share is not None:
        if not 0 < budget_share <= 1:
            raise CustodesError(
                f"--budget-share {budget_share} is out of range: a share of people above 0, at most 1 (0.005 is 0.5 %)"
            )
        settings = settings.model_copy(update={"review_budget": budget_share})
    people = load_directory(settings.directory) if settings.directory is not None else []
    resolver = IdentityResolver(people, settings.identities)
    default_zone = ZoneInfo(settings.default_timezone)
    incidents: dict[str, IncidentResult] = {}
    malicious: dict[tuple[str, date], str] = {}
    acts_in: dict[tuple[str, date], set[str]] = defaultdict(set)
    for label in labels:
        key = resolver.resolve(label.person)[0]
        person = resolver.person(key)
        zone = zone_of(person, default_zone)
        day = label.start.astimezone(zone).date()
        last = label.end.astimezone(zone).date()
        result = incidents.get(label.incident)
        if result is None:
            result = incidents[label.incident] = IncidentResult(label.incident, label.scenario, [], day, last)
        if key not in result.entities:
            result.entities.append(key)
        result.first_day = min(result.first_day, day)
        result.last_day = max(result.last_day, last)
        while day <= last:
            malicious[(key, day)] = label.incident
            acts_in[(key, day)] |= label.kinds
            day += timedelta(days=1)
    population = max(1, sum(1 for p in people if p.kind == "person"))
    budget = review_places(population, settings.review_budget)
    budgets = sorted({*FIXED_BUDGETS, budget})
    # Every measure of the whole and of each scenario is read from the labelled user-days on closed dates.
    ranked: list[RankedDay] = []
    closed: list[date] = []
    labelled_days: dict[date, list[tuple[str, str]]] = defaultdict(list)
    for (key, day), incident in malicious.items():
        labelled_days[day].append((key, incident))

    def on_ranking(day: date, ranking: list[DayScore]) -> None:
        closed.append(day)
        wanted = labelled_days.get(day)
        if not wanted:
            return
        size = max(population, len(ranking))
        position = {score.entity: rank for rank, score in enumerate(ranking) if score.risk > 0}
        for key, incident in wanted:
            rank = position.get(key)
            result = incidents[incident]
            percentile = 0.0 if rank is None else 100.0 * (size - 1 - rank) / max(1, size - 1)
            ranked.append(RankedDay(result.scenario, rank, percentile, (key, day)))
            if rank is None:
                continue
            if result.best_rank is None or rank + 1 < result.best_rank:
                result.best_rank = rank + 1
                result.best_day = _best_day(day, rank, ranking, budget)
            if rank < budget and result.detected is None and day <= result.last_day:
                result.detected = day

    engine = ScoringEngine(settings, resolver, on_ranking=on_ranking)
    warnings = [text] if (text := zone_warning(people, settings.default_timezone)) is not None else []
    started = time.perf_counter()
    count = 0
    kinds: set[str] = set()
    before = len(warnings)
    for event in read_events(paths, warnings, kinds):
        engine.observe(event)
        count += 1
        if progress is not None and count % PROGRESS_EVENTS == 0:
            progress(count)
    engine.flush()
    if progress is not None:
        progress(count)
    if not count:
        names = ", ".join(str(path) for path in paths)
        why = "".join(f"\n  {text}" for text in warnings[before:])  # what was read and skipped, and why
        raise CustodesError(f"no events in {names}: nothing to score; give the files the events are in{why}")
    seconds = time.perf_counter() - started
    unknown = sorted(
        {
            label.person
            for label in labels
            if (key := resolver.resolve(label.person)[0]) not in engine.states and resolver.person(key) is None
        }
    )
    if unknown:
        warnings.append(
            f"{len(unknown)} labelled people are in neither the directory nor the events "
            f"(their malicious days count as missed): {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}"
        )
    for source, ignored in sorted(engine.unattributed.items()):
        warnings.append(
            f"{source}: {ignored} records named no actor the scoring engine reads, are of a shape it does not "
            "know, or are no act of a person's own (an Entra non-interactive sign-in) and were not scored"
        )
    for source, failed in sorted(engine.strangers.items()):
        warnings.append(
            f"{source}: {failed} records were failed sign-ins by names the directory does not hold (password "
            "spraying, typos) and were not scored: each name would have been an entity of its own"
        )
    if engine.unreadable:
        warnings.append(
            f"{engine.unreadable} records had a field of a type their vendor does not use (a list for an object, "
            "say) and were not scored"
        )
    if engine.late_events:
        warnings.append(f"{engine.late_events} events arrived after their day had closed and were not scored")
    active = {(score.entity, score.day) for score in engine.take_scores()}
    scored = set(closed)
    unseen = sum(1 for key, day in malicious if day in scored and (key, day) not in active)
    if unseen:
        warnings.append(
            f"{unseen} of {len(malicious)} labelled malicious user-days have no event of the person in the files "
            "scored (they count as missed): their acts are in records not given, or were not recorded"
        )
    outside = sorted(day for _, day in malicious if day not in scored)
    if outside:
        warnings.append(
            f"{len(outside)} of {len(malicious)} labelled malicious user-days (from {outside[0]} to {outside[-1]}) "
            "are on no date the events cover (they count as missed): are the labels of these files' release?"
        )
    dated = {day for _, day in active}
    gaps = {day for day in scored - dated if min(dated) < day < max(dated)} if dated else set()
    if gaps:
        warnings.append(
            f"{len(gaps)} dates between the first and the last event have no event at all (from {min(gaps)} to "
            f"{max(gaps)}): a gap in the files, or a record with a wrong time; they are not counted as days"
        )
    false_findings = true_findings = 0
    by_entity: dict[str, list[IncidentResult]] = defaultdict(list)
    for result in incidents.values():
        for key in result.entities:
            by_entity[key].append(result)
    for finding in engine.take_findings():
        assert finding.entity is not None
        zone = zone_of(resolver.person(finding.entity), default_zone)
        day = finding.first_seen.astimezone(zone).date()
        matched = [r for r in by_entity.get(finding.entity, []) if r.first_day <= day <= r.last_day + timedelta(days=7)]
        if matched:
            true_findings += 1
            for result in matched:
                result.finding = day if result.finding is None else min(result.finding, day)
        else:
            false_findings += 1
    total = len(malicious)
    percentiles = [row.percentile for row in ranked]
    known = kinds if all(is_cert_csv(p) for p in paths) else set()  # a log file's kinds of record are not known
    hidden = {day for day in malicious if acts_in[day] and not acts_in[day] & known} if known else set()
    in_data = _in_data(total, hidden, ranked, budget, known)
    if in_data is not None:
        warnings.append(
            f"{len(hidden)} of {total} labelled malicious user-days have acts only in records of kinds the files "
            f"scored do not hold (they hold {', '.join(in_data.kinds)}): they count as missed; on the other "
            f"{in_data.malicious_user_days}, recall within the top {budget}/day is {100 * in_data.recall:.1f}% and "
            f"the mean percentile {in_data.mean_percentile:.2f}"
        )
    chances: dict[str, set[date]] = {incident: set() for incident in incidents}
    for (_, day), incident in malicious.items():
        if day in scored:
            chances[incident].add(day)
    return Evaluation(
        population=population,
        days=len(dated),  # dates someone had a day on: not the empty date closed before the first
        events=count,
        seconds=seconds,
        budget=budget,
        malicious_user_days=total,
        recall={k: _within(ranked, k) / total if total else 0.0 for k in budgets},
        mean_percentile=sum(percentiles) / len(percentiles) if percentiles else 0.0,
        incidents=sorted(incidents.values(), key=lambda r: r.incident),
        false_findings=false_findings,
        true_findings=true_findings,
        catchable=most_catchable(chances, budget),
        percentiles=percentiles,
        warnings=warnings,
        scenarios=_by_scenario(incidents.values(), malicious, ranked, budget, (hidden, known)),
        in_data=in_data,
    )


def _in_data(
    total: int, hidden: Collection[tuple[str, date]], ranked: Iterable[RankedDay], budget: int, kinds: set[str]
) -> InData | None:
    """The measures of `total` malicious user-days but the `hidden` ones, whose acts are only in records of kinds
    other than the files' (None: none is)."""
    if not hidden:
        return None
    shown = [row for row in ranked if row.user_day not in hidden]
    days = total - len(hidden)
    return InData(
        kinds=sorted(kinds),
        malicious_user_days=days,
        recall=_within(shown, budget) / days if days else 0.0,
        mean_percentile=sum(row.percentile for row in shown) / len(shown) if shown else 0.0,
    )


def _within(ranked: Iterable[RankedDay], budget: int) -> int:
    """How many of the ranked user-days are within the first `budget` places."""
    return sum(1 for row in ranked if row.rank is not None and row.rank < budget)


def _by_scenario(
    incidents: Iterable[IncidentResult],
    malicious: Mapping[tuple[str, date], str],
    ranked: list[RankedDay],
    budget: int,
    apart: tuple[set[tuple[str, date]], set[str]],
) -> list[ScenarioResult]:
    """The measures of each scenario, from its incidents, its labelled user-days and their ranks, and those of its
    days with acts in the files' kinds of record apart (`apart`: the hidden user-days and the files' kinds)."""
    by_incident = {result.incident: result for result in incidents}
    days = Counter(by_incident[incident].scenario for incident in malicious.values())
    hidden, kinds = apart
    results = []
    for scenario in sorted({r.scenario for r in by_incident.values()}):
        rows = [row for row in ranked if row.scenario == scenario]
        unseen = {day for day in hidden if by_incident[malicious[day]].scenario == scenario}
        results.append(
            ScenarioResult(
                scenario=scenario,
                incidents=sum(1 for r in by_incident.values() if r.scenario == scenario),
                caught=sum(1 for r in by_incident.values() if r.scenario == scenario and r.caught),
                malicious_user_days=days[scenario],
                within_budget=_within(rows, budget),
                percentiles=[row.percentile for row in rows],
                in_data=_in_data(days[scenario], unseen, rows, budget, kinds),
            )
        )
    return results
