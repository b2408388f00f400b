#!/usr/bin/env bash
# `make lock`: the hashed lock files, resolved by uv (from .venv-tools, itself installed from the hashed
# requirements-tools.lock) for every platform (--universal) on Python 3.11, each pin with the sha256 of
# every file PyPI has for it, so that `pip install --require-hashes` installs exactly these bytes:
#   requirements.lock        pyproject's dependencies (+ setuptools to build the package): the image's
#   requirements-test.lock   the same pins, plus the `test` extra and localcluster/pyproject.toml's
#                            dependencies (the embedded API server): `make venv`, the tests
#   requirements-tools.lock  requirements-tools.in: checkov (scripts/scan-chart.sh) and uv itself
#   tests/agents/aider.lock  tests/agents/aider.in: the Aider the agent tests run, in a venv of its own
# (tests/agents/package-lock.json, Claude Code and Codex, is npm's: `npm install --package-lock-only` there)
# A pin already in a lock file is kept unless ARGS says otherwise (e.g. ARGS=--upgrade, or
# ARGS="--upgrade-package kopf").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools-venv.sh
compile=("$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes
         --custom-compile-command "make lock" "$@")
echo "setuptools>=68" | "${compile[@]}" pyproject.toml - -o requirements.lock
echo "setuptools>=68" | "${compile[@]}" pyproject.toml localcluster/pyproject.toml - --extra test -c requirements.lock \
  -o requirements-test.lock
"${compile[@]}" requirements-tools.in -o requirements-tools.lock
"${compile[@]}" tests/agents/aider.in -o tests/agents/aider.lock
