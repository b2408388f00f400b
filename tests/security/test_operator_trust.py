"""Red team: the operator trusts what runners write only as far as it can check it.

Runner pods enrol with a heartbeat Lease and bind under binding Leases; a runner announces a push on
its binding Lease and reports a result in the job's status. Before issue 13 the operator believed all
of it: a heartbeat Lease in any namespace enrolled a runner, a Lease anywhere could undo a job's
attempt, and any branch a report or an announcement named was deleted with the job. And whoever wrote
a Factory chose the identity and privileges of the runner pods the operator made from its template.
Each test mounts one such attack on the real operator process (docs/security.md, "What the operator
trusts")."""

import datetime
import re
import urllib.request
import uuid

import git
import kubernetes
import pytest

from gigafactory import constants, kubeclient, leases
from tests.conftest import wait_for
from tests.gitrepos import commit_file, make_remote
from tests.integration.operator import stubs

pytestmark = pytest.mark.xdist_group("operator")


@pytest.fixture(scope="module", autouse=True)
def crds(install_crds) -> None:
    install_crds(stubs.ROOT / "crds")


@pytest.fixture()
def api(kubeconfig) -> stubs.Api:
    return stubs.Api(kubeconfig)


_forget_pods = stubs.forget_pods_after_test


@pytest.fixture()
def other_namespaces(api_client, api):
    """More fresh namespaces (a tenant's, an attacker's), deleted afterwards with their Leases."""
    core = kubernetes.client.CoreV1Api(api_client)
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        core.create_namespace({"metadata": {"name": name, "labels": {"gigafactory.dev/test": "true"}}})
        made.append(name)
        return name

    yield make
    for name in made:
        stubs.forget_pods(api, name)
        core.delete_namespace(name)


def trusting(namespace: str, **env: str) -> dict[str, str]:
    """The operator of a platform whose runner pods live in `namespace` (as the chart sets it)."""
    return {"GIGAFACTORY_NAMESPACE": namespace, "GIGAFACTORY_RUNNER_NAMESPACES": namespace, "GIGAFACTORY_ALLOW_LOCAL_REPOS": "true", **env}


def metric(proc: stubs.OperatorProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{re.escape(name)}{{{re.escape(selector)}}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def events(api: stubs.Api, namespace: str, reason: str, name: str | None = None) -> list[dict]:
    return [e for e in api.call("list", kubeclient.EVENTS, namespace=namespace)[0]
            if e.get("reason") == reason and (name is None or (e.get("involvedObject") or {}).get("name") == name)]


def scheduled(api: stubs.Api, namespace: str, name: str) -> str | None:
    """The reason of the job's Scheduled condition: Unschedulable (explained) or Bound."""
    for condition in (api.job(namespace, name).get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Scheduled":
            return condition.get("reason")
    return None


def gone(api: stubs.Api, namespace: str, name: str) -> bool:
    try:
        api.job(namespace, name)
        return False
    except kubeclient.NotFound:
        return True


@pytest.fixture()
def repo(tmp_path):
    """The victim's repository: main, and two branches people work on (develop, release-1.x)."""
    bare = git.Repo(make_remote(tmp_path))
    work = git.Repo.clone_from(bare.git_dir, tmp_path / "work")
    for branch in ("develop", "release-1.x"):
        commit_file(tmp_path / "work", f"{branch}-work")
        work.git.push("origin", f"HEAD:refs/heads/{branch}")
    return bare


def tips(bare: git.Repo) -> dict[str, str]:
    return {head.name: head.commit.hexsha for head in bare.heads}


# --- item 6: runners enrol only where the platform put them ---


def test_a_phantom_runner_outside_the_runner_namespaces_gets_no_job_and_is_reported_once(
        api, kubeconfig, namespace, other_namespaces, tmp_path) -> None:
    team, attacker = other_namespaces("team"), other_namespaces("attacker")
    factory = stubs.unique("dev")
    api.create_factory(factory, team)
    # The attacker may create Leases in a namespace of its own, and labels one as a runner of `dev`.
    phantom = stubs.StubRunner(api, pod=f"{factory}-phantom", namespace=attacker, factory=factory, slots=8)
    phantom.announce(duration_seconds=600)
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)) as (proc,):
        api.create_job(team, "victim")
        # Either the operator explains that no runner fits, or (before the fix) it bound the phantom.
        verdict = wait_for(lambda: scheduled(api, team, "victim"), timeout=30, message="the first scheduling decision")
        assert verdict == "Unschedulable", f"the victim's job was {verdict} to a phantom runner"
        assert api.bindings(attacker) == [] and api.bindings(namespace) == []
        assert stubs.phase(api, team, "victim") == "Pending"
        # Reported: a Warning Event on the Lease, where its author looks, and the counter.
        event = wait_for(lambda: events(api, attacker, "LeaseIgnored", phantom.pod), timeout=15, message="LeaseIgnored Event")[0]
        assert event["type"] == "Warning" and namespace in event["message"]
        # Once per Lease, not per renewal: three renewals, then a second phantom whose Event shows
        # that the renewals (watched before it, in order) have been seen.
        for _ in range(3):
            phantom.renew()
        second = stubs.StubRunner(api, pod=f"{factory}-phantom-2", namespace=attacker, factory=factory)
        second.announce()
        wait_for(lambda: events(api, attacker, "LeaseIgnored", second.pod), timeout=15, message="the second phantom's Event")
        assert len(events(api, attacker, "LeaseIgnored", phantom.pod)) == 1
        # (At least: on a shared server, other tests' runner Leases are strays for this operator too.)
        assert metric(proc, "gigafactory_leases_ignored_total", role="heartbeat") >= 2
        assert stubs.phase(api, team, "victim") == "Pending"


def test_a_binding_lease_forged_outside_the_runner_namespaces_cannot_end_an_attempt_or_announce_a_push(
        api, kubeconfig, namespace, other_namespaces, tmp_path) -> None:
    team, attacker = other_namespaces("team"), other_namespaces("attacker")
    runner = stubs.one_runner(api, namespace, "pool", namespaces=[team])
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)) as (proc,):
        api.create_job(team, "victim", cleanup={"deleteBranch": "Always"})
        lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
        runner.claim(lease, duration_seconds=600)
        job = api.job(team, "victim")
        # A copy of the victim's binding in the attacker's namespace: claimed, long expired, and
        # announcing a push of `develop` (which the operator would record, and delete with the job).
        forged = leases.build_binding_lease(
            job_namespace=team, job_name="victim", job_uid=job["metadata"]["uid"], attempt=1, factory=runner.factory,
            pod=runner.pod, pod_namespace=attacker, claim_timeout_seconds=1,
            moment=leases.now() - datetime.timedelta(minutes=5))
        forged["spec"]["acquireTime"] = forged["spec"]["renewTime"]
        forged["metadata"]["annotations"][leases.ANNOTATION_PUSHED] = f"{'a' * 40} develop"
        api.call("create", kubeclient.LEASES, forged, namespace=attacker)
        wait_for(lambda: events(api, attacker, "LeaseIgnored", forged["metadata"]["name"])
                 or api.job(team, "victim")["status"].get("attempts"), timeout=30, message="the forged Lease judged")
        after = api.job(team, "victim")["status"]
        assert not after.get("attempts"), f"a forged Lease ended the victim's attempt: {after['attempts']}"
        assert after["phase"] == "Running"
        assert events(api, attacker, "LeaseIgnored", forged["metadata"]["name"])
        assert metric(proc, "gigafactory_leases_ignored_total", role="binding") >= 1


# --- item 7: reports are believed only as far as they can be checked ---


def test_a_forged_report_naming_another_branch_fails_the_attempt_and_the_branch_survives_the_jobs_deletion(
        api, kubeconfig, namespace, other_namespaces, tmp_path, repo) -> None:
    team = other_namespaces("team")
    before = tips(repo)
    runner = stubs.one_runner(api, namespace, "pool", namespaces=[team])
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)) as (proc,):
        api.create_job(team, "victim", repo={"url": f"file://{repo.git_dir}"}, cleanup={"deleteBranch": "Always"})
        runner.claim(wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding"))
        # The runner's token (any agent on its pod) reports a result on someone else's branch.
        runner.report(team, "victim", outcome="Succeeded", message="pushed",
                      result={"branch": "release-1.x", "commit": before["release-1.x"], "summary": "done"})
        record = wait_for(lambda: (api.job(team, "victim")["status"].get("attempts") or [None])[0], timeout=15, message="fold")
        assert (record["outcome"], record["reason"]) == ("InfraError", "ReportRejected")
        assert "status.report.result.branch" in record["message"] and "agent/victim" in record["message"]
        assert (api.job(team, "victim")["status"].get("result") or {}).get("branch") != "release-1.x"
        assert metric(proc, "gigafactory_reports_rejected_total", field="status.report.result.branch") == 1
        api.call("delete", kubeclient.AGENTJOBS, "victim", namespace=team)
        wait_for(lambda: gone(api, team, "victim"), timeout=30, message="job gone")
    assert tips(repo) == before, "the operator deleted a branch the job never owned"
    assert not events(api, team, "BranchDeleted")


def test_an_announced_push_of_another_branch_is_not_recorded_nor_deleted_with_the_job(
        api, kubeconfig, namespace, other_namespaces, tmp_path, repo) -> None:
    team = other_namespaces("team")
    before = tips(repo)
    runner = stubs.one_runner(api, namespace, "pool", namespaces=[team])
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)):
        api.create_job(team, "victim", repo={"url": f"file://{repo.git_dir}"}, cleanup={"deleteBranch": "Always"})
        lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
        runner.claim(lease, duration_seconds=3)
        # Just before "its push" the runner announces develop at develop's tip (the policy lets a runner
        # add the annotation once), then goes silent: the Lease expires and the operator undoes the attempt.
        fresh = api.call("get", kubeclient.LEASES, lease["metadata"]["name"], namespace=namespace)
        api.call("patch", kubeclient.LEASES, lease["metadata"]["name"], leases.pushed_patch(
            branch="develop", commit=before["develop"], resource_version=fresh["metadata"]["resourceVersion"]), namespace=namespace)
        record = wait_for(lambda: (api.job(team, "victim")["status"].get("attempts") or [None])[0],
                          timeout=stubs.within(3), message="the expired binding undone")
        assert record["reason"] == "LeaseExpired" and "pushed" not in record
        assert "develop" in record["message"] and "ignored" in record["message"]
        api.call("delete", kubeclient.AGENTJOBS, "victim", namespace=team)
        wait_for(lambda: gone(api, team, "victim"), timeout=30, message="job gone")
    assert tips(repo) == before, "the operator deleted a branch the job never owned"
    assert not events(api, team, "BranchDeleted")


def test_the_jobs_own_branch_is_still_deleted_when_an_attempt_pushed_it(
        api, kubeconfig, namespace, other_namespaces, tmp_path, repo) -> None:
    """The control: the check lets the job's own work go as cleanup.deleteBranch says."""
    team = other_namespaces("team")
    work = git.Repo(tmp_path / "work")
    commit_file(tmp_path / "work", "agent-work")
    work.git.push("origin", "HEAD:refs/heads/agent/victim")
    pushed = work.head.commit.hexsha
    runner = stubs.one_runner(api, namespace, "pool", namespaces=[team])
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)):
        api.create_job(team, "victim", repo={"url": f"file://{repo.git_dir}"}, cleanup={"deleteBranch": "Always"})
        runner.claim(wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding"))
        runner.report(team, "victim", outcome="Succeeded", message="pushed",
                      result={"branch": "agent/victim", "commit": pushed, "summary": "done"})
        wait_for(lambda: stubs.phase(api, team, "victim") == "Succeeded", timeout=15, message="succeeded")
        api.call("delete", kubeclient.AGENTJOBS, "victim", namespace=team)
        wait_for(lambda: gone(api, team, "victim"), timeout=30, message="job gone")
    assert "agent/victim" not in tips(repo) and {"develop", "release-1.x", "main"} <= set(tips(repo))


# --- item 7: Factory templates get the pool's ServiceAccount and a restricted security context ---


def test_a_factory_template_cannot_pick_the_operators_service_account_nor_loosen_its_security_context(
        api, kubeconfig, namespace, tmp_path) -> None:
    name = stubs.unique("scaled")
    template = {"spec": {
        "serviceAccountName": "gigafactory-operator", "serviceAccount": "gigafactory-operator",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "runner", "image": "example.invalid/runner:1", "args": ["runner"],
                        "securityContext": {"allowPrivilegeEscalation": True, "runAsNonRoot": False}}]}}
    env = trusting(namespace, GIGAFACTORY_RUNNER_SERVICE_ACCOUNT="gf-{factory}-runner")
    with stubs.operators(kubeconfig, tmp_path, **env):
        api.create_factory(name, namespace, scaling={"minReplicas": 0, "maxReplicas": 2, "template": template})
        deployment = wait_for(lambda: next(iter(api.call("list", kubeclient.DEPLOYMENTS, namespace=namespace,
                                                          label_selector=f"gigafactory.dev/factory={name}")[0]), None),
                              timeout=30, message="the runner Deployment")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"gf-{name}-runner" and pod.get("serviceAccount") in (None, f"gf-{name}-runner")
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = pod["containers"][0]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("runAsNonRoot") is not False
        condition = wait_for(lambda: next((c for c in (api.call("get", kubeclient.FACTORIES, name).get("status") or {}).get("conditions") or ()
                                           if c["type"] == "TemplateAccepted"), None), timeout=15, message="TemplateAccepted")
        assert condition["status"] == "True"
        api.call("delete", kubeclient.FACTORIES, name)
        wait_for(lambda: not api.call("list", kubeclient.FACTORIES, field_selector=f"metadata.name={name}")[0], timeout=30, message="gone")


def test_a_factory_template_asking_for_the_host_is_refused_naming_each_field(api, kubeconfig, namespace, tmp_path) -> None:
    name = stubs.unique("host")
    template = {"spec": {
        "hostNetwork": True, "hostPID": True,
        "containers": [{"name": "runner", "image": "example.invalid/runner:1",
                        "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                        "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)):
        api.create_factory(name, namespace, scaling={"minReplicas": 1, "maxReplicas": 2, "template": template})
        condition = wait_for(lambda: next((c for c in (api.call("get", kubeclient.FACTORIES, name).get("status") or {}).get("conditions") or ()
                                           if c["type"] == "TemplateAccepted"), None), timeout=30, message="TemplateAccepted")
        assert (condition["status"], condition["reason"]) == ("False", "TemplateRefused")
        for field in ("spec.scaling.template.spec.hostNetwork", "spec.scaling.template.spec.hostPID",
                      "spec.scaling.template.spec.containers[0].securityContext.privileged",
                      "spec.scaling.template.spec.containers[0].securityContext.capabilities.add",
                      "spec.scaling.template.spec.volumes[0].hostPath"):
            assert field in condition["message"], field
        refused = wait_for(lambda: [e for e in events(api, "default", "TemplateRefused")
                                    if (e.get("involvedObject") or {}).get("name") == name], timeout=15, message="TemplateRefused Event")
        assert len(refused) == 1 and refused[0]["type"] == "Warning"
        # minReplicas 1 and still nothing runs it.
        assert api.call("list", kubeclient.DEPLOYMENTS, namespace=namespace, label_selector=f"gigafactory.dev/factory={name}")[0] == []
        api.call("delete", kubeclient.FACTORIES, name)
        wait_for(lambda: not api.call("list", kubeclient.FACTORIES, field_selector=f"metadata.name={name}")[0], timeout=30, message="gone")


def test_a_runner_deployment_made_before_the_fix_gets_the_forced_template(api, kubeconfig, namespace, tmp_path) -> None:
    """An operator upgrade: the Deployment an older operator made verbatim (the operator's
    ServiceAccount, privilege escalation) is replaced by the forced template."""
    name = stubs.unique("old")
    factory = api.create_factory(name, namespace, scaling={"minReplicas": 0, "maxReplicas": 2, "template": {}})
    old = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": f"{name}-runners", "namespace": namespace,
                        "labels": {constants.LABEL_FACTORY: name, constants.LABEL_ROLE: "runners"},
                        "ownerReferences": [{"apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "name": name,
                                             "uid": factory["metadata"]["uid"], "controller": True}]},
           "spec": {"replicas": 0, "selector": {"matchLabels": {constants.LABEL_FACTORY: name}},
                    "template": {"metadata": {"labels": {constants.LABEL_FACTORY: name}},
                                 "spec": {"serviceAccountName": "gigafactory-operator",
                                          "containers": [{"name": "runner", "image": "example.invalid/runner:1",
                                                          "securityContext": {"allowPrivilegeEscalation": True}}]}}}}
    api.call("create", kubeclient.DEPLOYMENTS, old, namespace=namespace)
    with stubs.operators(kubeconfig, tmp_path, **trusting(namespace)):
        def forced():
            body = api.call("get", kubeclient.DEPLOYMENTS, f"{name}-runners", namespace=namespace)
            return body if body["spec"]["template"]["spec"].get("serviceAccountName") == f"{name}-runner" else None

        pod = wait_for(forced, timeout=30, message="the Deployment's template replaced")["spec"]["template"]["spec"]
        assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        api.call("delete", kubeclient.FACTORIES, name)
        wait_for(lambda: not api.call("list", kubeclient.FACTORIES, field_selector=f"metadata.name={name}")[0], timeout=30, message="gone")
