"""Builders of the connector kinds that run on a vendor SDK or on local files: ``elasticsearch``, ``splunk``,
``cloudtrail_sqs``, ``cloudtrail_s3``, ``cloudtrail_lookup`` and ``file_tail`` (Teleport, Vault, sudo, auditd).

`build` turns one ``connectors:`` entry into its connector; the source (its format and logsource) comes from
``sources:``, defaulting per kind.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import ValidationError

from custodes.config import ConnectorSettings, Settings
from custodes.connectors import cloudtrail, elasticsearch, filetail, splunk
from custodes.connectors.base import Batch
from custodes.errors import ConfigError
from custodes.model import Event
from custodes.sources import SourceSettings

Builder = Callable[[str, str, SourceSettings, dict[str, Any], dict[str, str]], Any]

BUILDERS: dict[str, tuple[Builder, str]] = {
    "elasticsearch": (elasticsearch.build, "generic"),
    "splunk": (splunk.build, "generic"),
    "cloudtrail_sqs": (cloudtrail.build_queue, "cloudtrail"),
    "cloudtrail_s3": (cloudtrail.build_bucket, "cloudtrail"),
    "cloudtrail_lookup": (cloudtrail.build_lookup, "cloudtrail"),
    "file_tail": (filetail.build, "generic"),
}
"""kind -> (builder, default source name)."""


def build(name: str, entry: ConnectorSettings, settings: Settings) -> Any:
    """The connector of one ``connectors:`` entry of an SDK kind; ConfigError names what is wrong."""
    try:
        builder, default_source = BUILDERS[entry.kind]
    except KeyError:
        raise ConfigError(f"connectors.{name}.kind: {entry.kind!r} is not an SDK connector kind") from None
    implied = filetail.default_source(entry.options) if entry.kind == "file_tail" else None
    source = entry.source or implied or default_source
    builtin = {"generic": SourceSettings(format="generic"), **filetail.DEFAULT_SOURCES}
    source_settings = settings.sources.get(source) or builtin.get(source) or settings.source(source)
    credentials = {key: secret.reveal() for key, secret in entry.credentials.items()}
    try:
        return builder(name, source, source_settings, entry.options, credentials)
    except ValidationError as error:
        problems = "; ".join(
            f"connectors.{name}.options.{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(problems) from None
    except ValueError as error:
        raise ConfigError(f"connectors.{name}: {error}") from None


QueryLanguage = Literal["lucene", "esql", "spl"]
_PLAIN_SPL: Final = re.compile(r'^(\s*[\w.]+\s*=\s*("(?:\\.|[^"\\])*"|[^\s"()]+))+\s*$')


def query_language(entry: ConnectorSettings) -> QueryLanguage:
    """The language a SIEM entry's search is written in: Lucene or ES|QL (elasticsearch), SPL (splunk)."""
    if entry.kind == "splunk":
        return "spl"
    if entry.kind == "elasticsearch":
        return "esql" if entry.options.get("esql") else "lucene"
    raise ConfigError(f"a {entry.kind} connector has no query language: only elasticsearch and splunk ones do")


def narrowed(entry: ConnectorSettings, condition: str) -> ConnectorSettings:
    """A SIEM entry whose search also requires `condition`, written in its `query_language`: ANDed to the Lucene
    query, a ``WHERE`` appended to the ES|QL query, or a search term added to the SPL search."""
    options = dict(entry.options)
    language = query_language(entry)
    if language == "lucene":
        base = str(options.get("query", "*")).strip()
        options["query"] = f"({condition})" if base in ("", "*") else f"({base}) AND ({condition})"
    elif language == "esql":
        options["esql"] = f"{str(options['esql']).rstrip()}\n| WHERE {condition}"
    else:
        base = str(options.get("search", "")).strip()
        options["search"] = f"{base} {condition if _PLAIN_SPL.match(condition) else f'({condition})'}".strip()
    return entry.model_copy(update={"options": options})


async def read_window(connector: Any, start: datetime, end: datetime) -> AsyncIterator[list[Event]]:
    """The events of `[start, end)` a connector's backfill reads (its checkpoint is kept in memory only)."""
    reader = connector.backfill(start, end)
    batch: Batch
    async for batch in reader.batches(None):
        yield [event for event in batch.events if start <= event.time < end]


async def close(connector: Any) -> None:
    """Close an Elasticsearch connector's client (boto3 and splunk-sdk hold no connection to close)."""
    if isinstance(connector, elasticsearch.ElasticsearchConnector):
        await connector.client.close()
