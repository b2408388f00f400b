"""The scaler's Events (binding/scaler.py): every change of a runner Deployment's replicas is
announced, including the first one, when the Deployment is created above zero."""

import asyncio

from gigafactory import kubeclient
from gigafactory.binding import scaler
from gigafactory.scheduling import scaling

FACTORY = {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "Factory", "metadata": {"name": "pool", "uid": "u-1"},
           "spec": {"agents": ["script"], "slotsPerPod": 2, "scaling": {"minReplicas": 0, "maxReplicas": 4}}}


class Recorder:
    """The two calls the scaler makes, recorded."""

    def __init__(self) -> None:
        self.created: list[tuple[object, dict]] = []

    async def create(self, resource, body, *, namespace=None):
        self.created.append((resource, body))
        return body

    async def patch(self, resource, name, body, *, namespace=None, **_):
        return body


def reasons(client: Recorder) -> list[str]:
    return [body["reason"] for resource, body in client.created if resource == kubeclient.EVENTS]


def test_a_deployment_created_above_zero_is_announced_as_a_scale_up() -> None:
    # An operator that first sees the factory with jobs already waiting (it started late, or the jobs
    # came with the factory) creates the Deployment with replicas > 0 at once: still a ScaledUp.
    client = Recorder()
    s = scaler.Scaler(client, namespace="runners", profile=None)  # type: ignore[arg-type]
    asyncio.run(s._create(FACTORY, scaling.Decision(replicas=3, reason="6 jobs waiting")))
    assert [r for r, _ in client.created] == [kubeclient.DEPLOYMENTS, kubeclient.EVENTS]
    assert reasons(client) == ["ScaledUp"]
    event = client.created[1][1]
    assert event["message"].startswith("0 → 3 runners") and event["involvedObject"]["name"] == "pool"


def test_a_deployment_created_at_zero_announces_nothing() -> None:
    client = Recorder()
    s = scaler.Scaler(client, namespace="runners", profile=None)  # type: ignore[arg-type]
    asyncio.run(s._create(FACTORY, scaling.Decision(replicas=0, reason="no demand")))
    assert reasons(client) == []


def test_scaling_an_existing_deployment_is_announced_both_ways() -> None:
    client = Recorder()
    s = scaler.Scaler(client, namespace="runners", profile=None)  # type: ignore[arg-type]
    asyncio.run(s._scale("pool", FACTORY, 0, scaling.Decision(replicas=2, reason="demand")))
    asyncio.run(s._scale("pool", FACTORY, 2, scaling.Decision(replicas=0, reason="idle")))
    assert reasons(client) == ["ScaledUp", "ScaledDown"]
