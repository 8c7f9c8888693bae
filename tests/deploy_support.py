"""What the tests of deploy/ share: reading compose.yaml the way Compose does (merge keys, `${VAR}` interpolation),
the image's entry point, parsing a command line with the real CLI, and rendering the Helm chart with Helm's engine."""

from __future__ import annotations

import json
import re
import secrets
from io import StringIO
from pathlib import Path
from typing import Any

import typer
from ruamel.yaml import YAML

from custodes.cli import app
from custodes.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CHART = DEPLOY / "helm" / "custodes"

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def load_yaml_text(text: str) -> Any:
    """One YAML document, with merge keys (`<<: *anchor`) resolved as Compose resolves them."""
    return YAML(typ="safe").load(StringIO(text))


def interpolate(node: Any, environ: dict[str, str]) -> Any:
    """Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
    `$$`; a required variable that is unset (or empty, with `:`) raises ValueError naming it."""
    if isinstance(node, dict):
        return {key: interpolate(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environ) for value in node]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if name is None:
            return "$"
        value = environ.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and missing:
            raise ValueError(f"required variable {name} is missing: {arg}")
        if op is not None and op.endswith("-") and missing:
            return arg
        return value or ""

    return _VARIABLE.sub(replace, node)


def required_variables(text: str) -> set[str]:
    """The variables a compose file requires (`${VAR:?...}`)."""
    return {m.group("name") for m in _VARIABLE.finditer(text) if m.group("op") in {":?", "?"}}


def example_variables() -> list[str]:
    """The variables deploy/.env.example lists (commented-out ones too)."""
    names = []
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.append(match.group(1))
    return names


def generated_env() -> dict[str, str]:
    """A deploy/.env as its comments say to make it: every required value a fresh `openssl rand -hex 32`."""
    required = required_variables(COMPOSE.read_text(encoding="utf-8"))
    return {name: secrets.token_hex(32) for name in required}


def compose_model(environ: dict[str, str]) -> dict[str, Any]:
    """compose.yaml after merge keys and interpolation with `environ` (what `docker compose config` shows)."""
    model = interpolate(load_yaml_text(COMPOSE.read_text(encoding="utf-8")), environ)
    assert isinstance(model, dict)
    return model


def custodes_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the Custodes image (built from deploy/Dockerfile)."""
    return {
        name: service
        for name, service in model["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order as (INSTRUCTION, arguments), continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0], line.split(None, 1)[1].strip()) for line in lines]


def dockerfile_instruction(name: str) -> list[str]:
    """The exec (JSON) form arguments of the Dockerfile's last `name` instruction (ENTRYPOINT, CMD); for
    HEALTHCHECK, those of its CMD."""
    arguments = [args for instruction, args in dockerfile_instructions() if instruction == name][-1]
    if name == "HEALTHCHECK":
        arguments = arguments.split(" CMD ", 1)[1]
    value = json.loads(arguments)
    assert isinstance(value, list)
    return [str(part) for part in value]


def parse_command_line(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `custodes ARGS` with the real command line (no command runs): the command's name and its parameters;
    raises typer.BadParameter (a UsageError) for what the CLI refuses."""
    group = typer.main.get_command(app)
    command = group.get_command(group.context_class(group), args[0])  # type: ignore[attr-defined]
    if command is None:
        raise typer.BadParameter(f"no such command: {args[0]}")
    context = command.make_context(args[0], list(args[1:]))
    return args[0], dict(context.params)


def setting_at(settings: Settings, variable: str) -> object:
    """The setting a `CUSTODES_SECTION__KEY` variable overrides (AttributeError if there is none)."""
    node: object = settings
    for part in variable.removeprefix("CUSTODES_").lower().split("__"):
        node = getattr(node, part)
    return node


def render_chart(values: dict[str, Any] | None = None, *, release: str = "soc") -> list[dict[str, Any]]:
    """The chart's manifests as Helm itself renders them offline (`helm template`), each parsed."""
    from helm_python.chart import Chart

    with Chart.load(CHART) as chart:
        rendered = chart.render(values, name=release, namespace="security", is_install=True)
    manifests: list[dict[str, Any]] = []
    for text in rendered.values():
        manifests.extend(doc for doc in YAML(typ="safe").load_all(StringIO(text)) if doc is not None)
    return manifests
