"""One claimed binding: its state, and the runner's side of its binding Lease (docs/protocol.md):
claim it (the Lease, then the job's phase Running), renew it, write the push on it before pushing,
report into the job's status while the attempt is still ours, release it.

Every write carries a precondition (a resourceVersion): a runner the operator has moved on from
changes nothing. `Claims` is the first layer of the runner process (runner/running.py).
"""

import asyncio
import datetime
import logging
import time
from typing import Any

from gigafactory import config, kubeclient, leases
from gigafactory.models import agentjobs, objects

logger = logging.getLogger(__name__)


def stamp(moment: datetime.datetime | None = None) -> str:
    return (moment or leases.now()).strftime("%Y-%m-%dT%H:%M:%SZ")


class AttemptFailed(Exception):
    """A classified end of an attempt before or after the agent ran."""

    def __init__(self, outcome: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.outcome, self.reason, self.message = outcome, reason, message


class Attempt:
    """One claimed binding being worked on."""

    def __init__(self, binding: leases.Binding) -> None:
        self.binding = binding
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None
        self.budget: str | None = None  # why the model gateway stopped it (BudgetExceeded)
        self.lost = False
        self.lease_version = binding.resource_version
        self.lease_claimed = False
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.binding.job_uid}-{self.binding.attempt}"


class Claims:
    """The binding Lease protocol of every attempt of one runner pod."""

    def __init__(self, settings: config.RunnerSettings, client: kubeclient.Client) -> None:
        self.settings = settings
        self.client = client

    async def _read_job(self, binding: leases.Binding) -> dict[str, Any]:
        return await self.client.get(kubeclient.AGENTJOBS, binding.job_name, namespace=binding.job_namespace)

    def _mine(self, job: dict[str, Any], binding: leases.Binding) -> bool:
        status, assignment = objects.job_status(job), objects.assignment(job)
        return (objects.uid(job) == binding.job_uid and status.get("attempt") == binding.attempt
                and assignment.get("pod") == self.settings.pod_name)

    async def claim(self, attempt: Attempt) -> dict[str, Any] | None:
        """Steps 1–3 of the claim; None when the binding is no longer ours."""
        binding = attempt.binding
        for _ in range(5):
            try:
                job = await self._read_job(binding)
            except kubeclient.NotFound:
                return None
            if not self._mine(job, binding) or objects.job_status(job).get("phase") != agentjobs.Phase.BOUND.value:
                return None
            now = leases.now()
            if not attempt.lease_claimed:
                try:
                    lease = await self.client.patch(kubeclient.LEASES, binding.name, leases.claim_patch(
                        pod=self.settings.pod_name, duration_seconds=self.settings.binding_lease_seconds, moment=now,
                        resource_version=attempt.lease_version or ""), namespace=binding.namespace)
                except (kubeclient.Conflict, kubeclient.NotFound):
                    return None  # the operator changed it first (a stop, an undo): not ours to run
                attempt.lease_version = lease["metadata"]["resourceVersion"]
                attempt.lease_claimed = True
            conditions = [c for c in (job["status"].get("conditions") or []) if c.get("type") not in ("Claimed", "Running")]
            conditions += [
                {"type": "Claimed", "status": "True", "reason": "Claimed", "message": f"claimed by {self.settings.pod_name}",
                 "lastTransitionTime": stamp(now), "observedGeneration": job["metadata"].get("generation")},
                {"type": "Running", "status": "True", "reason": "AgentRunning", "message": "the agent is running",
                 "lastTransitionTime": stamp(now), "observedGeneration": job["metadata"].get("generation")},
            ]
            patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
                     "status": {"phase": agentjobs.Phase.RUNNING.value, "reason": "AgentRunning", "assignment": {"claimedAt": stamp(now)},
                                "conditions": conditions}}
            try:
                return await self.client.patch(kubeclient.AGENTJOBS, binding.job_name, patch,
                                               namespace=binding.job_namespace, subresource="status")
            except kubeclient.Conflict:
                continue  # re-read: go on only while the assignment still names us
        return None

    async def renew_loop(self, attempt: Attempt) -> None:
        binding = attempt.binding
        renewed = time.monotonic()
        while not attempt.stop.is_set():
            await asyncio.sleep(self.settings.binding_lease_seconds / 3)
            if time.monotonic() - renewed > self.settings.binding_lease_seconds:
                # Cut off from the API server for longer than the Lease: the operator has (or soon will
                # have) given the job to another runner. Stop the agent rather than run it twice.
                logger.warning("could not renew %s for %ss: stopping its agent", binding.name, self.settings.binding_lease_seconds)
                attempt.lost = True
                attempt.stop.set()
                return
            try:
                # A renewal that hangs (a partition, a server retrying us with Retry-After) must not
                # keep this loop from noticing that the Lease has run out: bound it by what is left.
                left = max(0.1, self.settings.binding_lease_seconds - (time.monotonic() - renewed))
                lease = await asyncio.wait_for(self.client.patch(kubeclient.LEASES, binding.name, leases.renew_patch(
                    moment=leases.now(), resource_version=attempt.lease_version or ""), namespace=binding.namespace), left)
                attempt.lease_version = lease["metadata"]["resourceVersion"]
                renewed = time.monotonic()
            except kubeclient.Conflict:
                try:
                    lease = await self.client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace)
                except kubeclient.NotFound:
                    lease = None
                if lease is None or leases.holder(lease) != self.settings.pod_name:
                    attempt.lost = True
                    attempt.stop.set()
                    return
                attempt.lease_version = lease["metadata"]["resourceVersion"]
                parsed = leases.parse_binding(lease)
                stop = parsed.stop if parsed else None
                if stop:
                    attempt.stop_reason = stop
                    attempt.stop.set()
            except kubeclient.NotFound:
                attempt.lost = True
                attempt.stop.set()
            except (kubeclient.ApiError, OSError, asyncio.TimeoutError) as exc:
                logger.warning("renewing %s failed: %s", binding.name, str(exc) or "no answer in time")

    async def _announce_push(self, attempt: Attempt, branch: str, commit: str) -> None:
        """Write "<commit> <branch>" on the binding Lease before pushing. Should this runner die
        between the push and its report, the operator copies it into the attempt's record and the
        next attempt adopts the branch instead of failing on BranchExists. Also a fence: a runner
        whose Lease is gone (the operator moved on) does not push."""
        binding = attempt.binding
        trouble = ""
        for _ in range(8):
            try:
                try:
                    lease = await self.client.patch(kubeclient.LEASES, binding.name, leases.pushed_patch(
                        branch=branch, commit=commit, resource_version=attempt.lease_version or ""), namespace=binding.namespace)
                    attempt.lease_version = lease["metadata"]["resourceVersion"]
                    return
                except kubeclient.Conflict:
                    lease = await self.client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace)
                    if leases.holder(lease) != self.settings.pod_name:
                        break
                    attempt.lease_version = lease["metadata"]["resourceVersion"]
            except kubeclient.NotFound:
                break
            except (kubeclient.ApiError, OSError) as exc:  # the API is struggling: try again shortly
                trouble = str(exc)
                await asyncio.sleep(0.5)
        else:
            raise AttemptFailed("InfraError", "ApiUnavailable", f"could not record the push on the binding Lease: {trouble}"[:4000])
        attempt.lost = True
        attempt.stop.set()
        raise AttemptFailed("InfraError", "LeaseLost", "the binding Lease is gone: not pushing")

    async def report(self, attempt: Attempt, report: dict[str, Any]) -> None:
        """status.report, only while the job's current attempt is still ours (precondition on a fresh read).

        A report is the only trace of what the attempt did, so transient API trouble is retried (the
        binding Lease is still being renewed meanwhile), and a report the schema refuses is sent again
        cut down to its outcome rather than lost."""
        binding = attempt.binding
        body = {"attempt": binding.attempt, "pod": self.settings.pod_name, "finishedAt": stamp(), **report}
        body = {k: v for k, v in body.items() if v is not None}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(30.0, 2.0 * self.settings.binding_lease_seconds)
        delay = 0.2
        while True:
            try:
                job = await self._read_job(binding)
                if not self._mine(job, binding):
                    return  # a newer attempt or an undo: a stale report would change nothing, so send none
                patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]}, "status": {"report": body}}
                await self.client.patch(kubeclient.AGENTJOBS, binding.job_name, patch, namespace=binding.job_namespace,
                                        subresource="status")
                return
            except kubeclient.NotFound:
                return
            except kubeclient.Conflict:
                continue  # someone wrote between our read and our patch: read again
            except kubeclient.Invalid as exc:
                if "result" not in body and len(body.get("message", "")) <= 1000:
                    raise
                logger.warning("report of %s refused (%s); sending it without its result", binding.name, exc.message)
                body = {k: v for k, v in body.items() if k != "result"}
                body["message"] = str(body.get("message", ""))[:1000]
            except (kubeclient.ApiError, OSError, asyncio.TimeoutError) as exc:
                if loop.time() + delay > deadline:
                    raise
                logger.warning("reporting %s failed (%s); retrying", binding.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def release(self, attempt: Attempt) -> None:
        binding = attempt.binding
        for _ in range(3):
            try:
                lease = await self.client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace)
            except kubeclient.NotFound:
                return
            if leases.holder(lease) != self.settings.pod_name:
                return
            try:
                await self.client.patch(kubeclient.LEASES, binding.name, leases.release_patch(
                    resource_version=lease["metadata"]["resourceVersion"]), namespace=binding.namespace)
                return
            except (kubeclient.Conflict, kubeclient.NotFound):
                continue
