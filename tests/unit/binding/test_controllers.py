"""The controllers' shell over the pure decisions: one record per job, forgotten at once on deletion;
a finalized job is not finalized twice; a heartbeat renewal wakes no cycle. No API server: the
Operator is built without a client and its task spawner is replaced."""

import datetime

from gigafactory import config, constants, leases, operating

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def operator(monkeypatch, spawned: list[str]) -> operating.Operator:
    op = operating.Operator(config.OperatorSettings(), client=None, clock=lambda: T0)  # type: ignore[arg-type]
    monkeypatch.setattr(op, "_spawn", lambda coro, name: (coro.close(), spawned.append(name)))
    return op


def job(**meta) -> dict:
    return {"metadata": {"name": "j", "namespace": "team-a", "uid": "u1", "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": "2026-11-24T10:00:00Z", **meta},
            "spec": {"repo": {"url": "https://git.example/a.git"}, "task": {"prompt": "p"}, "agent": {"profile": "script"}},
            "status": {"phase": "Succeeded", "completionTime": "2026-11-24T11:00:00Z"}}


def test_a_deleted_job_is_forgotten_at_once(monkeypatch) -> None:
    op = operator(monkeypatch, [])
    body = job()
    op.jobs.cache[("team-a", "j")] = body
    op._on_job("ADDED", body)
    op.snapshot()
    record = op.records.get("u1")
    assert record is not None and record.state is not None and record.info is not None
    record.assumed, record.explained_at, record.finalized = (1, ("r", "p"), ""), 5.0, True
    del op.jobs.cache[("team-a", "j")]
    op._on_job("DELETED", body)
    assert op.records.get("u1") is None and len(op.records) == 0


def test_a_finalized_job_is_not_finalized_again(monkeypatch) -> None:
    """Its cache entry still shows the finalizer until the DELETED event: events in between must
    not start a second cleanup (which would delete the branch again and call it "moved or gone")."""
    spawned: list[str] = []
    op = operator(monkeypatch, spawned)
    body = job(deletionTimestamp="2026-11-24T11:30:00Z", finalizers=[constants.FINALIZER_JOB])
    op._maybe_finalize(body)
    assert spawned == ["finalize:team-a/j"]
    op.busy.discard("u1")
    op.records.of("u1").finalized = True  # what a finalizer removal that went through records
    op._maybe_finalize(body)
    assert spawned == ["finalize:team-a/j"]


async def test_a_heartbeat_renewal_wakes_no_cycle_but_a_change_of_announcement_does(monkeypatch) -> None:
    op = operator(monkeypatch, [])
    lease = leases.build_heartbeat_lease(pod="pool-0", namespace="runners", factory="pool", slots=2, agents=["script"],
                                         warm_repos=[], duration_seconds=30, moment=T0)
    op._on_heartbeat("ADDED", lease)
    assert op.wakeup.is_set()
    op.wakeup.clear()
    renewed = {**lease, "spec": {**lease["spec"], "renewTime": leases.format_micro_time(T0 + datetime.timedelta(seconds=5))}}
    op._on_heartbeat("MODIFIED", renewed)
    assert not op.wakeup.is_set()
    more = leases.build_heartbeat_lease(pod="pool-0", namespace="runners", factory="pool", slots=3, agents=["script"],
                                        warm_repos=[], duration_seconds=30, moment=T0)
    op._on_heartbeat("MODIFIED", more)
    assert op.wakeup.is_set()
    op.timers.cancel_all()
