"""The `custodes` console script: a command line naming one command group imports that group's module alone.

Importing every module and building every command takes about a fifth of a second, which short commands such as
`rules match` over a small file would otherwise pay on each start. `custodes --help`, an unknown name or a
leading option import them all, so the help and the errors are those of the whole application.
"""

from __future__ import annotations

import sys
from importlib import import_module

import custodes.cli as cli
from custodes.cli import MODULES


def main(prog_name: str | None = None) -> None:
    """Run the command line in `sys.argv` (shown as `prog_name`, else as the script was called)."""
    arguments = sys.argv[1:]
    module = MODULES.get(arguments[0]) if arguments else None
    if module is not None:
        import_module(f"custodes.cli.{module}")
    application = import_module("custodes.cli.root").app if module is not None else cli.app
    application(prog_name=prog_name)
