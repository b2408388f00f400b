"""What each dashboard page shows, computed from the informer caches: pure functions, no I/O.

Raw bodies are read with `.get()` chains rather than pydantic models (as the scheduler's snapshots
do): the Jobs page filters ten thousand jobs per request, and a job whose status a runner or an
older operator wrote oddly must still show, not fail the page.
"""

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gigafactory import constants, leases
from gigafactory.dashboard import bodies
from gigafactory.models import agentjobs, objects
from gigafactory.scheduling import queues, snapshots

Body = Mapping[str, Any]

PAGE_SIZE = 50
# The Queues page's chart: the last hour in buckets of this many minutes.
BUCKET_MINUTES = 5
HOUR = datetime.timedelta(hours=1)
TERMINAL = frozenset(p.value for p in agentjobs.TERMINAL_PHASES)
PHASES = tuple(p.value for p in agentjobs.Phase)


# ---- Fleet ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodRow:
    name: str
    namespace: str
    ready: bool
    slots: int
    running: int
    heartbeat: str  # age of the last renewal, "never"


@dataclasses.dataclass(frozen=True)
class FactoryRow:
    name: str
    phase: str
    ready_pods: int
    total_pods: int
    slots_used: int
    slots_total: int
    heartbeat: str  # the freshest pod's heartbeat age
    capabilities: tuple[str, ...]
    agents: tuple[str, ...]
    subscriptions: tuple[str, ...]
    states: tuple[str, ...]  # cordoned, draining, scaling 1→3 ...
    pods: tuple[PodRow, ...]


@dataclasses.dataclass(frozen=True)
class Fleet:
    factories: tuple[FactoryRow, ...]
    ready_pods: int
    total_pods: int
    slots_used: int
    slots_total: int
    jobs_by_phase: dict[str, int]


def _renewals(heartbeat_leases: Iterable[Body]) -> dict[tuple[str, str, str], datetime.datetime]:
    """When each runner pod last renewed its heartbeat Lease, by (factory, namespace, pod): the Factory
    status does not carry it (it would be rewritten on every renewal). As `gigafactory factories` reads it."""
    renewed: dict[tuple[str, str, str], datetime.datetime] = {}
    for lease in heartbeat_leases:
        beat = leases.parse_heartbeat(lease)
        moment = leases.renewed_at(lease)
        if beat is not None and moment is not None:
            renewed[(beat.factory, beat.namespace, beat.pod)] = moment
    return renewed


def fleet(factories: Iterable[Body], heartbeat_leases: Iterable[Body], jobs: Iterable[Body], *, now: datetime.datetime) -> Fleet:
    """Each factory with its pods and slots, and the totals. Only the pods the operator counts (the
    Factory status) are shown: a heartbeat Lease it ignores (outside the runner namespaces) is none."""
    renewed = _renewals(heartbeat_leases)
    rows = []
    for body in sorted(factories, key=objects.name):
        name = objects.name(body)
        spec, status = objects.factory_spec(body), objects.factory_status(body)
        pods = []
        freshest: datetime.datetime | None = None
        for pod in objects.items(status.get("pods")):
            pod = objects.mapping(pod)
            moment = renewed.get((name, bodies.text(pod.get("namespace")), bodies.text(pod.get("name")))) or leases.parse_time(
                pod.get("lastHeartbeat"))
            if moment is not None and (freshest is None or moment > freshest):
                freshest = moment
            pods.append(PodRow(name=bodies.text(pod.get("name")), namespace=bodies.text(pod.get("namespace")), ready=bool(pod.get("ready")),
                               slots=bodies.number(pod.get("slots")), running=bodies.number(pod.get("running")),
                               heartbeat=bodies.age(moment, now=now) + " ago" if moment else "never"))
        states = []
        if spec.get("unschedulable"):
            states.append("cordoned")
        if objects.deleting(body):
            states.append("draining")
        scaling = objects.mapping(status.get("scaling"))
        if spec.get("scaling"):
            states.append(f"scaling {bodies.number(scaling.get('currentReplicas'))}→{bodies.number(scaling.get('desiredReplicas'))}")
        rows.append(FactoryRow(
            name=name, phase=bodies.text(status.get("phase")) or "Offline",
            ready_pods=bodies.number(status.get("readyPods")), total_pods=len(pods),
            slots_used=bodies.number(status.get("slotsUsed")), slots_total=bodies.number(status.get("slotsTotal")),
            heartbeat=bodies.age(freshest, now=now) + " ago" if freshest else "never",
            capabilities=tuple(map(bodies.text, objects.items(spec.get("capabilities")))), agents=tuple(map(bodies.text, objects.items(spec.get("agents")))),
            subscriptions=tuple(map(bodies.text, objects.items(spec.get("subscriptions")))), states=tuple(states), pods=tuple(pods),
        ))
    by_phase = dict.fromkeys(PHASES, 0)
    for job in jobs:
        phase = objects.phase(job)
        by_phase[phase] = by_phase.get(phase, 0) + 1
    return Fleet(factories=tuple(rows), ready_pods=sum(r.ready_pods for r in rows), total_pods=sum(r.total_pods for r in rows),
                 slots_used=sum(r.slots_used for r in rows), slots_total=sum(r.slots_total for r in rows), jobs_by_phase=by_phase)


# ---- Per-job summaries ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """What the Jobs and Queues pages read of one job, computed once per change of it (the watcher
    keeps one per job): a request then filters ten thousand of these, not ten thousand bodies."""

    created: str  # creationTimestamp: RFC 3339 in UTC, so it sorts as text
    namespace: str
    name: str
    lowered: str  # the name, lower-case, for search
    queue: str
    phase: str
    factory: str
    pending: bool
    waiting_since: datetime.datetime | None  # a pending job's creation or end of backoff
    ended: tuple[tuple[datetime.datetime, bool], ...]  # each ended attempt: (finishedAt, succeeded)
    body: Body

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def summarize(body: Body) -> Summary:
    meta = objects.meta(body)
    name = bodies.text(meta.get("name"))
    pending = snapshots.is_pending(body)
    waiting_since = None
    if pending:
        try:  # the scheduler's parser expects what the CRD schema admits; a page must not fail on less
            info = snapshots.job_from_body(body)
            waiting_since = info.requeue_at or info.created_at
        except (AttributeError, TypeError, ValueError):
            waiting_since = None
    ended = []
    for record in objects.attempts(body):
        finished = leases.parse_time(bodies.text(record.get("finishedAt")))
        if finished is not None:
            ended.append((finished, record.get("outcome") == agentjobs.Outcome.SUCCEEDED.value))
    return Summary(created=bodies.text(meta.get("creationTimestamp")), namespace=bodies.text(meta.get("namespace")), name=name,
                   lowered=name.lower(), queue=bodies.text(objects.spec(body).get("queue")) or "default", phase=objects.phase(body),
                   factory=objects.placement(body)[0], pending=pending, waiting_since=waiting_since, ended=tuple(ended), body=body)


def newest_first(summaries: Iterable[Summary]) -> list[Summary]:
    """The Jobs page's order: newest first; ties by namespace and name, so a page is stable."""
    ordered = sorted(summaries, key=lambda s: (s.namespace, s.name))
    ordered.sort(key=lambda s: s.created, reverse=True)
    return ordered


# ---- Queues --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QueueRow:
    name: str
    pending: int
    active: int  # Bound or Running
    oldest_wait: str
    succeeded_hour: int
    failed_hour: int
    # Per bucket of the last hour, oldest first: (succeeded, failed) attempts that ended in it.
    buckets: tuple[tuple[int, int], ...]


def queue_rows(jobs: Iterable[Summary], *, now: datetime.datetime) -> tuple[QueueRow, ...]:
    """Per queue: what waits and since when, and the attempts that ended in the last hour."""
    count = int(HOUR.total_seconds() // (BUCKET_MINUTES * 60))
    stats: dict[str, dict[str, Any]] = {}
    since = now - HOUR
    for job in jobs:
        entry = stats.setdefault(job.queue, {"pending": 0, "active": 0, "oldest": None, "buckets": [[0, 0] for _ in range(count)]})
        if job.pending:
            entry["pending"] += 1
            if job.waiting_since is not None and (entry["oldest"] is None or job.waiting_since < entry["oldest"]):
                entry["oldest"] = job.waiting_since
        elif job.phase in (agentjobs.Phase.BOUND.value, agentjobs.Phase.RUNNING.value):
            entry["active"] += 1
        for finished, succeeded in job.ended:
            if not since < finished <= now:
                continue
            index = min(count - 1, int((finished - since).total_seconds() // (BUCKET_MINUTES * 60)))
            entry["buckets"][index][0 if succeeded else 1] += 1
    rows = []
    for name in sorted(stats):
        entry = stats[name]
        buckets = tuple((s, f) for s, f in entry["buckets"])
        rows.append(QueueRow(name=name, pending=entry["pending"], active=entry["active"],
                             oldest_wait=bodies.age(entry["oldest"], now=now) if entry["oldest"] else "",
                             succeeded_hour=sum(s for s, _ in buckets), failed_hour=sum(f for _, f in buckets), buckets=buckets))
    return tuple(rows)


# ---- Jobs ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Filters:
    namespace: str = ""
    queue: str = ""
    phase: str = ""
    factory: str = ""
    search: str = ""
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> "Filters":
        def one(key: str) -> str:
            return str(query.get(key, ""))[:253]

        try:
            page = max(1, min(int(query.get("page", "1")), 1_000_000))
        except ValueError:
            page = 1
        return cls(namespace=one("namespace"), queue=one("queue"), phase=one("phase"), factory=one("factory"),
                   search=one("q").strip().lower(), page=page)

    def query(self, **changes: Any) -> dict[str, str]:
        """The query string of these filters (with changes), without empty values."""
        values = dataclasses.replace(self, **changes)
        pairs = {"namespace": values.namespace, "queue": values.queue, "phase": values.phase, "factory": values.factory,
                 "q": values.search, "page": str(values.page) if values.page > 1 else ""}
        return {key: value for key, value in pairs.items() if value}


@dataclasses.dataclass(frozen=True)
class JobRow:
    namespace: str
    name: str
    phase: str
    reason: str
    queue: str
    priority: int
    factory: str
    pod: str
    attempt: int
    age: str


@dataclasses.dataclass(frozen=True)
class JobList:
    rows: tuple[JobRow, ...]
    total: int  # matching the filters
    page: int
    pages: int
    # What the filters' menus offer: the values that occur.
    namespaces: tuple[str, ...]
    queues: tuple[str, ...]
    factories: tuple[str, ...]


def job_list(ordered: Sequence[Summary], filters: Filters, *, now: datetime.datetime, page_size: int = PAGE_SIZE) -> JobList:
    """The jobs that match, in the given order (`newest_first`), one page of them. A linear pass over
    the summaries: a few milliseconds at ten thousand jobs."""
    matched = [
        s for s in ordered
        if (not filters.namespace or s.namespace == filters.namespace) and (not filters.queue or s.queue == filters.queue)
        and (not filters.factory or s.factory == filters.factory) and (not filters.phase or s.phase == filters.phase)
        and (not filters.search or filters.search in s.lowered)
    ]
    pages = max(1, -(-len(matched) // page_size))
    page = min(filters.page, pages)
    rows = tuple(_job_row(s.body, now=now) for s in matched[(page - 1) * page_size:page * page_size])
    return JobList(rows=rows, total=len(matched), page=page, pages=pages, namespaces=tuple(sorted({s.namespace for s in ordered})),
                   queues=tuple(sorted({s.queue for s in ordered})), factories=tuple(sorted({s.factory for s in ordered} - {""})))


def _job_row(job: Body, *, now: datetime.datetime) -> JobRow:
    meta, spec, status = objects.meta(job), objects.spec(job), objects.status(job)
    factory, pod = objects.placement(job)
    return JobRow(namespace=bodies.text(meta.get("namespace")), name=bodies.text(meta.get("name")), phase=objects.phase(job), reason=objects.phase_reason(job),
                  queue=bodies.text(spec.get("queue")) or "default", priority=bodies.number(spec.get("priority")), factory=factory, pod=pod,
                  attempt=bodies.number(status.get("attempt")), age=bodies.age(leases.parse_time(bodies.text(meta.get("creationTimestamp"))), now=now))


# ---- Job -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AttemptRow:
    attempt: int
    outcome: str
    reason: str
    message: str
    factory: str
    pod: str
    started: str
    finished: str
    duration: str
    score: str
    scores: tuple[tuple[str, int], ...]
    exit_code: str
    current: bool = False


@dataclasses.dataclass(frozen=True)
class JobDetail:
    namespace: str
    name: str
    phase: str
    reason: str
    spec: tuple[tuple[str, str], ...]  # label, value
    prompt: str
    conditions: tuple[tuple[str, str, str, str, str], ...]  # type, status, reason, message, age
    attempts: tuple[AttemptRow, ...]
    # Why it waits and where it stands (a waiting job), or where it runs and why there (a bound one).
    explanation: str
    position: tuple[int, int] | None
    queue: str
    result: Mapping[str, Any] | None
    log_ref: tuple[str, str, int] | None  # (log reference, pod, attempt) of the latest attempt that kept one


def _scores(value: Any) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((str(k), bodies.number(v)) for k, v in objects.mapping(value).items()), key=lambda kv: (-kv[1], kv[0])))


def job_detail(job: Body, pending: Iterable[Body], *, now: datetime.datetime, aging_seconds_per_point: float) -> JobDetail:
    """Everything the Job page shows of one job. `pending` is every job (its queue position is
    computed among the waiting ones, by the scheduler's own ordering)."""
    meta, spec, status = objects.meta(job), objects.spec(job), objects.status(job)
    repo, agent, task = objects.mapping(spec.get("repo")), objects.mapping(spec.get("agent")), objects.mapping(spec.get("task"))
    requirements, retry = objects.mapping(spec.get("requirements")), objects.mapping(spec.get("retry"))
    name = bodies.text(meta.get("name"))
    fields = [
        ("Queue", f"{bodies.text(spec.get('queue')) or 'default'} (priority {bodies.number(spec.get('priority'))})"),
        ("Repository", f"{bodies.text(repo.get('url'))} @ {bodies.text(repo.get('baseRef')) or 'main'}"),
        ("Branch", bodies.text(repo.get("branch")) or f"agent/{name}"),
        ("Credentials", bodies.text(repo.get("credentialsSecret")) or "none"),
        ("Agent", " ".join([bodies.text(agent.get("profile"))] + [bodies.text(a) for a in objects.items(agent.get("args"))])),
        ("Environment", ", ".join(bodies.text(objects.mapping(e).get("name")) for e in objects.items(agent.get("env"))) or "none"),
        ("Requires", ", ".join(map(bodies.text, objects.items(requirements.get("capabilities")))) or "nothing"),
        ("Prefers", ", ".join(f"{bodies.text(objects.mapping(p).get('capability'))} ({bodies.number(objects.mapping(p).get('weight'))})"
                              for p in objects.items(requirements.get("preferences"))) or "nothing"),
        ("Target factory", bodies.text(spec.get("targetFactory")) or "any"),
        ("Retry", f"up to {bodies.number(retry.get('maxAttempts')) or 3} attempts"),
        ("Deadline", f"{bodies.number(spec.get('activeDeadlineSeconds'))} s" if spec.get("activeDeadlineSeconds") else "none"),
        ("Created", bodies.text(meta.get("creationTimestamp"))),
    ]
    if spec.get("suspend"):
        fields.append(("Suspended", "yes"))
    if spec.get("cancel"):
        fields.append(("Cancel", "requested"))
    prompt_from = objects.mapping(objects.mapping(task.get("promptFrom")).get("configMapKeyRef"))
    prompt = bodies.text(task.get("prompt")) if task.get("prompt") is not None else (
        f"(from ConfigMap {bodies.text(prompt_from.get('name'))}, key {bodies.text(prompt_from.get('key'))})" if prompt_from else "")
    conditions = tuple(
        (bodies.text(c.get("type")), bodies.text(c.get("status")), bodies.text(c.get("reason")), bodies.text(c.get("message")),
         bodies.age(leases.parse_time(bodies.text(c.get("lastTransitionTime"))), now=now))
        for c in objects.conditions(job))
    attempts = [_attempt_row(record, now=now) for record in objects.attempts(job)]
    assignment = objects.assignment(job)
    if assignment:
        bound = leases.parse_time(bodies.text(assignment.get("boundAt")))
        attempts.append(AttemptRow(
            attempt=bodies.number(assignment.get("attempt")), outcome=objects.phase(job), reason=objects.phase_reason(job), message="",
            factory=bodies.text(assignment.get("factory")), pod=bodies.text(assignment.get("pod")), started=bodies.text(assignment.get("boundAt")),
            finished="", duration=bodies.age(bound, now=now) if bound else "", score=bodies.text(assignment.get("score")),
            scores=_scores(assignment.get("scores")), exit_code="", current=True))
    explanation, position = _explanation(job, pending, now=now, aging_seconds_per_point=aging_seconds_per_point)
    refs = [(r.get("logRef"), r.get("pod"), r.get("attempt")) for r in objects.attempt_records(job) if r.get("logRef")]
    log_ref = (bodies.text(refs[-1][0]), bodies.text(refs[-1][1]), bodies.number(refs[-1][2])) if refs else None
    result = objects.result(status) or None
    return JobDetail(namespace=bodies.text(meta.get("namespace")), name=name, phase=objects.phase(job), reason=objects.phase_reason(job),
                     spec=tuple(fields), prompt=prompt, conditions=conditions, attempts=tuple(attempts), explanation=explanation,
                     position=position, queue=bodies.text(spec.get("queue")) or "default", result=result, log_ref=log_ref)


def _attempt_row(record: Mapping[str, Any], *, now: datetime.datetime) -> AttemptRow:
    started = leases.parse_time(bodies.text(record.get("startedAt")))
    finished = leases.parse_time(bodies.text(record.get("finishedAt")))
    took = bodies.duration((finished - started).total_seconds()) if started and finished else ""
    return AttemptRow(attempt=bodies.number(record.get("attempt")), outcome=bodies.text(record.get("outcome")), reason=bodies.text(record.get("reason")),
                      message=bodies.text(record.get("message")), factory=bodies.text(record.get("factory")), pod=bodies.text(record.get("pod")),
                      started=bodies.text(record.get("startedAt")), finished=bodies.text(record.get("finishedAt")), duration=took,
                      score="" if record.get("score") is None else bodies.text(record.get("score")), scores=_scores(record.get("scores")),
                      exit_code="" if record.get("exitCode") is None else bodies.text(record.get("exitCode")))


def _explanation(job: Body, pending: Iterable[Body], *, now: datetime.datetime,
                 aging_seconds_per_point: float) -> tuple[str, tuple[int, int] | None]:
    """What `gigafactory explain` says of the job's wait (the scheduler's condition and its queue
    position, from scheduling.queues.position), or where it is bound."""
    spec = objects.spec(job)
    phase = objects.phase(job)
    assignment = objects.assignment(job)
    if assignment:
        return (f"{phase} on {bodies.text(assignment.get('factory'))}/{bodies.text(assignment.get('pod'))} "
                f"with score {bodies.number(assignment.get('score'))}/100"), None
    if phase in TERMINAL:  # as `gigafactory explain` says it: how the last attempt ended, and where it ran
        attempts = objects.attempts(job)
        last: objects.AttemptRecord = attempts[-1] if attempts else {}
        if not last:
            reason = objects.phase_reason(job)
            return (f"{phase}: {reason}" if reason and reason != phase else phase), None
        ended = " ".join(bodies.text(part) for part in (last.get("outcome"), last.get("reason"), last.get("message")) if part)
        where = f"; it ran on {bodies.text(last.get('factory'))}/{bodies.text(last.get('pod')) or '-'}" if last.get("factory") else ""
        score = f" with score {bodies.number(last.get('score'))}/100" if where and last.get("score") is not None else ""
        return f"{phase}: last attempt {ended}{where}{score}", None
    if spec.get("suspend"):
        return "suspended (spec.suspend): it is not scheduled until resumed", None
    scheduled = objects.condition(job, constants.ConditionType.SCHEDULED.value) or {}
    text = (f"{phase}: {bodies.text(scheduled.get('reason'))}: {bodies.text(scheduled.get('message'))}" if scheduled
            else f"{phase}: the operator has not considered it yet")
    return text, queues.position(job, pending, now=now, aging_seconds_per_point=aging_seconds_per_point)
