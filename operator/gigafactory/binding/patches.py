"""Pure builders of the status patches the binder writes: bind, fold a report, undo a binding,
the Unschedulable condition, the bind Event. No I/O; `binder` sends them."""

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gigafactory import constants, leases
from gigafactory.binding import retries, trust
from gigafactory.models import agentjobs, objects, prices
from gigafactory.scheduling import cycle

Body = dict[str, Any]
Phase = agentjobs.Phase

REASON_UNSCHEDULABLE = "Unschedulable"
REASON_BOUND = "Bound"
REASON_WAITING_FOR_CAPACITY = "WaitingForCapacity"


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type: str,
    status: str,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> list[Body]:
    """The conditions list with one condition set (a merge patch replaces lists whole).
    lastTransitionTime moves only when the status flips."""
    result: list[Body] = []
    found = False
    for condition in conditions or ():
        if condition.get("type") == type:
            found = True
            moved = condition.get("status") != status
            condition = {
                **condition, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": _stamp(now) if moved else condition.get("lastTransitionTime") or _stamp(now),
            }
            if generation is not None:
                condition["observedGeneration"] = generation
        result.append(dict(condition))
    if not found:
        condition = {"type": type, "status": status, "reason": reason, "message": message, "lastTransitionTime": _stamp(now)}
        if generation is not None:
            condition["observedGeneration"] = generation
        result.append(condition)
    return result


def bind_patch(*, body: Mapping[str, Any], decision: cycle.Decision, now: datetime.datetime,
               model_prices: Sequence[Mapping[str, Any]] = ()) -> Body:
    """`model_prices`: the factory's spec.prices, copied into the binding so that the runner enforces
    spec.agent.limits.cost and the fold prices the attempt with the very figures of its bind."""
    job, pod = decision.job, decision.pod
    status, meta = objects.job_status(body), objects.meta(body)
    message = f"bound to pod {pod.namespace}/{pod.name} of factory {pod.factory} (score {decision.score})"
    patch_status: Body = {
        "phase": Phase.BOUND.value,
        "reason": REASON_BOUND,
        "attempt": decision.attempt,
        "factory": pod.factory,  # these two stay when the attempt ends (printer columns cannot read attempts[-1])
        "pod": pod.name,
        "assignment": {
            "factory": pod.factory,
            "pod": pod.name,
            "podNamespace": pod.namespace,
            "attempt": decision.attempt,
            "lease": leases.binding_lease_name(job.uid, decision.attempt),
            "leaseNamespace": pod.namespace,
            "boundAt": _stamp(now),
            "score": max(0, min(100, decision.score)),
            "scores": decision.scores,
            **({"prices": [dict(p) for p in model_prices][:64]} if model_prices else {}),
        },
        "requeueAt": None,
        "conditions": set_condition(
            objects.conditions(body), type=constants.ConditionType.SCHEDULED.value, status="True",
            reason=REASON_BOUND, message=message, now=now, generation=meta.get("generation"),
        ),
    }
    if not status.get("startTime"):
        patch_status["startTime"] = _stamp(now)
    return {"metadata": {"resourceVersion": job.resource_version}, "status": patch_status}


def unschedulable_patch(*, body: Mapping[str, Any], message: str, now: datetime.datetime,
                        reason: str = REASON_UNSCHEDULABLE) -> Body | None:
    """Scheduled=False with the reason counts (or WaitingForCapacity, while a scaled factory grows for
    the job), or None when the job already says exactly that (a cycle that changes nothing writes nothing)."""
    current = objects.condition(body, constants.ConditionType.SCHEDULED.value)
    if current is not None and current.get("status") == "False" and current.get("reason") == reason \
            and current.get("message") == message and objects.job_status(body).get("reason") == reason:
        return None
    meta = objects.meta(body)
    conditions = set_condition(
        objects.conditions(body), type=constants.ConditionType.SCHEDULED.value, status="False",
        reason=reason, message=message, now=now, generation=meta.get("generation"),
    )
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {"reason": reason, "conditions": conditions}}


def report_matches(body: Mapping[str, Any]) -> bool:
    """The fencing rule of docs/protocol.md: a report of the current attempt, from the bound pod."""
    status, report, assignment = objects.job_status(body), objects.report(body), objects.assignment(body)
    return bool(
        report
        and report.get("attempt") == status.get("attempt")
        and report.get("pod") == assignment.get("pod")
        and status.get("phase") in (Phase.RUNNING.value, Phase.BOUND.value)
    )


def _finish(
    *,
    body: Mapping[str, Any],
    record: Body,
    outcome: agentjobs.Outcome,
    exit_code: int | None,
    result: Mapping[str, Any] | None,
    now: datetime.datetime,
) -> Body:
    meta, status = objects.meta(body), objects.job_status(body)
    attempts: list[Mapping[str, Any]] = list(objects.attempts(body))
    # Only this run's attempts count: those before a `gigafactory retry` had their budget.
    current = [a for a in attempts if int(a.get("attempt") or 0) >= int(status.get("countFrom") or 0)]
    verdict = retries.decide(spec=objects.spec(body), attempts=current, outcome=outcome, exit_code=exit_code, now=now,
                             reason=str(record.get("reason") or ""), seed=str(meta.get("uid") or ""))
    record["counted"] = verdict.counted
    # Keep the newest records if the list would outgrow the schema's bound.
    attempts = (attempts + [record])[-1200:]
    conditions: list[Body] = [dict(c) for c in objects.conditions(body)]
    generation = meta.get("generation")
    scheduled = "Requeued" if verdict.phase is Phase.PENDING else "Finished"
    conditions = set_condition(conditions, type=constants.ConditionType.SCHEDULED.value, status="False",
                               reason=scheduled, message=f"attempt {record['attempt']} ended {outcome.value}", now=now, generation=generation)
    for kind in (constants.ConditionType.CLAIMED.value, constants.ConditionType.RUNNING.value):
        if any(c.get("type") == kind for c in conditions):
            conditions = set_condition(conditions, type=kind, status="False", reason=outcome.value, message="", now=now, generation=generation)
    patch_status: Body = {
        "phase": verdict.phase.value,
        "reason": verdict.reason if verdict.phase in agentjobs.TERMINAL_PHASES else scheduled,
        "attempts": attempts,
        **totals(status, record),
        "assignment": None,
        "report": None,
        "requeueAt": _stamp(verdict.requeue_at) if verdict.requeue_at else None,
    }
    if result:
        patch_status["result"] = dict(result)
    if verdict.phase in agentjobs.TERMINAL_PHASES:
        patch_status["completionTime"] = _stamp(now)
        kind = constants.ConditionType.COMPLETE if verdict.phase is Phase.SUCCEEDED else constants.ConditionType.FAILED
        conditions = set_condition(conditions, type=kind.value, status="True", reason=verdict.reason,
                                   message=record.get("message") or "", now=now, generation=generation)
    patch_status["conditions"] = conditions
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": patch_status}


def fold_patch(*, body: Mapping[str, Any], now: datetime.datetime) -> Body:
    """Fold a matching report (check `report_matches` first) into attempts, result and phase."""
    report: Mapping[str, Any] = objects.report(body)
    assignment = objects.assignment(body)
    outcome = agentjobs.Outcome(report["outcome"])
    result: Mapping[str, Any] | None = objects.result(report) or None
    problem = trust.report_problem(body, report)
    if problem is not None:
        # A report naming a branch the job never asked for (a forged or confused runner): the attempt
        # fails and its result is recorded nowhere the branch cleanup reads.
        outcome, result = agentjobs.Outcome.INFRA_ERROR, None
        report = {**report, "reason": trust.REASON_REPORT_REJECTED, "message": f"report rejected: {problem}", "exitCode": None}
    record: Body = {
        "attempt": report["attempt"],
        "factory": assignment.get("factory"),
        "pod": report.get("pod"),
        "score": assignment.get("score"),
        "scores": assignment.get("scores") or None,
        "startedAt": assignment.get("boundAt"),
        "finishedAt": report.get("finishedAt") or _stamp(now),
        "outcome": outcome.value,
        "reason": report.get("reason") or "",
        "message": report.get("message") or "",
    }
    if report.get("exitCode") is not None:
        record["exitCode"] = report["exitCode"]
    if report.get("logRef"):
        record["logRef"] = report["logRef"]
    if objects.tokens(report):
        record["tokens"], record["cost"] = priced_tokens(objects.tokens(report), objects.items(assignment.get("prices")))
    record = {k: v for k, v in record.items() if v is not None}
    return _finish(body=body, record=record, outcome=outcome, exit_code=report.get("exitCode"), result=result, now=now)


def priced_tokens(tokens: Sequence[Mapping[str, Any]], model_prices: Sequence[Mapping[str, Any]]) -> tuple[list[Body], float | None]:
    """A report's tokens as the attempt record keeps them: only the counted fields (a runner's own
    `cost` is dropped), each model's estimated cost at the binding's prices, and the attempt's total."""
    kept = [{key: used[key] for key in ("model", "inputTokens", "outputTokens", "requests") if key in used} for used in tokens]
    per_model, total = prices.estimate(kept, model_prices)
    for used in kept:
        if used.get("model") in per_model:
            used["cost"] = per_model[used["model"]]
    return kept, total


def totals(status: Mapping[str, Any], record: Mapping[str, Any]) -> Body:
    """The job's running totals (status.tokens, status.cost, for printer columns) with this attempt
    added. Added, not summed from attempts: the list drops its oldest records past its bound."""
    used = sum(int(t.get("inputTokens") or 0) + int(t.get("outputTokens") or 0) for t in objects.tokens(record))
    result: Body = {}
    if used or status.get("tokens") is not None:
        result["tokens"] = int(status.get("tokens") or 0) + used
    if record.get("cost") is not None or status.get("cost") is not None:
        result["cost"] = round(float(status.get("cost") or 0) + float(record.get("cost") or 0), prices.DIGITS)
    return result


def binding_is_current(body: Mapping[str, Any], binding: leases.Binding) -> bool:
    """Whether the job still holds this binding (so undoing it is right)."""
    status, assignment = objects.job_status(body), objects.assignment(body)
    return (
        objects.uid(body) == binding.job_uid
        and status.get("phase") in (Phase.BOUND.value, Phase.RUNNING.value)
        and assignment.get("attempt") == binding.attempt
        and assignment.get("pod") == binding.pod
    )


def undo_patch(*, body: Mapping[str, Any], reason: str, message: str, now: datetime.datetime,
               pushed: tuple[str, str] | None = None) -> Body:
    """Record the current attempt as InfraError (ClaimTimeout, LeaseExpired, LeaseCreateFailed) and requeue.
    `pushed`: the (branch, commit) its runner announced before going silent, for the next attempt to adopt."""
    status, assignment = objects.job_status(body), objects.assignment(body)
    record: Body = {
        "attempt": assignment.get("attempt") or status.get("attempt") or 1,
        "factory": assignment.get("factory"),
        "pod": assignment.get("pod"),
        "score": assignment.get("score"),
        "scores": assignment.get("scores") or None,
        "startedAt": assignment.get("boundAt"),
        "finishedAt": _stamp(now),
        "outcome": agentjobs.Outcome.INFRA_ERROR.value,
        "reason": reason,
        "message": message,
    }
    if pushed is not None and not trust.own_push(body, pushed):
        # Only the job's own branch is a push of this job: anything else would be deleted with it.
        record["message"] = f"{message}; its announced push of {pushed[0][:255]!r} was ignored (not the job's branch {trust.job_branch(body)!r})"
        pushed = None
    if pushed is not None:
        record["pushed"] = {"branch": pushed[0], "commit": pushed[1]}
        record["message"] = f"{message}; it had begun pushing {pushed[0]} at {pushed[1][:12]}"
    record = {k: v for k, v in record.items() if v is not None}
    return _finish(body=body, record=record, outcome=agentjobs.Outcome.INFRA_ERROR, exit_code=None, result=None, now=now)


def bind_event(*, body: Mapping[str, Any], decision: cycle.Decision, now: datetime.datetime) -> Body:
    meta = objects.meta(body)
    pod = decision.pod
    breakdown = ", ".join(f"{name}={score}" for name, score in decision.scores.items())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:12]}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND, "name": meta.get("name"),
            "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        },
        "reason": "Scheduled",
        "message": f"Bound attempt {decision.attempt} to {pod.namespace}/{pod.name} (factory {pod.factory}), "
                   f"score {decision.score}: {breakdown}",
        "type": "Normal",
        "source": {"component": "gigafactory-operator"},
        "reportingComponent": "gigafactory-operator",
        "firstTimestamp": _stamp(now),
        "lastTimestamp": _stamp(now),
        "count": 1,
    }


def deadline(body: Mapping[str, Any]) -> datetime.datetime | None:
    """When spec.activeDeadlineSeconds runs out: counted from the first bind (status.startTime)."""
    seconds = objects.spec(body).get("activeDeadlineSeconds")
    started = leases.parse_time(objects.job_status(body).get("startTime"))
    if not seconds or started is None:
        return None
    return started + datetime.timedelta(seconds=int(seconds))


def stop_reason(body: Mapping[str, Any], *, now: datetime.datetime) -> str | None:
    """Why this job's attempt must stop now, if it must: spec.cancel, spec.suspend, the deadline."""
    spec = objects.spec(body)
    if spec.get("cancel"):
        return leases.STOP_CANCELLED
    end = deadline(body)
    if end is not None and now >= end:
        return leases.STOP_DEADLINE
    if spec.get("suspend"):
        return leases.STOP_SUSPENDED
    return None


INVALID_SPEC = "InvalidSpec"


def end_waiting_patch(*, body: Mapping[str, Any], reason: str, now: datetime.datetime, message: str | None = None) -> Body:
    """A job that holds no binding ends at once: Cancelled (spec.cancel) or Failed (deadline, InvalidSpec)."""
    meta = objects.meta(body)
    cancelled = reason == leases.STOP_CANCELLED
    phase = Phase.CANCELLED if cancelled else Phase.FAILED
    if message is None:
        message = "cancelled by spec.cancel" if cancelled else "spec.activeDeadlineSeconds ran out"
    conditions = set_condition(objects.conditions(body), type=constants.ConditionType.SCHEDULED.value,
                               status="False", reason=reason, message=message, now=now, generation=meta.get("generation"))
    if not cancelled:
        conditions = set_condition(conditions, type=constants.ConditionType.FAILED.value, status="True", reason=reason,
                                   message=message, now=now, generation=meta.get("generation"))
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {"phase": phase.value, "reason": reason, "completionTime": _stamp(now), "requeueAt": None,
                       "conditions": conditions}}


def retry_requested(body: Mapping[str, Any]) -> str | None:
    """The retry request a Failed or Cancelled job carries and the operator has not honoured yet."""
    meta, status = objects.meta(body), objects.job_status(body)
    request = objects.annotations(body).get(constants.ANNOTATION_RETRY)
    if not request or request == status.get("retryRequest") or meta.get("deletionTimestamp"):
        return None
    if status.get("phase") not in (Phase.FAILED.value, Phase.CANCELLED.value) or objects.spec(body).get("cancel"):
        return None
    return str(request)[:128]


def retry_patch(*, body: Mapping[str, Any], request: str, now: datetime.datetime) -> Body:
    """Back to Pending with a fresh attempt budget (the history stays); the deadline counts anew."""
    meta, status = objects.meta(body), objects.job_status(body)
    generation = meta.get("generation")
    conditions = set_condition(objects.conditions(body), type=constants.ConditionType.SCHEDULED.value, status="False",
                               reason="RetryRequested", message=f"sent back to the queue by a retry request ({request})",
                               now=now, generation=generation)
    for kind in (constants.ConditionType.COMPLETE.value, constants.ConditionType.FAILED.value):
        if any(c.get("type") == kind for c in conditions):
            conditions = set_condition(conditions, type=kind, status="False", reason="RetryRequested", message="", now=now,
                                       generation=generation)
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {"phase": Phase.PENDING.value, "reason": "RetryRequested", "countFrom": int(status.get("attempt") or 0) + 1, "retryRequest": request,
                       "completionTime": None, "startTime": None, "requeueAt": None, "result": None, "conditions": conditions}}
