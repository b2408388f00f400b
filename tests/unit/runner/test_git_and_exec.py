"""The runner's git and process handling on real repositories and real process groups."""

import asyncio
import os
import sys
import time

import git
import pytest

from gigafactory import remotes
from gigafactory.runner import executing, profiles
from tests import gitrepos


def _attempt_refs(mirror) -> set[str]:
    """The attempts a mirror holds a base commit for."""
    listed = git.Git(str(mirror)).execute(["git", "for-each-ref", "--format=%(refname)", "refs/gigafactory/attempts/"])
    return {ref.rsplit("/", 1)[1] for ref in listed.splitlines()}


async def test_two_same_repo_attempts_work_side_by_side(workspace, remote) -> None:
    none = remotes.Credentials()
    mirror_a, mirror_b = await asyncio.gather(workspace.sync_mirror(str(remote), none), workspace.sync_mirror(str(remote), none))
    assert mirror_a == mirror_b  # one mirror per repository
    ca, cb = await asyncio.gather(
        workspace.add_worktree(mirror_a, name="uid1-1", base_ref="main"),
        workspace.add_worktree(mirror_a, name="uid2-1", base_ref="main"),
    )
    wa, wb, base = ca.path, cb.path, ca.base
    assert wa != wb and ca.trusted != cb.trusted
    gitrepos.commit_file(wa, "first")
    gitrepos.commit_file(wb, "second")
    await asyncio.gather(workspace.take_agent_work(ca), workspace.take_agent_work(cb))
    await asyncio.gather(
        workspace.push(ca, url=str(remote), branch="agent/first", credentials=none),
        workspace.push(cb, url=str(remote), branch="agent/second", credentials=none),
    )
    heads = {h.name: h.commit for h in git.Repo(remote).heads}
    assert {"agent/first", "agent/second"} <= set(heads)
    assert [p for p in heads["agent/first"].stats.files] == ["first.txt"]
    assert [p for p in heads["agent/second"].stats.files] == ["second.txt"]
    result = await workspace.describe(ca.trusted, base)
    assert result["changedFiles"] == ["first.txt"] and result["diffstat"]["insertions"] == 1
    await workspace.remove_worktree(mirror_a, "uid1-1")
    assert not wa.exists() and not ca.trusted.exists()
    assert "uid1-1" not in _attempt_refs(mirror_a)


async def test_existing_branch_is_never_overwritten(workspace, remote) -> None:
    none = remotes.Credentials()
    mirror = await workspace.sync_mirror(str(remote), none)
    checkout = await workspace.add_worktree(mirror, name="u-1", base_ref="main")
    gitrepos.commit_file(checkout.path, "x")
    await workspace.take_agent_work(checkout)
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.push(checkout, url=str(remote), branch="main", credentials=none)
    assert (info.value.outcome, info.value.reason) == ("PushFailed", "BranchExists")


async def test_missing_base_ref_and_repo_are_rejected(workspace, remote, tmp_path) -> None:
    none = remotes.Credentials()
    mirror = await workspace.sync_mirror(str(remote), none)
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.add_worktree(mirror, name="u-2", base_ref="no-such-branch")
    assert (info.value.outcome, info.value.reason) == ("Rejected", "BaseRefNotFound")
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.sync_mirror(str(tmp_path / "nothing-here.git"), none)
    assert info.value.reason == "RepoNotFound"


async def test_sweep_removes_what_no_live_attempt_owns(workspace, remote) -> None:
    none = remotes.Credentials()
    mirror = await workspace.sync_mirror(str(remote), none)
    keep = await workspace.add_worktree(mirror, name="live-1", base_ref="main")
    stray = await workspace.add_worktree(mirror, name="dead-1", base_ref="main")
    removed = workspace.sweep({"live-1"})
    assert keep.path.exists() and keep.trusted.exists() and not stray.path.exists() and not stray.trusted.exists()
    assert "ref refs/gigafactory/attempts/dead-1" in removed
    assert _attempt_refs(mirror) == {"live-1"}


async def test_bad_token_fails_without_leaking_it(workspace) -> None:
    # Nothing listens on this port: git fails, and the message must not carry the token.
    creds = remotes.Credentials(token="s3cr3t-t0ken-value")
    with pytest.raises(remotes.GitFailure) as info:
        await workspace.sync_mirror("http://127.0.0.1:9/none.git", creds)
    assert "s3cr3t-t0ken-value" not in info.value.message
    assert not any("s3cr3t" in p.read_text(errors="ignore") for p in workspace.root.rglob("*") if p.is_file())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_timeout_kills_the_whole_process_group(tmp_path) -> None:
    # The agent starts a grandchild that would outlive a plain kill of the agent.
    script = "import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"
    result = await executing.run([sys.executable, "-c", script], cwd=str(tmp_path), env=dict(os.environ), timeout=1.0,
                                 stop=asyncio.Event(), label="t")
    assert result.outcome == "TimedOut"
    grandchild = int(result.tail.split()[0])
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(grandchild)


@pytest.mark.parametrize(
    "code, outcome", [pytest.param(0, "Succeeded", id="ok"), pytest.param(3, "AgentFailed", id="exit-3")]
)
async def test_exit_codes_become_outcomes(tmp_path, code, outcome) -> None:
    result = await executing.run([sys.executable, "-c", f"print('hi'); raise SystemExit({code})"], cwd=str(tmp_path),
                                 env=dict(os.environ), timeout=10, stop=asyncio.Event(), label="t")
    assert (result.outcome, result.exit_code) == (outcome, code)
    assert "hi" in result.tail


async def test_stop_request_stops_the_agent(tmp_path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    result = await executing.run([sys.executable, "-c", "import time; time.sleep(60)"], cwd=str(tmp_path),
                                 env=dict(os.environ), timeout=30, stop=stop, label="t")
    assert result.outcome == "Stopped"


def test_tail_keeps_the_last_part() -> None:
    tail = executing.Tail(limit=10)
    for i in range(100):
        tail.add(f"{i}\n".encode())
    assert tail.text().endswith("99\n") and len(tail.text()) <= 10


def test_shipped_profiles_load_and_render_without_a_shell(tmp_path, monkeypatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "aider").write_text("#!/bin/sh\n")
    (tools / "aider").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))  # the runner's PATH when the file loads decides argv[0]
    loaded = profiles.load()
    assert {"script", "claude-code", "codex", "aider"} <= set(loaded)
    argv = loaded["aider"].render(prompt_file=tmp_path / "p; rm -rf /", workdir=tmp_path, job="j", branch="b",
                                  extra_args=["--model", "x"])
    # The job's arguments go where the profile put {args}: before its own flags, which win if repeated.
    assert argv[:5] == [str(tools / "aider"), "--model", "x", "--message-file", str(tmp_path / "p; rm -rf /")]
    assert argv[5:8] == ["--yes-always", "--no-stream", "--no-pretty"]
    script = loaded["script"].render(prompt_file=tmp_path / "p", workdir=tmp_path, job="j", branch="b", extra_args=["--hang"])
    assert script == [sys.executable, "-I", "-m", "gigafactory.runner.script_agent", "--hang", "--prompt-file", str(tmp_path / "p")]
    assert not loaded["claude-code"].installed()


def test_bad_profiles_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("profiles:\n  x: {argv: []}\n")
    with pytest.raises(ValueError, match="cannot load agent profiles"):
        profiles.load(bad)


async def test_fetch_while_attempts_run_keeps_their_branches(workspace, remote, tmp_path) -> None:
    # A later attempt's fetch (with --prune) must not touch branches that running worktrees have checked out.
    none = remotes.Credentials()
    mirror = await workspace.sync_mirror(str(remote), none)
    first = (await workspace.add_worktree(mirror, name="a-1", base_ref="main")).path
    gitrepos.commit_file(first, "work-in-progress")
    # The remote moves on meanwhile.
    clone = git.Repo.clone_from(str(remote), tmp_path / "other")
    (tmp_path / "other" / "b.txt").write_text("b\n")
    clone.index.add(["b.txt"])
    actor = git.Actor("o", "o@example.invalid")
    clone.index.commit("remote moves", author=actor, committer=actor)
    clone.remote().push("main:main")
    await workspace.sync_mirror(str(remote), none)
    base = (await workspace.add_worktree(mirror, name="b-1", base_ref="main")).base
    assert base == clone.head.commit.hexsha  # the new attempt starts from the fetched main
    assert (first / "work-in-progress.txt").exists()
    assert git.Repo(first).head.commit.message == "work-in-progress"
    assert _attempt_refs(mirror) == {"a-1", "b-1"}  # only the attempts' refs
    assert not [h.name for h in git.Repo(mirror).heads]
