"""The operator process: informers feed an in-memory cache, one scheduling loop binds.

Why a plain asyncio process and not kopf handlers: the scheduler must see *all* jobs, pods and
factories at once (a snapshot), not one object per handler call, and it must stay quiet while
nothing changes. kopf's per-object machinery (progress annotations, per-object patches, periodic
re-checks) would put writes on the hot path. kopf stays available for the per-object lifecycle work
that needs finalizers (job deletion, factory drain), which is not part of this loop.

The loop:
  informer events ──► wake (debounced) ──► snapshot ──► cycle ──► bind (concurrent, bounded)
                                                        └──► explain (only changed conditions)
                                                        └──► factory status (only when changed)
  binding Lease timers (at leases.expires_at) ──► undo ClaimTimeout / LeaseExpired
  job with a matching report ──► fold

Restart truth: everything is rebuilt from the API on start (informers list first); bound jobs keep
their slots because `used` is computed from the jobs' assignments, and a bound job whose Lease is
missing (a crash between the two writes of a bind) gets it created again.
"""

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import pathlib
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from gigafactory import config, consent, constants, electing, kubeclient, leases, observing
from gigafactory.binding import binder, cleanup, patches, scaler, trust
from gigafactory.models import agentjobs
from gigafactory.runner import worktrees
from gigafactory.scheduling import cycle, framework, plugins, snapshots

logger = logging.getLogger(__name__)

Body = dict[str, Any]
ACTIVE_PHASES = (agentjobs.Phase.BOUND.value, agentjobs.Phase.RUNNING.value)


class Operator:
    def __init__(self, settings: config.OperatorSettings, client: kubeclient.Client) -> None:
        self.settings = settings
        self.client = client
        self.profile = plugins.default_profile(**framework.settings_values(settings))
        self.metrics = observing.Metrics()
        self.jobs = kubeclient.Informer(client, kubeclient.AGENTJOBS, handler=self._on_job)
        self.factories = kubeclient.Informer(client, kubeclient.FACTORIES, handler=self._on_factory)
        # Runner pods count only in the namespaces the platform declared (binding/trust.py): a Lease
        # elsewhere never enters these caches, so nothing (scheduler, binder, folds, drains, cleanup)
        # can act on it; it is reported once instead. One cluster-wide watch per role, filtered here:
        # the strays are what the report is about, so they must be seen to be reported.
        self.runner_namespaces = settings.runner_namespace_set()
        self.strays: set[str] = set()  # uids of ignored Leases already reported
        self.stray_events = TokenBucket(rate=1, burst=20)
        self.heartbeats = kubeclient.Informer(
            client, kubeclient.LEASES, label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_HEARTBEAT}", handler=self._on_heartbeat,
            keep=self._in_runner_namespaces, refused=self._on_stray_lease,
        )
        self.bindings = kubeclient.Informer(
            client, kubeclient.LEASES, label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_BINDING}", handler=self._on_binding,
            keep=self._in_runner_namespaces, refused=self._on_stray_lease,
        )
        # The runner Deployments this operator owns for scaled factories (binding/scaler.py).
        self.deployments = kubeclient.Informer(client, kubeclient.DEPLOYMENTS, namespace=settings.namespace,
                                               label_selector=f"{constants.LABEL_ROLE}=runners", handler=lambda *_: self.wake())
        self.informers = (self.jobs, self.factories, self.heartbeats, self.bindings, self.deployments)
        self.scaler = scaler.Scaler(client, namespace=settings.namespace, profile=self.profile,
                                    service_account=settings.runner_service_account)
        self.waiting_for: dict[str, str] = {}  # job uid → the scaled factory it waits on
        self.wakeup = asyncio.Event()
        # Binds decided but not yet seen back from the informer: job uid → (attempt, pod key, repo key).
        self.assumed: dict[str, tuple[int, snapshots.PodKey, str]] = {}
        self.job_infos: dict[str, tuple[str, snapshots.JobInfo]] = {}  # uid → (resourceVersion, parsed)
        self.spec_valid: dict[str, Any] = {}  # uid → the generation whose spec passed validation
        self.job_states: dict[str, tuple[Any, ...]] = {}  # uid → what the cycle reads of it (_scheduling_state)
        self.beats: dict[tuple[str, str], leases.Heartbeat] = {}
        self.timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.busy: set[str] = set()  # jobs with a fold or undo in flight
        # Jobs whose finalizer this operator removed: the cache may still show it until the DELETED
        # event, and a second run would delete the branch again and call it "moved or gone".
        self.finalized: set[str] = set()
        self.branches_deleted: set[tuple[str, str, str]] = set()  # (job uid, branch, commit) already cleaned up
        self.tasks: set[asyncio.Task[Any]] = set()
        self.success = snapshots.SuccessRatios()
        # When this operator last wrote each waiting job's explanation (loop clock); before the first
        # write, the operator's start counts (so a restart does not rewrite every waiting job).
        self.explained_at: dict[str, float] = {}
        self.started_at = 0.0
        self.factory_tasks: set[str] = set()  # factories with a finalizer write in flight
        self._workspace: worktrees.Workspace | None = None  # git for branch cleanup, made on first use
        self.started = False
        self.cycles = 0
        self.elector: electing.LeaderElector | None = None
        self.event_budget = TokenBucket(rate=settings.bind_events_per_second, burst=10 * settings.bind_events_per_second)

    # --- informer handlers: cheap, never write; they wake the loop or start a task ---

    def _in_runner_namespaces(self, lease: Body) -> bool:
        return trust.in_runner_namespaces(str((lease.get("metadata") or {}).get("namespace") or ""), self.runner_namespaces)

    def _on_stray_lease(self, event: str, lease: Body) -> None:
        """A heartbeat or binding Lease outside the runner namespaces: ignored, and reported once per
        Lease (a metric always, an Event on the Lease within a budget), never per renewal."""
        meta = lease.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if event == "DELETED":
            self.strays.discard(uid)
            return
        if uid in self.strays:
            return
        self.strays.add(uid)
        role = str((meta.get("labels") or {}).get(constants.LABEL_ROLE) or "")
        self.metrics.leases_ignored.labels(role=role).inc()
        declared = ", ".join(sorted(self.runner_namespaces or ()))
        message = (f"{role} Lease {meta.get('namespace')}/{meta.get('name')} ignored: runner pods count only in the runner "
                   f"namespaces the platform declared ({declared}; GIGAFACTORY_RUNNER_NAMESPACES)")
        logger.warning(message, extra={"lease": f"{meta.get('namespace')}/{meta.get('name')}", "reason": "LeaseIgnored"})
        if self.stray_events.take():
            self._spawn(self._stray_event(lease, message), name=f"stray:{meta.get('name')}")

    async def _stray_event(self, lease: Body, message: str) -> None:
        with contextlib.suppress(kubeclient.ApiError):
            event = trust.ignored_lease_event(lease, message=message, now=leases.now())
            await self.client.create(kubeclient.EVENTS, event, namespace=event["metadata"]["namespace"])

    def wake(self) -> None:
        self.wakeup.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_job(self, event: str, body: Body) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        status = body.get("status") or {}
        assumed = self.assumed.get(uid)
        if assumed is not None and (event == "DELETED" or int(status.get("attempt") or 0) >= assumed[0]):
            del self.assumed[uid]  # the informer now shows what the bind wrote
        if event == "DELETED":
            self.finalized.discard(uid)
            self.branches_deleted = {entry for entry in self.branches_deleted if entry[0] != uid}
            self.job_infos.pop(uid, None)
            self.spec_valid.pop(uid, None)
            self.explained_at.pop(uid, None)
            self.job_states.pop(uid, None)
            self._disarm(("deadline", *kubeclient.object_key(body)))
            self._disarm(("ttl", *kubeclient.object_key(body)))
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
        state = _scheduling_state(body)
        if self.job_states.get(uid) != state:
            self.job_states[uid] = state
            self.wake()

    def _maybe_stop(self, body: Body) -> None:
        """Cancel or suspend: a job without a binding is cancelled on the spot; a bound or running one
        gets a stop request on its binding Lease, and the fold of the runner's Stopped report ends it."""
        status = body.get("status") or {}
        now = leases.now()
        reason = patches.stop_reason(body, now=now)
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if status.get("phase") in {p.value for p in agentjobs.TERMINAL_PHASES}:
            self._disarm(("deadline", *kubeclient.object_key(body)))
            self._arm_ttl(body)
            return
        self._disarm(("ttl", *kubeclient.object_key(body)))  # a retried job is not finished any more
        end = patches.deadline(body)
        if end is not None and end > now:
            # The deadline passes without any event: a timer brings the job back here then.
            key = kubeclient.object_key(body)
            self._arm(("deadline", *key), end, lambda: self._on_deadline(key))
        if reason is None or uid in self.busy:
            return
        assignment = status.get("assignment") or {}
        if assignment.get("lease"):
            lease = self.bindings.cache.get((assignment.get("leaseNamespace") or assignment.get("podNamespace") or "", assignment["lease"]))
            binding = leases.parse_binding(lease) if lease else None
            if binding is None or binding.stop:
                return  # gone (the fold or undo follows) or already asked: nothing to write
        elif reason == leases.STOP_SUSPENDED:
            return  # a suspended waiting job just waits: the cycle skips it
        self.busy.add(uid)
        self._spawn(self._stop(body, reason), name=f"stop:{_name(body)}")

    def _maybe_retry(self, body: Body) -> None:
        """`gigafactory retry` (the gigafactory.dev/retry annotation) on a Failed or Cancelled job."""
        request = patches.retry_requested(body)
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if request is None or uid in self.busy:
            return
        self.busy.add(uid)
        self._spawn(self._retry(body, request), name=f"retry:{_name(body)}")

    async def _retry(self, body: Body, request: str) -> None:
        meta = body["metadata"]
        try:
            await self.client.patch(kubeclient.AGENTJOBS, meta["name"], patches.retry_patch(body=body, request=request, now=leases.now()),
                                    namespace=meta.get("namespace"), subresource="status")
            logger.info("job sent back to the queue by a retry request", extra={"job": _name(body)})
        except (kubeclient.Conflict, kubeclient.NotFound):
            pass  # it changed meanwhile; its next event decides again
        except Exception:
            logger.exception("retry failed", extra={"job": _name(body)})
        finally:
            self._release(str(meta.get("uid")), kubeclient.object_key(body))

    def _arm_ttl(self, body: Body) -> None:
        """ttlSecondsAfterFinished: delete a finished job that long after its completionTime."""
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = leases.parse_time((body.get("status") or {}).get("completionTime"))
        if ttl is None or finished is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        key = kubeclient.object_key(body)
        at = finished + datetime.timedelta(seconds=int(ttl))
        self._arm(("ttl", *key), at, lambda: self._spawn(self._delete_finished(key), name=f"ttl:{key[0]}/{key[1]}"))

    async def _delete_finished(self, key: tuple[str, str]) -> None:
        self.timers.pop(("ttl", *key), None)
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

    async def _write_end(self, body: Body, reason: str, message: str | None = None) -> None:
        meta = body.get("metadata") or {}
        await self.client.patch(kubeclient.AGENTJOBS, str(meta.get("name")),
                                patches.end_waiting_patch(body=body, reason=reason, now=leases.now(), message=message),
                                namespace=meta.get("namespace"), subresource="status")
        logger.info("job ended while waiting", extra={"job": _name(body), "reason": reason})

    async def _end_waiting(self, body: Body, reason: str, *, message: str) -> None:
        try:
            await self._write_end(body, reason, message)
        except (kubeclient.Conflict, kubeclient.NotFound):
            pass  # it changed meanwhile; the next cycle looks again
        except Exception:
            logger.exception("could not fail an invalid job", extra={"job": _name(body)})
        finally:
            self._release(str((body.get("metadata") or {}).get("uid")), kubeclient.object_key(body))

    def _on_deadline(self, key: tuple[str, str]) -> None:
        self.timers.pop(("deadline", *key), None)
        body = self.jobs.cache.get(key)
        if body is not None:
            self._maybe_stop(body)

    async def _stop(self, body: Body, reason: str) -> None:
        meta = body.get("metadata") or {}
        assignment = (body.get("status") or {}).get("assignment") or {}
        try:
            if assignment.get("lease"):
                await self.client.patch(kubeclient.LEASES, assignment["lease"], leases.stop_patch(reason),
                                        namespace=assignment.get("leaseNamespace") or assignment.get("podNamespace"))
                logger.info("stop requested", extra={"job": _name(body), "reason": reason})
            else:
                await self._write_end(body, reason)
        except (kubeclient.Conflict, kubeclient.NotFound):
            pass  # the job or lease moved on; the next event decides again
        except Exception:
            logger.exception("stop failed", extra={"job": _name(body)})
        finally:
            self._release(str(meta.get("uid")), kubeclient.object_key(body))

    def _drop_bindings_of(self, uids: set[str]) -> None:
        """Delete the binding Leases of jobs that no longer exist. Their runners see the Lease go,
        stop the agent's process group and report nothing (docs/protocol.md: a lost binding)."""
        for lease in list(self.bindings.cache.values()):
            binding = leases.parse_binding(lease)
            if binding is not None and binding.job_uid in uids:
                logger.info("job gone: dropping its binding", extra={"lease": binding.name})
                self._spawn(self.client.delete(kubeclient.LEASES, binding.name, namespace=binding.namespace),
                            name=f"drop:{binding.name}")

    def _maybe_fold(self, body: Body) -> None:
        """Start a fold for a job with a matching report, unless a fold or undo of it is running
        (that task looks again when it ends, so a report arriving meanwhile is not missed)."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if patches.report_matches(body) and uid not in self.busy:
            self.busy.add(uid)
            self._spawn(self._fold(body), name=f"fold:{_name(body)}")

    def _release(self, uid: str, key: tuple[str, str]) -> None:
        self.busy.discard(uid)
        body = self.jobs.cache.get(key)
        if body is not None and self.started:
            self._maybe_fold(body)
            self._maybe_finalize(body)
        self.wake()

    # --- finalizers (binding/cleanup.py): a deleted job releases its binding and cleans up first ---

    def _binding_of(self, body: Body) -> leases.Binding | None:
        assignment = (body.get("status") or {}).get("assignment") or {}
        if not assignment.get("lease"):
            return None
        lease = self.bindings.cache.get((assignment.get("leaseNamespace") or assignment.get("podNamespace") or "", assignment["lease"]))
        binding = leases.parse_binding(lease) if lease else None
        uid = (body.get("metadata") or {}).get("uid")
        return binding if binding is not None and binding.job_uid == uid else None

    def _pod_alive(self, binding: leases.Binding) -> bool:
        beat = self.beats.get((binding.namespace, binding.pod))
        return beat is not None and beat.expires_at is not None and beat.expires_at > leases.now()

    def _maybe_finalize(self, body: Body) -> None:
        """A deleted job with our finalizer: stop its attempt, wait (bounded) for the runner to let
        the binding go, then clean up and remove the finalizer. Each step's event brings us back."""
        if not cleanup.deleting(body) or constants.FINALIZER_JOB not in cleanup.finalizers(body):
            return
        meta = body["metadata"]
        uid = str(meta.get("uid"))
        if uid in self.finalized:
            return  # done; the cache still shows the finalizer until the DELETED event
        if uid in self.busy:
            return  # a fold, undo or stop is running; its release looks again
        key = kubeclient.object_key(body)
        binding = self._binding_of(body)
        if binding is not None:
            if binding.claimed and self._pod_alive(binding):
                if ("finalize", *key) not in self.timers:
                    # The runner gets stop_grace_seconds to stop the agent and report; then the Lease goes anyway.
                    at = leases.now() + datetime.timedelta(seconds=self.settings.stop_grace_seconds)
                    self._arm(("finalize", *key), at, lambda: self._spawn(self._drop_binding(binding), name=f"drop:{binding.name}"))
                if binding.stop is None:
                    self.busy.add(uid)
                    self._spawn(self._request_stop(body, binding, leases.STOP_DELETED), name=f"stop:{_name(body)}")
                return
            # Unclaimed, or its runner is gone: nobody to wait for.
            self._spawn(self._drop_binding(binding), name=f"drop:{binding.name}")
            return
        self._disarm(("finalize", *key))
        self.busy.add(uid)
        self._spawn(self._finalize(body), name=f"finalize:{_name(body)}")

    async def _request_stop(self, body: Body, binding: leases.Binding, reason: str) -> None:
        try:
            await self.client.patch(kubeclient.LEASES, binding.name, leases.stop_patch(reason), namespace=binding.namespace)
            logger.info("stop requested", extra={"job": _name(body), "reason": reason})
        except kubeclient.NotFound:
            pass
        except Exception:
            logger.exception("stop failed", extra={"job": _name(body)})
        finally:
            self._release(binding.job_uid, kubeclient.object_key(body))

    async def _drop_binding(self, binding: leases.Binding) -> None:
        """Delete a binding Lease; its runner, if alive, sees it go and kills the agent."""
        self._disarm(("finalize", binding.job_namespace, binding.job_name))
        try:
            await self.client.delete(kubeclient.LEASES, binding.name, namespace=binding.namespace)
            logger.info("binding dropped", extra={"lease": binding.name, "job": f"{binding.job_namespace}/{binding.job_name}"})
        except Exception:
            logger.exception("could not drop a binding", extra={"lease": binding.name})

    @property
    def workspace(self) -> worktrees.Workspace:
        if self._workspace is None:
            self._workspace = worktrees.Workspace(root=pathlib.Path(tempfile.mkdtemp(prefix="gigafactory-cleanup-")),
                                                  network_timeout=float(self.settings.git_timeout_seconds),
                                                  allow_local=self.settings.allow_local_repos,
                                                  accept_new_host_keys=self.settings.ssh_accept_new_host_keys)
        return self._workspace

    async def _finalize(self, body: Body) -> None:
        """The binding is gone: delete the branch per cleanup.deleteBranch, then the finalizer."""
        uid = str(body["metadata"].get("uid"))
        try:
            delete, untrusted = cleanup.branches_to_delete(body)
            for branch, commit in untrusted:
                logger.warning("branch %s (%s) left alone: not the job's branch %s", branch[:255], commit[:12], trust.job_branch(body),
                               extra={"job": _name(body), "reason": "BranchNotOwned"})
            for branch, commit in delete:
                if (uid, branch, commit) not in self.branches_deleted:  # (a retry after a failed finalizer write)
                    await self._delete_branch(body, branch, commit)
                    self.branches_deleted.add((uid, branch, commit))
            for namespace, name, pod in cleanup.log_configmaps(body):
                try:
                    await self._delete_log(namespace, name, pod=pod, job_uid=uid)
                except kubeclient.ApiError as exc:  # (no right to, say): the log outlives the job, the job still goes
                    logger.warning("log %s/%s not deleted: %s", namespace, name, exc, extra={"job": _name(body)})
            if await cleanup.remove_finalizer(self.client, kubeclient.AGENTJOBS, body, constants.FINALIZER_JOB):
                self.finalized.add(uid)
                logger.info("job finalized", extra={"job": _name(body)})
        except Exception:
            logger.exception("finalizing failed", extra={"job": _name(body)})
            await asyncio.sleep(1)  # the release looks again; a failing API must not spin
        finally:
            self._release(str(body["metadata"].get("uid")), kubeclient.object_key(body))

    async def _delete_log(self, namespace: str, name: str, *, pod: str, job_uid: str) -> None:
        """Delete a log ConfigMap only when its labels bind it to this job's attempt on `pod` (a runner
        wrote the reference: it could name another job's log), and only that very object (uid)."""
        try:
            log = await self.client.get(kubeclient.CONFIGMAPS, name, namespace=namespace)
        except kubeclient.NotFound:
            return
        if not consent.log_belongs(log, pod=pod, job_uid=job_uid):
            logger.warning("log %s/%s is not this job's (labels): left alone", namespace, name, extra={"job_uid": job_uid})
            return
        with contextlib.suppress(kubeclient.Conflict):
            await self.client.delete(kubeclient.CONFIGMAPS, name, namespace=namespace, uid=log["metadata"].get("uid"))

    async def _delete_branch(self, body: Body, branch: str, commit: str) -> None:
        """Best effort with the job's own credentials: a remote that refuses is reported in an Event,
        and the job still goes (a deletion that waits forever on a dead remote helps nobody)."""
        url = str(((body.get("spec") or {}).get("repo") or {}).get("url") or "")
        try:
            worktrees.check_url(url, allow_local=self.settings.allow_local_repos)
            data = await cleanup.read_credentials(self.client, body)
            if data is None:
                raise worktrees.GitFailure("Rejected", "SecretNotFound", "the job's credentials Secret is gone")
            deleted = await self.workspace.delete_branch(url=url, branch=branch, commit=commit,
                                                         credentials=worktrees.credentials_from_secret(data))
            reason, kind = ("BranchDeleted", "Normal") if deleted else ("BranchKept", "Normal")
            message = (f"deleted branch {branch} ({commit[:12]}) from {url}" if deleted
                       else f"branch {branch} is no longer at {commit[:12]} (moved or gone): left alone")
        except (worktrees.GitFailure, consent.Refused) as exc:
            reason, kind, message = "BranchCleanupFailed", "Warning", f"branch {branch} not deleted: {exc.message}"
        logger.info(message, extra={"job": _name(body)})
        with contextlib.suppress(kubeclient.ApiError):
            event = cleanup.cleanup_event(body, reason=reason, message=message, type=kind, now=leases.now())
            await self.client.create(kubeclient.EVENTS, event, namespace=event["metadata"]["namespace"])

    # --- factory drain ---

    def _on_factory(self, event: str, body: Body) -> None:
        if event != "DELETED" and self.started:
            self._maybe_drain(body)
        self.wake()

    def _maybe_drain(self, body: Body) -> None:
        """Every Factory carries the drain finalizer; a deleted one lets its bindings go (unclaimed at
        once, running ones after spec.drainGraceSeconds, stopped and requeued) and then disappears."""
        name = str(body["metadata"]["name"])
        has = constants.FINALIZER_FACTORY in cleanup.finalizers(body)
        if name in self.factory_tasks:
            return
        if not cleanup.deleting(body):
            if not has:
                self.factory_tasks.add(name)
                self._spawn(self._factory_finalizer(body, add=True), name=f"factory-finalizer:{name}")
            return
        if not has:
            return
        bindings = [b for b in map(leases.parse_binding, list(self.bindings.cache.values())) if b is not None and b.factory == name]
        if not bindings:
            self._disarm(("drain", "", name))
            self.factory_tasks.add(name)
            self._spawn(self._factory_finalizer(body, add=False), name=f"factory-finalizer:{name}")
            return
        now = leases.now()
        deadline = cleanup.drain_deadline(body) or now
        hard = deadline + datetime.timedelta(seconds=self.settings.stop_grace_seconds)
        for binding in bindings:
            if binding.job_uid in self.busy:
                continue
            if not binding.claimed or not self._pod_alive(binding) or now >= hard:
                reason = "FactoryDeleted" if not binding.claimed else "Drained"
                self.busy.add(binding.job_uid)
                self._spawn(self._expire(binding, reason=reason, message=f"factory {name} is being deleted"), name=f"drain:{binding.name}")
            elif now >= deadline and binding.stop is None:
                job = self.jobs.cache.get((binding.job_namespace, binding.job_name))
                if job is not None:
                    self.busy.add(binding.job_uid)
                    self._spawn(self._request_stop(job, binding, leases.STOP_DRAINED), name=f"drain:{binding.name}")
        # Come back when the grace ends, and when the runners' time to stop ends.
        again = deadline if now < deadline else hard
        if now < hard:
            self._arm(("drain", "", name), again, lambda: self._redrain(name))

    def _redrain(self, name: str) -> None:
        self.timers.pop(("drain", "", name), None)
        body = self.factories.cache.get(("", name))
        if body is not None:
            self._maybe_drain(body)

    async def _factory_finalizer(self, body: Body, *, add: bool) -> None:
        name = str(body["metadata"]["name"])
        try:
            if add:
                await cleanup.add_finalizer(self.client, kubeclient.FACTORIES, body, constants.FINALIZER_FACTORY)
            elif await cleanup.remove_finalizer(self.client, kubeclient.FACTORIES, body, constants.FINALIZER_FACTORY):
                logger.info("factory drained", extra={"factory": name})
        except Exception:
            logger.exception("factory finalizer write failed", extra={"factory": name})
            await asyncio.sleep(1)
        finally:
            self.factory_tasks.discard(name)
            current = self.factories.cache.get(("", name))
            if current is not None and current is not body:
                self._maybe_drain(current)

    def _on_heartbeat(self, event: str, body: Body) -> None:
        key = kubeclient.object_key(body)
        beat = leases.parse_heartbeat(body) if event != "DELETED" else None
        before = self.beats.pop(key, None)
        if beat is not None:
            self.beats[key] = beat
            if beat.expires_at is not None:
                self._arm(("heartbeat", *key), beat.expires_at, lambda: self._on_heartbeat_lapsed(key))
        else:
            self._disarm(("heartbeat", *key))
            if before is not None:
                self._pod_gone(key)
        # A renewal of a ready pod changes nothing the scheduler reads: no cycle for it.
        now = leases.now()
        if before is not None and beat is not None and _same_announcement(before, beat) and before.is_ready(now) == beat.is_ready(now):
            return
        self.wake()

    def _on_heartbeat_lapsed(self, key: tuple[str, str]) -> None:
        self.timers.pop(("heartbeat", *key), None)
        self.wake()
        self._pod_gone(key)

    def _pod_gone(self, pod: tuple[str, str]) -> None:
        """A runner pod's heartbeat went or lapsed: a deleted job that waits for that runner to stop
        (the stop grace) has nobody left to wait for. Its deletion may have been seen first: the
        heartbeats and the jobs are separate watches, in no particular order."""
        if not self.started:
            return
        for body in list(self.jobs.cache.values()):
            if not cleanup.deleting(body):
                continue
            assignment = (body.get("status") or {}).get("assignment") or {}
            if (assignment.get("podNamespace"), assignment.get("pod")) == pod:
                self._maybe_finalize(body)

    def _on_binding(self, event: str, body: Body) -> None:
        key = ("binding", *kubeclient.object_key(body))
        binding = leases.parse_binding(body)
        if event == "DELETED" or binding is None:
            self._disarm(key)
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
            self._arm(key, binding.expires_at, lambda: self._on_binding_expired(key[1:]))

    def _arm(self, key: tuple[str, str, str], at: datetime.datetime, callback: Any) -> None:
        """One timer per object, at the instant it expires; re-armed by every renewal."""
        self._disarm(key)
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at - leases.now()).total_seconds())
        self.timers[key] = loop.call_at(loop.time() + delay + 0.01, callback)

    def _disarm(self, key: tuple[str, str, str]) -> None:
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _on_binding_expired(self, key: tuple[str, str]) -> None:
        self.timers.pop(("binding", *key), None)
        lease = self.bindings.cache.get(key)
        binding = leases.parse_binding(lease) if lease else None
        if binding is None:
            return
        if binding.expires_at is not None and binding.expires_at > leases.now():
            self._arm(("binding", *key), binding.expires_at, lambda: self._on_binding_expired(key))
            return
        if binding.job_uid in self.busy:
            # A fold or undo is running; look again shortly rather than race it.
            asyncio.get_running_loop().call_later(0.5, self._on_binding_expired, key)
            return
        self.busy.add(binding.job_uid)
        self._spawn(self._expire(binding), name=f"expire:{binding.name}")

    # --- tasks started by handlers ---

    async def _fold(self, body: Body) -> None:
        uid = str(body["metadata"].get("uid"))
        try:
            assignment = (body.get("status") or {}).get("assignment") or {}
            report = (body.get("status") or {}).get("report") or {}
            problem = trust.report_problem(body, report)
            if await binder.fold(self.client, body=body):
                if problem is not None:
                    self.metrics.reports_rejected.labels(field="status.report.result.branch").inc()
                    logger.warning("report rejected: %s", problem, extra={"job": _name(body), "pod": assignment.get("pod"),
                                                                           "reason": trust.REASON_REPORT_REJECTED})
                self.success.record_attempt({"factory": assignment.get("factory"), "outcome": report.get("outcome"), "reason": report.get("reason")})
                logger.info("report folded", extra={"job": _name(body), "reason": report.get("outcome")})
        except Exception:
            logger.exception("fold failed", extra={"job": _name(body)})
            await asyncio.sleep(1)  # the release looks again: a write that keeps failing must not spin
        finally:
            self._release(uid, kubeclient.object_key(body))

    async def _expire(self, binding: leases.Binding, *, reason: str | None = None, message: str | None = None) -> None:
        """Undo a binding nobody will report on: the attempt is recorded InfraError and the job requeued."""
        expiry = reason is None
        if reason is None:
            reason = "LeaseExpired" if binding.claimed else "ClaimTimeout"
        if message is None:
            message = (
                f"runner pod {binding.pod} stopped renewing the binding Lease" if binding.claimed
                else f"runner pod {binding.pod} did not claim the binding within {self.settings.claim_timeout_seconds}s"
            )
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

    # --- the loop ---

    async def recover(self) -> None:
        """After the first sync: fold reports that came while we were away, and give bound jobs
        whose Lease is missing (crash between the two writes) their Lease back; and recall each
        factory's recent record from the attempts the jobs keep."""
        self.success = snapshots.SuccessRatios.from_jobs(self.jobs.cache.values())
        for body in list(self.jobs.cache.values()):
            status = body.get("status") or {}
            uid = str((body.get("metadata") or {}).get("uid"))
            if patches.report_matches(body):
                self._maybe_fold(body)
                continue
            assignment = status.get("assignment") or {}
            if status.get("phase") != agentjobs.Phase.BOUND.value or not assignment.get("lease") or cleanup.deleting(body):
                continue  # (a deleted job's binding is not restored: its finalizer lets it go)
            namespace = assignment.get("leaseNamespace") or assignment.get("podNamespace") or ""
            if (namespace, assignment["lease"]) in self.bindings.cache:
                continue
            if not trust.in_runner_namespaces(namespace, self.runner_namespaces):
                continue  # not a runner namespace (any more): no Lease there; the orphan timer undoes the binding
            meta = body["metadata"]
            lease = leases.build_binding_lease(
                job_namespace=meta["namespace"], job_name=meta["name"], job_uid=uid, attempt=int(assignment["attempt"]),
                factory=assignment["factory"], pod=assignment["pod"], pod_namespace=namespace,
                claim_timeout_seconds=self.settings.claim_timeout_seconds, moment=leases.now(),
            )
            try:
                await self.client.create(kubeclient.LEASES, lease, namespace=namespace)
                logger.info("binding lease restored", extra={"job": _name(body), "lease": assignment["lease"]})
            except kubeclient.AlreadyExists:
                pass
            except kubeclient.ApiError as exc:
                # (a namespace being deleted, say): the orphan timer undoes the binding instead.
                logger.warning("binding lease not restored: %s", exc, extra={"job": _name(body)})
        # Leases of jobs deleted while no operator ran: every Lease must have a live binding.
        live = {str((b.get("metadata") or {}).get("uid")) for b in self.jobs.cache.values()}
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

    def snapshot(self) -> tuple[snapshots.Snapshot, dict[str, Body]]:
        now = leases.now()
        factories = {f.name: f for f in (snapshots.factory_from_body(b) for b in self.factories.cache.values())}
        pods = [snapshots.PodInfo.from_heartbeat(beat, at=now) for beat in self.beats.values()]
        # Pods the scaler chose for removal take no new jobs (the operator is the only one that binds).
        pods = [dataclasses.replace(p, draining=True) if p.key in self.scaler.leaving else p for p in pods]
        used: dict[snapshots.PodKey, int] = collections.defaultdict(int)
        repos: dict[snapshots.PodKey, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        pending: list[snapshots.JobInfo] = []
        bodies: dict[str, Body] = {}
        for body in self.jobs.cache.values():
            meta = body.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            rv = str(meta.get("resourceVersion") or "")
            cached = self.job_infos.get(uid)
            if cached is None or cached[0] != rv:
                info = None
                generation = meta.get("generation")
                if self.spec_valid.get(uid) == generation:
                    # Only the status changed (a bind, an explanation): the spec needs no new validation.
                    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                        info = snapshots.job_from_body(body)
                if info is None:
                    problem = snapshots.spec_problem(body)
                    if problem is not None:
                        # No input crashes the operator: a spec it cannot act on fails the job, with the field.
                        if snapshots.is_pending(body) and uid not in self.busy:
                            self.busy.add(uid)
                            self._spawn(self._end_waiting(body, patches.INVALID_SPEC, message=problem), name=f"invalid:{_name(body)}")
                        continue
                    info = snapshots.job_from_body(body)
                    self.spec_valid[uid] = generation
                cached = (rv, info)
                self.job_infos[uid] = cached
            info = cached[1]
            status = body.get("status") or {}
            assignment = status.get("assignment")
            if assignment and status.get("phase") in ACTIVE_PHASES:
                self._check_orphan(body, assignment, now)
                key = (assignment.get("podNamespace") or "", assignment.get("pod") or "")
                used[key] += 1
                if info.repo_key:
                    repos[key][info.repo_key] += 1
            elif uid in self.assumed:
                _, key, repo = self.assumed[uid]
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

    def _check_orphan(self, body: Body, assignment: Mapping[str, Any], now: datetime.datetime) -> None:
        """A bound job whose binding Lease never appeared (a bind that failed between its two writes
        in a way we could not revert, or a Lease deleted by hand): past the claim timeout it is undone
        like an unclaimed binding. The timer fires at that instant; nothing polls."""
        status = body.get("status") or {}
        if status.get("phase") != agentjobs.Phase.BOUND.value:
            return
        namespace = assignment.get("leaseNamespace") or assignment.get("podNamespace") or ""
        if (namespace, assignment.get("lease") or "") in self.bindings.cache:
            self._disarm(("orphan", *kubeclient.object_key(body)))
            return
        bound_at = leases.parse_time(assignment.get("boundAt"))
        if bound_at is None:
            return
        # Twice the claim timeout: a Lease still on its way through the informer is not an orphan.
        deadline = bound_at + datetime.timedelta(seconds=2 * self.settings.claim_timeout_seconds)
        key = ("orphan", *kubeclient.object_key(body))
        if deadline > now:
            if key not in self.timers:
                self._arm(key, deadline, self.wake)
            return
        uid = str(body["metadata"].get("uid"))
        if uid in self.busy:
            return
        self.timers.pop(key, None)
        binding = leases.Binding(
            name=str(assignment.get("lease") or ""), namespace=namespace, pod=str(assignment.get("pod") or ""),
            factory=str(assignment.get("factory") or ""), job_namespace=body["metadata"]["namespace"],
            job_name=body["metadata"]["name"], job_uid=uid, attempt=int(assignment.get("attempt") or 0),
            holder=None, claimed=False, stop=None, expires_at=deadline, resource_version=None,
        )
        self.busy.add(uid)
        self._spawn(self._expire(binding), name=f"orphan:{binding.name}")

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
            self.assumed[decision.job.uid] = (decision.attempt, decision.pod.key, decision.job.repo_key)
        writes = [self._bind(bodies[d.job.uid], d) for d in result.decisions]
        for decision in result.decisions:  # a pod bound a job this very cycle is not idle
            self.scaler.bound(decision.pod.key, snap.now)
        plan = self.scaler.plan(snap, [e.job for e in result.unschedulable],
                                {b["metadata"]["name"]: b for b in self.factories.cache.values()},
                                {(d["metadata"].get("labels") or {}).get(constants.LABEL_FACTORY, ""): d for d in self.deployments.cache.values()})
        self.waiting_for = plan.waiting_for
        if plan.recheck_at is not None:
            self._arm(("scale", "", ""), plan.recheck_at, self.wake)
        writes += plan.writes
        writes += self._explanation_writes(bodies, result.unschedulable)
        writes += self._factory_status_writes(snap, used_before, plan.status, plan.refused)
        if writes:
            for outcome in await binder.gather_bounded(writes, limit=self.settings.bind_concurrency):
                if isinstance(outcome, Exception):
                    logger.warning("write failed: %s", outcome)
        self._schedule_requeues(result)
        return result

    async def _bind(self, body: Body, decision: cycle.Decision) -> None:
        job = decision.job
        ok = False
        try:
            if not trust.in_runner_namespaces(decision.pod.namespace, self.runner_namespaces):
                # Cannot come from the snapshot (its pods are the declared namespaces' heartbeats); a
                # second line all the same: binding Leases are created in runner namespaces only.
                logger.error("bind to a pod outside the runner namespaces refused", extra={"pod": f"{decision.pod.namespace}/{decision.pod.name}"})
                return
            ok = await binder.bind(self.client, body=body, decision=decision, claim_timeout_seconds=self.settings.claim_timeout_seconds)
        finally:
            if not ok:
                # Forget the assumption; the job is pending again in the next cycle.
                self.assumed.pop(job.uid, None)
                self.metrics.bind_conflicts.inc()
                self.wake()
        if not ok:
            return
        self.explained_at.pop(job.uid, None)
        self.metrics.binds.labels(factory=decision.pod.factory).inc()
        since = job.requeue_at or job.created_at
        if since is not None:
            self.metrics.bind_latency.observe(max(0.0, (leases.now() - since).total_seconds()))
        logger.info("bound", extra={"job": f"{job.namespace}/{job.name}", "pod": decision.pod.name, "factory": decision.pod.factory})
        if self.event_budget.take():
            await binder.emit_bind_event(self.client, body=body, decision=decision)

    def _explanation_writes(self, bodies: Mapping[str, Body], explanations: list[cycle.Explanation]) -> list[Any]:
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
            current = patches.condition(body, constants.ConditionType.SCHEDULED.value)
            waiting = self.waiting_for.get(explanation.job.uid)
            if waiting is not None:
                # Not unschedulable: a scaled factory is growing for it. Written when the words change.
                if current is None or current.get("reason") != patches.REASON_WAITING_FOR_CAPACITY or current.get("message") != waiting:
                    writes.append(self._explain(body, explanation, waiting=waiting))
                continue
            message = None
            if current is not None and current.get("status") == "False" and current.get("reason") == patches.REASON_UNSCHEDULABLE:
                message = str(current.get("message") or "")
            ago = clock - self.explained_at.get(explanation.job.uid, self.started_at)
            if cycle.explanation_due(current=message, new=explanation, written_ago=ago, refresh_seconds=refresh):
                writes.append(self._explain(body, explanation))
            elif message is not None and message != explanation.message:
                next_due = refresh - ago if next_due is None else min(next_due, refresh - ago)
        if next_due is not None:
            self._arm(("explain", "", ""), leases.now() + datetime.timedelta(seconds=max(0.0, next_due)), self.wake)
        return writes

    async def _explain(self, body: Body, explanation: cycle.Explanation, waiting: str | None = None) -> None:
        # The persisted message leaves out the queue position: it moves with every bind ahead of
        # the job, and writing it would rewrite every waiting job on every cycle.
        if waiting is not None:
            await binder.explain(self.client, body=body, message=f"waiting for capacity: {waiting}",
                                 reason=patches.REASON_WAITING_FOR_CAPACITY)
            return
        if await binder.explain(self.client, body=body, message=explanation.message):
            self.explained_at[explanation.job.uid] = asyncio.get_running_loop().time()
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
        now = leases.now()
        times = [j.requeue_at for j in result.skipped if j.requeue_at is not None and j.requeue_at > now and not j.suspended and not j.cancelled]
        if times:
            self._arm(("requeue", "", ""), min(times), self.wake)

    def _factory_status_writes(self, snap: snapshots.Snapshot, used: Mapping[snapshots.PodKey, int],
                               scaling: Mapping[str, Body] | None = None, refused: Mapping[str, str] | None = None) -> list[Any]:
        by_factory: dict[str, list[snapshots.PodInfo]] = collections.defaultdict(list)
        for pod in snap.pods:
            by_factory[pod.factory].append(pod)
        writes = []
        for body in self.factories.cache.values():
            name = body["metadata"]["name"]
            info = snap.factories.get(name)
            if info is None:
                continue
            pods = sorted(by_factory.get(name, []), key=lambda p: (p.namespace, p.name))
            ready = [p for p in pods if p.ready]
            desired = {
                "phase": ("Draining" if info.unschedulable or info.deleting else "Ready" if ready else "Offline"),
                "readyPods": len(ready),
                "slotsTotal": sum(snap.capacity(p) for p in ready),
                "slotsUsed": sum(min(used.get(p.key, 0), snap.capacity(p)) for p in ready),
                # No lastHeartbeat here: it would change with every renewal and rewrite the Factory.
                "pods": [
                    {"name": p.name, "namespace": p.namespace, "ready": p.ready, "slots": snap.capacity(p),
                     "running": used.get(p.key, 0), "warmRepos": len(p.warm_repos)}
                    for p in pods
                ],
            }
            current = body.get("status") or {}
            generation = body["metadata"].get("generation")
            ready_status, ready_reason, ready_message = _ready_condition(desired["phase"], len(ready), len(pods))
            desired["conditions"] = patches.set_condition(
                current.get("conditions"), type=constants.ConditionType.READY.value, status=ready_status,
                reason=ready_reason, message=ready_message, now=snap.now, generation=generation,
            )
            if refused is not None and name in refused:
                # A scaled factory's runner template: accepted as forced, or refused naming the fields.
                accepted = not refused[name]
                desired["conditions"] = patches.set_condition(
                    desired["conditions"], type=constants.ConditionType.TEMPLATE_ACCEPTED.value, status="True" if accepted else "False",
                    reason="Forced" if accepted else "TemplateRefused",
                    message=("the pool's ServiceAccount and a restricted security context are forced" if accepted
                             else f"runner template refused: {refused[name]}")[:1024],
                    now=snap.now, generation=generation)
            self.metrics.slots_total.labels(factory=name).set(desired["slotsTotal"])
            self.metrics.slots_used.labels(factory=name).set(desired["slotsUsed"])
            if scaling and name in scaling:
                desired["scaling"] = scaling[name]
                self.metrics.runners_desired.labels(factory=name).set(scaling[name]["desiredReplicas"])
                self.metrics.runners_ready.labels(factory=name).set(scaling[name]["readyReplicas"])
                took = self.scaler.ready_after_scale_up(name, scaling[name]["readyReplicas"], scaling[name]["desiredReplicas"], snap.now)
                if took is not None:
                    self.metrics.scale_up_seconds.observe(took)
            if all(current.get(k) == v for k, v in desired.items()):
                continue
            patch = {"status": {**desired, "observedGeneration": generation}}
            writes.append(self._patch_factory(name, patch))
        return writes

    async def _patch_factory(self, name: str, patch: Body) -> None:
        try:
            await self.client.patch(kubeclient.FACTORIES, name, patch, subresource="status")
        except kubeclient.NotFound:
            pass

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

    def ready(self) -> bool:
        if self.elector is not None and not self.elector.leading:
            return self.elector.watching  # a healthy standby is ready: it is what a failover needs
        return self.started and all(i.synced.is_set() for i in self.informers)

    async def run(self, elector: electing.LeaderElector | None = None) -> None:
        """Serve probes, wait for leadership (when electing), then work until cancelled. Losing
        leadership raises LostLeadership: the process exits and restarts as a standby, with nothing
        in memory that the new leader might contradict."""
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
            self.metrics.leader.set(0)
            for handle in self.timers.values():
                handle.cancel()
            for task in list(self.tasks):
                task.cancel()
            if holder is not None:
                holder.cancel()
                with contextlib.suppress(asyncio.CancelledError, electing.LostLeadership):
                    await holder
            if elector is not None:
                await elector.release()
            await http.cleanup()


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


def _ready_condition(phase: str, ready: int, total: int) -> tuple[str, str, str]:
    if phase == "Draining":
        return "False", "Draining", "cordoned or being deleted: no new bindings"
    if ready:
        return "True", "PodsReady", f"{ready}/{total} runner pods ready"
    if total:
        return "False", "NoReadyPods", f"0/{total} runner pods ready (heartbeats stale or draining)"
    return "False", "NoPods", "no runner pod has announced itself"


def _scheduling_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything of a job that the cycle, the fold and the timers read, apart from the spec (whose
    changes move metadata.generation). The Scheduled condition's message is not in it."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    assignment = status.get("assignment") or {}
    return (
        meta.get("generation"), meta.get("deletionTimestamp"), status.get("phase"), status.get("attempt"),
        status.get("requeueAt"), assignment.get("pod"), assignment.get("attempt"), bool(status.get("report")),
    )


def _same_announcement(a: leases.Heartbeat, b: leases.Heartbeat) -> bool:
    return (a.factory, a.slots, a.agents, a.warm_repos, a.draining) == (b.factory, b.slots, b.agents, b.warm_repos, b.draining)


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


async def main(settings: config.OperatorSettings) -> None:
    client = kubeclient.Client.from_kubeconfig(settings.kubeconfig, user_agent="gigafactory-operator")
    operator = Operator(settings, client)
    elector = None
    if settings.leader_election:
        elector = electing.LeaderElector(client, namespace=settings.namespace, name=settings.leader_lease_name,
                                         lease_seconds=settings.leader_lease_seconds,
                                         renew_deadline_seconds=settings.leader_lease_seconds * 0.75,
                                         retry_seconds=max(0.5, settings.leader_lease_seconds / 4))
    task = asyncio.create_task(operator.run(elector))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logger.info("operator stopped")
    except electing.LostLeadership as exc:
        logger.error("leadership lost, exiting to restart as a standby: %s", exc)
        raise SystemExit(1) from None
    finally:
        await client.close()


def run(settings: config.OperatorSettings) -> None:
    observing.setup_logging(settings.log_level)
    asyncio.run(main(settings))
