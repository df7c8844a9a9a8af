# The two commands a new user needs:  make run  /  make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-lowest lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Set up and serve on the embedded default (SQLite in ./onehazel-data, no configuration).
run: $(STAMP)
	$(BIN)/onehazel serve

## Set up and run the whole test suite (PostgreSQL tests skip if none is reachable), plus lint.
## One pytest process per core (pytest-xdist): most tests wait on a database or a server process.
test: $(STAMP)
	$(BIN)/pytest -n auto
	$(MAKE) --no-print-directory lint

## The same without the slow (fuzz, soak, crash) cases.
test-fast: $(STAMP)
	$(BIN)/pytest -n auto -m "not slow"

## The test suite on the lowest versions pyproject.toml allows (.ci/lowest-constraints.txt), in
## .venv-lowest: checks that the declared lower bounds are real. Not part of `make test`.
test-lowest:
	$(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/pip install --quiet --upgrade pip
	.venv-lowest/bin/pip install --quiet -c .ci/lowest-constraints.txt -e '.[dev]'
	.venv-lowest/bin/pytest -n auto

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-lowest onehazel-data .pytest_cache .mypy_cache .ruff_cache
