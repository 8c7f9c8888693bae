"""The REST API: each module declares its endpoints; importing this package registers them all."""

from custodes.server.api import (
    catalog,
    connectors,
    entities,
    eventtime,
    evidence,
    findings,
    manage,
    meta,
    reports,
    risk,
    runs,
    sessions,
)

__all__ = [
    "catalog",
    "connectors",
    "entities",
    "eventtime",
    "evidence",
    "findings",
    "manage",
    "meta",
    "reports",
    "risk",
    "runs",
    "sessions",
]
