"""The operator's step 1: the snapshot from its informer caches. A spec is validated once per
generation; a status write only re-parses the job; a spec the operator cannot act on fails the job."""

from gigafactory import config, operating
from gigafactory.scheduling import snapshots


def body(*, generation: int, rv: str, **spec) -> dict:
    return {
        "apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob",
        "metadata": {"name": "j", "namespace": "team-a", "uid": "u1", "resourceVersion": rv, "generation": generation,
                     "creationTimestamp": "2026-11-24T10:00:00Z"},
        "spec": {"repo": {"url": "https://git.example/a.git"}, "task": {"prompt": "p"}, "agent": {"profile": "script"}, **spec},
        "status": {"phase": "Pending"},
    }


def test_spec_validated_once_per_generation_and_an_invalid_new_generation_fails_the_job(monkeypatch) -> None:
    operator = operating.Operator(config.OperatorSettings(), client=None)  # type: ignore[arg-type] - no I/O in snapshot()
    failed: list[str] = []
    monkeypatch.setattr(operator, "_spawn", lambda coro, name: (coro.close(), failed.append(name)))
    validations = []
    real = snapshots.spec_problem
    monkeypatch.setattr(snapshots, "spec_problem", lambda b: validations.append(b["metadata"]["resourceVersion"]) or real(b))

    operator.jobs.cache[("team-a", "j")] = body(generation=1, rv="1", priority=5)
    snap, _ = operator.snapshot()
    assert [(j.name, j.priority) for j in snap.jobs] == [("j", 5)]

    operator.jobs.cache[("team-a", "j")] = body(generation=1, rv="2", priority=5)  # a status write
    snap, _ = operator.snapshot()
    assert [j.resource_version for j in snap.jobs] == ["2"] and validations == ["1"]

    operator.jobs.cache[("team-a", "j")] = body(generation=2, rv="3", priority="high")  # a spec edit it cannot act on
    snap, _ = operator.snapshot()
    assert snap.jobs == [] and validations == ["1", "3"] and failed == ["invalid:team-a/j"]


def test_an_explanation_coming_back_wakes_no_cycle_but_a_change_the_cycle_reads_does() -> None:
    operator = operating.Operator(config.OperatorSettings(), client=None)  # type: ignore[arg-type]
    job = body(generation=1, rv="1")
    operator._on_job("ADDED", job)
    assert operator.wakeup.is_set()

    operator.wakeup.clear()
    explained = {**job, "metadata": {**job["metadata"], "resourceVersion": "2"},
                 "status": {"phase": "Pending", "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable",
                                                                "message": "0/2 factory pods fit: 2 full"}]}}
    operator._on_job("MODIFIED", explained)
    assert not operator.wakeup.is_set()

    for change in ({"status": {"phase": "Pending", "requeueAt": "2026-11-24T10:05:00Z"}},  # a backoff
                   {"metadata": {**job["metadata"], "generation": 2}}):  # a spec edit
        operator._on_job("MODIFIED", {**explained, **change})
        assert operator.wakeup.is_set()
        operator.wakeup.clear()
