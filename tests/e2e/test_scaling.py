"""On-demand factories end to end in dev mode: a factory at zero, 20 jobs arrive, runners start,
every job succeeds, the pool returns to zero after its delay, and no running job was interrupted."""

import asyncio
import os
import pathlib
import subprocess
import sys
import time

import pytest

from gigafactory import constants, crdgen, devmode, kubeclient
import localcluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("e2e")


async def scale_from_zero(work: pathlib.Path) -> dict:
    server = localcluster.start_in_thread()
    for crd in crdgen.build_crds().values():
        server.call(server.local.apply, crd)
    for ns in ("team", "runners"):
        server.call(server.local.apply, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kubeconfig = server.write_kubeconfig(work / "kubeconfig")
    remote = devmode.make_sample_repo(work / "repos")
    seen: dict[str, set[str]] = {"reasons": set()}
    most = 0
    operator = subprocess.Popen(
        [sys.executable, "-m", "gigafactory.cli.main", "operator", "--kubeconfig", str(kubeconfig)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator"), "GIGAFACTORY_NAMESPACE": "runners", "GIGAFACTORY_HTTP_PORT": "0",
             "GIGAFACTORY_ALLOW_LOCAL_REPOS": "true"}, stdout=open(work / "operator.log", "wb"), stderr=subprocess.STDOUT)
    async with kubeclient.Client.from_kubeconfig(str(kubeconfig)) as client:
        provider = devmode.ProcessProvider(client, namespace="runners", kubeconfig=kubeconfig, work_dir=work)
        task = asyncio.create_task(provider.run())
        try:
            await client.create(kubeclient.FACTORIES, {
                "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": "pool"},
                "spec": {"agents": ["script"], "slotsPerPod": 2, "subscriptions": ["*"], "namespaces": ["*"],
                         "scaling": {"minReplicas": 0, "maxReplicas": 4, "scaleDownDelaySeconds": 3}}})
            await asyncio.sleep(3)
            assert provider.started_total == 0, "a factory at zero started runners without demand"
            for i in range(20):
                await client.create(kubeclient.AGENTJOBS, {
                    "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND, "metadata": {"name": f"j{i}", "namespace": "team"},
                    "spec": {"repo": {"url": str(remote)}, "task": {"prompt": f"task {i}"}, "agent": {"profile": "script"}}}, namespace="team")
            deadline = time.monotonic() + 150
            while True:
                jobs, _ = await client.list(kubeclient.AGENTJOBS, namespace="team")
                for job in jobs:
                    for condition in (job.get("status") or {}).get("conditions") or ():
                        seen["reasons"].add(condition.get("reason"))
                most = max(most, sum(1 for procs in provider.processes.values() for p in procs.values() if p.returncode is None))
                if all((j.get("status") or {}).get("phase") == "Succeeded" for j in jobs) and len(jobs) == 20:
                    break
                assert time.monotonic() < deadline, [(j["metadata"]["name"], (j.get("status") or {}).get("phase")) for j in jobs]
                await asyncio.sleep(0.2)
            # Back to zero after the delay: the Deployment asks for none and every runner has exited.
            while True:
                deployment = await client.get(kubeclient.DEPLOYMENTS, "pool-runners", namespace="runners")
                alive = [p for procs in provider.processes.values() for p in procs.values() if p.returncode is None]
                if deployment["spec"]["replicas"] == 0 and not alive:
                    break
                assert time.monotonic() < deadline + 60, f"still {deployment['spec']['replicas']} replicas, {len(alive)} runners"
                await asyncio.sleep(0.2)
            factory = await client.get(kubeclient.FACTORIES, "pool")
            events, _ = await client.list(kubeclient.EVENTS, namespace="default")
            return {"jobs": jobs, "started": provider.started_total, "most": most, "reasons": seen["reasons"],
                    "factory": factory, "events": {e.get("reason") for e in events}, "deployment": deployment}
        finally:
            task.cancel()
            await provider.stop()
            operator.terminate()
            operator.wait(15)
            server.stop()


def test_a_factory_at_zero_scales_up_for_20_jobs_and_back_to_zero_without_interrupting_any(tmp_path) -> None:
    outcome = asyncio.run(scale_from_zero(tmp_path))
    assert outcome["started"] >= 2 and outcome["most"] <= 4  # it grew, within maxReplicas
    for job in outcome["jobs"]:
        attempts = job["status"]["attempts"]
        # Never interrupted: exactly one attempt, and it succeeded (no RunnerShutdown, LeaseExpired, Stopped).
        assert [(a["outcome"], a.get("reason", "")) for a in attempts] == [("Succeeded", "")], (job["metadata"]["name"], attempts)
    assert "WaitingForCapacity" in outcome["reasons"]  # waiting on a growing factory is not "unschedulable"
    assert {"ScaledUp", "ScaledDown"} <= outcome["events"]
    scaling = outcome["factory"]["status"]["scaling"]
    assert scaling["desiredReplicas"] == 0 and scaling["reason"]
    owner = outcome["deployment"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Factory", "pool")
