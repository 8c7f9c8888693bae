"""What pyproject.toml cannot say: with `CUSTODES_COMPILE=1` the behaviour-scoring hot path is compiled with mypyc.

Without it (the default, and every editable install) the package is pure Python. Compiling needs mypy and a C
compiler where the wheel is built, and `--no-build-isolation` so that the build sees mypy:

    CUSTODES_COMPILE=1 pip wheel --no-deps --no-build-isolation -w dist .

`make compiled` builds it beside the editable install; `make test` runs the scoring tests against it; the deploy
image ships it (docs/performance.md, "Behaviour scoring").
"""

import os

from setuptools import setup

COMPILED = [
    f"src/custodes/detections/scoring/{name}.py"
    for name in ("features", "baselines", "risk", "engine")  # per event and per person-day: docs/scoring.md, Bars
]

if os.environ.get("CUSTODES_COMPILE") == "1":
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
else:
    setup()
