"""How to feed the scheduler's cache: kopf `@kopf.on.event` handlers or gigafactory.kubeclient.Informer.

Run: .venv/bin/python benchmarks/feed.py [jobs]
Starts the embedded API server, one watcher process of each kind (it only records the uids it sees:
no writes, kopf's posting of events off), then creates `jobs` AgentJobs with 32 in flight, and prints
when the watcher had seen them all and the CPU time it spent on the burst.
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

from gigafactory import constants, kubeclient  # noqa: E402
import localcluster  # noqa: E402

COMMON = '''
import os, resource, time
N, OUT = int(os.environ["N"]), os.environ["OUT"]
seen = set()

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

def ready():
    open(OUT + ".ready", "w").write(str(cpu()))

def see(uid):
    seen.add(uid)
    if len(seen) == N:
        open(OUT, "w").write(f"{time.time()} {cpu()}")
        return True
    return False
'''

KOPF = COMMON + '''
import kopf

@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = False
    ready()

@kopf.on.event("gigafactory.dev", "v1alpha1", "agentjobs")
def on_job(body, **_):
    see(body["metadata"]["uid"])
'''

INFORMER = COMMON + '''
import asyncio
from gigafactory import kubeclient

async def main():
    done = asyncio.Event()
    async with kubeclient.Client.from_kubeconfig(os.environ["KUBECONFIG"]) as client:
        informer = kubeclient.Informer(client, kubeclient.AGENTJOBS, handler=lambda event, body: see(body["metadata"]["uid"]) and done.set())
        async with informer.running():
            await informer.synced.wait()
            ready()
            await done.wait()

asyncio.run(main())
'''


async def measure(kind: str, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, localcluster.running(crd_dirs=[ROOT / "crds"]) as server:
        kubeconfig = str(server.write_kubeconfig(pathlib.Path(tmp) / "kubeconfig"))
        script = pathlib.Path(tmp) / f"{kind}_feed.py"
        script.write_text(KOPF if kind == "kopf" else INFORMER)
        out = pathlib.Path(tmp) / "out"
        env = {**os.environ, "KUBECONFIG": kubeconfig, "N": str(jobs), "OUT": str(out), "PYTHONPATH": str(ROOT / "operator")}
        command = [sys.executable, "-m", "kopf", "run", "--standalone", "-A", str(script)] if kind == "kopf" else [sys.executable, str(script)]
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            await client.create(kubeclient.NAMESPACES, {"metadata": {"name": "bench"}})
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                ready = pathlib.Path(str(out) + ".ready")
                while not (ready.exists() and ready.read_text()):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1)  # let the watch settle
                cpu_before = float(ready.read_text())
                semaphore = asyncio.Semaphore(32)

                async def create(i: int) -> None:
                    async with semaphore:
                        await client.create(kubeclient.AGENTJOBS, {
                            "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
                            "metadata": {"name": f"j{i}", "namespace": "bench"},
                            "spec": {"repo": {"url": "https://git.example/app.git"}, "task": {"prompt": "p"},
                                     "agent": {"profile": "script"}}}, namespace="bench")

                started = time.time()
                await asyncio.gather(*(create(i) for i in range(jobs)))
                created = time.time()
                while not (out.exists() and out.read_text()):
                    await asyncio.sleep(0.02)
                seen_at, cpu_after = map(float, out.read_text().split())
            finally:
                proc.terminate()
                proc.wait(15)
        print(f"{kind:>8}: {jobs} creates in {created - started:.2f}s, all seen {seen_at - started:.2f}s after the first "
              f"({max(0.0, seen_at - created):.2f}s after the last); watcher CPU {cpu_after - cpu_before:.2f}s")


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    for kind in ("informer", "kopf"):
        asyncio.run(measure(kind, jobs))


if __name__ == "__main__":
    main()
