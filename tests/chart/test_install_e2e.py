"""The chart installed on a real API server, then the real operator and a real runner, each with the token of
its own ServiceAccount (the runner's bound to its pod, as a runner pod's projected token is), run a job end to
end: every request the protocol makes (heartbeat, claim, renewals, push announcement, log ConfigMap, report,
release, folding, leader election, Factory status, finalizers) passes the chart's RBAC and admission policies.
test_install.py checks each right in isolation; this checks that nothing the processes need is missing.
Only against a real server (marker `real_only`)."""
from __future__ import annotations

import json

import os
import pathlib
import re
import signal
import subprocess
import sys
from typing import Any, Iterator

import git
import kubernetes
import pytest

from gigafactory.binding import scaler
from tests import gitrepos
from tests.chart import test_install
from tests.integration.operator import stubs

ROOT = pathlib.Path(__file__).resolve().parents[2]
GROUP, VERSION = "gigafactory.dev", "v1alpha1"
# A refusal as the operator and runner log one (a bare "403" would also match a port such as 40397).
DENIALS = re.compile(r"\b403\b|Forbidden|forbidden|ValidatingAdmissionPolicy|denied")

pytestmark = [
    pytest.mark.real_only,
    pytest.mark.skipif(not test_install.HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)"),
]


@pytest.fixture()
def release(kubeconfig: str, api_client: kubernetes.client.ApiClient, tmp_path: pathlib.Path) -> Iterator[test_install.Release]:
    directory = tmp_path / "release"
    directory.mkdir()
    with test_install.installed(kubeconfig, api_client, directory) as rel:
        yield rel


def _start_runner(rel: test_install.Release, tmp_path: pathlib.Path, *, pod: str | None = None, factory: str | None = None,
                  kubeconfig: str | None = None) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
    """`gigafactory runner` as the chart's pod template sets it up: by default as pod alpha_pod of factory alpha."""
    pod, factory = pod or rel.alpha_pod, factory or rel.alpha
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text('profiles:\n  script:\n    argv: ["{python}", "-m", "gigafactory.runner.script_agent", "{args}", '
                        '"--prompt-file", "{prompt_file}"]\n    timeoutSeconds: 30\n    allow: {args: [{flag: --hang}]}\n')
    env = {
        **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
        "GIGAFACTORY_RUNNER_POD_NAME": pod, "GIGAFACTORY_RUNNER_NAMESPACE": rel.namespace,
        "GIGAFACTORY_RUNNER_FACTORY": factory, "GIGAFACTORY_RUNNER_SLOTS": "2",
        "GIGAFACTORY_RUNNER_WORK_DIR": str(tmp_path / f"work-{pod}"), "GIGAFACTORY_RUNNER_PROFILES_FILE": str(profiles),
        "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": "5",
        # The test's remote is a local bare repository (never in a cluster: docs/security.md).
        "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
    }
    log = tmp_path / f"runner-{pod}.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "gigafactory.cli.main", "runner", "--kubeconfig",
                                    kubeconfig or rel.kubeconfigs["alpha-runner"]],
                                   env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    return process, log


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _gone(call: Any) -> bool:
    try:
        call()
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def test_a_job_runs_end_to_end_with_the_charts_identities(release, tmp_path) -> None:
    rel = release
    custom = rel.admin.custom
    remote = gitrepos.make_remote(tmp_path)
    operator_log = tmp_path / "operator.log"
    # Local remotes allowed for the branch clean-up (tests only, as the runner's ALLOW_LOCAL_REPOS).
    with stubs.operators(rel.kubeconfigs["operator"], tmp_path, GIGAFACTORY_NAMESPACE=rel.namespace,
                         GIGAFACTORY_LEADER_ELECTION="true", GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="30",
                         GIGAFACTORY_ALLOW_LOCAL_REPOS="true") as (operator,):
        operator_log = operator.log
        runner, runner_log = _start_runner(rel, tmp_path)
        try:
            def factory_phase() -> str | None:
                return (custom.get_cluster_custom_object(GROUP, VERSION, "factories", rel.alpha).get("status") or {}).get("phase")

            test_install._wait(lambda: factory_phase() == "Ready", timeout=60,
                               message=f"factory {rel.alpha} Ready (the runner's heartbeat, seen by the operator)")
            # Credentials (read by name by the runner, and by the operator to delete the branch when the job goes).
            rel.admin.core.create_namespaced_secret(rel.team_a, {"metadata": {"name": "git-creds", "labels": {"gigafactory.dev/credentials": "true"}},
                                                                 "stringData": {"token": "t0ken"}})
            custom.create_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": "fix"},
                "spec": {"queue": "backend", "repo": {"url": str(remote), "credentialsSecret": "git-creds"},
                         "task": {"prompt": "Fix the flaky test"}, "agent": {"profile": "script"}, "retry": {"maxAttempts": 1},
                         "cleanup": {"deleteBranch": "Always"}}})

            def finished() -> dict | None:
                status = custom.get_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", "fix").get("status") or {}
                return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

            status = test_install._wait(finished, timeout=90, message="the job to finish")
            assert status["phase"] == "Succeeded", status
            assert status["attempts"][-1]["pod"] == rel.alpha_pod and status["attempts"][-1]["factory"] == rel.alpha
            assert git.Repo(remote).heads["agent/fix"].commit.hexsha == status["result"]["commit"]
            # The runner kept its agent's output in a log ConfigMap of its own (the -logs policy's one allowance).
            def logs() -> list[Any]:
                return rel.admin.core.list_namespaced_config_map(rel.namespace, label_selector="gigafactory.dev/role=log").items

            assert [cm.metadata.labels["gigafactory.dev/pod"] for cm in logs()] == [rel.alpha_pod]


            # A cancel: the operator's stop request on the binding Lease, the runner stops its agent, reports and
            # releases the Lease (the policies let it release after a stop, never erase the request).
            custom.create_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": "hang"},
                "spec": {"queue": "backend", "repo": {"url": str(remote)}, "task": {"prompt": "Wait"},
                         "agent": {"profile": "script", "args": ["--hang"]}, "retry": {"maxAttempts": 1}}})

            def phase(name: str) -> str | None:
                return (custom.get_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", name).get("status") or {}).get("phase")

            test_install._wait(lambda: phase("hang") == "Running", timeout=60, message="the hanging job to be claimed")
            custom.patch_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", "hang", {"spec": {"cancel": True}},
                                                  _content_type=test_install.MERGE)
            test_install._wait(lambda: phase("hang") == "Cancelled", timeout=60, message="the cancelled job to stop")
            test_install._wait(lambda: not rel.admin.leases.list_namespaced_lease(
                rel.namespace, label_selector="gigafactory.dev/role=binding").items, timeout=30, message="every binding Lease released")

            # Deleting the jobs and the Factories goes through the operator's finalizers while it runs.
            for name in ("fix", "hang"):
                custom.delete_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", name)
            for name in ("fix", "hang"):
                test_install._wait(lambda: _gone(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", name)),
                                   timeout=60, message=f"the deleted job {name} to go (its finalizer)")
            # ... and the operator deleted their log ConfigMaps (its Role in the release namespace) and the pushed
            # branch (with the job's credentials: the operator-credentials binding in the pool's namespace).
            test_install._wait(lambda: not logs(), timeout=30, message="the deleted jobs' log ConfigMaps to go")
            assert "agent/fix" not in [head.name for head in git.Repo(remote).heads]
            _stop(runner)
            assert runner.returncode == 0, runner_log.read_text()[-4000:]
            for factory in (rel.alpha, rel.beta):
                custom.delete_cluster_custom_object(GROUP, VERSION, "factories", factory)
            for factory in (rel.alpha, rel.beta):
                test_install._wait(lambda: _gone(lambda: custom.get_cluster_custom_object(GROUP, VERSION, "factories", factory)),
                                   timeout=60, message=f"factory {factory} to drain and go")
        except BaseException:
            sys.stderr.write(f"--- {runner_log.name} ---\n{runner_log.read_text(errors='replace')[-6000:]}\n")
            raise
        finally:
            _stop(runner)
    # Nothing either process asked for was refused along the way.
    for name, log in (("runner", runner_log), ("operator", operator_log)):
        refused = _refused(log.read_text(errors="replace"), rel)
        assert not refused, f"{name}:\n" + "\n".join(refused[:20])


def _refused(log: str, rel: test_install.Release) -> list[str]:
    """The refusals in a log that concern this release. The operator watches every namespace, and the
    session's server may still hold an earlier test's jobs (a chaos run's, a terminating namespace's):
    what the operator tried for those, with this release's narrower rights, says nothing about them."""
    ours = {rel.namespace, rel.team_a, rel.team_b}
    refused = []
    for line in log.splitlines():
        if not DENIALS.search(line):
            continue
        try:
            job = str(json.loads(line).get("job") or "")
        except ValueError:
            job = ""
        if job and job.split("/", 1)[0] not in ours:
            continue
        refused.append(line)
    return refused


@pytest.fixture()
def scaled_release(kubeconfig: str, api_client: kubernetes.client.ApiClient, tmp_path: pathlib.Path) -> Iterator[test_install.Release]:
    directory = tmp_path / "release"
    directory.mkdir()
    gamma = {"name": "gamma-{suffix}", "agents": ["script"], "slotsPerPod": 2,
             "scaling": {"minReplicas": 0, "maxReplicas": 1, "scaleDownDelaySeconds": 1}}
    with test_install.installed(kubeconfig, api_client, directory, extra_pools=(gamma,)) as rel:
        yield rel


def test_an_on_demand_pool_scales_up_and_down_with_the_operators_rights(scaled_release, tmp_path) -> None:
    """A pool with `scaling`: the operator creates its runner Deployment from the Factory's template and sets
    its replicas (its Role: deployments in the release namespace), a runner in the pod the controller manager
    made runs the job with that pod's token, then the operator marks the idle pod for removal (patch pods)
    and scales back to zero. Nothing refused."""
    rel = scaled_release
    custom, apps = rel.admin.custom, kubernetes.client.AppsV1Api(rel.admin.client)
    gamma = f"gamma-{rel.suffix}"
    deployment = scaler.deployment_name(gamma)
    remote = gitrepos.make_remote(tmp_path)
    runner = None
    # The settings the chart gives the operator: runner pods in the release namespace, the pools' ServiceAccounts.
    with stubs.operators(rel.kubeconfigs["operator"], tmp_path, GIGAFACTORY_NAMESPACE=rel.namespace,
                         GIGAFACTORY_RUNNER_NAMESPACES=rel.namespace, GIGAFACTORY_RUNNER_SERVICE_ACCOUNT=f"{rel.name}-{{factory}}-runner",
                         GIGAFACTORY_LEADER_ELECTION="true", GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="30") as (operator,):
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": "burst"},
                "spec": {"queue": "backend", "repo": {"url": str(remote)}, "task": {"prompt": "Scale up"},
                         "agent": {"profile": "script"}, "targetFactory": gamma, "retry": {"maxAttempts": 1}}})

            def replicas() -> int | None:
                try:
                    return apps.read_namespaced_deployment(deployment, rel.namespace).spec.replicas
                except kubernetes.client.ApiException as e:
                    if e.status == 404:
                        return None
                    raise

            test_install._wait(lambda: replicas() == 1, timeout=60, message=f"the operator to scale {deployment} to 1")
            pod = test_install._runner_pod(rel.admin.core, rel.namespace, gamma)
            token = test_install._token(rel.admin.core, rel.namespace, f"{rel.name}-gamma-{rel.suffix}-runner", pod)
            kubeconfig = test_install._kubeconfig_for_token(rel.kubeconfigs["operator"], token, tmp_path / "gamma.kubeconfig")
            runner, runner_log = _start_runner(rel, tmp_path, pod=pod.metadata.name, factory=gamma, kubeconfig=kubeconfig)

            def phase() -> str | None:
                return (custom.get_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", "burst").get("status") or {}).get("phase")

            test_install._wait(lambda: phase() in ("Succeeded", "Failed", "Cancelled"), timeout=90, message="the job to finish")
            assert phase() == "Succeeded", runner_log.read_text()[-4000:]
            test_install._wait(lambda: replicas() == 0, timeout=60, message=f"the operator to scale {deployment} back to 0")
            _stop(runner)
            custom.delete_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", "burst")
            for factory in (rel.alpha, rel.beta, gamma):
                custom.delete_cluster_custom_object(GROUP, VERSION, "factories", factory)
            for factory in (rel.alpha, rel.beta, gamma):
                test_install._wait(lambda: _gone(lambda: custom.get_cluster_custom_object(GROUP, VERSION, "factories", factory)),
                                   timeout=60, message=f"factory {factory} to drain and go")
        finally:
            if runner is not None:
                _stop(runner)
    refused = _refused(operator.logs(), rel)
    assert not refused, "operator:\n" + "\n".join(refused[:20])
