"""Tailing a log file that rotates: Teleport and Vault audit JSON lines, sudo syslog lines, auditd records.

The checkpoint is the file's inode and the byte offset after the last complete line committed. When the path
shows another inode, the file was rotated by rename: the rest of the old file is read first, from a rotated
name holding that inode (``path.1`` by default), then the new file from its start. When the file is shorter
than the offset, or its first bytes differ from those committed, it was truncated in place (copytruncate)
and is read from its start. A line still being
written (no newline yet) waits for the next poll. A line that cannot be parsed is kept, as text, with a warning;
a line longer than `LONGEST_RECORD` is skipped, read in chunks and never held whole, with a warning naming its
offset (a tail does not stop on one line).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import Field

from custodes.config import Section
from custodes.connectors.base import Batch
from custodes.connectors.envelope import to_event
from custodes.connectors.files import BOM, FINGERPRINT_BYTES, LONGEST_RECORD, fingerprint
from custodes.connectors.textlogs import PARSERS
from custodes.model import Event, utcnow
from custodes.sources import SourceSettings


class FileTailOptions(Section):
    """Options of a ``file_tail`` connector."""

    path: Path
    parser: Literal["json", "sudo", "auditd"] = Field(description="json lines, sudo syslog lines or auditd")
    rotated: list[str] = Field(
        default_factory=lambda: ["{path}.1"], description="where a rotated file goes ({path} is the path)"
    )
    batch_lines: int = Field(default=1000, ge=1)


DEFAULT_SOURCES = {
    "sudo": SourceSettings(format="sudo", product="linux", service="sudo"),
    "auditd": SourceSettings(format="auditd", product="linux", service="auditd"),
}
"""The sources a ``file_tail`` entry with the sudo or auditd parser and no ``source:`` reads into."""


def default_source(options: dict[str, Any]) -> str | None:
    """The source name a ``file_tail`` entry's parser implies (sudo, auditd), if any."""
    parser = options.get("parser")
    return parser if isinstance(parser, str) and parser in DEFAULT_SOURCES else None


# the tail ----------------------------------------------------------------------------------------------
def _lines(path: Path, offset: int) -> Iterator[tuple[str | None, int]]:
    """Complete lines from `offset`, each with the offset after it; None in place of a line longer than
    `LONGEST_RECORD`."""
    with path.open("rb") as handle:
        handle.seek(offset)
        position = offset
        while raw := handle.readline(LONGEST_RECORD + 1):
            if not raw.endswith(b"\n"):
                if len(raw) <= LONGEST_RECORD or (end := _line_end(handle)) is None:
                    return  # still being written
                handle.seek(end)
                position = end
                yield None, position
                continue
            text = (raw.removeprefix(BOM) if position == 0 else raw).decode("utf-8", errors="replace")
            position += len(raw)
            yield text.rstrip("\r\n"), position


def _line_end(handle: BinaryIO) -> int | None:
    """The offset after the next newline from where `handle` stands, read a megabyte at a time; None before one."""
    while chunk := handle.read(1 << 20):
        found = chunk.find(b"\n")
        if found >= 0:
            return handle.tell() - len(chunk) + found + 1
    return None


def _head(path: Path, offset: int) -> str:
    """A fingerprint of the file's first bytes up to `offset`: rewritten content after a truncation differs."""
    try:
        with path.open("rb") as handle:
            return fingerprint(handle.read(min(offset, FINGERPRINT_BYTES)), FINGERPRINT_BYTES)
    except OSError:
        return ""


class FileTailConnector:
    """Tails one log file across rotation and truncation; see the module docstring."""

    def __init__(
        self,
        name: str,
        source: str,
        settings: SourceSettings,
        options: FileTailOptions,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.name = name
        self.source = source
        self.settings = settings
        self.options = options
        self.parse = PARSERS[options.parser]
        self.clock = clock

    def _rotated(self, inode: int) -> Path | None:
        for pattern in self.options.rotated:
            candidate = Path(pattern.format(path=self.options.path))
            try:
                if candidate.stat().st_ino == inode:
                    return candidate
            except OSError:
                continue
        return None

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """New complete lines since `checkpoint`, the rest of a rotated file first."""
        path = self.options.path
        try:
            current = path.stat()
        except FileNotFoundError:
            return
        state = checkpoint or {}
        inode, offset = state.get("inode"), int(state.get("offset", 0))
        moved = False
        if inode is not None and inode != current.st_ino:
            old = self._rotated(int(inode))
            if old is not None:
                async for batch in self._read(old, int(inode), offset):
                    yield batch
            else:
                yield Batch(
                    [],
                    {"inode": current.st_ino, "offset": 0, "head": _head(path, 0)},
                    [f"{path} was rotated and its old file is gone; lines after offset {offset} are lost"],
                )
            offset, moved = 0, True
        elif current.st_size < offset or _head(path, offset) != state.get("head", _head(path, offset)):
            offset, moved = 0, True
        async for batch in self._read(path, current.st_ino, offset, moved=moved):
            yield batch

    async def _read(self, path: Path, inode: int, offset: int, *, moved: bool = False) -> AsyncIterator[Batch]:
        """Batches of the complete lines after `offset`; with `moved`, at least one (the new position)."""
        now = self.clock()
        events: list[Event] = []
        notes: list[str] = []
        position = start = offset
        for line, position in _lines(path, offset):
            if line is None:
                notes.append(f"{path}: the line at offset {start} is longer than {LONGEST_RECORD >> 20} MiB; skipped")
            start = position
            if not line or not line.strip():
                continue
            record, warning = self.parse(line, now)
            event = to_event(record, self.settings, self.source)
            if warning:
                event.warnings.append(f"{path}: {warning}")
            events.append(event)
            if len(events) >= self.options.batch_lines:
                yield Batch(events, {"inode": inode, "offset": position, "head": _head(path, position)}, notes)
                events, notes = [], []
        if events or notes or position != offset or moved:
            yield Batch(events, {"inode": inode, "offset": position, "head": _head(path, position)}, notes)


def build(
    name: str, source: str, settings: SourceSettings, options: dict[str, Any], credentials: dict[str, str]
) -> FileTailConnector:
    """A ``file_tail`` connector (no credentials)."""
    return FileTailConnector(name, source, settings, FileTailOptions.model_validate(options))
