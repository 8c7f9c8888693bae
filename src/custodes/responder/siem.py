"""Evidence from the SIEM: an entity's records in a time window, read through a configured connector.

The connector entry (`connectors.<name>`, kind ``elasticsearch`` or ``splunk``) is narrowed to the entity with a
condition in its own query language, built from the entity's names as quoted literals (escaped, never templated):
``field:"name"`` ORed for Lucene, ``field == "name"`` for ES|QL, ``field="name"`` for SPL. It is then read like a
hunt reads it: the connector's backfill over the window, with its paging, dedup and retries, checkpoint in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from custodes.config import Settings, SiemEvidenceSource
from custodes.connectors import sdk
from custodes.connectors.retry import SourceError
from custodes.errors import ConfigError
from custodes.responder.registry import ActionError

DEFAULT_FIELDS: dict[sdk.QueryLanguage, list[str]] = {
    "lucene": ["user.name", "user.email"],
    "esql": ["user.name"],
    "spl": ["user", "src_user"],
}
"""Fields holding a person's name when `entity_fields` is not set: ECS in Elasticsearch, CIM in Splunk."""


@dataclass(slots=True)
class SiemRecords:
    """What one SIEM returned for the entity: the connector, the query it ran, and its records."""

    connector: str
    query: str
    records: list[dict[str, Any]]


def _quoted(value: str) -> str:
    """A double-quoted literal, as Lucene phrases, ES|QL strings and SPL values all read it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def entity_condition(language: sdk.QueryLanguage, fields: list[str], names: list[str]) -> str:
    """A condition true when any of `fields` equals any of `names`, in `language`."""
    if language == "lucene":
        terms = [f"{field}:{_quoted(name)}" for field in fields for name in names]
    elif language == "esql":
        terms = [f"`{field}` == {_quoted(name)}" for field in fields for name in names]
    else:
        # SPL reads `*` as a wildcard even inside quotes: a name holding one would widen the search.
        terms = [f"{field}={_quoted(name)}" for field in fields for name in names if "*" not in name]
    return " OR ".join(terms)


def entity_names(app: Settings, entity: str) -> list[str]:
    """The entity and every alias that resolves to it (`scoring.identities.aliases`), e.g. a SIEM's short login."""
    aliases = app.scoring.identities.aliases
    return [entity, *sorted(alias for alias, person in aliases.items() if person.casefold() == entity.casefold())]


async def read(
    app: Settings, source: SiemEvidenceSource, entity: str, since: datetime, until: datetime, limit: int
) -> SiemRecords:
    """The entity's records in `[since, until)` from one SIEM; ActionError when it fails or holds over `limit`."""
    entry = app.connectors[source.connector]
    try:
        language = sdk.query_language(entry)
        fields = source.entity_fields or DEFAULT_FIELDS[language]
        condition = entity_condition(language, fields, entity_names(app, entity))
        if not condition:
            raise ActionError(
                f"{entity!r} cannot be searched for exactly in Splunk (it holds a '*')", code="invalid_argument"
            )
        narrowed = sdk.narrowed(entry, condition)
        if language == "spl":  # one export for the whole window: it streams, and evidence is read once
            span = max((until - since).total_seconds(), float(narrowed.options.get("window_seconds", 0)))
            narrowed = narrowed.model_copy(update={"options": {**narrowed.options, "window_seconds": span}})
        query = str(narrowed.options.get("esql") or narrowed.options.get("query") or narrowed.options.get("search"))
        connector = sdk.build(source.connector, narrowed, app)
    except ConfigError as error:
        raise ActionError(f"evidence from {source.connector}: {error}", code="not_configured") from None
    records: list[dict[str, Any]] = []
    try:
        async for events in sdk.read_window(connector, since, until):
            for event in events:
                records.append({"id": event.id, "time": event.time, "source": event.source, "raw": event.raw})
                if len(records) > limit:
                    raise ActionError(
                        f"{source.connector} holds more than {limit} records of {entity} in the window: narrow the "
                        "window or raise responder.evidence.max_events",
                        code="too_large",
                    )
    except SourceError as error:
        raise ActionError(f"evidence from {source.connector}: {error}", code="siem_error") from None
    finally:
        await sdk.close(connector)
    return SiemRecords(source.connector, query, records)
