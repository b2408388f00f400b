"""Invariant 2 after downtime: a binding Lease whose job was deleted while no operator ran is removed."""


from gigafactory import leases
from tests.conftest import wait_for
from tests.integration.operator import stubs


def test_invariant_2_an_orphaned_binding_lease_is_removed_on_start(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    orphan = leases.build_binding_lease(
        job_namespace=namespace, job_name="deleted-meanwhile", job_uid="no-such-uid", attempt=1, factory="f",
        pod="p", pod_namespace=namespace, claim_timeout_seconds=3600, moment=leases.now())
    api.call("create", stubs.kubeclient.LEASES, orphan, namespace=namespace)
    live_job = api.create_job(namespace, "alive")  # a job that exists keeps whatever it holds
    assert live_job["metadata"]["uid"]
    with stubs.operators(kubeconfig, tmp_path):
        wait_for(lambda: not api.bindings(namespace), timeout=15, message="the orphaned binding Lease stayed")
