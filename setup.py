"""What pyproject.toml cannot say: with `CUSTODES_COMPILE=1` the behaviour-scoring hot path is compiled with mypyc.

Without it (the default, and every editable install) the package is pure Python. Compiling needs mypy and a C
compiler where the wheel is built, and `--no-build-isolation` so that the build sees mypy:

    CUSTODES_COMPILE=1 pip wheel --no-deps --no-build-isolation -w dist .

The modules compiled are pyproject.toml's `[tool.custodes] compiled`. `make compiled` builds it beside the editable
install; `make test` runs the scoring tests against it; the deploy image ships it (docs/performance.md, "Behaviour
scoring").
"""

import os
import tomllib
from pathlib import Path

from setuptools import setup

if os.environ.get("CUSTODES_COMPILE") == "1":
    from mypyc.build import mypycify

    project = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text(encoding="utf-8"))
    modules = project["tool"]["custodes"]["compiled"]
    setup(ext_modules=mypycify([f"src/{name.replace('.', '/')}.py" for name in modules], opt_level="3"))
else:
    setup()
