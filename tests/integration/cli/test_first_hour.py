"""Issue 15, a newcomer's first hour: what the CLI says must be true, as a person at a terminal reads it."""

import datetime
import pathlib
import uuid

import kubernetes
import pytest
from typer.testing import CliRunner

from gigafactory import leases
from gigafactory.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[3]
GROUP, VERSION = "gigafactory.dev", "v1alpha1"


@pytest.fixture(autouse=True)
def _crds(install_crds) -> None:
    install_crds(ROOT / "crds")


@pytest.fixture()
def gf(kubeconfig):
    runner = CliRunner()

    def run(*args: str, code: int = 0, input: str | None = None):
        result = runner.invoke(main.app, [*args, "--kubeconfig", kubeconfig], input=input)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result.output

    return run


def _jobs(api_client) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


def _patch_status(api_client, namespace: str, name: str, status: dict) -> None:
    _jobs(api_client).patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agentjobs", name, {"status": status})


def _submit(gf, namespace: str, name: str = "job") -> None:
    gf("submit", "--name", name, "--repo", "https://git.example.com/a.git", "--prompt", "do it", "-n", namespace)


def _one_error_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


# --- 1. factories: the heartbeat's age comes from the heartbeat Lease ---


def test_factories_shows_the_heartbeat_age_from_the_lease(gf, api_client, namespace) -> None:
    name = f"pool-{uuid.uuid4().hex[:6]}"
    api = _jobs(api_client)
    api.create_cluster_custom_object(GROUP, VERSION, "factories", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Factory", "metadata": {"name": name}, "spec": {"agents": ["script"]}})
    try:
        # The operator never writes lastHeartbeat (it would rewrite the Factory on every renewal).
        api.patch_cluster_custom_object_status(GROUP, VERSION, "factories", name, {"status": {"phase": "Ready", "pods": [
            {"name": f"{name}-0", "ready": True, "slots": 2, "running": 0},
            {"name": f"{name}-1", "ready": False, "slots": 2, "running": 0}]}})
        lease = leases.build_heartbeat_lease(pod=f"{name}-0", namespace=namespace, factory=name, slots=2, agents=["script"],
                                             duration_seconds=30,
                                             moment=leases.now() - datetime.timedelta(seconds=75))
        kubernetes.client.CoordinationV1Api(api_client).create_namespaced_lease(namespace, lease)
        out = gf("factories")
        renewed = next(line for line in out.splitlines() if f"{name}-0" in line)
        assert renewed.rstrip().endswith("1m ago"), out
        silent = next(line for line in out.splitlines() if f"{name}-1" in line)
        assert silent.rstrip().endswith("never"), out
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "factories", name)


# --- 4. commands that do nothing say so ---


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
def test_cancel_of_a_finished_job_is_refused(gf, api_client, namespace, phase) -> None:
    _submit(gf, namespace)
    _patch_status(api_client, namespace, "job", {"phase": phase})
    line = _one_error_line(gf("cancel", "job", "-n", namespace, code=1))
    assert f"agentjob {namespace}/job is {phase}: it has finished, there is nothing to cancel" in line
    job = _jobs(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", "job")
    assert not job["spec"].get("cancel")  # nothing written


def test_cancel_of_a_waiting_job_says_so_once(gf, api_client, namespace) -> None:
    _submit(gf, namespace)
    assert gf("cancel", "job", "-n", namespace).strip() == f"agentjob {namespace}/job (Pending) cancel requested"
    assert gf("cancel", "job", "-n", namespace).strip() == f"agentjob {namespace}/job (Pending): cancel was already requested"


def test_logs_of_a_rejected_attempt_say_why_there_are_none(gf, api_client, namespace) -> None:
    _submit(gf, namespace)
    _patch_status(api_client, namespace, "job", {"phase": "Failed", "attempt": 1, "attempts": [
        {"attempt": 1, "factory": "pool-a", "pod": "pool-a-0", "outcome": "Rejected", "reason": "SecretNotFound",
         "message": "Secret git-creds not found"}]})
    line = _one_error_line(gf("logs", "job", "-n", namespace, code=1))
    assert line == (f"error: no log for {namespace}/job attempt 1: it ended Rejected (SecretNotFound: Secret git-creds not found); "
                    "the runner refused the job before starting the agent")
    assert "logs are kept when an attempt ends" not in line


def test_logs_before_any_attempt_ended(gf, namespace) -> None:
    _submit(gf, namespace)
    line = _one_error_line(gf("logs", "job", "-n", namespace, code=1))
    assert "it is Pending and no attempt has ended yet" in line
    assert "has no attempt 3" in _one_error_line(gf("logs", "job", "--attempt", "3", "-n", namespace, code=1))


# --- 5. help text ---


def test_runner_help_reads_cleanly() -> None:
    result = CliRunner().invoke(main.app, ["runner", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = result.output
    assert "[env GIGAFACTORY_RUNNER_POD_NAME]" in text and "[env GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS]" in text
    assert " ." not in text and "<bool>" not in text
    assert "--allow-local-repos / --no-allow-local-repos" in text
