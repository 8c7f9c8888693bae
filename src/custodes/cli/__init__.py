"""The `custodes` command line: one Typer app; each module here adds a group of commands to it."""

from custodes.cli import (
    access,
    audit,
    cases,
    connectors,
    database,
    evidence,
    hunts,
    playbooks,
    report,
    rules,
    runs,
    scoring,
    service,
)
from custodes.cli.app import app

__all__ = [
    "access",
    "app",
    "audit",
    "cases",
    "connectors",
    "database",
    "evidence",
    "hunts",
    "playbooks",
    "report",
    "rules",
    "runs",
    "scoring",
    "service",
]
