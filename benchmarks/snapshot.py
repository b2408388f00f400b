"""How long the scheduler takes to read jobs as the API sends them (CPU time): job_from_body and
is_pending over 1k, 5k and 10k AgentJob bodies with a status (some with attempts), plus the success
ratios read from their attempt records — the per-job reading a snapshot does on first sight.

Run: .venv/bin/python benchmarks/snapshot.py
"""

import sys
import pathlib
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "operator"))

from gigafactory.scheduling import snapshots  # noqa: E402

QUEUES = ["default", "backend", "frontend", "ml"]


def body(i: int) -> dict:
    attempts = [{"attempt": n + 1, "factory": f"pool-{n % 3}", "pod": f"pool-{n % 3}-{i % 7}",
                 "outcome": "Failed", "reason": "LeaseExpired" if n % 2 else "AgentFailed"} for n in range(i % 3)]
    return {
        "apiVersion": "gigafactory.dev/v1", "kind": "AgentJob",
        "metadata": {"name": f"job-{i}", "namespace": f"team-{i % 20}", "uid": f"uid-{i}", "resourceVersion": str(1000 + i),
                     "creationTimestamp": "2026-11-24T12:00:00Z"},
        "spec": {"queue": QUEUES[i % 4], "priority": i % 5, "repo": {"url": f"https://git.example/r{i % 50}.git"},
                 "agent": {"profile": "claude-code"}, "task": {"prompt": "fix it"},
                 "requirements": {"capabilities": ["python"] + (["gpu"] if i % 7 == 0 else []),
                                  "preferences": [{"capability": "warm", "weight": 5}]}},
        "status": {"phase": "Pending", "attempt": len(attempts), "attempts": attempts,
                   "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable"}]},
    }


def measure(count: int, rounds: int = 5) -> tuple[float, float]:
    bodies = [body(i) for i in range(count)]
    best_read = best_ratios = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        jobs = [snapshots.job_from_body(b) for b in bodies if snapshots.is_pending(b)]
        best_read = min(best_read, time.process_time() - started)
        started = time.process_time()
        snapshots.SuccessRatios.from_jobs(bodies)
        best_ratios = min(best_ratios, time.process_time() - started)
        assert len(jobs) == count
    return best_read * 1000, best_ratios * 1000


def main() -> None:
    print(f"{'jobs':>6}  {'read (ms)':>10}  {'ratios (ms)':>11}   (CPU, best of 5)")
    for count in (1_000, 5_000, 10_000):
        read, ratios = measure(count)
        print(f"{count:>6}  {read:>10.1f}  {ratios:>11.1f}")


if __name__ == "__main__":
    main()
