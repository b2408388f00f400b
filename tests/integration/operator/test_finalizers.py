"""Finalizers (SPEC invariant 6): a deleted AgentJob goes only after its binding is released and its
cleanup ran, also when its factory is gone; a deleted Factory drains before it goes (its finalizer is
kopf's, removed when kopf's delete handler returns: factorykopf.py), also one enrolled before kopf owned
it, and never by a standby replica."""

import json

import git
import pytest

from gigafactory import kubeclient, leases
from tests.conftest import wait_for
from tests.gitrepos import commit_file, make_remote
from tests.integration.operator import stubs

pytestmark = pytest.mark.xdist_group("operator")

FINALIZER = "gigafactory.dev/cleanup"
DRAIN = "gigafactory.dev/drain"  # a Factory's: kopf's finalizer, under the name the operator gave it before kopf did


phase = stubs.phase


def factory_meta(api, name) -> dict | None:
    found = api.call("list", kubeclient.FACTORIES, field_selector=f"metadata.name={name}")[0]
    return found[0]["metadata"] if found else None


def exists(api, namespace, name) -> bool:
    try:
        api.job(namespace, name)
        return True
    except kubeclient.NotFound:
        return False


def delete_job(api, namespace, name) -> None:
    api.call("delete", kubeclient.AGENTJOBS, name, namespace=namespace)


def running_job(api, namespace, runner, name, **spec):
    """A job bound to `runner` and claimed by it."""
    api.create_job(namespace, name, **spec)
    lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
    runner.claim(lease)
    return lease


def test_invariant_6_a_deleted_running_job_waits_for_its_runner_then_goes(api, kubeconfig, namespace, tmp_path) -> None:
    runner = stubs.one_runner(api, namespace, "fin")
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_STOP_GRACE_SECONDS="60"):
        lease = running_job(api, namespace, runner, "doomed")
        assert FINALIZER in api.job(namespace, "doomed")["metadata"]["finalizers"]
        delete_job(api, namespace, "doomed")
        # The runner is asked to stop; the job stays (terminating) until it has let the binding go.
        stop = wait_for(lambda: (runner.bindings() or [{}])[0].get("metadata", {}).get("annotations", {}).get("gigafactory.dev/stop"),
                        timeout=10, message="stop request")
        assert stop == "Deleted"
        assert api.job(namespace, "doomed")["metadata"].get("deletionTimestamp")
        runner.report(namespace, "doomed", outcome="Stopped", reason="Deleted", message="stopped: job deleted")
        wait_for(lambda: not exists(api, namespace, "doomed"), timeout=10, message="job gone after the runner's report")
        assert not [b for b in api.bindings(namespace) if b["metadata"]["name"] == lease["metadata"]["name"]]


def test_invariant_6_a_runner_that_never_acknowledges_holds_the_deletion_only_for_the_stop_grace(api, kubeconfig, namespace, tmp_path) -> None:
    runner = stubs.one_runner(api, namespace, "fin")
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_STOP_GRACE_SECONDS="2"):
        running_job(api, namespace, runner, "stuck")
        delete_job(api, namespace, "stuck")
        wait_for(lambda: (runner.bindings() or [{}])[0].get("metadata", {}).get("annotations", {}).get("gigafactory.dev/stop"),
                 timeout=10, message="stop request")
        assert exists(api, namespace, "stuck")
        # No report comes: after the grace the operator drops the Lease itself and lets the job go.
        wait_for(lambda: not exists(api, namespace, "stuck"), timeout=15, message="job gone after the grace")
        assert runner.bindings() == []


def test_invariant_6_a_deleted_job_goes_even_when_its_factory_and_runner_are_gone(api, kubeconfig, namespace, tmp_path) -> None:
    factory = stubs.unique("fin")
    api.create_factory(factory, namespace, drainGraceSeconds=0)
    runner = stubs.StubRunner(api, pod=f"{factory}-0", namespace=namespace, factory=factory)
    runner.announce()
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_STOP_GRACE_SECONDS="600"):
        running_job(api, namespace, runner, "orphaned", retry={"maxUncountedRetries": 0, "maxAttempts": 1})
        # The pod dies after its claim: its heartbeat is gone. (A heartbeat of a few seconds lapsing
        # instead raced the operator's start-up on a busy machine: no pod ready, no binding at all.)
        api.call("delete", kubeclient.LEASES, f"{factory}-0", namespace=namespace)
        delete_job(api, namespace, "orphaned")
        # Nobody to wait for: no stop grace of 600 s, the job goes at once.
        wait_for(lambda: not exists(api, namespace, "orphaned"), timeout=10, message="job gone without its runner")
        assert runner.bindings() == []


@pytest.mark.parametrize("death", ["heartbeat deleted", "heartbeat lapses"])
def test_invariant_6_a_deleted_job_waiting_for_its_runner_goes_once_the_runner_dies(api, kubeconfig, namespace, tmp_path, death) -> None:
    """The operator saw the deletion while the runner was alive and asked it to stop (a grace of 600 s);
    then the runner dies. Nobody is left to wait for: the job goes at once, not after the grace."""
    factory = stubs.unique("fin")
    api.create_factory(factory, namespace)
    runner = stubs.StubRunner(api, pod=f"{factory}-0", namespace=namespace, factory=factory)
    heartbeat = 3
    runner.announce(duration_seconds=heartbeat)
    with runner.alive() as die, stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_STOP_GRACE_SECONDS="600"):
        running_job(api, namespace, runner, "waiting")
        delete_job(api, namespace, "waiting")
        wait_for(lambda: (runner.bindings() or [{}])[0].get("metadata", {}).get("annotations", {}).get("gigafactory.dev/stop"),
                 timeout=10, message="stop request")
        die()
        if death == "heartbeat deleted":
            api.call("delete", kubeclient.LEASES, f"{factory}-0", namespace=namespace)
        wait_for(lambda: not exists(api, namespace, "waiting"), timeout=stubs.within(heartbeat),
                 message="job gone once its runner died")
        assert runner.bindings() == []


def test_a_job_that_never_bound_carries_no_finalizer_and_goes_at_once(api, kubeconfig, namespace, tmp_path) -> None:
    with stubs.operators(kubeconfig, tmp_path):
        api.create_job(namespace, "unplaced", targetFactory="nowhere")
        wait_for(lambda: (api.job(namespace, "unplaced").get("status") or {}).get("conditions"), timeout=10, message="explained")
        assert not api.job(namespace, "unplaced")["metadata"].get("finalizers")
        delete_job(api, namespace, "unplaced")
        assert not exists(api, namespace, "unplaced")


@pytest.fixture()
def remote(tmp_path):
    """A bare remote with a branch the 'job' pushed, and the commit it pushed."""
    bare = git.Repo(make_remote(tmp_path))
    work = git.Repo.clone_from(bare.git_dir, tmp_path / "work")
    commit_file(tmp_path / "work", "agent-work")
    work.git.push("origin", "HEAD:refs/heads/agent/done")
    return bare, work, work.head.commit.hexsha


def finished_job(api, namespace, runner, name, *, url, commit, policy):
    running_job(api, namespace, runner, name, repo={"url": url}, cleanup={"deleteBranch": policy})
    runner.report(namespace, name, outcome="Succeeded", message="pushed",
                  result={"branch": "agent/done", "commit": commit, "summary": "done"})
    wait_for(lambda: phase(api, namespace, name) == "Succeeded", timeout=10, message=f"{name} succeeded")


def branches(bare) -> set[str]:
    return {h.name for h in bare.heads}


@pytest.mark.parametrize("policy, kept", [("Always", False), ("Never", True)])
def test_delete_branch_policy_is_applied_when_the_job_is_deleted(api, kubeconfig, namespace, tmp_path, remote, policy, kept) -> None:
    bare, _, commit = remote
    runner = stubs.one_runner(api, namespace, "fin")
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_ALLOW_LOCAL_REPOS="true"):
        finished_job(api, namespace, runner, "done", url=f"file://{bare.git_dir}", commit=commit, policy=policy)
        delete_job(api, namespace, "done")
        wait_for(lambda: not exists(api, namespace, "done"), timeout=15, message="job gone")
    assert ("agent/done" in branches(bare)) is kept
    assert "main" in branches(bare)


def test_a_branch_moved_since_the_job_pushed_it_is_kept_and_the_event_says_so(api, kubeconfig, namespace, tmp_path, remote) -> None:
    bare, work, commit = remote
    commit_file(tmp_path / "work", "human-work")
    work.git.push("origin", "HEAD:refs/heads/agent/done")
    runner = stubs.one_runner(api, namespace, "fin")
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_ALLOW_LOCAL_REPOS="true"):
        finished_job(api, namespace, runner, "done", url=f"file://{bare.git_dir}", commit=commit, policy="Always")
        delete_job(api, namespace, "done")
        wait_for(lambda: not exists(api, namespace, "done"), timeout=15, message="job gone")
    assert bare.heads["agent/done"].commit.hexsha == work.head.commit.hexsha
    events = api.call("list", kubeclient.EVENTS, namespace=namespace)[0]
    kept = [e for e in events if e.get("reason") == "BranchKept"]
    assert kept and "agent/done" in kept[0]["message"]


def test_a_deleted_factory_drains_moves_unclaimed_bindings_and_requeues_running_jobs_after_its_grace(
        api, kubeconfig, namespace, tmp_path) -> None:
    old, new = stubs.unique("old"), stubs.unique("new")
    api.create_factory(old, namespace, slotsPerPod=2, drainGraceSeconds=2)
    runner = stubs.StubRunner(api, pod=f"{old}-0", namespace=namespace, factory=old, slots=2)
    runner.announce()
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_STOP_GRACE_SECONDS="60") as operators:
        wait_for(lambda: DRAIN in (api.call("get", kubeclient.FACTORIES, old)["metadata"].get("finalizers") or []),
                 timeout=10, message="drain finalizer on the factory")
        running_job(api, namespace, runner, "long")
        api.create_job(namespace, "unclaimed")
        wait_for(lambda: phase(api, namespace, "unclaimed") == "Bound", timeout=10, message="second bind")
        api.call("delete", kubeclient.FACTORIES, old)
        # A new factory appears; the unclaimed binding moves there at once, the running job stays for the grace.
        api.create_factory(new, namespace)
        stubs.StubRunner(api, pod=f"{new}-0", namespace=namespace, factory=new).announce()
        wait_for(lambda: (api.job(namespace, "unclaimed")["status"].get("assignment") or {}).get("factory") == new,
                 timeout=10, message="unclaimed binding moved")
        moved = api.job(namespace, "unclaimed")["status"]["attempts"][-1]
        assert (moved["reason"], moved["counted"]) == ("FactoryDeleted", False)
        assert phase(api, namespace, "long") == "Running"
        # The running job holds the factory: kopf's delete handler has not returned, the finalizer stays.
        held = factory_meta(api, old)
        assert held is not None and held.get("deletionTimestamp") and DRAIN in held["finalizers"]
        # After drainGraceSeconds the runner is asked to stop; it reports, the job requeues, the factory goes.
        stop = wait_for(lambda: next((b["metadata"].get("annotations", {}).get("gigafactory.dev/stop") for b in runner.bindings()
                                      if b["metadata"].get("annotations", {}).get("gigafactory.dev/stop")), None),
                        timeout=10, message="drain stop request")
        assert stop == "Drained"
        runner.report(namespace, "long", outcome="Stopped", reason="Drained", message="stopped: factory drained")
        wait_for(lambda: factory_meta(api, old) is None, timeout=10, message="factory gone after the drain")
        # kopf's handler let it go (the operator's loop has no finalizer write for Factories any more).
        assert f'"factory drained", "factory": "{old}"' in operators[0].logs()
        last = wait_for(lambda: (api.job(namespace, "long")["status"].get("attempts") or [None])[-1], timeout=10, message="fold")
        assert (last["outcome"], last["counted"]) == ("Stopped", False)
        # The requeued job waits for a free slot elsewhere (the new pod holds the moved job): nothing lost.
        assert phase(api, namespace, "long") in ("Pending", "Bound")


def test_a_deleted_jobs_log_configmaps_go_with_it(api, kubeconfig, namespace, tmp_path) -> None:
    runner = stubs.one_runner(api, namespace, "fin")
    name = f"gf-log-{runner.pod}-1-abc"
    with stubs.operators(kubeconfig, tmp_path):
        running_job(api, namespace, runner, "logged")
        uid = api.job(namespace, "logged")["metadata"]["uid"]
        # As the runner writes it (runner/running.py save_log): its pod's name prefix, its pod and job as labels.
        log = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"output": "..."},
               "metadata": {"name": name, "namespace": namespace,
                            "labels": {"gigafactory.dev/role": "log", "gigafactory.dev/pod": runner.pod, "gigafactory.dev/job-uid": uid}}}
        api.call("create", kubeclient.CONFIGMAPS, log, namespace=namespace)
        runner.report(namespace, "logged", outcome="AgentFailed", exitCode=1, logRef=f"configmap/{namespace}/{name}")
        wait_for(lambda: (api.job(namespace, "logged").get("status") or {}).get("attempts"), timeout=10, message="folded")
        delete_job(api, namespace, "logged")
        wait_for(lambda: not exists(api, namespace, "logged"), timeout=10, message="job gone")
    assert not api.call("list", kubeclient.CONFIGMAPS, namespace=namespace, field_selector=f"metadata.name={name}")[0]


def test_a_factory_enrolled_before_kopf_owned_its_finalizer_drains_and_goes(api, kubeconfig, namespace, tmp_path) -> None:
    """What an operator from before kopf owned the finalizer left: a Factory carrying gigafactory.dev/drain
    (that operator's own write, no kopf annotation), deleted while no operator ran, a binding still on
    it. kopf knows its finalizer by name alone: the Factory drains and goes, with no migration."""
    old = stubs.unique("legacy")
    api.create_factory(old, namespace, drainGraceSeconds=600)
    version = api.call("get", kubeclient.FACTORIES, old)["metadata"]["resourceVersion"]
    api.call("patch", kubeclient.FACTORIES, old, {"metadata": {"finalizers": [DRAIN], "resourceVersion": version}})
    runner = stubs.StubRunner(api, pod=f"{old}-0", namespace=namespace, factory=old)
    runner.announce()
    no_claim_timeout = {"GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "600"}  # the binding must outlive the pause
    with stubs.operators(kubeconfig, tmp_path, **no_claim_timeout):
        api.create_job(namespace, "legacy")
        wait_for(lambda: phase(api, namespace, "legacy") == "Bound", timeout=10, message="bound")
    meta = factory_meta(api, old)
    assert meta is not None and meta["finalizers"] == [DRAIN]
    # The new operator ran over it and wrote nothing of kopf's there (no diff base, no progress).
    assert not [key for key in meta.get("annotations") or {} if "kopf" in key]
    api.call("delete", kubeclient.FACTORIES, old)
    assert (factory_meta(api, old) or {}).get("deletionTimestamp")  # held by the finalizer: no operator runs
    with stubs.operators(kubeconfig, tmp_path, **no_claim_timeout) as (operator,):
        wait_for(lambda: factory_meta(api, old) is None, timeout=15, message="the old factory drained and gone")
        assert f'"factory drained", "factory": "{old}"' in operator.logs()
    undone = api.job(namespace, "legacy")["status"]["attempts"][-1]
    assert (undone["reason"], undone["counted"]) == ("FactoryDeleted", False)
    assert runner.bindings() == []


def test_a_standby_replica_never_lets_a_deleted_factory_go(api, kubeconfig, namespace, tmp_path) -> None:
    """Every replica runs kopf; only the leader drains. A standby's delete handler waits for leadership
    (bounded: the drain's end and a stop grace) and asks kopf to call again: the finalizer stays, also
    for a Factory without any binding, which a leader would let go at once, and also when the standby
    stops meanwhile (a rolling update). When a standby comes to lead, its waiting handler drains at once."""
    leader_lease = stubs.unique("leader")
    api.call("create", kubeclient.LEASES, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": leader_lease, "namespace": namespace},
        "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 600, "renewTime": leases.format_micro_time(leases.now())},
    }, namespace=namespace)
    pool = stubs.unique("standby")
    api.create_factory(pool, namespace, drainGraceSeconds=0)
    elected = {"GIGAFACTORY_LEADER_ELECTION": "true", "GIGAFACTORY_NAMESPACE": namespace, "GIGAFACTORY_LEADER_LEASE_NAME": leader_lease,
               "GIGAFACTORY_STOP_GRACE_SECONDS": "1"}
    with stubs.operators(kubeconfig, tmp_path, **elected) as (standby,):
        wait_for(lambda: DRAIN in ((factory_meta(api, pool) or {}).get("finalizers") or []), timeout=10,
                 message="the standby's kopf enrols the factory too")
        api.call("delete", kubeclient.FACTORIES, pool)
        wait_for(lambda: standby.logs().count("failed temporarily: standing by") >= 2, timeout=30,
                 message="the standby's handler, called again, still standing by")
        meta = factory_meta(api, pool)
        assert meta is not None and DRAIN in meta["finalizers"]
        assert json.loads(meta["annotations"]["kopf.gigafactory.dev/drain"])["retries"] >= 1
        # Stopped while its handler waits (called a third time): kopf cancels it; the finalizer stays.
        wait_for(lambda: standby.logs().count("standing by, the leader drains it") >= 3, timeout=30, message="a third call")
        standby.stop()
        assert standby.process is not None and standby.process.returncode == 0
    meta = factory_meta(api, pool)
    assert meta is not None and DRAIN in meta["finalizers"]
    assert "factory drained" not in standby.logs()
    with stubs.operators(kubeconfig, tmp_path, **elected) as (standby,):
        wait_for(lambda: "standing by, the leader drains it" in standby.logs(), timeout=10, message="the handler waits")
        # The other replica hands the Lease back: this one leads, and its waiting handler drains.
        api.call("patch", kubeclient.LEASES, leader_lease, {"spec": {"holderIdentity": None}}, namespace=namespace)
        wait_for(lambda: factory_meta(api, pool) is None, timeout=20, message="the new leader let the factory go")
        assert f'"factory drained", "factory": "{pool}"' in standby.logs()
