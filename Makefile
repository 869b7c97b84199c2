# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint fuzz clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/avalon-worker demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

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
