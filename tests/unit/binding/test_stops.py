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
    assert patches.stop_reason({"spec": spec}) == reason


def test_cancelled_waiting_job_ends_cancelled_with_precondition() -> None:
    body = {"metadata": {"resourceVersion": "42", "generation": 3},
            "status": {"phase": "Pending", "requeueAt": "2026-11-24T13:00:00Z",
                       "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable", "message": "0/1"}]}}
    patch = patches.cancel_pending_patch(body=body, now=NOW)
    assert patch["metadata"] == {"resourceVersion": "42"}
    status = patch["status"]
    assert status["phase"] == "Cancelled" and status["completionTime"] == "2026-11-24T12:00:00Z"
    assert status["requeueAt"] is None  # merge patch: null removes it
    [scheduled] = status["conditions"]
    assert (scheduled["reason"], scheduled["observedGeneration"]) == ("Cancelled", 3)
