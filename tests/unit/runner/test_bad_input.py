"""Bad input to the runner: every kind fails the attempt with a specific outcome and reason (never an
exception out of the runner), before an agent starts, and leaves nothing on disk."""

import pathlib

import pytest

from gigafactory import config, kubeclient, leases
from gigafactory.runner import attempts, running
from tests import gitrepos


class SecretsNowhere:
    """Just enough of kubeclient.Client: every object is missing but the binding Lease, which takes patches."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.patched: list[dict] = []

    async def patch(self, resource, name, patch, *, namespace=None, **_):
        self.patched.append(patch)
        return {"metadata": {"name": name, "resourceVersion": str(len(self.patched) + 1)}}

    async def get(self, resource, name, *, namespace=None):
        raise kubeclient.NotFound(404, "NotFound", f"{resource.plural} {name} not found")

    async def create(self, resource, body, *, namespace=None):
        self.created.append(body)
        return body


def _job(remote: pathlib.Path, **spec) -> dict:
    base = {"repo": {"url": str(remote)}, "task": {"prompt": "fix it"}, "agent": {"profile": "script"}}
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob",
            "metadata": {"name": "job", "namespace": "team", "uid": "u1"}, "spec": base}


def _attempt() -> attempts.Attempt:
    return attempts.Attempt(leases.Binding(
        name="gf-u1-1", namespace="runners", pod="pod", factory="f", job_namespace="team", job_name="job", job_uid="u1",
        attempt=1, holder="pod", claimed=True, stop=None, expires_at=None, resource_version="1"))


@pytest.fixture()
def runner(tmp_path) -> running.Runner:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("""
profiles:
  script:
    argv: ["{python}", "-m", "gigafactory.runner.script_agent", "--prompt-file", "{prompt_file}"]
  missing-tool:
    argv: ["/nonexistent/agent-cli", "{prompt_file}"]
""")
    settings = config.RunnerSettings(pod_name="pod", factory="f", work_dir=str(tmp_path / "work"),
                                     profiles_file=str(profiles), allow_local_repos=True, max_prompt_bytes=1000)
    return running.Runner(settings, SecretsNowhere())


@pytest.mark.parametrize(
    "spec, outcome, reason",
    [
        pytest.param({"agent": {"profile": "claude-code"}}, "Rejected", "ProfileUnknown", id="unknown-profile"),
        pytest.param({"agent": {"env": [{"name": "GIT_DIR", "value": "/etc"}]}}, "Rejected", "InvalidSpec",
                     id="reserved-env-past-the-schema"),
        pytest.param({"repo": {"url": "ext::sh -c id"}}, "Rejected", "InvalidSpec", id="url-with-spaces"),
        pytest.param({"repo": {"url": "ext::sh%20-c%20id"}}, "Rejected", "RepoNotAllowed", id="remote-helper"),
        pytest.param({"repo": {"url": "https://bot:ghp_s3cret@git.example.com/a.git"}}, "Rejected", "RepoNotAllowed",
                     id="token-in-url"),
        pytest.param({"repo": {"credentialsSecret": "gone"}}, "Rejected", "SecretNotFound", id="missing-secret"),
        pytest.param({"task": {"prompt": "é" * 600}}, "Rejected", "PromptTooLarge", id="huge-prompt"),
        pytest.param({"task": {"prompt": None, "promptFrom": {"configMapKeyRef": {"name": "tasks", "key": "t"}}}},
                     "Rejected", "PromptNotFound", id="missing-prompt-configmap"),
        pytest.param({"repo": {"baseRef": "no-such-branch"}}, "Rejected", "BaseRefNotFound", id="missing-base-ref"),
        pytest.param({"repo": {"branch": "main"}}, "PushFailed", "BranchExists", id="existing-branch"),
        pytest.param({"repo": {"url": "/nowhere/at/all.git"}}, "Rejected", "RepoNotFound", id="missing-repo"),
        pytest.param({"agent": {"profile": "missing-tool"}}, "Rejected", "AgentNotRunnable", id="agent-not-installed"),
    ],
)
async def test_bad_input_is_a_classified_failure(runner, tmp_path, spec, outcome, reason) -> None:
    remote = gitrepos.make_remote(tmp_path)
    job = _job(remote, **spec)
    if job["spec"]["task"].get("prompt") is None:
        del job["spec"]["task"]["prompt"]
    with pytest.raises(attempts.AttemptFailed) as info:
        await runner.execute(_attempt(), job)
    assert (info.value.outcome, info.value.reason) == (outcome, reason)
    assert info.value.message and "s3cret" not in info.value.message
    assert list((runner.workspace.root / "worktrees").iterdir()) == []


async def test_a_good_job_after_bad_ones_succeeds(runner, tmp_path) -> None:
    remote = gitrepos.make_remote(tmp_path)
    with pytest.raises(attempts.AttemptFailed):
        await runner.execute(_attempt(), _job(remote, repo={"baseRef": "nope"}))
    report = await runner.execute(_attempt(), _job(remote))
    assert report["outcome"] == "Succeeded" and report["result"]["branch"] == "agent/job"
    assert report["result"]["changedFiles"] == [".gigafactory/task.md"]
    assert runner.client.created[0]["data"]["output"].endswith("script agent: committed .gigafactory/task.md\n")
    # The push was announced on the binding Lease first, naming the commit the report names.
    assert runner.client.patched[-1]["metadata"]["annotations"]["gigafactory.dev/pushed"] == f"{report['result']['commit']} agent/job"


def test_only_installed_agents_are_offered(runner) -> None:
    heartbeat = runner._heartbeat_body()
    assert heartbeat["metadata"]["annotations"]["gigafactory.dev/agents"] == "script"  # not missing-tool
