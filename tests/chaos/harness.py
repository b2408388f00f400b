"""The chaos harness: real operator and runner processes against the embedded API server, real git,
random SIGKILLs and injected API faults; then the SPEC's invariants are checked on what is left.

    .venv/bin/python -m tests.chaos --jobs 1000 --factories 5 --faults 0.05     # the full run, a table
    tests/chaos/test_chaos.py                                                    # a small run in `make test`

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

from gigafactory import constants, crdgen, devmode, localcluster

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
        return {**self.base_env(), "GIGAFACTORY_LEADER_ELECTION": "true", "GIGAFACTORY_NAMESPACE": RUNNERS_NS,
                "GIGAFACTORY_LEADER_LEASE_SECONDS": "4", "GIGAFACTORY_HTTP_PORT": "0", "GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": "5",
                "GIGAFACTORY_STOP_GRACE_SECONDS": "5", "GIGAFACTORY_ALLOW_LOCAL_REPOS": "true"}

    def runner_proc(self, factory: str, pod: str) -> Proc:
        env = {**self.base_env(), "GIGAFACTORY_RUNNER_POD_NAME": pod, "GIGAFACTORY_RUNNER_NAMESPACE": RUNNERS_NS,
               "GIGAFACTORY_RUNNER_FACTORY": factory, "GIGAFACTORY_RUNNER_SLOTS": str(self.config.slots),
               "GIGAFACTORY_RUNNER_WORK_DIR": str(self.work / "runners" / pod), "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
               "GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS": "3", "GIGAFACTORY_RUNNER_BINDING_LEASE_SECONDS": "6",
               "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": "5", "GIGAFACTORY_SCRIPT_MARKER": str(self.marker)}
        self.pod_slots[pod] = self.config.slots
        return Proc(["runner", "--kubeconfig", str(self.kubeconfig)], env, self.work / "logs" / f"{pod}.log")

    def setup(self) -> None:
        self.server = localcluster.start_in_thread(history=20_000)
        for crd in crdgen.build_crds().values():
            self.server.call(self.server.local.apply, crd)
        for namespace in (JOBS_NS, RUNNERS_NS):
            self.server.call(self.server.local.apply, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        self.kubeconfig = self.server.write_kubeconfig(self.work / "kubeconfig")
        self.remote = devmode.make_sample_repo(self.work / "repos")
        self.factories = [f"f{i}" for i in range(self.config.factories)]
        for factory in self.factories:
            self.server.call(self.server.local.apply, {
                "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": factory},
                "spec": {"agents": ["script"], "slotsPerPod": self.config.slots, "subscriptions": ["*"], "namespaces": ["*"]}})
            for index in range(self.config.runners_per_factory):
                pod = f"{factory}-r{index}"
                self.runners[pod] = self.runner_proc(factory, pod).start()
        self.operators = [Proc(["operator", "--kubeconfig", str(self.kubeconfig)], self.operator_env(i),
                               self.work / "logs" / f"operator-{i}.log").start() for i in range(self.config.operators)]

    def submit(self) -> None:
        failing = set(self.random.sample(range(self.config.jobs), int(self.config.jobs * self.config.failing_share)))
        for index in range(self.config.jobs):
            agent: dict[str, Any] = {"profile": "script"}
            if index in failing:
                agent["args"] = ["--exit", "1"]
            self.server.call(self.server.local.apply, {
                "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
                "metadata": {"name": f"job-{index:04d}", "namespace": JOBS_NS},
                "spec": {"repo": {"url": str(self.remote)}, "task": {"prompt": f"task {index}"}, "agent": agent,
                         "retry": {"maxAttempts": 2, "maxUncountedRetries": 100,
                                   "backoff": {"initialSeconds": 1, "maxSeconds": 2}}}})

    # --- reading the truth (straight from the store: no faults, no HTTP) ---

    def objects(self, group: str, plural: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            return [dict(o) for o in self.server.local.cluster.store.iterate((group, plural), None)]
        return self.server.call(read)

    def jobs(self) -> list[dict[str, Any]]:
        return self.objects(constants.GROUP, constants.AGENTJOB_PLURAL)

    def sample(self) -> None:
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
        for job in self.jobs():
            status = job.get("status") or {}
            if status.get("phase") in ("Bound", "Running"):
                bound[(status.get("assignment") or {}).get("pod", "")] += 1
        for pod, count in bound.items():
            self.worst_bound[pod] = max(self.worst_bound[pod], count)

    # --- chaos ---

    def leader(self) -> Proc | None:
        leases = self.objects("coordination.k8s.io", "leases")
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

    def act(self) -> None:
        choice = self.random.random()
        if choice < 0.5:
            pod = self.random.choice(sorted(p for p, proc in self.runners.items() if proc.alive) or [""])
            if pod:
                self.runners[pod].kill()
                self.actions["runner SIGKILL"] += 1
        elif choice < 0.7:
            leader = self.leader()
            if leader is not None:
                leader.kill()
                self.actions["leader SIGKILL"] += 1
        elif choice < 0.85:
            alive = sorted(p for p, proc in self.runners.items() if proc.alive)
            if alive:
                old = self.random.choice(alive)
                self.runners.pop(old).kill()
                self.generation += 1
                factory = old.split("-")[0]
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
        try:
            from gigafactory.localcluster import faults
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

    def all_terminal(self) -> bool:
        return all((j.get("status") or {}).get("phase") in TERMINAL for j in self.jobs())

    async def run(self) -> Report:
        started = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        self.setup()
        try:
            self.submit()
            self.set_faults(self.config.fault_rate)
            chaos_end = time.monotonic() + self.config.chaos_seconds
            next_action = time.monotonic() + self.config.interval
            while time.monotonic() < chaos_end and not self.all_terminal():
                self.sample()
                if time.monotonic() >= next_action:
                    self.act()
                    next_action = time.monotonic() + self.config.interval
                    self.revive(chance=0.5)  # a container restarts after a moment, not at once
                await asyncio.sleep(0.2)
            self.set_faults(0.0)
            self.revive()
            calm_end = time.monotonic() + self.config.timeout
            while time.monotonic() < calm_end and not self.all_terminal():
                self.sample()
                self.revive()
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # let the last releases and sweeps land
            self.check()
        finally:
            for proc in [*self.runners.values(), *self.operators]:
                proc.stop()
            self.server.stop()
        return self.report(time.monotonic() - started)

    # --- the checks ---

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    def check(self) -> None:
        jobs = self.jobs()
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
        # 2: every Lease a live binding (no binding Lease once all jobs are terminal).
        for lease in self.objects("coordination.k8s.io", "leases"):
            if (lease["metadata"].get("labels") or {}).get(constants.LABEL_ROLE) == constants.ROLE_BINDING:
                self.violate("2 lease iff binding", f"binding Lease {lease['metadata']['name']} left behind")
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



async def run(config: Config) -> Report:
    return await Chaos(config).run()
