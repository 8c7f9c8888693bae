"""What every command shares: consoles, common options, and the one way user errors are reported."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from custodes.config import Settings, load_settings
from custodes.errors import CustodesError, describe

console = Console()
err = Console(stderr=True)

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


def run(work: Callable[[], object]) -> None:
    """Run a command body (sync, or returning a coroutine); user errors print one located line per problem, exit 2;
    any other error prints one line (its type and message), exit 1."""
    try:
        result = work()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except CustodesError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {problem}", highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"[dim]hint: {exc.hint}[/dim]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # anything else still gets one line; CUSTODES_DEBUG=1 shows the traceback
        if os.environ.get("CUSTODES_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {describe(exc)}", highlight=False, soft_wrap=True)
        err.print("[dim]hint: set CUSTODES_DEBUG=1 to see where it failed[/dim]", highlight=False)
        raise typer.Exit(1) from None


def settings_from(config: Path | None) -> Settings:
    """Load settings, failing as a located CustodesError."""
    return load_settings(config)
