"""Event sources: how a source's records map to the envelope, the Sigma logsource they carry, the pipeline its rules
go through, and the sources every installation has.

A plain dataclass, not a settings model: the settings (`custodes.config`) validate it where a configuration file
or an environment override declares sources, and commands that read no configuration (`custodes rules match
--source cloudtrail` with neither) take a built-in source without loading the settings models (`builtin_source`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from custodes.model import LogSource

ENV_PREFIX: Final = "CUSTODES_"
DEFAULT_CONFIG: Final = Path("custodes.yaml")
DATABASE_URL_ENV: Final = "CUSTODES_DATABASE_URL"
"""A shortcut for `database.url` among the environment overrides."""

SourceFormatName = Literal[
    "okta",
    "cloudtrail",
    "entra_signin_graph",
    "entra_signin_diagnostic",
    "entra_audit_graph",
    "entra_audit_diagnostic",
    "azure_activity",
    "gcp_audit",
    "google_workspace",
    "github",
    "m365",
    "auditd",
    "teleport",
    "vault",
    "sudo",
    "windows",
    "generic",
]
"""The record formats Custodes reads (see `custodes.detections.sigma.pipelines.FORMATS`)."""


@dataclass(frozen=True)
class SourceSettings:
    """A configured event source: its Sigma logsource, how its records map to the envelope, and the pySigma
    pipeline that fits rules to its records.

    - `format`: how records map to the envelope;
    - `pipeline`: the field-mapping pipeline for rules matched against the source, a format name or `none`
      (default: the format's own);
    - `product`, `service`, `category`: the Sigma logsource its events carry (default: the format's);
    - `fields`: generic format only, envelope field -> dotted path in the record (id, time, actor, ...).
    """

    __pydantic_config__ = {"extra": "forbid"}

    format: SourceFormatName
    pipeline: SourceFormatName | Literal["none"] | None = None
    product: str | None = None
    service: str | None = None
    category: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def logsource(self) -> LogSource:
        """The Sigma logsource this source's events carry: the declared one, else the format's."""
        if self.product is None and self.service is None and self.category is None:
            from custodes.detections.sigma.pipelines import FORMATS

            known = FORMATS.get(self.format)
            default = known.logsource if known is not None else LogSource()
            if default.service is None or not default.service.endswith("*"):
                return default
            return LogSource(default.product, None, default.category)
        return LogSource(self.product, self.service, self.category)

    @property
    def pipeline_name(self) -> str:
        """The name of the pipeline rules are processed with for this source (`none` for no pipeline)."""
        return self.pipeline or self.format


DEFAULT_SOURCES: Final = {
    "okta": SourceSettings(format="okta", product="okta", service="okta"),
    "cloudtrail": SourceSettings(format="cloudtrail", product="aws", service="cloudtrail"),
}
"""The sources every installation has (a configuration may declare more, or redefine these)."""


def config_file(path: Path | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The configuration file to read (given, else `CUSTODES_CONFIG`, else `custodes.yaml`), and whether it was
    named (a named file must exist; the default one is read only if it does)."""
    named = path is not None or "CUSTODES_CONFIG" in environ
    return (path if path is not None else Path(environ.get("CUSTODES_CONFIG", DEFAULT_CONFIG))), named


def is_override(name: str) -> bool:
    """Whether environment variable `name` overrides a setting: `CUSTODES_<SECTION>__<KEY>`, `CUSTODES_DATABASE_URL`."""
    return name == DATABASE_URL_ENV or (name.startswith(ENV_PREFIX) and "__" in name)


def builtin_source(path: Path | None, name: str, environ: Mapping[str, str] = os.environ) -> SourceSettings | None:
    """Built-in source `name` when no configuration applies (no file to read, no override in `environ`): what the
    settings would give, without loading them. None when the settings must be loaded to say."""
    file, named = config_file(path, environ)
    if named or file.exists() or any(is_override(variable) for variable in environ):
        return None
    return DEFAULT_SOURCES.get(name)
