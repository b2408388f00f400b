# shellcheck shell=bash
# Sourced by scripts that need the pinned tools (checkov, uv): .venv-tools, installed from the hashed
# requirements-tools.lock when missing or older than the lock; sets $tools to its directory.
tools=.venv-tools
if [ ! -f "$tools/.installed" ] || [ requirements-tools.lock -nt "$tools/.installed" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements-tools.lock
  touch "$tools/.installed"
fi
