"""The scheduling loop: informer events wake it (debounced); each cycle takes a snapshot of the
caches, runs the pure cycle (scheduling/cycle.py) in a worker thread, then writes what it decided —
binds (assume in the cache, then write; on failure forget), scaling, explanations of unschedulable
jobs (only changed ones), factory statuses (only changed ones) — within a bounded concurrency.

  informer events ──► wake (debounced) ──► snapshot ──► cycle ──► bind (concurrent, bounded)
                                                        └──► explain (only changed conditions)
                                                        └──► factory status (only when changed)
"""

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from gigafactory import constants, kubeclient, leases
from gigafactory.binding import binder, lifecycle, patches, trust
from gigafactory.controllers import base, statuses
from gigafactory.models import agentjobs, objects
from gigafactory.scheduling import cycle, snapshots

logger = logging.getLogger(__name__)

ACTIVE_PHASES = (agentjobs.Phase.BOUND.value, agentjobs.Phase.RUNNING.value)


class Scheduling(statuses.FactoryStatuses):
    async def recover(self) -> None:
        """After the first sync: fold reports that came while we were away, and give bound jobs
        whose Lease is missing (crash between the two writes) their Lease back; and recall each
        factory's recent record from the attempts the jobs keep."""
        self.success = snapshots.SuccessRatios.from_jobs(self.jobs.cache.values())
        for body in list(self.jobs.cache.values()):
            uid = objects.uid(body)
            if patches.report_matches(body):
                self._maybe_fold(body)
                continue
            assignment = objects.assignment(body)
            if objects.job_status(body).get("phase") != agentjobs.Phase.BOUND.value or not assignment.get("lease") or objects.deleting(body):
                continue  # (a deleted job's binding is not restored: its finalizer lets it go)
            key = lifecycle.lease_key(assignment)
            if key in self.bindings.cache:
                continue
            namespace = key[0]
            if not trust.in_runner_namespaces(namespace, self.runner_namespaces):
                continue  # not a runner namespace (any more): no Lease there; the orphan timer undoes the binding
            meta = body["metadata"]
            lease = leases.build_binding_lease(
                job_namespace=meta["namespace"], job_name=meta["name"], job_uid=uid, attempt=int(assignment["attempt"]),
                factory=assignment["factory"], pod=assignment["pod"], pod_namespace=namespace,
                claim_timeout_seconds=self.settings.claim_timeout_seconds, moment=self.now(),
            )
            try:
                await self.client.create(kubeclient.LEASES, lease, namespace=namespace)
                logger.info("binding lease restored", extra={"job": base.name_of(body), "lease": assignment["lease"]})
            except kubeclient.AlreadyExists:
                pass
            except kubeclient.ApiError as exc:
                # (a namespace being deleted, say): the orphan timer undoes the binding instead.
                logger.warning("binding lease not restored: %s", exc, extra={"job": base.name_of(body)})
        # Leases of jobs deleted while no operator ran: every Lease must have a live binding.
        live = {objects.uid(b) for b in self.jobs.cache.values()}
        orphans = {b.job_uid for b in map(leases.parse_binding, self.bindings.cache.values()) if b and b.job_uid not in live}
        self._drop_bindings_of(orphans)
        self.started = True
        # What happened while no operator ran: cancels, suspends and retry requests; deadline and TTL
        # timers (they live in memory only); deletions and drains.
        for body in list(self.jobs.cache.values()):
            self._maybe_stop(body)
            self._maybe_retry(body)
            self._maybe_finalize(body)
        for body in list(self.factories.cache.values()):
            self._maybe_drain(body)

    def snapshot(self) -> tuple[snapshots.Snapshot, dict[str, base.Body]]:
        now = self.now()
        factories = {f.name: f for f in (snapshots.factory_from_body(b) for b in self.factories.cache.values())}
        pods = [snapshots.PodInfo.from_heartbeat(beat, at=now) for beat in self.beats.values()]
        # Pods the scaler chose for removal take no new jobs (the operator is the only one that binds).
        pods = [dataclasses.replace(p, draining=True) if p.key in self.scaler.leaving else p for p in pods]
        used: dict[snapshots.PodKey, int] = collections.defaultdict(int)
        repos: dict[snapshots.PodKey, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        pending: list[snapshots.JobInfo] = []
        bodies: dict[str, base.Body] = {}
        for body in self.jobs.cache.values():
            meta = objects.meta(body)
            uid = str(meta.get("uid") or "")
            rv = str(meta.get("resourceVersion") or "")
            record = self.records.of(uid)
            if record.info is None or record.resource_version != rv:
                info = None
                generation = meta.get("generation")
                if record.spec_validated(generation):
                    # Only the status changed (a bind, an explanation): the spec needs no new validation.
                    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                        info = snapshots.job_from_body(body)
                if info is None:
                    problem = snapshots.spec_problem(body)
                    if problem is not None:
                        # No input crashes the operator: a spec it cannot act on fails the job, with the field.
                        if snapshots.is_pending(body) and uid not in self.busy:
                            self.busy.add(uid)
                            self._spawn(self._end_waiting(body, patches.INVALID_SPEC, message=problem), name=f"invalid:{base.name_of(body)}")
                        continue
                    info = snapshots.job_from_body(body)
                    record.valid_generation = generation
                record.resource_version, record.info = rv, info
            info = record.info
            assignment = objects.assignment(body)
            if assignment and objects.job_status(body).get("phase") in ACTIVE_PHASES:
                self._check_orphan(body, assignment, now)
                key = (assignment.get("podNamespace") or "", assignment.get("pod") or "")
                used[key] += 1
                if info.repo_key:
                    repos[key][info.repo_key] += 1
            elif record.assumed is not None:
                _, key, repo = record.assumed
                used[key] += 1
                if repo:
                    repos[key][repo] += 1
            elif snapshots.is_pending(body) and uid not in self.busy and not meta.get("deletionTimestamp"):
                pending.append(info)
                bodies[uid] = body
        snap = snapshots.Snapshot(
            now=now, jobs=pending, pods=pods, factories=factories, used=dict(used), repos_on_pod=dict(repos),
            success_ratio=self.success.as_dict(),
        )
        return snap, bodies

    def _check_orphan(self, body: base.Body, assignment: Mapping[str, Any], now: datetime.datetime) -> None:
        """A bound job whose binding Lease never appeared: undone past the claim timeout (lifecycle.py)."""
        key = kubeclient.object_key(body)
        self._apply(body, lifecycle.orphan_actions(
            body, lease_present=lifecycle.lease_key(assignment) in self.bindings.cache, armed=("orphan", *key) in self.timers,
            now=now, claim_timeout_seconds=self.settings.claim_timeout_seconds))

    async def run_once(self) -> cycle.CycleResult:
        snap, bodies = self.snapshot()
        used_before = dict(snap.used)
        # In a worker thread: a big cycle takes a good part of a second, and the probes, timers and
        # informers must not wait for it. The cycle touches only its own snapshot, never the caches.
        with self.metrics.cycle_seconds.time():
            result = await asyncio.to_thread(cycle.run, snap, self.profile)
        self.cycles += 1
        self._observe(snap, result)
        for decision in result.decisions:
            self.records.of(decision.job.uid).assumed = (decision.attempt, decision.pod.key, decision.job.repo_key)
        writes: list[Awaitable[Any]] = [self._bind(bodies[d.job.uid], d) for d in result.decisions]
        for decision in result.decisions:  # a pod bound a job this very cycle is not idle
            self.scaler.bound(decision.pod.key, snap.now)
        plan = self.scaler.plan(snap, [e.job for e in result.unschedulable],
                                {b["metadata"]["name"]: b for b in self.factories.cache.values()},
                                {objects.labels(d).get(constants.LABEL_FACTORY, ""): d for d in self.deployments.cache.values()})
        self.waiting_for = plan.waiting_for
        if plan.recheck_at is not None:
            self.timers.arm(("scale", "", ""), plan.recheck_at, self.wake)
        writes += plan.writes
        writes += self._explanation_writes(bodies, result.unschedulable)
        writes += self._factory_status_writes(snap, used_before, plan.status, plan.refused)
        if writes:
            for outcome in await binder.gather_bounded(writes, limit=self.settings.bind_concurrency):
                if isinstance(outcome, Exception):
                    logger.warning("write failed: %s", outcome)
        self._schedule_requeues(result)
        return result

    async def _bind(self, body: base.Body, decision: cycle.Decision) -> None:
        job = decision.job
        ok = False
        try:
            if not trust.in_runner_namespaces(decision.pod.namespace, self.runner_namespaces):
                # Cannot come from the snapshot (its pods are the declared namespaces' heartbeats); a
                # second line all the same: binding Leases are created in runner namespaces only.
                logger.error("bind to a pod outside the runner namespaces refused", extra={"pod": f"{decision.pod.namespace}/{decision.pod.name}"})
                return
            factory = self.factories.cache.get(("", decision.pod.factory)) or {}
            ok = await binder.bind(self.client, body=body, decision=decision, claim_timeout_seconds=self.settings.claim_timeout_seconds,
                                   model_prices=objects.factory_spec(factory).get("prices") or ())
        finally:
            if not ok:
                # Forget the assumption; the job is pending again in the next cycle.
                record = self.records.get(job.uid)
                if record is not None:
                    record.assumed = None
                self.metrics.bind_conflicts.inc()
                self.wake()
        if not ok:
            return
        record = self.records.get(job.uid)
        if record is not None:
            record.explained_at = None
        self.metrics.binds.labels(factory=decision.pod.factory).inc()
        since = job.requeue_at or job.created_at
        if since is not None:
            self.metrics.bind_latency.observe(max(0.0, (self.now() - since).total_seconds()))
        logger.info("bound", extra={"job": f"{job.namespace}/{job.name}", "pod": decision.pod.name, "factory": decision.pod.factory})
        if self.event_budget.take():
            await binder.emit_bind_event(self.client, body=body, decision=decision)

    def _explanation_writes(self, bodies: Mapping[str, base.Body], explanations: list[cycle.Explanation]) -> list[Any]:
        """The Scheduled=False writes this cycle owes: new substance at once, changed counts once the
        message is `explanation_refresh_seconds` old (one timer brings the loop back for those).
        They go after the binds, within the same bounded concurrency; the loop waits for them, which
        batches the next cycle (measured: explanations beside the loop made a 5,000-job burst slower,
        binds included, because the loop then cycles while the API server is busy)."""
        clock = asyncio.get_running_loop().time()
        refresh = self.settings.explanation_refresh_seconds
        writes: list[Any] = []
        next_due: float | None = None
        for explanation in explanations:
            body = bodies[explanation.job.uid]
            current = objects.condition(body, constants.ConditionType.SCHEDULED.value)
            waiting = self.waiting_for.get(explanation.job.uid)
            if waiting is not None:
                # Not unschedulable: a scaled factory is growing for it. Written when the words change.
                if current is None or current.get("reason") != patches.REASON_WAITING_FOR_CAPACITY or current.get("message") != waiting:
                    writes.append(self._explain(body, explanation, waiting=waiting))
                continue
            message = None
            if current is not None and current.get("status") == "False" and current.get("reason") == patches.REASON_UNSCHEDULABLE:
                message = str(current.get("message") or "")
            record = self.records.get(explanation.job.uid)
            explained_at = record.explained_at if record is not None else None
            ago = clock - (self.started_at if explained_at is None else explained_at)
            if cycle.explanation_due(current=message, new=explanation, written_ago=ago, refresh_seconds=refresh):
                writes.append(self._explain(body, explanation))
            elif message is not None and message != explanation.message:
                next_due = refresh - ago if next_due is None else min(next_due, refresh - ago)
        if next_due is not None:
            self.timers.arm(("explain", "", ""), self.now() + datetime.timedelta(seconds=max(0.0, next_due)), self.wake)
        return writes

    async def _explain(self, body: base.Body, explanation: cycle.Explanation, waiting: str | None = None) -> None:
        # The persisted message leaves out the queue position: it moves with every bind ahead of
        # the job, and writing it would rewrite every waiting job on every cycle.
        if waiting is not None:
            await binder.explain(self.client, body=body, message=f"waiting for capacity: {waiting}",
                                 reason=patches.REASON_WAITING_FOR_CAPACITY)
            return
        if await binder.explain(self.client, body=body, message=explanation.message):
            record = self.records.get(explanation.job.uid)
            if record is not None:
                record.explained_at = asyncio.get_running_loop().time()
            job = explanation.job
            logger.info("unschedulable", extra={"job": f"{job.namespace}/{job.name}", "reason": explanation.message_with_position})

    def _observe(self, snap: snapshots.Snapshot, result: cycle.CycleResult) -> None:
        per_queue: collections.Counter[str] = collections.Counter(j.queue for j in snap.jobs)
        for decision in result.decisions:
            per_queue[decision.job.queue] -= 1
        self.metrics.pending.clear()
        for queue, count in per_queue.items():
            self.metrics.pending.labels(queue=queue).set(count)
        reasons: collections.Counter[str] = collections.Counter()
        for explanation in result.unschedulable:
            reasons.update(explanation.reasons)
        self.metrics.unschedulable.clear()
        for reason, count in reasons.items():
            self.metrics.unschedulable.labels(reason=reason).set(count)
        self.metrics.unschedulable_jobs.set(len(result.unschedulable))

    def _schedule_requeues(self, result: cycle.CycleResult) -> None:
        """Wake when the earliest backoff ends (one timer, not one per job)."""
        now = self.now()
        times = [j.requeue_at for j in result.skipped if j.requeue_at is not None and j.requeue_at > now and not j.suspended and not j.cancelled]
        if times:
            self.timers.arm(("requeue", "", ""), min(times), self.wake)

    async def loop(self) -> None:
        while True:
            await self.wakeup.wait()
            # Coalesce a burst of events into one cycle.
            await asyncio.sleep(self.settings.schedule_debounce_seconds)
            self.wakeup.clear()
            try:
                await self.run_once()
            except Exception:
                logger.exception("scheduling cycle failed")
                await asyncio.sleep(1)
                self.wake()
