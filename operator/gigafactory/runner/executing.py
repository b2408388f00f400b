"""Run an agent: its own process group in the worktree, output streamed and its tail kept,
timeout and stop requests killing the whole group."""

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import pathlib
import signal
import time
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

TAIL_BYTES = 64 * 1024
KILL_GRACE_SECONDS = 3.0


@dataclasses.dataclass
class Execution:
    outcome: str  # Succeeded | AgentFailed | TimedOut | Stopped
    exit_code: int | None
    tail: str
    pid: int


class Tail:
    """The last TAIL_BYTES of output, kept line by line."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.lines: collections.deque[bytes] = collections.deque()
        self.size = 0

    def add(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line)
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft())

    def text(self) -> str:
        return b"".join(self.lines).decode("utf-8", errors="replace")[-self.limit:]


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run(argv: Sequence[str], *, cwd: str, env: Mapping[str, str], timeout: float, stop: asyncio.Event,
              label: str, stdin: bytes | None = None, pid_file: pathlib.Path | None = None,
              pass_fds: Sequence[int] = ()) -> Execution:
    """Run argv to its end, its timeout, or `stop`; the whole process group goes in the latter two.
    (argv may be a sandbox launcher: its group holds the agent too, and the agent's pid namespace
    dies with the launcher's init, so the same signals end a sandboxed agent and all it started.)"""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env), start_new_session=True, pass_fds=tuple(pass_fds),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    if pid_file is not None:
        # Written so that a runner restarted after a crash can end agents the crash orphaned; the
        # start time tells that agent apart from a later process that got the same pid.
        pid_file.write_text(f"{process.pid} {_start_time(process.pid) or ''}".strip())
    tail = Tail()

    async def pump() -> None:
        if stdin is not None and process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.write(stdin)
                await process.stdin.drain()
                process.stdin.close()
        assert process.stdout is not None
        async for line in process.stdout:
            tail.add(line)
            logger.info("[%s] %s", label, line.decode("utf-8", errors="replace").rstrip())

    reader = asyncio.create_task(pump())
    waiter = asyncio.create_task(process.wait())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    outcome = None
    if waiter not in done:
        outcome = "Stopped" if stopper in done else "TimedOut"
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), KILL_GRACE_SECONDS)
        except asyncio.TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await waiter
    # Children the agent left behind (in its group) go too, whatever the outcome.
    _signal_group(process.pid, signal.SIGKILL)
    stopper.cancel()
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(reader, 2)
    if pid_file is not None:
        pid_file.unlink(missing_ok=True)
    code = process.returncode
    if outcome is None:
        outcome = "Succeeded" if code == 0 else "AgentFailed"
    return Execution(outcome=outcome, exit_code=code, tail=tail.text(), pid=process.pid)


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def kill_orphans(directory: pathlib.Path) -> list[int]:
    """Kill the process groups of agents whose pid files a crashed runner left behind.

    An agent leads its own group, so its pid is the group id. The kernel never hands out a pid
    that is still some group's id, so: if a process with that pid runs but started at another
    time, the agent's group is gone and the pid belongs to someone else (after a container restart,
    maybe to this very runner), and nothing is killed."""
    killed = []
    own = {os.getpid(), os.getpgrp()}
    for pid_file in directory.glob("*.pid"):
        try:
            fields = pid_file.read_text().split()
            pid = int(fields[0])
            started = fields[1] if len(fields) > 1 else None
        except (OSError, ValueError, IndexError):
            pid, started = 0, None
        now = _start_time(pid) if pid > 1 else None
        reused = started is not None and now is not None and now != started
        if pid > 1 and pid not in own and not reused:
            _signal_group(pid, signal.SIGKILL)
            killed.append(pid)
        pid_file.unlink(missing_ok=True)
    # SIGKILL lands asynchronously (later still on a busy machine): the sweep that follows removes the
    # agents' worktrees, so wait (bounded) until they are really gone.
    deadline = time.monotonic() + ORPHAN_DEATH_SECONDS
    while any(_running(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


ORPHAN_DEATH_SECONDS = 10.0


def _running(pid: int) -> bool:
    """Whether pid is a live process (a zombie is dead: it only waits for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
