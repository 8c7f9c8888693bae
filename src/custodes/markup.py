"""Chat markup formats: how a value put into a chat message is escaped, so the chat shows it as written.

An escaper applies to values (what a playbook's ``{{ }}`` expressions put into a message), never to the text the
author wrote around them: their own links, emphasis and mentions keep working, while an event field holding
``<!channel>`` or ``[Open](https://evil.example)`` arrives as those characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

Format = Literal["slack", "teams", "plain"]
Escaper = Callable[[str], str]

_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_INLINE = re.compile(r"[\\`*_~\[\]()]")
_LINE_START = re.compile(r"^([ \t]*(?:[0-9]+(?=[.)])|(?=[#+=-])))(.)", re.MULTILINE)


def slack(text: str) -> str:
    """Slack's rule for message text: ``&``, ``<`` and ``>`` as HTML entities, so that no mention (``<!here>``,
    ``<@U123>``), channel or link (``<url|label>``) can be formed."""
    return text.translate(_ENTITIES)


def teams(text: str) -> str:
    """Teams renders Markdown and some HTML in an incoming webhook's text: ``&``, ``<`` and ``>`` as HTML entities,
    a backslash before inline Markdown punctuation, and before a heading, list or rule marker starting a line."""
    escaped = _INLINE.sub(lambda match: "\\" + match.group(), text.translate(_ENTITIES))
    return _LINE_START.sub(lambda match: match.group(1) + "\\" + match.group(2), escaped)


def plain(text: str) -> str:
    """A receiver that shows text as it is: nothing to escape."""
    return text


ESCAPERS: dict[Format, Escaper] = {"slack": slack, "teams": teams, "plain": plain}
"""Each format's escaper, by its name in ``responder.channels.<name>.format``."""
