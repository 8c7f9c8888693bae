"""Make a compliance report from a store and record that it was made (`report.compliance` in the audit log)."""

from __future__ import annotations

from custodes.config import Settings
from custodes.reports.compliance import build, render
from custodes.reports.measures import Period, Source
from custodes.store import Store


async def produce(store: Store, settings: Settings, framework: str, period: Period, fmt: str, who: str) -> bytes:
    """The report's bytes in `fmt`; the audit entry names who asked, the framework, the period and the format."""
    report = await build(Source(store, settings), framework, period)
    data = render(report, fmt)
    details = {"framework": framework, "from": report["period"]["from"], "to": report["period"]["to"], "format": fmt}
    async with store.transaction() as tx:
        await tx.audit(who, "report.compliance", framework, details)
    return data
