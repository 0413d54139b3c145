# Front door: `make test` and (later) `make demo` each set up .venv themselves when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-all bench clean-venv

# The virtual environment, (re)installed whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## test: the default test suite (slow tests excluded)
test: $(STAMP)
	$(PY) -m pytest -q

## test-all: every test, slow ones included
test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

## bench: pooler timings against F.max_pool2d (see scripts/bench.py)
bench: $(STAMP)
	$(PY) scripts/bench.py

clean-venv:
	rm -rf $(VENV)
