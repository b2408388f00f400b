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
              label: str, stdin: bytes | None = None, pid_file: pathlib.Path | None = None) -> Execution:
    """Run argv to its end, its timeout, or `stop`; the whole process group goes in the latter two."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env), start_new_session=True,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    if pid_file is not None:
        # Written so that a runner restarted after a crash can end agents the crash orphaned.
        pid_file.write_text(str(process.pid))
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


def kill_orphans(directory: pathlib.Path) -> list[int]:
    """Kill the process groups of agents whose pid files a crashed runner left behind."""
    killed = []
    for pid_file in directory.glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid > 1:
            _signal_group(pid, signal.SIGKILL)
            killed.append(pid)
        pid_file.unlink(missing_ok=True)
    return killed
