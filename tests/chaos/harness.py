"""The chaos harness: real operator and runner processes against the embedded API server, real git,
random SIGKILLs and injected API faults; then the SPEC's invariants are checked on what is left.

    .venv/bin/python -m tests.chaos --jobs 1000 --factories 5 --faults 0.05     # the full run, a table
    .venv/bin/python -m tests.chaos --kubeconfig KC --jobs 100                  # against a given server
    tests/chaos/test_chaos.py                                                    # a small run in `make test`

Against a given server (`kubeconfig`: a real kube-apiserver; its CRDs installed) there is no fault
injection: the chaos is the SIGKILLs and replaced pods. The run keeps to namespaces and factories
of its own (random names), so it can share a server with other tests.

One run:
1. Start the embedded API server (in this process, its own thread) with the CRDs; a sample repository
   with a bare remote; F factories; R runner processes per factory (S slots each); K operator
   processes under leader election.
2. Submit N jobs (the `script` agent; a share of them exits 1, so retries and failures happen too).
3. Chaos phase: every `--interval` seconds one random action — SIGKILL a runner (restarted in place
   after a moment, like a container restart: same pod name, same work dir), SIGKILL the leading
   operator (restarted: it comes back as a standby), or replace a runner pod by a new one (a
   Deployment's new pod: new name, fresh dir; the old pod's bindings must expire). API faults are
   on for the whole phase. A sampler reads the store directly (not through the faults) every 0.2 s
   and records the worst capacity use seen per pod.
4. Calm phase: faults off, every process alive, until every job is terminal (or the timeout).
5. Checks (each names its invariant) and a table.
"""

import asyncio
import collections
import contextlib
import dataclasses
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time
from typing import Any

import git

from gigafactory import constants, crdgen, devmode, kubeclient
import localcluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBS_NS = "chaos"
RUNNERS_NS = "chaos-runners"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
WORKTREE = re.compile(r"worktrees/([0-9a-f-]{36})-(\d+)")


@dataclasses.dataclass
class Config:
    work_dir: pathlib.Path
    jobs: int = 24
    factories: int = 2
    runners_per_factory: int = 2
    slots: int = 2
    operators: int = 2
    fault_rate: float = 0.0
    failing_share: float = 0.1  # jobs whose agent exits 1 (retried once, then Failed)
    interval: float = 2.0  # seconds between chaos actions
    chaos_seconds: float = 20.0  # how long the chaos phase lasts at most
    timeout: float = 180.0  # the calm phase's limit
    seed: int = 7
    kubeconfig: pathlib.Path | None = None  # a given API server instead of the embedded one (no faults there)

    # The protocol's timings of the run (seconds), short so that lost work comes back quickly.
    claim_timeout: int = 5
    binding_lease: int = 6
    heartbeat: int = 3
    leader_lease: int = 4
    stop_grace: int = 5

    def settle_seconds(self) -> float:
        """How long after the last job ended a binding Lease may still be there, by the operator's own
        timings: a fold or undo whose Lease deletion failed (an API fault, a SIGKILL between the two
        writes) leaves the Lease to its expiry timer — up to a binding Lease (or claim timeout) after
        its last renewal — or to a new leader, which takes over a leader Lease after the old one's
        last renewal, plus its start-up. Twice that, plus slack for a busy machine."""
        return 2 * (max(self.binding_lease, self.claim_timeout) + 2 * self.leader_lease + self.stop_grace) + 10.0


@dataclasses.dataclass
class Violation:
    invariant: str
    detail: str


@dataclasses.dataclass
class Report:
    config: Config
    phases: collections.Counter[str]
    actions: collections.Counter[str]
    executions: int
    successes: int
    max_used_ratio: float
    max_bound_ratio: float
    faults: dict[str, int]
    reasons: collections.Counter[str]
    seconds: float
    violations: list[Violation]

    def table(self) -> str:
        c = self.config
        rows = [
            ("jobs / factories / runner pods × slots / operators", f"{c.jobs} / {c.factories} / {c.factories * c.runners_per_factory} × {c.slots} / {c.operators}"),
            ("API fault rate during chaos", f"{c.fault_rate:.0%}"),
            ("chaos actions", ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())) or "none"),
            ("API faults injected", ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"),
            ("final phases", ", ".join(f"{k} {v}" for k, v in sorted(self.phases.items()))),
            ("agent executions started / committed", f"{self.executions} / {self.successes}"),
            ("attempts that did not simply succeed, by reason", ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))),
            ("most agents running at once on a pod (of its slots)", f"{self.max_used_ratio:.0%}"),
            ("most bindings seen at once on a pod (of its slots)", f"{self.max_bound_ratio:.0%}"),
            ("wall time", f"{self.seconds:.0f} s"),
            ("invariant violations", str(len(self.violations))),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'what'.ljust(width)} | figure |", f"|{'-' * (width + 2)}|--------|"]
        lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
        lines += [f"- VIOLATION [{v.invariant}] {v.detail}" for v in self.violations]
        return "\n".join(lines)


class Proc:
    """One operator or runner process that can be killed and started again."""

    def __init__(self, args: list[str], env: dict[str, str], log: pathlib.Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Proc":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen([sys.executable, "-m", "gigafactory.cli.main", *self.args], env=self.env,
                                            stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: the runner and the agents it started die together, as in a container."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Chaos:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.given = config.kubeconfig is not None
        # On a given server, names of this run's own: the server may hold other tests' objects.
        suffix = f"-{os.urandom(3).hex()}" if self.given else ""
        self.jobs_ns, self.runners_ns = f"{JOBS_NS}{suffix}", f"{RUNNERS_NS}{suffix}"
        self.factory_prefix = f"c{suffix[1:]}f" if self.given else "f"
        self.client: kubeclient.Client | None = None
        self.server: Any = None
        self.random = random.Random(config.seed)
        self.work = config.work_dir.resolve()
        self.marker = self.work / "executions.txt"
        self.actions: collections.Counter[str] = collections.Counter()
        self.operators: list[Proc] = []
        self.runners: dict[str, Proc] = {}  # pod → process
        self.pod_slots: dict[str, int] = {}
        self.generation = 0
        self.worst: dict[str, int] = collections.defaultdict(int)  # agents running at once, per pod
        self.worst_bound: dict[str, int] = collections.defaultdict(int)  # bindings at once, per pod
        self.violations: list[Violation] = []
        self.faults_seen: dict[str, int] = {}
        self.final_phases: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()

    # --- set-up ---

    def base_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}

    def operator_env(self, index: int) -> dict[str, str]:
        c = self.config
        return {**self.base_env(), "GIGAFACTORY_LEADER_ELECTION": "true", "GIGAFACTORY_NAMESPACE": self.runners_ns,
                "GIGAFACTORY_LEADER_LEASE_SECONDS": str(c.leader_lease), "GIGAFACTORY_HTTP_PORT": "0",
                "GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": str(c.claim_timeout),
                "GIGAFACTORY_STOP_GRACE_SECONDS": str(c.stop_grace), "GIGAFACTORY_ALLOW_LOCAL_REPOS": "true"}

    def runner_proc(self, factory: str, pod: str) -> Proc:
        env = {**self.base_env(), "GIGAFACTORY_RUNNER_POD_NAME": pod, "GIGAFACTORY_RUNNER_NAMESPACE": self.runners_ns,
               "GIGAFACTORY_RUNNER_FACTORY": factory, "GIGAFACTORY_RUNNER_SLOTS": str(self.config.slots),
               "GIGAFACTORY_RUNNER_WORK_DIR": str(self.work / "runners" / pod), "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
               "GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS": str(self.config.heartbeat),
               "GIGAFACTORY_RUNNER_BINDING_LEASE_SECONDS": str(self.config.binding_lease),
               "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": "5", "GIGAFACTORY_SCRIPT_MARKER": str(self.marker)}
        self.pod_slots[pod] = self.config.slots
        return Proc(["runner", "--kubeconfig", str(self.kubeconfig)], env, self.work / "logs" / f"{pod}.log")

    async def apply(self, resource: kubeclient.Resource, body: dict[str, Any]) -> None:
        """Create an object: straight into the embedded store, or through the given server's API."""
        if self.client is None:
            self.server.call(self.server.local.apply, body)
            return
        namespace = body["metadata"].get("namespace") if resource.namespaced else None
        await self.client.create(resource, body, namespace=namespace)

    async def setup(self) -> None:
        if self.given:
            self.server = None
            self.kubeconfig = pathlib.Path(self.config.kubeconfig).resolve()  # type: ignore[arg-type]
            self.client = kubeclient.Client.from_kubeconfig(str(self.kubeconfig))
        else:
            self.server = localcluster.start_in_thread(history=20_000)
            for crd in crdgen.build_crds().values():
                self.server.call(self.server.local.apply, crd)
            self.kubeconfig = self.server.write_kubeconfig(self.work / "kubeconfig")
        for namespace in (self.jobs_ns, self.runners_ns):
            await self.apply(kubeclient.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        self.remote = devmode.make_sample_repo(self.work / "repos")
        self.factories = [f"{self.factory_prefix}{i}" for i in range(self.config.factories)]
        for factory in self.factories:
            await self.apply(kubeclient.FACTORIES, {
                "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": factory},
                "spec": {"agents": ["script"], "slotsPerPod": self.config.slots, "subscriptions": ["*"],
                         "namespaces": [self.jobs_ns] if self.given else ["*"]}})
            for index in range(self.config.runners_per_factory):
                pod = f"{factory}-r{index}"
                self.runners[pod] = self.runner_proc(factory, pod).start()
        self.operators = [Proc(["operator", "--kubeconfig", str(self.kubeconfig)], self.operator_env(i),
                               self.work / "logs" / f"operator-{i}.log").start() for i in range(self.config.operators)]

    async def submit(self) -> None:
        failing = set(self.random.sample(range(self.config.jobs), int(self.config.jobs * self.config.failing_share)))
        for index in range(self.config.jobs):
            agent: dict[str, Any] = {"profile": "script"}
            if index in failing:
                agent["args"] = ["--exit", "1"]
            await self.apply(kubeclient.AGENTJOBS, {
                "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
                "metadata": {"name": f"job-{index:04d}", "namespace": self.jobs_ns},
                "spec": {"repo": {"url": str(self.remote)}, "task": {"prompt": f"task {index}"}, "agent": agent,
                         "retry": {"maxAttempts": 2, "maxUncountedRetries": 100,
                                   "backoff": {"initialSeconds": 1, "maxSeconds": 2}}}})

    # --- reading the truth (straight from the embedded store: no faults, no HTTP; or the given server) ---

    async def objects(self, resource: kubeclient.Resource, namespace: str) -> list[dict[str, Any]]:
        if self.client is not None:
            return (await self.client.list(resource, namespace=namespace))[0]

        def read() -> list[dict[str, Any]]:
            return [dict(o) for o in self.server.local.cluster.store.iterate((resource.group, resource.plural), None)
                    if (o.get("metadata") or {}).get("namespace") == namespace]
        return self.server.call(read)

    async def jobs(self) -> list[dict[str, Any]]:
        return await self.objects(kubeclient.AGENTJOBS, self.jobs_ns)

    async def binding_leases(self) -> list[dict[str, Any]]:
        return [lease for lease in await self.objects(kubeclient.LEASES, self.runners_ns)
                if (lease["metadata"].get("labels") or {}).get(constants.LABEL_ROLE) == constants.ROLE_BINDING]

    async def sample(self) -> None:
        """Invariant 3, physically: agents alive at this moment per pod (a marker line's pid that is
        alive with that worktree as its cwd) never exceed the pod's slots. Also the bindings per pod
        as the API shows them, for the table: two leaders in a split moment may bind different jobs
        to one pod beyond its slots; the runner's claim refuses the excess, which then moves on."""
        running: collections.Counter[str] = collections.Counter()
        lines = self.marker.read_text().splitlines() if self.marker.exists() else []
        for line in lines:
            parts = line.split()
            if len(parts) != 2:
                continue  # a "done" line
            pid, cwd = parts
            try:
                if os.readlink(f"/proc/{pid}/cwd") != cwd:
                    continue  # gone, or the pid was reused
                with open(f"/proc/{pid}/stat") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except OSError:
                continue
            match = re.search(r"/runners/([^/]+)/worktrees/", cwd)
            if match:
                running[match.group(1)] += 1
        for pod, count in running.items():
            self.worst[pod] = max(self.worst[pod], count)
        bound: collections.Counter[str] = collections.Counter()
        for job in await self.jobs():
            status = job.get("status") or {}
            if status.get("phase") in ("Bound", "Running"):
                bound[(status.get("assignment") or {}).get("pod", "")] += 1
        for pod, count in bound.items():
            self.worst_bound[pod] = max(self.worst_bound[pod], count)

    # --- chaos ---

    async def leader(self) -> Proc | None:
        leases = await self.objects(kubeclient.LEASES, self.runners_ns)
        holder = next((lease["spec"].get("holderIdentity") for lease in leases
                       if lease["metadata"]["name"] == "gigafactory-operator"), None)
        alive = [p for p in self.operators if p.alive]
        if holder is None or not alive:
            return None
        # The identity is <hostname>_<random>; which process holds it shows in its own log.
        for proc in alive:
            if proc.log.exists() and holder in proc.log.read_text(errors="replace"):
                return proc
        return None

    async def act(self) -> None:
        choice = self.random.random()
        if choice < 0.5:
            pod = self.random.choice(sorted(p for p, proc in self.runners.items() if proc.alive) or [""])
            if pod:
                self.runners[pod].kill()
                self.actions["runner SIGKILL"] += 1
        elif choice < 0.7:
            leader = await self.leader()
            if leader is not None:
                leader.kill()
                self.actions["leader SIGKILL"] += 1
        elif choice < 0.85:
            alive = sorted(p for p, proc in self.runners.items() if proc.alive)
            if alive:
                old = self.random.choice(alive)
                self.runners.pop(old).kill()
                self.generation += 1
                factory = old.rsplit("-", 1)[0]
                pod = f"{factory}-g{self.generation}"
                self.runners[pod] = self.runner_proc(factory, pod).start()
                self.actions["runner pod replaced"] += 1
        else:
            self.actions["quiet"] += 1

    def revive(self, *, chance: float = 1.0) -> None:
        for proc in [*self.runners.values(), *self.operators]:
            if not proc.alive and self.random.random() < chance:
                proc.start()

    def set_faults(self, rate: float) -> None:
        if self.server is None:
            return  # a given server: no fault injection there
        try:
            from localcluster import faults
        except ImportError:
            return
        policy_type = getattr(faults, "FaultPolicy", None)
        if policy_type is None:
            return
        policy = policy_type(rate=rate, seed=self.config.seed) if rate else faults.NoFaults()
        previous = self.server.local.server.faults
        counts = getattr(previous, "counts", None)
        if counts:
            for kind, n in dict(counts).items():
                self.faults_seen[str(kind)] = self.faults_seen.get(str(kind), 0) + int(n)
        self.server.local.server.faults = policy

    async def all_terminal(self) -> bool:
        return all((j.get("status") or {}).get("phase") in TERMINAL for j in await self.jobs())

    async def settle(self) -> list[str]:
        """Wait until no binding Lease is left, as long as the operator's own timings may take to
        remove the last ones (Config.settle_seconds); the names of those still there then."""
        return await wait_until_gone(self.binding_leases, self.config.settle_seconds())

    async def run(self) -> Report:
        started = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            await self.setup()
            await self.submit()
            self.set_faults(self.config.fault_rate)
            chaos_end = time.monotonic() + self.config.chaos_seconds
            next_action = time.monotonic() + self.config.interval
            while time.monotonic() < chaos_end and not await self.all_terminal():
                await self.sample()
                if time.monotonic() >= next_action:
                    await self.act()
                    next_action = time.monotonic() + self.config.interval
                    self.revive(chance=0.5)  # a container restarts after a moment, not at once
                await asyncio.sleep(0.2)
            self.set_faults(0.0)
            self.revive()
            calm_end = time.monotonic() + self.config.timeout
            while time.monotonic() < calm_end and not await self.all_terminal():
                await self.sample()
                self.revive()
                await asyncio.sleep(0.2)
            # The last Leases go by the operator's timings (a fold's or undo's deletion that failed is
            # redone at the Lease's expiry, or by a new leader): a check at once would call that a leak.
            left = await self.settle()
            await asyncio.sleep(2)  # let the last releases and sweeps land
            await self.check(left)
        finally:
            if self.client is not None:
                await self.cleanup()  # while the operators run: they let the deleted jobs go
            for proc in [*self.runners.values(), *self.operators]:
                proc.stop()
            if self.client is not None:
                # Killed runners' heartbeats: gone now, not when the namespace controller gets to them
                # (until then other tests' operators would count those pods).
                with contextlib.suppress(kubeclient.ApiError):
                    for lease in await self.objects(kubeclient.LEASES, self.runners_ns):
                        with contextlib.suppress(kubeclient.NotFound):
                            await self.client.delete(kubeclient.LEASES, lease["metadata"]["name"], namespace=self.runners_ns)
            if self.server is not None:
                self.server.stop()
            if self.client is not None:
                await self.client.close()
        return self.report(time.monotonic() - started)

    # --- the checks ---

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    async def cleanup(self) -> None:
        """A given server outlives the run: its namespaces and factories go (best effort)."""
        assert self.client is not None
        for factory in getattr(self, "factories", []):
            try:
                await self.client.delete(kubeclient.FACTORIES, factory)
            except kubeclient.ApiError:
                pass
        for namespace in (self.jobs_ns, self.runners_ns):
            try:
                await self.client.delete(kubeclient.NAMESPACES, namespace)
            except kubeclient.ApiError:
                pass
        with contextlib.suppress(kubeclient.ApiError):
            await wait_until_gone(self.jobs, 15.0)

    async def check(self, left_bindings: list[str]) -> None:
        jobs = await self.jobs()
        self.final_phases = collections.Counter(str((j.get("status") or {}).get("phase")) for j in jobs)
        self.reasons = collections.Counter(
            str(a.get("reason") or a.get("outcome")) for j in jobs for a in (j.get("status") or {}).get("attempts") or ()
            if a.get("reason") not in ("", "AgentExit", None) or a.get("outcome") != "Succeeded")
        # 10: no job lost — every job terminal after the calm phase.
        for job in jobs:
            phase = (job.get("status") or {}).get("phase")
            if phase not in TERMINAL:
                self.violate("10 no job lost", f"{job['metadata']['name']} still {phase}")
        if len(jobs) != self.config.jobs:
            self.violate("10 no job lost", f"{len(jobs)} jobs exist, {self.config.jobs} were submitted")
        # 1: one successful attempt per succeeded job, and exactly its result on the remote.
        remote = git.Repo(self.remote)
        branches = {h.name: h.commit.hexsha for h in remote.heads if h.name != "main"}
        main = remote.heads["main"].commit
        for job in jobs:
            status = job.get("status") or {}
            name = job["metadata"]["name"]
            branch = f"agent/{name}"
            wins = [a for a in status.get("attempts") or () if a.get("outcome") == "Succeeded"]
            if status.get("phase") == "Succeeded":
                if len(wins) != 1:
                    self.violate("1 at most one runner", f"{name}: {len(wins)} attempts succeeded")
                result = status.get("result") or {}
                if branches.get(branch) != result.get("commit"):
                    self.violate("1 at most one runner", f"{name}: remote {branch} at {branches.get(branch)}, result says {result.get('commit')}")
                elif len(list(remote.iter_commits(f"{main.hexsha}..{branch}"))) != 1:
                    self.violate("1 at most one runner", f"{name}: {branch} carries more than the one agent commit")
            elif wins:
                self.violate("1 at most one runner", f"{name}: {status.get('phase')} but an attempt succeeded")
            elif branch in branches:
                # Work pushed but the job says it failed: a lost report must be adopted, not retried into BranchExists.
                self.violate("10 no job lost", f"{name}: {status.get('phase')} with its branch pushed at {branches[branch][:12]}")
        # 2: every Lease a live binding (no binding Lease once all jobs are terminal and the operator's
        # timings have run out).
        for name in left_bindings:
            self.violate("2 lease iff binding", f"binding Lease {name} left behind "
                                                f"{self.config.settle_seconds():.0f}s after the last job ended")
        # 3: capacity never exceeded at a sampled moment.
        for pod, worst in self.worst.items():
            if worst > self.pod_slots.get(pod, self.config.slots):
                self.violate("3 slots", f"pod {pod} ran {worst} agents at once with {self.pod_slots.get(pod)} slots")
        # 5: no worktree or local gf/* branch left on a live runner (their sweep ran; the dead pods' dirs are gone with them).
        for pod, proc in self.runners.items():
            root = self.work / "runners" / pod
            if not proc.alive:
                continue
            left = [p.name for p in (root / "worktrees").glob("*")] if (root / "worktrees").exists() else []
            if left:
                self.violate("5 swept", f"pod {pod} still has worktrees {left[:3]}")
            for mirror in (root / "mirrors").glob("*.git"):
                heads = git.Repo(mirror).git.for_each_ref("--format=%(refname:short)", "refs/heads/gf/")
                if heads.strip():
                    self.violate("5 swept", f"pod {pod} mirror {mirror.name} keeps branches {heads.split()[:3]}")

    def report(self, seconds: float) -> Report:
        lines = self.marker.read_text().splitlines() if self.marker.exists() else []
        starts = [line for line in lines if not line.endswith(" done")]
        phases = self.final_phases
        def ratio(worst: dict[str, int]) -> float:
            return max((n / self.pod_slots.get(pod, self.config.slots) for pod, n in worst.items()), default=0.0)

        return Report(self.config, phases, self.actions, len(starts), len(lines) - len(starts), ratio(self.worst),
                      ratio(self.worst_bound), self.faults_seen, self.reasons, seconds, self.violations)



async def wait_until_gone(list_items: Any, seconds: float, *, interval: float = 0.2) -> list[str]:
    """Poll `await list_items()` until it is empty or `seconds` have passed; the names left."""
    deadline = time.monotonic() + seconds
    while True:
        names = [item["metadata"]["name"] for item in await list_items()]
        if not names or time.monotonic() >= deadline:
            return names
        await asyncio.sleep(interval)


async def run(config: Config) -> Report:
    return await Chaos(config).run()
