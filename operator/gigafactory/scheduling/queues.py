"""The order in which a cycle considers pending jobs.

Within a queue: higher effective priority first, then older first. Effective priority is the
job's priority plus one point per `aging_seconds_per_point` it has waited (since creation, or since
its backoff ended), so a low-priority job overtakes newer high-priority ones in the end.
Across queues: round-robin, one job per queue per round (queues in a round by their head's
effective priority), so one deep queue cannot keep another queue's head waiting behind it.
"""

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from gigafactory.models import objects
from gigafactory.scheduling import snapshots

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Entry:
    job: snapshots.JobInfo
    effective_priority: int
    position: int  # 1-based place in its own queue


def effective_priority(job: snapshots.JobInfo, *, now: datetime.datetime, aging_seconds_per_point: float) -> int:
    since = job.requeue_at or job.created_at
    if since is None:
        return job.priority
    waited = max(0.0, (now - since).total_seconds())
    return job.priority + int(waited // aging_seconds_per_point)


def order(jobs: list[snapshots.JobInfo], *, now: datetime.datetime, aging_seconds_per_point: float) -> list[Entry]:
    queues: dict[str, list[tuple[int, datetime.datetime, str, str, snapshots.JobInfo]]] = {}
    for job in jobs:
        eff = effective_priority(job, now=now, aging_seconds_per_point=aging_seconds_per_point)
        queues.setdefault(job.queue, []).append((-eff, job.created_at or _EPOCH, job.namespace, job.name, job))
    for items in queues.values():
        items.sort(key=lambda item: item[:4])
    result: list[Entry] = []
    depth = max((len(items) for items in queues.values()), default=0)
    active = sorted(queues)
    for index in range(depth):
        active = [queue for queue in active if len(queues[queue]) > index]
        heads = sorted(active, key=lambda queue: (queues[queue][index][:2], queue))
        for queue in heads:
            item = queues[queue][index]
            result.append(Entry(job=item[4], effective_priority=-item[0], position=index + 1))
    return result


def position(
    job: Mapping[str, Any], pending: Iterable[Mapping[str, Any]], *, now: datetime.datetime, aging_seconds_per_point: float
) -> tuple[int, int] | None:
    """(position, length) of a pending job in its queue, by the scheduler's own ordering; None when
    it is not waiting. What `gigafactory explain` and the dashboard show.

    Computed on demand from the pending jobs rather than stored in every job's status, which would
    rewrite every waiting job whenever one ahead of it moved.
    """
    queue = objects.spec(job).get("queue", "default")
    infos = [snapshots.job_from_body(body) for body in pending
             if snapshots.is_pending(body) and objects.spec(body).get("queue", "default") == queue]
    entries = order(infos, now=now, aging_seconds_per_point=aging_seconds_per_point)
    key = objects.key(job)
    for entry in entries:
        if entry.job.key == key:
            return entry.position, len(entries)
    return None
