# The two commands of the README: `make dev` runs Gigafactory locally, `make test` runs every test.
# Both build the virtual environment they need from requirements-test.lock first: every file pip
# installs must match a sha256 in the lock (--require-hashes). `make lock` makes the lock files.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The real control plane (kube-apiserver v1.28.7 + etcd + kube-controller-manager) for the second
# test pass: $KUBEBUILDER_ASSETS, else what ../shared/k8s/assets unpacks. Empty on a clone without it.
KUBE_ASSETS = $(or $(KUBEBUILDER_ASSETS),$(shell [ -x ../shared/k8s/assets ] && ../shared/k8s/assets 2>/dev/null))
PYTEST = $(BIN)/python -m pytest -n 2 --dist loadgroup

.PHONY: dev test test-embedded test-real venv agents lock crds check-crds clean chromium screenshots

# The package itself, and the embedded API server's development package (localcluster/), are built
# with the setuptools of the lock (--no-build-isolation), not one that pip would fetch, unpinned and
# unchecked, for an isolated build; their dependencies come from the lock alone (--no-deps).
$(STAMP): requirements-test.lock pyproject.toml localcluster/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements-test.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e localcluster
	$(BIN)/python scripts/kube-tools.py --dest $(BIN)
	touch $(STAMP)

venv: $(STAMP)

# The agent CLIs tests/agents runs for real (Claude Code and Codex from npm with a committed
# package-lock.json, Aider in its own venv from a hashed lock), pinned, into .cache/agents/: once, about
# 2 minutes and 1.5 GB on a fresh clone; nothing when the locks did not change (tests/agents/install.py).
agents: $(STAMP)
	$(BIN)/python -m tests.agents.install

dev: $(STAMP)
	$(BIN)/gigafactory dev $(ARGS)

# Every test on the embedded API server, then every test that touches the API again on a real
# kube-apiserver (tests/controlplane.py starts one per pytest worker) when its binaries are at hand.
# pytest's exit code 5 (no tests collected) is a failure here, as every non-zero code is.
test: $(STAMP) chromium agents
	$(BIN)/python -m gigafactory.crdgen --check
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check operator localcluster tests benchmarks
	$(BIN)/mypy --strict operator/gigafactory
	$(PYTEST) $(ARGS)
	$(MAKE) --no-print-directory test-real
	scripts/scan-chart.sh

test-embedded: $(STAMP) chromium agents
	$(PYTEST) $(ARGS)

# The dashboard's tests drive Debian's chromium: installed when missing (scripts/chromium.sh).
chromium:
	@scripts/chromium.sh

# The screenshots of docs/dashboard.md, taken by the dashboard's browser test against `gigafactory dev`.
screenshots: $(STAMP) chromium
	GIGAFACTORY_SCREENSHOTS=docs $(BIN)/python -m pytest -p no:randomly tests/e2e/test_dashboard.py

test-real: $(STAMP) agents
	@if [ -n "$(KUBE_ASSETS)" ]; then \
	  echo "== the same tests against kube-apiserver v1.28.7 ($(KUBE_ASSETS))"; \
	  KUBEBUILDER_ASSETS="$(KUBE_ASSETS)" GIGAFACTORY_TEST_SERVER=real $(PYTEST) $(ARGS); \
	else \
	  echo "== no Kubernetes binaries (KUBEBUILDER_ASSETS, ../shared/k8s): the real-server pass is left out"; \
	fi

# requirements.lock, requirements-test.lock and requirements-tools.lock (scripts/lock.sh, uv), from
# pyproject.toml and requirements-tools.in, every pin hashed. ARGS=--upgrade to move the pins.
lock:
	scripts/lock.sh $(ARGS)

crds: $(STAMP)
	$(BIN)/python -m gigafactory.crdgen

clean:
	rm -rf $(VENV) .cache/agents
