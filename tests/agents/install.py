"""Install the pinned agent CLIs the tests run, once, into .cache/agents/ (gitignored).

- Claude Code and Codex: `npm ci` of tests/agents/package.json + package-lock.json (every package
  pinned with its sha512 integrity) into .cache/agents/npm. Both ship native binaries in per-platform
  packages; Claude Code's postinstall copies its own over a placeholder.
- Aider: its own virtual environment, .cache/agents/aider, from tests/agents/aider.lock
  (`pip install --require-hashes`, every dependency pinned and hashed; `make lock` makes it).

A stamp per tool records the hash of what it was installed from, so a changed lock reinstalls and an
unchanged one costs nothing. Workers of one pytest run (xdist) take turns through a file lock.
`python -m tests.agents.install` installs and prints where the commands are and what it cost.
"""

import contextlib
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = pathlib.Path(os.environ.get("GIGAFACTORY_AGENTS_CACHE", ROOT / ".cache" / "agents"))
NPM_DIR = CACHE / "npm"
AIDER_DIR = CACHE / "aider"
NPM_FILES = (HERE / "package.json", HERE / "package-lock.json")
AIDER_LOCK = HERE / "aider.lock"


class InstallError(RuntimeError):
    pass


def bin_dirs() -> list[pathlib.Path]:
    """Where `claude`, `codex` and `aider` are once installed: put these on the runner's PATH."""
    return [NPM_DIR / "node_modules" / ".bin", AIDER_DIR / "bin"]


def _digest(*paths: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], **kwargs: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise InstallError(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def _npm() -> bool:
    stamp, want = NPM_DIR / ".installed", _digest(*NPM_FILES)
    if stamp.exists() and stamp.read_text() == want and all((d / name).exists() for d in bin_dirs()[:1] for name in ("claude", "codex")):
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed: the Claude Code and Codex tests need Node.js 20 or later with npm")
    shutil.rmtree(NPM_DIR, ignore_errors=True)
    NPM_DIR.mkdir(parents=True)
    for source in NPM_FILES:
        shutil.copy(source, NPM_DIR / source.name)
    # `npm ci`: exactly the lock, integrity-checked, or nothing. Scripts run: Claude Code's postinstall
    # puts its platform's binary in place.
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=NPM_DIR)
    stamp.write_text(want)
    return True


def _aider() -> bool:
    stamp, want = AIDER_DIR / ".installed", _digest(AIDER_LOCK)
    if stamp.exists() and stamp.read_text() == want and (AIDER_DIR / "bin" / "aider").exists():
        return False
    shutil.rmtree(AIDER_DIR, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(AIDER_DIR)])
    _run([str(AIDER_DIR / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--require-hashes",
          "-r", str(AIDER_LOCK)])
    stamp.write_text(want)
    return True


def ensure() -> dict[str, float]:
    """Install what is missing or stale; returns the seconds each install took (empty: all was there)."""
    took: dict[str, float] = {}
    with _locked():
        for name, install in (("npm", _npm), ("aider", _aider)):
            start = time.monotonic()
            if install():
                took[name] = time.monotonic() - start
    return took


def main() -> int:
    try:
        took = ensure()
    except InstallError as exc:
        print(f"installing the agent CLIs failed: {exc}", file=sys.stderr)
        return 1
    for name, seconds in took.items():
        print(f"installed the {name} agent CLIs into {CACHE} in {seconds:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
