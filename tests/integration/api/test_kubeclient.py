"""The async client against a real HTTP API server: typed errors, preconditions, paging, the informer."""

import asyncio
import pathlib

import pytest

from gigafactory import kubeclient

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _cm(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


@pytest.fixture()
async def client(kubeconfig):
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as c:
        yield c


async def test_crud_and_typed_errors(client, namespace) -> None:
    created = await client.create(kubeclient.CONFIGMAPS, _cm("a"), namespace=namespace)
    with pytest.raises(kubeclient.AlreadyExists):
        await client.create(kubeclient.CONFIGMAPS, _cm("a"), namespace=namespace)
    stale = created["metadata"]["resourceVersion"]
    await client.patch(kubeclient.CONFIGMAPS, "a", {"data": {"k": "w"}}, namespace=namespace)
    # A write carrying the resourceVersion it read loses to a newer write: the precondition that fences binds.
    with pytest.raises(kubeclient.Conflict):
        await client.patch(kubeclient.CONFIGMAPS, "a", {"metadata": {"resourceVersion": stale}, "data": {"k": "x"}}, namespace=namespace)
    assert (await client.get(kubeclient.CONFIGMAPS, "a", namespace=namespace))["data"] == {"k": "w"}
    await client.delete(kubeclient.CONFIGMAPS, "a", namespace=namespace)
    with pytest.raises(kubeclient.NotFound):
        await client.get(kubeclient.CONFIGMAPS, "a", namespace=namespace)
    assert await client.delete(kubeclient.CONFIGMAPS, "a", namespace=namespace) is None  # idempotent
    with pytest.raises(kubeclient.NotFound):
        await client.delete(kubeclient.CONFIGMAPS, "a", namespace=namespace, missing_ok=False)


async def test_invalid_custom_resource_raises_invalid(client, namespace, install_crds) -> None:
    install_crds(ROOT / "crds")
    body = {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob", "metadata": {"name": "j"},
            "spec": {"priority": 5000, "repo": {"url": "https://x/y.git"}, "task": {"prompt": "p"}, "agent": {"profile": "script"}}}
    with pytest.raises(kubeclient.Invalid) as info:
        await client.create(kubeclient.AGENTJOBS, body, namespace=namespace)
    assert "spec.priority" in info.value.message


async def test_list_pages_through_and_filters_by_label(client, namespace) -> None:
    await asyncio.gather(*(client.create(kubeclient.CONFIGMAPS, _cm(f"c{i}", parity=str(i % 2)), namespace=namespace) for i in range(7)))
    items, version = await client.list(kubeclient.CONFIGMAPS, namespace=namespace, page_size=2)
    assert sorted(i["metadata"]["name"] for i in items if i["metadata"]["name"].startswith("c")) == [f"c{i}" for i in range(7)]
    assert all(i["kind"] == "ConfigMap" for i in items) and version
    odd, _ = await client.list(kubeclient.CONFIGMAPS, namespace=namespace, label_selector="parity=1")
    assert sorted(i["metadata"]["name"] for i in odd) == ["c1", "c3", "c5"]


async def test_informer_keeps_its_cache_current(client, namespace) -> None:
    await client.create(kubeclient.CONFIGMAPS, _cm("before", app="x"), namespace=namespace)
    seen: list[tuple[str, str]] = []
    informer = kubeclient.Informer(
        client, kubeclient.CONFIGMAPS, namespace=namespace, label_selector="app=x",
        handler=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
    )
    async with informer.running():
        assert (namespace, "before") in informer.cache
        await client.create(kubeclient.CONFIGMAPS, _cm("after", app="x"), namespace=namespace)
        await client.create(kubeclient.CONFIGMAPS, _cm("other", app="y"), namespace=namespace)
        await client.delete(kubeclient.CONFIGMAPS, "before", namespace=namespace)

        async def settled() -> None:
            while ("DELETED", "before") not in seen or (namespace, "after") not in informer.cache:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(settled(), timeout=10)
    assert set(informer.cache) == {(namespace, "after")}
    assert ("ADDED", "after") in seen and all(name != "other" for _, name in seen)
