"""On-demand factories, the pure part: how many runner pods a scaled Factory should have, and which
idle pods may go. No I/O; the operator's scaler (binding/scaler.py) reads and writes.

Demand. After a cycle, each job that found no pod is attributed to at most one scaled Factory: of
the scaled factories whose *factory* filters it passes (the job's target, queue, namespace,
capabilities and agent fit; the factory is neither cordoned nor being deleted), the cheapest
(lowest costWeight, then name) — the one the scheduler would prefer once it had pods. So a job
never makes two factories grow at once.

Replicas. wanted slots = attributed waiting jobs + jobs bound or running on the factory + warm
slots; replicas = ceil(wanted slots / slotsPerPod), clamped to [minReplicas, maxReplicas]. Up at
once (within the cycle that saw the demand). Down only when the lower number has been wanted for
scaleDownDelaySeconds without a break, and only by removing idle pods: a pod with a job bound or
running, or one that got a binding within the delay, is never chosen; the count never drops below
minReplicas nor below what the busy pods need.
"""

import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence

from gigafactory.scheduling import framework, snapshots


@dataclasses.dataclass(frozen=True)
class Pool:
    """A scaled Factory as the scaler sees it at one instant."""

    factory: snapshots.FactoryInfo
    min_replicas: int
    max_replicas: int
    warm_slots: int
    scale_down_delay_seconds: int
    current_replicas: int  # what the Deployment asks for now
    pods: Sequence[snapshots.PodInfo]  # the pods that announced themselves
    used: Mapping[snapshots.PodKey, int]  # jobs bound or running per pod
    last_bound: Mapping[snapshots.PodKey, datetime.datetime]  # when each pod last got a binding
    lower_since: datetime.datetime | None  # since when a lower count than current has been wanted


@dataclasses.dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str
    remove: tuple[snapshots.PodKey, ...] = ()  # idle pods to take out first (pod-deletion-cost), when shrinking
    lower_since: datetime.datetime | None = None  # to carry into the next decision
    wanted: int = 0  # the demand-based count before the scale-down delay


def attribute(
    waiting: Iterable[snapshots.JobInfo],
    factories: Mapping[str, snapshots.FactoryInfo],
    profile: framework.Profile,
) -> dict[str, list[snapshots.JobInfo]]:
    """Waiting jobs per scaled factory (see the module's doc); `factories` holds the scaled ones only."""
    ranked = sorted(factories.values(), key=lambda f: (f.cost_weight, f.name))
    out: dict[str, list[snapshots.JobInfo]] = {f.name: [] for f in ranked}
    for job in waiting:
        for factory in ranked:
            if all(plugin.filter(job, factory).ok for plugin in profile.factory_filters):
                out[factory.name].append(job)
                break
    return out


def decide(pool: Pool, *, waiting: int, now: datetime.datetime) -> Decision:
    slots = max(1, pool.factory.slots_per_pod)
    running = sum(pool.used.get(pod.key, 0) for pod in pool.pods)
    want_slots = waiting + running + pool.warm_slots
    wanted = max(pool.min_replicas, min(pool.max_replicas, math.ceil(want_slots / slots)))
    why = (f"{waiting} waiting + {running} running + {pool.warm_slots} warm slots = {want_slots} slots "
           f"at {slots} per pod → {wanted} (bounds {pool.min_replicas}..{pool.max_replicas})")
    current = pool.current_replicas
    if wanted >= current:
        return Decision(wanted, ("scale up: " if wanted > current else "steady: ") + why, wanted=wanted)
    # Lower: only after the delay, and only idle pods go.
    since = pool.lower_since or now
    delay = datetime.timedelta(seconds=pool.scale_down_delay_seconds)
    if now - since < delay:
        left = int((since + delay - now).total_seconds())
        return Decision(current, f"holding {current} for {left}s more before scaling down: " + why, lower_since=since, wanted=wanted)
    recent = now - delay
    idle = [pod for pod in sorted(pool.pods, key=lambda p: p.name)
            if pool.used.get(pod.key, 0) == 0 and pool.last_bound.get(pod.key, datetime.datetime.min.replace(tzinfo=now.tzinfo)) <= recent]
    busy = len(pool.pods) - len(idle)
    # Pods not yet announced (starting) count as idle capacity that can simply not be started.
    unannounced = max(0, current - len(pool.pods))
    floor = max(wanted, busy, pool.min_replicas)
    target = max(floor, current - unannounced - len(idle))
    cut = current - target
    from_starting = min(cut, unannounced)
    remove = tuple(pod.key for pod in idle[: cut - from_starting])
    if target == current:
        return Decision(current, f"cannot scale down: {busy} busy pods: " + why, lower_since=since, wanted=wanted)
    return Decision(target, "scale down idle pods: " + why, remove=remove, lower_since=since if target > wanted else None,
                    wanted=wanted)
