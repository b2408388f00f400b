"""Red team: a runner pod's ServiceAccount token (which, until the sandbox, every agent on the pod holds)
reaches no other factory's or pod's jobs, Leases or logs, and cannot steer what the operator later does
with a report (delete a branch, show or delete a log).

On the real kube-apiserver with the chart installed (tests/chart/test_install.py's release: pool alpha and
pool beta, one runner pod each, real pod-bound TokenRequest tokens, RBAC and the runner policies of
charts/gigafactory/templates/policies.yaml). The readers' own checks (`gigafactory logs`, the operator's log
cleanup) run on both servers."""
from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from gigafactory import kubeclient
from tests.chart.test_install import (  # noqa: F401 - release is a fixture
    CLAIM, OTHER_POD, PUSHED, RENEW, Identity, Release, _binding, _fill, claim_body, job, outcome, release, report_body,
)
from tests.conftest import wait_for
from tests.integration.operator import stubs
from tests.integration.runner.conftest import api, crds  # noqa: F401 - fixtures

_forget_pods = stubs.forget_pods_after_test


def _report(pod: str, *, branch: str = "agent/fix", log_ref: str | None = None) -> dict:
    body = report_body(pod)
    body["status"]["report"]["result"]["branch"] = branch
    if log_ref is not None:
        body["status"]["report"]["logRef"] = log_ref
    return body


# (the job's factory and pod, its phase, the status patch of the alpha runner's pod-bound token, expected)
STATUS_ATTACKS = [
    pytest.param("beta", "beta", "Bound", lambda rel: claim_body(rel.alpha_pod), "policy", id="claim-another-factorys-job"),
    pytest.param("beta", "beta", "Running", lambda rel: _report(rel.beta_pod), "policy", id="report-on-another-factorys-job"),
    pytest.param("beta", "beta", "Running", lambda rel: {"status": {"countFrom": 5}}, "policy",
                 id="reset-another-factorys-retry-budget"),
    pytest.param("alpha", "other", "Bound", lambda rel: claim_body(rel.alpha_pod), "policy", id="claim-another-pods-job"),
    pytest.param("alpha", "other", "Running", lambda rel: _report(OTHER_POD), "policy", id="report-on-another-pods-job"),
    pytest.param("alpha", "mine", "Running", lambda rel: {"status": {"countFrom": 5}}, "policy", id="reset-own-jobs-countFrom"),
    pytest.param("alpha", "mine", "Running", lambda rel: {"status": {"retryRequest": "forged"}}, "policy",
                 id="forge-own-jobs-retryRequest"),
    pytest.param("alpha", "mine", "Running", lambda rel: _report(rel.alpha_pod, branch="release-1.x"), "policy",
                 id="report-a-foreign-branch"),
    pytest.param("alpha", "mine", "Running", lambda rel: _report(rel.alpha_pod, branch="main"), "policy", id="report-main"),
    pytest.param("alpha", "mine", "Running",
                 lambda rel: _report(rel.alpha_pod, log_ref=f"configmap/{rel.namespace}/gf-log-{OTHER_POD}-2-abc"), "policy",
                 id="report-another-pods-log"),
    pytest.param("alpha", "mine", "Running",
                 lambda rel: _report(rel.alpha_pod, log_ref=f"configmap/{rel.namespace}/gf-log-{rel.alpha_pod}-2-abc"), "allowed",
                 id="report-own-branch-and-log"),
]


@pytest.mark.real_only
@pytest.mark.parametrize("factory, pod, phase, patch, expected", STATUS_ATTACKS)
def test_a_runner_token_writes_no_status_but_its_own_jobs_claim_and_report(release, factory, pod, phase, patch, expected) -> None:  # noqa: F811
    rel: Release = release
    name = job(rel, factory={"alpha": rel.alpha, "beta": rel.beta}[factory], pod={"mine": rel.alpha_pod, "other": OTHER_POD,
                                                                                "beta": rel.beta_pod}[pod],
               namespace=rel.team_a, phase=phase)
    before = rel.admin.get_job(rel.team_a, name)["status"]
    assert outcome(lambda: rel.alpha_runner.patch_job_status(rel.team_a, name, patch(rel))) == expected
    assert (rel.admin.get_job(rel.team_a, name)["status"] != before) == (expected == "allowed")


@pytest.mark.real_only
def test_a_report_carries_only_the_models_fields(release) -> None:  # noqa: F811
    """The report's allow-list is the CRD's schema: a field the AttemptReport model does not have never
    reaches the job (the server prunes it), so neither the policy nor the operator ever sees it."""
    rel: Release = release
    name = job(rel, factory=rel.alpha, pod=rel.alpha_pod, namespace=rel.team_a, phase="Running")
    body = _report(rel.alpha_pod)
    body["status"]["report"]["deleteBranches"] = ["main", "release-1.x"]
    body["status"]["report"]["result"]["extraBranch"] = "main"
    assert outcome(lambda: rel.alpha_runner.patch_job_status(rel.team_a, name, body)) == "allowed"
    stored = rel.admin.get_job(rel.team_a, name)["status"]["report"]
    assert "deleteBranches" not in stored and "extraBranch" not in stored["result"]
    assert stored["result"]["branch"] == "agent/fix"


@pytest.mark.real_only
@pytest.mark.parametrize("factory, pod, patch", [
    pytest.param("beta", "beta", RENEW, id="renew-another-factorys-binding"),
    pytest.param("beta", "beta", CLAIM, id="claim-another-factorys-binding"),
    pytest.param("alpha", "other", CLAIM, id="claim-another-pods-binding"),
    pytest.param("alpha", "other", PUSHED, id="announce-a-push-on-another-pods-binding"),
    pytest.param("alpha", "other", "delete", id="delete-another-pods-binding"),
])
def test_a_runner_token_touches_no_other_factorys_or_pods_leases(release, factory, pod, patch) -> None:  # noqa: F811
    rel: Release = release
    name = _binding(rel, factory={"alpha": rel.alpha, "beta": rel.beta}[factory], pod={"other": OTHER_POD, "beta": rel.beta_pod}[pod])
    before = rel.admin.leases.read_namespaced_lease(name, rel.namespace).metadata.resource_version
    runner: Identity = rel.alpha_runner
    if patch == "delete":
        call: Callable[[], Any] = lambda: runner.leases.delete_namespaced_lease(name, rel.namespace)  # noqa: E731
    else:
        body = _fill(patch, {"pod": rel.alpha_pod, "alpha": rel.alpha, "beta": rel.beta})
        call = lambda: runner.patch_lease(rel.namespace, name, body)  # noqa: E731
    assert outcome(call) == "policy"
    assert rel.admin.leases.read_namespaced_lease(name, rel.namespace).metadata.resource_version == before


@pytest.mark.real_only
def test_a_runner_token_cannot_make_another_pods_log(release) -> None:  # noqa: F811
    """A forged log: made ahead of time under a name another pod's runner will report, or labelled as another
    pod's. Only gf-log-<its own pod>-..., labelled with its own pod and a job, and never rewritten."""
    rel: Release = release
    runner, ns = rel.alpha_runner, rel.namespace
    mark = uuid.uuid4().hex[:6]

    def log(name: str, pod: str, uid: str | None = "uid") -> dict:
        labels = {"gigafactory.dev/role": "log", "gigafactory.dev/pod": pod}
        if uid:
            labels["gigafactory.dev/job-uid"] = uid
        return {"metadata": {"name": name, "labels": labels}, "data": {"output": "forged"}}

    def create(body: dict) -> str:
        return outcome(lambda: runner.core.create_namespaced_config_map(ns, body))

    seen = {
        "another pod's log name, own pod label": create(log(f"gf-log-{rel.beta_pod}-1-{mark}", rel.alpha_pod)),
        "another pod's log name and label": create(log(f"gf-log-{OTHER_POD}-1-{mark}", OTHER_POD)),
        "the old name of another job's log": create(log(f"gf-log-{uuid.uuid4()}-1", rel.alpha_pod)),
        "own log for no job": create(log(f"gf-log-{rel.alpha_pod}-1-{mark}", rel.alpha_pod, uid=None)),
        "own log": create(log(f"gf-log-{rel.alpha_pod}-1-{mark}", rel.alpha_pod)),
        "rewrite own log": outcome(lambda: runner.core.patch_namespaced_config_map(f"gf-log-{rel.alpha_pod}-1-{mark}", ns,
                                                                                  {"data": {"output": "rewritten"}})),
    }
    assert seen == {
        "another pod's log name, own pod label": "policy", "another pod's log name and label": "policy",
        "the old name of another job's log": "policy", "own log for no job": "policy", "own log": "allowed",
        "rewrite own log": "rbac",
    }


# ----------------------------------------------------------------- readers of logRef: both servers


def _job_with_log(client: stubs.Api, namespace: str, *, labels_uid: str | None = None, labels_pod: str = "pod-a",
                  name_pod: str = "pod-a") -> tuple[str, str]:
    """A finished job whose attempt 1 ran on pod-a and names a log ConfigMap; (job name, ConfigMap name)."""
    name = f"job-{uuid.uuid4().hex[:6]}"
    created = client.create_job(namespace, name)
    log_name = f"gf-log-{name_pod}-1-{uuid.uuid4().hex[:6]}"
    client.call("create", kubeclient.CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap", "data": {"output": f"the output of {log_name}\n"},
        "metadata": {"name": log_name, "namespace": namespace,
                     "labels": {"gigafactory.dev/role": "log", "gigafactory.dev/pod": labels_pod,
                                "gigafactory.dev/job-uid": labels_uid or created["metadata"]["uid"]}}}, namespace=namespace)
    client.call("patch", kubeclient.AGENTJOBS, name, {"status": {"phase": "Failed", "attempt": 1, "attempts": [
        {"attempt": 1, "factory": "f", "pod": "pod-a", "outcome": "AgentFailed", "reason": "AgentExit",
         "logRef": f"configmap/{namespace}/{log_name}"}]}}, namespace=namespace, subresource="status")
    return name, log_name


@pytest.mark.parametrize("forgery", [
    pytest.param({"labels_uid": "another-jobs-uid"}, id="another-jobs-log"),
    pytest.param({"labels_pod": "pod-b"}, id="labelled-with-another-pod"),
    pytest.param({"name_pod": "pod-b", "labels_pod": "pod-b"}, id="another-pods-log"),
])
def test_gigafactory_logs_shows_only_the_attempts_own_log(api, gf, namespace, forgery) -> None:  # noqa: F811
    own, _ = _job_with_log(api, namespace)
    assert "the output of gf-log-pod-a-1-" in gf("logs", own, "-n", namespace)
    forged, log_name = _job_with_log(api, namespace, **forgery)
    output = gf("logs", forged, "-n", namespace, code=1)
    assert "not shown" in output and f"the output of {log_name}" not in output


def test_the_operator_deletes_only_logs_that_are_the_jobs_own(api, kubeconfig, namespace, tmp_path) -> None:  # noqa: F811
    """A report naming another job's log (its own pod's prefix, another job's uid): when the job goes, the
    operator leaves that log alone (test_finalizers.py shows it deletes the job's own)."""
    runner = stubs.one_runner(api, namespace, "logs")
    with stubs.operators(kubeconfig, tmp_path):
        api.create_job(namespace, "forger")
        runner.claim(wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding"))

        def log(name: str, uid: str) -> dict:
            return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"output": "..."},
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"gigafactory.dev/role": "log", "gigafactory.dev/pod": runner.pod, "gigafactory.dev/job-uid": uid}}}
        theirs = f"gf-log-{runner.pod}-1-theirs"  # made by this pod's runner for another job it ran
        api.call("create", kubeclient.CONFIGMAPS, log(theirs, str(uuid.uuid4())), namespace=namespace)
        runner.report(namespace, "forger", outcome="AgentFailed", exitCode=1, logRef=f"configmap/{namespace}/{theirs}")
        wait_for(lambda: (api.job(namespace, "forger").get("status") or {}).get("attempts"), timeout=10, message="folded")
        api.call("delete", kubeclient.AGENTJOBS, "forger", namespace=namespace)

        def gone() -> bool:
            return not api.call("list", kubeclient.AGENTJOBS, namespace=namespace, field_selector="metadata.name=forger")[0]
        wait_for(gone, timeout=15, message="the forger's job deleted")
    names = {c["metadata"]["name"] for c in api.call("list", kubeclient.CONFIGMAPS, namespace=namespace)[0]}
    assert theirs in names  # another job's log, named by a forged reference: left alone
