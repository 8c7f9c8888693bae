"""The roles of a cluster (`custodes serve --role receiver|worker|runner`)."""

from __future__ import annotations

import asyncio

from custodes.config import Role
from custodes.errors import ConfigError
from custodes.services import Services


async def serve_role(services: Services, role: Role, stop: asyncio.Event) -> None:
    """Run one role of a cluster until `stop` is set."""
    raise ConfigError(f"the {role.value} role is not available in this build")
