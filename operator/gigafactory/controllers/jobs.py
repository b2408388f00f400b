"""The job lifecycle controller: each job's events, and the timers and Leases that stand for it.

A job's event folds a matching report, carries out its stop, deadline and TTL decisions
(binding/lifecycle.py), looks at its finalizer and its retry request; a binding Lease's expiry
undoes the binding (ClaimTimeout, LeaseExpired); a runner's heartbeat feeds the snapshot. Each write
runs as a task, one per job at a time (`busy`); its end brings the job back (`_release`).
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from gigafactory import kubeclient, leases
from gigafactory.binding import binder, lifecycle, patches, trust
from gigafactory.controllers import base
from gigafactory.models import agentjobs, objects

logger = logging.getLogger(__name__)


class JobLifecycle(base.Base):
    def _on_job(self, event: str, body: base.Body) -> None:
        uid = objects.uid(body)
        if event == "DELETED":
            self.records.forget(uid)  # all it remembers of the job goes at once
            self.timers.disarm(("deadline", *kubeclient.object_key(body)))
            self.timers.disarm(("ttl", *kubeclient.object_key(body)))
            self._drop_bindings_of({uid})
            self.wake()
            return
        if self.started:
            self._maybe_fold(body)
            self._maybe_stop(body)
            self._maybe_finalize(body)
            self._maybe_retry(body)
        # Our own explanation coming back (a new message, nothing else) changes nothing the cycle
        # reads: no cycle for it, or ten thousand explanation echoes would mean ten thousand cycles.
        record = self.records.of(uid)
        if record.assumed is not None and int(objects.job_status(body).get("attempt") or 0) >= record.assumed[0]:
            record.assumed = None  # the informer now shows what the bind wrote
        state = scheduling_state(body)
        if record.state != state:
            record.state = state
            self.wake()

    def _maybe_stop(self, body: base.Body) -> None:
        """Cancel, suspend, deadline, TTL (binding/lifecycle.py decides; this carries it out)."""
        assignment = objects.assignment(body)
        lease = self.bindings.cache.get(lifecycle.lease_key(assignment)) if assignment.get("lease") else None
        binding = leases.parse_binding(lease) if lease else None
        self._apply(body, lifecycle.stop_actions(body, binding=binding, now=self.now()))

    def _maybe_retry(self, body: base.Body) -> None:
        """`gigafactory retry` (the gigafactory.dev/retry annotation) on a Failed or Cancelled job."""
        request = patches.retry_requested(body)
        uid = objects.uid(body)
        if request is None or uid in self.busy:
            return
        self.busy.add(uid)
        self._spawn(self._retry(body, request), name=f"retry:{base.name_of(body)}")

    async def _retry(self, body: base.Body, request: str) -> None:
        meta = body["metadata"]
        try:
            await self.client.patch(kubeclient.AGENTJOBS, meta["name"], patches.retry_patch(body=body, request=request, now=self.now()),
                                    namespace=meta.get("namespace"), subresource="status")
            logger.info("job sent back to the queue by a retry request", extra={"job": base.name_of(body)})
        except (kubeclient.Conflict, kubeclient.NotFound):
            pass  # it changed meanwhile; its next event decides again
        except Exception:
            logger.exception("retry failed", extra={"job": base.name_of(body)})
        finally:
            self._release(str(meta.get("uid")), kubeclient.object_key(body))

    async def _delete_finished(self, key: tuple[str, str]) -> None:
        self.timers.fired(("ttl", *key))
        body = self.jobs.cache.get(key)
        if body is None:
            return
        try:
            # The uid precondition keeps a new job of the same name from being deleted in its place.
            await self.client.delete(kubeclient.AGENTJOBS, key[1], namespace=key[0], uid=body["metadata"]["uid"])
            logger.info("finished job deleted after its TTL", extra={"job": f"{key[0]}/{key[1]}"})
        except (kubeclient.NotFound, kubeclient.Conflict):
            pass
        except Exception:
            logger.exception("TTL deletion failed", extra={"job": f"{key[0]}/{key[1]}"})

    async def _write_end(self, body: base.Body, reason: str, message: str | None = None) -> None:
        await self.client.patch(kubeclient.AGENTJOBS, objects.name(body),
                                patches.end_waiting_patch(body=body, reason=reason, now=self.now(), message=message),
                                namespace=objects.namespace(body), subresource="status")
        logger.info("job ended while waiting", extra={"job": base.name_of(body), "reason": reason})

    async def _end_waiting(self, body: base.Body, reason: str, *, message: str) -> None:
        try:
            await self._write_end(body, reason, message)
        except (kubeclient.Conflict, kubeclient.NotFound):
            pass  # it changed meanwhile; the next cycle looks again
        except Exception:
            logger.exception("could not fail an invalid job", extra={"job": base.name_of(body)})
        finally:
            self._release(objects.uid(body), kubeclient.object_key(body))

    def _on_deadline(self, key: tuple[str, str]) -> None:
        self.timers.fired(("deadline", *key))
        body = self.jobs.cache.get(key)
        if body is not None:
            self._maybe_stop(body)

    async def _stop(self, body: base.Body, reason: str) -> None:
        assignment = objects.assignment(body)
        try:
            if assignment.get("lease"):
                await self.client.patch(kubeclient.LEASES, assignment["lease"], leases.stop_patch(reason),
                                        namespace=assignment.get("leaseNamespace") or assignment.get("podNamespace"))
                logger.info("stop requested", extra={"job": base.name_of(body), "reason": reason})
            else:
                await self._write_end(body, reason)
        except (kubeclient.Conflict, kubeclient.NotFound):
            pass  # the job or lease moved on; the next event decides again
        except Exception:
            logger.exception("stop failed", extra={"job": base.name_of(body)})
        finally:
            self._release(objects.uid(body), kubeclient.object_key(body))

    def _maybe_fold(self, body: base.Body) -> None:
        """Start a fold for a job with a matching report, unless a fold or undo of it is running
        (that task looks again when it ends, so a report arriving meanwhile is not missed)."""
        uid = objects.uid(body)
        if patches.report_matches(body) and uid not in self.busy:
            self.busy.add(uid)
            self._spawn(self._fold(body), name=f"fold:{base.name_of(body)}")

    async def _fold(self, body: base.Body) -> None:
        uid = objects.uid(body)
        try:
            assignment = objects.assignment(body)
            report = objects.report(body)
            problem = trust.report_problem(body, report)
            folded = await binder.fold(self.client, body=body)
            if folded is not None:
                # Counted here, from the one write that folded the report (a resourceVersion-checked patch that
                # also clears the report, so no later event folds it again); never from status.attempts on
                # start-up, so an operator restart counts nothing twice (counters restart at zero).
                self.metrics.count_spending(body, folded["status"]["attempts"][-1])
                if problem is not None:
                    self.metrics.reports_rejected.labels(field="status.report.result.branch").inc()
                    logger.warning("report rejected: %s", problem, extra={"job": base.name_of(body), "pod": assignment.get("pod"),
                                                                           "reason": trust.REASON_REPORT_REJECTED})
                self.success.record_attempt({"factory": assignment.get("factory"), "outcome": report.get("outcome"), "reason": report.get("reason")})
                logger.info("report folded", extra={"job": base.name_of(body), "reason": report.get("outcome")})
        except Exception:
            logger.exception("fold failed", extra={"job": base.name_of(body)})
            await asyncio.sleep(1)  # the release looks again: a write that keeps failing must not spin
        finally:
            self._release(uid, kubeclient.object_key(body))

    async def _expire(self, binding: leases.Binding, *, reason: str | None = None, message: str | None = None) -> None:
        """Undo a binding nobody will report on: the attempt is recorded InfraError and the job requeued."""
        expiry = reason is None
        if reason is None or message is None:
            reason, message = lifecycle.expiry_reason(binding, claim_timeout_seconds=self.settings.claim_timeout_seconds)
        try:
            job = self.jobs.cache.get((binding.job_namespace, binding.job_name))
            if job is not None and patches.report_matches(job):
                return  # the report came in time; the fold handles it
            # An expiry judged from the cache is checked against the Lease itself; a drain is not.
            if binding.pushed is not None and job is not None and not trust.own_push(job, binding.pushed):
                self.metrics.reports_rejected.labels(field=f"metadata.annotations.{leases.ANNOTATION_PUSHED}").inc()
                logger.warning("announced push of %s ignored: not the job's branch", binding.pushed[0][:255],
                               extra={"job": f"{binding.job_namespace}/{binding.job_name}", "pod": binding.pod, "reason": trust.REASON_REPORT_REJECTED})
            # A binding whose Lease lies outside the runner namespaces (the setting changed, or a Lease
            # forged there): its Lease is neither read (what it announces is untrusted) nor deleted
            # (not ours: the operator writes Leases only where the runners are).
            declared = trust.in_runner_namespaces(binding.namespace, self.runner_namespaces)
            if await binder.undo(self.client, binding=binding, reason=reason, message=message,
                                 check_lease=expiry and declared, delete_lease=declared):
                self.metrics.undone.labels(reason=reason).inc()
                self.success.record_attempt({"factory": binding.factory, "outcome": agentjobs.Outcome.INFRA_ERROR.value, "reason": reason})
                logger.info("binding undone", extra={"job": f"{binding.job_namespace}/{binding.job_name}", "pod": binding.pod, "reason": reason})
        except Exception:
            logger.exception("undo failed", extra={"lease": binding.name, "job": f"{binding.job_namespace}/{binding.job_name}"})
            await asyncio.sleep(1)  # a write that keeps failing must not spin
            # Nothing else would bring this binding back (its Lease stays expired, no event comes):
            # look again, while the Lease is still there.
            asyncio.get_running_loop().call_soon(self._on_binding_expired, (binding.namespace, binding.name))
        finally:
            self._release(binding.job_uid, (binding.job_namespace, binding.job_name))

    def _drop_bindings_of(self, uids: set[str]) -> None:
        """Delete the binding Leases of jobs that no longer exist. Their runners see the Lease go,
        stop the agent's process group and report nothing (docs/protocol.md: a lost binding)."""
        for lease in list(self.bindings.cache.values()):
            binding = leases.parse_binding(lease)
            if binding is not None and binding.job_uid in uids:
                logger.info("job gone: dropping its binding", extra={"lease": binding.name})
                self._spawn(self.client.delete(kubeclient.LEASES, binding.name, namespace=binding.namespace),
                            name=f"drop:{binding.name}")

    def _on_binding(self, event: str, body: base.Body) -> None:
        key = ("binding", *kubeclient.object_key(body))
        binding = leases.parse_binding(body)
        if event == "DELETED" or binding is None:
            self.timers.disarm(key)
            if binding is not None and self.started:
                # A binding gone may be what a deleted job or a draining factory waits for.
                job = self.jobs.cache.get((binding.job_namespace, binding.job_name))
                if job is not None:
                    self._maybe_finalize(job)
                factory = self.factories.cache.get(("", binding.factory))
                if factory is not None:
                    self._maybe_drain(factory)
            self.wake()
            return
        if binding.expires_at is not None:
            self.timers.arm(key, binding.expires_at, lambda: self._on_binding_expired(key[1:]))

    def _on_binding_expired(self, key: tuple[str, str]) -> None:
        self.timers.fired(("binding", *key))
        lease = self.bindings.cache.get(key)
        binding = leases.parse_binding(lease) if lease else None
        if binding is None:
            return
        action = lifecycle.expiry(binding, now=self.now())
        if isinstance(action, lifecycle.Expire) and binding.job_uid in self.busy:
            # A fold or undo is running; look again shortly rather than race it.
            asyncio.get_running_loop().call_later(0.5, self._on_binding_expired, key)
            return
        self._apply({}, [action])

    def _on_heartbeat(self, event: str, body: base.Body) -> None:
        key = kubeclient.object_key(body)
        beat = leases.parse_heartbeat(body) if event != "DELETED" else None
        before = self.beats.pop(key, None)
        if beat is not None:
            self.beats[key] = beat
            if beat.expires_at is not None:
                self.timers.arm(("heartbeat", *key), beat.expires_at, lambda: self._on_heartbeat_lapsed(key))
        else:
            self.timers.disarm(("heartbeat", *key))
            if before is not None:
                self._pod_gone(key)
        # A renewal of a ready pod changes nothing the scheduler reads: no cycle for it.
        now = self.now()
        if before is not None and beat is not None and same_announcement(before, beat) and before.is_ready(now) == beat.is_ready(now):
            return
        self.wake()

    def _on_heartbeat_lapsed(self, key: tuple[str, str]) -> None:
        self.timers.fired(("heartbeat", *key))
        self.wake()
        self._pod_gone(key)

    def _pod_gone(self, pod: tuple[str, str]) -> None:
        """A runner pod's heartbeat went or lapsed: a deleted job that waits for that runner to stop
        (the stop grace) has nobody left to wait for. Its deletion may have been seen first: the
        heartbeats and the jobs are separate watches, in no particular order."""
        if not self.started:
            return
        for body in list(self.jobs.cache.values()):
            if not objects.deleting(body):
                continue
            assignment = objects.assignment(body)
            if (assignment.get("podNamespace"), assignment.get("pod")) == pod:
                self._maybe_finalize(body)


def scheduling_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything of a job that the cycle, the fold and the timers read, apart from the spec (whose
    changes move metadata.generation). The Scheduled condition's message is not in it."""
    meta, status, assignment = objects.meta(body), objects.job_status(body), objects.assignment(body)
    return (
        meta.get("generation"), meta.get("deletionTimestamp"), status.get("phase"), status.get("attempt"),
        status.get("requeueAt"), assignment.get("pod"), assignment.get("attempt"), bool(status.get("report")),
    )


def same_announcement(a: leases.Heartbeat, b: leases.Heartbeat) -> bool:
    return (a.factory, a.slots, a.agents, a.warm_repos, a.draining) == (b.factory, b.slots, b.agents, b.warm_repos, b.draining)
