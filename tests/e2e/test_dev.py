"""`gigafactory dev` (the README's first command) on a fresh directory: jobs flow to Succeeded,
branches land in the sample remote, and kubectl can watch it all while it runs."""

import json
import os
import pathlib
import subprocess
import sys
import time

import git

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run_dev(tmp_path: pathlib.Path, *extra: str, kubeconfig: pathlib.Path | None = None) -> pathlib.Path:
    """`gigafactory dev --exit-when-done` in tmp_path, kubectl watching meanwhile; returns the sample remote."""
    work = tmp_path / ".dev"
    kubeconfig = kubeconfig or work / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    env.pop("KUBECONFIG", None)
    process = subprocess.Popen(
        # A relative work dir, as `make dev` passes it.
        [sys.executable, "-m", "gigafactory.cli.main", "dev", "--work-dir", ".dev", "--exit-when-done", *extra],
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


def test_dev_mode_runs_the_examples_to_pushed_branches(tmp_path) -> None:
    _run_dev(tmp_path)


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
