"""End to end: a burst of jobs against the embedded API server and a real operator process.

Run: .venv/bin/python benchmarks/burst.py [jobs] [pods] [slots]
Prints how long the operator took from the first create to every job bound (or explained).
"""

import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "localcluster" / "src")]  # both packages, also when not installed

from gigafactory import constants, kubeclient, leases  # noqa: E402
import localcluster  # noqa: E402


async def main(jobs: int, pods: int, slots: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, localcluster.running(crd_dirs=[ROOT / "crds"]) as server:
        kubeconfig = str(server.write_kubeconfig(pathlib.Path(tmp) / "kubeconfig"))
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            await client.create(kubeclient.NAMESPACES, {"metadata": {"name": "bench"}})
            await client.create(kubeclient.FACTORIES, {
                "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": "pool"},
                "spec": {"agents": ["script"], "slotsPerPod": slots}})
            for i in range(pods):
                await client.create(kubeclient.LEASES, leases.build_heartbeat_lease(
                    pod=f"pool-{i}", namespace="bench", factory="pool", slots=slots, agents=["script"],
                    duration_seconds=600, moment=leases.now()), namespace="bench")
            env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "GIGAFACTORY_HTTP_PORT": "0",
                   "GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "600", "GIGAFACTORY_RUNNER_NAMESPACES": "bench"}
            proc = subprocess.Popen([sys.executable, "-m", "gigafactory.cli.main", "operator", "--kubeconfig", kubeconfig],
                                    env=env, stderr=subprocess.DEVNULL)
            try:
                await asyncio.sleep(2)  # let it start and sync
                started = time.monotonic()
                semaphore = asyncio.Semaphore(32)

                async def create(i: int) -> None:
                    async with semaphore:
                        await client.create(kubeclient.AGENTJOBS, {
                            "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
                            "metadata": {"name": f"j{i}", "namespace": "bench"},
                            "spec": {"repo": {"url": "https://git.example/app.git"}, "task": {"prompt": "p"},
                                     "agent": {"profile": "script"}}}, namespace="bench")

                await asyncio.gather(*(create(i) for i in range(jobs)))
                created = time.monotonic() - started
                expected_bound = min(jobs, pods * slots)
                all_bound = None
                while True:
                    items, _ = await client.list(kubeclient.AGENTJOBS, namespace="bench")
                    bound = sum(1 for j in items if (j.get("status") or {}).get("phase") == "Bound")
                    explained = sum(1 for j in items if any(c.get("reason") == "Unschedulable" for c in (j.get("status") or {}).get("conditions") or ()))
                    if bound >= expected_bound and all_bound is None:
                        all_bound = time.monotonic() - started
                    if bound >= expected_bound and explained >= jobs - expected_bound:
                        break
                    if time.monotonic() - started > 300:
                        print(f"gave up: {bound} bound, {explained} explained")
                        break
                    await asyncio.sleep(0.2)
                total = time.monotonic() - started
                print(f"{jobs} jobs, {pods} pods × {slots} slots: created in {created:.1f}s, "
                      f"{bound} bound after {all_bound or total:.1f}s, {explained} explained after {total:.1f}s")
            finally:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] + [1000, 100, 5][len(sys.argv) - 1:]
    asyncio.run(main(*args[:3]))
