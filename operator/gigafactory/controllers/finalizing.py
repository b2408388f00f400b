"""Finalization and drain: what must happen before an AgentJob or a Factory may disappear.

A deleted job stops its attempt, waits (bounded) for its runner to let the binding go, then has its
branch and logs cleaned up and its finalizer removed (binding/lifecycle.py decides each step,
binding/cleanup.py writes). A deleted Factory lets its bindings go; its finalizer is kopf's: kopf's
delete handler (factorykopf.py) awaits `drain` and returns once no binding is left, and kopf removes it.
"""

import asyncio
import contextlib
import logging
import pathlib
import tempfile

from gigafactory import consent, constants, kubeclient, leases, remotes
from gigafactory.binding import cleanup, lifecycle, trust
from gigafactory.controllers import base
from gigafactory.models import objects

logger = logging.getLogger(__name__)


class Finalizing(base.Base):
    _git: remotes.Git | None = None
    def _binding_of(self, body: base.Body) -> leases.Binding | None:
        assignment = objects.assignment(body)
        if not assignment.get("lease"):
            return None
        lease = self.bindings.cache.get(lifecycle.lease_key(assignment))
        binding = leases.parse_binding(lease) if lease else None
        return binding if binding is not None and binding.job_uid == objects.uid(body) else None

    def _pod_alive(self, binding: leases.Binding) -> bool:
        return lifecycle.pod_alive(self.beats.get((binding.namespace, binding.pod)), now=self.now())

    def _maybe_finalize(self, body: base.Body) -> None:
        """A deleted job with our finalizer (binding/lifecycle.py decides the step; each step's event
        brings the job back here)."""
        if not objects.deleting(body) or constants.FINALIZER_JOB not in objects.finalizers(body):
            return
        uid = str(body["metadata"].get("uid"))
        record = self.records.get(uid)
        if record is not None and record.finalized:
            return  # done; the cache still shows the finalizer until the DELETED event
        if uid in self.busy:
            return  # a fold, undo or stop is running; its release looks again
        key = kubeclient.object_key(body)
        binding = self._binding_of(body)
        self._apply(body, lifecycle.finalize_actions(
            body, binding=binding, pod_alive=binding is not None and self._pod_alive(binding),
            grace_armed=("finalize", *key) in self.timers, now=self.now(), stop_grace_seconds=self.settings.stop_grace_seconds))

    async def _request_stop(self, body: base.Body, binding: leases.Binding, reason: str) -> None:
        try:
            await self.client.patch(kubeclient.LEASES, binding.name, leases.stop_patch(reason), namespace=binding.namespace)
            logger.info("stop requested", extra={"job": base.name_of(body), "reason": reason})
        except kubeclient.NotFound:
            pass
        except Exception:
            logger.exception("stop failed", extra={"job": base.name_of(body)})
        finally:
            self._release(binding.job_uid, kubeclient.object_key(body))

    async def _drop_binding(self, binding: leases.Binding) -> None:
        """Delete a binding Lease; its runner, if alive, sees it go and kills the agent."""
        self.timers.disarm(("finalize", binding.job_namespace, binding.job_name))
        try:
            await self.client.delete(kubeclient.LEASES, binding.name, namespace=binding.namespace)
            logger.info("binding dropped", extra={"lease": binding.name, "job": f"{binding.job_namespace}/{binding.job_name}"})
        except Exception:
            logger.exception("could not drop a binding", extra={"lease": binding.name})

    @property
    def git(self) -> remotes.Git:
        """git for branch cleanup, made on first use."""
        if self._git is None:
            self._git = remotes.Git(root=pathlib.Path(tempfile.mkdtemp(prefix="gigafactory-cleanup-")),
                                    network_timeout=float(self.settings.git_timeout_seconds),
                                    allow_local=self.settings.allow_local_repos,
                                    accept_new_host_keys=self.settings.ssh_accept_new_host_keys)
        return self._git

    async def _finalize(self, body: base.Body) -> None:
        """The binding is gone: delete the branch per cleanup.deleteBranch, then the finalizer."""
        uid = str(body["metadata"].get("uid"))
        try:
            delete, untrusted = cleanup.branches_to_delete(body)
            for branch, commit in untrusted:
                logger.warning("branch %s (%s) left alone: not the job's branch %s", branch[:255], commit[:12], trust.job_branch(body),
                               extra={"job": base.name_of(body), "reason": "BranchNotOwned"})
            for branch, commit in delete:
                if (branch, commit) not in self.records.of(uid).branches_deleted:  # (a retry after a failed finalizer write)
                    await self._delete_branch(body, branch, commit)
                    self.records.of(uid).branches_deleted.add((branch, commit))
            for namespace, name, pod in cleanup.log_configmaps(body):
                try:
                    await self._delete_log(namespace, name, pod=pod, job_uid=uid)
                except kubeclient.ApiError as exc:  # (no right to, say): the log outlives the job, the job still goes
                    logger.warning("log %s/%s not deleted: %s", namespace, name, exc, extra={"job": base.name_of(body)})
            if await cleanup.remove_finalizer(self.client, kubeclient.AGENTJOBS, body, constants.FINALIZER_JOB):
                self.records.of(uid).finalized = True
                logger.info("job finalized", extra={"job": base.name_of(body)})
        except Exception:
            logger.exception("finalizing failed", extra={"job": base.name_of(body)})
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

    async def _delete_branch(self, body: base.Body, branch: str, commit: str) -> None:
        """Best effort with the job's own credentials: a remote that refuses is reported in an Event,
        and the job still goes (a deletion that waits forever on a dead remote helps nobody)."""
        url = objects.text(objects.field(body, "spec", "repo"), "url")
        try:
            remotes.check_url(url, allow_local=self.settings.allow_local_repos)
            data = await cleanup.read_credentials(self.client, body)
            if data is None:
                raise remotes.GitFailure("Rejected", "SecretNotFound", "the job's credentials Secret is gone")
            deleted = await self.git.delete_branch(url=url, branch=branch, commit=commit,
                                                         credentials=remotes.credentials_from_secret(data))
            reason, kind = ("BranchDeleted", "Normal") if deleted else ("BranchKept", "Normal")
            message = (f"deleted branch {branch} ({commit[:12]}) from {url}" if deleted
                       else f"branch {branch} is no longer at {commit[:12]} (moved or gone): left alone")
        except (remotes.GitFailure, consent.Refused) as exc:
            reason, kind, message = "BranchCleanupFailed", "Warning", f"branch {branch} not deleted: {exc.message}"
        logger.info(message, extra={"job": base.name_of(body)})
        with contextlib.suppress(kubeclient.ApiError):
            event = cleanup.cleanup_event(body, reason=reason, message=message, type=kind, now=self.now())
            await self.client.create(kubeclient.EVENTS, event, namespace=event["metadata"]["namespace"])

    def _on_factory(self, event: str, body: base.Body) -> None:
        if self.started:
            if event == "DELETED":
                self._drained(str(body["metadata"]["name"]))  # gone: nothing is left to wait for
            else:
                self._maybe_drain(body)
        self.wake()

    def _maybe_drain(self, body: base.Body) -> None:
        """A deleted Factory's bindings (binding/lifecycle.py decides); Drained wakes its waiters."""
        # Every Factory event and every binding's end come here: a Factory not being deleted (for which
        # lifecycle.drain_actions says nothing) returns before every binding Lease is parsed.
        if not objects.deleting(body):
            return
        name = str(body["metadata"]["name"])
        bindings = [b for b in map(leases.parse_binding, list(self.bindings.cache.values())) if b is not None and b.factory == name]
        now = self.now()
        live = {key for key, beat in self.beats.items() if lifecycle.pod_alive(beat, now=now)}
        self._apply(body, lifecycle.drain_actions(body, bindings=bindings, live_pods=live, busy=self.busy, now=now,
                                                  stop_grace_seconds=self.settings.stop_grace_seconds))

    def _redrain(self, name: str) -> None:
        self.timers.fired(("drain", "", name))
        body = self.factories.cache.get(("", name))
        if body is not None:
            self._maybe_drain(body)

    async def drain(self, name: str, *, timeout: float) -> bool:
        """Let the deleted Factory `name` go: what kopf's delete handler awaits (factorykopf.py) before
        kopf removes the finalizer. Waits (at most `timeout` seconds) until this replica works — it
        leads and its caches are synced; a standby waits here and never says drained — then until no
        binding of the factory is left; the drain itself is the controllers' (each binding gone,
        each drain timer brings the factory back to lifecycle.drain_actions). True once drained."""
        try:
            async with asyncio.timeout(timeout):
                await self.working.wait()
                waiting = self.drains.setdefault(name, asyncio.Event())
                body = self.factories.cache.get(("", name))
                if body is None:
                    # Unknown to the synced informer (gone, or too new to be seen yet): the scheduler
                    # never bound anything to it under this name, unless a binding still says so.
                    if not any(b is not None and b.factory == name for b in map(leases.parse_binding, list(self.bindings.cache.values()))):
                        self._drained(name)
                else:
                    self._maybe_drain(body)
                await waiting.wait()
            return True
        except TimeoutError:
            return False
