"""Windows event log records rendered as JSON (evtx records as evtx_dump and SigmaHQ's regression data write
them), and the flat field view Sigma's Windows rules are written against."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def rendered_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a file holding one or several concatenated JSON documents."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        record, position = decoder.raw_decode(text, position)
        yield record


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """System scalars (EventID, Channel, Computer, ...), the provider as Provider_Name, and every leaf under
    EventData and UserData by its element name; Defender-style names with spaces ("Source Name") are also
    given without them ("SourceName"), which is how the Sigma Windows taxonomy spells them."""
    event = record["Event"]
    system = event["System"]
    flat: dict[str, Any] = {key: value for key, value in system.items() if not isinstance(value, dict)}
    flat["Provider_Name"] = system["Provider"]["#attributes"]["Name"]
    for section in ("EventData", "UserData"):
        _merge_leaves(flat, event.get(section) or {})
    return flat


def _merge_leaves(flat: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key == "#attributes":
            continue
        if isinstance(value, dict):
            _merge_leaves(flat, value)
        else:
            flat[key] = value
            flat[key.replace(" ", "")] = value
