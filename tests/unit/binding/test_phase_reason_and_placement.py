"""Issue 15: a finished job keeps where and why it ran (status.factory/pod, each attempt's score
breakdown), and status.reason always goes with status.phase (the REASON printer column)."""

import datetime

import pytest

from gigafactory import leases
from gigafactory.binding import patches
from gigafactory.scheduling import cycle, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
SCORES = {"FreeCapacity": 100, "WarmRepo": 60}


def bound(**status) -> dict:
    base = {"phase": "Running", "reason": "AgentRunning", "attempt": 1, "factory": "pool", "pod": "p1",
            "assignment": {"factory": "pool", "pod": "p1", "podNamespace": "r", "attempt": 1, "lease": "gf-u-1",
                           "leaseNamespace": "r", "boundAt": "2026-11-24T11:00:00Z", "score": 87, "scores": SCORES}}
    return {"metadata": {"name": "j", "namespace": "n", "uid": "u", "resourceVersion": "9", "generation": 1},
            "spec": {"retry": {"maxAttempts": 1}}, "status": {**base, **status}}


def test_bind_writes_the_placement_and_reason() -> None:
    job = snapshots.JobInfo(namespace="n", name="j", uid="u", resource_version="5", attempt=1)
    pod = snapshots.PodInfo(name="p1", namespace="r", factory="pool", slots=1, agents=frozenset({"script"}))
    decision = cycle.Decision(job=job, pod=pod, score=87, scores=SCORES, attempt=1)
    status = patches.bind_patch(body={"metadata": {"uid": "u"}, "status": {}}, decision=decision, now=NOW)["status"]
    assert (status["phase"], status["reason"], status["factory"], status["pod"]) == ("Bound", "Bound", "pool", "p1")


@pytest.mark.parametrize("outcome, phase, reason", [
    ("Succeeded", "Succeeded", "Succeeded"),
    ("AgentFailed", "Failed", "AttemptsExhausted"),
    ("Rejected", "Failed", "Rejected"),
    ("InfraError", "Pending", "Requeued"),
])
def test_a_fold_keeps_the_score_breakdown_and_the_reason_follows_the_phase(outcome, phase, reason) -> None:
    body = bound(report={"attempt": 1, "pod": "p1", "outcome": outcome})
    status = patches.fold_patch(body=body, now=NOW)["status"]
    assert (status["phase"], status["reason"]) == (phase, reason)
    assert status["assignment"] is None and "factory" not in status and "pod" not in status  # kept as they were
    record = status["attempts"][-1]
    assert (record["factory"], record["pod"], record["score"], record["scores"]) == ("pool", "p1", 87, SCORES)


def test_an_undo_keeps_the_score_breakdown() -> None:
    status = patches.undo_patch(body=bound(phase="Bound"), reason="ClaimTimeout", message="no claim", now=NOW)["status"]
    assert status["reason"] == "Requeued" and status["attempts"][-1]["scores"] == SCORES


@pytest.mark.parametrize("stop, phase", [(leases.STOP_CANCELLED, "Cancelled"), (leases.STOP_DEADLINE, "Failed"),
                                         (patches.INVALID_SPEC, "Failed")])
def test_a_job_ended_while_waiting_says_why(stop, phase) -> None:
    status = patches.end_waiting_patch(body={"metadata": {}, "status": {"phase": "Pending"}}, reason=stop, now=NOW)["status"]
    assert (status["phase"], status["reason"]) == (phase, stop)


def test_a_retried_job_says_so() -> None:
    body = {"metadata": {"annotations": {}}, "status": {"phase": "Failed", "reason": "AttemptsExhausted", "attempt": 1}}
    status = patches.retry_patch(body=body, request="now", now=NOW)["status"]
    assert (status["phase"], status["reason"]) == ("Pending", "RetryRequested")
