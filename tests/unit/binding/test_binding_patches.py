"""What the binder writes: the retry verdicts, the fencing of reports, folds and undos, and the
Unschedulable condition that is written only when it says something new."""

import datetime

import pytest

from gigafactory import leases
from gigafactory.binding import patches, retries
from gigafactory.models import agentjobs
from gigafactory.scheduling import cycle, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
O = agentjobs.Outcome


def counted(n: int) -> list[dict]:
    return [{"attempt": i + 1, "outcome": "AgentFailed", "counted": True} for i in range(n)]


def uncounted(n: int) -> list[dict]:
    return [{"attempt": i + 1, "outcome": "InfraError", "counted": False} for i in range(n)]


@pytest.mark.parametrize(
    "spec, attempts, outcome, exit_code, phase, is_counted, delay",
    [
        pytest.param({}, [], O.SUCCEEDED, 0, "Succeeded", True, None, id="success"),
        pytest.param({}, [], O.REJECTED, None, "Failed", True, None, id="rejected-fails-at-once"),
        pytest.param({}, [], O.INFRA_ERROR, None, "Pending", False, None, id="infra-retries-uncounted-without-backoff"),
        pytest.param({"retry": {"maxUncountedRetries": 2}}, uncounted(2), O.INFRA_ERROR, None, "Pending", True, 10, id="uncounted-budget-spent-counts"),
        pytest.param({}, [], O.AGENT_FAILED, 1, "Pending", True, 10, id="first-failure-backs-off-initial"),
        pytest.param({}, counted(1), O.TIMED_OUT, None, "Pending", True, 20, id="second-failure-doubles"),
        pytest.param({}, counted(2), O.AGENT_FAILED, 1, "Failed", True, None, id="attempts-exhausted"),
        pytest.param({"retry": {"maxAttempts": 5, "backoff": {"initialSeconds": 100, "factor": 10, "maxSeconds": 300}}},
                     counted(2), O.AGENT_FAILED, 1, "Pending", True, 300, id="backoff-capped"),
        pytest.param({"retry": {"rules": [{"action": "FailJob", "onOutcomes": ["AgentFailed"], "onExitCodes": {"operator": "In", "values": [42]}}]}},
                     [], O.AGENT_FAILED, 42, "Failed", True, None, id="rule-on-exit-code"),
        pytest.param({"retry": {"rules": [{"action": "FailJob", "onOutcomes": ["AgentFailed"], "onExitCodes": {"operator": "In", "values": [42]}}]}},
                     [], O.AGENT_FAILED, 1, "Pending", True, 10, id="rule-other-exit-code"),
        pytest.param({"retry": {"rules": [{"action": "Ignore", "onOutcomes": ["PushFailed"]}]}},
                     [], O.PUSH_FAILED, None, "Pending", False, None, id="rule-ignore"),
        pytest.param({"cancel": True}, [], O.STOPPED, None, "Cancelled", False, None, id="cancelled"),
    ],
)
def test_retry_verdicts(spec, attempts, outcome, exit_code, phase, is_counted, delay) -> None:
    verdict = retries.decide(spec=spec, attempts=attempts, outcome=outcome, exit_code=exit_code, now=NOW, seed="job-uid")
    assert verdict.phase.value == phase and verdict.counted is is_counted
    if delay is None:
        assert verdict.requeue_at is None
    else:  # the delay plus up to 10 % jitter (the default), within the cap
        waited = (verdict.requeue_at - NOW).total_seconds()
        cap = ((spec.get("retry") or {}).get("backoff") or {}).get("maxSeconds", 600)
        assert delay <= waited <= min(cap, delay * 1.1)


@pytest.mark.parametrize(
    "spec, reason, phase, verdict_reason",
    [
        pytest.param({}, "BudgetExceeded", "Failed", "BudgetExceeded", id="budget-fails-the-job"),
        pytest.param({"retry": {"rules": [{"action": "Count", "onOutcomes": ["Stopped"]}]}}, "BudgetExceeded", "Pending", "Stopped",
                     id="budget-retried-by-a-rule"),
        pytest.param({}, "Drained", "Pending", "Stopped", id="other-stops-retry-uncounted"),
    ],
)
def test_a_spent_model_budget_is_not_retried_by_default(spec, reason, phase, verdict_reason) -> None:
    verdict = retries.decide(spec=spec, attempts=[], outcome=O.STOPPED, exit_code=None, now=NOW, reason=reason, seed="j")
    assert (verdict.phase.value, verdict.reason) == (phase, verdict_reason)


def test_jitter_spreads_jobs_that_failed_together_and_is_the_same_on_every_replay() -> None:
    backoff = agentjobs.Backoff(initialSeconds=100, factor=2, maxSeconds=10_000, jitter=0.5)
    delays = [retries.backoff_seconds(backoff, 1, seed=f"uid-{i}") for i in range(50)]
    assert len(set(delays)) == 50 and all(100 <= d < 150 for d in delays)
    assert delays == [retries.backoff_seconds(backoff, 1, seed=f"uid-{i}") for i in range(50)]
    assert retries.backoff_seconds(agentjobs.Backoff(initialSeconds=100, jitter=0), 1, seed="x") == 100


def bound_job(**status) -> dict:
    base = {
        "phase": "Running", "attempt": 2,
        "assignment": {"factory": "pool", "pod": "p1", "podNamespace": "r", "attempt": 2, "lease": "gf-u-2",
                       "leaseNamespace": "r", "boundAt": "2026-11-24T11:00:00Z"},
        "attempts": [{"attempt": 1, "outcome": "InfraError", "reason": "ClaimTimeout", "counted": False}],
    }
    return {"metadata": {"name": "j", "namespace": "n", "uid": "u", "resourceVersion": "9", "generation": 1},
            "spec": {}, "status": {**base, **status}}


@pytest.mark.parametrize(
    "status, matches",
    [
        pytest.param({"report": {"attempt": 2, "pod": "p1", "outcome": "Succeeded"}}, True, id="current-attempt-bound-pod"),
        pytest.param({"phase": "Bound", "report": {"attempt": 2, "pod": "p1", "outcome": "Rejected"}}, True, id="failed-before-claim"),
        pytest.param({"report": {"attempt": 1, "pod": "p1", "outcome": "Succeeded"}}, False, id="older-attempt"),
        pytest.param({"report": {"attempt": 2, "pod": "p9", "outcome": "Succeeded"}}, False, id="other-pod"),
        pytest.param({"phase": "Succeeded", "report": {"attempt": 2, "pod": "p1", "outcome": "Succeeded"}}, False, id="already-final"),
        pytest.param({}, False, id="no-report"),
    ],
)
def test_report_fencing(status, matches) -> None:
    assert patches.report_matches(bound_job(**status)) is matches


def test_fold_success_appends_attempt_copies_result_and_clears_binding() -> None:
    body = bound_job(report={"attempt": 2, "pod": "p1", "outcome": "Succeeded", "exitCode": 0,
                             "result": {"branch": "agent/j", "commit": "c0ffee"}})
    patch = patches.fold_patch(body=body, now=NOW)
    status = patch["status"]
    assert patch["metadata"]["resourceVersion"] == "9"
    assert status["phase"] == "Succeeded" and status["result"]["branch"] == "agent/j"
    assert status["assignment"] is None and status["report"] is None  # merge patch: null removes
    assert [a["outcome"] for a in status["attempts"]] == ["InfraError", "Succeeded"]
    assert status["attempts"][-1]["pod"] == "p1" and status["attempts"][-1]["startedAt"] == "2026-11-24T11:00:00Z"
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in status["conditions"])


def test_undo_records_infra_error_and_requeues() -> None:
    patch = patches.undo_patch(body=bound_job(phase="Bound"), reason="ClaimTimeout", message="no claim", now=NOW)
    status = patch["status"]
    assert status["phase"] == "Pending" and status["assignment"] is None
    last = status["attempts"][-1]
    assert (last["outcome"], last["reason"], last["attempt"], last["counted"]) == ("InfraError", "ClaimTimeout", 2, False)


@pytest.mark.parametrize(
    "status, current",
    [
        pytest.param({}, True, id="same-binding"),
        pytest.param({"attempt": 3, "assignment": {"attempt": 3, "pod": "p1"}}, False, id="newer-attempt"),
        pytest.param({"phase": "Pending", "assignment": None}, False, id="already-undone"),
    ],
)
def test_undo_only_while_the_job_holds_the_binding(status, current) -> None:
    binding = leases.Binding(name="gf-u-2", namespace="r", pod="p1", factory="pool", job_namespace="n", job_name="j",
                             job_uid="u", attempt=2, holder="p1", claimed=True, stop=None, expires_at=NOW, resource_version="1")
    assert patches.binding_is_current(bound_job(**status), binding) is current


def test_unschedulable_condition_is_written_only_when_it_changes() -> None:
    body = {"metadata": {"name": "j", "resourceVersion": "3"}, "status": {"phase": "Pending"}}
    first = patches.unschedulable_patch(body=body, message="0/1 factory pods fit: 1 full", now=NOW)
    condition = first["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Scheduled", "False", "Unschedulable")
    assert first["status"]["reason"] == "Unschedulable"  # status.reason goes with the phase (the REASON column)
    body["status"].update(first["status"])
    assert patches.unschedulable_patch(body=body, message="0/1 factory pods fit: 1 full", now=NOW) is None
    later = NOW + datetime.timedelta(minutes=1)
    changed = patches.unschedulable_patch(body=body, message="0/2 factory pods fit: 2 full", now=later)
    # Same status: the transition time stays.
    assert changed["status"]["conditions"][0]["lastTransitionTime"] == first["status"]["conditions"][0]["lastTransitionTime"]


def test_bind_patch_and_event_carry_the_score_breakdown() -> None:
    job = snapshots.JobInfo(namespace="n", name="j", uid="u", resource_version="5", attempt=1)
    pod = snapshots.PodInfo(name="p1", namespace="r", factory="pool", slots=1, agents=frozenset({"script"}))
    decision = cycle.Decision(job=job, pod=pod, score=87, scores={"FreeCapacity": 100, "WarmRepo": 0}, attempt=2)
    body = {"metadata": {"name": "j", "namespace": "n", "uid": "u", "resourceVersion": "5"}, "status": {"phase": "Pending"}}
    patch = patches.bind_patch(body=body, decision=decision, now=NOW)
    assignment = patch["status"]["assignment"]
    assert patch["metadata"]["resourceVersion"] == "5" and patch["status"]["phase"] == "Bound" and patch["status"]["attempt"] == 2
    assert (assignment["lease"], assignment["podNamespace"], assignment["score"]) == (leases.binding_lease_name("u", 2), "r", 87)
    event = patches.bind_event(body=body, decision=decision, now=NOW)
    assert event["involvedObject"]["uid"] == "u" and "FreeCapacity=100, WarmRepo=0" in event["message"]
