"""The chart's dashboard on a real API server (kube-apiserver, real RBAC): `helm install` with
`dashboard.enabled`, then the dashboard runs with its own ServiceAccount's real token. It syncs and
serves every page (jobs and Factories cluster-wide, heartbeat Leases and log ConfigMaps in the release
namespace are all it reads), and that token can write nothing and read no Secret anywhere.
Only against a real server (marker `real_only`): the embedded one has no RBAC."""
from __future__ import annotations

import pathlib
import uuid
from typing import Any

import aiohttp
import kubernetes
import pytest

from gigafactory import constants, kubeclient
from gigafactory.dashboard import serving
from tests.chart.test_install import CHART, HELM, _helm, _kubeconfig_for_token, _token, outcome

pytestmark = [
    pytest.mark.real_only,
    pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)"),
]
GROUP, VERSION = "gigafactory.dev", "v1alpha1"


async def test_the_dashboard_reads_what_it_shows_with_its_own_token_and_nothing_more(
        kubeconfig: str, api_client: kubernetes.client.ApiClient, tmp_path: pathlib.Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    name, namespace, team = f"gd{suffix}", f"gd-{suffix}", f"team-{suffix}"
    home = tmp_path / "helm-home"
    home.mkdir()
    core = kubernetes.client.CoreV1Api(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    core.create_namespace({"metadata": {"name": team, "labels": {"gigafactory.dev/test": "true"}}})
    _helm(kubeconfig, home, "install", name, str(CHART), "-n", namespace, "--create-namespace", "--set", "dashboard.enabled=true",
          "--set", "operator.replicas=1")
    try:
        token = _token(core, namespace, f"{name}-dashboard")
        board_config = _kubeconfig_for_token(kubeconfig, token, tmp_path / "dashboard.kubeconfig")
        board = kubernetes.config.new_client_from_config(config_file=board_config)

        # What an admin and a runner put there: a job in a team namespace with a log in the release namespace.
        job = custom.create_namespaced_custom_object(GROUP, VERSION, team, "agentjobs", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": "shown"},
            "spec": {"repo": {"url": "https://git.example.com/a.git"}, "task": {"prompt": "Do it."}, "agent": {"profile": "script"},
                     "suspend": True}})
        log = f"{constants.LOG_PREFIX}pod-1-{job['metadata']['uid'][:8]}-1"
        core.create_namespaced_config_map(namespace, {"metadata": {"name": log, "labels": {
            constants.LABEL_ROLE: "log", constants.LABEL_POD: "pod-1", constants.LABEL_JOB_UID: job["metadata"]["uid"]}},
            "data": {"output": "the agent's last words\n"}})
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, team, "agentjobs", "shown", {"status": {
            "phase": "Failed", "attempt": 1, "attempts": [{"attempt": 1, "pod": "pod-1", "outcome": "AgentFailed",
                                                           "logRef": f"configmap/{namespace}/{log}"}]}})

        settings = serving.Settings(port=0, runner_namespace=namespace)
        async with kubeclient.Client.from_kubeconfig(board_config) as client, serving.serving(client, settings) as dashboard:
            async with aiohttp.ClientSession() as session:
                pages: dict[str, str] = {}
                for path in ("", "queues", f"jobs?namespace={team}", f"jobs/{team}/shown"):
                    async with session.get(dashboard.url + path) as response:
                        assert response.status == 200, path
                        pages[path] = await response.text()
        assert "shown" in pages[f"jobs?namespace={team}"]
        assert "the agent&#x27;s last words" in pages[f"jobs/{team}/shown"]

        # The token's rights: read-only, no Secrets, Leases and ConfigMaps in the release namespace only.
        board_core = kubernetes.client.CoreV1Api(board)
        board_custom = kubernetes.client.CustomObjectsApi(board)
        board_leases = kubernetes.client.CoordinationV1Api(board)
        denied: dict[str, Any] = {
            "list secrets": lambda: board_core.list_namespaced_secret(namespace),
            "get a secret": lambda: board_core.read_namespaced_secret("anything", team),
            "list secrets everywhere": lambda: board_core.list_secret_for_all_namespaces(),
            "patch a job": lambda: board_custom.patch_namespaced_custom_object(
                GROUP, VERSION, team, "agentjobs", "shown", {"spec": {"suspend": False}}),
            "create a job": lambda: board_custom.create_namespaced_custom_object(GROUP, VERSION, team, "agentjobs", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": "x"}, "spec": {}}),
            "delete a Factory": lambda: board_custom.delete_cluster_custom_object(GROUP, VERSION, "factories", "default"),
            "write a job's status": lambda: board_custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, team, "agentjobs", "shown", {"status": {"phase": "Succeeded"}}),
            "list Leases of another namespace": lambda: board_leases.list_namespaced_lease(team),
            "get a ConfigMap of another namespace": lambda: board_core.read_namespaced_config_map("x", team),
            "create a ConfigMap": lambda: board_core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}),
            "list pods": lambda: board_core.list_namespaced_pod(namespace),
        }
        assert {what: outcome(call) for what, call in denied.items()} == dict.fromkeys(denied, "rbac")
        board.close()
    finally:
        _helm(kubeconfig, home, "uninstall", name, "-n", namespace)
        for ns in (team, namespace):
            try:
                core.delete_namespace(ns)
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
