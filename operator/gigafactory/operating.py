"""The operator: informers feed in-memory caches; one scheduling loop binds; small controllers carry
out each job's and factory's lifecycle, decided by pure functions (binding/lifecycle.py).

Why the scheduler is not a set of kopf handlers: it must see *all* jobs, pods and factories at once
(a snapshot), not one object per handler call, and it must stay quiet while nothing changes. kopf's
per-object machinery (progress annotations, per-object patches, periodic re-checks) would put writes
and CPU on the hot path (docs/architecture.md gives the measurement). The per-object lifecycle work
(stops, deadlines, TTL, the AgentJob finalizer, drains) runs here too, as tasks one per object at a
time. The one per-object thing kopf does is the Factory's finalizer: kopf's delete handler
(factorykopf.py) awaits `drain` here and kopf removes `gigafactory.dev/drain` once it returns.

  controllers/jobs.py        a job's events: fold, stop, deadline, TTL, retry; binding expiry; heartbeats
  controllers/finalizing.py  a deleted job's cleanup and finalizer; a deleted factory's drain (`drain`)
  controllers/scheduling.py  the loop: snapshot ─► cycle ─► bind / scale / explain / factory status
  controllers/caches.py      one record per job, the timers
  app.py                     the process: probes, leader election, signals (every entry point)

Restart truth: everything is rebuilt from the API on start (informers list first); bound jobs keep
their slots because `used` is computed from the jobs' assignments, and a bound job whose Lease is
missing (a crash between the two writes of a bind) gets it created again.
"""

import asyncio
import contextlib
import logging

from gigafactory import electing, observing
from gigafactory.controllers import finalizing, jobs, scheduling

logger = logging.getLogger(__name__)


class Operator(scheduling.Scheduling, jobs.JobLifecycle, finalizing.Finalizing):
    """The controllers over one shared state (controllers/base.py), and the work's own lifecycle."""

    def ready(self) -> bool:
        if self.elector is not None and not self.elector.leading:
            return self.elector.watching  # a healthy standby is ready: it is what a failover needs
        return self.started and all(i.synced.is_set() for i in self.informers)

    async def run(self, elector: electing.LeaderElector | None = None) -> None:
        """Serve probes, wait for leadership (when electing), then work until cancelled. Losing
        leadership raises LostLeadership, and a loop that dies raises its error: the process exits
        and restarts (as a standby), with nothing in memory that the new leader might contradict."""
        self.elector = elector
        http, port = await observing.serve(port=self.settings.http_port, metrics=self.metrics, ready=self.ready)
        logger.info("serving probes and metrics", extra={"port": port})
        holder: asyncio.Task[None] | None = None
        try:
            if elector is not None:
                logger.info("standing by for leadership", extra={"identity": elector.identity})
                await elector.acquire()
                self.metrics.leader.set(1)
                holder = asyncio.create_task(elector.hold(), name="leader-lease")
            async with contextlib.AsyncExitStack() as stack:
                for informer in self.informers:
                    await stack.enter_async_context(informer.running())
                await self.recover()
                self.working.set()  # a drain awaited by kopf's delete handler may go on (drain)
                self.started_at = asyncio.get_running_loop().time()
                self.wake()
                logger.info("operator started")
                work = asyncio.create_task(self.loop(), name="loop")
                waiting = {work} if holder is None else {work, holder}
                try:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    work.cancel()
                for task in done:
                    task.result()  # LostLeadership (or a loop that died) ends the process
        finally:
            self.working.clear()
            self.metrics.leader.set(0)
            self.timers.cancel_all()
            for task in list(self.tasks):
                task.cancel()
            if holder is not None:
                holder.cancel()
                with contextlib.suppress(asyncio.CancelledError, electing.LostLeadership):
                    await holder
            if elector is not None:
                await elector.release()
            await http.cleanup()
