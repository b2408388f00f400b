"""The benchmark suite: every figure of docs/performance.md, side by side in one run.

    .venv/bin/python benchmarks/suite.py                 # all scenarios, full sizes (about 12 minutes)
    .venv/bin/python benchmarks/suite.py --quick         # tiny sizes, seconds: the CI smoke run
    .venv/bin/python benchmarks/suite.py --only raw,bind --json out.json
    .venv/bin/python benchmarks/suite.py --kubeconfig FILE   # a real cluster: every scenario
    python -m tests.controlplane --kubeconfig /tmp/real.kc -- .venv/bin/python benchmarks/suite.py --kubeconfig /tmp/real.kc

Scenarios (each prints a table row set and returns its figures):
  raw      the API server's create+patch pairs/s from one client (16 in flight): the physical limit
  bind     2,000 pending AgentJobs applied at once, 50 pods with enough slots, stub runners that claim
           at once: binds/s from the first apply to the last bind, and its ratio to `raw`
  naive    the same load through a minimal kopf operator binding in a per-object create handler
  latency  apply → Bound at a steady 20 jobs/s: p50, p99
  cycle    one scheduling cycle in-process (no API): 1k×100, 5k×500, 10k×1k jobs × pods, CPU time
  idle     10 runner pods renewing heartbeats, no jobs, N minutes: the operator's requests by verb
  memory   operator RSS with 10,000 AgentJobs present (9,000 finished)
  e2e      real runners (5 × 4 slots), the script agent, real git: jobs/s and where the time goes

With --kubeconfig (a real cluster) every scenario runs too; the differences, each said in its figures:
  - the embedded server is fresh per scenario; on a cluster each scenario gets namespaces and a
    Factory of its own (`<name>-<scenario>-<run>`, labelled bench.gigafactory.dev/run) and removes
    them when it ends, however it ends (failure, Ctrl-C, SIGTERM): its operator stopped, then the
    finalizers left on what it created stripped (gigafactory.dev/cleanup, gigafactory.dev/drain,
    the naive peer's), then jobs, Factory and namespaces deleted, waiting until they are gone
    (bounded). A run first removes what an earlier, killed run left, and installs the CRDs of
    crds/ when they are missing;
  - bind's writes per job: kube-apiserver's apiserver_request_total (every client's) instead of the
    embedded server's counters;
  - idle: the operator talks to the cluster through a counting proxy in the suite, so its figure is
    the operator's requests alone (the embedded server counts at the server);
  - memory is the operator's RSS on either server; the API server's memory is not measured.
Every wait is bounded: a burst that stops binding for 60 s, an operator that exits, or a deadline
ends the scenario with an error saying so, and the next scenario runs.

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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from gigafactory import constants, devmode, kubeclient, leases  # noqa: E402
from gigafactory.runner import sandbox as agent_sandbox  # noqa: E402
from gigafactory.scheduling import cycle, plugins  # noqa: E402

import benchmarks.cycle as cycle_bench  # noqa: E402

NS = "bench"
RUNNERS = "bench-runners"
SUITE_LABEL = "bench.gigafactory.dev/run"  # on every namespace and Factory the suite creates: its run's id
CLEANUP_SECONDS = 180.0  # the longest a scenario's clean-up may take before it gives up, saying what is left


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
    sandbox_starts: int = 100


QUICK = Sizes(raw_pairs=100, bind_jobs=100, bind_pods=10, latency_rate=10, latency_seconds=2, cycle_sizes=((1000, 100),),
              idle_seconds=5, memory_jobs=300, e2e_jobs=6, e2e_runners=2, e2e_slots=2, sandbox_starts=5)


# --- the API under test -------------------------------------------------------------------------

class Api:
    """The embedded API server (fresh per scenario) or a real cluster's kubeconfig.

    On a real cluster every scenario works in namespaces and with a Factory of its own (named after
    the scenario and the run, labelled SUITE_LABEL) and removes them when it ends, however it ends:
    the operator stopped first, then the finalizers it left (gigafactory.dev/cleanup, /drain, the
    naive peer's) stripped, then the jobs, factories and namespaces deleted, waiting (bounded) until
    they are gone. `sweep()` removes what an earlier, killed run left behind."""

    def __init__(self, kubeconfig: str | None, work: pathlib.Path) -> None:
        self.real = kubeconfig
        self.work = work
        self.run = f"{os.getpid() % 10000:04d}{int(time.time()) % 10000:04d}"

    @contextlib.asynccontextmanager
    async def session(self, scenario: str, *, namespaces: tuple[str, ...] = (NS, RUNNERS)) -> AsyncIterator["Session"]:
        server = None
        if self.real:
            kubeconfig = self.real
        else:
            # Its own process, as kube-apiserver is: it gets a core of its own, not a share of ours.
            kubeconfig = str(self.work / f"kubeconfig-{time.monotonic_ns()}")
            server = Process([sys.executable, "-m", "localcluster", "--kubeconfig", kubeconfig, "--crds", str(ROOT / "crds")],
                             {}, self.work / "apiserver.log")
            deadline = time.monotonic() + 60
            while not pathlib.Path(kubeconfig).exists():
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"the embedded API server did not start; see {self.work / 'apiserver.log'}")
                await asyncio.sleep(0.05)
        client = kubeclient.Client.from_kubeconfig(kubeconfig, max_connections=64)
        tag = f"{scenario}-{self.run}"
        names = {ns: f"{ns}-{tag}" for ns in namespaces}
        session = Session(client, kubeconfig, server, names, factory=f"bench-{tag}", run=self.run)
        try:
            for ns in names.values():
                await client.create(kubeclient.NAMESPACES, {"metadata": {"name": ns, "labels": {SUITE_LABEL: self.run}}})
            yield session
        finally:
            try:
                if server is None:
                    await cleanup(client, list(names.values()), [session.factory])
            finally:
                await client.close()
                if server is not None:
                    server.stop()

    async def sweep(self) -> list[str]:
        """On a real cluster: remove the namespaces and factories of earlier runs of the suite (an
        interrupted run, a killed one), so that no operator of this run sees their jobs. Returns their names."""
        if not self.real:
            return []
        async with kubeclient.Client.from_kubeconfig(self.real) as client:
            namespaces = [n["metadata"]["name"] for n in (await client.list(kubeclient.NAMESPACES, label_selector=SUITE_LABEL))[0]
                          if n["metadata"].get("labels", {}).get(SUITE_LABEL) != self.run]
            factories = [f["metadata"]["name"] for f in (await client.list(kubeclient.FACTORIES, label_selector=SUITE_LABEL))[0]
                         if f["metadata"].get("labels", {}).get(SUITE_LABEL) != self.run]
            if namespaces or factories:
                await cleanup(client, namespaces, factories)
        return namespaces + factories

    async def ensure_crds(self) -> str:
        """On a real cluster: the CRDs of crds/ installed (when missing) and Established, within 60 s."""
        if not self.real:
            return "embedded"
        import yaml

        installed = []
        async with kubeclient.Client.from_kubeconfig(self.real) as client:
            for path in sorted((ROOT / "crds").glob("*.yaml")):
                body = yaml.safe_load(path.read_text())
                name = body["metadata"]["name"]
                try:
                    await client.get(CRDS, name)
                except kubeclient.NotFound:
                    await client.create(CRDS, body)
                    installed.append(name)
                deadline = time.monotonic() + 60
                while not any(c.get("type") == "Established" and c.get("status") == "True"
                              for c in ((await client.get(CRDS, name)).get("status") or {}).get("conditions") or ()):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the CRD {name} is not Established after 60 s")
                    await asyncio.sleep(0.2)
        return f"installed {', '.join(installed)}" if installed else "present"


CRDS = kubeclient.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False)


async def cleanup(client: kubeclient.Client, namespaces: list[str], factories: list[str], *, timeout: float = CLEANUP_SECONDS) -> None:
    """Remove what a scenario created, with the operator already stopped: nobody will remove its
    finalizers any more, so strip them (every finalizer: ours and the naive kopf peer's), delete the
    jobs, the factories and the namespaces, and wait until they are gone. Bounded: past `timeout` it
    raises, naming what is left (a later run's sweep() takes it)."""

    async def strip(resource: kubeclient.Resource, name: str, namespace: str | None = None) -> None:
        with contextlib.suppress(kubeclient.NotFound, kubeclient.Conflict):
            await client.patch(resource, name, {"metadata": {"finalizers": None}}, namespace=namespace)

    async def work() -> None:
        for ns in namespaces:
            # All of a namespace's jobs in one call (those with a finalizer only get marked), then the finalizers off.
            with contextlib.suppress(kubeclient.NotFound):
                await client.request("DELETE", kubeclient.AGENTJOBS.path(namespace=ns), body={"kind": "DeleteOptions", "apiVersion": "v1"})
            with contextlib.suppress(kubeclient.NotFound):
                items, _ = await client.list(kubeclient.AGENTJOBS, namespace=ns)
                await bounded([strip(kubeclient.AGENTJOBS, j["metadata"]["name"], ns) for j in items if j["metadata"].get("finalizers")])
        for name in factories:
            await strip(kubeclient.FACTORIES, name)
            await client.delete(kubeclient.FACTORIES, name)
        for ns in namespaces:
            await client.delete(kubeclient.NAMESPACES, ns)
        left = list(namespaces) + list(factories)
        while left:
            left = [ns for ns in namespaces if await exists(kubeclient.NAMESPACES, ns)] + \
                   [f for f in factories if await exists(kubeclient.FACTORIES, f)]
            if left:
                # A namespace's jobs go with it (the namespace controller); one still holding a finalizer would keep it.
                for ns in namespaces:
                    with contextlib.suppress(kubeclient.NotFound):
                        items, _ = await client.list(kubeclient.AGENTJOBS, namespace=ns)
                        await bounded([strip(kubeclient.AGENTJOBS, j["metadata"]["name"], ns) for j in items if j["metadata"].get("finalizers")])
                await asyncio.sleep(0.5)

    async def exists(resource: kubeclient.Resource, name: str) -> bool:
        try:
            await client.get(resource, name)
            return True
        except kubeclient.NotFound:
            return False

    began = time.monotonic()
    print(f"clean-up: namespaces {', '.join(namespaces) or '-'}; factories {', '.join(factories) or '-'}", file=sys.stderr, flush=True)
    try:
        await asyncio.wait_for(work(), timeout)
        print(f"clean-up done in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    except asyncio.TimeoutError:
        raise RuntimeError(f"clean-up unfinished after {timeout:.0f} s: namespaces {namespaces}, factories {factories} "
                           f"may be left (the next run of the suite removes them)") from None


async def server_counts(client: kubeclient.Client) -> collections.Counter[tuple[str, str]]:
    body = await client.request("GET", "/_gigafactory/requests")
    return collections.Counter({(c["verb"], c["resource"]): c["count"] for c in body.get("counts") or ()})


@dataclasses.dataclass
class Session:
    client: kubeclient.Client
    kubeconfig: str
    server: Any  # the embedded API server's Process, or None for a real cluster
    ns: dict[str, str]
    factory: str  # this scenario's Factory (cluster-scoped, so unique per scenario and run)
    run: str

    @property
    def jobs_ns(self) -> str:
        return self.ns[NS]

    @property
    def runners_ns(self) -> str:
        return self.ns[RUNNERS]

    def factory_body(self, slots: int) -> dict:
        return {"apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND,
                "metadata": {"name": self.factory, "labels": {SUITE_LABEL: self.run}},
                "spec": {"agents": ["script"], "slotsPerPod": slots, "subscriptions": ["*"], "namespaces": ["*"]}}

    async def requests(self) -> collections.Counter[tuple[str, str]]:
        """The embedded server's request counters; a real server has none (callers say so)."""
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


async def pool(s: Session, *, pods: int, slots: int, duration: int = 600) -> list[str]:
    """The scenario's Factory and `pods` stub runner pods of it (their heartbeat Leases; no Pods)."""
    await s.client.create(kubeclient.FACTORIES, s.factory_body(slots))
    names = [f"{s.factory}-{i}" for i in range(pods)]
    await bounded([s.client.create(kubeclient.LEASES, leases.build_heartbeat_lease(
        pod=pod, namespace=s.runners_ns, factory=s.factory, slots=slots, agents=["script"], duration_seconds=duration,
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

    async def until(self, phase: str, n: int, timeout: float, *, stall: float = 60.0, processes: tuple["Process", ...] = ()) -> None:
        """Until `n` jobs were seen in `phase`. Never hangs: raises at `timeout`, when no job reached
        the phase for `stall` seconds, or when one of `processes` (the operator, say) exited."""
        deadline = time.monotonic() + timeout
        last, progress = -1, time.monotonic()
        while (count := self.count(phase)) < n:
            now = time.monotonic()
            if count != last:
                last, progress = count, now
            for process in processes:
                if process.proc.poll() is not None:
                    raise RuntimeError(f"{process.name} exited ({process.proc.returncode}) with {count} of {n} jobs {phase}; see {process.log}")
            if now > deadline:
                raise RuntimeError(f"only {count} of {n} jobs {phase} after {timeout:.0f} s")
            if now - progress > stall:
                raise RuntimeError(f"no job became {phase} for {stall:.0f} s: {count} of {n}")
            await asyncio.sleep(0.01)


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: pathlib.Path) -> None:
        self.log = log
        self.name = log.stem
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT / "operator"), **env},
                                         stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_die_with_parent)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the suite dies, even by SIGKILL, so that no operator of a killed run
    goes on binding (and finalizing) jobs of the next one."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def operator(s: Session, work: pathlib.Path, *, kubeconfig: str | None = None, **env: str) -> AsyncIterator[tuple[Process, int]]:
    port = free_port()
    proc = Process([sys.executable, "-m", "gigafactory.cli.main", "operator", "--kubeconfig", kubeconfig or s.kubeconfig],
                   {"GIGAFACTORY_HTTP_PORT": str(port), "GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "600",
                    "GIGAFACTORY_NAMESPACE": s.runners_ns, **env}, work / f"operator-{port}.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-6000:] if proc.log.exists() else ""
                raise RuntimeError(f"the operator did not become ready within 90 s; its log ends:\n{tail}")
            await asyncio.sleep(0.1)
        yield proc, port
    finally:
        proc.stop()


# --- scenarios ------------------------------------------------------------------------------------

async def raw(api: Api, sizes: Sizes) -> dict[str, Any]:
    async with api.session("raw") as s:
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


def burst_timeout(n: int) -> float:
    """Long enough for `n` binds at 4/s (10/s was seen on a real server with the machine's load at 13),
    never less than a minute. A hang is caught sooner: Watch.until's stall limit (60 s without a bind)."""
    return max(60.0, n / 4)


async def _burst(s: Session, n: int, watch: Watch, processes: tuple[Process, ...]) -> float:
    started = time.monotonic()
    await bounded([s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, f"j{i}"), namespace=s.jobs_ns) for i in range(n)])
    await watch.until("Bound", n, timeout=burst_timeout(n), processes=processes)
    last = max(marks["Bound"] for marks in watch.first.values() if "Bound" in marks)
    return n / (last - started)


async def writes(s: Session) -> tuple[int | None, str]:
    """Writes the API server has served so far, and where the count comes from: the embedded server's
    counters, or kube-apiserver's apiserver_request_total (every client's, the control plane's own
    few included: over a benchmark's seconds they are a handful among thousands)."""
    if s.server:
        return sum(n for (verb, _), n in (await s.requests()).items() if verb in ("create", "patch", "update", "delete")), "embedded server counters"
    async with s.client.open("GET", "/metrics") as response:
        if response.status != 200:
            return None, f"n/a: the server's /metrics answered {response.status}"
        body = await response.text()
    total = 0.0
    for line in body.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, value = line.rsplit(" ", 1)
            verb = labels.split('verb="', 1)[1].split('"', 1)[0] if 'verb="' in labels else ""
            if verb in ("POST", "PUT", "PATCH", "DELETE", "APPLY"):
                total += float(value)
    return int(total), "kube-apiserver apiserver_request_total (all clients)"


async def bind(api: Api, sizes: Sizes) -> dict[str, Any]:
    slots = -(-sizes.bind_jobs // sizes.bind_pods)
    async with api.session("bind") as s:
        await pool(s, pods=sizes.bind_pods, slots=slots)
        claimer, watch = Claimer(s), Watch(s)
        async with claimer.running(), watch.informer.running(), operator(s, api.work) as (proc, port):
            writes_before, _ = await writes(s)
            cpu_before = cpu_seconds(proc.proc.pid)
            rate = await _burst(s, sizes.bind_jobs, watch, (proc,))
            cpu = cpu_seconds(proc.proc.pid) - cpu_before
            cycles = metric(port, "gigafactory_scheduling_cycle_seconds_count")
            writes_after, source = await writes(s)
    return {"jobs": sizes.bind_jobs, "pods": sizes.bind_pods, "slots_per_pod": slots, "binds_per_second": round(rate),
            "operator_cpu_seconds": round(cpu, 2), "cycles": cycles,
            "writes_per_job": round((writes_after - writes_before) / sizes.bind_jobs, 1) if writes_after is not None and writes_before is not None
            else "n/a", "writes_counted_by": source}


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
FACTORY = os.environ["BENCH_FACTORY"]
PODS = {f"{FACTORY}-{i}": 0 for i in range(int(os.environ["BENCH_PODS"]))}
SLOTS = int(os.environ["BENCH_SLOTS"])
RUNNERS = os.environ["BENCH_RUNNERS"]

@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = False
    settings.persistence.finalizer = "bench.gigafactory.dev/naive"
    open(os.environ["BENCH_READY"], "w").close()

@kopf.on.create("gigafactory.dev", "v1alpha1", "agentjobs")
async def bind(body, meta, patch, **_):
    pod = min(PODS, key=PODS.get)
    if PODS[pod] >= SLOTS:
        raise kopf.TemporaryError("no free slot", delay=1)
    PODS[pod] += 1
    lease = leases.build_binding_lease(job_namespace=meta["namespace"], job_name=meta["name"], job_uid=meta["uid"], attempt=1,
                                       factory=FACTORY, pod=pod, pod_namespace=RUNNERS, claim_timeout_seconds=600, moment=leases.now())
    await asyncio.to_thread(COORD.create_namespaced_lease, RUNNERS, lease)
    patch.status["phase"] = "Bound"
    patch.status["attempt"] = 1
    patch.status["assignment"] = {"factory": FACTORY, "pod": pod, "podNamespace": RUNNERS, "attempt": 1,
                                  "lease": lease["metadata"]["name"], "leaseNamespace": RUNNERS,
                                  "boundAt": leases.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
'''


async def naive(api: Api, sizes: Sizes) -> dict[str, Any]:
    slots = -(-sizes.bind_jobs // sizes.bind_pods)
    script = api.work / "naive_operator.py"
    script.write_text(NAIVE_OPERATOR)
    ready = api.work / f"naive-ready-{time.monotonic_ns()}"
    async with api.session("naive") as s:
        await pool(s, pods=sizes.bind_pods, slots=slots)
        claimer, watch = Claimer(s), Watch(s)
        proc = Process([sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", s.jobs_ns, str(script)],
                       {"BENCH_KUBECONFIG": s.kubeconfig, "KUBECONFIG": s.kubeconfig, "BENCH_PODS": str(sizes.bind_pods),
                        "BENCH_SLOTS": str(slots), "BENCH_RUNNERS": s.runners_ns, "BENCH_FACTORY": s.factory,
                        "BENCH_READY": str(ready)}, api.work / "naive.log")
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the naive kopf operator did not start within 60 s; see {proc.log}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)  # after its start-up handlers: discovery, the first list and the watch
            async with claimer.running(), watch.informer.running():
                rate = await _burst(s, sizes.bind_jobs, watch, (proc,))
        finally:
            proc.stop()
    return {"jobs": sizes.bind_jobs, "binds_per_second": round(rate)}


async def latency(api: Api, sizes: Sizes) -> dict[str, Any]:
    n = int(sizes.latency_rate * sizes.latency_seconds)
    async with api.session("latency") as s:
        await pool(s, pods=20, slots=max(1, -(-n // 20)))
        claimer, watch = Claimer(s), Watch(s)
        sent: dict[str, float] = {}
        async with claimer.running(), watch.informer.running(), operator(s, api.work) as (proc, _):
            started = time.monotonic()
            tasks = []
            for i in range(n):
                await asyncio.sleep(max(0.0, started + i / sizes.latency_rate - time.monotonic()))
                sent[f"l{i}"] = time.monotonic()
                tasks.append(asyncio.create_task(s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, f"l{i}"), namespace=s.jobs_ns)))
            await asyncio.gather(*tasks)
            await watch.until("Bound", n, timeout=120, processes=(proc,))
    waits = sorted((watch.first[name]["Bound"] - at) * 1000 for name, at in sent.items())
    return {"jobs": n, "rate_per_second": sizes.latency_rate, "p50_ms": round(statistics.median(waits), 1),
            "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1), "max_ms": round(waits[-1], 1)}


async def cycle_cpu(api: Api, sizes: Sizes) -> dict[str, Any]:
    profile = plugins.default_profile()
    figures: dict[str, Any] = {"api": "none: in-process, the same on any server"}
    for jobs, pods in sizes.cycle_sizes:
        for label, slots in (("scarce", 2), ("roomy", 16)):
            snap = cycle_bench.build(jobs, pods, slots=slots)
            started = time.process_time()
            cycle.run(snap, profile)
            figures[f"{label}_{jobs}x{pods}_ms"] = round((time.process_time() - started) * 1000)
    return figures


def request_key(method: str, path: str, query: Mapping[str, str]) -> tuple[str, str]:
    """(verb, resource) of a request, as the embedded server counts them: `watch`, `list`, `get`,
    `create`, `patch`, `update`, `delete`; the resource as `plural[.group][/subresource]`."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return ("discovery" if method == "GET" else method.lower()), path
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return ("discovery" if method == "GET" else method.lower()), path
    resource = rest[0] + (f".{group}" if group else "") + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete" if named else "deletecollection"}.get(method)
    if verb is None:
        verb = "get" if named else ("watch" if query.get("watch") in ("true", "1") else "list")
    return verb, resource


class CountingProxy:
    """A plain-HTTP proxy on loopback in front of a real API server, counting what passes through by
    verb and resource as the embedded server's /_gigafactory/requests does. The operator talks to it
    (a kubeconfig without credentials; the proxy adds the suite's), so on a real server `idle` counts
    the operator's requests and nobody else's. Watches are streamed through as they arrive."""

    def __init__(self, client: kubeclient.Client, work: pathlib.Path) -> None:
        self.client = client
        self.work = work
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.runner: Any = None
        self.handlers: set[asyncio.Task[Any]] = set()

    async def handle(self, request: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            return await self.forward(request)
        finally:
            self.handlers.discard(task)

    async def forward(self, request: Any) -> Any:
        from aiohttp import ClientTimeout, web

        self.counts[request_key(request.method, request.path, request.query)] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        # No body (a GET) is sent as none: an empty one would go as application/octet-stream, which
        # kube-apiserver answers with 406 to kopf's `Accept: */*` discovery requests.
        async with self.client.open(request.method, request.path_qs, data=await request.read() or None, headers=headers,
                                    timeout=ClientTimeout(total=None, sock_connect=10)) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve; yields the path of a kubeconfig that points at the proxy."""
        import yaml
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        path = self.work / f"proxy-{port}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}]}))
        try:
            yield str(path)
        finally:
            for task in list(self.handlers):  # watches the operator left open: aiohttp would wait a minute for them
                task.cancel()
            await asyncio.gather(*self.handlers, return_exceptions=True)
            await self.runner.cleanup()


async def idle(api: Api, sizes: Sizes) -> dict[str, Any]:
    async with api.session("idle") as s:
        names = await pool(s, pods=10, slots=2, duration=15)
        renewals = 0

        async def renew_forever() -> None:  # what 10 runners do: renew every third of 15 s
            nonlocal renewals
            while True:
                for pod in names:
                    await s.client.patch(kubeclient.LEASES, pod, {"spec": {"renewTime": leases.format_micro_time(leases.now())}},
                                         namespace=s.runners_ns)
                    renewals += 1
                await asyncio.sleep(5)

        proxy = None if s.server else CountingProxy(s.client, api.work)
        renewer = asyncio.create_task(renew_forever())
        try:
            async with contextlib.AsyncExitStack() as stack:
                kubeconfig = await stack.enter_async_context(proxy.running()) if proxy else None
                async with operator(s, api.work, kubeconfig=kubeconfig) as (proc, _):
                    await asyncio.sleep(2)  # the start-up writes (factory status) are not idle cost
                    before, renewed = (await s.requests()) if s.server else proxy.counts.copy(), renewals  # type: ignore[union-attr]
                    await asyncio.sleep(sizes.idle_seconds)
                    if proc.proc.poll() is not None:
                        raise RuntimeError(f"the operator exited during the idle period; see {proc.log}")
                    after, renewed = (await s.requests()) if s.server else proxy.counts.copy(), renewals - renewed  # type: ignore[union-attr]
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
    spent = after - before
    if s.server:  # the server counted the stub runners' renewals too
        spent = collections.Counter({k: n for k, n in spent.items() if not (k[0] == "patch" and k[1].startswith("leases"))})
    watches = sum(n for (verb, _), n in spent.items() if verb == "watch")
    other = {f"{verb} {resource}": n for (verb, resource), n in spent.items() if verb != "watch"}
    return {"seconds": sizes.idle_seconds, "heartbeat_renewals": renewed, "watch_requests": watches,
            "other_requests": sum(other.values()), "other": other or "none",
            "counted_by": "the embedded server's counters, less the stub runners' renewals" if s.server
                          else "a counting proxy between the operator and kube-apiserver (the operator's requests only)"}


async def memory(api: Api, sizes: Sizes) -> dict[str, Any]:
    async with api.session("memory") as s:
        await pool(s, pods=10, slots=2)
        finished = int(sizes.memory_jobs * 0.9)
        stamp = "2026-11-24T12:00:00Z"

        async def one(i: int) -> None:
            name = f"m{i:05d}"
            await s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, name), namespace=s.jobs_ns)
            if i < finished:
                status = {"phase": "Succeeded", "attempt": 1, "startTime": stamp, "completionTime": stamp,
                          "attempts": [{"attempt": 1, "factory": s.factory, "pod": f"{s.factory}-0", "outcome": "Succeeded",
                                        "startedAt": stamp, "finishedAt": stamp, "message": "pushed agent/x at 0123456789ab"}],
                          "result": {"branch": f"agent/{name}", "commit": "0" * 40, "changedFiles": ["a.py", "b.py"],
                                     "summary": "Did the thing. " * 10}}
                await s.client.patch(kubeclient.AGENTJOBS, name, {"status": status}, namespace=s.jobs_ns, subresource="status")

        await bounded([one(i) for i in range(sizes.memory_jobs)])
        async with operator(s, api.work) as (proc, _):
            await asyncio.sleep(5)  # a few cycles and the explanations of the waiting jobs
            rss = next(int(line.split()[1]) for line in pathlib.Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
    return {"jobs": sizes.memory_jobs, "finished": finished, "operator_rss_mb": round(rss / 1024),
            "measures": "the operator process's RSS (the API server's memory is not measured)"}


async def e2e(api: Api, sizes: Sizes) -> dict[str, Any]:
    remote = devmode.make_sample_repo(api.work / "e2e-repos")
    async with api.session("e2e") as s:
        await s.client.create(kubeclient.FACTORIES, s.factory_body(sizes.e2e_slots))
        runners = [Process([sys.executable, "-m", "gigafactory.cli.main", "runner", "--kubeconfig", s.kubeconfig], {
            "GIGAFACTORY_RUNNER_POD_NAME": f"{s.factory}-{i}", "GIGAFACTORY_RUNNER_NAMESPACE": s.runners_ns,
            "GIGAFACTORY_RUNNER_FACTORY": s.factory, "GIGAFACTORY_RUNNER_SLOTS": str(sizes.e2e_slots),
            "GIGAFACTORY_RUNNER_WORK_DIR": str(api.work / f"e2e-runner-{i}"),
            "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true"}, api.work / f"e2e-runner-{i}.log") for i in range(sizes.e2e_runners)]
        watch = Watch(s)
        try:
            async with watch.informer.running(), operator(s, api.work) as (proc, _):
                deadline = time.monotonic() + 60
                while len((await s.client.list(kubeclient.LEASES, namespace=s.runners_ns,
                                               label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_HEARTBEAT}"))[0]) < len(runners):
                    dead = [r for r in runners if r.proc.poll() is not None]
                    if dead or time.monotonic() > deadline:
                        raise RuntimeError(f"the runners did not all announce themselves within 60 s; see {(dead or runners)[0].log}")
                    await asyncio.sleep(0.2)
                started = time.monotonic()
                created: dict[str, float] = {}
                for i in range(sizes.e2e_jobs):
                    created[f"e{i}"] = time.monotonic()
                    await s.client.create(kubeclient.AGENTJOBS, job_body(s.jobs_ns, f"e{i}", url=str(remote)), namespace=s.jobs_ns)
                await watch.until("Succeeded", sizes.e2e_jobs, timeout=max(120.0, sizes.e2e_jobs * 2.0), stall=120,
                                  processes=(proc, *runners))
                elapsed = max(m["Succeeded"] for m in watch.first.values() if "Succeeded" in m) - started
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


async def sandbox_startup(api: Api, sizes: Sizes) -> dict[str, Any]:
    """What the agent sandbox adds to each agent's start: `python -c pass` (an agent's interpreter
    starting and ending) bare and in the sandbox the runner builds (namespaces, mounts, pivot_root,
    no capabilities), one after the other; the API is not involved. Median and p90 in milliseconds."""
    del api

    def timed(argv: list[str], env: dict[str, str], fds: tuple[int, ...] = ()) -> float:
        started = time.perf_counter()
        subprocess.run(argv, env=env, pass_fds=fds, check=True, stdout=subprocess.DEVNULL)
        return (time.perf_counter() - started) * 1000

    agent = [sys.executable, "-I", "-c", "pass"]
    env = {"PATH": "/usr/bin:/bin"}
    bare, boxed = [], []
    with tempfile.TemporaryDirectory(prefix="gf-bench-sandbox-") as tmp:
        worktree = pathlib.Path(tmp) / "worktrees" / "job-1"
        worktree.mkdir(parents=True)
        for _ in range(sizes.sandbox_starts):
            bare.append(timed(agent, env))
            command = agent_sandbox.Sandbox().command(agent, env=env, cwd=str(worktree), writable=[str(worktree)], hidden=[tmp])
            try:
                boxed.append(timed(command.argv, command.env, command.pass_fds))
            finally:
                command.close()

    def p90(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.9 * len(values)) - 1)]

    return {"bare_median_ms": round(statistics.median(bare), 1), "sandboxed_median_ms": round(statistics.median(boxed), 1),
            "overhead_ms": round(statistics.median(boxed) - statistics.median(bare), 1),
            "sandboxed_p90_ms": round(p90(boxed), 1), "starts": sizes.sandbox_starts}


SCENARIOS: dict[str, Callable[[Api, Sizes], Awaitable[dict[str, Any]]]] = {
    "raw": raw, "bind": bind, "naive": naive, "latency": latency, "cycle": cycle_cpu, "idle": idle, "memory": memory, "e2e": e2e,
    "sandbox": sandbox_startup,
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


@contextlib.contextmanager
def keep_logs(work: pathlib.Path, to: pathlib.Path | None) -> Any:
    try:
        yield
    finally:
        if to is not None:
            to.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, to / log.name)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CI smoke run")
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures to this file")
    parser.add_argument("--kubeconfig", help="a real cluster (its CRDs installed); never taken from $KUBECONFIG")
    parser.add_argument("--idle-minutes", type=float, default=None)
    parser.add_argument("--logs", type=pathlib.Path, help="keep the processes' logs (operator, runners, servers) in this directory")
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
    # Ctrl-C and SIGTERM cancel the run: the running scenario's clean-up runs (a second one cuts it short).
    task = asyncio.current_task()
    if task is not None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    with tempfile.TemporaryDirectory(prefix="gigafactory-bench-") as tmp, keep_logs(pathlib.Path(tmp), args.logs):
        api = Api(args.kubeconfig, pathlib.Path(tmp))
        if api.real:
            print(f"real API server: CRDs {await api.ensure_crds()}; run {api.run}", flush=True)
            swept = await api.sweep()
            if swept:
                print(f"removed what earlier runs left: {', '.join(swept)}", flush=True)
        for name in chosen:
            began = time.monotonic()
            try:
                results[name] = await SCENARIOS[name](api, sizes)
            except asyncio.CancelledError:
                print(f"interrupted during {name}, after its clean-up ({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
                return 130
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
