"""The longest span a setting or a command's option may give: a century. Beyond it, date arithmetic (`timedelta`,
now minus the span) overflows with errors that name no setting, and no retention, window or review means it."""

from __future__ import annotations

from typing import Final

MAX_DAYS: Final = 36_500
MAX_HOURS: Final = MAX_DAYS * 24
