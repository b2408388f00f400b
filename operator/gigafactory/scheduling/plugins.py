"""The Filter and Score plugins. Each reason string is what a person reads in the explanation
("3 lack capability gpu"), so it names the missing thing."""

import dataclasses
from typing import ClassVar, Literal

from gigafactory.scheduling import framework, snapshots
from gigafactory.scheduling.framework import MAX_SCORE, SUCCESS, Status, unresolvable, unschedulable

# --- factory filters: read the job and the pod's Factory only ---


class FactoryKnown:
    name: ClassVar[str] = "FactoryKnown"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        return SUCCESS if factory is not None else unresolvable("have no Factory object")


class TargetFactory:
    name: ClassVar[str] = "TargetFactory"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        if job.target_factory is None or (factory is not None and factory.name == job.target_factory):
            return SUCCESS
        return unresolvable(f"not in target factory {job.target_factory}")


class FactorySchedulable:
    name: ClassVar[str] = "FactorySchedulable"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        assert factory is not None
        if factory.deleting:
            return unschedulable("factory being deleted")
        if factory.unschedulable:
            return unschedulable("factory cordoned")
        return SUCCESS


class QueueSubscription:
    name: ClassVar[str] = "QueueSubscription"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        assert factory is not None
        return SUCCESS if factory.subscribes(job.queue) else unresolvable(f"not subscribed to queue {job.queue}")


class NamespaceAllowed:
    name: ClassVar[str] = "NamespaceAllowed"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        assert factory is not None
        return SUCCESS if factory.serves(job.namespace) else unresolvable(f"not serving namespace {job.namespace}")


class Capabilities:
    name: ClassVar[str] = "Capabilities"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        assert factory is not None
        missing = job.capabilities - factory.capabilities
        return SUCCESS if not missing else unresolvable(f"lack capability {','.join(sorted(missing))}")


class FactoryAgent:
    name: ClassVar[str] = "FactoryAgent"

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status:
        assert factory is not None
        return SUCCESS if job.agent in factory.agents else unresolvable(f"lack agent profile {job.agent}")


# --- pod filters: read the pod and the snapshot's free slots ---


class PodReady:
    name: ClassVar[str] = "PodReady"

    def filter(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, snapshot: snapshots.Snapshot) -> Status:
        if pod.draining:
            return unschedulable("draining")
        return SUCCESS if pod.ready else unschedulable("heartbeat stale")


class PodAgent:
    name: ClassVar[str] = "PodAgent"

    def filter(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, snapshot: snapshots.Snapshot) -> Status:
        return SUCCESS if job.agent in pod.agents else unresolvable(f"lack agent profile {job.agent}")


class FreeSlot:
    name: ClassVar[str] = "FreeSlot"
    # Its answer changes within a cycle (assume), so the cycle re-checks it for every job.
    dynamic: ClassVar[bool] = True

    def filter(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, snapshot: snapshots.Snapshot) -> Status:
        return SUCCESS if snapshot.free(pod) > 0 else unschedulable("full")


# --- score plugins ---


@dataclasses.dataclass
class FreeCapacity:
    """spread: the pod with the most free slots (share of its capacity) wins; pack: the fullest."""

    name: ClassVar[str] = "FreeCapacity"
    weight: int = 1
    strategy: Literal["spread", "pack"] = "spread"

    def score(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot) -> int:
        capacity = snapshot.capacity(pod)
        if capacity <= 0:
            return 0
        free = snapshot.free(pod)
        if self.strategy == "pack":
            # Fewest free slots after this job lands; a pod about to be full scores 100.
            return MAX_SCORE * (capacity - free + 1) // capacity
        return MAX_SCORE * free // capacity

    def normalize(self, scores: list[int]) -> list[int]:
        return framework.normalize_to_max(scores)


@dataclasses.dataclass
class WarmRepo:
    """A pod that holds a mirror of the job's repository fetches a delta instead of a clone."""

    name: ClassVar[str] = "WarmRepo"
    weight: int = 2

    def score(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot) -> int:
        return MAX_SCORE if job.repo_key and job.repo_key in pod.warm_repos else 0

    def normalize(self, scores: list[int]) -> list[int]:
        return scores


@dataclasses.dataclass
class Preferences:
    """Share of the job's preference weight that the factory's capabilities satisfy."""

    name: ClassVar[str] = "Preferences"
    weight: int = 2

    def score(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot) -> int:
        total = sum(weight for _, weight in job.preferences)
        if not total:
            return 0
        met = sum(weight for capability, weight in job.preferences if capability in factory.capabilities)
        return MAX_SCORE * met // total

    def normalize(self, scores: list[int]) -> list[int]:
        return scores


@dataclasses.dataclass
class Cost:
    """Cheaper factories score higher: 100 / (1 + costWeight), rescaled so the cheapest gets 100."""

    name: ClassVar[str] = "Cost"
    weight: int = 1

    def score(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot) -> int:
        return round(MAX_SCORE / (1.0 + factory.cost_weight))

    def normalize(self, scores: list[int]) -> list[int]:
        return framework.normalize_to_max(scores)


@dataclasses.dataclass
class SuccessRate:
    """The factory's recent (decayed) success ratio; 50 for a factory with no history."""

    name: ClassVar[str] = "SuccessRate"
    weight: int = 1

    def score(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot) -> int:
        return round(MAX_SCORE * snapshot.success_ratio.get(factory.name, 0.5))

    def normalize(self, scores: list[int]) -> list[int]:
        return scores


@dataclasses.dataclass
class RepoSpread:
    """Avoid a second concurrent job of one repository on one pod (they would contend for its mirror)."""

    name: ClassVar[str] = "RepoSpread"
    weight: int = 1

    def score(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot) -> int:
        if not job.repo_key:
            return MAX_SCORE
        running = snapshot.repos_on_pod.get(pod.key)
        return 0 if running and running.get(job.repo_key) else MAX_SCORE

    def normalize(self, scores: list[int]) -> list[int]:
        return scores


def default_profile(
    *,
    capacity_strategy: Literal["spread", "pack"] = "spread",
    weight_free_capacity: int = 1,
    weight_warm_repo: int = 2,
    weight_preferences: int = 2,
    weight_cost: int = 1,
    weight_success_rate: int = 1,
    weight_repo_spread: int = 1,
    aging_seconds_per_point: float = 60.0,
    max_pods_to_score: int = 32,
) -> framework.Profile:
    """The operator's profile; the keywords are OperatorSettings' fields (see framework.settings_values)."""
    return framework.Profile(
        factory_filters=(FactoryKnown(), TargetFactory(), FactorySchedulable(), QueueSubscription(), NamespaceAllowed(), Capabilities(), FactoryAgent()),
        pod_filters=(PodReady(), PodAgent(), FreeSlot()),
        scorers=(
            FreeCapacity(weight=weight_free_capacity, strategy=capacity_strategy),
            WarmRepo(weight=weight_warm_repo),
            Preferences(weight=weight_preferences),
            Cost(weight=weight_cost),
            SuccessRate(weight=weight_success_rate),
            RepoSpread(weight=weight_repo_spread),
        ),
        aging_seconds_per_point=aging_seconds_per_point,
        max_pods_to_score=max_pods_to_score,
    )
