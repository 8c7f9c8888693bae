"""`make pytest-compiled`'s first step: the scoring hot path imported is the mypyc-compiled one, and it imports
without mypy (the deploy image carries none), so the scoring tests after it test compiled code."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def main() -> None:
    """Exit non-zero naming any module of `[tool.custodes] compiled` (what setup.py compiles) imported from source."""
    modules: list[str] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["custodes"]["compiled"]
    for name in ("mypy", "mypyc", "librt", "mypy_extensions"):
        sys.modules[name] = None  # type: ignore[assignment]  # an import of them fails
    files = {name: importlib.import_module(name).__file__ or "" for name in modules}
    source = {name: path for name, path in files.items() if path.endswith(".py")}
    if source:
        sys.exit(f"not compiled: {source}")
    print("compiled:", ", ".join(sorted(files.values())))


if __name__ == "__main__":
    main()
