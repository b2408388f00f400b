"""On kube-apiserver, the operator and a runner keep working while their ServiceAccount tokens are
rotated in their token files and the old tokens revoked, as happens to a pod's projected token (the
kubelet rewrites it) and to a token whose bound object or ServiceAccount goes (issue 14, item 3).

Both run as the chart sets them up (test_install_e2e), each with a kubeconfig whose `tokenFile` holds
a token from the TokenRequest API. Revocation is real, not simulated:
- the operator's token is bound to a Secret: a new token (bound to a new Secret) is written to its
  file, then the old Secret deleted, and kube-apiserver refuses the old token;
- the runner's token is bound to its pod (admission checks the pod name it carries), so it can only
  be revoked with its ServiceAccount: the ServiceAccount is deleted and re-created (RBAC and the
  policies name it, so the new one has the same rights), every old token is refused, and only then a
  token of the new ServiceAccount for the same pod goes into the file. Meanwhile the runner's
  requests fail, as they would in a cluster; afterwards it must carry on by itself.
Once kube-apiserver refuses both old tokens, a second job must run end to end: bound by the operator,
claimed, run and reported by the runner, folded to Succeeded. Only against a real server."""
from __future__ import annotations

import base64
import os
import pathlib
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from tests import gitrepos
from tests.chart import test_install
from tests.chart.test_install_e2e import _refused, _start_runner, _stop
from tests.integration.operator import stubs

GROUP, VERSION = "gigafactory.dev", "v1alpha1"

pytestmark = [
    pytest.mark.real_only,
    pytest.mark.skipif(not test_install.HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)"),
    pytest.mark.timeout(400),
]


@pytest.fixture()
def release(kubeconfig: str, api_client: kubernetes.client.ApiClient, tmp_path: pathlib.Path) -> Iterator[test_install.Release]:
    directory = tmp_path / "release"
    directory.mkdir()
    with test_install.installed(kubeconfig, api_client, directory) as rel:
        yield rel


def _kubeconfig_with_token_file(admin: str, token_file: pathlib.Path, path: pathlib.Path) -> str:
    config = yaml.safe_load(pathlib.Path(admin).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    config["users"] = [{"name": context["user"], "user": {"tokenFile": str(token_file)}}]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(path)


def _write(path: pathlib.Path, token: str) -> None:
    """As the kubelet updates a projected token: a new file renamed over the old one."""
    temporary = path.with_suffix(".new")
    temporary.write_text(token)
    temporary.replace(path)


def _token(core: kubernetes.client.CoreV1Api, namespace: str, account: str, bound: Any) -> str:
    kind = "Pod" if isinstance(bound, kubernetes.client.V1Pod) else "Secret"
    spec = {"expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": bound.metadata.name, "uid": bound.metadata.uid}}
    return core.create_namespaced_service_account_token(account, namespace, {"spec": spec}).status.token


def _refused_by_server(admin_kubeconfig: str, token: str) -> bool:
    """Whether kube-apiserver now answers 401 to `token` (it caches a token's review for about 10 s)."""
    config = yaml.safe_load(pathlib.Path(admin_kubeconfig).read_text())
    cluster = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    request = urllib.request.Request(cluster["server"] + "/api", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401


def test_operator_and_runner_keep_working_while_their_tokens_rotate_and_the_old_ones_are_revoked(release, tmp_path) -> None:
    rel = release
    core, custom = rel.admin.core, rel.admin.custom
    remote = gitrepos.make_remote(tmp_path)
    operator_account, runner_account = f"{rel.name}-operator", rel.sa(rel.alpha)

    def secret(name: str) -> Any:
        return core.create_namespaced_secret(rel.namespace, {"metadata": {"name": name}, "type": "Opaque"})

    # The operator's token, bound to a Secret of its own; the runner's, bound to its pod.
    operator_file, runner_file = tmp_path / "operator.token", tmp_path / "runner.token"
    old_operator = _token(core, rel.namespace, operator_account, secret("operator-token-1"))
    pod = test_install._runner_pod(core, rel.namespace, rel.alpha)
    old_runner = _token(core, rel.namespace, runner_account, pod)
    _write(operator_file, old_operator)
    _write(runner_file, old_runner)
    operator_config = _kubeconfig_with_token_file(rel.kubeconfigs["operator"], operator_file, tmp_path / "operator.kubeconfig")
    runner_config = _kubeconfig_with_token_file(rel.kubeconfigs["operator"], runner_file, tmp_path / "runner.kubeconfig")

    def job(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": name},
            "spec": {"queue": "backend", "repo": {"url": str(remote)}, "task": {"prompt": f"Do {name}"},
                     "agent": {"profile": "script"}, "retry": {"maxAttempts": 1}, "targetFactory": rel.alpha}})

    def finished(name: str) -> dict | None:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    with stubs.operators(operator_config, tmp_path, GIGAFACTORY_NAMESPACE=rel.namespace, GIGAFACTORY_LEADER_ELECTION="true",
                         GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="30", GIGAFACTORY_ALLOW_LOCAL_REPOS="true") as (operator,):
        runner, runner_log = _start_runner(rel, tmp_path, kubeconfig=runner_config)
        try:
            test_install._wait(lambda: (custom.get_cluster_custom_object(GROUP, VERSION, "factories", rel.alpha).get("status") or {})
                               .get("phase") == "Ready", timeout=60, message=f"factory {rel.alpha} Ready")
            job("before")
            assert test_install._wait(lambda: finished("before"), timeout=90, message="the first job")["phase"] == "Succeeded"

            # The operator: the new token in its file first (as the kubelet rotates), then the old one revoked.
            _write(operator_file, _token(core, rel.namespace, operator_account, secret("operator-token-2")))
            core.delete_namespaced_secret("operator-token-1", rel.namespace)
            # The runner: its ServiceAccount deleted and re-created (every old token dies with it), and only
            # then a token of the new one in its file: for a moment the runner has no valid token at all.
            account = core.read_namespaced_service_account(runner_account, rel.namespace)
            core.delete_namespaced_service_account(runner_account, rel.namespace)
            test_install._wait(lambda: _refused_by_server(rel.kubeconfigs["operator"], old_runner), timeout=60,
                               message="kube-apiserver to refuse the runner's old token")
            core.create_namespaced_service_account(rel.namespace, {"metadata": {
                "name": runner_account, "labels": account.metadata.labels, "annotations": account.metadata.annotations}})
            revoked_at = time.time()
            _write(runner_file, _token(core, rel.namespace, runner_account, pod))
            test_install._wait(lambda: _refused_by_server(rel.kubeconfigs["operator"], old_operator), timeout=60,
                               message="kube-apiserver to refuse the operator's old token")

            # Both carry on: the runner's heartbeat is renewed again, and a new job runs end to end.
            def renewed() -> bool:
                lease = rel.admin.leases.read_namespaced_lease(rel.alpha_pod, rel.namespace)
                return lease.spec.renew_time is not None and lease.spec.renew_time.timestamp() > revoked_at
            test_install._wait(renewed, timeout=60, message="the runner's heartbeat renewed with its new token")
            job("after")
            status = test_install._wait(lambda: finished("after"), timeout=90, message="the job after the rotation")
            assert status["phase"] == "Succeeded", status
            assert status["attempts"][-1]["pod"] == rel.alpha_pod
        except BaseException:
            sys.stderr.write(f"--- {runner_log.name} ---\n{runner_log.read_text(errors='replace')[-6000:]}\n")
            raise
        finally:
            _stop(runner)
        operator_log = operator.log.read_text(errors="replace")
    runner_text = runner_log.read_text(errors="replace")
    assert runner.returncode == 0, runner_text[-4000:]
    # Each read its new token when the server refused the old one, and said so.
    assert "API credentials renewed" in operator_log and "API credentials renewed" in runner_text
    # Nothing was refused but for want of credentials (no 403: the renewed identities keep their rights).
    for name, log in (("operator", operator_log), ("runner", runner_text)):
        refused = _refused(log, rel)
        assert not refused, f"{name}:\n" + "\n".join(refused[:20])
