"""What the operator trusts of what runners write, and how far: pure checks, no I/O.

A runner's token (and every agent on its pod, until the sandbox holds) can write a heartbeat Lease,
its binding Leases' `pushed` annotation and its jobs' `status.report`. The operator acts on those
writes: it schedules to a heartbeat, records a pushed branch, and deletes that branch when the job
goes. So each write is believed only as far as the operator can check it against what the platform
and the job's author declared (docs/security.md, "What the operator trusts"):

- a Lease counts only in a runner namespace the platform declared (`runner_namespaces`);
- a reported or announced branch counts only when it is the job's own branch (`spec.repo.branch`,
  else `agent/<job name>`), the one branch a runner of this job ever pushes.
"""

import datetime
from collections.abc import Mapping
from typing import Any

from gigafactory.models import objects

# The reason of an attempt whose report names something the job never asked for.
REASON_REPORT_REJECTED = "ReportRejected"
# The reason of the Event on a Lease outside the runner namespaces.
REASON_LEASE_IGNORED = "LeaseIgnored"


def in_runner_namespaces(namespace: str, declared: frozenset[str] | None) -> bool:
    """Whether a Lease in `namespace` may speak for a runner pod (`declared` None: every namespace)."""
    return declared is None or namespace in declared


def job_branch(body: Mapping[str, Any]) -> str:
    """The branch this job pushes to: spec.repo.branch, else agent/<job name> (as the runner decides)."""
    return objects.text(objects.field(body, "spec", "repo"), "branch") or f"agent/{objects.name(body)}"


def report_problem(body: Mapping[str, Any], report: Mapping[str, Any]) -> str | None:
    """Why a report's result cannot be believed, naming the field; None when it can."""
    result = report.get("result")
    if not result:
        return None
    if not isinstance(result, Mapping):
        return "status.report.result is not an object"
    branch = result.get("branch")
    own = job_branch(body)
    if branch is not None and branch != own:
        return f"status.report.result.branch {str(branch)[:255]!r} is not the job's branch {own!r}"
    return None


def own_push(body: Mapping[str, Any], pushed: tuple[str, str] | None) -> bool:
    """Whether a (branch, commit) announced on a binding Lease is a push of this job's own branch."""
    return pushed is not None and pushed[0] == job_branch(body)


def ignored_lease_event(lease: Mapping[str, Any], *, message: str, now: datetime.datetime) -> dict[str, Any]:
    """A Warning Event on a Lease the operator ignores, in the Lease's namespace (where whoever made it looks)."""
    meta = objects.meta(lease)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": meta.get("name"),
                           "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "reason": REASON_LEASE_IGNORED, "message": message[:1024], "type": "Warning",
        "source": {"component": "gigafactory-operator"}, "reportingComponent": "gigafactory-operator",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
