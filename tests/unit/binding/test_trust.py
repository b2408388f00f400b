"""What the operator believes of runners' writes (binding/trust.py, and where patches, cleanup and the
scaler apply it): tables of what is accepted and what is refused, with the field named."""

import datetime

import pytest

from gigafactory import config
from gigafactory.binding import cleanup, patches, scaler, trust

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)
SHA = "a" * 40


def job(name: str = "fix", branch: str | None = None, **status) -> dict:
    repo = {"url": "https://git.example/app.git", **({"branch": branch} if branch else {})}
    return {"metadata": {"name": name, "namespace": "team", "uid": "u1", "resourceVersion": "7", "generation": 1},
            "spec": {"repo": repo, "cleanup": {"deleteBranch": "Always"}},
            "status": {"phase": "Running", "attempt": 1,
                       "assignment": {"attempt": 1, "pod": "p-0", "factory": "f", "lease": "gf-u1-1"}, **status}}


@pytest.mark.parametrize("namespace, declared, trusted", [
    pytest.param("runners", frozenset({"runners"}), True, id="declared"),
    pytest.param("attacker", frozenset({"runners"}), False, id="elsewhere"),
    pytest.param("attacker", None, True, id="star-trusts-all"),
])
def test_leases_count_only_in_the_runner_namespaces(namespace, declared, trusted) -> None:
    assert trust.in_runner_namespaces(namespace, declared) is trusted


@pytest.mark.parametrize("env, declared", [
    pytest.param({}, frozenset({"gigafactory-system"}), id="default-is-the-operators-namespace"),
    pytest.param({"GIGAFACTORY_NAMESPACE": "gf"}, frozenset({"gf"}), id="follows-namespace"),
    pytest.param({"GIGAFACTORY_RUNNER_NAMESPACES": "a, b"}, frozenset({"a", "b"}), id="list"),
    pytest.param({"GIGAFACTORY_RUNNER_NAMESPACES": "*"}, None, id="star"),
])
def test_the_runner_namespaces_setting(monkeypatch, env, declared) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert config.OperatorSettings().runner_namespace_set() == declared


@pytest.mark.parametrize("body, branch", [
    pytest.param(job("fix"), "agent/fix", id="default"),
    pytest.param(job("fix", branch="feature/x"), "feature/x", id="spec"),
])
def test_a_jobs_own_branch(body, branch) -> None:
    assert trust.job_branch(body) == branch


@pytest.mark.parametrize("result, problem", [
    pytest.param(None, None, id="no-result"),
    pytest.param({"branch": "agent/fix", "commit": SHA}, None, id="own-branch"),
    pytest.param({"branch": "release-1.x", "commit": SHA}, "status.report.result.branch 'release-1.x'", id="other-branch"),
    pytest.param({"branch": "agent/fix2", "commit": SHA}, "status.report.result.branch", id="prefix-is-not-enough"),
])
def test_a_reported_branch_must_be_the_jobs_own(result, problem) -> None:
    found = trust.report_problem(job("fix"), {"result": result} if result else {})
    assert (found is None) if problem is None else (problem in found)


def test_a_forged_report_fails_the_attempt_and_records_no_result() -> None:
    body = job("fix", report={"attempt": 1, "pod": "p-0", "outcome": "Succeeded", "exitCode": 0,
                              "result": {"branch": "release-1.x", "commit": SHA, "summary": "x"}})
    status = patches.fold_patch(body=body, now=NOW)["status"]
    record = status["attempts"][-1]
    assert (record["outcome"], record["reason"]) == ("InfraError", "ReportRejected")
    assert "status.report.result.branch" in record["message"] and "exitCode" not in record
    assert "result" not in status
    assert cleanup.branches_to_delete({**body, "status": {**body["status"], **status}}) == ([], [])


def test_an_honest_report_is_folded_as_before() -> None:
    body = job("fix", report={"attempt": 1, "pod": "p-0", "outcome": "Succeeded", "exitCode": 0,
                              "result": {"branch": "agent/fix", "commit": SHA, "summary": "x"}})
    status = patches.fold_patch(body=body, now=NOW)["status"]
    assert status["phase"] == "Succeeded" and status["result"]["branch"] == "agent/fix"


@pytest.mark.parametrize("pushed, recorded", [
    pytest.param(("agent/fix", SHA), True, id="own-branch"),
    pytest.param(("develop", SHA), False, id="other-branch"),
])
def test_an_announced_push_is_recorded_only_for_the_jobs_own_branch(pushed, recorded) -> None:
    record = patches.undo_patch(body=job("fix"), reason="LeaseExpired", message="gone", now=NOW, pushed=pushed)["status"]["attempts"][-1]
    assert ("pushed" in record) is recorded
    if not recorded:
        assert "develop" in record["message"] and "ignored" in record["message"]


def test_cleanup_deletes_only_the_jobs_own_pushed_branch() -> None:
    body = job("fix", phase="Failed", result={"branch": "release-1.x", "commit": SHA},
               attempts=[{"attempt": 1, "pushed": {"branch": "agent/fix", "commit": SHA}},
                         {"attempt": 2, "pushed": {"branch": "develop", "commit": "b" * 40}}])
    delete, kept = cleanup.branches_to_delete(body)
    assert delete == [("agent/fix", SHA)]
    assert kept == [("release-1.x", SHA), ("develop", "b" * 40)]


def test_cleanup_of_a_job_whose_branch_changed_since_deletes_nothing_it_named_before() -> None:
    body = job("fix", branch="feature/new", phase="Failed", attempts=[{"attempt": 1, "pushed": {"branch": "agent/fix", "commit": SHA}}])
    assert cleanup.branches_to_delete(body) == ([], [("agent/fix", SHA)])


# --- Factory templates ---

T = "spec.scaling.template.spec"


@pytest.mark.parametrize("template, field", [
    pytest.param({"spec": {"hostNetwork": True}}, f"{T}.hostNetwork", id="hostNetwork"),
    pytest.param({"spec": {"hostPID": True}}, f"{T}.hostPID", id="hostPID"),
    pytest.param({"spec": {"hostIPC": True}}, f"{T}.hostIPC", id="hostIPC"),
    pytest.param({"spec": {"volumes": [{"name": "r", "hostPath": {"path": "/"}}]}}, f"{T}.volumes[0].hostPath", id="hostPath"),
    pytest.param({"spec": {"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}}, f"{T}.volumes[0].nfs", id="nfs"),
    pytest.param({"spec": {"containers": [{"name": "r", "securityContext": {"privileged": True}}]}},
                 f"{T}.containers[0].securityContext.privileged", id="privileged"),
    pytest.param({"spec": {"initContainers": [{"name": "i", "securityContext": {"privileged": True}}]}},
                 f"{T}.initContainers[0].securityContext.privileged", id="privileged-init"),
    pytest.param({"spec": {"containers": [{"name": "r", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}},
                 f"{T}.containers[0].securityContext.capabilities.add", id="caps-add"),
    pytest.param({"spec": {"containers": [{"name": "r", "ports": [{"containerPort": 80, "hostPort": 80}]}]}},
                 f"{T}.containers[0].ports[0].hostPort", id="hostPort"),
    pytest.param({"spec": {"securityContext": {"runAsUser": 0}}}, f"{T}.securityContext.runAsUser", id="root"),
    pytest.param({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}, f"{T}.securityContext.seccompProfile", id="seccomp"),
    pytest.param({"spec": {"containers": [{"name": "r", "securityContext": {"procMount": "Unmasked"}}]}},
                 f"{T}.containers[0].securityContext.procMount", id="procMount"),
    pytest.param({"spec": {"securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}}},
                 f"{T}.securityContext.sysctls", id="sysctls"),
    pytest.param({"spec": {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}}, f"{T}.securityContext.seLinuxOptions", id="selinux"),
    pytest.param({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/runner": "unconfined"}}},
                 "spec.scaling.template.metadata.annotations", id="apparmor"),
])
def test_what_cannot_be_forced_is_refused_naming_the_field(template, field) -> None:
    _, problems = scaler.restrict_template(template, service_account="gf-pool-runner")
    assert any(p.startswith(field) for p in problems), problems


@pytest.mark.parametrize("template", [
    pytest.param({}, id="empty"),
    pytest.param({"spec": {"serviceAccountName": "gf-operator", "automountServiceAccountToken": True}}, id="operator-sa"),
    pytest.param({"spec": {"securityContext": {"runAsNonRoot": False, "seccompProfile": {"type": "Localhost", "localhostProfile": "bwrap.json"}},
                           "containers": [{"name": "r", "securityContext": {"allowPrivilegeEscalation": True, "runAsNonRoot": False,
                                                                            "capabilities": {"drop": ["NET_RAW"]}}}]}}, id="loose"),
])
def test_what_can_be_forced_is_forced(template) -> None:
    forced, problems = scaler.restrict_template(template, service_account="gf-pool-runner")
    assert problems == []
    spec = forced["spec"]
    assert spec["serviceAccountName"] == "gf-pool-runner" and "serviceAccount" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("runAsNonRoot") is not False


def test_the_deployment_carries_the_forced_templates_hash() -> None:
    factory = {"metadata": {"name": "pool", "uid": "f1"}, "spec": {"slotsPerPod": 2, "scaling": {"template": {}}}}
    body = scaler.build_deployment(factory, namespace="gf", replicas=0, service_account="gf-pool-runner")
    template, _ = scaler.build_template(factory, service_account="gf-pool-runner")
    assert body["metadata"]["annotations"][scaler.ANNOTATION_TEMPLATE_HASH] == scaler.template_hash(template)
    assert body["spec"]["template"] == template
