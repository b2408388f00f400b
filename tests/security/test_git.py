"""Red team: git on the runner trusts nothing an agent (or a repository, or $HOME) wrote.

The agent runs with write access to its worktree, and through it to the shared mirror of its
repository; whatever it plants there must not run as the runner, nor send the next job's credentials
elsewhere. Each test plants one thing, lets the runner's own git steps run, and checks nothing fired."""
import os
import pathlib
import stat

import git
import pytest

from gigafactory import remotes
from gigafactory.runner import worktrees
from tests import gitrepos
from tests.unit.runner import gitserver

TOKEN = "ghp_secret-for-the-real-host-only"


def _trap(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    """An executable that leaves `marker` behind when something runs it (a hook, an fsmonitor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {marker}\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture()
def remote(tmp_path) -> pathlib.Path:
    return gitrepos.make_remote(tmp_path, files={"a.txt": "a\n"})


@pytest.fixture()
def workspace(tmp_path) -> worktrees.Workspace:
    return worktrees.Workspace(tmp_path / "work", allow_local=True)


async def _attempt(workspace, remote, name="u-1"):
    mirror = await workspace.sync_mirror(str(remote), remotes.Credentials())
    checkout = await workspace.add_worktree(mirror, name=name, base_ref="main")
    return mirror, checkout.path, checkout


async def test_hooks_planted_in_the_mirror_or_home_never_run(workspace, remote, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "fired"
    mirror, path, checkout = await _attempt(workspace, remote)
    # The agent plants hooks in the shared mirror (its worktree's git dir is under it) ...
    for hook in ("pre-commit", "pre-push", "post-commit", "reference-transaction", "post-checkout", "pre-upload-pack"):
        _trap(mirror / "hooks" / hook, marker)
        _trap(path / ".git" / "hooks" / hook, marker)
    # ... and a global config that points git at its own hooks.
    home = tmp_path / "home"
    _trap(home / "evil-hooks" / "pre-push", marker)
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {home / 'evil-hooks'}\n")
    monkeypatch.setenv("HOME", str(home))
    (path / "change.txt").write_text("the agent's work\n")
    await workspace.take_agent_work(checkout)
    await workspace.commit_leftovers(checkout, "work")
    await workspace.push(checkout, url=str(remote), branch="agent/x", credentials=remotes.Credentials())
    await _attempt(workspace, remote, name="u-2")  # a later job's fetch and checkout
    assert not marker.exists(), marker.read_text()


async def test_an_fsmonitor_planted_in_the_mirror_never_runs(workspace, remote, tmp_path) -> None:
    marker = tmp_path / "fired"
    mirror, path, checkout = await _attempt(workspace, remote)
    git.Repo(mirror).git.config("core.fsmonitor", str(_trap(tmp_path / "monitor.sh", marker)))
    git.Repo(path).git.config("core.fsmonitor", str(tmp_path / "monitor.sh"))
    (path / "change.txt").write_text("x\n")
    await workspace.take_agent_work(checkout)
    await workspace.take_summary(checkout)
    await workspace.commit_leftovers(checkout, "work")
    assert not marker.exists(), marker.read_text()


async def test_an_insteadof_planted_in_the_mirror_cannot_redirect_the_next_fetch(workspace, remote, tmp_path) -> None:
    mirror, _, _ = await _attempt(workspace, remote)
    evil = gitrepos.make_remote(tmp_path / "evil", files={"evil.txt": "evil\n"})
    config = git.Repo(mirror).config_writer()
    config.set_value(f'url "{evil}"', "insteadOf", str(remote))
    config.set_value('remote "origin"', "url", str(evil))
    config.release()
    mirror = await workspace.sync_mirror(str(remote), remotes.Credentials())
    fetched = git.Repo(mirror).git.rev_parse("refs/remotes/origin/main")
    assert fetched == git.Repo(remote).heads["main"].commit.hexsha
    assert "[url " not in (mirror / "config").read_text()  # the planted section is gone


async def test_a_token_is_never_sent_over_plain_http(tmp_path) -> None:
    gitrepos.make_remote(tmp_path / "srv", name="repo.git")
    server = gitserver.serve(tmp_path / "srv", token=TOKEN, tls=False)
    try:
        workspace = worktrees.Workspace(tmp_path / "work")
        with pytest.raises(remotes.GitFailure) as refused:
            await workspace.sync_mirror(f"{server.url}/repo.git", remotes.Credentials(token=TOKEN))
        assert (refused.value.outcome, refused.value.reason) == ("Rejected", "InsecureTransport")
        assert server.requests == 0, "the runner talked to the plain-http server"
    finally:
        server.shutdown()


def test_an_ssh_key_without_known_hosts_is_refused(tmp_path) -> None:
    workspace = worktrees.Workspace(tmp_path / "work")
    with pytest.raises(remotes.GitFailure) as refused:
        with workspace.git_env(remotes.Credentials(ssh_key="-----BEGIN KEY-----\nk\n-----END KEY-----")):
            pass
    assert (refused.value.outcome, refused.value.reason) == ("Rejected", "NoKnownHosts")
    assert not list((tmp_path / "work").glob("gf-ssh-*")), "the key was written anyway"


def test_git_reads_no_config_file_but_the_repositorys_and_runs_no_configured_program(tmp_path) -> None:
    with worktrees.Workspace(tmp_path / "work").git_env(remotes.Credentials()) as env:
        assert env["GIT_CONFIG_GLOBAL"] == os.devnull and env["GIT_CONFIG_NOSYSTEM"] == "1"
        pinned = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
        assert pinned["core.hooksPath"] == os.devnull and pinned["core.fsmonitor"] == "false"
        assert pinned["credential.helper"] == "" and pinned["protocol.allow"] == "never"
        assert "file" not in env["GIT_ALLOW_PROTOCOL"].split(":")  # only where local repositories are allowed
        assert env["GIT_SSH_COMMAND"].startswith("ssh ")  # ours, never a core.sshCommand of a config file


async def test_a_remote_helper_transport_is_refused_by_git_itself(tmp_path) -> None:
    # Defence in depth below check_url: git's own protocol allow-list.
    workspace = worktrees.Workspace(tmp_path / "work")
    marker = tmp_path / "fired"
    with workspace.git_env(remotes.Credentials()) as env:
        result = git.Git(str(tmp_path)).execute(["git", "ls-remote", f"ext::sh -c touch% {marker}"], env=env,
                                                with_exceptions=False, with_extended_output=True)
    assert result[0] != 0 and not marker.exists()
