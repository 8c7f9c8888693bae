"""`make pytest-compiled`'s first step: the scoring hot path imported is the mypyc-compiled one, and it imports
without mypy (the deploy image carries none), so the scoring tests after it test compiled code."""

from __future__ import annotations

import importlib
import sys

COMPILED = ("features", "baselines", "risk", "engine")
"""The modules setup.py compiles (its `COMPILED`)."""


def main() -> None:
    """Exit non-zero naming any module imported from Python source."""
    for name in ("mypy", "mypyc", "librt", "mypy_extensions"):
        sys.modules[name] = None  # type: ignore[assignment]  # an import of them fails
    files = {name: importlib.import_module(f"custodes.detections.scoring.{name}").__file__ or "" for name in COMPILED}
    source = {name: path for name, path in files.items() if path.endswith(".py")}
    if source:
        sys.exit(f"not compiled: {source}")
    print("compiled:", ", ".join(sorted(files.values())))


if __name__ == "__main__":
    main()
