"""The plugin framework, after kube-scheduler's: Filter plugins say yes or why not, Score plugins
rate a feasible pod 0–100, an optional normalize step rescales one plugin's scores over the
candidates, and weights combine them into one 0–100 score.

Filters are split by what they read: a *factory* filter reads only the job and the pod's Factory,
so the cycle runs it once per (job shape, factory) instead of once per (job, pod); a *pod* filter
reads the pod and the snapshot's free slots. Plugins read only the snapshot they are given.
"""

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from gigafactory.scheduling import snapshots

MAX_SCORE = 100


class Code(str, enum.Enum):
    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"  # may fit later (a slot frees up, a heartbeat comes back)
    UNRESOLVABLE = "UnschedulableAndUnresolvable"  # will not fit until the job or the factory changes


@dataclasses.dataclass(frozen=True)
class Status:
    code: Code = Code.SUCCESS
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS


SUCCESS = Status()


def unschedulable(reason: str) -> Status:
    return Status(Code.UNSCHEDULABLE, reason)


def unresolvable(reason: str) -> Status:
    return Status(Code.UNRESOLVABLE, reason)


class FactoryFilter(Protocol):
    name: ClassVar[str]

    def filter(self, job: snapshots.JobInfo, factory: snapshots.FactoryInfo | None) -> Status: ...


class PodFilter(Protocol):
    name: ClassVar[str]

    def filter(self, job: snapshots.JobInfo, pod: snapshots.PodInfo, snapshot: snapshots.Snapshot) -> Status: ...


class ScorePlugin(Protocol):
    name: ClassVar[str]
    weight: int

    def score(
        self, job: snapshots.JobInfo, pod: snapshots.PodInfo, factory: snapshots.FactoryInfo, snapshot: snapshots.Snapshot
    ) -> int: ...

    def normalize(self, scores: list[int]) -> list[int]: ...


def normalize_to_max(scores: list[int]) -> list[int]:
    """Rescale so that the best candidate gets MAX_SCORE (kube-scheduler's default normalizer)."""
    top = max(scores, default=0)
    if top <= 0:
        return scores
    return [score * MAX_SCORE // top for score in scores]


def identity(scores: list[int]) -> list[int]:
    return scores


@dataclasses.dataclass(frozen=True)
class Profile:
    """The plugins of one scheduler, in the order they run, and the policy knobs of ordering."""

    factory_filters: Sequence[FactoryFilter]
    pod_filters: Sequence[PodFilter]
    scorers: Sequence[ScorePlugin]
    aging_seconds_per_point: float = 60.0
    # Score at most this many feasible pods per job (kube-scheduler's percentageOfNodesToScore):
    # the job's warm pods always, then pods in rotating order so that ties spread.
    max_pods_to_score: int = 32


def combine(profile: Profile, columns: dict[str, list[int]]) -> tuple[int, int, dict[str, int]]:
    """Weigh the normalized columns into one 0–100 score per candidate; return the best candidate's
    index, its score and each plugin's normalized score for it. Ties go to the earlier candidate."""
    weights = {plugin.name: plugin.weight for plugin in profile.scorers if plugin.weight}
    total = sum(weights.values())
    count = len(next(iter(columns.values()))) if columns else 0
    if not count:
        return 0, 0, {}
    sums = [0] * count
    for name, weight in weights.items():
        column = columns[name]
        for index in range(count):
            sums[index] += weight * column[index]
    best = max(range(count), key=sums.__getitem__)  # max() keeps the first of equal values
    parts = {name: columns[name][best] for name in weights}
    return best, (round(sums[best] / total) if total else 0), parts


def settings_values(settings: Any) -> dict[str, Any]:
    """The OperatorSettings fields the scheduler reads (duck-typed: scheduling imports no config)."""
    return {
        name: getattr(settings, name)
        for name in (
            "capacity_strategy",
            "weight_free_capacity",
            "weight_warm_repo",
            "weight_preferences",
            "weight_cost",
            "weight_success_rate",
            "weight_repo_spread",
            "aging_seconds_per_point",
            "max_pods_to_score",
        )
    }
