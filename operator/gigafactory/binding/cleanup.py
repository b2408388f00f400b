"""Finalizers: what must happen before an AgentJob or a Factory may disappear (SPEC invariant 6).

AgentJob (`gigafactory.dev/cleanup`): added with the bind — a job that never held a binding has
no Lease to release and no branch to delete, so it needs no finalizer and its deletion costs no
write. On deletion the operator stops a running attempt and waits (bounded) for the runner's
acknowledgement, releases the binding Lease, deletes the pushed branch per `cleanup.deleteBranch`
with the job's own credentials, then removes the finalizer — also when the factory or runner is gone.

Factory (`gigafactory.dev/drain`): kopf's finalizer, added and removed by kopf (factorykopf.py), not
here. On deletion no new bindings land on it (the scheduler skips deleting factories), unclaimed
bindings are undone and land elsewhere, running jobs get `spec.drainGraceSeconds` to finish and are
then stopped and requeued (binding/lifecycle.py decides); when no binding of the factory is left,
kopf's delete handler returns and kopf removes the finalizer.

The decisions here are pure; the writes carry the resourceVersion they were computed from, so a
finalizer list changed by someone else meanwhile is re-read, never clobbered.
"""

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from gigafactory import consent, constants, kubeclient
from gigafactory.binding import trust
from gigafactory.models import agentjobs, objects

logger = logging.getLogger(__name__)

Body = dict[str, Any]


async def add_finalizer(
    client: kubeclient.Client, resource: kubeclient.Resource, body: Mapping[str, Any], finalizer: str, *, tries: int = 5
) -> Body | None:
    """Add `finalizer` (a merge patch with the body's resourceVersion; on 409 re-read and retry).
    The patched object; None when the object is gone or being deleted (no finalizer may be added then)."""
    current: Mapping[str, Any] = body
    for _ in range(tries):
        meta = objects.meta(current)
        if finalizer in objects.finalizers(current):
            return dict(current)
        if objects.deleting(current):
            return None
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "finalizers": [*objects.finalizers(current), finalizer]}}
        try:
            return await client.patch(resource, str(meta.get("name")), patch, namespace=meta.get("namespace"))
        except kubeclient.Conflict:
            pass
        except kubeclient.NotFound:
            return None
        except kubeclient.Invalid:
            return None  # deletion began between our read and the write
        try:
            current = await client.get(resource, str(meta.get("name")), namespace=meta.get("namespace"))
        except kubeclient.NotFound:
            return None
    return None


async def remove_finalizer(
    client: kubeclient.Client, resource: kubeclient.Resource, body: Mapping[str, Any], finalizer: str, *, tries: int = 5
) -> bool:
    """Remove `finalizer`, keeping every other one. True when it is gone (or the object is)."""
    current: Mapping[str, Any] = body
    for _ in range(tries):
        meta = objects.meta(current)
        if finalizer not in objects.finalizers(current):
            return True
        rest = [f for f in objects.finalizers(current) if f != finalizer]
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "finalizers": rest or None}}
        try:
            await client.patch(resource, str(meta.get("name")), patch, namespace=meta.get("namespace"))
            return True
        except kubeclient.NotFound:
            return True
        except kubeclient.Conflict:
            pass
        try:
            current = await client.get(resource, str(meta.get("name")), namespace=meta.get("namespace"))
        except kubeclient.NotFound:
            return True
    return False


def pushed_branches(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(branch, commit) pairs that `cleanup.deleteBranch` asks to delete, as the status records them:
    status.result (a successful attempt), and attempts[].pushed (an attempt that announced a push and
    went silent). Always: all of them; OnFailure: only those of a job that did not end Succeeded (the
    debris of lost attempts, never a successful job's work); Never: none. Not all are to be believed:
    `branches_to_delete` keeps those the job's spec names."""
    policy = objects.field(body, "spec", "cleanup").get("deleteBranch") or agentjobs.DeleteBranchPolicy.NEVER.value
    status = objects.job_status(body)
    if policy == agentjobs.DeleteBranchPolicy.NEVER.value:
        return []
    if policy == agentjobs.DeleteBranchPolicy.ON_FAILURE.value and status.get("phase") == agentjobs.Phase.SUCCEEDED.value:
        return []
    found: list[Mapping[str, Any]] = [objects.result(status), *(objects.pushed(a) for a in objects.attempts(body))]
    pairs: list[tuple[str, str]] = []
    for item in found:
        pair = (str(item.get("branch") or ""), str(item.get("commit") or ""))
        if all(pair) and pair not in pairs:
            pairs.append(pair)
    return pairs


def branches_to_delete(body: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(to delete, left alone): a branch is deleted only when it is the job's own branch
    (spec.repo.branch, else agent/<name>) AND one of its attempts pushed it at that commit. A status
    written by an older operator, or by hand, may name other branches: those are left (and logged)."""
    own = trust.job_branch(body)
    pairs = pushed_branches(body)
    return [p for p in pairs if p[0] == own], [p for p in pairs if p[0] != own]


def log_configmaps(body: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(namespace, name, pod) of the ConfigMaps that keep the job's attempts' output (attempts[].logRef
    "configmap/<namespace>/gf-log-<pod>-…", pod the attempt's own): they go with the job. A reference
    naming another pod's log is not the attempt's and is left out (consent.parse_log_ref); the caller
    still checks the ConfigMap's labels (consent.log_belongs) before it deletes anything."""
    found: list[tuple[str, str, str]] = []
    for record in objects.attempts(body):
        ref = consent.parse_log_ref(record.get("logRef"), pod=record.get("pod"))
        if ref is not None and (*ref, str(record["pod"])) not in found:
            found.append((*ref, str(record["pod"])))
    return found


async def read_credentials(client: kubeclient.Client, body: Mapping[str, Any]) -> dict[str, str] | None:
    """The job's credentials Secret, decoded; {} when the job names none; None when it is missing.
    Raises consent.Refused when the Secret is not marked for Gigafactory use or for the job's host:
    the cleanup sends it nowhere then, as the runner would not have."""
    repo = objects.field(body, "spec", "repo")
    name = objects.text(repo, "credentialsSecret")
    if not name:
        return {}
    try:
        secret = await client.get(kubeclient.SECRETS, name, namespace=objects.namespace(body))
    except kubeclient.NotFound:
        return None
    consent.check_secret(secret, url=objects.text(repo, "url"))
    return consent.secret_data(secret)


def cleanup_event(body: Mapping[str, Any], *, reason: str, message: str, type: str = "Normal", now: datetime.datetime) -> Body:
    meta = objects.meta(body)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {"apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND, "name": meta.get("name"),
                           "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "reason": reason, "message": message[:1024], "type": type,
        "source": {"component": "gigafactory-operator"}, "reportingComponent": "gigafactory-operator",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
