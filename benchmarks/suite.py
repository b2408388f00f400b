"""The benchmark suite: every figure of docs/performance.md, side by side in one run.

    .venv/bin/python benchmarks/suite.py                 # all scenarios, full sizes (about 12 minutes)
    .venv/bin/python benchmarks/suite.py --quick         # tiny sizes, seconds: the CI smoke run
    .venv/bin/python benchmarks/suite.py --only raw,bind --json out.json
    .venv/bin/python benchmarks/suite.py --kubeconfig FILE   # a real cluster (CRDs installed), API scenarios only

Scenarios (each prints a table row set and returns its figures):
  raw      the API server's create+patch pairs/s from one client (16 in flight): the physical limit
  bind     2,000 pending AgentJobs applied at once, 50 pods with enough slots, stub runners that claim
           at once: binds/s from the first apply to the last bind, and its ratio to `raw`
  naive    the same load through a minimal kopf operator binding in a per-object create handler
  latency  apply → Bound at a steady 20 jobs/s: p50, p99
  cycle    one scheduling cycle in-process (no API): 1k×100, 5k×500, 10k×1k jobs × pods, CPU time
  idle     10 runner pods renewing heartbeats, no jobs, N minutes: requests by verb at the server
  memory   operator RSS with 10,000 AgentJobs present (9,000 finished)
  e2e      real runners (5 × 4 slots), the script agent, real git: jobs/s and where the time goes

A kubeconfig is used only when given with --kubeconfig; $KUBECONFIG is never read.
"""

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from gigafactory import constants, devmode, kubeclient, leases  # noqa: E402
from gigafactory.scheduling import cycle, plugins  # noqa: E402

import benchmarks.cycle as cycle_bench  # noqa: E402

NS = "bench"
RUNNERS = "bench-runners"


@dataclasses.dataclass
class Sizes:
    raw_pairs: int = 2000
    bind_jobs: int = 2000
    bind_pods: int = 50
    latency_rate: float = 20.0
    latency_seconds: float = 30.0
    cycle_sizes: tuple[tuple[int, int], ...] = ((1000, 100), (5000, 500), (10000, 1000))
    idle_seconds: float = 300.0
    memory_jobs: int = 10000
    e2e_jobs: int = 200
    e2e_runners: int = 5
    e2e_slots: int = 4


QUICK = Sizes(raw_pairs=100, bind_jobs=100, bind_pods=10, latency_rate=10, latency_seconds=2, cycle_sizes=((1000, 100),),
              idle_seconds=5, memory_jobs=300, e2e_jobs=6, e2e_runners=2, e2e_slots=2)


# --- the API under test -------------------------------------------------------------------------

class Api:
    """The embedded API server (fresh per scenario) or a real cluster's kubeconfig."""

    def __init__(self, kubeconfig: str | None, work: pathlib.Path) -> None:
        self.real = kubeconfig
        self.work = work

    @contextlib.asynccontextmanager
    async def session(self, *, namespaces: tuple[str, ...] = (NS, RUNNERS)) -> AsyncIterator["Session"]:
        server = None
        if self.real:
            kubeconfig = self.real
        else:
            # Its own process, as kube-apiserver is: it gets a core of its own, not a share of ours.
            kubeconfig = str(self.work / f"kubeconfig-{time.monotonic_ns()}")
            server = Process([sys.executable, "-m", "gigafactory.localcluster", "--kubeconfig", kubeconfig, "--crds", str(ROOT / "crds")],
                             {}, self.work / "apiserver.log")
            while not pathlib.Path(kubeconfig).exists():
                if server.proc.poll() is not None:
                    raise RuntimeError(f"the embedded API server did not start; see {self.work / 'apiserver.log'}")
                await asyncio.sleep(0.05)
        client = kubeclient.Client.from_kubeconfig(kubeconfig, max_connections=64)
        suffix = "" if server else f"-{os.getpid()}-{time.monotonic_ns() % 100000}"
        names = {ns: ns + suffix for ns in namespaces}
        for ns in names.values():
            with contextlib.suppress(kubeclient.AlreadyExists):
                await client.create(kubeclient.NAMESPACES, {"metadata": {"name": ns}})
        try:
            yield Session(client, kubeconfig, server, names)
        finally:
            if server is None:
                for ns in names.values():
                    with contextlib.suppress(kubeclient.ApiError):
                        await client.delete(kubeclient.NAMESPACES, ns)
            await client.close()
            if server is not None:
                server.stop()


async def server_counts(client: kubeclient.Client) -> collections.Counter[tuple[str, str]]:
    body = await client.request("GET", "/_gigafactory/requests")
    return collections.Counter({(c["verb"], c["resource"]): c["count"] for c in body.get("counts") or ()})


@dataclasses.dataclass
class Session:
    client: kubeclient.Client
    kubeconfig: str
    server: Any  # the embedded API server's Process, or None for a real cluster
    ns: dict[str, str]

    @property
    def jobs_ns(self) -> str:
        return self.ns[NS]

    @property
    def runners_ns(self) -> str:
        return self.ns[RUNNERS]

    async def requests(self) -> collections.Counter[tuple[str, str]]:
        return await server_counts(self.client) if self.server else collections.Counter()


def job_body(namespace: str, name: str, *, url: str = "https://git.example/app.git") -> dict:
    return {"apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": {"repo": {"url": url}, "task": {"prompt": f"task {name}"}, "agent": {"profile": "script"}}}


async def bounded(coros: list[Awaitable[Any]], limit: int = 32) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def pool(s: Session, *, name: str, pods: int, slots: int, duration: int = 600) -> list[str]:
    await s.client.create(kubeclient.FACTORIES, {
        "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": name},
        "spec": {"agents": ["script"], "slotsPerPod": slots, "subscriptions": ["*"], "namespaces": ["*"]}})
    names = [f"{name}-{i}" for i in range(pods)]
    await bounded([s.client.create(kubeclient.LEASES, leases.build_heartbeat_lease(
        pod=pod, namespace=s.runners_ns, factory=name, slots=slots, agents=["script"], duration_seconds=duration,
        moment=leases.now()), namespace=s.runners_ns) for pod in names])
    return names


class Claimer:
    """Stub runners that claim every binding at once (the runner's claim: Lease, then job status)."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.informer = kubeclient.Informer(s.client, kubeclient.LEASES, namespace=s.runners_ns,
                                            label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_BINDING}", handler=self.see)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.seen: set[str] = set()

    def see(self, event: str, body: dict) -> None:
        binding = leases.parse_binding(body)
        if event != "ADDED" or binding is None or binding.claimed or binding.name in self.seen:
            return
        self.seen.add(binding.name)
        task = asyncio.create_task(self.claim(binding))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Claimer"]:
        """Watch and claim for the duration of the block; claims still in flight at its end are dropped."""
        try:
            async with self.informer.running():
                yield self
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def claim(self, binding: leases.Binding) -> None:
        now = leases.now()
        with contextlib.suppress(kubeclient.ApiError, OSError):  # a claim that fails leaves the job Bound: still a bind
            await self.s.client.patch(kubeclient.LEASES, binding.name, leases.claim_patch(
                pod=binding.pod, duration_seconds=600, moment=now, resource_version=binding.resource_version or ""),
                namespace=binding.namespace)
            await self.s.client.patch(kubeclient.AGENTJOBS, binding.job_name, {"status": {
                "phase": "Running", "assignment": {"claimedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}},
                namespace=binding.job_namespace, subresource="status")


class Watch:
    """When each job was first seen in each phase (client clock)."""

    def __init__(self, s: Session) -> None:
        self.first: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self.informer = kubeclient.Informer(s.client, kubeclient.AGENTJOBS, namespace=s.jobs_ns, handler=self.see)

    def see(self, event: str, body: dict) -> None:
        status = body.get("status") or {}
        phase = status.get("phase") or "Pending"
        marks = self.first[body["metadata"]["name"]]
        marks.setdefault(phase, time.monotonic())
        if status.get("report"):
            marks.setdefault("Reported", time.monotonic())
        if phase in ("Running", "Succeeded", "Failed"):
            marks.setdefault("Bound", time.monotonic())

    def count(self, phase: str) -> int:
        return sum(1 for marks in self.first.values() if phase in marks)

    async def until(self, phase: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count(phase) < n:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: pathlib.Path) -> None:
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT / "operator"), **env},
                                         stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def operator(s: Session, work: pathlib.Path, **env: str) -> AsyncIterator[tuple[Process, int]]:
    port = free_port()
    proc = Process([sys.executable, "-m", "gigafactory.cli.main", "operator", "--kubeconfig", s.kubeconfig],
                   {"GIGAFACTORY_HTTP_PORT": str(port), "GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "600",
                    "GIGAFACTORY_NAMESPACE": s.runners_ns, **env}, work / f"operator-{port}.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                raise RuntimeError(f"the operator did not become ready; see {work}")
            await asyncio.sleep(0.1)
        yield proc, port
    finally:
        proc.stop()


# --- scenarios ------------------------------------------------------------------------------------

async def raw(api: Api, sizes: Sizes) -> dict[str, Any]:
    async with api.session() as s:
        ns = s.jobs_ns

        async def pair(i: int) -> None:
            await s.client.create(kubeclient.CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
                                                          "data": {"i": str(i)}}, namespace=ns)
            await s.client.patch(kubeclient.CONFIGMAPS, f"cm-{i}", {"data": {"patched": "yes"}}, namespace=ns)

        async def job_pair(i: int) -> None:  # what a bind writes: an AgentJob, schema- and CEL-checked
            await s.client.create(kubeclient.AGENTJOBS, job_body(ns, f"raw-{i}"), namespace=ns)
            await s.client.patch(kubeclient.AGENTJOBS, f"raw-{i}", {"status": {"phase": "Bound", "attempt": 1}},
                                 namespace=ns, subresource="status")

        started = time.perf_counter()
        await bounded([pair(i) for i in range(sizes.raw_pairs)], limit=16)
        rate = sizes.raw_pairs / (time.perf_counter() - started)
        started = time.perf_counter()
        await bounded([job_pair(i) for i in range(sizes.raw_pairs)], limit=16)
        job_rate = sizes.raw_pairs / (time.perf_counter() - started)
    return {"pairs": sizes.raw_pairs, "configmap_pairs_per_second": round(rate), "agentjob_pairs_per_second": round(job_rate)}


async def _burst(s: Session, n: int, watch: Watch) -> float:
    started = time.monotonic()
    await bounded([s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, f"j{i}"), namespace=s.jobs_ns) for i in range(n)])
    if not await watch.until("Bound", n, timeout=600):
        raise RuntimeError(f"only {watch.count('Bound')} of {n} jobs bound")
    last = max(marks["Bound"] for marks in watch.first.values() if "Bound" in marks)
    return n / (last - started)


async def bind(api: Api, sizes: Sizes) -> dict[str, Any]:
    slots = -(-sizes.bind_jobs // sizes.bind_pods)
    async with api.session() as s:
        await pool(s, name="pool", pods=sizes.bind_pods, slots=slots)
        claimer, watch = Claimer(s), Watch(s)
        async with claimer.running(), watch.informer.running(), operator(s, api.work) as (proc, port):
            cpu_before = cpu_seconds(proc.proc.pid)
            rate = await _burst(s, sizes.bind_jobs, watch)
            cpu = cpu_seconds(proc.proc.pid) - cpu_before
            cycles = metric(port, "gigafactory_scheduling_cycle_seconds_count")
            writes = sum(n for (verb, _), n in (await s.requests()).items() if verb in ("create", "patch", "update", "delete"))
    return {"jobs": sizes.bind_jobs, "pods": sizes.bind_pods, "slots_per_pod": slots, "binds_per_second": round(rate),
            "operator_cpu_seconds": round(cpu, 2), "cycles": cycles, "writes_per_job": round(writes / sizes.bind_jobs, 1) if writes else "n/a"}


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


NAIVE_OPERATOR = '''
"""A naive peer: kopf, one handler per created AgentJob, binding it to the pod with the most free
slots (an in-memory count) with a status patch and a binding Lease, as a first operator would."""
import asyncio, os, kubernetes, kopf
from gigafactory import leases

kubernetes.config.load_kube_config(config_file=os.environ["BENCH_KUBECONFIG"])
COORD = kubernetes.client.CoordinationV1Api()
PODS = {f"pool-{i}": 0 for i in range(int(os.environ["BENCH_PODS"]))}
SLOTS = int(os.environ["BENCH_SLOTS"])
RUNNERS = os.environ["BENCH_RUNNERS"]

@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = False
    settings.persistence.finalizer = "bench.gigafactory.dev/naive"

@kopf.on.create("gigafactory.dev", "v1alpha1", "agentjobs")
async def bind(body, meta, patch, **_):
    pod = min(PODS, key=PODS.get)
    if PODS[pod] >= SLOTS:
        raise kopf.TemporaryError("no free slot", delay=1)
    PODS[pod] += 1
    lease = leases.build_binding_lease(job_namespace=meta["namespace"], job_name=meta["name"], job_uid=meta["uid"], attempt=1,
                                       factory="pool", pod=pod, pod_namespace=RUNNERS, claim_timeout_seconds=600, moment=leases.now())
    await asyncio.to_thread(COORD.create_namespaced_lease, RUNNERS, lease)
    patch.status["phase"] = "Bound"
    patch.status["attempt"] = 1
    patch.status["assignment"] = {"factory": "pool", "pod": pod, "podNamespace": RUNNERS, "attempt": 1,
                                  "lease": lease["metadata"]["name"], "leaseNamespace": RUNNERS,
                                  "boundAt": leases.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
'''


async def naive(api: Api, sizes: Sizes) -> dict[str, Any]:
    slots = -(-sizes.bind_jobs // sizes.bind_pods)
    script = api.work / "naive_operator.py"
    script.write_text(NAIVE_OPERATOR)
    async with api.session() as s:
        await pool(s, name="pool", pods=sizes.bind_pods, slots=slots)
        claimer, watch = Claimer(s), Watch(s)
        proc = Process([sys.executable, "-m", "kopf", "run", "--standalone", "-A", str(script)],
                       {"BENCH_KUBECONFIG": s.kubeconfig, "KUBECONFIG": s.kubeconfig, "BENCH_PODS": str(sizes.bind_pods),
                        "BENCH_SLOTS": str(slots), "BENCH_RUNNERS": s.runners_ns}, api.work / "naive.log")
        try:
            await asyncio.sleep(3)  # kopf's start-up: discovery, the first list
            async with claimer.running(), watch.informer.running():
                rate = await _burst(s, sizes.bind_jobs, watch)
        finally:
            proc.stop()
    return {"jobs": sizes.bind_jobs, "binds_per_second": round(rate)}


async def latency(api: Api, sizes: Sizes) -> dict[str, Any]:
    n = int(sizes.latency_rate * sizes.latency_seconds)
    async with api.session() as s:
        await pool(s, name="pool", pods=20, slots=max(1, -(-n // 20)))
        claimer, watch = Claimer(s), Watch(s)
        sent: dict[str, float] = {}
        async with claimer.running(), watch.informer.running(), operator(s, api.work):
            started = time.monotonic()
            tasks = []
            for i in range(n):
                await asyncio.sleep(max(0.0, started + i / sizes.latency_rate - time.monotonic()))
                sent[f"l{i}"] = time.monotonic()
                tasks.append(asyncio.create_task(s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, f"l{i}"), namespace=s.jobs_ns)))
            await asyncio.gather(*tasks)
            if not await watch.until("Bound", n, timeout=120):
                raise RuntimeError(f"only {watch.count('Bound')} of {n} bound")
    waits = sorted((watch.first[name]["Bound"] - at) * 1000 for name, at in sent.items())
    return {"jobs": n, "rate_per_second": sizes.latency_rate, "p50_ms": round(statistics.median(waits), 1),
            "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1), "max_ms": round(waits[-1], 1)}


async def cycle_cpu(api: Api, sizes: Sizes) -> dict[str, Any]:
    profile = plugins.default_profile()
    figures: dict[str, Any] = {}
    for jobs, pods in sizes.cycle_sizes:
        for label, slots in (("scarce", 2), ("roomy", 16)):
            snap = cycle_bench.build(jobs, pods, slots=slots)
            started = time.process_time()
            cycle.run(snap, profile)
            figures[f"{label}_{jobs}x{pods}_ms"] = round((time.process_time() - started) * 1000)
    return figures


async def idle(api: Api, sizes: Sizes) -> dict[str, Any]:
    if api.real:
        return {"skipped": "needs the embedded server's request counters"}
    async with api.session() as s:
        names = await pool(s, name="pool", pods=10, slots=2, duration=15)
        versions: dict[str, str] = {}

        async def renew_forever() -> None:  # what 10 runners do: renew every third of 15 s
            while True:
                for pod in names:
                    lease = await s.client.patch(kubeclient.LEASES, pod, {"spec": {"renewTime": leases.format_micro_time(leases.now())}},
                                                 namespace=s.runners_ns)
                    versions[pod] = lease["metadata"]["resourceVersion"]
                await asyncio.sleep(5)

        renewer = asyncio.create_task(renew_forever())
        try:
            async with operator(s, api.work):
                await asyncio.sleep(2)  # the start-up writes (factory status) are not idle cost
                before = await s.requests()
                await asyncio.sleep(sizes.idle_seconds)
                after = await s.requests()
        finally:
            renewer.cancel()
    spent = after - before
    renewals = sum(n for (verb, resource), n in spent.items() if verb == "patch" and resource.startswith("leases"))
    watches = sum(n for (verb, _), n in spent.items() if verb == "watch")
    other = {f"{verb} {resource}": n for (verb, resource), n in spent.items()
             if not (verb == "patch" and resource.startswith("leases")) and verb != "watch"}
    return {"seconds": sizes.idle_seconds, "heartbeat_renewals": renewals, "watch_requests": watches,
            "other_requests": sum(other.values()), "other": other or "none"}


async def memory(api: Api, sizes: Sizes) -> dict[str, Any]:
    if api.real:
        return {"skipped": "fills the API server with 10,000 jobs: embedded only"}
    async with api.session() as s:
        await pool(s, name="pool", pods=10, slots=2)
        finished = int(sizes.memory_jobs * 0.9)
        stamp = "2026-11-24T12:00:00Z"

        async def one(i: int) -> None:
            name = f"m{i:05d}"
            await s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, name), namespace=s.jobs_ns)
            if i < finished:
                status = {"phase": "Succeeded", "attempt": 1, "startTime": stamp, "completionTime": stamp,
                          "attempts": [{"attempt": 1, "factory": "pool", "pod": "pool-0", "outcome": "Succeeded",
                                        "startedAt": stamp, "finishedAt": stamp, "message": "pushed agent/x at 0123456789ab"}],
                          "result": {"branch": f"agent/{name}", "commit": "0" * 40, "changedFiles": ["a.py", "b.py"],
                                     "summary": "Did the thing. " * 10}}
                await s.client.patch(kubeclient.AGENTJOBS, name, {"status": status}, namespace=s.jobs_ns, subresource="status")

        await bounded([one(i) for i in range(sizes.memory_jobs)])
        async with operator(s, api.work) as (proc, _):
            await asyncio.sleep(5)  # a few cycles and the explanations of the waiting jobs
            rss = next(int(line.split()[1]) for line in pathlib.Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
    return {"jobs": sizes.memory_jobs, "finished": finished, "operator_rss_mb": round(rss / 1024)}


async def e2e(api: Api, sizes: Sizes) -> dict[str, Any]:
    if api.real:
        return {"skipped": "runs local runner processes against the embedded server"}
    remote = devmode.make_sample_repo(api.work / "e2e-repos")
    async with api.session() as s:
        await s.client.create(kubeclient.FACTORIES, {
            "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": "pool"},
            "spec": {"agents": ["script"], "slotsPerPod": sizes.e2e_slots, "subscriptions": ["*"], "namespaces": ["*"]}})
        runners = [Process([sys.executable, "-m", "gigafactory.cli.main", "runner", "--kubeconfig", s.kubeconfig], {
            "GIGAFACTORY_RUNNER_POD_NAME": f"pool-{i}", "GIGAFACTORY_RUNNER_NAMESPACE": s.runners_ns, "GIGAFACTORY_RUNNER_FACTORY": "pool",
            "GIGAFACTORY_RUNNER_SLOTS": str(sizes.e2e_slots), "GIGAFACTORY_RUNNER_WORK_DIR": str(api.work / f"e2e-runner-{i}"),
            "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true"}, api.work / f"e2e-runner-{i}.log") for i in range(sizes.e2e_runners)]
        watch = Watch(s)
        try:
            async with watch.informer.running(), operator(s, api.work):
                while len((await s.client.list(kubeclient.LEASES, namespace=s.runners_ns,
                                               label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_HEARTBEAT}"))[0]) < len(runners):
                    await asyncio.sleep(0.2)
                started = time.monotonic()
                created: dict[str, float] = {}
                for i in range(sizes.e2e_jobs):
                    created[f"e{i}"] = time.monotonic()
                    await s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, f"e{i}", url=str(remote)), namespace=s.jobs_ns)
                if not await watch.until("Succeeded", sizes.e2e_jobs, timeout=900):
                    raise RuntimeError(f"only {watch.count('Succeeded')} of {sizes.e2e_jobs} succeeded")
                elapsed = max(m["Succeeded"] for m in watch.first.values()) - started
        finally:
            for runner in runners:
                runner.stop()

    def mean(a: str, b: str) -> float:
        return round(statistics.mean(m[b] - (created[n] if a == "created" else m[a]) for n, m in watch.first.items()
                                     if b in m and (a == "created" or a in m)) * 1000)

    phases = runner_phases([api.work / f"e2e-runner-{i}.log" for i in range(sizes.e2e_runners)])
    return {"jobs": sizes.e2e_jobs, "runners": f"{sizes.e2e_runners} × {sizes.e2e_slots} slots",
            "jobs_per_second": round(sizes.e2e_jobs / elapsed, 1), **phases,
            "mean_ms_created_to_bound": mean("created", "Bound"), "mean_ms_bound_to_running": mean("Bound", "Running"),
            "mean_ms_running_to_reported": mean("Running", "Reported"), "mean_ms_reported_to_succeeded": mean("Reported", "Succeeded")}


def runner_phases(logs: list[pathlib.Path]) -> dict[str, int]:
    """Where a runner's time goes per job, from its log's millisecond timestamps: claim → the agent's
    first line (fetch, worktree), → its last line (the agent), → the report (push, describe, API)."""
    import datetime
    import re

    marks: dict[str, dict[str, float]] = collections.defaultdict(dict)
    patterns = {"claimed": re.compile(r"claimed (\S+) attempt (\d+)"), "agent": re.compile(r"\[(\S+)#(\d+)\] script agent: task"),
                "done": re.compile(r"\[(\S+)#(\d+)\] script agent: committed"), "reported": re.compile(r" (\S+) attempt (\d+): Succeeded")}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
            for kind, pattern in patterns.items():
                found = pattern.search(line)
                if found:
                    at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    marks[f"{found.group(1)}#{found.group(2)}"][kind] = at
    steps = {"mean_ms_runner_prepare_git": ("claimed", "agent"), "mean_ms_runner_agent": ("agent", "done"),
             "mean_ms_runner_push_and_report": ("done", "reported")}
    out = {}
    for name, (a, b) in steps.items():
        spans = [m[b] - m[a] for m in marks.values() if a in m and b in m]
        if spans:
            out[name] = round(statistics.mean(spans) * 1000)
    return out


SCENARIOS: dict[str, Callable[[Api, Sizes], Awaitable[dict[str, Any]]]] = {
    "raw": raw, "bind": bind, "naive": naive, "latency": latency, "cycle": cycle_cpu, "idle": idle, "memory": memory, "e2e": e2e,
}


def derived(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pairs = results.get("raw", {}).get("agentjob_pairs_per_second")
    ours = results.get("bind", {}).get("binds_per_second")
    peer = results.get("naive", {}).get("binds_per_second")
    if pairs and ours:
        out["bind_rate_over_agentjob_pairs"] = round(ours / pairs, 2)
    if ours and peer:
        out["bind_rate_over_naive_kopf"] = round(ours / peer, 1)
    return out


def print_table(results: dict[str, dict[str, Any]]) -> None:
    width = max((len(f"{s} {k}") for s, figures in results.items() for k in figures), default=10)
    print(f"| {'scenario / figure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for scenario, figures in results.items():
        for key, value in figures.items():
            print(f"| {f'{scenario} {key}'.ljust(width)} | {value} |")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CI smoke run")
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures to this file")
    parser.add_argument("--kubeconfig", help="a real cluster (its CRDs installed); never taken from $KUBECONFIG")
    parser.add_argument("--idle-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    sizes = dataclasses.replace(QUICK) if args.quick else Sizes()
    if args.idle_minutes is not None:
        sizes.idle_seconds = args.idle_minutes * 60
    chosen = [name for name in (args.only.split(",") if args.only else SCENARIOS) if name]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    random.seed(1)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gigafactory-bench-") as tmp:
        api = Api(args.kubeconfig, pathlib.Path(tmp))
        for name in chosen:
            began = time.monotonic()
            try:
                results[name] = await SCENARIOS[name](api, sizes)
            except Exception as exc:  # one scenario's failure is a figure too; the others still run
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results[name]["scenario_seconds"] = round(time.monotonic() - began, 1)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    results["derived"] = derived(results)
    print()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in figures for figures in results.values()) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
