"""`gigafactory dev` (the README's first command) on a fresh directory: jobs flow to Succeeded,
branches land in the sample remote, and kubectl can watch it all while it runs."""

import fcntl
import json
import os
import pathlib
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import time

import git
import pyte
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run_dev(tmp_path: pathlib.Path, *extra: str, kubeconfig: pathlib.Path | None = None) -> pathlib.Path:
    """`gigafactory dev --exit-when-done` in tmp_path, kubectl watching meanwhile; returns the sample remote."""
    work = tmp_path / ".dev"
    kubeconfig = kubeconfig or work / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    env.pop("KUBECONFIG", None)
    process = subprocess.Popen(
        # A relative work dir, as `make dev` passes it.
        [sys.executable, "-m", "gigafactory.cli.main", "dev", "--work-dir", ".dev", "--exit-when-done", "--port", "0", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    kubectl = ROOT / ".venv" / "bin" / "kubectl"
    phases_seen: set[str] = set()
    try:
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline:
            if kubeconfig.exists() and kubectl.exists():
                out = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "get", "agentjobs", "-A", "-o", "json"],
                                     capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
                if out.returncode == 0:
                    phases_seen |= {(i.get("status") or {}).get("phase", "Pending") for i in json.loads(out.stdout)["items"]}
            time.sleep(0.2)
        output = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "all example jobs finished" in output
    remote = git.Repo(work / "repos" / "sample.git")
    branches = sorted(h.name for h in remote.heads if h.name != "main")
    assert branches == ["agent/add-docstrings", "agent/fix-rounding", "agent/write-tests"]
    task = (remote.heads["agent/fix-rounding"].commit.tree / ".gigafactory" / "task.md").data_stream.read().decode()
    assert task == "Round order totals to two decimals.\n"
    if kubectl.exists():
        assert phases_seen, "kubectl never saw the jobs while dev mode ran"
    return work / "repos" / "sample.git"


def _on_a_terminal(command: list[str], cwd: pathlib.Path, env: dict[str, str], *, timeout: float = 120,
                   columns: int = 160, lines: int = 40) -> tuple[int, str]:
    """Run `command` on a pseudo-terminal and return its exit code and the screen a person would
    see at the end (a VT100 emulator replays every byte: a line the program erased is gone)."""
    screen = pyte.Screen(columns, lines)
    stream = pyte.ByteStream(screen)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    process = subprocess.Popen(command, cwd=cwd, env={**env, "TERM": "xterm-256color"}, stdin=slave, stdout=slave,
                               stderr=slave, start_new_session=True)
    os.close(slave)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the program exited and closed the terminal
                    break
                if not data:
                    break
                stream.feed(data)
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return process.returncode, "\n".join(line.rstrip() for line in screen.display).strip()


@pytest.mark.timeout(600)  # three runs of up to 120 s each, and their start-ups
def test_make_dev_runs_again_and_again_with_every_example_succeeded(tmp_path) -> None:
    """`make dev ARGS=--exit-when-done` three times in one clone: each run starts clean (and says so),
    every example job Succeeded, and the last words stay on the screen below a table that shows the
    phases each job went through."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    for name in ("KUBECONFIG", "COLUMNS", "LINES"):  # the terminal's own size, not one a test runner exported
        env.pop(name, None)
    command = [sys.executable, "-m", "gigafactory.cli.main", "dev", "--work-dir", ".dev", "--exit-when-done",
               "--port", "0"]  # any free port: tests run side by side
    for run in range(3):
        code, screen = _on_a_terminal(command, tmp_path, env)
        assert code == 0, screen
        assert ("starting clean" in screen) == (run > 0), screen
        assert "all example jobs finished; branches pushed to" in screen, screen
        rows = {line.split()[0]: line for line in screen.splitlines() if line.split()[:1] and line.split()[0] in
                ("add-docstrings", "fix-rounding", "write-tests")}
        assert set(rows) == {"add-docstrings", "fix-rounding", "write-tests"}, screen
        for name, row in rows.items():
            assert "Pending → Bound → Running → Succeeded" in row, screen
            assert f"agent/{name}" in row, row
        remote = git.Repo(tmp_path / ".dev" / "repos" / "sample.git")
        assert sorted(h.name for h in remote.heads if h.name != "main") == [
            "agent/add-docstrings", "agent/fix-rounding", "agent/write-tests"]


def test_a_busy_port_is_one_clear_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "gigafactory.cli.main", "dev", "--work-dir", ".dev", "--port", str(port)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})
    assert result.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in result.stdout and "--port" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_dev_mode_runs_on_an_existing_api_server(tmp_path, kubeconfig, kubectl) -> None:
    """`gigafactory dev --server KUBECONFIG`: the same flow on the session's API server (kube-apiserver
    v1.28.7 in the real pass): CRDs installed there, the example jobs Succeeded with their branches."""
    try:
        _run_dev(tmp_path, "--server", kubeconfig, kubeconfig=pathlib.Path(kubeconfig))
        phases = kubectl("get", "agentjobs", "-n", "default", "-o", "jsonpath={.items[*].status.phase}").stdout.split()
        assert phases == ["Succeeded"] * 3
    finally:
        # The session's server outlives this test: take the dev factory and jobs away (no operator runs
        # now, so their finalizers are lifted by hand).
        for kind, names in (("agentjobs", ["add-docstrings", "fix-rounding", "write-tests"]), ("factories", ["dev"])):
            for name in names:
                args = ["-n", "default"] if kind == "agentjobs" else []
                kubectl("patch", kind, name, *args, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
                kubectl("delete", kind, name, *args, "--wait=false", check=False)
        kubectl("delete", "leases", "-n", "gigafactory-dev", "--all", check=False)
