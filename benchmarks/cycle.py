"""How long one scheduling cycle takes: 1k jobs × 100 pods, 5k × 500, 10k × 1k (CPU time).

Run: .venv/bin/python benchmarks/cycle.py
A synthetic fleet: 10 factories over 4 queues with mixed capabilities, 2 slots per pod, jobs over
6 queues (two nobody serves), some needing gpu, 50 repositories of which pods hold a few warm.
"""

import datetime
import random
import sys
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "operator"))

from gigafactory import leases  # noqa: E402
from gigafactory.scheduling import cycle, plugins, snapshots  # noqa: E402

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
QUEUES = ["default", "backend", "frontend", "ml", "docs", "orphan"]


def build(jobs: int, pods: int, seed: int = 1, slots: int = 2) -> snapshots.Snapshot:
    rng = random.Random(seed)
    repos = [leases.repo_key(f"https://git.example/r{i}.git") for i in range(50)]
    factories = {}
    for i in range(10):
        name = f"pool-{i}"
        factories[name] = snapshots.FactoryInfo(
            name=name,
            agents=frozenset({"claude-code", "script"}),
            capabilities=frozenset({"python"} | ({"gpu"} if i % 3 == 0 else set())),
            subscriptions=frozenset({QUEUES[i % 4], "default"} if i % 5 else {"*"}),
            slots_per_pod=slots,
            cost_weight=1.0 + i % 3,
        )
    pod_list = [
        snapshots.PodInfo(
            name=f"pool-{i % 10}-{i}", namespace="runners", factory=f"pool-{i % 10}", slots=slots,
            agents=frozenset({"claude-code", "script"}), warm_repos=frozenset(rng.sample(repos, 3)),
        )
        for i in range(pods)
    ]
    job_list = [
        snapshots.JobInfo(
            namespace=f"team-{i % 5}", name=f"job-{i}", uid=f"u{i}", resource_version="1",
            queue=rng.choice(QUEUES), priority=rng.choice([0, 0, 0, 10, 100]),
            created_at=NOW - datetime.timedelta(seconds=rng.randint(0, 3600)),
            agent="claude-code", capabilities=frozenset({"gpu"}) if i % 7 == 0 else frozenset({"python"}),
            preferences=(("gpu", 5),) if i % 11 == 0 else (), repo_key=rng.choice(repos),
        )
        for i in range(jobs)
    ]
    return snapshots.Snapshot(now=NOW, jobs=job_list, pods=pod_list, factories=factories)


def main() -> None:
    profile = plugins.default_profile()
    # Scarce: 2 slots per pod, most jobs wait (explained once per shape). Roomy: 16 slots per pod,
    # nearly every job binds and is scored: the expensive case.
    for label, slots in (("scarce", 2), ("roomy", 16)):
        for jobs, pods in ((1_000, 100), (5_000, 500), (10_000, 1_000)):
            best = float("inf")
            for _ in range(3):
                snapshot = build(jobs, pods, slots=slots)
                started = time.process_time()
                result = cycle.run(snapshot, profile)
                best = min(best, time.process_time() - started)
            print(
                f"{label:>6} {jobs:>6} jobs × {pods:>5} pods: {best * 1000:7.1f} ms CPU "
                f"({len(result.decisions)} bound, {len(result.unschedulable)} unschedulable)"
            )

    # Step 1 in the operator: the snapshot from its informer caches (raw bodies). First sight of a job
    # validates its spec; later only a new generation does (a status write just re-parses).
    from gigafactory import config, operating  # noqa: E402 - the I/O layer, only for this part

    for jobs, pods in ((1_000, 100), (5_000, 500), (10_000, 1_000)):
        snap = build(jobs, pods)
        operator = operating.Operator(config.OperatorSettings(), client=None)  # type: ignore[arg-type] - no I/O here
        for job in snap.jobs:
            operator.jobs.cache[job.key] = {
                "apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob",
                "metadata": {"name": job.name, "namespace": job.namespace, "uid": job.uid, "resourceVersion": "1",
                             "generation": 1, "creationTimestamp": job.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "spec": {"queue": job.queue, "priority": job.priority, "repo": {"url": "https://git.example/r.git"},
                         "task": {"prompt": "p"}, "agent": {"profile": job.agent},
                         "requirements": {"capabilities": sorted(job.capabilities)}},
                "status": {"phase": "Pending"},
            }
        started = time.process_time()
        operator.snapshot()
        cold = time.process_time() - started
        for body in operator.jobs.cache.values():
            body["metadata"]["resourceVersion"] = "2"  # what a status write (an explanation) does
        started = time.process_time()
        operator.snapshot()
        status_only = time.process_time() - started
        print(f"snapshot {jobs:>6} jobs: {cold * 1000:7.1f} ms CPU on first sight, {status_only * 1000:6.1f} ms after status writes")


if __name__ == "__main__":
    main()
