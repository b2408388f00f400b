"""What the operator keeps in memory beside the informers' caches: one record per job, the timers,
and the token buckets that bound what it says. All of it is rebuilt from the API on a restart
(docs/architecture.md, restart truth); nothing here is a source of truth.
"""

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Any

from gigafactory.scheduling import snapshots

TimerKey = tuple[str, str, str]  # (kind, namespace, name)
_UNSET: Any = object()


@dataclasses.dataclass
class JobRecord:
    """What the operator remembers of one job (by uid) between its events. Dropped on DELETED, so a
    job's memory goes in one place instead of eight."""

    resource_version: str | None = None  # of the body `info` was parsed from
    info: snapshots.JobInfo | None = None
    valid_generation: Any = _UNSET  # the generation whose spec passed validation
    state: tuple[Any, ...] | None = None  # what the cycle reads of it (controllers.jobs.scheduling_state)
    explained_at: float | None = None  # loop clock of this operator's last explanation write
    # A bind decided but not yet seen back from the informer: (attempt, pod key, repo key).
    assumed: tuple[int, snapshots.PodKey, str] | None = None
    # The finalizer is removed: the cache may still show it until the DELETED event, and a second
    # run would delete the branch again and call it "moved or gone".
    finalized: bool = False
    branches_deleted: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (branch, commit) cleaned up

    def spec_validated(self, generation: Any) -> bool:
        return self.valid_generation is not _UNSET and self.valid_generation == generation


class JobRecords:
    """The records by job uid. `get` never creates one (a task ending after its job's DELETED event
    must not bring the job's memory back); `of` does."""

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}

    def of(self, uid: str) -> JobRecord:
        record = self._records.get(uid)
        if record is None:
            record = self._records[uid] = JobRecord()
        return record

    def get(self, uid: str) -> JobRecord | None:
        return self._records.get(uid)

    def forget(self, uid: str) -> None:
        self._records.pop(uid, None)

    def __len__(self) -> int:
        return len(self._records)


class Timers:
    """One timer per (kind, object), at the instant it is due on the injected clock; re-arming
    replaces. The handles run on the event loop, so the delay is measured once, when armed."""

    def __init__(self, clock: Callable[[], datetime.datetime]) -> None:
        self.clock = clock
        self.handles: dict[TimerKey, asyncio.TimerHandle] = {}

    def arm(self, key: TimerKey, at: datetime.datetime, callback: Callable[[], Any]) -> None:
        self.disarm(key)
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at - self.clock()).total_seconds())
        self.handles[key] = loop.call_at(loop.time() + delay + 0.01, callback)

    def disarm(self, key: TimerKey) -> None:
        handle = self.handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def fired(self, key: TimerKey) -> None:
        """A timer's callback runs: it is no longer armed."""
        self.handles.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self.handles

    def cancel_all(self) -> None:
        for handle in self.handles.values():
            handle.cancel()
        self.handles.clear()


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up (client-go's event spam filter, simplified)."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
