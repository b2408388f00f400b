"""The real runner against a hand-played operator: a test double binds jobs exactly as
docs/protocol.md says (status patch, then the binding Lease) and folds nothing, so these tests see
the runner's own writes — claim, renewals, report, release — and what it refuses to run."""


import pytest

from gigafactory import kubeclient, leases
from tests.conftest import wait_for
from tests.integration.runner.test_runner import RunnerProcess

FACTORY = "pool"


@pytest.fixture()
def runner(kubeconfig, namespace, tmp_path, api):
    started = RunnerProcess(kubeconfig, tmp_path, pod="runner-0", namespace=namespace, factory=FACTORY, slots=1).start()
    wait_for(lambda: _lease(api, namespace, "runner-0"), timeout=20, message="the runner never announced itself")
    try:
        yield started
    except BaseException:
        print(started.log.read_text(errors="replace")[-6000:])
        raise
    finally:
        started.stop()


def _lease(api, namespace, name):
    try:
        return api.call("get", kubeclient.LEASES, name, namespace=namespace)
    except kubeclient.NotFound:
        return None


def bind(api, namespace, name, *, pod="runner-0", attempt=1, lease_attempt=None) -> str:
    """The operator's two writes: assignment (with precondition), then the binding Lease."""
    job = api.job(namespace, name)
    uid = job["metadata"]["uid"]
    lease_name = leases.binding_lease_name(uid, lease_attempt or attempt)
    now = leases.now()
    patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
             "status": {"phase": "Bound", "attempt": attempt, "assignment": {
                 "factory": FACTORY, "pod": pod, "podNamespace": namespace, "attempt": attempt, "lease": lease_name,
                 "leaseNamespace": namespace, "boundAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}}
    api.call("patch", kubeclient.AGENTJOBS, name, patch, namespace=namespace, subresource="status")
    body = leases.build_binding_lease(job_namespace=namespace, job_name=name, job_uid=uid, attempt=lease_attempt or attempt,
                                      factory=FACTORY, pod="runner-0", pod_namespace=namespace,
                                      claim_timeout_seconds=60, moment=now)
    api.call("create", kubeclient.LEASES, body, namespace=namespace)
    return lease_name


def _report(api, namespace, name):
    return (api.job(namespace, name).get("status") or {}).get("report")


def test_invariant_3_claim_renew_report_release_and_never_more_than_its_slots(api, namespace, runner, remote) -> None:
    # Two jobs bound to a one-slot runner; each agent waits for a peer that must never come.
    alone = {"profile": "script", "args": ["--await-peers", "2"]}
    for name in ("a", "b"):
        api.create_job(namespace, name, repo={"url": str(remote)}, agent=alone)
    first, second = bind(api, namespace, "a"), bind(api, namespace, "b")
    leases_by_job = {"a": first, "b": second}

    def claimed():
        return [n for n in ("a", "b") if api.job(namespace, n)["status"]["phase"] == "Running"]

    running = wait_for(claimed, timeout=20, message="nothing was claimed")
    assert len(running) == 1
    one, other = running[0], ("b" if running[0] == "a" else "a")
    status = api.job(namespace, one)["status"]
    assert status["assignment"]["claimedAt"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert (conditions["Claimed"], conditions["Running"]) == ("True", "True")
    held = _lease(api, namespace, leases_by_job[one])["spec"]
    assert held["holderIdentity"] == "runner-0" and held["leaseDurationSeconds"] == 3
    # Renewed while the agent runs (every third of the 3 s duration).
    wait_for(lambda: _lease(api, namespace, leases_by_job[one])["spec"]["renewTime"] != held["renewTime"], timeout=5,
             message="the binding Lease was not renewed")
    assert api.job(namespace, other)["status"]["phase"] == "Bound"  # the slot is taken: not claimed
    assert not _lease(api, namespace, leases_by_job[other])["spec"].get("acquireTime")
    # The agent times out (3 s): the report, then the release; only then the other job gets the slot.
    report = wait_for(lambda: _report(api, namespace, one), timeout=15, message="no report")
    assert (report["attempt"], report["pod"], report["outcome"]) == (1, "runner-0", "TimedOut")
    # A log bound to its pod and job (docs/runner.md): a name only this pod may create, its labels saying whose.
    assert report["logRef"].startswith(f"configmap/{namespace}/gf-log-runner-0-1-")
    log = api.call("get", kubeclient.CONFIGMAPS, report["logRef"].rsplit("/", 1)[1], namespace=namespace)
    assert log["metadata"]["labels"] == {"gigafactory.dev/role": "log", "gigafactory.dev/pod": "runner-0",
                                         "gigafactory.dev/job-uid": api.job(namespace, one)["metadata"]["uid"]}
    wait_for(lambda: not _lease(api, namespace, leases_by_job[one])["spec"].get("holderIdentity"), timeout=5,
             message="the binding Lease was not released")
    later = wait_for(lambda: _report(api, namespace, other), timeout=20, message="the second job never ran")
    # It timed out too: its agent never found a peer, so the two never ran at once.
    assert later["outcome"] == "TimedOut"
    assert runner.executions() == 2


def test_a_binding_the_job_does_not_confirm_is_released_unrun(api, namespace, runner, remote) -> None:
    # Garbage labelled as one of its bindings: ignored, and the runner serves on.
    junk = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "junk", "namespace": namespace,
                         "labels": {"gigafactory.dev/role": "binding", "gigafactory.dev/pod": "runner-0"},
                         "annotations": {"gigafactory.dev/attempt": "not-a-number"}},
            "spec": {"holderIdentity": "runner-0"}}
    api.call("create", kubeclient.LEASES, junk, namespace=namespace)
    # A Lease for attempt 2 while the job's current attempt is 1: stale or forged, not to be run.
    api.create_job(namespace, "stale", repo={"url": str(remote)})
    stale = bind(api, namespace, "stale", attempt=1, lease_attempt=2)
    wait_for(lambda: not _lease(api, namespace, stale)["spec"].get("holderIdentity"), timeout=20,
             message="the unconfirmed binding was not dropped")
    job = api.job(namespace, "stale")
    assert job["status"]["phase"] == "Bound" and not job["status"].get("report")  # untouched
    # A good binding still runs.
    api.create_job(namespace, "good", repo={"url": str(remote)})
    bind(api, namespace, "good")
    report = wait_for(lambda: _report(api, namespace, "good"), timeout=20, message="the good job never ran")
    assert report["outcome"] == "Succeeded" and report["result"]["branch"] == "agent/good"
    assert runner.executions() == 1  # only the good one
