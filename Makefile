# Front door: `make demo` and `make test` each set up .venv themselves when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pytest-xdist: a test process per core, an idle one takes tests still waiting (WORKERS= runs one)
WORKERS ?= -n auto --dist worksteal

.PHONY: demo test test-all lint mutation bench reproduce reproduce-smoke clean-venv

# The virtual environment, (re)installed whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: max vs TDGS on the embedded digits set (offline), 5 epochs each, into outputs/demo/<time>/
demo: $(STAMP)
	$(VENV)/bin/tdgs-train -m experiment=demo
	@latest=$$(ls -td outputs/demo/*/ | head -1); echo; echo "Results in $$latest:"; \
	$(PY) -m tdgs.results $$latest

## test: the linter, then the default test suite (slow tests excluded) on a worker per core; what CI runs
test: lint
	$(PY) -m pytest -q $(WORKERS)

## lint: ruff's checks and formatting (configured in pyproject.toml); `ruff format .` fixes the latter
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## test-all: every test, slow ones included
test-all: $(STAMP)
	$(PY) -m pytest -q -m '' $(WORKERS)

## mutation: mutation testing of the poolers and the report's statistics ([tool.mutmut] in pyproject.toml,
## docs/development.md); not part of CI. Re-running it tests only the mutants whose code or tests changed
mutation: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,mutation]'
	$(VENV)/bin/mutmut run --max-children $(or $(CHILDREN),$(shell nproc))
	$(PY) scripts/mutation_counts.py mutants

## bench: speed benchmark: poolers, CNN train steps, epoch throughput, peak memory (scripts/bench.py)
bench: $(STAMP)
	$(PY) scripts/bench.py

## reproduce: every experiment of the deck (MNIST, CIFAR-10: downloads them) and the report, in one folder
reproduce: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/reproduce.sh $(ARGS)

## reproduce-smoke: the same path on synthetic data, 1 epoch, 2 seeds (minutes)
reproduce-smoke: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/reproduce.sh --smoke $(ARGS)

clean-venv:
	rm -rf $(VENV)
