#!/usr/bin/env bash
# The dashboard's browser tests drive a real headless Chromium (tests/browser.py): Debian's `chromium`.
# Installed here when missing (apt-get, as root or through sudo); no browser is ever downloaded by a test.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing and there is no apt-get: install Chromium (the dashboard tests need it)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
echo "== installing chromium (Debian package) for the dashboard's browser tests"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
