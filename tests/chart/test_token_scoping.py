"""Per-factory token scoping: the CEL of the chart's ValidatingAdmissionPolicies, evaluated exactly as
rendered by helm, on the requests a runner of pool `alpha` makes by the protocol and on the ones it must not.
The library is `common-expression-language` (module `cel`: Python bindings of the Rust CEL interpreter,
wheels, no toolchain); on the subset the policies use (has, in, filter, all, ternaries, equality) it
agrees with Kubernetes' cel-go. Schema type-checking is the API server's (hack/e2e-kind.sh checks it).

Objects and patches come from the protocol's own builders (`gigafactory.leases`) and the shapes the
runner sends (docs/protocol.md), applied as the API server applies a merge patch."""

import datetime
import pathlib
import subprocess
from typing import Any

import cel
import pytest
import yaml

from gigafactory import leases
from localcluster import patching

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELM = ROOT / ".venv" / "bin" / "helm"
pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)")

VALUES = "pools:\n  - {name: alpha, agents: [script], profiles: {script: {argv: [x]}}}\n  - {name: beta, agents: [script], profiles: {script: {argv: [x]}}}\n"
ALPHA_SA = "system:serviceaccount:runners:gf-alpha-runner"
POD, OTHER_POD = "alpha-7d9f-x2x4q", "alpha-7d9f-zzzzz"
MOMENT = datetime.datetime(2026, 11, 24, 10, 0, tzinfo=datetime.timezone.utc)
STAMP = "2026-11-24T10:00:00Z"


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> list[dict]:
    """Pool alpha's admission policies (one per kind its runners write), each with a Deny binding."""
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(VALUES)
    out = subprocess.run([str(HELM), "template", "gf", str(ROOT / "charts" / "gigafactory"), "-n", "runners", "-f", str(values)],
                         capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].startswith("gf-alpha-runner-")]
    bindings = {d["spec"]["policyName"]: d["spec"] for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert {p["metadata"]["name"] for p in policies} == {"gf-alpha-runner-jobs", "gf-alpha-runner-leases", "gf-alpha-runner-logs"}
    for p in policies:
        assert p["spec"]["failurePolicy"] == "Fail"
        assert bindings[p["metadata"]["name"]]["validationActions"] == ["Deny"]
    return policies


def _evaluate(expression: str, context: dict) -> Any:
    try:
        return cel.evaluate(expression, context)
    except Exception:  # noqa: BLE001 - an expression that errors denies, as with failurePolicy: Fail
        return False


def _admit(policies: list[dict], request: dict, obj: dict | None, old: dict | None) -> bool | None:
    """None when no policy applies; else whether every validation of every applying policy passes."""
    resource = request["resource"]["resource"] + (f"/{request['subResource']}" if request.get("subResource") else "")
    verdict = None
    for policy in policies:
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        if not any(resource in r["resources"] and request["resource"]["group"] in r["apiGroups"] and request["operation"] in r["operations"]
                   for r in rules):
            continue
        context = {"request": request, "object": obj, "oldObject": old}
        if not all(_evaluate(c["expression"], context) for c in policy["spec"]["matchConditions"]):
            continue
        context["variables"] = {v["name"]: _evaluate(v["expression"], context) for v in policy["spec"]["variables"]}
        verdict = (verdict is not False) and all(_evaluate(v["expression"], context) is True for v in policy["spec"]["validations"])
    return verdict


def request(resource: str, operation: str = "UPDATE", *, user: str = ALPHA_SA, pod: str | None = POD) -> dict:
    extra = {"authentication.kubernetes.io/pod-name": [pod]} if pod else {}
    group = {"agentjobs": "gigafactory.dev", "leases": "coordination.k8s.io", "configmaps": ""}[resource]
    return {"operation": operation, "userInfo": {"username": user, "extra": extra},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "subResource": "status" if resource == "agentjobs" else ""}


# --- AgentJobs: a job as the operator bound it, and the runner's two status writes ---

def bound_job(*, factory: str = "alpha", pod: str = POD) -> dict:
    return {
        "apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob",
        "metadata": {"name": "fix-flaky-test", "namespace": "team-a", "generation": 1},
        "spec": {"queue": "backend"},
        "status": {
            "phase": "Bound", "reason": "Bound", "factory": factory, "pod": pod, "attempt": 2, "startTime": STAMP,
            "observedGeneration": 1,
            "attempts": [{"attempt": 1, "factory": factory, "pod": pod, "outcome": "InfraError", "reason": "LeaseExpired"}],
            "assignment": {"factory": factory, "pod": pod, "podNamespace": "runners", "attempt": 2,
                           "lease": "gf-uid-2", "leaseNamespace": "runners", "boundAt": STAMP, "score": 87,
                           "scores": {"FreeCapacity": 100, "WarmRepo": 0}},
            "conditions": [{"type": "Scheduled", "status": "True", "reason": "Bound", "message": "bound", "observedGeneration": 1}],
        },
    }


def claim(job: dict, *, pod: str = POD) -> dict:
    """The runner's claim patch (runner/running.py claim, docs/protocol.md step 3)."""
    conditions = [c for c in job["status"]["conditions"] if c["type"] not in ("Claimed", "Running")]
    conditions += [{"type": "Claimed", "status": "True", "reason": "Claimed", "message": f"claimed by {pod}"},
                   {"type": "Running", "status": "True", "reason": "AgentRunning", "message": "the agent is running"}]
    return {"status": {"phase": "Running", "reason": "AgentRunning", "assignment": {"claimedAt": STAMP}, "conditions": conditions}}


def report(*, attempt: int = 2, pod: str = POD, branch: str = "agent/fix-flaky-test", log_ref: str | None = None) -> dict:
    body = {"attempt": attempt, "pod": pod, "outcome": "Succeeded", "finishedAt": STAMP, "result": {"branch": branch, "commit": "0" * 40}}
    if log_ref is not None:
        body["logRef"] = log_ref
    return {"status": {"report": body}}


def running_job(**kwargs: Any) -> dict:
    job = bound_job(**kwargs)
    return patching.merge_patch(job, claim(job))


def job_case(patch: dict, *, old: dict | None = None, pod: str | None = POD) -> tuple[dict, dict | None, dict | None]:
    old = old if old is not None else bound_job()
    return request("agentjobs", pod=pod), patching.merge_patch(old, patch), old


def status_patch(**status: Any) -> dict:
    return {"status": status}


JOB_CASES = [
    pytest.param(*job_case(claim(bound_job())), True, id="claim-own-binding"),
    pytest.param(*job_case(report()), True, id="report-before-claim"),
    pytest.param(*job_case(report(), old=running_job()), True, id="report-after-claim"),
    pytest.param(*job_case(claim(bound_job()), pod=None), True, id="claim-with-token-bound-to-no-pod"),
    pytest.param(*job_case(claim(bound_job(pod=OTHER_POD)), old=bound_job(pod=OTHER_POD)), False, id="claim-other-pods-binding"),
    pytest.param(*job_case(claim(bound_job(pod=OTHER_POD)), old=bound_job(pod=OTHER_POD), pod=None), True,
                 id="no-pod-token-held-to-factory-only"),
    pytest.param(*job_case(claim(bound_job(factory="beta")), old=bound_job(factory="beta")), False, id="claim-other-factorys-job"),
    pytest.param(*job_case(claim(bound_job(factory="beta")), old=bound_job(factory="beta"), pod=None), False,
                 id="other-factorys-job-without-pod-token"),
    pytest.param(*job_case(status_patch(phase="Running"), old={**bound_job(), "status": {"phase": "Pending"}}), False,
                 id="claim-unbound-job"),
    pytest.param(*job_case(status_patch(phase="Succeeded"), old=running_job()), False, id="declare-own-success"),
    pytest.param(*job_case(status_patch(phase="Pending"), old=running_job()), False, id="unbind-itself"),
    pytest.param(*job_case(status_patch(attempt=1)), False, id="rewind-attempt"),
    pytest.param(*job_case(status_patch(attempts=None)), False, id="erase-attempt-history"),
    pytest.param(*job_case(status_patch(result={"branch": "main"})), False, id="write-result-directly"),
    pytest.param(*job_case(status_patch(assignment={"pod": OTHER_POD})), False, id="move-binding-to-other-pod"),
    pytest.param(*job_case(status_patch(assignment={"factory": "beta"})), False, id="move-binding-to-other-factory"),
    pytest.param(*job_case(status_patch(assignment=None)), False, id="drop-assignment"),
    pytest.param(*job_case(status_patch(conditions=[])), False, id="erase-scheduled-condition"),
    pytest.param(*job_case(status_patch(countFrom=3)), False, id="reset-own-retry-budget"),
    pytest.param(*job_case(status_patch(reason="Succeeded"), old=running_job()), False, id="forge-reason"),
    pytest.param(*job_case({"status": {**claim(bound_job())["status"], "reason": "Succeeded"}}), False,
                 id="claim-with-a-forged-reason"),
    pytest.param(*job_case(status_patch(factory="beta", pod=OTHER_POD), old=running_job()), False,
                 id="rewrite-where-it-ran"),
    pytest.param(*job_case(status_patch(retryRequest="forged")), False, id="forge-retry-request"),
    pytest.param(*job_case(report(attempt=1), old=running_job()), False, id="report-stale-attempt"),
    pytest.param(*job_case(report(pod=OTHER_POD), old=running_job()), False, id="report-as-other-pod"),
    pytest.param(*job_case(status_patch(report=None), old=patching.merge_patch(running_job(), report())), False, id="erase-report"),
    # The report names the job's own branch (cleanup deletes what it names) and a log of the reporting pod.
    pytest.param(*job_case(report(branch="release-1.x"), old=running_job()), False, id="report-a-foreign-branch"),
    pytest.param(*job_case(report(branch="feature/x"), old=patching.merge_patch(running_job(), {"spec": {"repo": {"branch": "feature/x"}}})),
                 True, id="report-the-specs-own-branch"),
    pytest.param(*job_case(report(branch="agent/fix-flaky-test"),
                           old=patching.merge_patch(running_job(), {"spec": {"repo": {"branch": "feature/x"}}})),
                 False, id="report-the-default-branch-when-the-spec-names-another"),
    pytest.param(*job_case(report(log_ref=f"configmap/runners/gf-log-{POD}-2-a1b2c3"), old=running_job()), True, id="report-own-pods-log"),
    pytest.param(*job_case(report(log_ref=f"configmap/runners/gf-log-{OTHER_POD}-2-a1b2c3"), old=running_job()), False,
                 id="report-another-pods-log"),
    pytest.param(*job_case(report(log_ref=f"configmap/kube-system/gf-log-{POD}-2"), old=running_job()), False,
                 id="report-a-log-outside-the-runner-namespace"),
]


@pytest.mark.parametrize("request_, obj, old, admitted", JOB_CASES)
def test_runner_writes_only_its_claim_and_report_on_its_own_jobs(policy, request_, obj, old, admitted) -> None:
    assert _admit(policy, request_, obj, old) is admitted


def test_policies_name_the_versions_they_are_type_checked_against(policy) -> None:
    """Not "*": the API server type-checks a policy's CEL only for the versions it names (matchPolicy
    Equivalent still matches requests through any other), so each names the version the schema is served at."""
    crd = yaml.safe_load((ROOT / "charts" / "gigafactory" / "crds" / "agentjobs.yaml").read_text())
    stored = next(v["name"] for v in crd["spec"]["versions"] if v["storage"])
    versions = {p["metadata"]["name"].rsplit("-", 1)[1]: p["spec"]["matchConstraints"] for p in policy}
    assert {k: (m["matchPolicy"], m["resourceRules"][0]["apiVersions"]) for k, m in versions.items()} == {
        "jobs": ("Equivalent", [stored]), "leases": ("Equivalent", ["v1"]), "logs": ("Equivalent", ["v1"])}


def test_every_status_field_but_the_runners_is_held_unchanged(policy) -> None:
    """The CEL cannot iterate a typed object's fields, so the jobs policy names each field a runner must leave
    alone: every field of the CRD's status (and of status.assignment) but the ones the protocol gives the runner.
    A field added to the model without a line in policies.yaml would be writable by any runner (countFrom and
    retryRequest once were: a runner could reset its own job's retry budget)."""
    crd = yaml.safe_load((ROOT / "charts" / "gigafactory" / "crds" / "agentjobs.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    jobs = next(p for p in policy if p["metadata"]["name"] == "gf-alpha-runner-jobs")
    text = " ".join(v["expression"] for v in jobs["spec"]["validations"])
    # reason: a runner sets it to AgentRunning with its claim, and to nothing else (its own rule).
    assert "object.status.reason == 'AgentRunning'" in text
    for field in set(status) - {"phase", "conditions", "assignment", "report", "reason"}:
        assert f"object.status.{field} == oldObject.status.{field}" in text, field
    for field in set(status["assignment"]["properties"]) - {"claimedAt"}:
        assert f"object.status.assignment.{field} == oldObject.status.assignment.{field}" in text, field


def test_the_report_keeps_no_field_the_model_does_not_have() -> None:
    """The report's fields are an allow-list by the CRD itself: a structural schema, nothing in status.report
    keeps unknown fields, so the API server prunes any other field before admission and the policy sees only
    the AttemptReport model's fields (each then checked by its rule)."""
    from gigafactory.models import agentjobs

    crd = yaml.safe_load((ROOT / "charts" / "gigafactory" / "crds" / "agentjobs.yaml").read_text())
    report_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["report"]

    def open_nodes(node: Any, where: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        found = [where] if node.get("x-kubernetes-preserve-unknown-fields") else []
        for key, child in (node.get("properties") or {}).items():
            found += open_nodes(child, f"{where}.{key}")
        return found + open_nodes(node.get("items"), f"{where}[]")

    assert open_nodes(report_schema, "status.report") == []
    assert set(report_schema["properties"]) == {f.alias or name for name, f in agentjobs.AttemptReport.model_fields.items()}


# --- Leases: built by the protocol's own builders ---

def heartbeat(*, pod: str = POD, factory: str = "alpha") -> dict:
    return leases.build_heartbeat_lease(pod=pod, namespace="runners", factory=factory, slots=2, agents=["script"],
                                        duration_seconds=15, moment=MOMENT)


def binding(*, pod: str = POD, factory: str = "alpha") -> dict:
    lease = leases.build_binding_lease(job_namespace="team-a", job_name="fix-flaky-test", job_uid="uid", attempt=2, factory=factory,
                                       pod=pod, pod_namespace="runners", claim_timeout_seconds=30, moment=MOMENT)
    lease["metadata"]["resourceVersion"] = "7"
    return lease


def relabel(lease: dict, **labels: str) -> dict:
    return patching.merge_patch(lease, {"metadata": {"labels": {f"gigafactory.dev/{k}": v for k, v in labels.items()}}})


def update(old: dict, patch: dict, **kwargs: Any) -> tuple[dict, dict, dict]:
    return request("leases", **kwargs), patching.merge_patch(old, patch), old


CLAIM = leases.claim_patch(pod=POD, duration_seconds=30, moment=MOMENT, resource_version="7")
RENEW = leases.renew_patch(moment=MOMENT, resource_version="7")
RELEASE = leases.release_patch(resource_version="7")
STOPPED = patching.merge_patch(binding(), leases.stop_patch("Cancelled"))
PUSHED = leases.pushed_patch(branch="agent/x", commit="a" * 40, resource_version="7")

LEASE_CASES = [
    pytest.param(request("leases", "CREATE"), heartbeat(), None, True, id="create-own-heartbeat"),
    pytest.param(*update(heartbeat(), RENEW), True, id="renew-own-heartbeat"),
    pytest.param(*update(heartbeat(), {"metadata": {"annotations": {leases.ANNOTATION_DRAINING: "true"}}}), True,
                 id="announce-draining"),
    pytest.param(request("leases", "DELETE"), None, heartbeat(), True, id="delete-own-heartbeat"),
    pytest.param(*update(binding(), CLAIM), True, id="claim-own-binding-lease"),
    pytest.param(*update(binding(), RENEW), True, id="renew-own-binding-lease"),
    pytest.param(*update(STOPPED, RELEASE), True, id="release-after-stop-request"),
    pytest.param(request("leases", "CREATE"), heartbeat(pod=OTHER_POD), None, False, id="create-heartbeat-for-other-pod"),
    pytest.param(request("leases", "CREATE"), heartbeat(factory="beta"), None, False, id="create-heartbeat-in-other-factory"),
    pytest.param(request("leases", "CREATE"), binding(), None, False, id="create-binding-lease"),
    pytest.param(request("leases", "DELETE"), None, binding(), False, id="delete-own-binding-lease"),
    pytest.param(request("leases", "DELETE"), None, heartbeat(pod=OTHER_POD), False, id="delete-other-pods-heartbeat"),
    pytest.param(*update(binding(pod=OTHER_POD), CLAIM), False, id="claim-other-pods-binding-lease"),
    pytest.param(*update(binding(pod=OTHER_POD), CLAIM, pod=None), True, id="other-pods-lease-with-token-bound-to-no-pod"),
    pytest.param(*update(binding(factory="beta"), RENEW), False, id="renew-other-factorys-lease"),
    pytest.param(*update(binding(factory="beta"), RENEW, pod=None), False, id="other-factorys-lease-without-pod-token"),
    pytest.param(request("leases"), relabel(binding(factory="beta"), factory="alpha"), binding(factory="beta"), False,
                 id="relabel-other-factorys-lease-into-own"),
    pytest.param(*update(binding(), {"metadata": {"labels": {"gigafactory.dev/factory": "beta"}}}), False, id="relabel-own-lease-away"),
    pytest.param(*update(binding(), {"metadata": {"labels": {"gigafactory.dev/role": "heartbeat"}}}), False,
                 id="turn-binding-into-heartbeat"),
    pytest.param(*update(STOPPED, {"metadata": {"annotations": {leases.ANNOTATION_STOP: None}}}), False, id="erase-stop-request"),
    pytest.param(*update(binding(), {"metadata": {"annotations": {leases.ANNOTATION_JOB_NAME: "other-job"}}}), False,
                 id="point-binding-at-other-job"),
    pytest.param(request("leases", "CREATE"), {"metadata": {"name": POD}, "spec": {}}, None, False, id="create-unlabelled-lease"),
    pytest.param(*update(binding(), PUSHED), True, id="announce-push-on-own-binding"),
    pytest.param(*update(STOPPED, PUSHED), True, id="announce-push-after-stop-request"),
    pytest.param(*update(patching.merge_patch(binding(), PUSHED), leases.pushed_patch(branch="agent/x", commit="b" * 40, resource_version="7")),
                 False, id="rewrite-announced-push"),
    pytest.param(*update(patching.merge_patch(binding(), PUSHED), {"metadata": {"annotations": {leases.ANNOTATION_PUSHED: None}}}),
                 False, id="erase-announced-push"),
    pytest.param(*update(binding(factory="beta"), PUSHED), False, id="announce-push-on-other-factorys-lease"),
    pytest.param(*update(binding(), {"metadata": {"annotations": {"gigafactory.dev/other": "x"}}}), False, id="add-other-annotation-to-binding"),
]


@pytest.mark.parametrize("request_, obj, old, admitted", LEASE_CASES)
def test_runner_touches_only_its_own_leases(policy, request_, obj, old, admitted) -> None:
    assert _admit(policy, request_, obj, old) is admitted


# --- ConfigMaps: its log ConfigMaps, nothing else ---

def log_configmap(*, name: str = f"gf-log-{POD}-2-a1b2c3", pod: str = POD, uid: str | None = "uid") -> dict:
    labels = {"gigafactory.dev/role": "log", "gigafactory.dev/pod": pod}
    if uid is not None:
        labels["gigafactory.dev/job-uid"] = uid
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "runners", "labels": labels},
            "data": {"output": "..."}}


@pytest.mark.parametrize(
    "request_, obj, old, admitted",
    [
        pytest.param(request("configmaps", "CREATE"), log_configmap(), None, True, id="create-own-log"),
        pytest.param(request("configmaps", "CREATE"), log_configmap(name="gf-alpha-profiles"), None, False, id="create-profiles"),
        pytest.param(request("configmaps", "CREATE"), log_configmap(pod=OTHER_POD), None, False, id="create-log-as-other-pod"),
        pytest.param(request("configmaps", "CREATE"), log_configmap(name=f"gf-log-{OTHER_POD}-2-a1b2c3"), None, False,
                     id="create-another-pods-log-name-with-own-label"),
        pytest.param(request("configmaps", "CREATE"), log_configmap(name="gf-log-uid-2"), None, False, id="create-log-not-named-after-its-pod"),
        pytest.param(request("configmaps", "CREATE"), log_configmap(uid=None), None, False, id="create-log-for-no-job"),
        pytest.param(request("configmaps", "CREATE", pod=None), log_configmap(name=f"gf-log-{OTHER_POD}-2-x", pod=OTHER_POD), None, True,
                     id="no-pod-token-held-to-name-and-label-agreeing"),
        pytest.param(request("configmaps", "CREATE", pod=None), log_configmap(name=f"gf-log-{OTHER_POD}-2-x"), None, False,
                     id="no-pod-token-name-and-label-disagree"),
        pytest.param(request("configmaps"), log_configmap(), log_configmap(), False, id="rewrite-a-log"),
        pytest.param(request("configmaps", "DELETE"), None, log_configmap(), False, id="delete-a-log"),
    ],
)
def test_runner_creates_only_its_log_configmaps(policy, request_, obj, old, admitted) -> None:
    assert _admit(policy, request_, obj, old) is admitted


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(request("leases", user="system:serviceaccount:runners:gf-operator", pod=None), id="operator"),
        pytest.param(request("leases", user="system:serviceaccount:runners:gf-beta-runner"), id="other-pools-runner"),
        pytest.param(request("leases", user="system:serviceaccount:elsewhere:gf-alpha-runner"), id="same-name-other-namespace"),
    ],
)
def test_policy_applies_to_this_pools_runners_only(policy, request_) -> None:
    lease = binding(factory="beta")
    assert _admit(policy, request_, patching.merge_patch(lease, RENEW), lease) is None
