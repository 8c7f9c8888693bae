"""An on-disk cache of compiled rule sets: a command starts without parsing YAML or importing pySigma.

A rule set is stored as plain data (JSON: each rule's lowered conditions, its index requirements and its
metadata, and the rejections), never as code: reading it back only runs the compiler over that data. The key is a
SHA-256 over everything loading depends on: the format of this cache, the Custodes and Python versions, the
installed pySigma distributions, the source of this package (loader, lowering, compiler, pipelines), the pipeline
name, and the path and content of every rule file; any change gives a new key, so a stale entry is never read.

Entries live in a folder of the user's own (`$CUSTODES_CACHE_DIR`, else `$XDG_CACHE_HOME/custodes/rulesets`,
else `~/.cache/custodes/rulesets`), created with mode 0700, each file 0600 and starting with the SHA-256 of its
body, checked on every read. A folder or file owned by someone else or writable by others is not used; neither is
an entry that fails its check (the rules are loaded from their files instead). `CUSTODES_CACHE_DIR=off` turns
the cache off. Rule sets with correlation rules are not cached (they always load from their files). The same
folder keeps the line screens' compiled Hyperscan databases (`linefilter`), under the same checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from custodes import __version__
from custodes.detections.sigma.compiler import CompiledRule, UnsupportedRuleError, build_rule
from custodes.detections.sigma.requirement import Requirement
from custodes.detections.sigma.ruleset import Rejection, RuleSet, rule_files
from custodes.model import LogSource, Severity

CACHE_ENV: Final = "CUSTODES_CACHE_DIR"
_FORMAT: Final = "custodes-ruleset-cache 1"
_KEEP: Final = 16
"""Entries of a kind kept in the folder; older ones are removed when a new one is written."""
_PACKAGE: Final = Path(__file__).resolve().parent


def load_rules_cached(paths: Sequence[Path], pipeline: str | None, environ: Mapping[str, str] = os.environ) -> RuleSet:
    """The rule set `load_rules(paths, pipeline=pipeline_named(pipeline))` gives, from the cache when it holds it."""
    folder = cache_folder(environ)
    listed = RuleSet()
    files = list(rule_files(paths, listed))
    if folder is None or listed.rejections:
        return _load(paths, pipeline)
    entry = folder / f"{_key(files, pipeline)}.json"
    cached = _read(entry)
    if cached is not None:
        return cached
    ruleset = _load(paths, pipeline)
    if not ruleset.correlations:
        _write(entry, ruleset)
    return ruleset


def cache_folder(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The user's cache folder (created 0700); None when the cache is off or the folder is not safely the user's."""
    configured = environ.get(CACHE_ENV)
    if configured == "off":
        return None
    if configured:
        folder = Path(configured)
    else:
        base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(base) / "custodes" / "rulesets"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder if _private(folder.stat()) else None
    except OSError:
        return None


def _load(paths: Sequence[Path], pipeline: str | None) -> RuleSet:
    from custodes.detections.sigma.loader import load_rules
    from custodes.detections.sigma.pipelines import pipeline_named

    return load_rules(paths, pipeline=pipeline_named(pipeline) if pipeline is not None else None)


def _private(status: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return status.st_uid == os.getuid() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _key(files: Sequence[Path], pipeline: str | None) -> str:
    digest = hashlib.sha256()
    for part in (_FORMAT, __version__, sys.version, *_distributions(), f"pipeline={pipeline}"):
        digest.update(part.encode() + b"\x00")
    for source in sorted(_PACKAGE.glob("*.py")):
        digest.update(source.read_bytes() + b"\x00")
    for file in files:
        try:
            content = file.read_bytes()
        except OSError as exc:  # the loader rejects it; the key still differs from a readable file's
            content = f"unreadable: {exc}".encode()
        digest.update(f"{file}\x00{len(content)}\x00".encode() + content)
    return digest.hexdigest()


def _distributions() -> list[str]:
    """The installed pySigma distributions, by name and version (read off their metadata folders)."""
    spec = importlib.util.find_spec("sigma")
    if spec is None or spec.origin is None:
        return []
    site = Path(spec.origin).parent.parent
    return sorted(path.name for path in site.glob("pysigma*.dist-info"))


def _read(entry: Path) -> RuleSet | None:
    body = read_entry(entry)
    if body is None:
        return None
    try:
        return _decode(orjson.loads(body))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnsupportedRuleError):
        return None


def _write(entry: Path, ruleset: RuleSet) -> None:
    write_entry(entry, orjson.dumps(_encode(ruleset)))


def read_entry(entry: Path) -> bytes | None:
    """The body of a cache entry; None when it is missing, not privately the user's, or fails its checksum."""
    try:
        descriptor = os.open(entry, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        if not _private(os.fstat(file.fileno())):
            return None
        data = file.read()
    checksum, _, body = data.partition(b"\n")
    return body if hashlib.sha256(body).hexdigest().encode() == checksum else None


def write_entry(entry: Path, body: bytes) -> None:
    """Write a cache entry (0600, atomically, its checksum first), keeping the newest `_KEEP` of its kind."""
    folder = entry.parent
    try:
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")  # mode 0600
        with os.fdopen(descriptor, "wb") as file:
            file.write(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        os.replace(temporary, entry)
        entries = sorted(folder.glob(f"*{entry.suffix}"), key=lambda path: path.stat().st_mtime, reverse=True)
        for old in entries[_KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        return  # a cache that cannot be written only costs the next start its speed


def _encode(ruleset: RuleSet) -> dict[str, Any]:
    return {
        "rules": [_encode_rule(rule) for rule in ruleset.rules],
        "rejections": [[str(r.file), r.rule_id, r.title, r.reason, r.line, r.column] for r in ruleset.rejections],
        "silent": sorted(ruleset.silent),
        "known": sorted(ruleset.known),
    }


def _encode_rule(rule: CompiledRule) -> list[Any]:
    logsource = rule.logsource
    return [
        rule.id,
        rule.title,
        rule.level.label,
        rule.tags,
        [logsource.product, logsource.service, logsource.category],
        rule.description,
        str(rule.source) if rule.source is not None else None,
        [
            [sorted(option.exact), sorted(option.contains, key=str), sorted(option.numbers)]
            for option in rule.requirements
        ],
        rule.conditions,
    ]


def _decode(data: dict[str, Any]) -> RuleSet:
    rules = [_decode_rule(*item) for item in data["rules"]]
    rejections = [
        Rejection(Path(file), rule_id, title, reason, line, column)
        for file, rule_id, title, reason, line, column in data["rejections"]
    ]
    return RuleSet(rules=rules, rejections=rejections, silent=set(data["silent"]), known=set(data["known"]))


def _decode_rule(
    rule_id: str,
    title: str,
    level: str,
    tags: list[str],
    logsource: list[str | None],
    description: str | None,
    source: str | None,
    requirements: list[list[list[list[Any]]]],
    conditions: list[Any],
) -> CompiledRule:
    return build_rule(
        id=rule_id,
        title=title,
        level=Severity.parse(level),
        tags=tags,
        logsource=LogSource(*logsource),
        description=description,
        conditions=conditions,
        source=Path(source) if source is not None else None,
        requirements=tuple(
            Requirement(
                exact=frozenset((str(name), str(value)) for name, value in exact),
                contains=frozenset((name, str(value)) for name, value in contains),
                numbers=frozenset((str(name), value) for name, value in numbers),
            )
            for exact, contains, numbers in requirements
        ),
        deferred=True,
    )
