"""The action registry: plain async functions, registered by a decorator, whose signatures document them.

An action is ``async def fn(ctx: ActionContext, *, param: type = default, ...) -> dict``. Its keyword
parameters (everything after ``ctx``) are the arguments a playbook passes in ``with:``; they are validated
against the type hints before the call. The metadata next to the code (destructive or not, its inverse,
a one-line description of what it would do, how an argument that is markup escapes the values expressions put
into it) lets the playbook engine check, plan, render and guard calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, get_type_hints

import aiohttp
from pydantic import ConfigDict, ValidationError, create_model

from custodes.config import ResponderSettings, Settings
from custodes.markup import Escaper
from custodes.playbooks.expressions import render

if TYPE_CHECKING:
    from custodes.store import Store


class ActionError(Exception):
    """An action failed; `code` is the vendor's error code when there is one, `retryable` marks throttling/5xx."""

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class ArgumentError(ValueError):
    """Arguments do not fit an action's signature; the message names each bad argument."""


@dataclass(slots=True)
class ActionContext:
    """What an action may use: responder settings, a shared HTTP session, the step's idempotency key,
    and the store (for actions that read or record case data: evidence, case notes)."""

    settings: ResponderSettings
    http: aiohttp.ClientSession
    idempotency_key: str
    dry_run: bool = False
    run_id: str | None = None
    store: Store | None = None
    actor: str = "custodes"
    app: Settings | None = None
    """The whole configuration, for actions that read through configured connectors (evidence from the SIEM)."""


ActionFn = Callable[..., Awaitable[dict[str, Any]]]
EscaperChoice = Callable[[Mapping[str, Any], ResponderSettings], Escaper | None]
"""How the values expressions put into an argument are escaped, chosen from the call's other (rendered) arguments
and the settings; None renders the argument as any other."""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action's metadata, read from its decorator and its signature."""

    name: str
    fn: ActionFn
    description: str
    destructive: bool
    undo: str | None
    plan: str
    parameters: Mapping[str, inspect.Parameter] = field(default_factory=dict)
    target: str | None = None
    escape: Mapping[str, EscaperChoice] = field(default_factory=dict)

    def target_of(self, arguments: Mapping[str, Any]) -> str | None:
        """Who or what a call acts on (the value of the action's target argument), for guards and keys."""
        if self.target is None:
            return None
        value = arguments.get(self.target)
        return None if value is None else str(value)

    def render(
        self, arguments: Mapping[str, Any], context: Mapping[str, Any], settings: ResponderSettings
    ) -> dict[str, Any]:
        """A step's `with:` rendered over `context`; an argument the action escapes is rendered after the others,
        with the escaper its choice takes from them and the settings."""
        rendered = {name: render(value, context) for name, value in arguments.items() if name not in self.escape}
        for name, choose in self.escape.items():
            if name in arguments:
                rendered[name] = render(arguments[name], context, escape=choose(rendered, settings))
        return rendered

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and coerce arguments against the signature; raise ArgumentError naming every problem."""
        unknown = sorted(set(arguments) - set(self.parameters))
        problems = [f"unknown argument {name!r} (expected: {self._expected()})" for name in unknown]
        try:
            validated = self._model().model_validate({k: v for k, v in arguments.items() if k not in unknown})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                message = "is required" if error["type"] == "missing" else str(error["msg"])
                problems.append(f"argument {where!r} {message}")
            validated = None
        if problems or validated is None:
            raise ArgumentError(f"{self.name}: " + "; ".join(problems))
        return {name: getattr(validated, name) for name in self.parameters}

    def required(self) -> list[str]:
        """Names of the arguments without a default."""
        return [name for name, p in self.parameters.items() if p.default is inspect.Parameter.empty]

    def check_literals(self, arguments: Mapping[str, Any]) -> dict[str, str]:
        """Type problems of the given (already known) arguments, by name; missing ones are not checked."""
        model = self._model()
        problems: dict[str, str] = {}
        for name, value in arguments.items():
            try:
                model.__pydantic_validator__.validate_assignment(model.model_construct(), name, value)
            except ValidationError as exc:
                problems[name] = "; ".join(str(e["msg"]) for e in exc.errors(include_url=False))
        return problems

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """What a call would do, in words, for plans and dry runs."""
        try:
            return self.plan.format(**arguments)
        except (KeyError, IndexError, ValueError):
            return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"

    def _expected(self) -> str:
        return ", ".join(self.parameters) or "no arguments"

    def _model(self) -> Any:
        return _argument_model(self.name, self.fn)


@cache
def _argument_model(name: str, fn: ActionFn) -> Any:
    """A pydantic model of an action's keyword parameters (built once per action)."""
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    return create_model(f"{name}.arguments", __config__=ConfigDict(extra="forbid", validate_assignment=True), **fields)


class Registry:
    """Actions by name."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}

    def action(
        self,
        name: str,
        *,
        destructive: bool = False,
        undo: str | None = None,
        plan: str | None = None,
        target: str | None = None,
        escape: Mapping[str, EscaperChoice] | None = None,
    ) -> Callable[[ActionFn], ActionFn]:
        """Register an async action; `plan` is a format string over its arguments describing the effect,
        `target` names the argument that says who or what it acts on (guarded by protected accounts), `escape`
        says how the values expressions put into an argument that is markup are escaped."""

        def register(fn: ActionFn) -> ActionFn:
            if name in self._actions:
                raise ValueError(f"action {name!r} is registered twice")
            signature = inspect.signature(fn)
            params = list(signature.parameters.values())
            if not params or params[0].name != "ctx":
                raise TypeError(f"action {name!r}: the first parameter must be 'ctx: ActionContext'")
            keyword = {p.name: p for p in params[1:]}
            if target is not None and target not in keyword:
                raise TypeError(f"action {name!r}: target {target!r} is not one of its parameters")
            if unknown := sorted(set(escape or {}) - set(keyword)):
                raise TypeError(f"action {name!r}: escaped {', '.join(map(repr, unknown))} not among its parameters")
            description = inspect.getdoc(fn) or name
            self._actions[name] = ActionSpec(
                name=name,
                fn=fn,
                description=description.splitlines()[0],
                destructive=destructive,
                undo=undo,
                plan=plan or name,
                parameters=keyword,
                target=target,
                escape=dict(escape or {}),
            )
            return fn

        return register

    def get(self, name: str) -> ActionSpec:
        """An action by name; KeyError lists the known ones."""
        try:
            return self._actions[name]
        except KeyError:
            raise KeyError(f"unknown action {name!r} (known actions: {', '.join(sorted(self._actions))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def names(self) -> list[str]:
        """Every registered action name, sorted."""
        return sorted(self._actions)


registry = Registry()
action = registry.action
