"""The undo of an expired binding trusts the Lease itself, not a cached copy that a cut watch left behind."""

import dataclasses
import datetime
import pathlib

import pytest

from gigafactory import constants, kubeclient, leases
from gigafactory.binding import binder

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _crds(install_crds) -> None:
    install_crds(ROOT / "crds")


async def _running_job_and_lease(client, namespace: str, *, pushed: str | None = None) -> tuple[dict, leases.Binding]:
    job = await client.create(kubeclient.AGENTJOBS, {
        "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND, "metadata": {"name": "j", "namespace": namespace},
        "spec": {"repo": {"url": "https://git.example/a.git"}, "task": {"prompt": "x"}, "agent": {"profile": "script"}}})
    now = leases.now()
    lease_body = leases.build_binding_lease(job_namespace=namespace, job_name="j", job_uid=job["metadata"]["uid"], attempt=1,
                                            factory="f", pod="p", pod_namespace=namespace, claim_timeout_seconds=30, moment=now)
    lease = await client.create(kubeclient.LEASES, lease_body, namespace=namespace)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.patch(kubeclient.AGENTJOBS, "j", {"status": {"phase": "Running", "attempt": 1, "assignment": {
        "factory": "f", "pod": "p", "podNamespace": namespace, "attempt": 1, "lease": lease["metadata"]["name"],
        "leaseNamespace": namespace, "boundAt": stamp, "claimedAt": stamp}}}, namespace=namespace, subresource="status")
    lease = await client.patch(kubeclient.LEASES, lease["metadata"]["name"], leases.claim_patch(
        pod="p", duration_seconds=30, moment=now, resource_version=lease["metadata"]["resourceVersion"]), namespace=namespace)
    if pushed:
        lease = await client.patch(kubeclient.LEASES, lease["metadata"]["name"], leases.pushed_patch(
            branch="agent/j", commit=pushed, resource_version=lease["metadata"]["resourceVersion"]), namespace=namespace)
    return job, leases.parse_binding(lease)


async def test_a_live_lease_is_not_undone_on_a_stale_cached_copy(kubeconfig, namespace) -> None:
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
        _, live = await _running_job_and_lease(client, namespace)
        # What a lagging informer shows: the Lease as bound, unclaimed, long expired.
        stale = dataclasses.replace(live, claimed=False, expires_at=leases.now() - datetime.timedelta(seconds=60))
        assert not await binder.undo(client, binding=stale, reason="ClaimTimeout", message="m", check_lease=True)
        job = await client.get(kubeclient.AGENTJOBS, "j", namespace=namespace)
        assert job["status"]["phase"] == "Running" and not job["status"].get("attempts")
        await client.get(kubeclient.LEASES, live.name, namespace=namespace)  # still there


async def test_an_expired_lease_is_undone_with_what_it_announced(kubeconfig, namespace) -> None:
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
        _, live = await _running_job_and_lease(client, namespace, pushed="a" * 40)
        # Expire it for real: renewTime far in the past.
        old = (leases.now() - datetime.timedelta(seconds=120))
        await client.patch(kubeclient.LEASES, live.name, {"spec": {"renewTime": leases.format_micro_time(old)}}, namespace=namespace)
        stale = dataclasses.replace(live, pushed=None, claimed=False)  # the cache had missed the claim and the announcement
        assert await binder.undo(client, binding=stale, reason="ClaimTimeout", message="m", check_lease=True)
        record = (await client.get(kubeclient.AGENTJOBS, "j", namespace=namespace))["status"]["attempts"][-1]
        assert (record["reason"], record["pushed"]) == ("LeaseExpired", {"branch": "agent/j", "commit": "a" * 40})
        with pytest.raises(kubeclient.NotFound):
            await client.get(kubeclient.LEASES, live.name, namespace=namespace)
