"""docs/quickstart.md, command by command, on a real kube-apiserver: what a platform engineer types on
day one must work as written. Each ```sh block runs in bash, in order, from the repository's root,
with KUBECONFIG naming the test server (never the user's). `docker` is a stand-in that records what it
was asked (no Docker engine runs here), and there is no kubelet, so the pods never start: the job
stays Pending, which the doc's own `gigafactory explain` then says."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "quickstart.md"
HELM = ROOT / ".venv" / "bin" / "helm"

pytestmark = [
    pytest.mark.real_only,  # helm install of the admission policies and RBAC: a real server's work
    pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)"),
]


def _blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_every_quickstart_command_works_as_written(kubeconfig, tmp_path) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "docker").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/docker.log\n')
    (stubs / "docker").chmod(0o755)
    env = {"PATH": f"{stubs}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "KUBECONFIG": kubeconfig, "LANG": "C.UTF-8"}
    blocks = _blocks()
    assert len(blocks) >= 6, "the quickstart lost its steps"
    outputs = []
    try:
        for block in blocks:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", "export REGISTRY=${REGISTRY:-}\n" + block],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"this block of {DOC.name} failed:\n{block}\n{result.stdout}\n{result.stderr}"
            outputs.append(result.stdout)
    finally:
        # Whatever step failed, leave the session's server as it was.
        subprocess.run(["bash", "-c", "kubectl delete namespace team-a --ignore-not-found --wait=false; "
                        "helm uninstall gigafactory -n gigafactory-system || true"],
                       env=env, capture_output=True, timeout=120)
    everything = "\n".join(outputs)
    docker = (tmp_path / "docker.log").read_text().splitlines()
    assert docker == ["build -t registry.example.com/platform/gigafactory:0.1.0 .",
                      "push registry.example.com/platform/gigafactory:0.1.0"]
    assert "STATUS: deployed" in everything                      # helm install
    assert re.search(r"^default\s", everything, flags=re.M)     # the chart's pool, as `kubectl get factories`
    assert "agentjob.gigafactory.dev/hello-agent created" in everything
    assert "team-a/hello-agent is Pending" in everything        # gigafactory explain
