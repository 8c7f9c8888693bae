# Everything a fresh machine needs: `make demo` and `make test` create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

COMPILED := build/compiled

.PHONY: install demo test lint typecheck pytest compiled pytest-compiled bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/custodes demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite runs in WORKERS processes, each test file in one (its module fixtures made once); WORKERS=0 runs it in
# this process (for a debugger or -x).
WORKERS ?= 2
XDIST   := $(if $(filter 0,$(WORKERS)),-p no:xdist,-n $(WORKERS) --dist loadfile)

pytest: $(STAMP)
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

# The scoring hot path compiled with mypyc (setup.py), installed apart from the editable install; its tests run
# against it with PYTHONPATH, after checking that the compiled modules are the ones imported.
compiled: $(STAMP)
	rm -rf build
	CUSTODES_COMPILE=1 $(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w build/wheel .
	$(BIN)/pip install --quiet --no-deps --target $(COMPILED) build/wheel/custodes-*.whl

pytest-compiled: compiled
	PYTHONPATH=$(COMPILED) $(BIN)/python tests/check_compiled.py
	PYTHONPATH=$(COMPILED) $(BIN)/pytest -q -p no:cacheprovider $(XDIST) $(wildcard tests/test_scoring_*.py)

test: lint typecheck pytest pytest-compiled

bench: $(STAMP)
	@for script in $(wildcard bench/*.py); do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
