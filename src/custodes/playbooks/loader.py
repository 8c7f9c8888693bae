"""Loading playbooks from YAML, with every problem reported at its file, line and column."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custodes.errors import CustodesError, Location, Problem
from custodes.playbooks.expressions import (
    ExpressionError,
    attribute_references,
    is_template,
    referenced_names,
    step_references,
)
from custodes.playbooks.graph import execution_order, handler_ids
from custodes.playbooks.schema import (
    CONTEXT_NAMES,
    ITEM_NAMES,
    SCHEDULE_NAMES,
    WEBHOOK_NAMES,
    GotoStep,
    HandlerPlaybook,
    Playbook,
    Step,
)
from custodes.responder.registry import Registry
from custodes.yamlfile import PathKey, YamlDocument, load_yaml

TEST_SUFFIXES = (".tests.yaml", ".tests.yml")


@dataclass(frozen=True, slots=True)
class LoadedPlaybook:
    """A validated playbook and the file it came from."""

    playbook: Playbook
    file: Path
    doc: YamlDocument | None = field(default=None, compare=False, repr=False)


def playbook_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Playbook files under the given files and folders (test files excluded), sorted."""
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in {".yml", ".yaml"})
            yield from (p for p in found if not p.name.endswith(TEST_SUFFIXES))
        else:
            yield path


def check(
    doc: YamlDocument,
    registry: Registry,
    *,
    secrets: Collection[str] | None = None,
    receivers: Collection[str] | None = None,
) -> tuple[Playbook | None, list[Problem]]:
    """Validate one parsed playbook document: schema, actions, arguments, the step graph and expressions.

    `secrets` are the configured secret names and `receivers` the configured webhook receivers, checked when given.
    """
    try:
        playbook = doc.validate(Playbook)
    except CustodesError as exc:
        return None, exc.problems
    problems: list[Problem] = []
    ids = [step.id for step in playbook.steps]
    position = {step.id: index for index, step in enumerate(playbook.steps)}
    seen: set[str] = set()
    for index, step in enumerate(playbook.steps):
        here: PathKey = ("steps", index)
        if step.id in seen:
            problems.append(Problem(doc.locate((*here, "id")), f"duplicate step id {step.id!r}"))
        seen.add(step.id)
        for n, need in enumerate(step.needs):
            if need not in position:
                problems.append(Problem(doc.locate((*here, "needs", n)), f"needs names an unknown step {need!r}"))
            elif need == step.id:
                problems.append(Problem(doc.locate((*here, "needs", n)), "a step cannot need itself"))
        if isinstance(step.on_error, GotoStep) and step.on_error.goto not in position:
            problems.append(
                Problem(doc.locate((*here, "on_error", "goto"), at_value=True), f"unknown step {step.on_error.goto!r}")
            )
        problems.extend(_action_problems(doc, registry, step, here))
    try:
        order = [step.id for step in execution_order(playbook.steps)]
    except ValueError as exc:
        cycle_start = next((i for i, step in enumerate(playbook.steps) if step.needs), 0)
        problems.append(Problem(doc.locate(("steps", cycle_start, "needs")), str(exc)))
        order = ids
    before: set[str] = set()
    for step_id in order:
        index = position[step_id]
        step = playbook.steps[index]
        here = ("steps", index)
        variables = CONTEXT_NAMES | ITEM_NAMES if step.for_each is not None else CONTEXT_NAMES
        found: list[tuple[PathKey, str]] = list(_strings(step.with_, (*here, "with")))
        found += [
            ((*here, key), "{{ " + text + " }}")
            for key, text in (("if", step.if_), ("for_each", step.for_each))
            if text
        ]
        for path, text in found:
            problems.extend(
                Problem(doc.locate(path, at_value=True), m)
                for m in _expression_problems(text, before, variables, playbook, secrets)
            )
        before.add(step_id)
    for key, value in playbook.outputs.items():
        for path, text in _strings(value, ("outputs", key)):
            problems.extend(
                Problem(doc.locate(path, at_value=True), m)
                for m in _expression_problems(text, set(ids), CONTEXT_NAMES, playbook, secrets)
            )
    problems += _trigger_problems(doc, playbook)
    if receivers is not None:
        problems += receiver_problems(doc, playbook, receivers)
    return playbook, problems


def _trigger_problems(doc: YamlDocument, playbook: Playbook) -> list[Problem]:
    """Webhook and schedule triggers: their inputs must be declared, complete, and use only their variables."""
    problems: list[Problem] = []
    for kind, trigger, variables in (
        ("webhook", playbook.trigger.webhook, WEBHOOK_NAMES),
        ("schedule", playbook.trigger.schedule, SCHEDULE_NAMES),
    ):
        if trigger is None:
            continue
        here: PathKey = ("trigger", kind)
        for name, value in trigger.inputs.items():
            if name not in playbook.inputs:
                declared = ", ".join(sorted(playbook.inputs)) or "none"
                problems.append(
                    Problem(doc.locate((*here, "inputs", name)), f"{name!r} is not a declared input ({declared})")
                )
            for path, text in _strings(value, (*here, "inputs", name)):
                try:
                    names = referenced_names(text)
                except ExpressionError as exc:
                    problems.append(Problem(doc.locate(path, at_value=True), str(exc)))
                    continue
                available = ", ".join(sorted(variables))
                problems += [
                    Problem(doc.locate(path, at_value=True), f"unknown variable {n!r} (available: {available})")
                    for n in sorted(names - variables)
                ]
        for name, spec in playbook.inputs.items():
            if spec.required and spec.default is None and name not in trigger.inputs:
                problems.append(
                    Problem(doc.locate(here), f"required input {name!r} is not given by the {kind} trigger's inputs")
                )
    return problems


def receiver_problems(doc: YamlDocument | None, playbook: Playbook, receivers: Collection[str]) -> list[Problem]:
    """A webhook trigger must name a configured receiver (checked where the configuration is known)."""
    webhook = playbook.trigger.webhook
    if webhook is None or webhook.receiver in receivers:
        return []
    location = doc.locate(("trigger", "webhook", "receiver"), at_value=True) if doc else Location(playbook.name)
    configured = ", ".join(sorted(receivers)) or "none"
    return [Problem(location, f"no webhook receiver {webhook.receiver!r} is configured (configured: {configured})")]


def unconfigured_receivers(loaded: Sequence[LoadedPlaybook], receivers: Collection[str]) -> list[Problem]:
    """Every enabled loaded playbook whose webhook trigger names a receiver that is not configured."""
    return [
        problem
        for item in loaded
        if item.playbook.enabled
        for problem in receiver_problems(item.doc, item.playbook, receivers)
    ]


def unconfigured_channels(loaded: Sequence[LoadedPlaybook], channels: Collection[str]) -> list[Problem]:
    """Every ``notify.webhook`` step of a loaded playbook whose literal channel is not configured under
    ``responder.channels`` (a channel given as an expression is checked when the step runs)."""
    problems: list[Problem] = []
    configured = ", ".join(sorted(channels)) or "none"
    for item in loaded:
        for index, step in enumerate(item.playbook.steps):
            channel = step.with_.get("channel")
            if step.uses != "notify.webhook" or not isinstance(channel, str) or "{" in channel or channel in channels:
                continue
            here: PathKey = ("steps", index, "with", "channel")
            location = item.doc.locate(here, at_value=True) if item.doc else Location(str(item.file))
            problems.append(
                Problem(location, f"no notify channel {channel!r} under responder.channels (configured: {configured})")
            )
    return problems


def _action_problems(doc: YamlDocument, registry: Registry, step: Step, here: PathKey) -> list[Problem]:
    problems: list[Problem] = []
    if step.uses is None:
        for name in ("approval", "for_each"):
            if getattr(step, name) is not None:
                problems.append(
                    Problem(doc.locate((*here, name)), f"{name} applies to action steps, not sub-playbooks")
                )
        return problems
    if step.uses not in registry:
        known = ", ".join(registry.names())
        problems.append(
            Problem(doc.locate((*here, "uses"), at_value=True), f"unknown action {step.uses!r} (known: {known})")
        )
        return problems
    for message, key in _argument_problems(registry, step.uses, step.with_):
        path: PathKey = (*here, "with", key) if key else (*here, "with") if "with" in _raw(doc, here) else here
        problems.append(Problem(doc.locate(path), message))
    if registry.get(step.uses).destructive and step.approval is None and step.if_ is None:
        problems.append(
            Problem(
                doc.locate((*here, "uses"), at_value=True),
                f"{step.uses} is destructive: give the step an approval, or an 'if' guard saying when it may run",
            )
        )
    return problems


def _raw(doc: YamlDocument, path: PathKey) -> Any:
    node = doc.data
    for key in path:
        node = node[key]
    return node


def _argument_problems(registry: Registry, name: str, arguments: dict[str, Any]) -> list[tuple[str, str | None]]:
    spec = registry.get(name)
    found: list[tuple[str, str | None]] = []
    for key in arguments:
        if key not in spec.parameters:
            found.append((f"{name} has no argument {key!r} (arguments: {', '.join(spec.parameters)})", key))
    literal = {k: v for k, v in arguments.items() if k in spec.parameters and not _templated(v)}
    for key, problem in spec.check_literals(literal).items():
        found.append((f"{name}: argument {key!r} {problem}", key))
    for key in spec.required():
        if key not in arguments:
            found.append((f"{name} requires argument {key!r}", None))
    return found


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, list):
        return any(_templated(item) for item in value)
    if isinstance(value, dict):
        return any(_templated(item) for item in value.values())
    return False


def _strings(value: Any, path: PathKey) -> Iterator[tuple[PathKey, str]]:
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))


def _expression_problems(
    text: str, earlier: set[str], variables: frozenset[str], playbook: Playbook, secrets: Collection[str] | None
) -> list[str]:
    try:
        names = referenced_names(text)
        steps = step_references(text)
        inputs = attribute_references(text, "inputs")
        used_secrets = attribute_references(text, "secrets")
    except ExpressionError as exc:
        return [str(exc)]
    found = [
        f"unknown variable {name!r} (available: {', '.join(sorted(variables))})" for name in sorted(names - variables)
    ]
    found += [f"steps.{ref} does not name a step that runs before this one" for ref in sorted(steps - earlier)]
    found += [f"inputs.{ref} is not a declared input" for ref in sorted(inputs - set(playbook.inputs))]
    if secrets is not None:
        found += [f"secrets.{ref} is not a configured secret" for ref in sorted(used_secrets - set(secrets))]
    return found


def load_playbooks(
    paths: Sequence[Path],
    registry: Registry,
    *,
    secrets: Collection[str] | None = None,
    receivers: Collection[str] | None = None,
) -> list[LoadedPlaybook]:
    """Load and check every playbook under `paths`; raise one CustodesError listing every problem found."""
    loaded: list[LoadedPlaybook] = []
    problems: list[Problem] = []
    names: dict[str, Path] = {}
    for file in playbook_files(paths):
        try:
            doc = load_yaml(file)
        except CustodesError as exc:
            problems.extend(exc.problems)
            continue
        playbook, found = check(doc, registry, secrets=secrets, receivers=receivers)
        problems.extend(found)
        if playbook is None or found:
            continue
        if playbook.name in names:
            problems.append(
                Problem(
                    doc.locate(("name",)),
                    f"playbook name {playbook.name!r} is also used by {names[playbook.name]}",
                )
            )
            continue
        names[playbook.name] = file
        loaded.append(LoadedPlaybook(playbook, file, doc))
    problems += _reference_problems(loaded)
    if problems:
        raise CustodesError(problems, hint="run `custodes playbook validate PATH` after fixing")
    return loaded


def _reference_problems(loaded: Sequence[LoadedPlaybook]) -> list[Problem]:
    """Sub-playbooks and error-handler playbooks must name a loaded playbook at its exact version."""
    refs = {item.playbook.ref for item in loaded}
    problems: list[Problem] = []
    for item in loaded:
        for index, step in enumerate(item.playbook.steps):
            for ref, path in (
                (step.playbook, ("steps", index, "playbook")),
                (
                    step.on_error.playbook if isinstance(step.on_error, HandlerPlaybook) else None,
                    ("steps", index, "on_error", "playbook"),
                ),
            ):
                if ref is None or ref in refs:
                    continue
                location = item.doc.locate(path, at_value=True) if item.doc else Location(str(item.file))
                if ref == item.playbook.ref:
                    problems.append(Problem(location, "a playbook cannot run itself"))
                else:
                    available = ", ".join(sorted(refs)) or "none"
                    problems.append(Problem(location, f"no playbook {ref} is loaded (loaded: {available})"))
    return problems


def lint(item: LoadedPlaybook, registry: Registry) -> list[Problem]:
    """Warnings on a valid playbook: things that work but that a reviewer should look at twice."""
    playbook, doc = item.playbook, item.doc
    if doc is None:
        return []
    found: list[Problem] = []
    if not playbook.description:
        found.append(Problem(doc.locate(("name",)), "no description: say what the playbook is for"))
    trigger = playbook.trigger.findings
    if trigger is not None and not (trigger.min_severity or trigger.rules or trigger.tags):
        found.append(Problem(doc.locate(("trigger", "findings")), "the trigger matches every finding"))
    handlers = handler_ids(playbook.steps)
    for index, step in enumerate(playbook.steps):
        here: PathKey = ("steps", index)
        destructive = step.uses is not None and step.uses in registry and registry.get(step.uses).destructive
        if destructive and step.approval is None:
            found.append(Problem(doc.locate((*here, "uses"), at_value=True), f"{step.uses} runs without approval"))
        if destructive and step.on_error == "continue":
            found.append(Problem(doc.locate((*here, "on_error")), "a failed destructive step is ignored"))
        if step.approval is not None and not step.approval.approvers:
            found.append(Problem(doc.locate((*here, "approval")), "anyone but the requester may approve"))
        if step.id in handlers and (step.needs or step.if_):
            found.append(Problem(doc.locate((*here, "id")), "a handler step's needs and if are ignored"))
        if step.retry is not None and step.retry.attempts > 1 and destructive and "any" in step.retry.on:
            found.append(Problem(doc.locate((*here, "retry")), "retrying a destructive action on any error"))
    return found
