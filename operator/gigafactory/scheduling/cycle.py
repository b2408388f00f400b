"""One scheduling cycle, as numbered steps (each timed):

1. snapshot — the caller hands in a Snapshot (the operator builds it from its informer caches);
2. order    — pending jobs by effective priority, round-robin across queues (queues.order);
3. filter   — factory filters once per job *shape* and factory, pod filters once per shape and pod,
              the free-slot filter per job (it changes as the cycle assumes bindings); pods that let
              one of the job's last bindings go (ClaimTimeout, LeaseExpired) only if nothing else fits;
4. score    — every Score plugin on up to `max_pods_to_score` (32) feasible pods: the job's warm pods
              first, then the others in rotating order;
5. normalize— each plugin's scores over the candidates, then the weighted 0–100 sum;
6. pick     — the highest score (ties: the earlier candidate, so rotation spreads them);
7. assume   — count the binding in the snapshot's free slots before anything is written;
8. return   — the bind decisions, and for every job that fits nowhere an explanation.

Indexes keep the common case far from jobs × pods: pods by factory, the filter verdicts of a shape
(namespace, queue, agent, capabilities, pin) shared by all its jobs, the warm pods of a repository
within a shape, and a shape marked exhausted (explained once) when none of its pods has a free slot.
"""

import collections
import dataclasses
import time
from typing import Any

from gigafactory.scheduling import framework, queues, snapshots


@dataclasses.dataclass(frozen=True)
class Decision:
    """Bind `job` to `pod`: what the binder writes."""

    job: snapshots.JobInfo
    pod: snapshots.PodInfo
    score: int
    scores: dict[str, int]
    attempt: int


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why a job fits nowhere this cycle."""

    job: snapshots.JobInfo
    reasons: dict[str, int]  # reason → pods it excluded
    pods_total: int
    position: int  # 1-based place in its queue
    resolvable: bool  # False when no pod can fit until the job or the fleet's configuration changes

    @property
    def message(self) -> str:
        return explain(self.reasons, self.pods_total)

    @property
    def message_with_position(self) -> str:
        return f"{self.message} (position {self.position} in queue {self.job.queue})"


_NO_PODS = "0/0 factory pods fit: no runner pod has announced itself"

# Reasons that describe a pod's passing state, not the job or the fleet's configuration: a fleet of
# a thousand pods changes their counts all the time (a slot frees, a pod restarts).
VOLATILE_REASONS = frozenset({"full", "heartbeat stale", "draining"})


def explain(reasons: dict[str, int], pods_total: int) -> str:
    if pods_total == 0:
        return _NO_PODS
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
    return f"0/{pods_total} factory pods fit: {parts}"


def reasons_of(message: str) -> dict[str, int] | None:
    """The reason counts of a message `explain` wrote (None if it is not one). Reasons never hold
    ", " (names are DNS labels, capability lists are joined by a bare comma)."""
    prefix, sep, rest = message.partition(" factory pods fit: ")
    if not sep or not prefix.startswith("0/"):
        return None
    if message == _NO_PODS:
        return {}
    reasons: dict[str, int] = {}
    for part in rest.split(", "):
        count, _, reason = part.partition(" ")
        if not count.isdigit() or not reason:
            return None
        reasons[reason] = int(count)
    return reasons


def gist(reasons: dict[str, int]) -> tuple[frozenset[str], bool]:
    """What a waiting job's explanation says in substance: the reasons that only a change of the job
    or of the fleet's configuration lifts, and whether some pods are merely busy or away."""
    return frozenset(r for r in reasons if r not in VOLATILE_REASONS), any(r in VOLATILE_REASONS for r in reasons)


def explanation_due(*, current: str | None, new: Explanation, written_ago: float, refresh_seconds: float) -> bool:
    """Whether to rewrite a waiting job's Scheduled=False message now. `current` is the message it
    carries (None: it has no Unschedulable condition yet), `written_ago` how long ago this operator
    last wrote it. The substance (`gist`) is written at once; a change of counts alone (a slot freed,
    a pod joined or went stale) waits until the message is `refresh_seconds` old, so that churn in a
    big fleet does not rewrite every waiting job on every cycle."""
    if current is None:
        return True
    message = new.message
    if current == message:
        return False
    before = reasons_of(current)
    if before is None or gist(before) != gist(new.reasons):
        return True
    return written_ago >= refresh_seconds


@dataclasses.dataclass
class CycleResult:
    decisions: list[Decision] = dataclasses.field(default_factory=list)
    unschedulable: list[Explanation] = dataclasses.field(default_factory=list)
    skipped: list[snapshots.JobInfo] = dataclasses.field(default_factory=list)  # suspended, cancelled, in backoff
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


class _Shape:
    """The filter verdicts shared by every job of one shape."""

    def __init__(self) -> None:
        self.factory_reasons: dict[str, framework.Status] = {}  # failed factories
        self.pod_reasons: dict[snapshots.PodKey, str] = {}  # failed static pod filters
        self.candidates: list[snapshots.PodInfo] = []  # pass every static filter
        self.cursor = 0
        self.warm: dict[str, list[snapshots.PodInfo]] = {}
        self.explained: tuple[int, dict[str, int], bool] | None = None  # (binds then, reasons, resolvable): exhausted


class Cycle:
    def __init__(self, snapshot: snapshots.Snapshot, profile: framework.Profile) -> None:
        self.snapshot = snapshot
        self.profile = profile
        self.static_pod_filters = [f for f in profile.pod_filters if not getattr(f, "dynamic", False)]
        self.dynamic_pod_filters = [f for f in profile.pod_filters if getattr(f, "dynamic", False)]
        self.pods_by_factory: dict[str, list[snapshots.PodInfo]] = collections.defaultdict(list)
        for pod in snapshot.pods:
            self.pods_by_factory[pod.factory].append(pod)
        self.shapes: dict[tuple[Any, ...], _Shape] = {}
        self.binds = 0

    def _shape(self, job: snapshots.JobInfo) -> _Shape:
        shape = self.shapes.get(job.shape)
        if shape is not None:
            return shape
        shape = self.shapes[job.shape] = _Shape()
        for name, pods in self.pods_by_factory.items():
            factory = self.snapshot.factories.get(name)
            for plugin in self.profile.factory_filters:
                status = plugin.filter(job, factory)
                if not status.ok:
                    shape.factory_reasons[name] = status
                    break
            else:
                for pod in pods:
                    for pod_filter in self.static_pod_filters:
                        status = pod_filter.filter(job, pod, self.snapshot)
                        if not status.ok:
                            shape.pod_reasons[pod.key] = status.reason
                            break
                    else:
                        shape.candidates.append(pod)
        return shape

    def _explain(self, job: snapshots.JobInfo, shape: _Shape) -> tuple[dict[str, int], bool]:
        # Once no candidate of a shape has a free slot, later binds only fill pods further: the
        # explanation holds for the rest of the cycle and is computed once per shape.
        if shape.explained is not None:
            return shape.explained[1], shape.explained[2]
        reasons: collections.Counter[str] = collections.Counter()
        resolvable = False
        for name, pods in self.pods_by_factory.items():
            failed = shape.factory_reasons.get(name)
            if failed is not None:
                reasons[failed.reason] += len(pods)
                resolvable |= failed.code is framework.Code.UNSCHEDULABLE
                continue
            for pod in pods:
                reason = shape.pod_reasons.get(pod.key)
                if reason is None:
                    for pod_filter in self.dynamic_pod_filters:
                        status = pod_filter.filter(job, pod, self.snapshot)
                        if not status.ok:
                            reason = status.reason
                            break
                    resolvable = True
                if reason is not None:
                    reasons[reason] += 1
        # A stale or draining pod may come back: that is resolvable too.
        resolvable |= any(r in ("heartbeat stale", "draining", "full") for r in reasons)
        shape.explained = (self.binds, dict(reasons), resolvable)
        return dict(reasons), resolvable

    def _feasible(self, job: snapshots.JobInfo, shape: _Shape) -> list[snapshots.PodInfo]:
        limit = self.profile.max_pods_to_score
        picked: list[snapshots.PodInfo] = []
        seen: set[snapshots.PodKey] = set()

        dynamic, snapshot = self.dynamic_pod_filters, self.snapshot

        def passes(pod: snapshots.PodInfo) -> bool:
            for pod_filter in dynamic:
                if not pod_filter.filter(job, pod, snapshot).ok:
                    return False
            return True

        if job.repo_key:
            warm = shape.warm.get(job.repo_key)
            if warm is None:
                warm = shape.warm[job.repo_key] = [pod for pod in shape.candidates if job.repo_key in pod.warm_repos]
            for pod in warm:
                if len(picked) >= limit:
                    break
                if passes(pod):
                    picked.append(pod)
                    seen.add(pod.key)
        candidates = shape.candidates
        count = len(candidates)
        if count and len(picked) < limit:
            start = shape.cursor % count
            full = 0
            for offset in range(count):
                pod = candidates[(start + offset) % count]
                if pod.key in seen:
                    continue
                if passes(pod):
                    picked.append(pod)
                    if len(picked) >= limit:
                        break
                else:
                    full += 1
            shape.cursor = start + 1
            if full > limit:
                # Drop pods that no longer pass (full): they stay full for the rest of the cycle. As
                # soon as a scan met more full pods than it may pick, not when half are: else every
                # job rescans up to half the fleet, and a cycle grows with jobs × pods.
                shape.candidates = [pod for pod in candidates if passes(pod)]
                shape.warm.clear()
        return picked

    def _score(self, job: snapshots.JobInfo, pods: list[snapshots.PodInfo]) -> tuple[int, int, dict[str, int]]:
        snapshot = self.snapshot
        pairs = [(pod, snapshot.factories[pod.factory]) for pod in pods]
        columns: dict[str, list[int]] = {}
        for plugin in self.profile.scorers:
            if not plugin.weight:
                continue
            score = plugin.score
            raw = [score(job, pod, factory, snapshot) for pod, factory in pairs]
            columns[plugin.name] = plugin.normalize(raw)
        return framework.combine(self.profile, columns)

    def run(self) -> CycleResult:
        result = CycleResult()
        now = self.snapshot.now
        started = time.perf_counter()

        # 2. order
        eligible = []
        for job in self.snapshot.jobs:
            if job.suspended or job.cancelled or (job.requeue_at is not None and job.requeue_at > now):
                result.skipped.append(job)
            else:
                eligible.append(job)
        entries = queues.order(eligible, now=now, aging_seconds_per_point=self.profile.aging_seconds_per_point)
        mark = time.perf_counter()
        result.timings["order"] = mark - started

        filtering = scoring = 0.0
        for entry in entries:
            job = entry.job
            # 3. filter
            t0 = time.perf_counter()
            shape = self._shape(job)
            feasible = self._feasible(job, shape) if shape.candidates and shape.explained is None else []
            if job.avoid_pods and feasible:
                # A pod that let this job's binding go gets it back only when nothing else fits.
                feasible = [pod for pod in feasible if pod.name not in job.avoid_pods] or feasible
            t1 = time.perf_counter()
            filtering += t1 - t0
            if not feasible:
                reasons, resolvable = self._explain(job, shape)
                result.unschedulable.append(
                    Explanation(job=job, reasons=reasons, pods_total=len(self.snapshot.pods), position=entry.position, resolvable=resolvable)
                )
                scoring += time.perf_counter() - t1
                continue
            # 4–6. score, normalize, pick
            index, score, parts = self._score(job, feasible)
            pod = feasible[index]
            # 7. assume
            self.snapshot.assume(pod, job)
            self.binds += 1
            result.decisions.append(Decision(job=job, pod=pod, score=score, scores=parts, attempt=job.attempt + 1))
            scoring += time.perf_counter() - t1
        result.timings["filter"] = filtering
        result.timings["score"] = scoring
        result.timings["total"] = time.perf_counter() - started
        return result


def run(snapshot: snapshots.Snapshot, profile: framework.Profile) -> CycleResult:
    """Run one cycle over the snapshot (whose free slots it updates) and return what to bind and explain."""
    return Cycle(snapshot, profile).run()
