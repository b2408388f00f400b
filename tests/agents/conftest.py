"""Fixtures of the real-agent tests: the CRDs, a synchronous API, a bare remote, the pinned CLIs."""

import pathlib

import pytest

from tests import gitrepos
from tests.agents import install, modelserver
from tests.integration.operator import stubs

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def crds(install_crds) -> None:
    install_crds(ROOT / "crds")


@pytest.fixture()
def api(kubeconfig) -> stubs.Api:
    return stubs.Api(kubeconfig)


_forget_pods = stubs.forget_pods_after_test  # a test's runner pods go with it


@pytest.fixture(scope="session")
def agent_path() -> str:
    """The runner's PATH with the pinned claude, codex and aider first (installed once, see install.py)."""
    install.ensure()
    return ":".join([*(str(path) for path in install.bin_dirs()), "/usr/local/bin", "/usr/bin", "/bin"])


@pytest.fixture()
def remote(tmp_path) -> pathlib.Path:
    return gitrepos.make_remote(tmp_path, files={modelserver.READ_FILE: modelserver.READ_TEXT + "\n"})
