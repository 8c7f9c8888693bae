"""Schema migrations through Alembic, on the store's own async connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged migrations, bound to `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "heads") -> None:
    """Bring the schema up to `revision`, every branch head by default (synchronous; via `run_sync`)."""
    command.upgrade(alembic_config(connection), revision)
