"""The root Typer application."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Custodes: pull audit events, detect insider threats with Sigma rules, respond with YAML playbooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@app.callback()
def root() -> None:
    """A group whatever commands are added (with one command alone, Typer would run it without its name)."""
