"""Playbook expressions: Jinja2 in a sandbox with strict undefined variables.

Only strings written in the playbook are templates. Values that come from events or findings enter as data
and are never rendered again, so an event field holding ``{{ ... }}`` stays an inert string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RESULT = 1_000_000
"""The most items (characters, list items) a `*` may make, and about the most bits a `**` may: beyond, one expression
would hold the worker for minutes or exhaust memory (`{{ 9 ** 999999999 }}`, `{{ 'x' * 10**11 }}`)."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with `*` and `**` checked before they run (so never folded while compiling)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _int(left) and _int(right) and right > 0 and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_RESULT:
                raise SecurityError(f"a power of more than {MAX_RESULT} bits")  # the operands may be too long to print
        elif operator == "*":
            for count, sized in ((left, right), (right, left)):
                if _int(count) and isinstance(sized, str | list | tuple) and count * len(sized) > MAX_RESULT:
                    raise SecurityError(f"repeating {len(sized)} item(s) that often makes more than {MAX_RESULT}")
        return super().call_binop(context, operator, left, right)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated; the message says which and why."""


def is_template(text: str) -> bool:
    """Whether a playbook string contains an expression or a statement."""
    return "{{" in text or "{%" in text


def _single_expression(text: str) -> str | None:
    match = _WHOLE.match(text)
    if match is None:
        return None
    expr = match.group("expr")
    return None if "{{" in expr or "}}" in expr else expr


@lru_cache(maxsize=4096)
def _compile(text: str) -> Any:
    expr = _single_expression(text)
    try:
        if expr is not None:
            return _ENV.compile_expression(expr, undefined_to_none=False)
        return _ENV.from_string(text)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc}") from None


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render templates inside a playbook value (strings, lists, mappings), keeping native types.

    A string that is exactly one ``{{ expression }}`` yields the expression's value (a list stays a list);
    any other string with templates yields a string.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        compiled = _compile(value)
        try:
            if _single_expression(value) is None:
                return compiled.render(**context)
            result = compiled(**context)
            if isinstance(result, Undefined):
                raise ExpressionError(f"cannot evaluate {value!r}: {result._undefined_message}")
            return result
        except TemplateError as exc:
            raise ExpressionError(f"cannot evaluate {value!r}: {exc.message or exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ExpressionError(f"cannot evaluate {value!r}: {exc}") from None
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


def referenced_names(text: str) -> set[str]:
    """Top-level variable names a template string uses; ExpressionError if it does not parse."""
    expr = _single_expression(text)
    source = text if expr is None else "{{" + expr + "}}"
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source)))
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.message or exc}") from None


def step_references(text: str) -> set[str]:
    """Step ids used as ``steps.<id>`` or ``steps['<id>']`` in a template string."""
    return attribute_references(text, "steps")


def attribute_references(text: str, root: str) -> set[str]:
    """Names used as ``<root>.<name>`` or ``<root>['<name>']`` in a template string."""
    expr = _single_expression(text)
    source = text if expr is None else "{{" + expr + "}}"
    found: set[str] = set()
    try:
        tree = _ENV.parse(source)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.message or exc}") from None
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == root:
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.node, nodes.Name) and item.node.name == root and isinstance(item.arg, nodes.Const):
            found.add(str(item.arg.value))
    return found
