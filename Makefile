# The two commands of the README: `make dev` runs Gigafactory locally, `make test` runs every test.
# Both build the virtual environment they need from requirements.lock first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test venv crds check-crds clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python scripts/kube-tools.py --dest $(BIN)
	touch $(STAMP)

venv: $(STAMP)

dev: $(STAMP)
	$(BIN)/gigafactory dev $(ARGS)

# pytest's exit code 5 (no tests collected) is a failure here, as every non-zero code is.
test: $(STAMP)
	$(BIN)/python -m gigafactory.crdgen --check
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(ARGS)
	scripts/scan-chart.sh

crds: $(STAMP)
	$(BIN)/python -m gigafactory.crdgen

clean:
	rm -rf $(VENV)
