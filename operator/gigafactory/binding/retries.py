"""The retry policy of docs/protocol.md, as a pure decision: given the past attempts and how the
latest one ended, is the job done, failed, or waiting for another attempt (and from when)?"""

import dataclasses
import datetime
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from gigafactory.models import agentjobs

Outcome = agentjobs.Outcome
Phase = agentjobs.Phase


@dataclasses.dataclass(frozen=True)
class Verdict:
    phase: agentjobs.Phase
    counted: bool
    requeue_at: datetime.datetime | None = None
    reason: str = ""


def _matches(rule: agentjobs.RetryRule, outcome: Outcome, exit_code: int | None) -> bool:
    if outcome not in rule.on_outcomes:
        return False
    if rule.on_exit_codes is None:
        return True
    if exit_code is None:
        return False
    inside = exit_code in rule.on_exit_codes.values
    return inside if rule.on_exit_codes.operator is agentjobs.ExitCodeOperator.IN else not inside


def _default_action(outcome: Outcome) -> agentjobs.RetryAction:
    if outcome is Outcome.REJECTED:
        return agentjobs.RetryAction.FAIL_JOB
    if outcome in (Outcome.INFRA_ERROR, Outcome.STOPPED):
        return agentjobs.RetryAction.IGNORE
    return agentjobs.RetryAction.COUNT


def backoff_seconds(backoff: agentjobs.Backoff, failures: int, *, seed: str = "") -> float:
    """initialSeconds × factor^(failures-1), plus up to `jitter` of it, capped at maxSeconds. The
    jitter comes from a hash of (seed, failures), not a random draw: jobs that failed together spread
    out, and the same job's delay is the same whoever computes it (two operators, a replay)."""
    if failures <= 0:
        return 0.0
    base = backoff.initial_seconds * backoff.factor ** (failures - 1)
    spread = int.from_bytes(hashlib.sha256(f"{seed}/{failures}".encode()).digest()[:8], "big") / 2**64
    return float(min(backoff.max_seconds, base * (1 + backoff.jitter * spread)))


def decide(
    *,
    spec: Mapping[str, Any],
    attempts: Sequence[Mapping[str, Any]],
    outcome: Outcome,
    exit_code: int | None,
    now: datetime.datetime,
    reason: str = "",
    seed: str = "",
) -> Verdict:
    """`attempts` are the records before this one (status.attempts); `reason` is the attempt's own."""
    if spec.get("cancel"):
        return Verdict(Phase.CANCELLED, counted=False, reason="Cancelled")
    if outcome is Outcome.STOPPED and reason == "DeadlineExceeded":
        return Verdict(Phase.FAILED, counted=True, reason="DeadlineExceeded")
    policy = agentjobs.RetryPolicy.model_validate(spec.get("retry") or {})
    rule = next((r for r in policy.rules if _matches(r, outcome, exit_code)), None)
    if outcome is Outcome.STOPPED and reason == "BudgetExceeded" and rule is None:
        # The job's own model budget (spec.agent.limits) ran out: another attempt would only spend more.
        return Verdict(Phase.FAILED, counted=True, reason="BudgetExceeded")
    if outcome is Outcome.SUCCEEDED:
        return Verdict(Phase.SUCCEEDED, counted=True, reason="Succeeded")
    action = rule.action if rule is not None else _default_action(outcome)
    if action is agentjobs.RetryAction.FAIL_JOB:
        return Verdict(Phase.FAILED, counted=True, reason=outcome.value)
    uncounted = sum(1 for a in attempts if a.get("counted") is False)
    if action is agentjobs.RetryAction.IGNORE and uncounted < policy.max_uncounted_retries:
        # Not the job's fault (a lost runner, a claim nobody made): retry at once, without backoff.
        return Verdict(Phase.PENDING, counted=False, reason=outcome.value)
    counted = sum(1 for a in attempts if a.get("counted", True) is not False) + 1
    if counted >= policy.max_attempts:
        return Verdict(Phase.FAILED, counted=True, reason="AttemptsExhausted")
    delay = backoff_seconds(policy.backoff, counted, seed=seed)
    return Verdict(Phase.PENDING, counted=True, requeue_at=now + datetime.timedelta(seconds=delay), reason=outcome.value)
