# Two commands set everything up on a fresh machine: `make build`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: build test quick lint golden bench fuzz clean

build: $(STAMP)
	$(BIN)/meshc build mesh-spec -o output
	$(BIN)/meshc graph --spec mesh-spec --format svg -o docs/mesh.svg

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The suite starts ~55 Python children: each compiles every module it imports from source when bytecode
# may not be written (PYTHONDONTWRITEBYTECODE, set on some machines), 3.9 s of collection instead of 1.0 s.
# Bytecode goes to .cache/pycache, outside the source tree.
PYENV := PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/.cache/pycache

test: $(STAMP)
	$(PYENV) $(BIN)/python -m pytest

# The suite without the real-consumer tests (marker `consumer`: Puppet, PuppetDB, Envoy, kubernetes-validate,
# Chromium, Graphviz): the loop while editing, on two processes (pytest-xdist; 65 s in one, 41 s in two on this
# 2-core machine). `make test` (what CI runs) runs everything in one process: the consumers' fixtures (a PuppetDB,
# a browser) are started once per process.
quick: $(STAMP)
	$(PYENV) $(BIN)/python -m pytest -q -p no:cacheprovider -m "not consumer" -n 2

# What tests/test_lint.py enforces, for a quick run by hand (`ruff format .` fixes the formatting).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Refresh golden files on purpose; review the diff like code before committing it. The committed output/
# is the golden Kubernetes and Puppet tree (rebuilt first); tests/golden/ holds the sidecar documents.
golden: $(STAMP)
	$(BIN)/meshc build mesh-spec -o output
	MESHC_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m golden
	$(BIN)/meshc graph --spec mesh-spec --format svg -o docs/mesh.svg

# The suite fuzzes 2,000 mutated specs; this runs 20,000 (FUZZ_SPECS=N for more), seeded and deterministic.
FUZZ_SPECS ?= 20000
fuzz: $(STAMP)
	MESHC_FUZZ_SPECS=$(FUZZ_SPECS) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_spec_fuzz.py

# Bytecode cached as an installed meshc has it: where PYTHONDONTWRITEBYTECODE is set, every measured child would
# compile the modules it imports from source (~65 ms of a one-service rebuild's CPU).
bench: $(STAMP)
	$(PYENV) $(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .bench .cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
