"""The job and factory lifecycle as pure decisions: functions of (state, now) that return actions.

Each decision reads a job (or a factory) as the informer shows it, what the caches know beside it
(its binding, the live pods) and the instant `now`; it returns what to do — arm or disarm a timer,
ask a runner to stop, end a waiting job, undo a binding, drop a binding Lease, finalize — and does
none of it. The controllers (`gigafactory.controllers`) carry the actions out and bring each object
back here when its next event or timer comes. Like `patches`, this module does no I/O and reads no
clock: tests give it any `now` they like.

What stays with the caller: per-object serialisation (a write action for a job with a write in
flight is skipped; that task's end looks again), and the writes themselves.
"""

import dataclasses
import datetime
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from gigafactory import constants, leases
from gigafactory.binding import patches
from gigafactory.models import agentjobs, objects

TimerKind = Literal["deadline", "ttl", "finalize", "drain", "binding", "orphan"]
TERMINAL = frozenset(p.value for p in agentjobs.TERMINAL_PHASES)


@dataclasses.dataclass(frozen=True)
class Arm:
    """Set the timer `kind` of one object to fire at `at` (replacing any earlier one)."""

    kind: TimerKind
    key: tuple[str, str]
    at: datetime.datetime
    binding: leases.Binding | None = None  # the binding a finalize timer drops


@dataclasses.dataclass(frozen=True)
class Disarm:
    kind: TimerKind
    key: tuple[str, str]


@dataclasses.dataclass(frozen=True)
class RequestStop:
    """Write the stop request `reason` on the job's binding Lease (the runner stops and reports)."""

    reason: str
    binding: leases.Binding | None = None  # None: the Lease the job's assignment names


@dataclasses.dataclass(frozen=True)
class EndWaiting:
    """A job that holds no binding ends at once (Cancelled, or Failed on its deadline)."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Expire:
    """Undo a binding nobody will report on: the attempt is recorded InfraError and the job requeued.
    reason and message None: a Lease that lapsed (ClaimTimeout or LeaseExpired, said by the undo)."""

    binding: leases.Binding
    reason: str | None = None
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class DropBinding:
    """Delete a binding Lease; its runner, if alive, sees it go and kills the agent."""

    binding: leases.Binding


@dataclasses.dataclass(frozen=True)
class Finalize:
    """The job's binding is gone: delete its branch and logs per its cleanup policy, then the finalizer."""


@dataclasses.dataclass(frozen=True)
class Drained:
    """A deleted Factory has no binding left: whoever waits for its drain may let it go (kopf's
    delete handler, factorykopf.py, which then removes the finalizer)."""


Action = Arm | Disarm | RequestStop | EndWaiting | Expire | DropBinding | Finalize | Drained


def drain_deadline(factory: Mapping[str, Any]) -> datetime.datetime | None:
    """When a deleted Factory's running jobs are stopped: deletionTimestamp + spec.drainGraceSeconds."""
    began = leases.parse_time(objects.meta(factory).get("deletionTimestamp"))
    if began is None:
        return None
    grace = int(objects.factory_spec(factory).get("drainGraceSeconds") or 0)
    return began + datetime.timedelta(seconds=grace)


def lease_key(assignment: Mapping[str, Any]) -> tuple[str, str]:
    """The binding Lease a job's assignment names: (namespace, name)."""
    return (str(assignment.get("leaseNamespace") or assignment.get("podNamespace") or ""), str(assignment.get("lease") or ""))


def pod_alive(beat: leases.Heartbeat | None, *, now: datetime.datetime) -> bool:
    """A runner pod counts as alive while its heartbeat Lease has not expired."""
    return beat is not None and beat.expires_at is not None and beat.expires_at > now


# --- a job's own lifecycle: stop requests, deadline, TTL ---


def ttl_at(body: Mapping[str, Any]) -> datetime.datetime | None:
    """ttlSecondsAfterFinished: when a finished job is deleted (None: never, or it is going already)."""
    ttl = objects.spec(body).get("ttlSecondsAfterFinished")
    finished = leases.parse_time(objects.job_status(body).get("completionTime"))
    if ttl is None or finished is None or objects.deleting(body):
        return None
    return finished + datetime.timedelta(seconds=int(ttl))


def stop_actions(body: Mapping[str, Any], *, binding: leases.Binding | None, now: datetime.datetime) -> list[Action]:
    """Cancel, suspend, deadline: a job without a binding ends on the spot (a suspended one just
    waits); a bound or running one gets a stop request on its binding Lease, once. A finished job's
    TTL timer is armed; a job still going has its deadline timer, since the deadline passes without
    any event. `binding` is the Lease the job's assignment names, as the cache shows it (None: none)."""
    key = objects.key(body)
    if objects.job_status(body).get("phase") in TERMINAL:
        at = ttl_at(body)
        done: list[Action] = [Disarm("deadline", key)]
        return done + [Arm("ttl", key, at)] if at is not None else done
    actions: list[Action] = [Disarm("ttl", key)]  # a retried job is not finished any more
    end = patches.deadline(body)
    if end is not None and end > now:
        actions.append(Arm("deadline", key, end))
    reason = patches.stop_reason(body, now=now)
    if reason is None:
        return actions
    if objects.assignment(body).get("lease"):
        if binding is not None and not binding.stop:
            actions.append(RequestStop(reason))
        # (gone: the fold or undo follows; already asked: nothing to write)
    elif reason != leases.STOP_SUSPENDED:
        actions.append(EndWaiting(reason))
    return actions


# --- bindings that nobody reports on: expiry and orphans ---


def expiry(binding: leases.Binding, *, now: datetime.datetime) -> Action:
    """A binding Lease's timer fired: renewed meanwhile (wait for the new expiry), or undo it."""
    if binding.expires_at is not None and binding.expires_at > now:
        return Arm("binding", (binding.namespace, binding.name), binding.expires_at)
    return Expire(binding)


def expiry_reason(binding: leases.Binding, *, claim_timeout_seconds: int) -> tuple[str, str]:
    """Why a lapsed binding is undone, and the message the job's attempt keeps."""
    if binding.claimed:
        return "LeaseExpired", f"runner pod {binding.pod} stopped renewing the binding Lease"
    return "ClaimTimeout", f"runner pod {binding.pod} did not claim the binding within {claim_timeout_seconds}s"


def orphan_actions(body: Mapping[str, Any], *, lease_present: bool, armed: bool, now: datetime.datetime,
                   claim_timeout_seconds: int) -> list[Action]:
    """A bound job whose binding Lease never appeared (a bind that failed between its two writes in
    a way that could not be reverted, or a Lease deleted by hand): past twice the claim timeout it is
    undone like an unclaimed binding; a timer fires at that instant, nothing polls. Twice: a Lease
    still on its way through the informer is not an orphan."""
    if objects.job_status(body).get("phase") != agentjobs.Phase.BOUND.value:
        return []
    key = objects.key(body)
    if lease_present:
        return [Disarm("orphan", key)]
    assignment = objects.assignment(body)
    bound_at = leases.parse_time(assignment.get("boundAt"))
    if bound_at is None:
        return []
    deadline = bound_at + datetime.timedelta(seconds=2 * claim_timeout_seconds)
    if deadline > now:
        return [] if armed else [Arm("orphan", key, deadline)]
    namespace, name = lease_key(assignment)
    binding = leases.Binding(
        name=name, namespace=namespace, pod=str(assignment.get("pod") or ""), factory=str(assignment.get("factory") or ""),
        job_namespace=key[0], job_name=key[1], job_uid=objects.uid(body), attempt=int(assignment.get("attempt") or 0),
        holder=None, claimed=False, stop=None, expires_at=deadline, resource_version=None,
    )
    return [Disarm("orphan", key), Expire(binding)]


# --- finalization and drain ---


def finalize_actions(body: Mapping[str, Any], *, binding: leases.Binding | None, pod_alive: bool, grace_armed: bool,
                     now: datetime.datetime, stop_grace_seconds: float) -> list[Action]:
    """A deleted job with our finalizer: stop its attempt, wait (bounded by `stop_grace_seconds`) for
    the runner to let the binding go, then finalize. `binding` is the job's own current binding;
    `pod_alive` whether its runner still beats. Each step's event brings the job back here."""
    if not objects.deleting(body) or constants.FINALIZER_JOB not in objects.finalizers(body):
        return []
    key = objects.key(body)
    if binding is None:
        return [Disarm("finalize", key), Finalize()]
    if not (binding.claimed and pod_alive):
        return [DropBinding(binding)]  # unclaimed, or its runner is gone: nobody to wait for
    actions: list[Action] = []
    if not grace_armed:
        # The runner gets the stop grace to stop the agent and report; then the Lease goes anyway.
        actions.append(Arm("finalize", key, now + datetime.timedelta(seconds=stop_grace_seconds), binding=binding))
    if binding.stop is None:
        actions.append(RequestStop(leases.STOP_DELETED, binding=binding))
    return actions


def drain_ends(factory: Mapping[str, Any], *, stop_grace_seconds: float) -> datetime.datetime | None:
    """When a deleted Factory's drain ends at the latest: its running jobs are stopped at the drain
    deadline, and whatever a runner has not let go `stop_grace_seconds` later is undone then."""
    deadline = drain_deadline(factory)
    return None if deadline is None else deadline + datetime.timedelta(seconds=stop_grace_seconds)


def drain_actions(factory: Mapping[str, Any], *, bindings: Iterable[leases.Binding], live_pods: Collection[tuple[str, str]],
                  busy: Collection[str], now: datetime.datetime, stop_grace_seconds: float) -> list[Action]:
    """A deleted Factory lets its bindings go — unclaimed ones at once, running ones stopped after
    spec.drainGraceSeconds and undone (requeued) when their runner is gone or the stop grace ran out
    too — and, when none is left, is Drained. The finalizer is not decided here: kopf owns it
    (factorykopf.py). `bindings` are the factory's; `live_pods` the (namespace, pod) keys whose
    heartbeat is current; `busy` the uids of jobs with a write in flight (left for their task's end)."""
    if not objects.deleting(factory):
        return []
    name = str(objects.meta(factory).get("name"))
    mine = list(bindings)
    if not mine:
        return [Disarm("drain", ("", name)), Drained()]
    deadline = drain_deadline(factory) or now
    hard = deadline + datetime.timedelta(seconds=stop_grace_seconds)
    actions: list[Action] = []
    for binding in mine:
        if binding.job_uid in busy:
            continue
        if not binding.claimed or (binding.namespace, binding.pod) not in live_pods or now >= hard:
            reason = "FactoryDeleted" if not binding.claimed else "Drained"
            actions.append(Expire(binding, reason=reason, message=f"factory {name} is being deleted"))
        elif now >= deadline and binding.stop is None:
            actions.append(RequestStop(leases.STOP_DRAINED, binding=binding))
    if now < hard:  # come back when the grace ends, and when the runners' time to stop ends
        actions.append(Arm("drain", ("", name), deadline if now < deadline else hard))
    return actions
