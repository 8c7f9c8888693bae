"""Builders of the connector kinds that run on a vendor SDK or on local files: ``elasticsearch``, ``splunk``,
``cloudtrail_sqs``, ``cloudtrail_s3``, ``cloudtrail_lookup`` and ``file_tail`` (Teleport, Vault, sudo, auditd).

`build` turns one ``connectors:`` entry into its connector; the source (its format and logsource) comes from
``sources:``, defaulting per kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from custodes.config import ConnectorSettings, Settings, SourceSettings
from custodes.connectors import cloudtrail, elasticsearch, filetail, splunk
from custodes.errors import ConfigError

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
    source = entry.source or default_source
    source_settings = (
        settings.sources.get(source) or SourceSettings(format="generic")
        if source == "generic"
        else settings.source(source)
    )
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
