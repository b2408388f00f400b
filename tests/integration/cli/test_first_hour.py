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
            {"name": f"{name}-0", "namespace": namespace, "ready": True, "slots": 2, "running": 0},
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
    assert line == (f"error: no log kept for {namespace}/job attempt 1: it ended Rejected (SecretNotFound: Secret git-creds not found); "
                    "the runner refused the job before starting the agent")
    assert "logs are kept when an attempt ends" not in line


def test_logs_before_any_attempt_ended(gf, namespace) -> None:
    _submit(gf, namespace)
    line = _one_error_line(gf("logs", "job", "-n", namespace, code=1))
    assert "it is Pending and no attempt has ended yet" in line
    assert "attempt 3: there is no such attempt yet" in _one_error_line(gf("logs", "job", "--attempt", "3", "-n", namespace, code=1))


# --- 5. help text ---


def test_runner_help_reads_cleanly() -> None:
    result = CliRunner().invoke(main.app, ["runner", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = result.output
    assert "[env GIGAFACTORY_RUNNER_POD_NAME]" in text and "[env GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS]" in text
    assert " ." not in text and "<bool>" not in text
    assert "--allow-local-repos / --no-allow-local-repos" in text


# --- 2. submit validates as the API server does ---

JOB = """apiVersion: gigafactory.dev/v1alpha1
kind: AgentJob
metadata:
  name: {name}
spec:
{extra}  repo:
    url: https://git.example.com/a.git
  task:
    prompt: do it
  agent:
    profile: script
"""


def _job_names(api_client, namespace: str) -> list[str]:
    items = _jobs(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs")["items"]
    return sorted(item["metadata"]["name"] for item in items)


def test_submit_refuses_an_unknown_field_and_names_it(gf, api_client, namespace, tmp_path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(JOB.format(name="typo", extra="  prioritty: 5\n"))
    out = gf("submit", str(typo), "-n", namespace, code=1)
    assert out.splitlines() == [f"error: {typo}: agentjob {namespace}/typo is invalid:", '  unknown field "spec.prioritty"']
    assert _job_names(api_client, namespace) == []


def test_submit_lists_every_error_at_once(gf, api_client, namespace, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(JOB.format(name="bad", extra='  prioritty: 5\n  priority: 5000\n  queue: "Bad Queue"\n'
                                                "  retry:\n    maxAttempts: 0\n"))
    out = gf("submit", str(bad), "-n", namespace, code=1)
    lines = out.splitlines()
    assert lines[0] == f"error: {bad}: agentjob {namespace}/bad is invalid:"
    assert lines[1] == '  unknown field "spec.prioritty"'
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["spec.priority", "spec.queue", "spec.retry.maxAttempts"]
    assert "Invalid value: 5000" in lines[2]
    assert _job_names(api_client, namespace) == []


def test_submit_names_the_file_and_line_of_a_yaml_error(gf, namespace, tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(JOB.format(name="broken", extra="  queue: a: b\n"))
    line = _one_error_line(gf("submit", str(broken), "-n", namespace, code=1))
    assert line == f"error: {broken}:6:11: invalid YAML: mapping values are not allowed here"
    assert "<unicode string>" not in line


def test_submit_takes_several_documents_and_stdin(gf, api_client, namespace, tmp_path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text("---\n" + JOB.format(name="one", extra="") + "---\n" + JOB.format(name="two", extra="") + "---\n")
    out = gf("submit", "-f", str(both), "-n", namespace)
    assert out.splitlines() == [f"agentjob {namespace}/one submitted", f"agentjob {namespace}/two submitted"]
    out = gf("submit", "-f", "-", "-n", namespace, input=JOB.format(name="three", extra=""))
    assert out.strip() == f"agentjob {namespace}/three submitted"
    assert _job_names(api_client, namespace) == ["one", "three", "two"]


def test_submit_creates_nothing_when_one_document_is_invalid(gf, api_client, namespace, tmp_path) -> None:
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(JOB.format(name="good", extra="") + "---\n" + JOB.format(name="bad", extra="  priority: -1\n"))
    out = gf("submit", str(mixed), "-n", namespace, code=1)
    lines = out.splitlines()
    assert lines[0] == f"error: {mixed} (document 2): agentjob {namespace}/bad is invalid:"
    assert lines[1].startswith("  spec.priority: Invalid value: -1") and len(lines) == 2
    assert _job_names(api_client, namespace) == []


# --- 3. a finished job keeps where and why it ran; REASON goes with PHASE ---


def _apply(api_client, namespace: str, name: str, build) -> None:
    """Write a status patch built by the operator's own builders (binding/patches.py) from the stored job."""
    body = _jobs(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", name)
    patch = build(body)
    _jobs(api_client).patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agentjobs", name, patch)


def _row(out: str, name: str) -> list[str]:
    return next(line for line in out.splitlines() if line.split()[:1] == [name]).split()


def test_a_finished_job_keeps_its_factory_pod_and_score_breakdown(gf, api_client, kubectl, namespace) -> None:
    from gigafactory.binding import patches
    from gigafactory.scheduling import cycle, snapshots

    _submit(gf, namespace)
    pod = snapshots.PodInfo(name="pool-a-0", namespace=namespace, factory="pool-a", slots=1, agents=frozenset({"script"}))

    def bind(body):
        job = snapshots.JobInfo(namespace=namespace, name="job", uid=body["metadata"]["uid"],
                                resource_version=body["metadata"]["resourceVersion"], attempt=1)
        decision = cycle.Decision(job=job, pod=pod, score=87, scores={"FreeCapacity": 100, "WarmRepo": 60}, attempt=1)
        return patches.bind_patch(body=body, decision=decision, now=leases.now(),
                                  model_prices=[{"model": "claude-*", "inputPerMillion": 3, "outputPerMillion": 15}])

    _apply(api_client, namespace, "job", bind)
    assert _row(gf("list", "-n", namespace), "job")[1:5] == ["Bound", "default", "pool-a", "pool-a-0"]
    assert _row(gf("list", "-n", namespace), "job")[-1] == "Bound"
    # What the runner writes when it claims (runner/running.py).
    _patch_status(api_client, namespace, "job", {"phase": "Running", "reason": "AgentRunning"})
    assert _row(gf("list", "-n", namespace), "job")[-1] == "AgentRunning"
    _patch_status(api_client, namespace, "job", {"report": {"attempt": 1, "pod": "pool-a-0", "outcome": "Succeeded",
                                                           "result": {"branch": "agent/job", "commit": "c0ffee"},
                                                           "tokens": [{"model": "claude-sonnet-4-5", "inputTokens": 120000,
                                                                       "outputTokens": 4000, "requests": 7}]}})
    _apply(api_client, namespace, "job", lambda body: patches.fold_patch(body=body, now=leases.now()))

    row = _row(gf("list", "-n", namespace), "job")
    assert row[1:5] == ["Succeeded", "default", "pool-a", "pool-a-0"] and row[-1] == "Succeeded"
    wide = kubectl("get", "aj", "job", "-n", namespace, "-o", "wide").stdout
    header, line = wide.splitlines()
    assert header.split() == ["NAME", "PHASE", "QUEUE", "FACTORY", "ATTEMPT", "AGE", "POD", "REASON", "TOKENS", "COST"]
    assert line.split()[:5] == ["job", "Succeeded", "default", "pool-a", "1"]
    # 120000 input and 4000 output tokens at 3 and 15 a million: 0.36 + 0.06.
    assert line.split()[-4:] == ["pool-a-0", "Succeeded", "124000", "0.42"]
    assert kubectl("get", "aj", "job", "-n", namespace).stdout.split("\n")[0].split()[-1] == "AGE"  # priority 1: -o wide only
    explained = gf("explain", "job", "-n", namespace)
    assert "attempt 1 ran on pool-a/pool-a-0 with score 87/100:" in explained
    assert explained.index("FreeCapacity") < explained.index("WarmRepo")
    described = gf("describe", "job", "-n", namespace)
    assert "pool-a/pool-a-0 (score 87)" in described
    assert "tokens claude-sonnet-4-5: 120000 in, 4000 out, 7 requests, estimated cost 0.420000" in described
    assert "Spent:     124000 tokens, estimated cost 0.420000" in described


def test_list_is_never_cut_short_when_piped(gf, namespace) -> None:
    long_name = "a-job-with-a-rather-long-name-that-a-pipe-must-keep-whole"
    _submit(gf, namespace, long_name)
    out = gf("list", "-A")  # not a terminal: rich alone would cut every row to 80 columns with "…"
    row = next(line for line in out.splitlines() if long_name in line)
    assert "…" not in out and row.split()[:3] == [namespace, long_name, "Pending"]
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "PHASE", "QUEUE", "FACTORY", "POD", "ATTEMPT", "AGE", "REASON"]
