# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
# The oldest Python the project supports (pyproject.toml's requires-python): checked before pip
# runs, because pip with an older one backtracks through old releases for many minutes.
MIN_PYTHON ?= 3.10
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check bench lint fuzz clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < tuple(map(int, "$(MIN_PYTHON)".split("."))))' 2>/dev/null \
	  || { echo "avalon-worker needs Python >= $(MIN_PYTHON), and '$(PYTHON)' is $$($(PYTHON) -c 'import platform; print("Python " + platform.python_version())' 2>/dev/null || echo 'not a working Python');" \
	       "give a newer one, e.g. make $(or $(MAKECMDGOALS),demo) PYTHON=python3.12" >&2; exit 1; }
	@echo "installing avalon-worker and its test dependencies into $(VENV) with pip (a minute or two the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/avalon-worker demo

# Tests run in parallel (pytest-xdist): most slow tests wait on worker processes, a database or a
# timeout, so more test processes than cores pay (measured in docs/performance.md). TEST_PROCESSES=0
# runs them in this process, one after another (for a debugger, or to read one failure's output).
TEST_PROCESSES ?= 4
CHECK_PROCESSES ?= 2

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES)

# The inner loop while working: everything but the tests marked slow (worker processes, PostgreSQL,
# Docker, Gramine, long property runs); well under 30 s. CI runs `make test`, the whole suite.
check: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m 'not slow' -n $(CHECK_PROCESSES)

# Exact versions: a new linter release must not turn CI red without a change here.
lint: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet 'ruff==0.17.6' 'mypy==2.4.1'
	$(BIN)/ruff check src tests benchmarks scripts  # rules in pyproject.toml: import order, complexity bound
	$(BIN)/mypy src  # strict, configured in pyproject.toml

# Long fuzz run against a live worker; CI runs a bounded stage (.ci/run). FUZZ_COUNT, FUZZ_SEED.
FUZZ_COUNT ?= 200000
fuzz: $(BIN)/.installed
	$(BIN)/python scripts/fuzz.py --count $(FUZZ_COUNT) --seed $${FUZZ_SEED:-$$(date +%s)}

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
