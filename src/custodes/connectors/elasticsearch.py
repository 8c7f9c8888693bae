"""Elasticsearch: point-in-time sweeps with ``search_after`` over an index pattern, behind a durable watermark.

Each poll sweeps ``[watermark - overlap, now - settle]`` in ``(time field, _shard_doc)`` order inside one PIT,
so a page boundary never skips or repeats a document. The checkpoint after every page holds the watermark
(the newest time committed) and the ``_id`` of every document within `overlap` of it: documents indexed late
with an older time are still found, and documents already committed are not sent again. The query is a
Lucene query string (a pushed-down Sigma rule is one too), or an ES|QL query (`esql`): ES|QL has no PIT or
``search_after``, so each page is ``POST /_query`` with the time window and a ``(time, _id)`` keyset appended
(``| WHERE ... | SORT time, _id | LIMIT page_size``, ``METADATA _index, _id`` added to its ``FROM``), and the
same watermark, overlap and ``_id`` dedup apply.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch
from pydantic import Field, field_validator, model_validator

from custodes.config import Section
from custodes.connectors.base import Batch
from custodes.connectors.envelope import iso_millis, parse_time, to_event
from custodes.connectors.exports import hit_record, nested
from custodes.connectors.retry import RetryPolicy, SourceError, Transient, call
from custodes.connectors.runtime import RangeBackfill, recent_ids
from custodes.model import Event, stable_id, utcnow
from custodes.responder.http import retry_delay
from custodes.sources import SourceSettings

log = logging.getLogger(__name__)


class ElasticsearchOptions(Section):
    """Options of an `elasticsearch` connector (`connectors.<name>.options`)."""

    hosts: list[str] = Field(min_length=1, description="cluster URLs")
    index: str = Field(description="index pattern, e.g. logs-*,audit-*")
    query: str = Field(default="*", description="Lucene query string (or a Sigma rule pushed down to Lucene)")
    esql: str | None = Field(default=None, description="an ES|QL query `FROM <pattern> | ...` instead of `query`")
    time_field: str = "@timestamp"
    overlap_seconds: float = Field(default=300.0, ge=0, description="re-read this far behind the watermark")
    settle_seconds: float = Field(default=0.0, ge=0, description="leave the newest seconds for the next poll")
    start: datetime | None = Field(default=None, description="first poll starts here (default: 1 hour ago)")
    page_size: int = Field(default=1000, ge=1, le=10_000)
    keep_alive: str = "2m"
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("esql")
    @classmethod
    def _esql_shape(cls, value: str | None) -> str | None:
        if value is not None:
            esql_parts(value)
        return value

    @model_validator(mode="after")
    def _one_query(self) -> ElasticsearchOptions:
        if self.esql is not None and "query" in self.model_fields_set:
            raise ValueError("`query` (Lucene) and `esql` (ES|QL) are mutually exclusive: set one of them")
        return self


_IDENTIFIER = re.compile(r"[A-Za-z_@][A-Za-z0-9_.@]*")
_FROM = re.compile(r"\s*FROM\s+(?P<sources>.+?)(?:\s+METADATA\s+(?P<metadata>.+?))?\s*$", re.IGNORECASE | re.DOTALL)
_REFUSED = {"STATS", "LIMIT", "SORT", "MV_EXPAND", "KEEP", "DROP", "RENAME", "LOOKUP", "FORK", "INLINESTATS"}


def _pipes(text: str) -> list[str]:
    """The commands of an ES|QL query: split on `|` outside strings and quoted identifiers."""
    parts: list[str] = []
    current: list[str] = []
    at = 0
    while at < len(text):
        if text.startswith('"""', at):
            end = text.find('"""', at + 3)
            end = len(text) if end < 0 else end + 3
        elif text[at] == '"':
            end = at + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            end = min(end + 1, len(text))
        elif text[at] == "`":
            end = text.find("`", at + 1)
            end = len(text) if end < 0 else end + 1
        elif text[at] == "|":
            parts.append("".join(current))
            current = []
            at += 1
            continue
        else:
            end = at + 1
        current.append(text[at:end])
        at = end
    parts.append("".join(current))
    return parts


def esql_parts(text: str) -> tuple[str, list[str], list[str]]:
    """`(sources, metadata fields, the rest of the commands)` of an ES|QL query; ValueError for a shape the
    connector cannot page: it must start with FROM and keep one row per document with its columns."""
    commands = _pipes(text)
    found = _FROM.fullmatch(commands[0])
    if found is None:
        raise ValueError("an ES|QL query for a connector starts with `FROM <index pattern>`")
    metadata = [name.strip() for name in (found.group("metadata") or "").split(",") if name.strip()]
    rest = [command.strip() for command in commands[1:]]
    for command in rest:
        word = command.split(None, 1)[0].upper() if command else ""
        if not word:
            raise ValueError("an ES|QL query has an empty command between pipes")
        if word in _REFUSED:
            raise ValueError(
                f"ES|QL `{word}` is not allowed: the connector pages one row per document in time order and "
                "appends its own WHERE, SORT and LIMIT"
            )
    return found.group("sources").strip(), metadata, rest


def _column(name: str) -> str:
    return name if _IDENTIFIER.fullmatch(name) else "`" + name.replace("`", "``") + "`"


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _transient(error: Exception) -> Exception:
    """Classify an Elasticsearch client error: throttling, 5xx and connection trouble are worth a retry."""
    if isinstance(error, ApiError):
        status = error.meta.status
        kind = _error_type(error)
        if status == 429 or status >= 500:
            headers = {key: value for key, value in error.meta.headers.items()}
            delay = retry_delay(status, headers, now=utcnow().timestamp())
            return Transient(f"HTTP {status} {kind}", delay)
        return SourceError(f"HTTP {status} {kind}: {_reason(error)}")
    if isinstance(error, ConnectionTimeout | TransportConnectionError):
        return Transient(type(error).__name__)
    return error


def _error_type(error: ApiError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("type", ""))
    return ""


def _reason(error: ApiError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        causes = body["error"].get("root_cause") or []
        first = causes[0] if causes and isinstance(causes[0], dict) else body["error"]
        return str(first.get("reason", ""))[:300]
    return ""


@dataclass
class ElasticsearchConnector:
    """Sweeps an index pattern with a query; see the module docstring for the checkpoint."""

    name: str
    source: str
    settings: SourceSettings
    client: AsyncElasticsearch
    options: ElasticsearchOptions
    _: KW_ONLY
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = utcnow

    async def _call(self, where: str, request: Callable[[], Any]) -> Any:
        async def attempt() -> Any:
            try:
                return await request()
            except (ApiError, ConnectionTimeout, TransportConnectionError) as error:
                raise _transient(error) from None

        return await call(f"elasticsearch {where}", attempt, self.policy)

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """One sweep from the watermark (less the overlap) to now (less the settle time)."""
        state = checkpoint or {}
        if "watermark" in state:
            watermark = parse_time(state["watermark"])
        else:
            watermark = self.options.start or self.clock() - timedelta(hours=1)
        seen = {str(k): int(v) for k, v in dict(state.get("seen", {})).items()}
        start = watermark - timedelta(seconds=self.options.overlap_seconds)
        end = self.clock() - timedelta(seconds=self.options.settle_seconds)
        return self._sweep(start, end, watermark, seen)

    def backfill(self, start: datetime, end: datetime) -> EsBackfill:
        """A connector reading `[start, end]` once, under its own checkpoint name."""
        return EsBackfill(self, start, end)

    async def _sweep(
        self, start: datetime, end: datetime, watermark: datetime, seen: dict[str, int], *, final: bool = False
    ) -> AsyncIterator[Batch]:
        """Batches of `[start, end]` in time order; with `final`, a last empty batch marks the range done."""
        if end < start:
            return
        mark = [_ms(watermark)]
        pages = self._esql_pages(start, end) if self.options.esql is not None else self._pit_pages(start, end)
        async for hits in pages:
            yield self._batch(hits, seen, mark)
        if final:
            yield Batch([], {"watermark": _iso(mark[0]), "done": True})

    def _batch(self, hits: list[dict[str, Any]], seen: dict[str, int], mark: list[int]) -> Batch:
        """The events of a page not yet seen, and the checkpoint after it (`seen` and `mark` are updated)."""
        events: list[Event] = []
        for hit in hits:
            at = hit.get("sort", [None])[0]
            stamp = int(at) if isinstance(at, int | float) else mark[0]
            if hit["_id"] in seen:
                continue
            seen[hit["_id"]] = stamp
            mark[0] = max(mark[0], stamp)
            events.append(self._event(hit))
        kept = recent_ids(seen, mark[0] - int(self.options.overlap_seconds * 1000))
        seen.clear()
        seen.update(kept)
        return Batch(events, {"watermark": _iso(mark[0]), "seen": dict(seen)})

    async def _pit_pages(self, start: datetime, end: datetime) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of hits of the Lucene query in `[start, end]`, inside one point in time."""
        opts = self.options
        query = {
            "bool": {
                "filter": [
                    {"range": {opts.time_field: {"gte": iso_millis(start), "lte": iso_millis(end)}}},
                    {"query_string": {"query": opts.query}},
                ]
            }
        }
        sort = [{opts.time_field: {"order": "asc"}}, {"_shard_doc": {"order": "asc"}}]
        opened = await self._call(
            "open point in time",
            lambda: self.client.open_point_in_time(index=opts.index, keep_alive=opts.keep_alive),
        )
        pit_id = str(opened["id"])
        try:
            after: list[Any] | None = None
            while True:
                pit = {"id": pit_id, "keep_alive": opts.keep_alive}
                search = functools.partial(
                    self.client.search, pit=pit, query=query, sort=sort, size=opts.page_size, search_after=after
                )
                response = await self._call("search", search)
                pit_id = str(response.get("pit_id") or pit_id)
                hits = response["hits"]["hits"]
                if not hits:
                    break
                yield hits
                if len(hits) < opts.page_size or hits[-1].get("sort") is None:
                    break
                if not _advances(hits[-1]["sort"], after):
                    log.warning("elasticsearch search: the page cursor did not advance; ending this sweep")
                    break
                after = hits[-1]["sort"]
        finally:
            try:
                await self.client.close_point_in_time(id=pit_id)
            except (ApiError, ConnectionTimeout, TransportConnectionError) as error:
                log.warning("elasticsearch close point in time: %s (it expires by itself)", type(error).__name__)

    def esql_page(self, start: datetime, end: datetime, after: tuple[str, str] | None) -> str:
        """The ES|QL query of one page: the configured query with `_index`, `_id` metadata, the time window,
        the `(time, _id)` keyset after the last row read, the sort and the page size appended."""
        sources, metadata, rest = esql_parts(self.options.esql or "")
        fields = metadata + [name for name in ("_index", "_id") if name not in metadata]
        column = _column(self.options.time_field)
        lower, upper = _string(iso_millis(start)), _string(iso_millis(end))
        window = f"{column} >= TO_DATETIME({lower}) AND {column} <= TO_DATETIME({upper})"
        if after is not None:
            at = f"TO_DATETIME({_string(after[0])})"
            window += f" AND ({column} > {at} OR ({column} == {at} AND _id > {_string(after[1])}))"
        commands = [f"FROM {sources} METADATA {', '.join(fields)}", *rest]
        commands += [f"WHERE {window}", f"SORT {column} ASC, _id ASC", f"LIMIT {self.options.page_size}"]
        return " | ".join(commands)

    async def _esql_pages(self, start: datetime, end: datetime) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of rows of the ES|QL query in `[start, end]` as hits, by keyset on `(time, _id)`."""
        opts = self.options
        after: tuple[str, str] | None = None
        previous: tuple[int, str] | None = None
        while True:
            text = self.esql_page(start, end, after)
            response = await self._call("esql query", functools.partial(self.client.esql.query, query=text))
            names = [str(column["name"]) for column in response["columns"]]
            rows = [dict(zip(names, values, strict=True)) for values in response["values"]]
            if not rows:
                break
            hits: list[dict[str, Any]] = []
            for row in rows:
                doc_id, index, at = row.pop("_id", None), row.pop("_index", None), row.get(opts.time_field)
                if not isinstance(doc_id, str) or not isinstance(at, str):
                    raise SourceError(f"elasticsearch esql: a row without {opts.time_field} or _id")
                hit = {"_index": index, "_id": doc_id, "_source": nested(row), "sort": [_ms(parse_time(at))]}
                hits.append(hit)
            yield hits
            last = rows[-1]
            cursor = (str(last[opts.time_field]), str(hits[-1]["_id"]))
            if len(rows) < opts.page_size:
                break
            key = (hits[-1]["sort"][0], cursor[1])
            if not _advances(key, previous):
                log.warning("elasticsearch esql: the page cursor did not advance; ending this sweep")
                break
            after, previous = cursor, key

    def _event(self, hit: dict[str, Any]) -> Event:
        source, warning = hit_record(hit)
        event = to_event(source, self.settings, self.source)
        event.id = stable_id(self.source, hit.get("_index"), hit["_id"])
        if warning is not None:
            event.warnings.append(warning)
        return event


class EsBackfill(RangeBackfill[ElasticsearchConnector]):
    """One sweep of a fixed range of an Elasticsearch connector; it resumes from its own checkpoint."""

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """The rest of the range after `checkpoint`; nothing once the range was read."""
        state = checkpoint or {}
        if state.get("done"):
            return
        watermark = parse_time(state["watermark"]) if "watermark" in state else self.start
        seen = {str(k): int(v) for k, v in dict(state.get("seen", {})).items()}
        overlap = timedelta(seconds=self.parent.options.overlap_seconds)
        start = max(self.start, watermark - overlap)
        async for batch in self.parent._sweep(start, self.end, watermark, seen, final=True):
            yield batch


def _advances(cursor: Sequence[Any], previous: Sequence[Any] | None) -> bool:
    """Whether a page's keyset cursor is past the one before it. A sweep is sorted ascending, so a cursor that stands
    still or goes back (a broken or hostile server: A -> B -> A) would be paged for ever."""
    if previous is None:
        return True
    try:
        return tuple(cursor) > tuple(previous)
    except TypeError:  # values that do not compare (a sort on a field of mixed kinds): at least it must move
        return list(cursor) != list(previous)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _iso(ms: int) -> str:
    return iso_millis(datetime.fromtimestamp(ms / 1000, UTC))


def build(
    name: str, source: str, settings: SourceSettings, options: dict[str, Any], credentials: dict[str, str]
) -> ElasticsearchConnector:
    """An `elasticsearch` connector from configuration: credentials `api_key`, or `username` and `password`."""
    opts = ElasticsearchOptions.model_validate(options)
    auth: dict[str, Any] = {}
    if "api_key" in credentials:
        auth["api_key"] = credentials["api_key"]
    elif "username" in credentials and "password" in credentials:
        auth["basic_auth"] = (credentials["username"], credentials["password"])
    client = AsyncElasticsearch(opts.hosts, request_timeout=opts.timeout_seconds, max_retries=0, **auth)
    return ElasticsearchConnector(name, source, settings, client, opts)
