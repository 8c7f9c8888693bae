"""Fetching the recordings of privileged sessions into evidence bundles.

A recording Custodes can read is copied into the bundle (and so sealed by its manifest): a ``file://`` URL or an
absolute path (Teleport's file session storage) inside one of ``responder.evidence.recordings_dirs``, or a sudo I/O
log (``sudo-io:<TSID>``, the folder under ``responder.evidence.sudo_iolog_dir``), every file of a folder; an
``s3://bucket/key`` object, or every object under that key as a prefix (Teleport's S3 session storage), when
``responder.evidence.recordings_s3`` says how to reach S3. Any other reference (``gs://``, an HTTP endpoint of
Teleport's proxy, S3 without that setting) is kept as a reference with the reason it was not copied.

A reference comes from event data (a log line), so it never leads outside those folders: a path that resolves
elsewhere (``..``, a symbolic link out) is referenced, not read, and a file or object whose name would not stay in
the bundle's folder for the recording is not copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from botocore.exceptions import BotoCoreError, ClientError

from custodes.config import EvidenceSettings, S3Connection
from custodes.connectors.sessions import PrivilegedSession
from custodes.responder.s3 import s3_client

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class Recording:
    """One session's recording: the files copied (bundle name -> bytes), or why none was."""

    session: str
    reference: str
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: str | None = None

    def summary(self) -> dict[str, object]:
        """What the bundle's manifest header says about it."""
        return {
            "session": self.session,
            "reference": self.reference,
            "files": sorted(self.files),
            "skipped": self.skipped,
        }


def _local_path(reference: str, settings: EvidenceSettings) -> tuple[Path, list[Path], str] | None:
    """The local path a reference names, the folders it must stay in and the setting naming them; None when it is
    not local."""
    if reference.startswith("sudo-io:"):
        folder = settings.sudo_iolog_dir
        return folder / reference.removeprefix("sudo-io:"), [folder], "sudo_iolog_dir"
    if reference.startswith("file://"):
        return Path(unquote(urlparse(reference).path)), settings.recordings_dirs, "recordings_dirs"
    if reference.startswith("/"):
        return Path(reference), settings.recordings_dirs, "recordings_dirs"
    return None


def _within(path: Path, roots: list[Path]) -> bool:
    """Whether `path`, symbolic links resolved, is in one of `roots` (folders already resolved)."""
    real = path.resolve()
    return any(real.is_relative_to(root) for root in roots)


def _plain(name: str) -> bool:
    """Whether a relative name stays where it is put: no empty, ``.`` or ``..`` segment, no backslash."""
    return "\\" not in name and all(part not in ("", ".", "..") for part in name.split("/"))


def fetch(session: PrivilegedSession, settings: EvidenceSettings) -> Recording | None:
    """The recording of a session, copied when it is a readable local file or folder (blocking I/O)."""
    if session.recording is None:
        return None
    folder = f"recordings/{session.kind}-{_UNSAFE.sub('_', session.id)}"
    recording = Recording(f"{session.kind}:{session.id}", session.recording)
    if session.recording.startswith("s3://") and settings.recordings_s3 is not None:
        _fetch_s3(recording, folder, settings.recordings_s3, settings.max_recording_bytes)
        return recording
    local = _local_path(session.recording, settings)
    if local is None:
        scheme = urlparse(session.recording).scheme or "unknown"
        recording.skipped = f"a {scheme} recording is referenced, not copied (only local files are read)"
        return recording
    path, folders, setting = local
    try:
        roots = [folder.resolve() for folder in folders]  # once, not once per file of a folder
        if not _within(path, roots):
            recording.skipped = f"{path}: outside responder.evidence.{setting}; referenced, not read"
            return recording
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and _within(p, roots))
        if not found:
            recording.skipped = f"{path}: not found"
            return recording
        total = sum(item.stat().st_size for item in found)
        if total > settings.max_recording_bytes:
            recording.skipped = f"{path}: {total} bytes, over responder.evidence.max_recording_bytes"
            return recording
        for item in found:
            name = item.name if item == path else item.relative_to(path).as_posix()
            recording.files[f"{folder}/{name}"] = item.read_bytes()
    except OSError as error:
        recording.files.clear()
        recording.skipped = f"{path}: {error.strerror or error}"
    return recording


def _fetch_s3(recording: Recording, folder: str, connection: S3Connection, limit: int) -> None:
    """Copy the object at the reference, or every object under it as a prefix, unless together over `limit`."""
    parsed = urlparse(recording.reference)
    bucket, key = parsed.netloc, unquote(parsed.path).lstrip("/")
    client = s3_client(connection)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        under = key.rstrip("/") + "/"
        found = [
            (item["Key"], int(item["Size"]))
            for page in pages
            for item in page.get("Contents", [])
            if item["Key"] == key or item["Key"].startswith(under)
        ]
        if not found:
            recording.skipped = f"{recording.reference}: not found"
            return
        total = sum(size for _, size in found)
        if total > limit:
            recording.skipped = f"{recording.reference}: {total} bytes, over responder.evidence.max_recording_bytes"
            return
        names = {name: name.rpartition("/")[2] if name == key else name[len(under) :] for name, _ in found}
        unsafe = sorted(relative for relative in names.values() if not _plain(relative))
        if unsafe:
            recording.skipped = f"{recording.reference}: an object named {unsafe[0]!r} would leave the bundle's folder"
            return
        for name, relative in names.items():
            recording.files[f"{folder}/{relative}"] = client.get_object(Bucket=bucket, Key=name)["Body"].read()
    except ClientError as error:
        recording.files.clear()
        code = error.response.get("Error", {}).get("Code", "error")
        recording.skipped = f"{recording.reference}: S3 {code}"
    except BotoCoreError as error:
        recording.files.clear()
        recording.skipped = f"{recording.reference}: S3 unreachable ({type(error).__name__})"
