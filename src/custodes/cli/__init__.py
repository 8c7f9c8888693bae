"""The `custodes` command line: one Typer app (`custodes.cli.root`); each module here adds commands to it.

`custodes.cli.root`, read from this package, is the application with every module's commands added. The modules
are imported when it is first read (or one at a time by the console script, `main.py`), not with the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from custodes.cli.root import app

MODULES: Final = {
    "access": "access",
    "inventory": "access",
    "audit": "audit",
    "case": "cases",
    "feedback": "cases",
    "connectors": "connectors",
    "migrate": "database",
    "evidence": "evidence",
    "hunt": "hunts",
    "playbook": "playbooks",
    "report": "report",
    "rules": "rules",
    "run": "runs",
    "eval": "scoring",
    "entity": "scoring",
    "directory": "scoring",
    "simulate": "scoring",
    "serve": "service",
    "demo": "service",
    "replay": "service",
    "init": "service",
}
"""Each top-level command or group and the module of `custodes.cli` that adds it."""


def __getattr__(name: str) -> object:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in sorted(set(MODULES.values())):
        import_module(f"custodes.cli.{module}")
    from custodes.cli.root import app

    globals()["app"] = app
    return app


__all__ = ["MODULES", "app"]
