"""The widths of the store's text columns that incoming data is bounded by before any transaction: the store's
tables are declared with them and the envelope and receivers check values against them (`connectors.bounds`)."""

from __future__ import annotations

from typing import Final

EVENT_TEXT: Final = {"actor": 512, "action": 512, "target": 1024, "src_ip": 64}
"""The envelope's identifiers and the characters each may have."""
LOGSOURCE_TEXT: Final = {"product": 64, "service": 64, "category": 64}
"""The logsource names (a record can name its service, e.g. a Google Workspace application)."""
RULE_ID: Final = 128
TITLE: Final = 512
ENTITY: Final = 512
"""A finding's rule id, title and entity."""
