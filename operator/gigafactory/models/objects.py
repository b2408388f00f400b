"""Typed views of Kubernetes objects as the API (or a cache of its watch events) hands them over:
plain dicts, read through these accessors instead of `(body.get("status") or {}).get(...)` chains.

Every accessor takes any mapping and returns a typed view of the part asked for, empty when the
part is missing or is not the JSON shape it should be: objects come from the API server, but their
status, labels and annotations were written by runners and agents too (hostile input), so a wrong
shape reads as absent instead of raising in the middle of a reconcile. The views are TypedDicts
(the dicts themselves, not copies): the type checker knows the fields the code reads, and nothing is
converted or validated on the hot path (pydantic models validate specs at admission and in the
scheduler; these only name the shape).
"""

from collections.abc import Mapping
from typing import Any, TypedDict, cast

from gigafactory import constants
from gigafactory.models import agentjobs


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    finalizers: list[str]
    ownerReferences: list[dict[str, Any]]


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class PushedBranch(TypedDict, total=False):
    """attempts[].pushed: what a runner announced on its binding Lease before pushing."""

    branch: str
    commit: str


class DiffStat(TypedDict, total=False):
    filesChanged: int
    insertions: int
    deletions: int


class Result(TypedDict, total=False):
    """status.result, report.result: what a successful attempt produced (runner-written)."""

    branch: str
    commit: str
    baseCommit: str
    changedFiles: list[str]
    diffstat: DiffStat
    summary: str


class ModelTokens(TypedDict, total=False):
    model: str
    inputTokens: int
    outputTokens: int
    requests: int
    cost: float  # the operator's estimate, in attempt records (a runner's own is dropped)


class Assignment(TypedDict, total=False):
    """status.assignment: the current binding (operator-written; the runner adds claimedAt)."""

    factory: str
    pod: str
    podNamespace: str
    attempt: int
    lease: str
    leaseNamespace: str
    boundAt: str
    claimedAt: str
    score: int
    scores: dict[str, int]
    prices: list[dict[str, Any]]


class Ending(TypedDict, total=False):
    """How an attempt ended: what its runner's report says, and what its record keeps of it."""

    attempt: int
    pod: str
    outcome: str
    reason: str
    message: str
    exitCode: int
    finishedAt: str
    logRef: str
    tokens: list[ModelTokens]


class AttemptRecord(Ending, total=False):
    """One entry of status.attempts (folded from a runner's report, or an undone binding)."""

    factory: str
    score: int
    scores: dict[str, int]
    startedAt: str
    counted: bool
    cost: float
    pushed: PushedBranch


class Report(Ending, total=False):
    """status.report: how a runner says its attempt ended, until the operator folds it in."""

    result: Result


class JobStatus(TypedDict, total=False):
    """An AgentJob's status (models/agentjobs.py's AgentJobStatus, as the API hands it over). Read the
    nested parts a runner writes through assignment(), report(), result() and attempts(): they check
    the shape; the fields here only name it."""

    phase: str
    reason: str
    conditions: list[Condition]
    observedGeneration: int
    attempt: int
    assignment: Assignment
    factory: str
    pod: str
    attempts: list[AttemptRecord]
    tokens: int
    cost: float
    requeueAt: str
    startTime: str
    completionTime: str
    result: Result
    report: Report
    countFrom: int
    retryRequest: str


class LeaseSpec(TypedDict, total=False):
    """A coordination.k8s.io/v1 Lease's spec (heartbeat, binding and leader Leases)."""

    holderIdentity: str | None
    leaseDurationSeconds: int
    acquireTime: str | None
    renewTime: str | None
    leaseTransitions: int


class ScalingSpec(TypedDict, total=False):
    minReplicas: int
    maxReplicas: int
    warmSlots: int
    scaleDownDelaySeconds: int
    template: dict[str, Any]


class FactorySpec(TypedDict, total=False):
    """A Factory's spec (models/factories.py's FactorySpec, as the API hands it over)."""

    capabilities: list[str]
    agents: list[str]
    slotsPerPod: int
    subscriptions: list[str]
    namespaces: list[str]
    costWeight: float
    unschedulable: bool
    drainGraceSeconds: int
    scaling: ScalingSpec
    prices: list[dict[str, Any]]


class FactoryStatus(TypedDict, total=False):
    phase: str
    conditions: list[Condition]
    observedGeneration: int
    pods: list[dict[str, Any]]
    readyPods: int
    slotsTotal: int
    slotsUsed: int
    scaling: dict[str, Any]


def mapping(value: object) -> dict[str, Any]:
    """value when it is a JSON object, else {}."""
    return value if isinstance(value, dict) else {}


def items(value: object) -> list[Any]:
    """value when it is a JSON array, else []."""
    return value if isinstance(value, list) else []


# Each accessor reads its part in place, in the shape `value: View | None = ...; return value if
# isinstance(value, dict) else {}`: typed without a cast (a runtime call), since the scheduler's
# snapshot reads every job through them.


def meta(obj: Mapping[str, Any]) -> ObjectMeta:
    """metadata ({} when missing)."""
    value: ObjectMeta | None = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def _meta_text(obj: Mapping[str, Any], key: str) -> str:
    meta = obj.get("metadata")
    value = meta.get(key) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else ""


def uid(obj: Mapping[str, Any]) -> str:
    """metadata.uid ("" when missing)."""
    return _meta_text(obj, "uid")


def name(obj: Mapping[str, Any]) -> str:
    """metadata.name ("" when missing)."""
    return _meta_text(obj, "name")


def namespace(obj: Mapping[str, Any]) -> str:
    """metadata.namespace ("" when missing: a cluster-scoped object)."""
    return _meta_text(obj, "namespace")


def key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name): how the informers' caches and the timers know an object."""
    return namespace(obj), name(obj)


def spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """spec ({} when missing)."""
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """status ({} when missing or not an object)."""
    value = obj.get("status")
    return value if isinstance(value, dict) else {}


def field(obj: Mapping[str, Any], *path: str) -> dict[str, Any]:
    """The object at a path of keys ({} where any step is missing or not an object):
    field(job, "spec", "repo")."""
    current: dict[str, Any] = mapping(obj)
    for key in path:
        current = mapping(current.get(key))
    return current


def text(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    """A string field (default when missing or not a string)."""
    value = obj.get(key)
    return value if isinstance(value, str) else default


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return mapping(meta(obj).get("labels"))


def annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return mapping(meta(obj).get("annotations"))


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    value = meta(obj).get("finalizers")
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def deleting(obj: Mapping[str, Any]) -> bool:
    """Whether the object is being deleted (metadata.deletionTimestamp is set)."""
    return bool(meta(obj).get("deletionTimestamp"))


def conditions(obj: Mapping[str, Any]) -> list[Condition]:
    """status.conditions, the entries that are objects."""
    value = status(obj).get("conditions")
    return [cast(Condition, item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def condition(obj: Mapping[str, Any], type: str) -> Condition | None:
    """The condition of this type in status.conditions, if any."""
    return next((item for item in conditions(obj) if item.get("type") == type), None)


def data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A ConfigMap's (or a Secret's) data ({} when missing)."""
    return mapping(obj.get("data"))


# --- AgentJobs ---


def job_status(obj: Mapping[str, Any]) -> JobStatus:
    """An AgentJob's status ({} when missing or not an object)."""
    value: JobStatus | None = obj.get("status")
    return value if isinstance(value, dict) else {}


def phase(obj: Mapping[str, Any], default: str = agentjobs.Phase.PENDING.value) -> str:
    """An AgentJob's status.phase (default while it has none, or a misshapen one)."""
    return text(status(obj), "phase") or default


# The condition that says why a job is in its phase, for a job written before status.reason existed.
_PHASE_CONDITIONS = {agentjobs.Phase.SUCCEEDED.value: constants.ConditionType.COMPLETE.value,
                     agentjobs.Phase.FAILED.value: constants.ConditionType.FAILED.value,
                     agentjobs.Phase.RUNNING.value: constants.ConditionType.RUNNING.value}


def phase_reason(obj: Mapping[str, Any]) -> str:
    """Why an AgentJob is in its phase: status.reason; else the reason of the condition that goes with
    the phase (Scheduled for a waiting or bound one); else "Cancelled" for a cancelled one, or ""."""
    reason = status(obj).get("reason")
    if reason:
        return str(reason)
    current = phase(obj)
    found = condition(obj, _PHASE_CONDITIONS.get(current, constants.ConditionType.SCHEDULED.value)) or {}
    return str(found.get("reason") or (current if current == agentjobs.Phase.CANCELLED.value else ""))


def assignment(obj: Mapping[str, Any]) -> Assignment:
    """status.assignment, the current binding ({} when there is none)."""
    job = obj.get("status")
    value: Assignment | None = job.get("assignment") if isinstance(job, dict) else None
    return value if isinstance(value, dict) else {}


def report(obj: Mapping[str, Any]) -> Report:
    """status.report, written by the runner ({} when none or misshapen)."""
    job = obj.get("status")
    value: Report | None = job.get("report") if isinstance(job, dict) else None
    return value if isinstance(value, dict) else {}


def result(part: Mapping[str, Any]) -> Result:
    """The result a job's status or a report holds ({} when none or misshapen): result(status(job))."""
    value: Result | None = part.get("result")
    return value if isinstance(value, dict) else {}


def attempts(obj: Mapping[str, Any]) -> list[AttemptRecord]:
    """status.attempts, the entries that are objects, oldest first."""
    value = status(obj).get("attempts")
    return [cast(AttemptRecord, item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def attempt_records(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every attempt a job has a record of: status.attempts, then status.report (an attempt its runner
    reported on that the operator has not folded in yet), the entries that are objects."""
    found: list[Mapping[str, Any]] = list(attempts(obj))
    if report(obj):
        found.append(report(obj))
    return found


def tokens(part: Mapping[str, Any]) -> list[ModelTokens]:
    """The tokens a report or an attempt record counts, the entries that are objects."""
    value = part.get("tokens")
    return [cast(ModelTokens, item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def pushed(record: Mapping[str, Any]) -> PushedBranch:
    """An attempt record's pushed branch ({} when none or misshapen)."""
    value: PushedBranch | None = record.get("pushed")
    return value if isinstance(value, dict) else {}


def placement(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(factory, pod) of a job's current attempt, or of the last one once it ended ("" when none)."""
    current, job, done = assignment(obj), status(obj), attempts(obj)
    last: Mapping[str, Any] = done[-1] if done else {}
    factory = text(current, "factory") or text(job, "factory") or text(last, "factory")
    pod = text(current, "pod") or text(job, "pod") or text(last, "pod")
    return factory, pod


# --- Leases and Factories ---


def lease_spec(obj: Mapping[str, Any]) -> LeaseSpec:
    """A Lease's spec ({} when missing)."""
    value: LeaseSpec | None = obj.get("spec")
    return value if isinstance(value, dict) else {}


def factory_spec(obj: Mapping[str, Any]) -> FactorySpec:
    """A Factory's spec ({} when missing)."""
    value: FactorySpec | None = obj.get("spec")
    return value if isinstance(value, dict) else {}


def factory_status(obj: Mapping[str, Any]) -> FactoryStatus:
    """A Factory's status ({} when missing)."""
    value: FactoryStatus | None = obj.get("status")
    return value if isinstance(value, dict) else {}
