# Two commands do everything (see README): `make demo` trains, `make test` checks.
# Both create the virtual environment first when it is missing or older than the dependency files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo train test lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m src.train experiment=demo $(ARGS)

train: $(STAMP)
	$(PY) -m src.train $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# test files run on TEST_WORKERS processes, a file's tests together (module fixtures such as the
# SLURM cluster start once); most of a test is single-threaded start-up, so 2 workers use 2 cores
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)
