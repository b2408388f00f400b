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
from gigafactory.models import agentjobs
from gigafactory.scheduling import queues, snapshots

Body = Mapping[str, Any]

PAGE_SIZE = 50
# The Queues page's chart: the last hour in buckets of this many minutes.
BUCKET_MINUTES = 5
HOUR = datetime.timedelta(hours=1)
TERMINAL = frozenset(p.value for p in agentjobs.TERMINAL_PHASES)
PHASES = tuple(p.value for p in agentjobs.Phase)


def _meta(body: Body) -> Mapping[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def phase_of(body: Body) -> str:
    return _text(_dict(body.get("status")).get("phase")) or agentjobs.Phase.PENDING.value


def placement(body: Body) -> tuple[str, str]:
    """(factory, pod) of the current attempt, or of the last one once it ended."""
    status = _dict(body.get("status"))
    assignment = _dict(status.get("assignment"))
    attempts = _list(status.get("attempts"))
    last = _dict(attempts[-1]) if attempts else {}
    factory = assignment.get("factory") or status.get("factory") or last.get("factory") or ""
    pod = assignment.get("pod") or status.get("pod") or last.get("pod") or ""
    return _text(factory), _text(pod)


def age(moment: datetime.datetime | None, *, now: datetime.datetime) -> str:
    """A duration as kubectl prints an age: 5s, 3m, 2h, 4d."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    return duration(max(seconds, 0))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


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
        spec = _dict(lease.get("spec"))
        moment = leases.parse_time(spec.get("renewTime")) or leases.parse_time(spec.get("acquireTime"))
        if beat is not None and moment is not None:
            renewed[(beat.factory, beat.namespace, beat.pod)] = moment
    return renewed


def fleet(factories: Iterable[Body], heartbeat_leases: Iterable[Body], jobs: Iterable[Body], *, now: datetime.datetime) -> Fleet:
    """Each factory with its pods and slots, and the totals. Only the pods the operator counts (the
    Factory status) are shown: a heartbeat Lease it ignores (outside the runner namespaces) is none."""
    renewed = _renewals(heartbeat_leases)
    rows = []
    for body in sorted(factories, key=lambda b: _text(_meta(b).get("name"))):
        name = _text(_meta(body).get("name"))
        spec, status = _dict(body.get("spec")), _dict(body.get("status"))
        pods = []
        freshest: datetime.datetime | None = None
        for pod in _list(status.get("pods")):
            pod = _dict(pod)
            moment = renewed.get((name, _text(pod.get("namespace")), _text(pod.get("name")))) or leases.parse_time(
                pod.get("lastHeartbeat"))
            if moment is not None and (freshest is None or moment > freshest):
                freshest = moment
            pods.append(PodRow(name=_text(pod.get("name")), namespace=_text(pod.get("namespace")), ready=bool(pod.get("ready")),
                               slots=_int(pod.get("slots")), running=_int(pod.get("running")),
                               heartbeat=age(moment, now=now) + " ago" if moment else "never"))
        states = []
        if spec.get("unschedulable"):
            states.append("cordoned")
        if _meta(body).get("deletionTimestamp"):
            states.append("draining")
        scaling = _dict(status.get("scaling"))
        if spec.get("scaling"):
            states.append(f"scaling {_int(scaling.get('currentReplicas'))}→{_int(scaling.get('desiredReplicas'))}")
        rows.append(FactoryRow(
            name=name, phase=_text(status.get("phase")) or "Offline",
            ready_pods=_int(status.get("readyPods")), total_pods=len(pods),
            slots_used=_int(status.get("slotsUsed")), slots_total=_int(status.get("slotsTotal")),
            heartbeat=age(freshest, now=now) + " ago" if freshest else "never",
            capabilities=tuple(map(_text, _list(spec.get("capabilities")))), agents=tuple(map(_text, _list(spec.get("agents")))),
            subscriptions=tuple(map(_text, _list(spec.get("subscriptions")))), states=tuple(states), pods=tuple(pods),
        ))
    by_phase = dict.fromkeys(PHASES, 0)
    for job in jobs:
        phase = phase_of(job)
        by_phase[phase] = by_phase.get(phase, 0) + 1
    return Fleet(factories=tuple(rows), ready_pods=sum(r.ready_pods for r in rows), total_pods=sum(r.total_pods for r in rows),
                 slots_used=sum(r.slots_used for r in rows), slots_total=sum(r.slots_total for r in rows), jobs_by_phase=by_phase)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


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
    meta = _meta(body)
    name = _text(meta.get("name"))
    pending = snapshots.is_pending(body)
    waiting_since = None
    if pending:
        try:  # the scheduler's parser expects what the CRD schema admits; a page must not fail on less
            info = snapshots.job_from_body(body)
            waiting_since = info.requeue_at or info.created_at
        except (AttributeError, TypeError, ValueError):
            waiting_since = None
    ended = []
    for record in _list(_dict(body.get("status")).get("attempts")):
        record = _dict(record)
        finished = leases.parse_time(_text(record.get("finishedAt")))
        if finished is not None:
            ended.append((finished, record.get("outcome") == agentjobs.Outcome.SUCCEEDED.value))
    return Summary(created=_text(meta.get("creationTimestamp")), namespace=_text(meta.get("namespace")), name=name,
                   lowered=name.lower(), queue=_text(_dict(body.get("spec")).get("queue")) or "default", phase=phase_of(body),
                   factory=placement(body)[0], pending=pending, waiting_since=waiting_since, ended=tuple(ended), body=body)


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
                             oldest_wait=age(entry["oldest"], now=now) if entry["oldest"] else "",
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


def reason_of(body: Body) -> str:
    """Why the job is in its phase: status.reason, else the condition that goes with the phase."""
    status = _dict(body.get("status"))
    if status.get("reason"):
        return _text(status["reason"])
    phase = phase_of(body)
    kind = {agentjobs.Phase.SUCCEEDED.value: constants.ConditionType.COMPLETE, agentjobs.Phase.FAILED.value: constants.ConditionType.FAILED,
            agentjobs.Phase.RUNNING.value: constants.ConditionType.RUNNING}.get(phase, constants.ConditionType.SCHEDULED)
    return _text(condition(body, kind.value).get("reason"))


def condition(body: Body, kind: str) -> Mapping[str, Any]:
    for item in _list(_dict(body.get("status")).get("conditions")):
        if _dict(item).get("type") == kind:
            return _dict(item)
    return {}


def _job_row(job: Body, *, now: datetime.datetime) -> JobRow:
    meta, spec, status = _meta(job), _dict(job.get("spec")), _dict(job.get("status"))
    factory, pod = placement(job)
    return JobRow(namespace=_text(meta.get("namespace")), name=_text(meta.get("name")), phase=phase_of(job), reason=reason_of(job),
                  queue=_text(spec.get("queue")) or "default", priority=_int(spec.get("priority")), factory=factory, pod=pod,
                  attempt=_int(status.get("attempt")), age=age(leases.parse_time(_text(meta.get("creationTimestamp"))), now=now))


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
    return tuple(sorted(((str(k), _int(v)) for k, v in _dict(value).items()), key=lambda kv: (-kv[1], kv[0])))


def job_detail(job: Body, pending: Iterable[Body], *, now: datetime.datetime, aging_seconds_per_point: float) -> JobDetail:
    """Everything the Job page shows of one job. `pending` is every job (its queue position is
    computed among the waiting ones, by the scheduler's own ordering)."""
    meta, spec, status = _meta(job), _dict(job.get("spec")), _dict(job.get("status"))
    repo, agent, task = _dict(spec.get("repo")), _dict(spec.get("agent")), _dict(spec.get("task"))
    requirements, retry = _dict(spec.get("requirements")), _dict(spec.get("retry"))
    name = _text(meta.get("name"))
    fields = [
        ("Queue", f"{_text(spec.get('queue')) or 'default'} (priority {_int(spec.get('priority'))})"),
        ("Repository", f"{_text(repo.get('url'))} @ {_text(repo.get('baseRef')) or 'main'}"),
        ("Branch", _text(repo.get("branch")) or f"agent/{name}"),
        ("Credentials", _text(repo.get("credentialsSecret")) or "none"),
        ("Agent", " ".join([_text(agent.get("profile"))] + [_text(a) for a in _list(agent.get("args"))])),
        ("Environment", ", ".join(_text(_dict(e).get("name")) for e in _list(agent.get("env"))) or "none"),
        ("Requires", ", ".join(map(_text, _list(requirements.get("capabilities")))) or "nothing"),
        ("Prefers", ", ".join(f"{_text(_dict(p).get('capability'))} ({_int(_dict(p).get('weight'))})"
                              for p in _list(requirements.get("preferences"))) or "nothing"),
        ("Target factory", _text(spec.get("targetFactory")) or "any"),
        ("Retry", f"up to {_int(retry.get('maxAttempts')) or 3} attempts"),
        ("Deadline", f"{_int(spec.get('activeDeadlineSeconds'))} s" if spec.get("activeDeadlineSeconds") else "none"),
        ("Created", _text(meta.get("creationTimestamp"))),
    ]
    if spec.get("suspend"):
        fields.append(("Suspended", "yes"))
    if spec.get("cancel"):
        fields.append(("Cancel", "requested"))
    prompt_from = _dict(_dict(task.get("promptFrom")).get("configMapKeyRef"))
    prompt = _text(task.get("prompt")) if task.get("prompt") is not None else (
        f"(from ConfigMap {_text(prompt_from.get('name'))}, key {_text(prompt_from.get('key'))})" if prompt_from else "")
    conditions = tuple(
        (_text(c.get("type")), _text(c.get("status")), _text(c.get("reason")), _text(c.get("message")),
         age(leases.parse_time(_text(c.get("lastTransitionTime"))), now=now))
        for c in map(_dict, _list(status.get("conditions"))))
    attempts = [_attempt_row(_dict(record), now=now) for record in _list(status.get("attempts"))]
    assignment = _dict(status.get("assignment"))
    if assignment:
        bound = leases.parse_time(_text(assignment.get("boundAt")))
        attempts.append(AttemptRow(
            attempt=_int(assignment.get("attempt")), outcome=phase_of(job), reason=reason_of(job), message="",
            factory=_text(assignment.get("factory")), pod=_text(assignment.get("pod")), started=_text(assignment.get("boundAt")),
            finished="", duration=age(bound, now=now) if bound else "", score=_text(assignment.get("score")),
            scores=_scores(assignment.get("scores")), exit_code="", current=True))
    explanation, position = _explanation(job, pending, now=now, aging_seconds_per_point=aging_seconds_per_point)
    records = [_dict(r) for r in _list(status.get("attempts"))]
    if status.get("report"):
        records.append(_dict(status.get("report")))
    refs = [(r.get("logRef"), r.get("pod"), r.get("attempt")) for r in records if r.get("logRef")]
    log_ref = (_text(refs[-1][0]), _text(refs[-1][1]), _int(refs[-1][2])) if refs else None
    result = _dict(status.get("result")) or None
    return JobDetail(namespace=_text(meta.get("namespace")), name=name, phase=phase_of(job), reason=reason_of(job),
                     spec=tuple(fields), prompt=prompt, conditions=conditions, attempts=tuple(attempts), explanation=explanation,
                     position=position, queue=_text(spec.get("queue")) or "default", result=result, log_ref=log_ref)


def _attempt_row(record: Mapping[str, Any], *, now: datetime.datetime) -> AttemptRow:
    started = leases.parse_time(_text(record.get("startedAt")))
    finished = leases.parse_time(_text(record.get("finishedAt")))
    took = duration((finished - started).total_seconds()) if started and finished else ""
    return AttemptRow(attempt=_int(record.get("attempt")), outcome=_text(record.get("outcome")), reason=_text(record.get("reason")),
                      message=_text(record.get("message")), factory=_text(record.get("factory")), pod=_text(record.get("pod")),
                      started=_text(record.get("startedAt")), finished=_text(record.get("finishedAt")), duration=took,
                      score="" if record.get("score") is None else _text(record.get("score")), scores=_scores(record.get("scores")),
                      exit_code="" if record.get("exitCode") is None else _text(record.get("exitCode")))


def _explanation(job: Body, pending: Iterable[Body], *, now: datetime.datetime,
                 aging_seconds_per_point: float) -> tuple[str, tuple[int, int] | None]:
    """What `gigafactory explain` says of the job's wait (the scheduler's condition and its queue
    position, from scheduling.queues.position), or where it is bound."""
    status, spec = _dict(job.get("status")), _dict(job.get("spec"))
    phase = phase_of(job)
    assignment = _dict(status.get("assignment"))
    if assignment:
        return (f"{phase} on {_text(assignment.get('factory'))}/{_text(assignment.get('pod'))} "
                f"with score {_int(assignment.get('score'))}/100"), None
    if phase in TERMINAL:  # as `gigafactory explain` says it: how the last attempt ended, and where it ran
        attempts = _list(status.get("attempts"))
        last = _dict(attempts[-1]) if attempts else {}
        if not last:
            return (f"{phase}: {reason_of(job)}" if reason_of(job) and reason_of(job) != phase else phase), None
        ended = " ".join(_text(part) for part in (last.get("outcome"), last.get("reason"), last.get("message")) if part)
        where = f"; it ran on {_text(last.get('factory'))}/{_text(last.get('pod')) or '-'}" if last.get("factory") else ""
        score = f" with score {_int(last.get('score'))}/100" if where and last.get("score") is not None else ""
        return f"{phase}: last attempt {ended}{where}{score}", None
    if spec.get("suspend"):
        return "suspended (spec.suspend): it is not scheduled until resumed", None
    scheduled = condition(job, constants.ConditionType.SCHEDULED.value)
    text = (f"{phase}: {_text(scheduled.get('reason'))}: {_text(scheduled.get('message'))}" if scheduled
            else f"{phase}: the operator has not considered it yet")
    return text, queues.position(job, pending, now=now, aging_seconds_per_point=aging_seconds_per_point)
