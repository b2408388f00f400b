"""The job and factory lifecycle as decisions of (state, now): every timer, stop request, deadline,
TTL, expiry, orphan, finalization and drain step, with the clock given — no API server, no sleeps."""

import dataclasses
import datetime

import pytest

from gigafactory import constants, leases
from gigafactory.binding import lifecycle as lc

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
KEY = ("team-a", "j")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(*, phase: str = "Pending", spec: dict | None = None, lease: bool = False, deleting: bool = False,
        finalizer: bool = True, **status) -> dict:
    meta: dict = {"namespace": "team-a", "name": "j", "uid": "u1"}
    if deleting:
        meta["deletionTimestamp"] = stamp(0)
    if finalizer:
        meta["finalizers"] = [constants.FINALIZER_JOB]
    if lease:
        status["assignment"] = {"pod": "pool-0", "podNamespace": "runners", "factory": "pool", "attempt": 1,
                                "lease": "j-1", "boundAt": stamp(0), **status.get("assignment", {})}
    return {"metadata": meta, "spec": spec or {}, "status": {"phase": phase, **status}}


BINDING = leases.Binding(name="j-1", namespace="runners", pod="pool-0", factory="pool", job_namespace="team-a",
                         job_name="j", job_uid="u1", attempt=1, holder="pool-0", claimed=True, stop=None,
                         expires_at=at(30), resource_version="5")


def binding(**changes) -> leases.Binding:
    return dataclasses.replace(BINDING, **changes)


# --- stop requests, deadline, TTL ---


@pytest.mark.parametrize("body, bound, expected", [
    pytest.param(job(), None, [lc.Disarm("ttl", KEY)], id="nothing-to-do"),
    pytest.param(job(spec={"cancel": True}), None, [lc.Disarm("ttl", KEY), lc.EndWaiting(leases.STOP_CANCELLED)],
                 id="waiting-cancelled-ends-at-once"),
    pytest.param(job(spec={"suspend": True}), None, [lc.Disarm("ttl", KEY)], id="waiting-suspended-just-waits"),
    pytest.param(job(phase="Running", lease=True, spec={"cancel": True}), BINDING,
                 [lc.Disarm("ttl", KEY), lc.RequestStop(leases.STOP_CANCELLED)], id="running-cancelled-asks-the-runner"),
    pytest.param(job(phase="Running", lease=True, spec={"suspend": True}), BINDING,
                 [lc.Disarm("ttl", KEY), lc.RequestStop(leases.STOP_SUSPENDED)], id="running-suspended-asks-the-runner"),
    pytest.param(job(phase="Running", lease=True, spec={"cancel": True}), binding(stop=leases.STOP_CANCELLED),
                 [lc.Disarm("ttl", KEY)], id="asked-already-nothing-to-write"),
    pytest.param(job(phase="Bound", lease=True, spec={"cancel": True}), None, [lc.Disarm("ttl", KEY)],
                 id="lease-gone-the-undo-follows"),
])
def test_stop_actions(body, bound, expected) -> None:
    assert lc.stop_actions(body, binding=bound, now=at(1)) == expected


def test_a_deadline_yet_to_come_arms_its_timer_and_once_passed_stops_the_job() -> None:
    body = job(phase="Running", lease=True, spec={"activeDeadlineSeconds": 60}, startTime=stamp(0))
    assert lc.stop_actions(body, binding=BINDING, now=at(59)) == [lc.Disarm("ttl", KEY), lc.Arm("deadline", KEY, at(60))]
    assert lc.stop_actions(body, binding=BINDING, now=at(60)) == [lc.Disarm("ttl", KEY), lc.RequestStop(leases.STOP_DEADLINE)]
    waiting = job(spec={"activeDeadlineSeconds": 60}, startTime=stamp(0), requeueAt=stamp(30))
    assert lc.stop_actions(waiting, binding=None, now=at(61)) == [lc.Disarm("ttl", KEY), lc.EndWaiting(leases.STOP_DEADLINE)]


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
def test_a_finished_job_drops_its_deadline_and_arms_its_ttl(phase) -> None:
    body = job(phase=phase, spec={"ttlSecondsAfterFinished": 300, "activeDeadlineSeconds": 60, "cancel": True},
               completionTime=stamp(10))
    assert lc.stop_actions(body, binding=None, now=at(20)) == [lc.Disarm("deadline", KEY), lc.Arm("ttl", KEY, at(310))]


@pytest.mark.parametrize("body, expected", [
    pytest.param(job(phase="Succeeded", spec={"ttlSecondsAfterFinished": 0}, completionTime=stamp(5)), at(5), id="zero"),
    pytest.param(job(phase="Succeeded", completionTime=stamp(5)), None, id="no-ttl"),
    pytest.param(job(phase="Succeeded", spec={"ttlSecondsAfterFinished": 10}), None, id="no-completion-time"),
    pytest.param(job(phase="Failed", deleting=True, spec={"ttlSecondsAfterFinished": 10}, completionTime=stamp(5)), None,
                 id="deleted-already"),
])
def test_ttl_at(body, expected) -> None:
    assert lc.ttl_at(body) == expected


# --- expiry and orphans ---


def test_a_binding_renewed_meanwhile_waits_for_its_new_expiry_and_a_lapsed_one_is_undone() -> None:
    assert lc.expiry(BINDING, now=at(29)) == lc.Arm("binding", ("runners", "j-1"), at(30))
    assert lc.expiry(BINDING, now=at(30)) == lc.Expire(BINDING)
    assert lc.expiry(binding(expires_at=None), now=at(0)) == lc.Expire(binding(expires_at=None))


@pytest.mark.parametrize("claimed, reason, words", [
    pytest.param(True, "LeaseExpired", "stopped renewing", id="claimed"),
    pytest.param(False, "ClaimTimeout", "did not claim the binding within 15s", id="unclaimed"),
])
def test_expiry_reason(claimed, reason, words) -> None:
    said, message = lc.expiry_reason(binding(claimed=claimed), claim_timeout_seconds=15)
    assert said == reason and words in message and "pool-0" in message


def test_a_bound_job_without_its_lease_is_undone_at_twice_the_claim_timeout() -> None:
    body = job(phase="Bound", lease=True)
    kwargs = {"lease_present": False, "claim_timeout_seconds": 15}
    assert lc.orphan_actions(body, armed=False, now=at(29), **kwargs) == [lc.Arm("orphan", KEY, at(30))]
    assert lc.orphan_actions(body, armed=True, now=at(29), **kwargs) == []  # one timer, not one per cycle
    disarm, expire = lc.orphan_actions(body, armed=True, now=at(30), **kwargs)
    assert disarm == lc.Disarm("orphan", KEY) and isinstance(expire, lc.Expire)
    assert (expire.binding.name, expire.binding.namespace, expire.binding.job_uid, expire.binding.claimed,
            expire.reason) == ("j-1", "runners", "u1", False, None)  # said ClaimTimeout by the undo


@pytest.mark.parametrize("body, present, expected", [
    pytest.param(job(phase="Bound", lease=True), True, [lc.Disarm("orphan", KEY)], id="lease-seen"),
    pytest.param(job(phase="Running", lease=True), False, [], id="running-has-a-claimed-lease"),
    pytest.param(job(phase="Bound", lease=True, assignment={"boundAt": None}), False, [], id="no-bound-at"),
])
def test_orphan_actions_leave_alone(body, present, expected) -> None:
    assert lc.orphan_actions(body, lease_present=present, armed=False, now=at(999), claim_timeout_seconds=15) == expected


# --- finalization ---


def finalize(body, bound, *, alive=True, armed=False, now=at(1)):
    return lc.finalize_actions(body, binding=bound, pod_alive=alive, grace_armed=armed, now=now, stop_grace_seconds=20)


def test_a_deleted_running_job_asks_its_runner_to_stop_and_gives_it_the_stop_grace() -> None:
    body = job(phase="Running", lease=True, deleting=True)
    assert finalize(body, BINDING) == [lc.Arm("finalize", KEY, at(21), binding=BINDING),
                                       lc.RequestStop(leases.STOP_DELETED, binding=BINDING)]
    asked = binding(stop=leases.STOP_DELETED)
    assert finalize(body, asked, armed=True) == []  # asked, timer set: wait for the runner or the timer


@pytest.mark.parametrize("bound, alive", [
    pytest.param(binding(claimed=False), True, id="unclaimed"),
    pytest.param(BINDING, False, id="runner-gone"),
])
def test_a_deleted_job_nobody_runs_drops_its_binding_at_once(bound, alive) -> None:
    assert finalize(job(phase="Bound", lease=True, deleting=True), bound, alive=alive) == [lc.DropBinding(bound)]


def test_a_deleted_job_without_a_binding_is_finalized() -> None:
    assert finalize(job(phase="Succeeded", deleting=True), None) == [lc.Disarm("finalize", KEY), lc.Finalize()]


@pytest.mark.parametrize("body", [
    pytest.param(job(phase="Succeeded"), id="not-deleted"),
    pytest.param(job(phase="Succeeded", deleting=True, finalizer=False), id="no-finalizer"),
])
def test_finalize_leaves_alone(body) -> None:
    assert finalize(body, None) == []


# --- factory drain ---


def factory(*, deleting: bool = False, finalizer: bool = True, grace: int = 60) -> dict:
    meta: dict = {"name": "pool"}
    if deleting:
        meta["deletionTimestamp"] = stamp(0)
    if finalizer:
        meta["finalizers"] = [constants.FINALIZER_FACTORY]
    return {"metadata": meta, "spec": {"drainGraceSeconds": grace}}


def drain(body, bindings, *, now, live=(("runners", "pool-0"),), busy=()):
    return lc.drain_actions(body, bindings=bindings, live_pods=set(live), busy=set(busy), now=now, stop_grace_seconds=20)


@pytest.mark.parametrize("finalizer", [True, False])
def test_a_factory_drains_only_once_deleted_and_is_drained_when_no_binding_is_left(finalizer) -> None:
    """The finalizer is kopf's (factorykopf.py): no decision adds or removes it, with it or without."""
    assert drain(factory(finalizer=finalizer), [], now=at(0)) == []
    assert drain(factory(finalizer=finalizer), [BINDING], now=at(0)) == []
    assert drain(factory(deleting=True, finalizer=finalizer), [], now=at(1)) == [lc.Disarm("drain", ("", "pool")), lc.Drained()]
    assert lc.Drained() not in drain(factory(deleting=True, finalizer=finalizer), [BINDING], now=at(1))


def test_the_drain_ends_at_its_deadline_plus_the_stop_grace() -> None:
    assert lc.drain_ends(factory(deleting=True, grace=60), stop_grace_seconds=20) == at(80)
    assert lc.drain_ends(factory(grace=60), stop_grace_seconds=20) is None


def test_a_draining_factory_undoes_unclaimed_bindings_at_once_and_waits_out_the_grace_for_running_ones() -> None:
    unclaimed = binding(name="k-1", job_uid="u2", claimed=False)
    assert drain(factory(deleting=True), [BINDING, unclaimed], now=at(1)) == [
        lc.Expire(unclaimed, reason="FactoryDeleted", message="factory pool is being deleted"),
        lc.Arm("drain", ("", "pool"), at(60)),
    ]


def test_after_the_grace_running_jobs_are_stopped_then_undone_when_the_stop_grace_ends_too() -> None:
    assert drain(factory(deleting=True), [BINDING], now=at(60)) == [lc.RequestStop(leases.STOP_DRAINED, binding=BINDING),
                                                                   lc.Arm("drain", ("", "pool"), at(80))]
    asked = binding(stop=leases.STOP_DRAINED)
    assert drain(factory(deleting=True), [asked], now=at(70)) == [lc.Arm("drain", ("", "pool"), at(80))]
    assert drain(factory(deleting=True), [asked], now=at(80)) == [
        lc.Expire(asked, reason="Drained", message="factory pool is being deleted")]


def test_a_draining_factory_undoes_at_once_what_a_dead_runner_held_and_leaves_busy_jobs_to_their_task() -> None:
    assert drain(factory(deleting=True), [BINDING], now=at(1), live=()) == [
        lc.Expire(BINDING, reason="Drained", message="factory pool is being deleted"), lc.Arm("drain", ("", "pool"), at(60))]
    assert drain(factory(deleting=True), [BINDING], now=at(1), live=(), busy=("u1",)) == [lc.Arm("drain", ("", "pool"), at(60))]


@pytest.mark.parametrize("beat, alive", [
    pytest.param(None, False, id="no-heartbeat"),
    pytest.param(at(1), True, id="current"),
    pytest.param(at(0), False, id="expired"),
])
def test_pod_alive(beat, alive) -> None:
    heartbeat = None if beat is None else leases.Heartbeat(
        pod="pool-0", namespace="runners", factory="pool", slots=1, agents=frozenset(), warm_repos=frozenset(),
        draining=False, expires_at=beat, renewed_at=None)
    assert lc.pod_alive(heartbeat, now=at(0)) is alive
