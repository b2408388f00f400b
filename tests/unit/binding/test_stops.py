"""Cancel and suspend: which stop a job asks for, and how a cancelled waiting job ends."""

import datetime

import pytest

from gigafactory import leases
from gigafactory.binding import patches

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    "spec, reason",
    [
        pytest.param({}, None, id="nothing"),
        pytest.param({"cancel": True}, leases.STOP_CANCELLED, id="cancel"),
        pytest.param({"suspend": True}, leases.STOP_SUSPENDED, id="suspend"),
        pytest.param({"cancel": True, "suspend": True}, leases.STOP_CANCELLED, id="cancel-wins"),
    ],
)
def test_stop_reason(spec, reason) -> None:
    assert patches.stop_reason({"spec": spec}, now=NOW) == reason


@pytest.mark.parametrize(
    "started, reason",
    [
        pytest.param(None, None, id="never-bound"),
        pytest.param("2026-11-24T11:59:30Z", None, id="within"),
        pytest.param("2026-11-24T11:59:00Z", leases.STOP_DEADLINE, id="ran-out"),
    ],
)
def test_deadline_counts_from_the_first_bind(started, reason) -> None:
    body = {"spec": {"activeDeadlineSeconds": 60, "suspend": True}, "status": {"startTime": started} if started else {}}
    expected = reason or leases.STOP_SUSPENDED
    assert patches.stop_reason(body, now=NOW) == expected


def test_cancelled_waiting_job_ends_cancelled_with_precondition() -> None:
    body = {"metadata": {"resourceVersion": "42", "generation": 3},
            "status": {"phase": "Pending", "requeueAt": "2026-11-24T13:00:00Z",
                       "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable", "message": "0/1"}]}}
    patch = patches.end_waiting_patch(body=body, reason=leases.STOP_CANCELLED, now=NOW)
    assert patch["metadata"] == {"resourceVersion": "42"}
    status = patch["status"]
    assert status["phase"] == "Cancelled" and status["completionTime"] == "2026-11-24T12:00:00Z"
    assert status["requeueAt"] is None  # merge patch: null removes it
    [scheduled] = status["conditions"]
    assert (scheduled["reason"], scheduled["observedGeneration"]) == ("Cancelled", 3)


def test_waiting_job_past_its_deadline_fails() -> None:
    body = {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Pending"}}
    status = patches.end_waiting_patch(body=body, reason=leases.STOP_DEADLINE, now=NOW)["status"]
    assert status["phase"] == "Failed"
    assert [c["reason"] for c in status["conditions"] if c["type"] == "Failed"] == ["DeadlineExceeded"]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        pytest.param({"repo": {"url": "https://x/a.git"}, "task": {"prompt": "p"}, "agent": {"profile": "script"},
                      "priority": "high"}, "spec.priority", id="priority-not-a-number"),
        pytest.param({"repo": {"url": "https://x/a.git"}, "task": {}, "agent": {"profile": "script"}},
                     "exactly one of prompt and promptFrom", id="no-prompt"),
        pytest.param({"task": {"prompt": "p"}, "agent": {"profile": "script"}}, "spec.repo", id="no-repo"),
        pytest.param({"repo": {"url": "https://x/a.git"}, "task": {"prompt": "p"}, "agent": {"profile": "script"},
                      "requirements": {"preferences": [{"capability": "gpu", "weight": "lots"}]}}, "weight", id="bad-weight"),
    ],
)
def test_specs_the_operator_cannot_act_on_are_named(spec, fragment) -> None:
    from gigafactory.scheduling import snapshots

    problem = snapshots.spec_problem({"metadata": {"name": "j"}, "spec": spec})
    assert problem is not None and fragment in problem


def test_a_valid_spec_has_no_problem() -> None:
    from gigafactory.scheduling import snapshots

    spec = {"repo": {"url": "https://x/a.git"}, "task": {"prompt": "p"}, "agent": {"profile": "script"}}
    assert snapshots.spec_problem({"metadata": {"name": "j"}, "spec": spec}) is None


def test_invalid_spec_fails_the_waiting_job_naming_the_field() -> None:
    body = {"metadata": {"resourceVersion": "3"}, "status": {}}
    status = patches.end_waiting_patch(body=body, reason=patches.INVALID_SPEC, now=NOW, message="spec.priority: bad")["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("InvalidSpec", "spec.priority: bad")
