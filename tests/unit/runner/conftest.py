"""Fixtures of the runner's unit tests: a real bare remote and a runner workspace."""

import pathlib

import pytest

from gigafactory.runner import worktrees
from tests import gitrepos


@pytest.fixture()
def remote(tmp_path: pathlib.Path) -> pathlib.Path:
    return gitrepos.make_remote(tmp_path, files={"a.txt": "a\n"})


@pytest.fixture()
def workspace(tmp_path: pathlib.Path) -> worktrees.Workspace:
    return worktrees.Workspace(tmp_path / "work", allow_local=True)  # local bare remotes
