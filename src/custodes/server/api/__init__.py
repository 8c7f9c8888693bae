"""The REST API: each module declares its endpoints; importing this package registers them all."""

from custodes.server.api import (
    cases,
    catalog,
    connectors,
    entities,
    eventtime,
    evidence,
    feedback,
    findings,
    manage,
    meta,
    reports,
    risk,
    runs,
    sessions,
)

__all__ = [
    "cases",
    "catalog",
    "connectors",
    "entities",
    "eventtime",
    "evidence",
    "feedback",
    "findings",
    "manage",
    "meta",
    "reports",
    "risk",
    "runs",
    "sessions",
]
