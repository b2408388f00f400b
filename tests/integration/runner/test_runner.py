"""The real runner and the real operator over the embedded API server, with real git remotes:
what a job's owner sees after each kind of attempt, and what a runner leaves on disk."""

import base64
import json
import os
import pathlib
import signal
import stat
import sys

import git
import pytest

from localcluster import faults
from gigafactory.runner import executing
from tests import gitrepos
from tests.conftest import wait_for
from tests.integration.operator import stubs
from tests.unit.runner import gitserver

ROOT = pathlib.Path(__file__).resolve().parents[3]
# The protocol's timings here (seconds): short, so that lost runners are noticed quickly.
HEARTBEAT = 6  # a runner pod's heartbeat Lease
BINDING_LEASE = 3  # a claimed binding's Lease
CLAIM_TIMEOUT = 5  # the operator's: a runner that misses it costs an uncounted ClaimTimeout attempt, no more
PROFILES = """
profiles:
  script:
    argv: ["{python}", "-m", "gigafactory.runner.script_agent", "{args}", "--prompt-file", "{prompt_file}"]
    timeoutSeconds: 3
    allow: {args: [{flag: --exit, value: "[0-9]{1,3}"}, {flag: --hang}, {flag: --await-peers, value: "[0-9]{1,2}"}]}
  script-patient:
    # For agents that wait for each other: on a loaded machine two claims may be seconds apart.
    argv: ["{python}", "-m", "gigafactory.runner.script_agent", "{args}", "--prompt-file", "{prompt_file}"]
    timeoutSeconds: 40
    allow: {args: [{flag: --hang}, {flag: --await-peers, value: "[0-9]{1,2}"}]}
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead for our purposes
        return handle.read().split(")")[-1].split()[0] != "Z"


class RunnerProcess(stubs.RunnerSubprocess):
    def __init__(self, kubeconfig: str, tmp_path: pathlib.Path, *, pod: str, namespace: str, factory: str, slots: int = 1) -> None:
        self.kubeconfig, self.pod = kubeconfig, pod
        self.work_dir = tmp_path / f"work-{pod}"
        self.marker = tmp_path / "executions.txt"
        self.log = tmp_path / f"{pod}.log"
        profiles = tmp_path / "profiles.yaml"
        profiles.write_text(PROFILES)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
            "GIGAFACTORY_RUNNER_POD_NAME": pod, "GIGAFACTORY_RUNNER_NAMESPACE": namespace,
            "GIGAFACTORY_RUNNER_FACTORY": factory, "GIGAFACTORY_RUNNER_SLOTS": str(slots),
            "GIGAFACTORY_RUNNER_WORK_DIR": str(self.work_dir), "GIGAFACTORY_RUNNER_PROFILES_FILE": str(profiles),
            "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true", "GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "GIGAFACTORY_RUNNER_BINDING_LEASE_SECONDS": str(BINDING_LEASE), "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": "1",
            "GIGAFACTORY_RUNNER_MAX_PROMPT_BYTES": "65536",
            "GIGAFACTORY_SCRIPT_MARKER": str(self.marker),
        }

    def executions(self) -> int:
        """Agent executions started (the script agent also adds a "done" line when it commits)."""
        return len(self.starts())

    def starts(self) -> list[str]:
        lines = self.marker.read_text().splitlines() if self.marker.exists() else []
        return [line for line in lines if not line.endswith(" done")]



@pytest.fixture()
def fleet(api, kubeconfig, namespace, tmp_path):
    """An operator, a factory of this test, and a way to start runners in it."""
    factory = stubs.unique("fac")
    # The runners' own slots are the limit.
    api.create_factory(factory, namespace, slotsPerPod=8, agents=["script", "script-patient"])
    runners: list[RunnerProcess] = []

    def start_runner(pod: str = "runner-0", slots: int = 1) -> RunnerProcess:
        runner = RunnerProcess(kubeconfig, tmp_path, pod=pod, namespace=namespace, factory=factory, slots=slots).start()
        runners.append(runner)
        return runner

    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS=str(CLAIM_TIMEOUT)) as _:
        try:
            yield start_runner
        except BaseException:
            for runner in runners:
                sys.stderr.write(f"--- {runner.log.name} ---\n{runner.log.read_text(errors='replace')[-6000:]}\n")
            raise
        finally:
            for runner in runners:
                runner.stop(signal.SIGTERM)  # a graceful stop ends its agents too
                executing.kill_orphans(runner.work_dir / "agents")  # and after a test's SIGKILL, this does
            api.call("delete", stubs.kubeclient.FACTORIES, factory)


def _submit(api, namespace, name, remote, **spec):
    spec.setdefault("repo", {"url": str(remote)})
    return api.create_job(namespace, name, **spec)


def _final(api, namespace, name, timeout=30.0):
    def done():
        status = api.job(namespace, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    return wait_for(done, timeout=timeout, message=f"job {name} did not finish")


def test_success_end_to_end(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "fix", remote, task={"prompt": "Fix the flaky test"})
    status = _final(api, namespace, "fix")
    assert status["phase"] == "Succeeded"
    result = status["result"]
    assert result["branch"] == "agent/fix" and result["changedFiles"] == [".gigafactory/task.md"]
    pushed = git.Repo(remote).heads["agent/fix"].commit
    assert pushed.hexsha == result["commit"]
    assert (pushed.tree / ".gigafactory" / "task.md").data_stream.read().decode() == "Fix the flaky test\n"
    assert status["attempts"][-1]["outcome"] == "Succeeded" and status["attempts"][-1]["pod"] == "runner-0"
    assert runner.executions() == 1
    # The binding is gone and nothing stays on the runner's disk.
    wait_for(lambda: not api.bindings(namespace), timeout=10, message="binding lease left behind")
    assert list((runner.work_dir / "worktrees").iterdir()) == []


@pytest.mark.parametrize(
    "args, outcome, reason",
    [
        pytest.param(["--exit", "1"], "AgentFailed", "AgentExit", id="agent-exit-1"),
        pytest.param(["--hang"], "TimedOut", "AgentTimeout", id="agent-hangs"),
    ],
)
def test_failed_attempts_are_classified(api, namespace, fleet, remote, args, outcome, reason) -> None:
    fleet()
    _submit(api, namespace, "job", remote, agent={"profile": "script", "args": args},
            retry={"maxAttempts": 1})
    status = _final(api, namespace, "job")
    assert status["phase"] == "Failed"
    attempt = status["attempts"][-1]
    assert (attempt["outcome"], attempt["reason"]) == (outcome, reason)
    if outcome == "AgentFailed":
        assert attempt["exitCode"] == 1


def test_existing_branch_is_a_push_failure(api, namespace, fleet, remote) -> None:
    fleet()
    _submit(api, namespace, "job", remote, repo={"url": str(remote), "branch": "main"}, retry={"maxAttempts": 1})
    status = _final(api, namespace, "job")
    assert (status["attempts"][-1]["outcome"], status["attempts"][-1]["reason"]) == ("PushFailed", "BranchExists")


def test_a_push_whose_report_was_lost_is_adopted_by_the_next_attempt_not_run_again(api, namespace, fleet, remote) -> None:
    """The runner dies right after its push lands (a post-receive hook SIGKILLs it): no report. The
    binding Lease expires; the operator records the announced push in the attempt; the next attempt
    finds the branch at exactly that commit and reports it as the job's result without running the
    agent again. Without this the retry would fail on BranchExists with the work already pushed."""
    first = fleet("runner-0")
    hook = remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\nrm -- \"$0\"\nkill -9 {first.process.pid}\n")
    hook.chmod(stat.S_IRWXU)
    _submit(api, namespace, "lost", remote, task={"prompt": "Do it once"})
    wait_for(lambda: first.process.poll() is not None, timeout=30, message="the runner was not killed by the hook")
    pushed = git.Repo(remote).heads["agent/lost"].commit.hexsha
    fleet("runner-1")
    # The Lease runs out (BINDING_LEASE); until runner-0's heartbeat lapses too (HEARTBEAT) the job may
    # be bound to that dead pod again and come back by ClaimTimeout; then runner-1 adopts the push.
    status = _final(api, namespace, "lost", timeout=stubs.within(BINDING_LEASE + HEARTBEAT + CLAIM_TIMEOUT, slack=30))
    assert status["phase"] == "Succeeded"
    lost, *between, adopted = status["attempts"]
    assert (lost["outcome"], lost["reason"], lost.get("pushed")) == ("InfraError", "LeaseExpired", {"branch": "agent/lost", "commit": pushed})
    # Whatever came between (a machine busy enough for runner-1 to start late) was a dead pod's claim timeout.
    assert [(a["reason"], a["pod"], a["counted"]) for a in between] == [("ClaimTimeout", "runner-0", False)] * len(between)
    assert (adopted["outcome"], adopted["reason"], adopted["pod"]) == ("Succeeded", "Adopted", "runner-1")
    assert status["result"]["commit"] == pushed and status["result"]["changedFiles"] == [".gigafactory/task.md"]
    assert first.executions() == 1  # the agent ran once, on the first runner; the second only adopted


def test_a_push_the_remote_refuses_fails_with_its_reason(api, namespace, fleet, remote) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected: agents may not push' >&2\nexit 1\n")
    hook.chmod(stat.S_IRWXU)
    runner = fleet()
    _submit(api, namespace, "job", remote, retry={"maxAttempts": 1})
    status = _final(api, namespace, "job")
    attempt = status["attempts"][-1]
    assert (status["phase"], attempt["outcome"], attempt["reason"]) == ("Failed", "PushFailed", "PushRejected")
    assert "protected: agents may not push" in attempt["message"]
    assert runner.executions() == 1  # the agent ran; only its push was refused
    assert [h.name for h in git.Repo(remote).heads] == ["main"]


@pytest.mark.parametrize(
    "spec, reason",
    [
        pytest.param({"repo": {"url": "/nowhere/at/all.git"}}, "RepoNotFound", id="no-such-repo"),
        pytest.param({"repo": {"url": "REMOTE", "baseRef": "nope"}}, "BaseRefNotFound", id="no-such-base-ref"),
        pytest.param({"repo": {"url": "REMOTE", "credentialsSecret": "missing"}}, "SecretNotFound", id="no-secret"),
        pytest.param({"repo": {"url": "REMOTE"}, "task": {"prompt": "x" * 100_000}}, "PromptTooLarge", id="huge-prompt"),
    ],
)
def test_bad_input_fails_the_job_and_the_runner_serves_on(api, namespace, fleet, remote, spec, reason) -> None:
    fleet()
    spec["repo"]["url"] = spec["repo"]["url"].replace("REMOTE", str(remote))
    api.create_job(namespace, "bad", **spec)
    status = _final(api, namespace, "bad")
    assert status["phase"] == "Failed"
    assert (status["attempts"][-1]["outcome"], status["attempts"][-1]["reason"]) == ("Rejected", reason)
    _submit(api, namespace, "good", remote)
    assert _final(api, namespace, "good")["phase"] == "Succeeded"


def test_invariant_4_two_jobs_of_one_repo_on_one_runner_get_their_own_worktrees_and_both_succeed(api, namespace, fleet, remote) -> None:
    runner = fleet(slots=2)
    # Each agent waits until both are running: the jobs succeed only if they really ran at the same time.
    together = {"profile": "script-patient", "args": ["--await-peers", "2"]}
    _submit(api, namespace, "one", remote, task={"prompt": "first"}, agent=together)
    _submit(api, namespace, "two", remote, task={"prompt": "second"}, agent=together)
    one, two = _final(api, namespace, "one", timeout=45), _final(api, namespace, "two", timeout=45)
    assert one["phase"] == two["phase"] == "Succeeded"
    heads = git.Repo(remote).heads
    assert heads["agent/one"].commit != heads["agent/two"].commit
    assert (heads["agent/two"].commit.tree / ".gigafactory" / "task.md").data_stream.read() == b"second\n"
    assert runner.executions() == 2  # each ran exactly once
    workdirs = runner.starts()
    assert len(set(workdirs)) == 2  # in worktrees of their own


def test_invariant_5_kill_minus_9_leaves_nothing_the_next_start_does_not_sweep(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "long", remote, agent={"profile": "script", "args": ["--hang"]})
    wait_for(lambda: runner.executions() >= 1, timeout=20, message="the agent never started")
    worktrees = runner.work_dir / "worktrees"
    assert len(list(worktrees.iterdir())) == 1
    runner.stop(signal.SIGKILL)
    mirror = next((runner.work_dir / "mirrors").glob("*.git"))
    assert "refs/gigafactory/attempts/" in git.Git(str(mirror)).execute(["git", "for-each-ref"])  # left behind by the crash
    orphan = int(next((runner.work_dir / "agents").glob("*.pid")).read_text().split()[0])
    assert _alive(orphan)  # the agent has its own process group: a crashed runner does not take it along
    restarted = RunnerProcess(runner.kubeconfig, runner.work_dir.parent, pod="runner-0", namespace=namespace,
                              factory=runner.env["GIGAFACTORY_RUNNER_FACTORY"])
    restarted.log = runner.work_dir.parent / "runner-0-restarted.log"
    restarted.start()
    try:
        wait_for(lambda: "ready with" in restarted.log.read_text(errors="replace") if restarted.log.exists() else False,
                 timeout=20, message="restarted runner never became ready")
        assert "start-up sweep removed" in restarted.log.read_text(errors="replace")
        swept_names = restarted.log.read_text(errors="replace")
        assert "worktree" in swept_names and "ref refs/gigafactory/attempts/" in swept_names
        assert not _alive(orphan)
        # Nothing of the interrupted attempt is left: no worktree, branch, task file or pid file.
        assert list(worktrees.iterdir()) == [] and list((runner.work_dir / "agents").iterdir()) == []
        assert not list(runner.work_dir.glob("gf-*"))
        assert [h.name for h in git.Repo(mirror).heads] == [] and list((runner.work_dir / "trusted").iterdir()) == []
        assert "refs/gigafactory/" not in git.Git(str(mirror)).execute(["git", "for-each-ref"])
    finally:
        restarted.stop(signal.SIGTERM)
        executing.kill_orphans(restarted.work_dir / "agents")


@pytest.mark.embedded_only  # fault injection
@pytest.mark.parametrize("fault", ["error", "slow"])
def test_a_runner_cut_off_from_the_api_stops_its_agent_once_its_lease_has_run_out(api, namespace, fleet, remote,
                                                                                  local_cluster, fault) -> None:
    """Partitioned, not dead: the runner cannot renew its binding Lease, so the operator will give the
    job to someone else; the runner must not keep the agent running beside that other attempt. Its
    renewals fail at once (error), or hang far longer than the Lease (slow: a black hole)."""
    runner = fleet()
    _submit(api, namespace, "cut-off", remote, agent={"profile": "script-patient", "args": ["--hang"]})
    wait_for(lambda: runner.executions() >= 1, timeout=20, message="the agent never started")
    pid = int(runner.starts()[0].split()[0])
    # Every Lease request fails or hangs, watches are cut: neither the renewal nor the operator's undo
    # (which would delete the Lease, a loss the runner's watch would see) gets through. Only the
    # runner's own rule can stop the agent.
    hang = 30.0  # a hanging request's answer comes only after this long
    local_cluster.local.server.faults = faults.FaultPolicy(rate=1.0, kinds=(fault, "drop"), resources=("leases",), delay=hang)
    try:
        # The runner's own rule: the agent stops once the Lease (3 s) has run out without a renewal.
        wait_for(lambda: not _alive(pid), timeout=stubs.within(BINDING_LEASE), message="the agent outlived its binding Lease")
        assert "could not renew" in runner.log.read_text(errors="replace")
    finally:
        local_cluster.local.server.faults = faults.NoFaults()


def test_sigterm_stops_claiming_releases_and_requeues(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "long", remote, agent={"profile": "script", "args": ["--hang"]})
    wait_for(lambda: runner.executions() >= 1, timeout=20, message="the agent never started")
    runner.stop(signal.SIGTERM)
    assert runner.process.returncode == 0

    def requeued():
        status = api.job(namespace, "long").get("status") or {}
        attempts = status.get("attempts") or []
        return attempts[-1] if attempts else None

    attempt = wait_for(requeued, timeout=20, message="the stopped attempt was never recorded")
    assert (attempt["outcome"], attempt["reason"]) == ("InfraError", "RunnerShutdown")
    heartbeats = api.call("list", stubs.kubeclient.LEASES, namespace=namespace,
                          label_selector="gigafactory.dev/role=heartbeat")[0]
    assert heartbeats == []  # the pod said goodbye
    assert list((runner.work_dir / "worktrees").iterdir()) == []


def test_cancel_stops_a_running_agent_and_ends_the_job_cancelled(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "long", remote, agent={"profile": "script", "args": ["--hang"]})
    wait_for(lambda: runner.executions() >= 1, timeout=20, message="the agent never started")
    api.call("patch", stubs.kubeclient.AGENTJOBS, "long", {"spec": {"cancel": True}}, namespace=namespace)
    status = _final(api, namespace, "long", timeout=20)
    assert status["phase"] == "Cancelled"
    assert (status["attempts"][-1]["outcome"], status["attempts"][-1]["reason"]) == ("Stopped", "Cancelled")
    assert runner.executions() == 1
    wait_for(lambda: not api.bindings(namespace), timeout=10, message="binding lease left behind")


def test_cancel_of_a_waiting_job_ends_it_at_once(api, namespace, fleet, remote) -> None:
    fleet()
    _submit(api, namespace, "never", remote, requirements={"capabilities": ["quantum"]})
    wait_for(lambda: (api.job(namespace, "never").get("status") or {}).get("conditions"), timeout=20,
             message="the job was never explained")
    api.call("patch", stubs.kubeclient.AGENTJOBS, "never", {"spec": {"cancel": True}}, namespace=namespace)
    status = _final(api, namespace, "never", timeout=20)
    assert status["phase"] == "Cancelled" and not status.get("attempts")


def test_suspend_stops_and_requeues_resume_runs_again(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "pausable", remote, agent={"profile": "script", "args": ["--hang"]})
    wait_for(lambda: runner.executions() >= 1, timeout=20, message="the agent never started")
    api.call("patch", stubs.kubeclient.AGENTJOBS, "pausable", {"spec": {"suspend": True}}, namespace=namespace)

    def stopped():
        status = api.job(namespace, "pausable").get("status") or {}
        attempts = status.get("attempts") or []
        return status if attempts and status.get("phase") == "Pending" else None

    status = wait_for(stopped, timeout=20, message="the suspended attempt was not stopped and requeued")
    assert (status["attempts"][-1]["outcome"], status["attempts"][-1]["reason"]) == ("Stopped", "Suspended")
    assert runner.executions() == 1  # and it stays put while suspended
    api.call("patch", stubs.kubeclient.AGENTJOBS, "pausable", {"spec": {"suspend": False}}, namespace=namespace)
    wait_for(lambda: runner.executions() >= 2, timeout=20, message="the resumed job never ran again")


def test_active_deadline_stops_the_agent_and_fails_the_job(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "slow", remote, agent={"profile": "script", "args": ["--hang"]}, activeDeadlineSeconds=2)
    status = _final(api, namespace, "slow", timeout=20)
    assert status["phase"] == "Failed"
    assert (status["attempts"][-1]["outcome"], status["attempts"][-1]["reason"]) == ("Stopped", "DeadlineExceeded")
    assert any(c["type"] == "Failed" and c["reason"] == "DeadlineExceeded" for c in status["conditions"])
    assert runner.executions() == 1


def test_finished_job_is_deleted_after_its_ttl(api, namespace, fleet, remote) -> None:
    fleet()
    ttl = 1
    _submit(api, namespace, "brief", remote, ttlSecondsAfterFinished=ttl)

    def gone():
        try:
            api.job(namespace, "brief")
        except stubs.kubeclient.NotFound:
            return True
        return False

    # Its Succeeded phase lasts only the TTL, shorter than one poll may take on a busy machine: what
    # shows that it ran to its end before it went is the branch it pushed.
    wait_for(gone, timeout=30 + stubs.within(ttl), message="the finished job outlived its TTL")
    assert "agent/brief" in [h.name for h in git.Repo(remote).heads]


def test_invariant_6_deleting_a_running_job_stops_its_agent_releases_the_binding_then_goes(api, namespace, fleet, remote) -> None:
    runner = fleet()
    _submit(api, namespace, "doomed", remote, agent={"profile": "script", "args": ["--hang"]})
    wait_for(lambda: runner.executions() >= 1, timeout=20, message="the agent never started")
    pid = int(next((runner.work_dir / "agents").glob("*.pid")).read_text().split()[0])
    api.call("delete", stubs.kubeclient.AGENTJOBS, "doomed", namespace=namespace)
    wait_for(lambda: not api.bindings(namespace), timeout=15, message="the binding outlived its job")
    wait_for(lambda: not _alive(pid), timeout=15, message="the agent of a deleted job kept running")
    wait_for(lambda: not list((runner.work_dir / "worktrees").iterdir()), timeout=10, message="worktree left behind")


def test_gigafactory_logs_prints_the_agent_output(api, namespace, fleet, remote, kubeconfig) -> None:
    from typer.testing import CliRunner

    from gigafactory.cli import main

    fleet()
    _submit(api, namespace, "chatty", remote, task={"prompt": "x" * 42})
    _final(api, namespace, "chatty")
    result = CliRunner().invoke(main.app, ["logs", "chatty", "-n", namespace, "--kubeconfig", kubeconfig])
    assert result.exit_code == 0, result.output
    assert "script agent: task of 42 characters" in result.output
    assert "committed .gigafactory/task.md" in result.output
    missing = CliRunner().invoke(main.app, ["logs", "chatty", "--attempt", "7", "-n", namespace, "--kubeconfig", kubeconfig])
    assert missing.exit_code == 1 and "no log kept" in missing.output


TOKEN = "ghp_integration-right-token-4242"
WRONG = "ghp_integration-wrong-token-1717"


@pytest.fixture()
def private_remote(tmp_path, monkeypatch):
    """A repository served over HTTPS behind basic auth: only TOKEN gets in."""
    bare = gitrepos.make_remote(tmp_path / "srv", name="private.git")
    server = gitserver.serve(tmp_path / "srv", token=TOKEN)
    monkeypatch.setenv("GIT_SSL_CAINFO", server.ca)  # runners started by the test inherit it
    yield f"{server.url}/private.git", bare
    server.shutdown()


def _secret(api, namespace, name, token):
    # Marked for Gigafactory use, for the test server's host (docs/security.md, credentials by consent).
    body = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": {"gigafactory.dev/credentials": "true"},
                         "annotations": {"gigafactory.dev/allowed-hosts": "127.0.0.1"}},
            "data": {"token": base64.b64encode(token.encode()).decode()}}
    api.call("create", stubs.kubeclient.SECRETS, body, namespace=namespace)


def test_https_token_from_the_secret_clones_and_pushes(api, namespace, fleet, private_remote) -> None:
    url, bare = private_remote
    fleet()
    _secret(api, namespace, "git-creds", TOKEN)
    _submit(api, namespace, "private", url, repo={"url": url, "credentialsSecret": "git-creds"})
    status = _final(api, namespace, "private")
    assert status["phase"] == "Succeeded", status
    assert git.Repo(bare).heads["agent/private"].commit.hexsha == status["result"]["commit"]


def test_bad_credentials_fail_clearly_and_leak_nowhere(api, namespace, fleet, private_remote, tmp_path) -> None:
    url, bare = private_remote
    runner = fleet()
    _secret(api, namespace, "git-creds", WRONG)
    _submit(api, namespace, "private", url, repo={"url": url, "credentialsSecret": "git-creds"})
    status = _final(api, namespace, "private")
    attempt = status["attempts"][-1]
    assert (status["phase"], attempt["outcome"], attempt["reason"]) == ("Failed", "Rejected", "BadCredentials")
    assert f"authentication to {url} failed" in attempt["message"]
    assert runner.executions() == 0  # no agent ran for a repository it could not read
    # The token is in the Secret and nowhere else: not the job, its Events, ConfigMaps, the runner's
    # log or any file the runner wrote.
    everything = [
        json.dumps(api.job(namespace, "private")),
        json.dumps(api.call("list", stubs.kubeclient.EVENTS, namespace=namespace)[0]),
        json.dumps(api.call("list", stubs.kubeclient.CONFIGMAPS, namespace=namespace)[0]),
        json.dumps(api.call("list", stubs.kubeclient.LEASES, namespace=namespace)[0]),
        runner.log.read_text(errors="replace"),
        *(p.read_text(errors="ignore") for p in runner.work_dir.rglob("*") if p.is_file()),
    ]
    assert not [text for text in everything if WRONG in text]
    assert "BadCredentials" in runner.log.read_text(errors="replace")  # yet the log says what happened
