"""Playbook expressions: Jinja2 in a sandbox with strict undefined variables.

Only strings written in the playbook are templates. Values that come from events or findings enter as data
and are never rendered again, so an event field holding ``{{ ... }}`` stays an inert string. Where the result is
markup (a chat message's text), each expression's output is escaped for it, so data cannot add markup either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from string import Formatter
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from custodes.markup import Escaper

MAX_RESULT = 1_000_000
"""The most items (characters, list items) one operation may make, and about the most bits a `**` may: beyond, one
expression would hold the worker for minutes or exhaust memory (`{{ 9 ** 999999999 }}`, `{{ 'x' * 10**11 }}`,
`{{ 'x' | center(10**10) }}`, `{{ '%0999999999d' % 1 }}`)."""
_NUMBER = re.compile(r"[0-9]+")
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?")
_PADDING = frozenset({"center", "ljust", "rjust", "zfill"})


def _cap(size: int, what: str) -> None:
    if size > MAX_RESULT:
        raise SecurityError(f"{what} makes more than {MAX_RESULT} characters")


def _widest(text: str) -> int:
    """The largest number written in `text` (a format's widths and precisions), without reading a huge one."""
    return max((MAX_RESULT + 1 if len(run) > 7 else int(run) for run in _NUMBER.findall(text)), default=0)


def _largest(values: Iterable[Any]) -> int:
    return max((value for value in values if _int(value)), default=0)


def _check_printf(template: str, values: Any) -> None:
    """`template % values`: its widths and precisions, and those given by `*`."""
    specs = _PRINTF.findall(template)
    _cap(len(template) + max((_widest(width + "." + precision) for width, precision in specs), default=0), "the format")
    if any("*" in (width, precision) for width, precision in specs):
        _cap(_largest(values if isinstance(values, tuple) else (values,)), "the format")


def _check_format(template: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """`template.format(...)`: the widths and precisions in its fields, and any given in nested fields."""
    specs = [spec or "" for _, _, spec, _ in Formatter().parse(template)]
    _cap(len(template) + max((_widest(spec) for spec in specs), default=0), "the format")
    if any("{" in spec for spec in specs):
        _cap(_largest([*args, *kwargs.values()]), "the format")


def _check_str_call(text: str, name: str, args: tuple[Any, ...]) -> None:
    """The size a padding, tab-expanding or replacing call on `text` makes, before it is made."""
    if name in _PADDING and args and _int(args[0]):
        _cap(args[0], f"{name}()")
    elif name == "expandtabs":
        _cap(len(text) + text.count("\t") * (args[0] if args and _int(args[0]) else 8), "expandtabs()")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        found = text.count(args[0]) if args[0] else len(text) + 1
        if len(args) > 2 and _int(args[2]) and args[2] >= 0:
            found = min(found, args[2])
        _cap(len(text) + found * max(0, len(args[1]) - len(args[0])), "replace()")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with what makes large values checked before it runs: `*`, `**` and `%` (so
    never folded while compiling), padding, tab-expanding, replacing and formatting strings."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _int(left) and _int(right) and right > 0 and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_RESULT:
                raise SecurityError(f"a power of more than {MAX_RESULT} bits")  # the operands may be too long to print
        elif operator == "*":
            for count, sized in ((left, right), (right, left)):
                if _int(count) and isinstance(sized, str | list | tuple) and count * len(sized) > MAX_RESULT:
                    raise SecurityError(f"repeating {len(sized)} item(s) that often makes more than {MAX_RESULT}")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        text = getattr(method, "__self__", None)
        if isinstance(text, str):
            name = getattr(method, "__name__", "")
            if name in ("format", "format_map"):
                mapping = args[0] if name == "format_map" and args and isinstance(args[0], Mapping) else kwargs
                _check_format(text, args if name == "format" else (), mapping)
            else:
                _check_str_call(text, name, args)
        return super().call(__context, __obj, *args, **kwargs)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_filters(env: _Sandbox) -> None:
    """Jinja's own filters that make strings, checked as the methods are (filters are called directly)."""
    center, indent, replace, format_ = (env.filters[name] for name in ("center", "indent", "replace", "format"))

    def checked_center(value: Any, width: int = 80) -> str:
        _check_str_call(str(value), "center", (width,))
        return str(center(value, width))

    def checked_indent(value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> str:
        step = len(width) if isinstance(width, str) else width if _int(width) else 0
        _cap(len(str(value)) + (str(value).count("\n") + 1) * step, "indent()")
        return str(indent(value, width, *args, **kwargs))

    @pass_eval_context  # as Jinja's own `replace`, which it calls
    def checked_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
        _check_str_call(str(value), "replace", (str(old), str(new), -1 if count is None else count))
        return replace(eval_ctx, value, old, new, count)

    def checked_format(value: Any, *args: Any, **kwargs: Any) -> str:
        _check_printf(str(value), kwargs if kwargs else tuple(args))
        return str(format_(value, *args, **kwargs))

    env.filters.update(center=checked_center, indent=checked_indent, replace=checked_replace, format=checked_format)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_checked_filters(_ENV)
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


@cache
def _escaping(escape: Escaper) -> _Sandbox:
    """The sandbox that escapes each ``{{ }}`` output (Jinja's `finalize`, never applied to a template's own text)."""
    return _ENV.overlay(finalize=lambda value: escape(str(value)))


@lru_cache(maxsize=4096)
def _compile(text: str, escape: Escaper | None) -> Any:
    expr = _single_expression(text) if escape is None else None
    try:
        if expr is not None:
            return _ENV.compile_expression(expr, undefined_to_none=False)
        return (_ENV if escape is None else _escaping(escape)).from_string(text)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc}") from None


def render(value: Any, context: Mapping[str, Any], *, escape: Escaper | None = None) -> Any:
    """Render templates inside a playbook value (strings, lists, mappings), keeping native types.

    A string that is exactly one ``{{ expression }}`` yields the expression's value (a list stays a list);
    any other string with templates yields a string. With `escape`, every template yields a string in which each
    ``{{ }}`` output, a whole-string expression's value included, is escaped (the template's own text is not).
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        compiled = _compile(value, escape)
        try:
            if escape is not None or _single_expression(value) is None:
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
        return [render(item, context, escape=escape) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context, escape=escape) for key, item in value.items()}
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
