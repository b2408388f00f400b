"""The scheduler's view of the world at one instant: pending jobs, runner pods, factories, bindings.

Pure data: the operator builds a Snapshot from its informer caches (raw dicts, parsed here without
pydantic because a cycle may read ten thousand jobs), and the cycle mutates only the snapshot's
free-slot counts (the "assume" step), never the caches.
"""

import collections
import dataclasses
import datetime
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from gigafactory import leases
from gigafactory.models import agentjobs, objects

PodKey = tuple[str, str]  # (namespace, name) of a runner pod
JobKey = tuple[str, str]  # (namespace, name) of an AgentJob

# The phases a job is waiting in: it has no binding and is neither finished nor being folded.
PENDING_PHASE = "Pending"


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """What the scheduler needs of one pending AgentJob."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    queue: str = "default"
    priority: int = 0
    created_at: datetime.datetime | None = None
    requeue_at: datetime.datetime | None = None
    attempt: int = 0
    agent: str = ""
    capabilities: frozenset[str] = frozenset()
    preferences: tuple[tuple[str, int], ...] = ()
    target_factory: str | None = None
    repo_key: str = ""
    suspended: bool = False
    cancelled: bool = False
    # Pods that lost one of this job's recent bindings (never claimed it, or stopped renewing it): the
    # job goes back to one of them only when no other pod fits ("undo it and bind elsewhere").
    avoid_pods: frozenset[str] = frozenset()

    @property
    def key(self) -> JobKey:
        return (self.namespace, self.name)

    @property
    def shape(self) -> tuple[Any, ...]:
        """Everything the hard filters read of a job: jobs of one shape fit the same pods."""
        return (self.namespace, self.queue, self.agent, self.capabilities, self.target_factory)


@dataclasses.dataclass(frozen=True)
class FactoryInfo:
    """What the scheduler needs of one Factory."""

    name: str
    agents: frozenset[str]
    capabilities: frozenset[str] = frozenset()
    subscriptions: frozenset[str] = frozenset({"*"})
    namespaces: frozenset[str] = frozenset({"*"})
    slots_per_pod: int = 1
    cost_weight: float = 1.0
    unschedulable: bool = False
    deleting: bool = False

    def subscribes(self, queue: str) -> bool:
        return "*" in self.subscriptions or queue in self.subscriptions

    def serves(self, namespace: str) -> bool:
        return "*" in self.namespaces or namespace in self.namespaces


@dataclasses.dataclass(frozen=True)
class PodInfo:
    """A runner pod as its heartbeat Lease announced it, judged at the snapshot's instant."""

    name: str
    namespace: str
    factory: str
    slots: int
    agents: frozenset[str]
    warm_repos: frozenset[str] = frozenset()
    ready: bool = True
    draining: bool = False

    @functools.cached_property
    def key(self) -> PodKey:  # read millions of times in a big cycle: built once
        return (self.namespace, self.name)

    @classmethod
    def from_heartbeat(cls, beat: leases.Heartbeat, *, at: datetime.datetime) -> "PodInfo":
        return cls(
            name=beat.pod,
            namespace=beat.namespace,
            factory=beat.factory,
            slots=beat.slots,
            agents=beat.agents,
            warm_repos=beat.warm_repos,
            ready=beat.is_ready(at),
            draining=beat.draining,
        )


@dataclasses.dataclass
class Snapshot:
    """One cycle's input. `used` and `repos_on_pod` are the only fields the cycle changes (assume)."""

    now: datetime.datetime
    jobs: list[JobInfo]
    pods: list[PodInfo]
    factories: dict[str, FactoryInfo]
    # Jobs bound to each pod now (bound or running): the slots they hold.
    used: dict[PodKey, int] = dataclasses.field(default_factory=dict)
    # Repo keys of the jobs bound to each pod, for the same-repo spread score.
    repos_on_pod: dict[PodKey, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    # Recent success ratio per factory, 0..1 (decayed; see SuccessRatios). Unknown → 0.5.
    success_ratio: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read millions of times in a big cycle: computed once.
        self._capacity: dict[PodKey, int] = {}
        for pod in self.pods:
            factory = self.factories.get(pod.factory)
            self._capacity[pod.key] = min(pod.slots, factory.slots_per_pod) if factory is not None else pod.slots

    def capacity(self, pod: PodInfo) -> int:
        """Slots of a pod: what it announced, capped by its factory's slotsPerPod."""
        known = self._capacity.get(pod.key)
        if known is not None:
            return known
        factory = self.factories.get(pod.factory)
        return min(pod.slots, factory.slots_per_pod) if factory is not None else pod.slots

    def free(self, pod: PodInfo) -> int:
        key = pod.key
        capacity = self._capacity.get(key)
        if capacity is None:
            capacity = self.capacity(pod)
        return capacity - self.used.get(key, 0)

    def assume(self, pod: PodInfo, job: JobInfo) -> None:
        """Count a decided binding before it is written, so one cycle never overfills a pod."""
        self.used[pod.key] = self.used.get(pod.key, 0) + 1
        if job.repo_key:
            self.repos_on_pod.setdefault(pod.key, collections.Counter())[job.repo_key] += 1


class SuccessRatios:
    """A decayed success ratio per factory: every outcome halves the weight of the older ones
    every `half_life` outcomes, with a prior of one success and one failure (so 0.5 when unknown)."""

    def __init__(self, *, half_life: int = 20) -> None:
        self._decay = 0.5 ** (1.0 / half_life)
        self._good: dict[str, float] = {}
        self._total: dict[str, float] = {}

    def record(self, factory: str, *, succeeded: bool) -> None:
        self._good[factory] = self._good.get(factory, 0.0) * self._decay + (1.0 if succeeded else 0.0)
        self._total[factory] = self._total.get(factory, 0.0) * self._decay + 1.0

    def ratio(self, factory: str) -> float:
        return (self._good.get(factory, 0.0) + 1.0) / (self._total.get(factory, 0.0) + 2.0)

    def as_dict(self) -> dict[str, float]:
        return {name: self.ratio(name) for name in self._total}

    def record_attempt(self, record: Mapping[str, Any]) -> None:
        """Count one ended attempt (a `status.attempts` record) if it says something about its factory."""
        verdict = factory_verdict(str(record.get("outcome") or ""), str(record.get("reason") or ""))
        if verdict is not None and record.get("factory"):
            self.record(str(record["factory"]), succeeded=verdict)

    @classmethod
    def from_jobs(cls, bodies: Iterable[Mapping[str, Any]], **kwargs: Any) -> "SuccessRatios":
        """Rebuild the ratios from the attempts the jobs record, oldest first: what a restarted
        operator knows of each factory's recent record (jobs deleted since are forgotten)."""
        records = [record for body in bodies for record in objects.attempts(body)]
        records.sort(key=lambda record: str(record.get("finishedAt") or ""))
        ratios = cls(**kwargs)
        for record in records:
            ratios.record_attempt(record)
        return ratios


# Attempts that say nothing about the factory that ran them: the job was refused for its own input
# (Rejected), stopped on request (Stopped), or never reached the runner (the operator's own Lease write failed).
_NOT_THE_FACTORYS_DOING = frozenset({agentjobs.Outcome.REJECTED.value, agentjobs.Outcome.STOPPED.value})


def factory_verdict(outcome: str, reason: str = "") -> bool | None:
    """True: a success of the factory; False: a failure of it; None: not its doing."""
    if outcome == agentjobs.Outcome.SUCCEEDED.value:
        return True
    if outcome in _NOT_THE_FACTORYS_DOING or reason == "LeaseCreateFailed" or not outcome:
        return None
    return False


# --- parsing raw API objects (dicts) ---


def _names(values: Iterable[Any] | None) -> frozenset[str]:
    return frozenset(str(v) for v in values or ())


def job_from_body(body: Mapping[str, Any]) -> JobInfo:
    meta, spec, status = objects.meta(body), objects.spec(body), objects.job_status(body)
    requirements = spec.get("requirements") or {}
    repo = spec.get("repo") or {}
    return JobInfo(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        queue=str(spec.get("queue") or "default"),
        priority=int(spec.get("priority") or 0),
        created_at=leases.parse_time(meta.get("creationTimestamp")),
        requeue_at=leases.parse_time(status.get("requeueAt")),
        attempt=int(status.get("attempt") or 0),
        agent=str(objects.mapping(spec.get("agent")).get("profile") or ""),
        capabilities=_names(requirements.get("capabilities")),
        preferences=tuple(
            (str(p.get("capability")), int(p.get("weight") or 10)) for p in requirements.get("preferences") or () if p.get("capability")
        ),
        target_factory=spec.get("targetFactory") or None,
        repo_key=leases.repo_key(repo["url"]) if repo.get("url") else "",
        suspended=bool(spec.get("suspend")),
        cancelled=bool(spec.get("cancel")),
        avoid_pods=lost_bindings(status.get("attempts")),
    )


LOST_BINDING_REASONS = frozenset({"ClaimTimeout", "LeaseExpired"})


def lost_bindings(attempts: Any, *, recent: int = 3) -> frozenset[str]:
    """The pods of the last `recent` attempts that ended because the pod let the binding go."""
    return frozenset(
        str(record["pod"])
        for record in (attempts or [])[-recent:]
        if isinstance(record, Mapping) and record.get("pod")
        and record.get("outcome") == agentjobs.Outcome.INFRA_ERROR.value and record.get("reason") in LOST_BINDING_REASONS
    )


def spec_problem(body: Mapping[str, Any]) -> str | None:
    """Why the operator cannot act on this job's spec, or None. The CRD schema refuses almost all of
    this at the API server; this catches the rest (and clusters where the schema is not enforced)."""
    try:
        agentjobs.AgentJobSpec.model_validate(body.get("spec") or {})  # validated as it is: a misshapen spec is the error
        job_from_body(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["spec", *(str(part) for part in first["loc"])])
        return f"{where}: {first['msg']}"
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"spec: {exc}"
    return None


def is_pending(body: Mapping[str, Any]) -> bool:
    """A job waits for the scheduler while its phase is Pending (or unset) and it has no assignment."""
    status = objects.job_status(body)
    return (status.get("phase") or PENDING_PHASE) == PENDING_PHASE and not status.get("assignment")


def factory_from_body(body: Mapping[str, Any]) -> FactoryInfo:
    meta, spec = objects.meta(body), objects.factory_spec(body)
    return FactoryInfo(
        name=str(meta.get("name") or ""),
        agents=_names(spec.get("agents")),
        capabilities=_names(spec.get("capabilities")),
        subscriptions=_names(spec.get("subscriptions") or ["*"]),
        namespaces=_names(spec.get("namespaces") or ["*"]),
        slots_per_pod=int(spec.get("slotsPerPod") or 1),
        cost_weight=float(spec["costWeight"]) if spec.get("costWeight") is not None else 1.0,
        unschedulable=bool(spec.get("unschedulable")),
        deleting=bool(meta.get("deletionTimestamp")),
    )
