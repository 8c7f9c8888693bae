"""The inventory collection and access review that `custodes serve` runs on `access_review.schedule_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from custodes.inventory import review
from custodes.inventory.collect import KINDS, collect_configured
from custodes.inventory.store import load_accounts
from custodes.model import utcnow
from custodes.services import Services

log = logging.getLogger(__name__)


async def collect_and_review(services: Services) -> review.Review:
    """Collect every enabled inventory connector, review the stored accounts and audit the figures
    (``access.review``: counts per finding kind, and the connectors that failed)."""
    settings = services.settings
    outcomes = await collect_configured(settings, services.store, services.http)
    result = review.review(await load_accounts(services.store), settings.access_review, utcnow())
    figures = {
        **result.figures(),
        "accounts": sum(outcome.accounts for outcome in outcomes),
        "failed": {outcome.connector: outcome.error for outcome in outcomes if outcome.error},
    }
    async with services.store.transaction() as tx:
        await tx.audit("custodes:serve", "access.review", None, figures)
    log.info("inventory collected and access reviewed", extra=figures)
    return result


async def review_loop(services: Services, stop: asyncio.Event) -> None:
    """Collect and review now and every `access_review.schedule_seconds` until `stop` (nothing to do without an
    inventory connector or with the schedule off)."""
    every = services.settings.access_review.schedule_seconds
    if every is None or not any(
        entry.enabled and entry.kind in KINDS for entry in services.settings.connectors.values()
    ):
        return
    while not stop.is_set():
        try:
            await collect_and_review(services)
        except Exception as error:  # a failing round is retried on the next one
            log.warning("scheduled inventory collection failed: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
