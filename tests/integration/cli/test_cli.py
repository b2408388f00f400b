"""The `gigafactory` user commands against an API server, as a person at a terminal sees them."""

import json
import pathlib
import uuid

import kubernetes
import pytest
from typer.testing import CliRunner

from gigafactory.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[3]
GROUP, VERSION = "gigafactory.dev", "v1alpha1"


@pytest.fixture(autouse=True)
def _crds(install_crds) -> None:
    install_crds(ROOT / "crds")


def _patch_status(api_client, namespace: str, name: str, status: dict) -> None:
    kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "agentjobs", name, {"status": status}
    )


def test_submit_list_get_describe(gf, namespace) -> None:
    assert "submitted" in gf("submit", str(ROOT / "examples" / "job.yaml"), "-n", namespace)
    listing = gf("list", "-n", namespace)
    assert "fix-flaky-test" in listing and "backend" in listing
    stored = json.loads(gf("get", "fix-flaky-test", "-n", namespace, "-o", "json"))
    assert stored["spec"]["retry"]["maxAttempts"] == 3  # defaulted by the server
    described = gf("describe", "fix-flaky-test", "-n", namespace)
    assert "Pending" in described and "https://git.example.com/acme/api.git @ main" in described


def test_submit_from_flags(gf, namespace) -> None:
    gf("submit", "--name", "quick", "--repo", "https://git.example.com/a.git", "--prompt", "do it", "-n", namespace)
    assert "quick" in gf("list", "-n", namespace)


def test_explain_a_waiting_job_shows_the_counts(gf, api_client, namespace) -> None:
    gf("submit", str(ROOT / "examples" / "job.yaml"), "-n", namespace)
    assert "has not considered it yet" in gf("explain", "fix-flaky-test", "-n", namespace)
    message = "0/7 factory pods fit: 3 lack capability gpu, 4 full"
    _patch_status(api_client, namespace, "fix-flaky-test", {"phase": "Pending", "conditions": [
        {"type": "Scheduled", "status": "False", "reason": "Unschedulable", "message": message,
         "lastTransitionTime": "2026-11-24T10:00:00Z"}]})
    out = gf("explain", "fix-flaky-test", "-n", namespace)
    assert "Unschedulable" in out and message in out


def test_explain_a_job_waiting_on_a_scaling_factory_says_so(gf, api_client, namespace) -> None:
    gf("submit", str(ROOT / "examples" / "job.yaml"), "-n", namespace)
    message = "waiting for capacity: factory pool is scaling up (0/3 runners ready)"
    _patch_status(api_client, namespace, "fix-flaky-test", {"phase": "Pending", "conditions": [
        {"type": "Scheduled", "status": "False", "reason": "WaitingForCapacity", "message": message,
         "lastTransitionTime": "2026-11-24T10:00:00Z"}]})
    out = gf("explain", "fix-flaky-test", "-n", namespace)
    assert f"is Pending: WaitingForCapacity: {message}" in " ".join(out.split())


def test_explain_a_bound_job_shows_the_score_breakdown(gf, api_client, namespace) -> None:
    gf("submit", str(ROOT / "examples" / "job.yaml"), "-n", namespace)
    _patch_status(api_client, namespace, "fix-flaky-test", {"phase": "Bound", "attempt": 1, "assignment": {
        "factory": "pool-a", "pod": "pool-a-0", "attempt": 1, "lease": "gf-x-1", "boundAt": "2026-11-24T10:00:00Z",
        "score": 87, "scores": {"FreeCapacity": 100, "WarmRepo": 60}}})
    out = gf("explain", "fix-flaky-test", "-n", namespace)
    assert "pool-a/pool-a-0" in out and "87/100" in out
    assert out.index("FreeCapacity") < out.index("WarmRepo")  # best-scoring plugin first


def test_cancel_sets_the_request(gf, api_client, namespace) -> None:
    gf("submit", str(ROOT / "examples" / "job.yaml"), "-n", namespace)
    gf("cancel", "fix-flaky-test", "-n", namespace)
    job = kubernetes.client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "agentjobs", "fix-flaky-test")
    assert job["spec"]["cancel"] is True


def test_factories_fleet_view(gf, api_client) -> None:
    name = f"pool-{uuid.uuid4().hex[:6]}"
    api = kubernetes.client.CustomObjectsApi(api_client)
    api.create_cluster_custom_object(GROUP, VERSION, "factories", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Factory", "metadata": {"name": name}, "spec": {"agents": ["script"]}})
    api.patch_cluster_custom_object_status(GROUP, VERSION, "factories", name, {"status": {"phase": "Ready", "pods": [
        {"name": f"{name}-0", "ready": True, "slots": 2, "running": 1, "lastHeartbeat": "2026-11-24T10:00:00Z"}]}})
    try:
        out = gf("factories")
        row = next(line for line in out.splitlines() if f"{name}-0" in line)
        assert "Ready" in row and "yes" in row and " 2 " in row
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "factories", name)


def test_factories_show_a_pod_whose_agents_run_unsandboxed(gf, api_client, namespace) -> None:
    """A pool that opted out of the agent sandbox says so on its heartbeat, and the fleet view shows it."""
    from gigafactory import leases

    name = f"pool-{uuid.uuid4().hex[:6]}"
    api = kubernetes.client.CustomObjectsApi(api_client)
    api.create_cluster_custom_object(GROUP, VERSION, "factories", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Factory", "metadata": {"name": name}, "spec": {"agents": ["script"]}})
    api.patch_cluster_custom_object_status(GROUP, VERSION, "factories", name, {"status": {"phase": "Ready", "pods": [
        {"name": f"{name}-0", "namespace": namespace, "ready": True, "slots": 2, "running": 0},
        {"name": f"{name}-1", "namespace": namespace, "ready": True, "slots": 2, "running": 0}]}})
    for pod, mode in ((f"{name}-0", "none"), (f"{name}-1", "namespaces")):
        kubernetes.client.CoordinationV1Api(api_client).create_namespaced_lease(namespace, leases.build_heartbeat_lease(
            pod=pod, namespace=namespace, factory=name, slots=2, agents=["script"], duration_seconds=15,
            moment=leases.now(), sandbox=mode))
    try:
        out = gf("factories")
        rows = {line.split()[2]: line.split()[6] for line in out.splitlines() if name in line}
        assert rows == {f"{name}-0": "none", f"{name}-1": "namespaces"}, out
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "factories", name)


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(("get", "nope"), 'agentjobs.gigafactory.dev "nope" not found', id="missing-job"),
        pytest.param(("cancel", "nope"), "not found", id="cancel-missing"),
        pytest.param(("submit",), "give a manifest file", id="nothing-to-submit"),
        pytest.param(("get", "x", "-o", "xml"), "not found", id="missing-before-format"),
    ],
)
def test_errors_are_one_clear_line(gf, namespace, args, fragment) -> None:
    out = gf(*args, "-n", namespace, code=1)
    assert fragment in out
    assert out.strip().startswith("error:") and len(out.strip().splitlines()) == 1


def test_invalid_manifest_names_the_field(gf, namespace, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "tests" / "data" / "bad" / "priority-too-high.yaml").read_text())
    out = gf("submit", str(bad), "-n", namespace, code=1)
    assert "spec.priority" in out


def test_missing_kubeconfig_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(main.app, ["list", "--kubeconfig", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    assert "no kubeconfig at" in result.output and "Traceback" not in result.output


def test_explain_tells_the_position_in_the_queue(gf, api_client, namespace) -> None:
    api = kubernetes.client.CustomObjectsApi(api_client)
    for name, priority in (("low", 0), ("high", 500), ("mid", 100)):
        gf("submit", "--name", name, "--repo", "https://git.example.com/a.git", "--prompt", "p", "--queue", "ordered", "-n", namespace)
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", name, {"spec": {"priority": priority}})
    assert "position 1 of 3 in queue ordered" in gf("explain", "high", "-n", namespace)
    assert "position 2 of 3 in queue ordered" in gf("explain", "mid", "-n", namespace)
    assert "position 3 of 3 in queue ordered" in gf("explain", "low", "-n", namespace)


@pytest.mark.parametrize(
    "env, fragment",
    [
        pytest.param({}, "GIGAFACTORY_RUNNER_POD_NAME", id="no-settings"),
        pytest.param({"GIGAFACTORY_RUNNER_POD_NAME": "p", "GIGAFACTORY_RUNNER_FACTORY": "f",
                      "GIGAFACTORY_RUNNER_PROFILES_FILE": "BAD"}, "profiles.x.argv", id="bad-profiles-file"),
    ],
)
def test_runner_misconfiguration_is_one_clear_line(tmp_path, monkeypatch, env, fragment) -> None:
    for key in ("GIGAFACTORY_RUNNER_POD_NAME", "GIGAFACTORY_RUNNER_FACTORY"):
        monkeypatch.delenv(key, raising=False)
    bad = tmp_path / "profiles.yaml"
    bad.write_text("profiles:\n  x: {argv: []}\n")
    for key, value in env.items():
        monkeypatch.setenv(key, str(bad) if value == "BAD" else value)
    monkeypatch.setenv("GIGAFACTORY_RUNNER_WORK_DIR", str(tmp_path / "work"))
    result = CliRunner().invoke(main.app, ["runner", "--kubeconfig", str(tmp_path / "unused")])
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output
