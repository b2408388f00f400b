"""The operator as a real process against a real API server, with stub runners speaking the protocol."""

import collections
import concurrent.futures
import threading
import urllib.request

import pytest

from gigafactory import kubeclient, leases
from localcluster import faults
from tests.conftest import wait_for
from tests.integration.operator import stubs

pytestmark = pytest.mark.xdist_group("operator")


phase = stubs.phase


def scheduled(job):
    return next((c for c in (job.get("status") or {}).get("conditions") or () if c["type"] == "Scheduled"), None)


def test_invariant_7_jobs_bind_where_they_fit_and_an_unfit_job_explains_itself_until_capacity_appears(api, kubeconfig, namespace, tmp_path) -> None:
    cpu, gpu = stubs.unique("cpu"), stubs.unique("gpu")
    api.create_factory(cpu, namespace, capabilities=["python"])
    api.create_factory(gpu, namespace, capabilities=["gpu"], subscriptions=["backend"], slotsPerPod=2)
    stubs.StubRunner(api, pod=f"{cpu}-0", namespace=namespace, factory=cpu).announce()
    stubs.StubRunner(api, pod=f"{gpu}-0", namespace=namespace, factory=gpu, slots=2).announce()
    api.create_job(namespace, "train", queue="backend", requirements={"capabilities": ["gpu"]})
    api.create_job(namespace, "pinned", targetFactory=cpu, priority=10)
    api.create_job(namespace, "waiting")  # queue default: only the cpu factory, whose one slot the pinned job takes

    with stubs.operators(kubeconfig, tmp_path) as (proc,):
        wait_for(lambda: phase(api, namespace, "train") == "Bound" and phase(api, namespace, "pinned") == "Bound",
                 timeout=15, message="train and pinned bound")
        train, pinned = api.job(namespace, "train"), api.job(namespace, "pinned")
        assert train["status"]["assignment"]["pod"] == f"{gpu}-0"
        assert pinned["status"]["assignment"]["pod"] == f"{cpu}-0"
        assignment = pinned["status"]["assignment"]
        assert assignment["attempt"] == 1 and assignment["factory"] == cpu and assignment["leaseNamespace"] == namespace
        assert set(assignment["scores"]) >= {"FreeCapacity", "WarmRepo", "Cost"}
        assert scheduled(pinned)["status"] == "True"
        # The binding Lease the runner watches, named and labelled per the protocol.
        lease = next(b for b in api.bindings(namespace) if b["metadata"]["name"] == assignment["lease"])
        assert lease["metadata"]["labels"]["gigafactory.dev/pod"] == f"{cpu}-0"
        assert lease["spec"]["leaseDurationSeconds"] == stubs.CLAIM_TIMEOUT

        condition = wait_for(lambda: scheduled(api.job(namespace, "waiting")), timeout=10, message="explanation")
        assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
        assert condition["message"] == "0/2 factory pods fit: 1 full, 1 not subscribed to queue default"

        # Capacity appears: a second cpu pod. The waiting job binds to it.
        stubs.StubRunner(api, pod=f"{cpu}-1", namespace=namespace, factory=cpu).announce()
        wait_for(lambda: phase(api, namespace, "waiting") == "Bound", timeout=10, message="waiting job bound")
        assert api.job(namespace, "waiting")["status"]["assignment"]["pod"] == f"{cpu}-1"

        events = api.call("list", kubeclient.EVENTS, namespace=namespace)[0]
        assert any(e.get("reason") == "Scheduled" and "score" in e.get("message", "") for e in events)
        wait_for(lambda: (api.call("get", kubeclient.FACTORIES, cpu).get("status") or {}).get("readyPods") == 2,
                 timeout=10, message="factory status aggregated")
        status = api.call("get", kubeclient.FACTORIES, cpu)["status"]
        assert status["phase"] == "Ready" and status["slotsTotal"] == 2
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"], ready["message"]) == ("True", "PodsReady", "2/2 runner pods ready")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5).read().decode()
        assert f'gigafactory_binds_total{{factory="{cpu}"}}' in metrics
        assert "gigafactory_scheduling_cycle_seconds_count" in metrics
        assert urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/readyz", timeout=5).status == 200


def test_claim_report_fold_and_claim_timeout_rebinds(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace, slotsPerPod=2)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool, slots=2)
    runner.announce()
    api.create_job(namespace, "done")
    api.create_job(namespace, "ignored")
    claim_timeout = 5  # short, for "ignored"; long enough for this test to claim "done" on a busy machine
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS=str(claim_timeout)):
        wait_for(lambda: len(runner.bindings()) == 2, timeout=15, message="two bindings")
        lease = next(b for b in runner.bindings() if b["metadata"]["annotations"]["gigafactory.dev/job-name"] == "done")
        runner.claim(lease)
        runner.report(namespace, "done", outcome="Succeeded",
                      result={"branch": "agent/done", "commit": "abc123"})
        wait_for(lambda: phase(api, namespace, "done") == "Succeeded", timeout=10, message="report folded")
        job = api.job(namespace, "done")
        assert job["status"]["result"]["branch"] == "agent/done"
        assert [a["outcome"] for a in job["status"]["attempts"]] == ["Succeeded"]
        assert "report" not in job["status"] and "assignment" not in job["status"]
        wait_for(lambda: not any(b["metadata"]["name"] == lease["metadata"]["name"] for b in api.bindings(namespace)),
                 timeout=10, message="binding lease deleted")

        # Nobody claims "ignored": after the claim timeout it is undone and bound again.
        def rebound():
            status = api.job(namespace, "ignored").get("status") or {}
            return status.get("attempt") == 2 and status.get("phase") == "Bound" and status
        status = wait_for(rebound, timeout=stubs.within(claim_timeout), message="rebind after claim timeout")
        assert status["attempts"][0]["outcome"] == "InfraError" and status["attempts"][0]["reason"] == "ClaimTimeout"
        assert status["attempts"][0]["counted"] is False
        names = {b["metadata"]["name"] for b in api.bindings(namespace)}
        assert status["assignment"]["lease"] in names and not any(n.endswith("-1") and "ignored" in n for n in names)


def test_claimed_binding_whose_lease_expires_is_recorded_as_lease_expired(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool)
    runner.announce()
    api.create_job(namespace, "lost")
    with stubs.operators(kubeconfig, tmp_path):
        lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
        runner.claim(lease, duration_seconds=2)  # ...and never renews: the runner died
        def recorded():
            attempts = (api.job(namespace, "lost").get("status") or {}).get("attempts") or []
            return attempts and attempts[0]
        record = wait_for(recorded, timeout=stubs.within(2), message="lease expiry recorded")
        assert (record["outcome"], record["reason"], record["pod"]) == ("InfraError", "LeaseExpired", f"{pool}-0")


@pytest.mark.embedded_only  # fault injection
def test_an_expiry_whose_undo_fails_on_api_errors_is_undone_once_the_api_recovers(api, kubeconfig, namespace, tmp_path,
                                                                                    local_cluster) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool)
    runner.announce()
    api.create_job(namespace, "unlucky")
    with stubs.operators(kubeconfig, tmp_path) as (proc,):
        lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
        runner.claim(lease, duration_seconds=2)
        # The undo reads the job first: make every such read fail while the Lease runs out.
        local_cluster.local.server.faults = faults.FaultPolicy(rate=1.0, kinds=("error",), verbs=("get",), resources=("agentjobs",))
        try:
            wait_for(lambda: "undo failed" in proc.logs(), timeout=15, message="an undo that failed")
        finally:
            local_cluster.local.server.faults = faults.NoFaults()
        record = wait_for(lambda: ((api.job(namespace, "unlucky").get("status") or {}).get("attempts") or [None])[0],
                          timeout=10, message="the undo done once the API recovered")
        assert record["reason"] == "LeaseExpired"


def _assert_each_job_bound_once(api, namespace, jobs, slots_per_pod):
    by_job = collections.Counter(b["metadata"]["annotations"]["gigafactory.dev/job-name"] for b in api.bindings(namespace))
    assert by_job == {name: 1 for name in jobs}
    bound = [j for j in api.jobs(namespace) if j["metadata"]["name"] in jobs]
    per_pod = collections.Counter(j["status"]["assignment"]["pod"] for j in bound)
    assert max(per_pod.values()) <= slots_per_pod
    assert all(j["status"]["attempt"] == 1 and not j["status"].get("attempts") for j in bound)


def test_invariant_1_two_active_operators_in_a_split_brain_never_bind_a_job_twice(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace, slotsPerPod=4)
    for i in range(6):
        stubs.StubRunner(api, pod=f"{pool}-{i}", namespace=namespace, factory=pool, slots=4).announce()
    with stubs.operators(kubeconfig, tmp_path, count=2, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="60") as procs:
        wait_for(lambda: all(p.ready() for p in procs), timeout=15, message="both operators ready")
        jobs = [f"j{i}" for i in range(20)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool_:  # a burst both operators see at once
            list(pool_.map(lambda name: api.create_job(namespace, name), jobs))
        wait_for(lambda: all((j.get("status") or {}).get("phase") == "Bound" for j in api.jobs(namespace)) and len(api.bindings(namespace)) == 20,
                 timeout=20, message="all 20 bound")
        by_job = collections.Counter(b["metadata"]["annotations"]["gigafactory.dev/job-name"] for b in api.bindings(namespace))
        assert by_job == {name: 1 for name in jobs}
        assert all(j["status"]["attempt"] == 1 for j in api.jobs(namespace))


def test_invariant_10_restart_in_the_middle_of_a_burst_loses_and_duplicates_nothing(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace, slotsPerPod=3)
    for i in range(10):
        stubs.StubRunner(api, pod=f"{pool}-{i}", namespace=namespace, factory=pool, slots=3).announce()
    jobs = [f"j{i}" for i in range(40)]  # 30 slots: ten must wait
    env = {"GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "60"}
    creator = threading.Thread(target=lambda: [api.create_job(namespace, name) for name in jobs])
    with stubs.operators(kubeconfig, tmp_path, **env) as (first,):
        wait_for(first.ready, timeout=15, message="operator ready")
        creator.start()
        wait_for(lambda: len(api.bindings(namespace)) >= 3, timeout=15, message="some bound")
        first.kill()  # while jobs are still being created and bound
        killed_at = len(api.bindings(namespace))
    creator.join(30)
    assert killed_at < 30, "the burst was over before the crash; the test proves nothing"
    with stubs.operators(kubeconfig, tmp_path, **env):
        def settled():
            items = api.jobs(namespace)
            bound = [j for j in items if (j.get("status") or {}).get("phase") == "Bound"]
            waiting = [j for j in items if scheduled(j) and scheduled(j)["reason"] == "Unschedulable"]
            return len(bound) == 30 and len(waiting) == 10 and len(api.bindings(namespace)) == 30
        wait_for(settled, timeout=20, message="30 bound, 10 explained")
        bound = [j["metadata"]["name"] for j in api.jobs(namespace) if j["status"].get("phase") == "Bound"]
        _assert_each_job_bound_once(api, namespace, bound, slots_per_pod=3)


def test_invariant_8_an_idle_fleet_costs_no_writes_and_renewals_rewrite_nothing(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool)
    runner.announce()
    api.create_job(namespace, "runs")
    api.create_job(namespace, "waits", priority=0)
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="60"):
        def settled():
            jobs = {j["metadata"]["name"]: j for j in api.jobs(namespace)}
            factory = api.call("get", kubeclient.FACTORIES, pool)
            return (len(api.bindings(namespace)) == 1 and all(scheduled(j) for j in jobs.values())
                    and (factory.get("status") or {}).get("slotsUsed") == 1)
        wait_for(settled, timeout=15, message="one bound, one explained, factory status written")

        def versions():
            rvs = {j["metadata"]["name"]: j["metadata"]["resourceVersion"] for j in api.jobs(namespace)}
            rvs["factory"] = api.call("get", kubeclient.FACTORIES, pool)["metadata"]["resourceVersion"]
            return rvs

        before = versions()
        lease = api.call("get", kubeclient.LEASES, f"{pool}-0", namespace=namespace)
        for _ in range(3):  # heartbeat renewals, as a runner sends them
            lease = api.call("patch", kubeclient.LEASES, f"{pool}-0", leases.renew_patch(
                moment=leases.now(), resource_version=lease["metadata"]["resourceVersion"]), namespace=namespace)
        # A barrier instead of a window: a job created after the renewals is explained only once the
        # operator has taken in what came before it (the renewals wake no cycle: tests/unit/binding/
        # test_controllers.py), so any write the renewals caused would be there by then.
        api.create_job(namespace, "barrier", priority=0)
        wait_for(lambda: scheduled(api.job(namespace, "barrier")), timeout=15, message="the barrier job explained")
        after = versions()
        assert {name: after[name] for name in before} == before


def test_a_pod_whose_heartbeat_lapses_takes_no_jobs_and_its_factory_goes_offline(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool)
    runner.announce(duration_seconds=3)
    # The pod lives (renews every second) until the operator has seen it ready, however long that takes here...
    with runner.alive() as die, stubs.operators(kubeconfig, tmp_path):
        wait_for(lambda: (api.call("get", kubeclient.FACTORIES, pool).get("status") or {}).get("phase") == "Ready",
                 timeout=10, message="factory ready")
        die()  # ...then it dies.
        # No renewal comes: the operator notices at the expiry instant, without any new event.
        wait_for(lambda: (api.call("get", kubeclient.FACTORIES, pool).get("status") or {}).get("phase") == "Offline",
                 timeout=stubs.within(3), message="factory offline")
        api.create_job(namespace, "nowhere")
        condition = wait_for(lambda: scheduled(api.job(namespace, "nowhere")), timeout=10, message="explanation")
        assert condition["message"] == "0/1 factory pods fit: 1 heartbeat stale"


def test_a_failed_attempt_backs_off_then_binds_again(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool)
    runner.announce()
    api.create_job(namespace, "flaky", retry={"maxAttempts": 2, "backoff": {"initialSeconds": 1, "maxSeconds": 1}})
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="60"):
        runner.claim(wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding"))
        runner.report(namespace, "flaky", outcome="AgentFailed", exitCode=3)
        status = wait_for(lambda: (s := api.job(namespace, "flaky")["status"]).get("attempts") and s, timeout=10, message="the attempt folded")
        assert status["attempts"][0]["exitCode"] == 3
        # Backing off — or, on a loaded machine, already past the 1 s backoff when the status is read.
        assert (status["phase"] == "Pending" and status.get("requeueAt")) or status.get("attempt") == 2, status
        # The end of the backoff wakes the scheduler by itself (no event announces it).
        wait_for(lambda: api.job(namespace, "flaky")["status"].get("attempt") == 2 and phase(api, namespace, "flaky") == "Bound",
                 timeout=10, message="second attempt bound")
        second = lambda: next((b for b in runner.bindings() if b["metadata"]["annotations"]["gigafactory.dev/attempt"] == "2"), None)  # noqa: E731
        runner.claim(wait_for(second, timeout=10, message="second binding"))
        runner.report(namespace, "flaky", outcome="AgentFailed", exitCode=3)
        wait_for(lambda: phase(api, namespace, "flaky") == "Failed", timeout=10, message="attempts exhausted")
        failed = next(c for c in api.job(namespace, "flaky")["status"]["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "AttemptsExhausted"


def test_invariant_2_after_a_crash_between_the_bind_writes_the_restarted_operator_restores_the_lease(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runner = stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool)
    runner.announce()
    api.create_job(namespace, "half")
    env = {"GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "60"}
    with stubs.operators(kubeconfig, tmp_path, **env) as (first,):
        lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
        first.kill()
    # What a crash after the status patch and before the Lease leaves behind: a bound job, no Lease.
    api.call("delete", kubeclient.LEASES, lease["metadata"]["name"], namespace=namespace)
    with stubs.operators(kubeconfig, tmp_path, **env):
        restored = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="lease restored")
        assert restored["metadata"]["name"] == lease["metadata"]["name"]
        runner.claim(restored)  # the runner can go on as if nothing happened
        assert phase(api, namespace, "half") == "Running"
        assert api.job(namespace, "half")["status"]["attempt"] == 1


def test_fleet_churn_does_not_rewrite_waiting_jobs_until_their_explanation_is_due(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    for i in range(2):
        stubs.StubRunner(api, pod=f"{pool}-{i}", namespace=namespace, factory=pool).announce()
    for name in ("a", "b", "w0", "w1", "w2"):
        api.create_job(namespace, name)
    env = {"GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "60", "GIGAFACTORY_EXPLANATION_REFRESH_SECONDS": "4"}
    with stubs.operators(kubeconfig, tmp_path, **env):
        def waiting():
            jobs = {j["metadata"]["name"]: j for j in api.jobs(namespace)}
            rest = [j for j in jobs.values() if (j.get("status") or {}).get("phase") != "Bound"]
            return len(rest) == 3 and all(scheduled(j) for j in rest) and rest
        rest = wait_for(waiting, timeout=15, message="two bound, three explained")
        assert {scheduled(j)["message"] for j in rest} == {"0/2 factory pods fit: 2 full"}
        before = {j["metadata"]["name"]: j["metadata"]["resourceVersion"] for j in rest}

        # A pod goes away: only the counts change ("0/1 … 1 full"), so nothing is rewritten yet.
        api.call("delete", kubeclient.LEASES, f"{pool}-1", namespace=namespace)
        wait_for(lambda: (api.call("get", kubeclient.FACTORIES, pool).get("status") or {}).get("readyPods") == 1,
                 timeout=10, message="the cycle saw the pod go")
        # (not at once: the counts wait for the refresh, tests/unit/scheduling: pod-went-stale-counts-wait)
        assert {j["metadata"]["name"]: j["metadata"]["resourceVersion"] for j in api.jobs(namespace) if j["metadata"]["name"] in before} == before

        # Once the message is old enough, a timer (no event comes) brings the counts up to date.
        def refreshed():
            return {scheduled(api.job(namespace, name))["message"] for name in before} == {"0/1 factory pods fit: 1 full"}
        wait_for(refreshed, timeout=15, message="counts refreshed")


def test_a_started_operator_recalls_each_factorys_record_from_the_jobs_attempts(api, kubeconfig, namespace, tmp_path) -> None:
    steady, flaky = stubs.unique("steady"), stubs.unique("flaky")
    for name in (steady, flaky):
        api.create_factory(name, namespace)
        stubs.StubRunner(api, pod=f"{name}-0", namespace=namespace, factory=name).announce()
    # History written before this operator started: finished jobs and how their attempts ended.
    for name, outcome in ((steady, "Succeeded"), (flaky, "AgentFailed")):
        job = api.create_job(namespace, f"old-{name}")
        attempts = [{"attempt": n, "factory": name, "pod": f"{name}-0", "outcome": outcome, "counted": True,
                     "finishedAt": f"2026-11-24T10:0{n}:00Z"} for n in range(1, 5)]
        api.call("patch", kubeclient.AGENTJOBS, job["metadata"]["name"], {"status": {"phase": "Failed" if outcome != "Succeeded" else "Succeeded",
                 "attempt": 4, "attempts": attempts}}, namespace=namespace, subresource="status")
    api.create_job(namespace, "new")
    with stubs.operators(kubeconfig, tmp_path):
        wait_for(lambda: phase(api, namespace, "new") == "Bound", timeout=15, message="new job bound")
        assignment = api.job(namespace, "new")["status"]["assignment"]
        assert assignment["factory"] == steady
        assert assignment["scores"]["SuccessRate"] > 50  # 50: a factory with no known record


def test_a_binding_nobody_claims_moves_to_another_pod(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    for i in range(2):
        stubs.StubRunner(api, pod=f"{pool}-{i}", namespace=namespace, factory=pool).announce()
    api.create_job(namespace, "moves")
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="2"):  # neither stub claims
        first = wait_for(lambda: (s := api.job(namespace, "moves").get("status") or {}).get("assignment") and s["assignment"]["pod"],
                         timeout=15, message="first binding")

        def rebound():
            status = api.job(namespace, "moves").get("status") or {}
            return status.get("attempt") == 2 and status.get("phase") == "Bound" and status
        status = wait_for(rebound, timeout=stubs.within(2), message="rebind after claim timeout")
        assert status["attempts"][0]["pod"] == first and status["attempts"][0]["reason"] == "ClaimTimeout"
        assert status["assignment"]["pod"] != first


def test_invariant_1_a_stale_runners_late_report_changes_nothing(api, kubeconfig, namespace, tmp_path) -> None:
    pool = stubs.unique("pool")
    api.create_factory(pool, namespace)
    runners = {f"{pool}-{i}": stubs.StubRunner(api, pod=f"{pool}-{i}", namespace=namespace, factory=pool) for i in range(2)}
    for runner in runners.values():
        runner.announce()
    api.create_job(namespace, "fenced")
    with stubs.operators(kubeconfig, tmp_path):  # the default claim timeout: each stub claims when the test says
        first_pod = wait_for(lambda: ((api.job(namespace, "fenced").get("status") or {}).get("assignment") or {}).get("pod"),
                             timeout=15, message="first binding")
        stale = runners[first_pod]
        # The assignment is the bind's first write, the Lease its third: wait for the Lease.
        stale.claim(wait_for(lambda: next(iter(stale.bindings()), None), timeout=10, message="first binding Lease"),
                    duration_seconds=2)  # ...then it hangs and stops renewing
        status = wait_for(lambda: (s := api.job(namespace, "fenced")["status"]).get("attempt") == 2 and s.get("phase") == "Bound" and s,
                          timeout=stubs.within(2), message="rebound after lease expiry")
        current = runners[status["assignment"]["pod"]]
        assert current is not stale

        # The stale runner wakes up and reports its attempt 1 as a success.
        job = api.job(namespace, "fenced")
        late = {"attempt": 1, "pod": stale.pod, "outcome": "Succeeded", "finishedAt": leases.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "result": {"branch": "agent/fenced", "commit": "bad"}}
        api.call("patch", kubeclient.AGENTJOBS, "fenced", {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
                                                           "status": {"report": late}}, namespace=namespace, subresource="status")
        # Not folded (the fencing: tests/unit/binding/test_binding_patches.py, older-attempt); had it
        # been, the current runner's report below would not match and the result would not be "good".
        status = api.job(namespace, "fenced")["status"]
        assert (status["phase"], status["attempt"], status["assignment"]["pod"]) == ("Bound", 2, current.pod)
        assert "result" not in status and [a["reason"] for a in status["attempts"]] == ["LeaseExpired"]

        # The current runner's report goes through as usual.
        current.claim(wait_for(lambda: next(iter(current.bindings()), None), timeout=10, message="second binding Lease"))
        current.report(namespace, "fenced", outcome="Succeeded", result={"branch": "agent/fenced", "commit": "good"})
        wait_for(lambda: phase(api, namespace, "fenced") == "Succeeded", timeout=10, message="current report folded")
        assert api.job(namespace, "fenced")["status"]["result"]["commit"] == "good"


def test_invariant_2_a_lease_whose_deletion_failed_after_the_fold_goes_at_its_expiry(api, kubeconfig, namespace, tmp_path) -> None:
    """A fold writes the job's final status, then deletes the binding Lease. If that deletion fails
    (an API error, the operator killed between the two writes) the job is already terminal while
    its Lease is still there; the Lease's expiry timer removes it. So "no binding Lease left" holds
    only once that timing has passed (the chaos harness waits for it: Config.settle_seconds)."""
    runner = stubs.one_runner(api, namespace, "pool")
    api.create_job(namespace, "done")
    with stubs.operators(kubeconfig, tmp_path):
        lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
        runner.claim(lease)
        runner.report(namespace, "done", outcome="Succeeded", result={"branch": "agent/done", "commit": "abc"})
        wait_for(lambda: phase(api, namespace, "done") == "Succeeded" and not runner.bindings(), timeout=10, message="fold")
        # What a failed deletion leaves: the Lease as the runner last renewed it (a 3 s Lease, just renewed).
        binding = leases.parse_binding(lease)
        duration = 3
        left = leases.build_binding_lease(
            job_namespace=namespace, job_name="done", job_uid=binding.job_uid, attempt=binding.attempt, factory=binding.factory,
            pod=runner.pod, pod_namespace=namespace, claim_timeout_seconds=duration, moment=leases.now())
        api.call("create", kubeclient.LEASES, left, namespace=namespace)
        assert runner.bindings(), "the Lease is there while it has not run out: a check at once sees it"
        wait_for(lambda: not runner.bindings(), timeout=stubs.within(duration), message="the stale Lease removed at its expiry")
        status = api.job(namespace, "done")["status"]
        assert status["phase"] == "Succeeded" and [a["outcome"] for a in status["attempts"]] == ["Succeeded"]
