"""HA: two operator replicas with leader election — one works, one stands by and takes over."""

import time
import urllib.request

import pytest

from gigafactory import kubeclient
from tests.conftest import wait_for
from tests.integration.operator import stubs

pytestmark = pytest.mark.xdist_group("operator")


def leading(proc: stubs.OperatorProcess) -> bool:
    if proc.port is None:  # not serving yet
        return False
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=2).read().decode()
    except OSError:
        return False
    return "gigafactory_leader 1.0" in text


def elected(namespace: str) -> dict[str, str]:
    return {"GIGAFACTORY_LEADER_ELECTION": "true", "GIGAFACTORY_NAMESPACE": namespace}


def test_one_replica_leads_the_standby_takes_over_within_15_s_of_a_crash(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    pool = stubs.unique("ha")
    api.create_factory(pool, namespace, slotsPerPod=8)
    stubs.StubRunner(api, pod=f"{pool}-0", namespace=namespace, factory=pool, slots=8).announce()
    with stubs.operators(kubeconfig, tmp_path, count=2, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="600", **elected(namespace)) as procs:
        wait_for(lambda: sum(map(leading, procs)) == 1 and all(p.ready() for p in procs), timeout=15,
                 message="one leader, both ready")
        leader = next(p for p in procs if leading(p))
        standby = next(p for p in procs if p is not leader)
        lease = api.call("get", kubeclient.LEASES, "gigafactory-operator", namespace=namespace)
        api.create_job(namespace, "before")
        wait_for(lambda: (api.job(namespace, "before").get("status") or {}).get("phase") == "Bound", timeout=10, message="bound")
        # The standby does nothing: every bind so far is the leader's.
        assert "bound" not in standby.logs()

        leader.kill()
        crashed = time.monotonic()
        api.create_job(namespace, "after")
        wait_for(lambda: (api.job(namespace, "after").get("status") or {}).get("phase") == "Bound", timeout=15,
                 message="the standby binds within 15 s of the leader's crash")
        took = time.monotonic() - crashed
        assert leading(standby)
        now = api.call("get", kubeclient.LEASES, "gigafactory-operator", namespace=namespace)
        assert now["spec"]["holderIdentity"] != lease["spec"]["holderIdentity"]
        assert now["spec"]["leaseTransitions"] == lease["spec"]["leaseTransitions"] + 1
        print(f"failover after a crash: {took:.1f} s")


def test_a_leader_that_stops_cleanly_hands_over_at_once(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    with stubs.operators(kubeconfig, tmp_path, count=2, **elected(namespace)) as procs:
        wait_for(lambda: sum(map(leading, procs)) == 1, timeout=15, message="one leader")
        leader = next(p for p in procs if leading(p))
        standby = next(p for p in procs if p is not leader)
        before = api.call("get", kubeclient.LEASES, "gigafactory-operator", namespace=namespace)["spec"]["holderIdentity"]
        leader.stop()
        assert leader.process.returncode == 0
        # Released, not expired: far sooner than the 8 s lease.
        wait_for(lambda: leading(standby), timeout=4, message="the standby leads after a clean hand-over")
        lease = api.call("get", kubeclient.LEASES, "gigafactory-operator", namespace=namespace)
        assert lease["spec"]["holderIdentity"] not in (None, before)
