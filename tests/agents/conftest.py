"""Fixtures of the real-agent tests: the CRDs, a synchronous API, a bare remote, the pinned CLIs."""

import pathlib

import pytest

from tests import gitrepos
from tests.agents import install, modelserver

# The runner integration tests' own fixtures: the CRDs, a synchronous API, a test's runner pods gone with it.
from tests.integration.runner.conftest import _forget_pods, api, crds  # noqa: F401


@pytest.fixture(scope="session")
def agent_path() -> str:
    """The runner's PATH with the pinned claude, codex and aider first (installed once, see install.py)."""
    install.ensure()
    return ":".join([*(str(path) for path in install.bin_dirs()), "/usr/local/bin", "/usr/bin", "/bin"])


@pytest.fixture()
def remote(tmp_path) -> pathlib.Path:
    return gitrepos.make_remote(tmp_path, files={modelserver.READ_FILE: modelserver.READ_TEXT + "\n"})
