"""YAML loading that remembers where every value came from, and validation errors that point at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, Event

from custodes.errors import CustodesError, Location, Problem

ModelT = TypeVar("ModelT", bound=BaseModel)
PathKey = tuple[str | int, ...]
MAX_DEPTH = 100
"""Collections nested in one another in a YAML file, at most (Custodes' own files nest fewer than 10)."""
_UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
"""A key the section does not have: a model's, and a dataclass's (`custodes.sources.SourceSettings`)."""


@dataclass(slots=True)
class YamlDocument:
    """Parsed YAML (plain dicts and lists) with the source positions of its keys and items."""

    file: str
    data: Any
    _tree: Any

    def locate(self, path: PathKey, *, at_value: bool = False) -> Location:
        """The closest known position of `path` (a key or index path): its key, or with `at_value` its value."""
        node = self._tree
        line, column = 1, 1
        for depth, key in enumerate(path, start=1):
            if isinstance(node, CommentedMap) and key in node:
                last = depth == len(path)
                line, column = _position(node.lc.value(key) if at_value and last else node.lc.key(key))
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
                line, column = _position(node.lc.item(key))
                node = node[key]
            else:
                if isinstance(node, CommentedMap | CommentedSeq):
                    line, column = node.lc.line + 1, node.lc.col + 1
                break
        field = ".".join(str(part) for part in path) or None
        return Location(self.file, line, column, field)

    def validate(self, model: type[ModelT], *, context: dict[str, Any] | None = None) -> ModelT:
        """Validate the document against a pydantic model, raising every error with its position."""
        if not isinstance(self.data, dict):  # pydantic would say "a valid dictionary or instance of <class>"
            found = "is empty" if self.data is None else f"holds a {_KINDS.get(type(self.data), 'single value')}"
            fields = ", ".join(name for name, info in model.model_fields.items() if info.is_required())
            expected = f"a mapping with {fields}" if fields else "a mapping"
            raise CustodesError([Problem(Location(self.file, 1, 1), f"the file {found}; expected {expected}")])
        try:
            return model.model_validate(self.data, context=context)
        except ValidationError as exc:
            raise CustodesError(self.problems(exc)) from None

    def problems(self, exc: ValidationError, prefix: PathKey = ()) -> list[Problem]:
        """Turn pydantic errors into located problems."""
        found = []
        for error in exc.errors(include_url=False):
            path = prefix + tuple(part for part in error["loc"] if isinstance(part, str | int))
            at_value = error.get("type") not in {"missing", *_UNKNOWN}
            located = self.locate(_document_path(self.data, path), at_value=at_value)
            found.append(Problem(located, _message(error)))
        return found


_KINDS: dict[type, str] = {list: "list", str: "string"}


def _position(pair: Any) -> tuple[int, int]:
    line, column = pair[0], pair[1]
    return int(line) + 1, int(column) + 1


def _document_path(data: Any, path: PathKey) -> PathKey:
    """Drop path parts pydantic adds that are not in the document (union member and tag names)."""
    kept: list[str | int] = []
    node = data
    for part in path:
        if _has(node, part):
            node = node[part]
            kept.append(part)
        elif isinstance(node, dict | list):
            continue
        else:
            break
    if len(path) > len(kept) and path and isinstance(path[-1], str) and isinstance(node, dict):
        kept.append(path[-1])
    return tuple(kept)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _message(error: Any) -> str:
    kind = error.get("type")
    field = error["loc"][-1] if error["loc"] else None
    if kind == "missing":
        return f"missing required field {field!r}"
    if kind in _UNKNOWN:
        return f"unknown field {field!r}"
    return str(error["msg"]).removeprefix("Value error, ")


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _refused(file: str, event: Event, message: str) -> CustodesError:
    mark = event.start_mark
    return CustodesError([Problem(Location(file, mark.line + 1, mark.column + 1), message)])


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse YAML text; syntax errors become a located CustodesError.

    Aliases (``*name``, and ``<<: *name`` merges) are refused before anything is built: a few hundred bytes of
    nested aliases expand to billions of values (the "billion laughs"), and no Custodes file needs them. So is
    nesting deeper than MAX_DEPTH, where it starts: building deeper documents recurses (RecursionError), and ruamel's
    scanner takes time quadratic in the depth of flow collections (minutes for a file of 100,000 brackets).
    """
    yaml = YAML(typ="rt")
    try:
        depth = 0
        for event in yaml.parse(text):
            if isinstance(event, AliasEvent):
                raise _refused(file, event, f"YAML aliases are not allowed (*{event.anchor}): write the value out")
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _refused(file, event, f"YAML nests deeper than {MAX_DEPTH} levels: flatten it")
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise CustodesError([Problem(Location(file, line, column), f"invalid YAML: {problem}")]) from None
    except YAMLError as exc:
        raise CustodesError([Problem(Location(file), f"invalid YAML: {exc}")]) from None
    return YamlDocument(file, _plain(tree), tree)


def load_yaml(path: Path) -> YamlDocument:
    """Read and parse a YAML file; a missing or unreadable file, or one that is not a regular file (a folder, a
    device, or a FIFO, which would wait for a writer), is a CustodesError naming it."""
    if path.exists() and not path.is_file():
        raise CustodesError.at(path, "cannot read file: not a regular file (a folder, a FIFO or a device)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CustodesError.at(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CustodesError.at(path, f"cannot read file: {exc}") from None
    return parse_yaml(text, str(path))
