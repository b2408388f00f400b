"""The `script` agent: a small deterministic agent for tests and the demo.

With no options it records the task prompt in .gigafactory/task.md and commits it. Tests steer it:
`--exit N` exits with N (after doing nothing), `--hang` never returns, and the env variable
GIGAFACTORY_SCRIPT_MARKER names a file that gets one line per execution ("<pid> <worktree>") and one
more when it committed ("<pid> <worktree> done"; the pid as the runner sees it, also in a sandbox), so
a test can count exactly how often each job ran. `--await-peers N` waits (up to 30 s, else exits 4)
until N agents are (or were) alive at once, each holding a lock on its own file in <marker>.d, which
proves that their jobs overlapped.
"""

import argparse
import fcntl
import os
import pathlib
import subprocess
import sys
import time


def _alive_peers(marker: pathlib.Path) -> int:
    """Agents alive now: each holds a lock on its own file in <marker>.d while it runs (a sandboxed
    agent sees no other agent's process, but the kernel's file locks span namespaces)."""
    alive = 0
    for path in pathlib.Path(f"{marker}.d").glob("alive-*"):
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive += 1
    return alive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-file", required=True)
    parser.add_argument("--exit", type=int, default=None, dest="exit_code")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--await-peers", type=int, default=0)
    args = parser.parse_args(argv)
    prompt = pathlib.Path(args.prompt_file).read_text()
    marker = os.environ.get("GIGAFACTORY_SCRIPT_MARKER")
    # The pid the runner's side sees (in a sandbox, this agent's own pid is 2 of its namespace).
    pid = os.environ.get("GIGAFACTORY_SANDBOX_PID") or str(os.getpid())
    if marker:
        with open(marker, "a") as handle:
            handle.write(f"{pid} {os.getcwd()}\n")
    print(f"script agent: task of {len(prompt)} characters", flush=True)
    if args.await_peers and not marker:
        print("script agent: --await-peers needs GIGAFACTORY_SCRIPT_MARKER", flush=True)
        return 4
    if args.await_peers:
        deadline = time.monotonic() + 30
        # A barrier: whoever sees N alive at once leaves a flag, so a peer that has already finished
        # still counts for those that looked a moment too early.
        assert marker is not None  # (--await-peers without a marker returned above)
        peers = pathlib.Path(f"{marker}.d")
        peers.mkdir(exist_ok=True)
        alive = open(peers / f"alive-{pid}-{time.time_ns()}", "a")  # held (locked) until this process ends
        fcntl.flock(alive, fcntl.LOCK_EX)
        met = peers / f"met-{args.await_peers}"
        while not (met.exists() or _alive_peers(pathlib.Path(marker)) >= args.await_peers):
            if time.monotonic() > deadline:
                print(f"script agent: {args.await_peers} agents never ran at once", flush=True)
                return 4
            time.sleep(0.05)
        met.touch()
    if args.hang:
        while True:
            time.sleep(3600)
    if args.exit_code is not None:
        print(f"script agent: exiting with {args.exit_code}", flush=True)
        return int(args.exit_code)
    target = pathlib.Path(".gigafactory") / "task.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text(prompt if prompt.endswith("\n") else prompt + "\n")
    pathlib.Path("SUMMARY.md").write_text("Recorded the task in .gigafactory/task.md.\n")
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    identity = ["-c", "user.name=Script Agent", "-c", "user.email=script@gigafactory.invalid"]
    subprocess.run(["git", "add", str(target)], check=True, env=env)
    subprocess.run(["git", *identity, "commit", "-q", "-m", "Record the task"], check=True, env=env)
    print("script agent: committed .gigafactory/task.md", flush=True)
    if marker:
        with open(marker, "a") as handle:
            handle.write(f"{pid} {os.getcwd()} done\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
