"""HTTPS credentials against a real git server (git http-backend behind basic auth on 127.0.0.1):
the right token clones and pushes, a wrong one fails clearly, and the token appears in no output or
file. SSH keys reach ssh only as a 0600 file that is gone after the call."""

import os
import pathlib
import stat

import git
import pytest

from gigafactory import remotes
from gigafactory.runner import worktrees
from tests import gitrepos
from tests.unit.runner import gitserver

TOKEN = "ghp_correct-horse-battery-staple"
WRONG = "ghp_wrong-token-0123456789"


@pytest.fixture()
def https_like_remote(tmp_path, monkeypatch):
    gitrepos.make_remote(tmp_path / "srv", name="repo.git")
    server = gitserver.serve(tmp_path / "srv", token=TOKEN)
    monkeypatch.setenv("GIT_SSL_CAINFO", server.ca)  # the test server's own CA
    yield f"{server.url}/repo.git"
    server.shutdown()


def _files_holding(root: pathlib.Path, secret: str) -> list[pathlib.Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_text(errors="ignore")]


async def test_right_token_clones_and_pushes(tmp_path, https_like_remote) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    credentials = remotes.Credentials(token=TOKEN)
    mirror = await workspace.sync_mirror(https_like_remote, credentials)
    checkout = await workspace.add_worktree(mirror, name="u-1", base_ref="main")
    (checkout.path / "x.txt").write_text("x\n")
    await workspace.commit_leftovers(checkout, "x")
    await workspace.push(checkout, url=https_like_remote, branch="agent/x", credentials=credentials)
    assert "agent/x" in [h.name for h in git.Repo(tmp_path / "srv" / "repo.git").heads]
    assert _files_holding(tmp_path / "work", TOKEN) == []  # not in the config, not in any file


async def test_wrong_token_is_a_clear_error_without_the_secret(tmp_path, https_like_remote) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.sync_mirror(https_like_remote, remotes.Credentials(token=WRONG))
    assert (info.value.outcome, info.value.reason) == ("Rejected", "BadCredentials")
    assert "authentication" in info.value.message and WRONG not in info.value.message
    assert _files_holding(tmp_path / "work", WRONG) == []


async def test_no_token_for_a_private_repo_fails_at_once(tmp_path, https_like_remote) -> None:
    # GIT_TERMINAL_PROMPT=0 and askpass with nothing to say: git gives up instead of waiting for a person.
    workspace = worktrees.Workspace(tmp_path / "work")
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.sync_mirror(https_like_remote, remotes.Credentials())
    assert info.value.reason == "BadCredentials"


async def test_a_repository_the_server_does_not_have(tmp_path, https_like_remote) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.sync_mirror(https_like_remote.replace("repo.git", "nope.git"), remotes.Credentials(token=TOKEN))
    assert (info.value.outcome, info.value.reason) == ("Rejected", "RepoNotFound")


def test_ssh_key_is_a_private_file_only_for_the_call(tmp_path) -> None:
    # A space: the command line quotes its paths. Accepting new host keys: this pool opted out of known_hosts.
    workspace = worktrees.Workspace(tmp_path / "work space", accept_new_host_keys=True)
    key_text = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-material\n-----END OPENSSH PRIVATE KEY-----"
    with workspace.git_env(remotes.Credentials(ssh_key=key_text)) as env:
        command = env["GIT_SSH_COMMAND"]
        assert "secret-key-material" not in "".join(env.values())  # the key is a file, never a value
        key = pathlib.Path(command.split("-i ")[1].split(" -o")[0].strip("'"))
        assert key.read_text().startswith("-----BEGIN") and stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert "IdentitiesOnly=yes" in command and "StrictHostKeyChecking=accept-new" in command  # the pool opted out
        assert "BatchMode=yes" in command
    assert not key.exists()


def test_known_hosts_make_host_checking_strict(tmp_path) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    with workspace.git_env(remotes.Credentials(ssh_key="k", known_hosts="git.example.com ssh-ed25519 AAAA")) as env:
        assert "StrictHostKeyChecking=yes" in env["GIT_SSH_COMMAND"]
