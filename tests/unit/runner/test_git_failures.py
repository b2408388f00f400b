"""How git goes wrong on a runner, on real repositories: each failure gets the outcome and reason a
job's owner (and the retry policy) can act on, and nothing waits forever."""

import asyncio
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import git
import pytest

from gigafactory import remotes
from gigafactory.runner import executing, running, worktrees
from tests import gitrepos

NONE = remotes.Credentials()


@pytest.mark.parametrize(
    "text, outcome, reason",
    [
        pytest.param("fatal: Authentication failed for 'https://h/a.git/'", "Rejected", "BadCredentials", id="https-auth"),
        pytest.param("fatal: could not read Username for 'https://h': terminal prompts disabled", "Rejected",
                     "BadCredentials", id="no-credentials"),
        pytest.param("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.",
                     "Rejected", "BadCredentials", id="ssh-key-refused"),
        pytest.param("Host key verification failed.", "Rejected", "BadCredentials", id="ssh-host-key"),
        pytest.param("remote: Repository not found.\nfatal: repository 'https://h/a.git/' not found", "Rejected",
                     "RepoNotFound", id="https-404"),
        pytest.param("fatal: '/srv/a.git' does not appear to be a git repository", "Rejected", "RepoNotFound",
                     id="no-such-path"),
        pytest.param("fatal: unable to access 'https://h/a.git/': Could not resolve host: h", "InfraError",
                     "FetchFailed", id="dns"),
        pytest.param("fatal: unable to access 'http://127.0.0.1:9/': Failed to connect to 127.0.0.1 port 9",
                     "InfraError", "FetchFailed", id="connection-refused"),
    ],
)
def test_fetch_failures_are_classified(text: str, outcome: str, reason: str) -> None:
    failure = remotes.classify_remote_error(text, url="https://h/a.git")
    assert (failure.outcome, failure.reason) == (outcome, reason)


async def test_unreachable_remote_is_an_infrastructure_fault(workspace) -> None:
    # Nothing listens on port 9: a retry may well succeed, so the job is not failed for good.
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.sync_mirror("http://127.0.0.1:9/none.git", NONE)
    assert (info.value.outcome, info.value.reason) == ("InfraError", "FetchFailed")
    assert workspace.warm_repos() == []  # a failed first fetch leaves no half mirror behind


async def test_a_remote_that_never_answers_is_cut_off(tmp_path) -> None:
    # Accepts the connection, then says nothing: without a timeout the fetch (and the mirror's lock) hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.extend(listener.accept()[0] for _ in range(1)), daemon=True).start()
    workspace = worktrees.Workspace(tmp_path / "work", network_timeout=1.0, allow_local=True)
    started = time.monotonic()
    try:
        with pytest.raises(remotes.GitFailure) as info:
            await workspace.sync_mirror(f"http://127.0.0.1:{listener.getsockname()[1]}/slow.git", NONE)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert time.monotonic() - started < 10
    assert (info.value.outcome, info.value.reason) == ("InfraError", "FetchFailed")


async def test_a_push_the_remote_refuses_says_why(workspace, remote) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch protection: agents may not push here' >&2\nexit 1\n")
    hook.chmod(stat.S_IRWXU)
    mirror = await workspace.sync_mirror(str(remote), NONE)
    checkout = await workspace.add_worktree(mirror, name="u-1", base_ref="main")
    gitrepos.commit_file(checkout.path, "x")
    await workspace.take_agent_work(checkout)
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.push(checkout, url=str(remote), branch="agent/x", credentials=NONE)
    assert (info.value.outcome, info.value.reason) == ("PushFailed", "PushRejected")
    assert "branch protection: agents may not push here" in info.value.message
    assert "agent/x" not in [h.name for h in git.Repo(remote).heads]


async def test_a_branch_created_while_the_agent_ran_is_not_overwritten(workspace, remote, tmp_path) -> None:
    mirror = await workspace.sync_mirror(str(remote), NONE)
    assert not await workspace.branch_exists(mirror, "agent/race")
    checkout = await workspace.add_worktree(mirror, name="u-1", base_ref="main")
    gitrepos.commit_file(checkout.path, "ours")
    await workspace.take_agent_work(checkout)
    # Someone else creates the branch at the base commit meanwhile: a plain push would fast-forward it.
    theirs = git.Repo(remote).heads.main.commit.hexsha
    subprocess.run(["git", "-C", str(remote), "branch", "agent/race", theirs], check=True)
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.push(checkout, url=str(remote), branch="agent/race", credentials=NONE)
    assert (info.value.outcome, info.value.reason) == ("PushFailed", "BranchExists")
    assert git.Repo(remote).heads["agent/race"].commit.hexsha == theirs
    await workspace.sync_mirror(str(remote), NONE)
    assert await workspace.branch_exists(mirror, "agent/race")  # the next attempt knows before its agent runs


@pytest.mark.parametrize(
    "url, allow_local, reason",
    [
        pytest.param("ext::sh -c touch% /tmp/x", True, "RepoNotAllowed", id="remote-helper"),
        pytest.param("fd::3", True, "RepoNotAllowed", id="fd-helper"),
        pytest.param("--upload-pack=touch", True, "RepoNotAllowed", id="option"),
        pytest.param("file:///srv/repo.git", False, "RepoNotAllowed", id="file-url-not-allowed"),
        pytest.param("/srv/repo.git", False, "RepoNotAllowed", id="local-path-not-allowed"),
        pytest.param("https://bot:ghp_s3cret@git.example.com/a.git", False, "RepoNotAllowed", id="token-in-url"),
        pytest.param("ftp://git.example.com/a.git", False, "RepoNotAllowed", id="other-scheme"),
        pytest.param("/srv/repo.git", True, None, id="local-path-allowed"),
        pytest.param("file:///srv/repo.git", True, None, id="file-url-allowed"),
        pytest.param("https://git.example.com/a.git", False, None, id="https"),
        pytest.param("https://bot@git.example.com/a.git", False, None, id="user-without-password"),
        pytest.param("ssh://git@git.example.com:2222/a.git", False, None, id="ssh-with-port"),
        pytest.param("git@git.example.com:a/b.git", False, None, id="scp-like"),
    ],
)
def test_url_policy(url: str, allow_local: bool, reason: str | None) -> None:
    if reason is None:
        remotes.check_url(url, allow_local=allow_local)
    else:
        with pytest.raises(remotes.GitFailure) as info:
            remotes.check_url(url, allow_local=allow_local)
        assert (info.value.outcome, info.value.reason) == ("Rejected", reason)
        assert "s3cret" not in info.value.message


@pytest.mark.parametrize(
    "ref, ok",
    [
        pytest.param("agent/fix-1", True, id="plain"),
        pytest.param("a..b", False, id="double-dot"),
        pytest.param("x.lock", False, id="lock-suffix"),
        pytest.param("a@{b", False, id="reflog-syntax"),
        pytest.param("-x", False, id="option"),
        pytest.param("a b", False, id="space"),
    ],
)
def test_branch_names_are_checked_before_anything_runs(ref: str, ok: bool) -> None:
    if ok:
        remotes.check_ref(ref, what="branch")
    else:
        with pytest.raises(remotes.GitFailure) as info:
            remotes.check_ref(ref, what="branch")
        assert (info.value.outcome, info.value.reason) == ("Rejected", "InvalidBranch")


async def test_changed_files_fit_in_a_status(workspace, remote) -> None:
    mirror = await workspace.sync_mirror(str(remote), NONE)
    checkout = await workspace.add_worktree(mirror, name="u-1", base_ref="main")
    for i in range(1200):
        (checkout.path / f"{'d' * 80}-{i:04}.txt").write_text("x\n")
    await workspace.commit_leftovers(checkout, "many files")
    described = await workspace.describe(checkout.trusted, checkout.base)
    assert described["diffstat"]["filesChanged"] == 1200
    assert 0 < len(described["changedFiles"]) <= 1000
    assert sum(map(len, described["changedFiles"])) <= worktrees.CHANGED_FILES_CHARS


async def test_sweep_takes_crash_leftovers_too(workspace, remote) -> None:
    mirror = await workspace.sync_mirror(str(remote), NONE)
    await workspace.add_worktree(mirror, name="dead-1", base_ref="main")
    (workspace.root / "gf-task-abc").mkdir()
    (workspace.root / "gf-task-abc" / "prompt.md").write_text("the task")
    (workspace.root / "gf-ssh-abc").mkdir()
    workspace.sweep()
    assert sorted(p.name for p in workspace.root.iterdir()) == ["askpass.sh", "mirrors", "trusted", "worktrees"]
    assert not list((workspace.root / "trusted").iterdir())
    assert git.Git(str(mirror)).execute(["git", "for-each-ref"]).count("refs/gigafactory/") == 0
    assert [h.name for h in git.Repo(mirror).heads] == []


async def test_sweep_frees_a_worktree_add_killed_half_way_and_stale_git_locks(workspace, remote) -> None:
    """A SIGKILL during `git worktree add` (of runners before attempts had git dirs of their own)
    leaves the admin entry locked ("initializing") and its branch "checked out", and any git killed
    mid-write leaves *.lock files: the next start clears both."""
    mirror = await workspace.sync_mirror(str(remote), NONE)
    path = (await workspace.add_worktree(mirror, name="dead-1", base_ref="main")).path
    (mirror / "worktrees" / "dead-1").mkdir(parents=True)
    (mirror / "worktrees" / "dead-1" / "locked").write_text("initializing")
    (mirror / "packed-refs.lock").write_text("")
    (mirror / "refs" / "heads" / "gf").mkdir(parents=True, exist_ok=True)
    (mirror / "refs" / "heads" / "gf" / "other.lock").write_text("")
    workspace.sweep()
    assert not path.exists()
    assert [h.name for h in git.Repo(mirror).heads] == []
    assert not list(mirror.glob("**/*.lock"))
    # And the mirror works again: the same attempt name can be added anew.
    again = await workspace.add_worktree(mirror, name="dead-1", base_ref="main")
    assert again.path.exists()


def test_a_second_runner_on_the_same_work_dir_is_refused(tmp_path) -> None:
    held = running.lock_work_dir(tmp_path / "work")
    try:
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from gigafactory.runner import running; running.lock_work_dir(__import__('pathlib').Path(sys.argv[1]))",
             str(tmp_path / "work")], capture_output=True, text=True)
        assert other.returncode != 0 and f"in use by another runner (pid {os.getpid()})" in other.stderr
    finally:
        held.close()
    # Once the holder is gone (a crash releases it too), the directory is free again.
    running.lock_work_dir(tmp_path / "work").close()


async def test_orphan_kill_spares_a_process_that_reused_the_pid(tmp_path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    # A real orphan: an agent in its own process group, recorded as the runner records it.
    orphan = await executing.asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)",
                                                           start_new_session=True)
    (agents / "a.pid").write_text(f"{orphan.pid} {executing._start_time(orphan.pid)}")
    # A stranger in its own group whose pid a stale file names, but with another start time.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    (agents / "b.pid").write_text(f"{stranger.pid} 1")
    (agents / "c.pid").write_text(f"{os.getpgrp()}")  # never this runner's own group
    try:
        killed = executing.kill_orphans(agents)
        assert killed == [orphan.pid]
        # Dead by the time it returns (the sweep removes its worktree next): at most a zombie waiting for us.
        assert not executing._running(orphan.pid)
        await asyncio.wait_for(orphan.wait(), 5)
        assert stranger.poll() is None
        assert list(agents.iterdir()) == []
    finally:
        stranger.kill()
        stranger.wait()
