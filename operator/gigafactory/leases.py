"""Heartbeat and binding Leases as docs/protocol.md describes them: names, builders, parsers, expiry.

Pure data manipulation, no I/O: the operator, the runner and the tests build and read Leases here,
so both sides of the protocol agree by construction.
"""

import dataclasses
import datetime
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from gigafactory import constants
from gigafactory.models import objects

LEASE_API_VERSION = "coordination.k8s.io/v1"

ANNOTATION_DRAINING = f"{constants.GROUP}/draining"
# On a heartbeat Lease: how the pod's agents are isolated (runner setting `sandbox`; absent on old runners).
ANNOTATION_SANDBOX = f"{constants.GROUP}/sandbox"
ANNOTATION_JOB_NAMESPACE = f"{constants.GROUP}/job-namespace"
ANNOTATION_JOB_NAME = f"{constants.GROUP}/job-name"
ANNOTATION_JOB_UID = f"{constants.GROUP}/job-uid"
ANNOTATION_ATTEMPT = f"{constants.GROUP}/attempt"
ANNOTATION_STOP = f"{constants.GROUP}/stop"
# Set by the runner on its binding Lease just before it pushes: "<commit> <branch>". If the runner
# dies before its report lands, the operator records it in the attempt, and the next attempt adopts
# the pushed branch instead of failing on BranchExists (docs/protocol.md, "A push whose report was lost").
ANNOTATION_PUSHED = f"{constants.GROUP}/pushed"

# Reasons the operator may write into ANNOTATION_STOP.
STOP_CANCELLED = "Cancelled"
STOP_SUSPENDED = "Suspended"
STOP_DEADLINE = "DeadlineExceeded"
STOP_DRAINED = "Drained"
STOP_DELETED = "Deleted"
STOP_REASONS = frozenset({STOP_CANCELLED, STOP_SUSPENDED, STOP_DEADLINE, STOP_DRAINED, STOP_DELETED})

Body = dict[str, Any]


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


def format_micro_time(moment: datetime.datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    """MicroTime or Time (with or without fraction) → aware datetime; None for a missing or bad value."""
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# Cached: the snapshot keys every job's repository, and a fleet's jobs share few repositories.
@functools.lru_cache(maxsize=4096)
def repo_key(url: str) -> str:
    """A short stable key for a repository URL, as runners announce their warm mirrors."""
    normalized = url.strip().rstrip("/").removesuffix(".git").lower()
    return hashlib.sha256(normalized.encode()).hexdigest()[:12]


def binding_lease_name(job_uid: str, attempt: int) -> str:
    return f"gf-{job_uid}-{attempt}"


def renewed_at(lease: Mapping[str, Any]) -> datetime.datetime | None:
    """When a Lease was last renewed (renewTime, else acquireTime)."""
    spec = objects.lease_spec(lease)
    return parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))


def expires_at(lease: Mapping[str, Any]) -> datetime.datetime | None:
    """When a Lease stops being valid: renewTime (or acquireTime) + leaseDurationSeconds."""
    renewed = renewed_at(lease)
    duration = objects.lease_spec(lease).get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return None
    return renewed + datetime.timedelta(seconds=duration)


def holder(lease: Mapping[str, Any]) -> str | None:
    """Who holds a Lease (spec.holderIdentity; None when nobody, or a misshapen one)."""
    value = objects.lease_spec(lease).get("holderIdentity")
    return value if isinstance(value, str) and value else None


# --- heartbeat Leases ---


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """What a runner pod announced in its heartbeat Lease."""

    pod: str
    namespace: str
    factory: str
    slots: int
    agents: frozenset[str]
    warm_repos: frozenset[str]
    draining: bool
    renewed_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    sandbox: str = ""  # how its agents are isolated ("namespaces", "none"; "" from runners before it was announced)

    def is_ready(self, at: datetime.datetime) -> bool:
        return not self.draining and self.expires_at is not None and at < self.expires_at


def build_heartbeat_lease(
    *,
    pod: str,
    namespace: str,
    factory: str,
    slots: int,
    agents: Iterable[str],
    warm_repos: Iterable[str] = (),
    duration_seconds: int,
    moment: datetime.datetime,
    draining: bool = False,
    sandbox: str | None = None,
) -> Body:
    annotations = {
        constants.ANNOTATION_SLOTS: str(slots),
        constants.ANNOTATION_AGENTS: ",".join(sorted(set(agents))),
        constants.ANNOTATION_WARM_REPOS: ",".join(sorted(set(warm_repos))),
    }
    if sandbox:
        annotations[ANNOTATION_SANDBOX] = sandbox
    if draining:
        annotations[ANNOTATION_DRAINING] = "true"
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "labels": {
                constants.LABEL_ROLE: constants.ROLE_HEARTBEAT,
                constants.LABEL_FACTORY: factory,
                constants.LABEL_POD: pod,
            },
            "annotations": annotations,
        },
        "spec": {
            "holderIdentity": pod,
            "leaseDurationSeconds": duration_seconds,
            "acquireTime": format_micro_time(moment),
            "renewTime": format_micro_time(moment),
        },
    }


def _split(value: str | None) -> frozenset[str]:
    return frozenset(item for item in (value or "").split(",") if item)


def parse_heartbeat(lease: Mapping[str, Any]) -> Heartbeat | None:
    """A heartbeat Lease → Heartbeat; None if it is not one or is malformed (never raises)."""
    meta, labels, annotations = objects.meta(lease), objects.labels(lease), objects.annotations(lease)
    if labels.get(constants.LABEL_ROLE) != constants.ROLE_HEARTBEAT or not labels.get(constants.LABEL_FACTORY):
        return None
    try:
        slots = max(0, int(annotations.get(constants.ANNOTATION_SLOTS, "0")))
    except ValueError:
        slots = 0
    spec = objects.lease_spec(lease)
    return Heartbeat(
        pod=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        factory=str(labels[constants.LABEL_FACTORY]),
        slots=slots,
        agents=_split(annotations.get(constants.ANNOTATION_AGENTS)),
        warm_repos=_split(annotations.get(constants.ANNOTATION_WARM_REPOS)),
        draining=annotations.get(ANNOTATION_DRAINING) == "true",
        renewed_at=parse_time(spec.get("renewTime")),
        expires_at=expires_at(lease),
        sandbox=str(annotations.get(ANNOTATION_SANDBOX, ""))[:32],
    )


# --- binding Leases ---


@dataclasses.dataclass(frozen=True)
class Binding:
    """What a binding Lease says: which job's attempt is bound to which pod, and its state."""

    name: str
    namespace: str
    pod: str
    factory: str
    job_namespace: str
    job_name: str
    job_uid: str
    attempt: int
    holder: str | None
    claimed: bool
    stop: str | None
    expires_at: datetime.datetime | None
    resource_version: str | None
    pushed: tuple[str, str] | None = None  # (branch, commit) the runner announced before pushing


def build_binding_lease(
    *,
    job_namespace: str,
    job_name: str,
    job_uid: str,
    attempt: int,
    factory: str,
    pod: str,
    pod_namespace: str,
    claim_timeout_seconds: int,
    moment: datetime.datetime,
) -> Body:
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": {
            "name": binding_lease_name(job_uid, attempt),
            "namespace": pod_namespace,
            "labels": {
                constants.LABEL_ROLE: constants.ROLE_BINDING,
                constants.LABEL_FACTORY: factory,
                constants.LABEL_POD: pod,
            },
            "annotations": {
                ANNOTATION_JOB_NAMESPACE: job_namespace,
                ANNOTATION_JOB_NAME: job_name,
                ANNOTATION_JOB_UID: job_uid,
                ANNOTATION_ATTEMPT: str(attempt),
            },
        },
        "spec": {
            "holderIdentity": pod,
            "leaseDurationSeconds": claim_timeout_seconds,
            "renewTime": format_micro_time(moment),
        },
    }


def parse_binding(lease: Mapping[str, Any]) -> Binding | None:
    """A binding Lease → Binding; None if it is not one or is malformed (never raises)."""
    meta, labels, annotations = objects.meta(lease), objects.labels(lease), objects.annotations(lease)
    if labels.get(constants.LABEL_ROLE) != constants.ROLE_BINDING:
        return None
    try:
        attempt = int(annotations[ANNOTATION_ATTEMPT])
        job_namespace = str(annotations[ANNOTATION_JOB_NAMESPACE])
        job_name = str(annotations[ANNOTATION_JOB_NAME])
        job_uid = str(annotations[ANNOTATION_JOB_UID])
    except (KeyError, ValueError):
        return None
    spec = objects.lease_spec(lease)
    return Binding(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        pod=str(labels.get(constants.LABEL_POD, "")),
        factory=str(labels.get(constants.LABEL_FACTORY, "")),
        job_namespace=job_namespace,
        job_name=job_name,
        job_uid=job_uid,
        attempt=attempt,
        holder=spec.get("holderIdentity") or None,
        claimed=bool(spec.get("acquireTime")),
        stop=annotations.get(ANNOTATION_STOP) or None,
        expires_at=expires_at(lease),
        resource_version=meta.get("resourceVersion"),
        pushed=_parse_pushed(annotations.get(ANNOTATION_PUSHED)),
    )


def _parse_pushed(value: Any) -> tuple[str, str] | None:
    parts = str(value or "").split(" ")
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", parts[0]) or not parts[1]:
        return None
    return parts[1], parts[0]


def pushed_patch(*, branch: str, commit: str, resource_version: str) -> Body:
    return {"metadata": {"resourceVersion": resource_version, "annotations": {ANNOTATION_PUSHED: f"{commit} {branch}"}}}


def claim_patch(*, pod: str, duration_seconds: int, moment: datetime.datetime, resource_version: str) -> Body:
    """The runner's claim: it takes the Lease over with its own duration (merge patch, with precondition)."""
    stamp = format_micro_time(moment)
    return {
        "metadata": {"resourceVersion": resource_version},
        "spec": {"holderIdentity": pod, "acquireTime": stamp, "renewTime": stamp, "leaseDurationSeconds": duration_seconds},
    }


def renew_patch(*, moment: datetime.datetime, resource_version: str) -> Body:
    return {"metadata": {"resourceVersion": resource_version}, "spec": {"renewTime": format_micro_time(moment)}}


def release_patch(*, resource_version: str) -> Body:
    return {"metadata": {"resourceVersion": resource_version}, "spec": {"holderIdentity": None}}


def stop_patch(reason: str) -> Body:
    if reason not in STOP_REASONS:
        raise ValueError(f"unknown stop reason {reason!r}")
    return {"metadata": {"annotations": {ANNOTATION_STOP: reason}}}
