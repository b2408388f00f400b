"""The dashboard's view of the cluster: informer caches of AgentJobs, Factories and heartbeat Leases.

Watches, never polling: an idle dashboard with no browser open costs its three open watches and
nothing else. Every change bumps a counter per topic and wakes the pages' event streams, which
coalesce bursts (a thousand jobs created at once is one refresh, not a thousand).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from gigafactory import constants, kubeclient
from gigafactory.dashboard import views

# Topics a page listens to: what it shows.
JOBS = "jobs"
FACTORIES = "factories"
HEARTBEATS = "heartbeats"
TOPICS = (JOBS, FACTORIES, HEARTBEATS)


class Watcher:
    """Three informers and a way to wait for the next change of some of them."""

    def __init__(self, client: kubeclient.Client, *, runner_namespace: str | None = None) -> None:
        self.client = client
        self.versions = dict.fromkeys(TOPICS, 0)
        self._changed = asyncio.Condition()
        # Each job's summary (views.Summary), kept with the cache; and the newest-first order of them,
        # sorted again only when a page asks after a change.
        self.summaries: dict[tuple[str, str], views.Summary] = {}
        self._ordered: tuple[int, list[views.Summary]] = (-1, [])
        self.jobs = kubeclient.Informer(client, kubeclient.AGENTJOBS, handler=self._job_changed)
        self.factories = kubeclient.Informer(client, kubeclient.FACTORIES, handler=self._handler(FACTORIES))
        # Heartbeat Leases only (binding Leases say nothing the jobs' status does not); in the runner
        # namespace when one is given (the operator counts runners only there, and the chart's
        # dashboard may list Leases only there).
        self.heartbeats = kubeclient.Informer(client, kubeclient.LEASES, handler=self._handler(HEARTBEATS), namespace=runner_namespace,
                                              label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_HEARTBEAT}")

    async def _bump(self, topic: str) -> None:
        self.versions[topic] += 1
        async with self._changed:
            self._changed.notify_all()

    def _handler(self, topic: str) -> Any:
        async def changed(event: str, body: dict[str, Any]) -> None:
            await self._bump(topic)
        return changed

    async def _job_changed(self, event: str, body: dict[str, Any]) -> None:
        key = kubeclient.object_key(body)
        if event == "DELETED":
            self.summaries.pop(key, None)
        else:
            self.summaries[key] = views.summarize(body)
        await self._bump(JOBS)

    def ordered_jobs(self) -> list[views.Summary]:
        """Every job's summary, newest first (sorted once per change of the jobs)."""
        version, ordered = self._ordered
        if version != self.versions[JOBS]:
            ordered = views.newest_first(self.summaries.values())
            self._ordered = (self.versions[JOBS], ordered)
        return ordered

    def version(self, topics: Collection[str]) -> int:
        return sum(self.versions[t] for t in topics if t in self.versions)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, checked after each change."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in (self.jobs, self.factories, self.heartbeats))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Watcher"]:
        """The three informers, for the duration of the block (entered once each has listed)."""
        async with self.jobs.running(), self.factories.running(), self.heartbeats.running():
            yield self
