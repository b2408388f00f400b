"""Fault injection in the embedded API server, and the client that survives it (issue: chaos)."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from gigafactory import kubeclient
from localcluster import faults

# Fault injection is a switch of the embedded API server.
pytestmark = pytest.mark.embedded_only


@pytest.fixture()
def server(local_cluster, namespace):
    """The embedded server; its faults are reset before the namespace (set up first) is deleted."""
    yield local_cluster
    local_cluster.local.server.faults = faults.NoFaults()


def http(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(server.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def test_faults_are_off_by_default_and_switched_over_http(server, namespace) -> None:
    assert http(server, "GET", "/_gigafactory/faults")[2]["rate"] == 0.0
    assert http(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps")[0] == 200
    code, _, policy = http(server, "PUT", "/_gigafactory/faults", {"rate": 1.0, "kinds": ["throttle"], "verbs": ["list"]})
    assert code == 200 and policy["kinds"] == ["throttle"]
    code, headers, status = http(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert (code, headers["Retry-After"], status["reason"], status["kind"]) == (429, "1", "TooManyRequests", "Status")
    assert http(server, "GET", "/api")[0] == 200  # discovery is never faulted
    assert http(server, "GET", "/_gigafactory/faults")[2]["injected"] == {"throttle": 1}
    http(server, "PUT", "/_gigafactory/faults", {"rate": 0})
    assert http(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps")[0] == 200
    code, _, status = http(server, "PUT", "/_gigafactory/faults", {"rate": 0.5, "kinds": ["meteor"]})
    assert code == 400 and "unknown fault kinds ['meteor']" in status["message"]


@pytest.mark.parametrize("kind, code, reason, retry_after", [
    ("error", 500, "InternalError", None),
    ("unavailable", 503, "ServiceUnavailable", "1"),
    ("conflict", 409, "Conflict", None),
    ("throttle", 429, "TooManyRequests", "1"),
])
def test_each_error_kind_answers_as_kube_apiserver_does(server, namespace, kind, code, reason, retry_after) -> None:
    server.local.server.faults = faults.FaultPolicy(rate=1.0, kinds=(kind,))
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    got, headers, status = http(server, "POST", f"/api/v1/namespaces/{namespace}/configmaps", body)
    assert (got, status["reason"], status["code"], headers.get("Retry-After")) == (code, reason, code, retry_after)
    if kind == "conflict":  # a conflict only on writes: reads pass
        assert http(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps")[0] == 200


def test_slow_requests_go_through_and_a_seed_makes_runs_repeatable(server, namespace) -> None:
    server.local.server.faults = faults.FaultPolicy(rate=1.0, kinds=("slow",), delay=0.05)
    assert http(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps")[0] == 200
    assert server.local.server.faults.counts == {"slow": 1}

    def outcomes(seed: int) -> list[int]:
        server.local.server.faults = faults.FaultPolicy(rate=0.5, seed=seed, kinds=("error", "throttle"))
        return [http(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps")[0] for _ in range(30)]

    first = outcomes(3)
    assert first == outcomes(3) and {200, 500, 429} <= set(first)


async def test_the_client_retries_what_says_retry_after_and_raises_the_rest(server, kubeconfig, namespace) -> None:
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
        server.local.server.faults = faults.FaultPolicy(rate=0.5, seed=5, kinds=("throttle", "unavailable"))
        kubeclient.MAX_RETRY_AFTER, saved = 0.01, kubeclient.MAX_RETRY_AFTER  # keep the test quick
        try:
            for i in range(20):
                await client.create(kubeclient.CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}},
                                    namespace=namespace)
        finally:
            kubeclient.MAX_RETRY_AFTER = saved
        assert server.local.server.faults.counts["throttle"] + server.local.server.faults.counts["unavailable"] > 0
        server.local.server.faults = faults.FaultPolicy(rate=1.0, kinds=("error",))
        with pytest.raises(kubeclient.ApiError) as caught:
            await client.get(kubeclient.CONFIGMAPS, "c0", namespace=namespace)
        assert caught.value.status == 500
        server.local.server.faults = faults.NoFaults()
        items, _ = await client.list(kubeclient.CONFIGMAPS, namespace=namespace)
        assert len(items) == 20  # each create landed exactly once


async def test_an_informer_under_dropped_watches_and_503s_ends_with_the_servers_truth(server, kubeconfig, namespace) -> None:
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
        informer = kubeclient.Informer(client, kubeclient.CONFIGMAPS, namespace=namespace, retry_delay=0.05)
        async with informer.running():
            server.local.server.faults = faults.FaultPolicy(rate=0.3, seed=9, kinds=("drop", "unavailable"), resources=("configmaps",))
            kubeclient.MAX_RETRY_AFTER, saved = 0.01, kubeclient.MAX_RETRY_AFTER
            try:
                for i in range(30):
                    await client.create(kubeclient.CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"i{i}"},
                                                                "data": {"n": "0"}}, namespace=namespace)
                for i in range(0, 30, 2):
                    await client.patch(kubeclient.CONFIGMAPS, f"i{i}", {"data": {"n": "1"}}, namespace=namespace)
                for i in range(0, 30, 3):
                    await client.delete(kubeclient.CONFIGMAPS, f"i{i}", namespace=namespace)
            finally:
                kubeclient.MAX_RETRY_AFTER = saved
            assert server.local.server.faults.counts["drop"] > 0
            server.local.server.faults = faults.NoFaults()
            items, _ = await client.list(kubeclient.CONFIGMAPS, namespace=namespace)
            truth = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}
            for _ in range(200):
                seen = {k[1]: v["metadata"]["resourceVersion"] for k, v in informer.cache.items()}
                if seen == truth:
                    break
                await asyncio.sleep(0.05)
            assert seen == truth
