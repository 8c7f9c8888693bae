"""What every command shares: consoles, common options, and the one way user errors are reported."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from custodes.durations import MAX_DAYS
from custodes.errors import CustodesError, describe
from custodes.redaction import redact, redact_every_record

if TYPE_CHECKING:
    from custodes.config import Settings
    from custodes.sources import SourceSettings

console = Console(emoji=False, markup=False)
"""Standard output. Text is printed as it is: never as an emoji code (":1234:" in a file position) nor as Rich
markup (a path, rule title, comment or vendor error holding "[/x]" once failed the command with a MarkupError,
and "[a-z]" in a message vanished); styles are given as such (`styled`, `Text`, `style=`)."""
err = Console(stderr=True, emoji=False, markup=False)


def days_within(value: float | None) -> float | None:
    """Check a number of days given as an option: from 0 to MAX_DAYS, and a number (not nan, inf)."""
    if value is not None and not 0 <= value <= MAX_DAYS:  # NaN fails both comparisons
        raise typer.BadParameter(f"must be a number of days from 0 to {MAX_DAYS}")
    return value


def styled(label: str, style: str, text: str = "") -> Text:
    """`label` in `style`, then `text` exactly as it is."""
    return Text.assemble((label, style), text)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, set through the function given to the count done so far (`total` None: not known
    beforehand); shown only on a terminal (so piped JSON stays clean), and off one Rich's progress is not even
    imported."""
    if not err.is_terminal:
        yield lambda done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Configuration file (default: ./custodes.yaml or $CUSTODES_CONFIG).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TOKEN_VARIABLE = "CUSTODES_API_TOKEN"  # noqa: S105 (the variable's name, not a token)
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Your API token (server.api_tokens) as a reference, env:NAME or file:/path; default: "
        f"env:{TOKEN_VARIABLE}. You are recorded as the token's name.",
    ),
]


def identify(settings: Settings, token: str | None, needed: str) -> tuple[str, str]:
    """The name of the configured API token presented (a reference, else $CUSTODES_API_TOKEN), which must hold
    the `needed` role or more: (name, role), who a command acts as, in the same namespace as the API's callers."""
    from custodes.config import resolve_secret
    from custodes.server.auth import find_token, presented
    from custodes.server.endpoints import allowed

    reference = token or f"env:{TOKEN_VARIABLE}"
    try:
        value = resolve_secret(reference).reveal()
    except ValueError as exc:
        raise CustodesError(
            str(exc), hint=f"pass --token env:NAME (or set {TOKEN_VARIABLE}) with a token of server.api_tokens"
        ) from None
    found = find_token(settings.server.api_tokens, presented(value))
    if found is None:
        raise CustodesError(f"{reference} is not one of server.api_tokens", hint="use your own API token")
    if not allowed(found.role, needed):
        raise CustodesError(f"this needs the {needed} role; the token {found.name!r} has {found.role}")
    return found.name, found.role


def run(work: Callable[[], object]) -> None:
    """Run a command body (sync, or returning a coroutine), secrets masked in its log lines; user errors print one
    located line per problem, exit 2; any other error prints one line (its type and message), exit 1."""
    redact_every_record()
    try:
        result = work()
        if inspect.iscoroutine(result):
            import asyncio  # only commands that run a coroutine pay for importing it

            asyncio.run(result)
    except CustodesError as exc:
        for problem in exc.problems:
            err.print(styled("error:", "red", f" {redact(str(problem))}"), highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"hint: {exc.hint}", style="dim", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # anything else still gets one line; CUSTODES_DEBUG=1 shows the traceback
        if os.environ.get("CUSTODES_DEBUG"):
            raise
        err.print(styled("error:", "red", f" {redact(describe(exc))}"), highlight=False, soft_wrap=True)
        err.print("hint: set CUSTODES_DEBUG=1 to see where it failed", style="dim", highlight=False)
        raise typer.Exit(1) from None


def settings_from(config: Path | None) -> Settings:
    """Load settings, failing as a located CustodesError."""
    from custodes.config import load_settings

    return load_settings(config)


def source_from(config: Path | None, name: str) -> SourceSettings:
    """Source `name` of the settings; a built-in source is taken as it is when no configuration applies (the
    settings models, a tenth of a second to load, are then not loaded)."""
    from custodes.sources import builtin_source

    return builtin_source(config, name) or settings_from(config).source(name)
