"""How a rule's logsource is matched to an event's: (product, service, category) compared case-insensitively, a
part the rule leaves unset matching anything. The engine routes rules by it, the correlator its correlations."""

from __future__ import annotations

from custodes.model import LogSource

LogsourceKey = tuple[str | None, str | None, str | None]


def logsource_key(logsource: LogSource) -> LogsourceKey:
    """The logsource's product, service and category, lowercased (None where unset)."""
    return _lower(logsource.product), _lower(logsource.service), _lower(logsource.category)


def _lower(part: str | None) -> str | None:
    return part.lower() if part is not None else None


def applies(wanted: LogsourceKey, actual: LogsourceKey) -> bool:
    """Whether what a rule wants (`wanted`) covers events of `actual`: every part it sets is the same."""
    return all(want is None or want == have for want, have in zip(wanted, actual, strict=True))
