"""The writes of a binding, as docs/protocol.md orders them: assume in the cache, write, forget on
failure. Every write carries the resourceVersion it was computed from, so two operators (or an
operator and a runner) racing on one job let exactly one through; the loser re-reads or requeues."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from gigafactory import constants, kubeclient, leases
from gigafactory.binding import cleanup, patches
from gigafactory.models import objects
from gigafactory.scheduling import cycle

logger = logging.getLogger(__name__)

Body = dict[str, Any]


async def bind(
    client: kubeclient.Client, *, body: Mapping[str, Any], decision: cycle.Decision, claim_timeout_seconds: int,
    model_prices: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """The writes of a bind: status, finalizer, Lease. True when all went through; False when the job changed under us
    (409) or the Lease could not be created (then the assignment is reverted)."""
    job, pod = decision.job, decision.pod
    now = leases.now()
    try:
        bound = await client.patch(
            kubeclient.AGENTJOBS, job.name, patches.bind_patch(body=body, decision=decision, now=now, model_prices=model_prices),
            namespace=job.namespace, subresource="status",
        )
    except kubeclient.Conflict:
        logger.info("bind lost a race", extra={"job": f"{job.namespace}/{job.name}", "pod": pod.name})
        return False
    except kubeclient.ApiError as exc:
        logger.warning("bind failed: %s", exc, extra={"job": f"{job.namespace}/{job.name}"})
        return False
    # The finalizer and the Lease at once (one round trip, not two). From the finalizer on the job has
    # something to clean up, so its deletion waits for the operator (binding/cleanup.py); a runner's
    # claim that races the finalizer patch gets a 409 and reads again, as does the finalizer patch.
    lease = leases.build_binding_lease(
        job_namespace=job.namespace, job_name=job.name, job_uid=job.uid, attempt=decision.attempt,
        factory=pod.factory, pod=pod.name, pod_namespace=pod.namespace,
        claim_timeout_seconds=claim_timeout_seconds, moment=now,
    )

    async def create_lease() -> Exception | None:
        try:
            await client.create(kubeclient.LEASES, lease, namespace=pod.namespace)
        except kubeclient.AlreadyExists:
            pass  # a previous try of this very attempt made it: same name, same content
        except Exception as exc:  # noqa: BLE001 - any failure: the job must not stay bound without a Lease
            return exc
        return None

    finalized, failure = await asyncio.gather(
        cleanup.add_finalizer(client, kubeclient.AGENTJOBS, bound, constants.FINALIZER_JOB), create_lease())
    if finalized is None:
        logger.info("job deleted while binding, reverting", extra={"job": f"{job.namespace}/{job.name}"})
        await revert(client, namespace=job.namespace, name=job.name, reason="JobDeleted", message="the job is being deleted",
                     uid=job.uid, attempt=decision.attempt, pod=pod.name)
        await client.delete(kubeclient.LEASES, lease["metadata"]["name"], namespace=pod.namespace)
        return False
    if failure is not None:
        logger.warning("binding lease not created, reverting: %s", failure, extra={"job": f"{job.namespace}/{job.name}"})
        await revert(client, namespace=job.namespace, name=job.name, reason="LeaseCreateFailed", message=str(failure)[:500],
                     uid=job.uid, attempt=decision.attempt, pod=pod.name)
        return False
    return True


async def revert(client: kubeclient.Client, *, namespace: str, name: str, reason: str, message: str,
                 uid: str, attempt: int, pod: str) -> bool:
    binding = leases.Binding(name="", namespace="", pod=pod, factory="", job_namespace=namespace, job_name=name,
                             job_uid=uid, attempt=attempt, holder=None, claimed=False, stop=None, expires_at=None,
                             resource_version=None)
    return await undo(client, binding=binding, reason=reason, message=message, delete_lease=False)


async def _with_fresh_job(
    client: kubeclient.Client, namespace: str, name: str, write: Callable[[Body], Awaitable[bool]], *, tries: int = 5
) -> bool:
    """Read the job, let `write` decide and write with that resourceVersion; on 409 read again."""
    for _ in range(tries):
        try:
            body = await client.get(kubeclient.AGENTJOBS, name, namespace=namespace)
        except kubeclient.NotFound:
            return False
        try:
            return await write(body)
        except kubeclient.Conflict:
            continue
    return False


async def undo(client: kubeclient.Client, *, binding: leases.Binding, reason: str, message: str, delete_lease: bool = True,
               check_lease: bool = False) -> bool:
    """Claim timeout or lease expiry: record the attempt as InfraError and requeue, if the job still
    holds this binding; then delete the Lease (a 404 is fine). `check_lease`: first re-read the Lease
    and leave it alone if it has not really run out."""

    if check_lease and binding.name:
        # The informer's copy may be behind (a cut watch): the runner may have claimed or renewed
        # meanwhile. Undo only a Lease that has really run out, and take what it announced from it.
        try:
            fresh = leases.parse_binding(await client.get(kubeclient.LEASES, binding.name, namespace=binding.namespace))
        except kubeclient.NotFound:
            fresh = None
        if fresh is not None:
            if fresh.expires_at is not None and fresh.expires_at > leases.now():
                return False
            binding = fresh
            if reason == "ClaimTimeout" and fresh.claimed:
                reason, message = "LeaseExpired", f"runner pod {fresh.pod} stopped renewing the binding Lease"

    async def write(body: Body) -> bool:
        # A matching report wins over the timeout: the fold records what really happened.
        if not patches.binding_is_current(body, binding) or patches.report_matches(body):
            return False
        patch = patches.undo_patch(body=body, reason=reason, message=message, now=leases.now(), pushed=binding.pushed)
        await client.patch(kubeclient.AGENTJOBS, binding.job_name, patch, namespace=binding.job_namespace, subresource="status")
        return True

    done = await _with_fresh_job(client, binding.job_namespace, binding.job_name, write)
    if delete_lease and binding.name:
        await client.delete(kubeclient.LEASES, binding.name, namespace=binding.namespace)
    return done


async def fold(client: kubeclient.Client, *, body: Mapping[str, Any]) -> Body | None:
    """Fold a matching report into the job, then delete its binding Lease. Returns the patch that went
    through (its last attempt record is the one folded), or None when none did: the caller counts what
    the attempt spent from it, so exactly once per attempt (the write carries a resourceVersion)."""
    namespace, name = objects.namespace(body), objects.name(body)
    assignment = objects.assignment(body).copy()
    written: list[Body] = []

    async def write(fresh: Mapping[str, Any]) -> bool:
        if not patches.report_matches(fresh):
            return False
        assignment.update(objects.assignment(fresh))
        patch = patches.fold_patch(body=fresh, now=leases.now())
        await client.patch(kubeclient.AGENTJOBS, name, patch, namespace=namespace, subresource="status")
        written.append(patch)
        return True

    try:
        await write(body)  # the body the caller saw first; on a 409, as the API has it now
    except kubeclient.Conflict:
        await _with_fresh_job(client, namespace, name, write)
    except kubeclient.NotFound:
        return None
    if written and assignment.get("lease"):
        await client.delete(kubeclient.LEASES, assignment["lease"], namespace=assignment.get("leaseNamespace") or assignment.get("podNamespace"))
    return written[-1] if written else None


async def explain(client: kubeclient.Client, *, body: Mapping[str, Any], message: str,
                  reason: str = patches.REASON_UNSCHEDULABLE) -> bool:
    """Write Scheduled=False/Unschedulable, only when it says something new. A 409 is left to the
    next cycle (the job changed, so the cycle will run again anyway)."""
    patch = patches.unschedulable_patch(body=body, message=message, now=leases.now(), reason=reason)
    if patch is None:
        return False
    try:
        await client.patch(kubeclient.AGENTJOBS, objects.name(body), patch, namespace=objects.namespace(body), subresource="status")
    except (kubeclient.Conflict, kubeclient.NotFound):
        return False
    return True


async def emit_bind_event(client: kubeclient.Client, *, body: Mapping[str, Any], decision: cycle.Decision) -> None:
    """Best effort: an Event that does not land must not undo a bind."""
    event = patches.bind_event(body=body, decision=decision, now=leases.now())
    try:
        await client.create(kubeclient.EVENTS, event, namespace=event["metadata"]["namespace"])
    except kubeclient.ApiError as exc:
        logger.debug("bind event not written: %s", exc)


async def gather_bounded(coros: list[Awaitable[Any]], *, limit: int) -> list[Any]:
    """Run writes concurrently, at most `limit` in flight (the API server's patience is finite)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)
