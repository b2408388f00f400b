"""The typed views of models/objects.py read what the API sent, and read a misshapen part (a status a
runner wrote oddly) as absent instead of failing the reconcile, the fold, the cleanup or the page
that reads it."""
import datetime

import pytest

from gigafactory import leases
from gigafactory.binding import cleanup, patches
from gigafactory.dashboard import views
from gigafactory.models import objects
from gigafactory.scheduling import snapshots

NOW = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.timezone.utc)

JOB = {
    "metadata": {"name": "j", "namespace": "team", "labels": {"a": "1"}, "finalizers": ["gigafactory.dev/cleanup"]},
    "spec": {"repo": {"url": "https://example.invalid/r.git"}},
    "status": {"phase": "Running", "assignment": {"pod": "p", "factory": "f"},
               "conditions": [{"type": "Scheduled", "status": "True"}, {"type": "Running", "status": "True", "reason": "Started"}]},
}


def test_views_read_the_parts_of_an_object():
    assert objects.meta(JOB)["name"] == "j" and objects.labels(JOB) == {"a": "1"}
    assert objects.finalizers(JOB) == ["gigafactory.dev/cleanup"]
    assert objects.field(JOB, "spec", "repo")["url"].startswith("https://")
    assert objects.field(JOB, "status", "assignment") == {"pod": "p", "factory": "f"}
    assert [c["type"] for c in objects.conditions(JOB)] == ["Scheduled", "Running"]
    assert (objects.condition(JOB, "Running") or {}).get("reason") == "Started"
    assert objects.condition(JOB, "Complete") is None


def test_missing_or_misshapen_parts_read_as_empty():
    odd = {"metadata": ["not", "an", "object"], "status": "Running",
           "data": None, "spec": {"repo": "a string where an object belongs"}}
    assert objects.meta(odd) == {} and objects.labels(odd) == {} and objects.annotations(odd) == {}
    assert objects.status(odd) == {} and objects.conditions(odd) == [] and objects.condition(odd, "Running") is None
    assert objects.field(odd, "spec", "repo", "url") == {} and objects.data(odd) == {}
    assert objects.finalizers({"metadata": {"finalizers": ["a", 3, None]}}) == ["a"]
    assert objects.conditions({"status": {"conditions": [{"type": "A"}, "junk", 7]}}) == [{"type": "A"}]
    assert objects.text({"output": 12}, "output") == "" and objects.text({"output": "ok"}, "output") == "ok"


def test_views_are_the_objects_themselves_not_copies():
    body = {"status": {"phase": "Pending"}}
    objects.status(body)["phase"] = "Running"
    assert body["status"]["phase"] == "Running"


# --- the views of an AgentJob's status, and who reads them ---



def test_views_of_a_job_status_read_what_the_operator_and_the_runner_wrote():
    job = {
        "metadata": {"name": "j", "namespace": "team", "uid": "u1"},
        "spec": {"repo": {"url": "https://example.invalid/r.git"}},
        "status": {
            "phase": "Running", "attempt": 2, "factory": "f", "pod": "p2",
            "assignment": {"factory": "f", "pod": "p2", "attempt": 2, "lease": "gf-u1-2"},
            "attempts": [{"attempt": 1, "pod": "p1", "outcome": "InfraError", "logRef": "configmap/team/gf-log-p1-1",
                          "pushed": {"branch": "agent/j", "commit": "c1"}}],
            "report": {"attempt": 2, "pod": "p2", "outcome": "Succeeded", "logRef": "configmap/team/gf-log-p2-2",
                       "result": {"branch": "agent/j", "commit": "c2"}, "tokens": [{"model": "m", "inputTokens": 3}]},
        },
    }
    assert (objects.uid(job), objects.name(job), objects.namespace(job)) == ("u1", "j", "team")
    assert objects.assignment(job)["lease"] == "gf-u1-2" and objects.placement(job) == ("f", "p2")
    assert [a["attempt"] for a in objects.attempts(job)] == [1] and objects.pushed(objects.attempts(job)[0])["commit"] == "c1"
    assert objects.result(objects.report(job))["commit"] == "c2" and objects.tokens(objects.report(job)) == [{"model": "m", "inputTokens": 3}]
    assert [r.get("logRef") for r in objects.attempt_records(job)] == ["configmap/team/gf-log-p1-1", "configmap/team/gf-log-p2-2"]
    assert objects.phase(job) == "Running" and objects.phase({}) == "Pending"


# What a runner (or anyone who can write a job's status or a Lease) might leave where an object belongs.
ODD = [pytest.param(value, id=name) for name, value in
       (("string", "junk"), ("number", 7), ("list", ["a", "b"]), ("null", None), ("true", True))]


@pytest.mark.parametrize("odd", ODD)
def test_a_misshapen_runner_written_part_reads_as_absent(odd):
    job = {"metadata": {"name": "j", "uid": "u1"},
           "status": {"phase": "Running", "attempt": 1, "assignment": odd, "report": odd, "result": odd,
                      "attempts": [odd, {"attempt": 1, "pushed": odd, "tokens": odd}], "conditions": [odd]}}
    assert objects.assignment(job) == {} and objects.report(job) == {} and objects.result(objects.status(job)) == {}
    assert objects.attempts(job) == [{"attempt": 1, "pushed": odd, "tokens": odd}]
    assert objects.pushed(objects.attempts(job)[0]) == {} and objects.tokens(objects.attempts(job)[0]) == []
    assert objects.placement(job) == ("", "") and objects.attempt_records(job) == objects.attempts(job)
    assert objects.conditions(job) == [] and objects.phase_reason(job) == ""
    # ... and so the readers of those parts neither raise nor act on them:
    assert not patches.report_matches(job)  # nothing to fold
    assert cleanup.pushed_branches({**job, "spec": {"cleanup": {"deleteBranch": "Always"}}}) == []  # no branch to delete
    assert cleanup.log_configmaps(job) == []
    assert snapshots.SuccessRatios.from_jobs([job]).as_dict() == {}
    assert views.summarize(job).factory == "" and views.job_detail(job, [], now=NOW, aging_seconds_per_point=60).attempts


@pytest.mark.parametrize("odd", ODD)
def test_a_lease_with_misshapen_parts_is_no_heartbeat_nor_binding(odd):
    for part in ("metadata", "spec"):
        for role in ("heartbeat", "binding"):
            lease = {"metadata": {"name": "p", "namespace": "n", "labels": {"gigafactory.dev/role": role, "gigafactory.dev/factory": "f"},
                                  "annotations": {"gigafactory.dev/attempt": "1", "gigafactory.dev/job-namespace": "t",
                                                  "gigafactory.dev/job-name": "j", "gigafactory.dev/job-uid": "u"}},
                     "spec": {"holderIdentity": "p", "renewTime": "2026-11-30T10:00:00.000000Z", "leaseDurationSeconds": 30}}
            lease[part] = odd
            assert leases.holder(lease) is None if part == "spec" else leases.holder(lease) == "p"
            assert leases.renewed_at(lease) is None if part == "spec" else leases.renewed_at(lease) == NOW
            parsed = leases.parse_heartbeat(lease) if role == "heartbeat" else leases.parse_binding(lease)
            assert (parsed is None) if part == "metadata" else (parsed is not None and parsed.expires_at is None)
    labelled = {"metadata": {"labels": odd, "annotations": odd}}
    assert leases.parse_heartbeat(labelled) is None and leases.parse_binding(labelled) is None


@pytest.mark.parametrize(
    "status, reason",
    [
        pytest.param({"phase": "Failed", "reason": "AttemptsExhausted"}, "AttemptsExhausted", id="status-reason"),
        pytest.param({"phase": "Succeeded", "conditions": [{"type": "Complete", "status": "True", "reason": "Succeeded"}]},
                     "Succeeded", id="older-job-complete-condition"),
        pytest.param({"phase": "Pending", "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable"}]},
                     "Unschedulable", id="waiting-scheduled-condition"),
        pytest.param({"phase": "Cancelled"}, "Cancelled", id="cancelled-without-condition"),
        pytest.param({}, "", id="new-job"),
    ],
)
def test_phase_reason_is_what_get_and_the_dashboard_print(status, reason):
    assert objects.phase_reason({"status": status}) == reason
