"""Red team: a job's inputs cannot steer what runs (issue 13, item 3).

A job author chooses spec.agent.args and spec.agent.env, and the repository's content; the profile
(written by the platform team) chooses the command. Each test below is an attack that worked on the
runner and chart before profiles declared what a job may add: a repository's own `gigafactory/`
package ran in the script agent, `--prompt-file /etc/shadow` after the profile's own flag won, and
`PATH=.` ran a repository's `./claude`. Now: the runner refuses what the profile does not allow
(Rejected, ArgNotAllowed / EnvNotAllowed, naming the field), the CRD schema refuses env names that change
how programs load, the chart's admission policy refuses what no pool's profile allows, the interpreter
runs isolated, argv[0] is resolved with the runner's PATH, and the chart's default pools offer no
`script` profile."""

import asyncio
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import cel
import git
import pytest
import yaml

from gigafactory import config, kubeclient, leases
from gigafactory.runner import attempts, profiles, running
from tests import gitrepos
from tests.conftest import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gigafactory"
HELM = ROOT / ".venv" / "bin" / "helm"
DEMO_VALUES = ROOT / "examples" / "helm" / "values-script-agent.yaml"
needs_helm = pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)")

# Env names that change which program runs, what it loads, or where it connects: never from a job.
LOADER_ENV = ["PATH", "PYTHONPATH", "PYTHONSTARTUP", "NODE_OPTIONS", "BASH_ENV", "ENV", "LD_PRELOAD", "LD_LIBRARY_PATH",
              "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "HOME", "https_proxy", "HTTPS_PROXY", "PERL5OPT", "RUBYOPT",
              "JAVA_TOOL_OPTIONS", "NPM_CONFIG_USERCONFIG", "SSL_CERT_FILE"]


# --------------------------------------------------------------------------------------- the runner


class NoCluster:
    """Just enough of kubeclient.Client for Runner.execute: no Secret, no ConfigMap; Lease patches and log
    ConfigMaps are taken."""

    def __init__(self) -> None:
        self.created: list[dict] = []

    async def patch(self, resource, name, patch, *, namespace=None, **_):
        return {"metadata": {"name": name, "resourceVersion": "2"}}

    async def get(self, resource, name, *, namespace=None):
        raise kubeclient.NotFound(404, "NotFound", f"{resource.plural} {name} not found")

    async def create(self, resource, body, *, namespace=None):
        self.created.append(body)
        return body


def _runner(tmp_path: pathlib.Path, profile_map: dict[str, Any] | None = None) -> running.Runner:
    """A runner whose profiles file holds profile_map (default: the shipped file), loaded with today's PATH."""
    path = None
    if profile_map is not None:
        path = tmp_path / "profiles.yaml"
        path.write_text(yaml.safe_dump({"profiles": profile_map}))
    settings = config.RunnerSettings(pod_name="pod", factory="f", work_dir=str(tmp_path / "work"),
                                     profiles_file=str(path) if path else None, allow_local_repos=True)
    return running.Runner(settings, NoCluster())


def _job(remote: pathlib.Path, agent: dict[str, Any]) -> dict:
    return {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob", "metadata": {"name": "job", "namespace": "team", "uid": "u1"},
            "spec": {"repo": {"url": str(remote)}, "task": {"prompt": "fix it"}, "agent": agent}}


def _attempt() -> attempts.Attempt:
    return attempts.Attempt(leases.Binding(
        name="gf-u1-1", namespace="runners", pod="pod", factory="f", job_namespace="team", job_name="job", job_uid="u1",
        attempt=1, holder="pod", claimed=True, stop=None, expires_at=None, resource_version="1"))


def _hostile_remote(root: pathlib.Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> pathlib.Path:
    """A bare remote whose main branch holds what a hostile repository ships (nested paths, executables)."""
    work = root / "hostile-src"
    repo = git.Repo.init(work, initial_branch="main")
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
        if name in executable:
            (work / name).chmod(0o755)
    repo.git.add("--all")
    repo.git.commit("-m", "init", "--author", "t <t@example.invalid>", env={"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"})
    bare = root / "hostile.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo.create_remote("origin", str(bare)).push("main:main")
    return bare


def _trap(marker: pathlib.Path) -> str:
    return f"#!/bin/sh\necho \"$0 $*\" >> {marker}\nexit 0\n"


def _chart_profiles() -> list[Any]:
    """Every profile the chart ships or documents: its default values, the full CI values, the demo values."""
    found = []
    for source in [CHART / "values.yaml", CHART / "ci" / "full-values.yaml", *sorted((ROOT / "examples" / "helm").glob("*.yaml"))]:
        for pool in yaml.safe_load(source.read_text()).get("pools") or []:
            for name, profile in (pool.get("profiles") or {}).items():
                found.append(pytest.param(profile, id=f"{source.relative_to(ROOT)}:{pool['name']}:{name}"))
    return found


PYTHON_PROFILES = [p for p in _chart_profiles() if p.values[0]["argv"][0] == "{python}"] + [
    pytest.param(yaml.safe_load(profiles.DEFAULT_FILE.read_text())["profiles"]["script"], id="runner-default:script")]


@pytest.mark.parametrize("profile", _chart_profiles())
def test_every_profile_the_chart_ships_loads_in_the_runner(tmp_path, profile) -> None:
    """A profile the runner refuses to load (say, one that allows PATH) would keep a pool's runners from starting."""
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"x": profile}}))
    assert profiles.load(path)["x"].argv == profile["argv"]


@pytest.mark.parametrize("profile", PYTHON_PROFILES)
async def test_a_repositorys_own_gigafactory_package_never_runs_in_the_script_agent(tmp_path, profile) -> None:
    """`python -m gigafactory.runner.script_agent` in the worktree used to import the repository's
    gigafactory/__init__.py first (the working directory leads sys.path): now `python -I`."""
    marker = tmp_path / "pwned"
    remote = _hostile_remote(tmp_path, {"gigafactory/__init__.py": f"open({str(marker)!r}, 'a').write('ran as the runner\\n')\n",
                                        "gigafactory/runner/__init__.py": "", "README.md": "hi\n"})
    runner = _runner(tmp_path, {"script": profile})
    report = await runner.execute(_attempt(), _job(remote, {"profile": "script"}))
    assert not marker.exists(), "the repository's package ran in the agent"
    assert report["outcome"] == "Succeeded", report


@pytest.mark.parametrize("args, field", [
    pytest.param(["--prompt-file", "SECRET"], "spec.agent.args[0]", id="profile-flag-again"),
    pytest.param(["--prompt-file=SECRET"], "spec.agent.args[0]", id="profile-flag-with-equals"),
    pytest.param(["--prompt", "SECRET"], "spec.agent.args[0]", id="argparse-abbreviation"),
    pytest.param(["--exit", "--prompt-file", "SECRET"], "spec.agent.args[1]", id="flag-as-a-value"),
    pytest.param(["--hang", "--", "SECRET"], "spec.agent.args[1]", id="end-of-options"),
    pytest.param(["--exit", "1; cat SECRET"], "spec.agent.args[1]", id="value-outside-its-pattern"),
    pytest.param(["--exit"], "spec.agent.args[0]", id="value-missing"),
    pytest.param(["SECRET"], "spec.agent.args[0]", id="positional"),
])
async def test_job_args_cannot_override_the_profiles_own_flags(tmp_path, args, field) -> None:
    """`agent.args: ["--prompt-file", "/etc/shadow"]` came after the profile's own flag and won: the
    file was committed and pushed. Now only the profile's allow.args pass, and where {args} puts them."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$not-for-the-agent\n")
    remote = gitrepos.make_remote(tmp_path)
    runner = _runner(tmp_path)  # the shipped profiles: script allows --exit N, --hang, --await-peers N
    job = _job(remote, {"profile": "script", "args": [str(secret) if a == "SECRET" else a.replace("SECRET", str(secret)) for a in args]})
    with pytest.raises(attempts.AttemptFailed) as refused:
        await runner.execute(_attempt(), job)
    assert (refused.value.outcome, refused.value.reason) == ("Rejected", "ArgNotAllowed")
    assert refused.value.message.startswith(f"{field}: "), refused.value.message
    assert "agent/job" not in git.Repo(remote).heads, "something was pushed"
    assert not runner.client.created, "an agent ran (its log was saved)"


async def test_allowed_args_reach_the_agent_before_the_profiles_own_flags(tmp_path) -> None:
    remote = gitrepos.make_remote(tmp_path)
    report = await _runner(tmp_path).execute(_attempt(), _job(remote, {"profile": "script", "args": ["--exit", "3"]}))
    assert (report["outcome"], report["exitCode"]) == ("AgentFailed", 3)


@pytest.fixture()
def claude_on_the_runners_path(tmp_path, monkeypatch) -> pathlib.Path:
    """A stand-in `claude` installed for the runner (its PATH), which leaves its own marker when it runs."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "claude").write_text(_trap(tmp_path / "installed-claude-ran"))
    (tools / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    return tools / "claude"


@pytest.mark.parametrize("name", LOADER_ENV)
async def test_job_env_cannot_choose_what_the_claude_code_profile_runs(tmp_path, claude_on_the_runners_path, name) -> None:
    """`agent.env: PATH=.` made the real claude-code profile run `./claude` from the repository; PYTHONPATH,
    NODE_OPTIONS, BASH_ENV were accepted too. Now the schema's deny-list refuses them (the runner
    validates the job against it, InvalidSpec), and the profile allows no env at all (EnvNotAllowed)."""
    marker = tmp_path / "repository-claude-ran"
    remote = _hostile_remote(tmp_path, {"claude": _trap(marker), "README.md": "hi\n"}, executable=("claude",))
    runner = _runner(tmp_path)  # the shipped claude-code profile, its command found on the runner's PATH
    assert "claude-code" in runner.agents
    with pytest.raises(attempts.AttemptFailed) as refused:
        await runner.execute(_attempt(), _job(remote, {"profile": "claude-code", "env": [{"name": name, "value": "."}]}))
    assert refused.value.outcome == "Rejected" and refused.value.reason in ("InvalidSpec", "EnvNotAllowed")
    assert refused.value.message.startswith("spec.agent.env[0].name: "), refused.value.message
    assert not marker.exists() and not (tmp_path / "installed-claude-ran").exists()


async def test_env_a_profile_does_not_list_is_refused(tmp_path, claude_on_the_runners_path) -> None:
    """Not a loader variable, still not the job's to set: ANTHROPIC_BASE_URL would send the pod's API key
    to a server of the job author's choosing."""
    remote = gitrepos.make_remote(tmp_path)
    with pytest.raises(attempts.AttemptFailed) as refused:
        await _runner(tmp_path).execute(_attempt(), _job(remote, {"profile": "claude-code", "env": [
            {"name": "ANTHROPIC_BASE_URL", "value": "https://collector.example"}]}))
    assert (refused.value.outcome, refused.value.reason) == ("Rejected", "EnvNotAllowed")
    assert refused.value.message.startswith("spec.agent.env[0].name: 'ANTHROPIC_BASE_URL' is not an env name this profile allows")


async def test_argv0_is_found_with_the_runners_path_never_the_jobs(tmp_path, claude_on_the_runners_path) -> None:
    """Resolved once, when the profiles load: an absolute path, whatever PATH the agent's environment has."""
    loaded = profiles.load()
    argv = loaded["claude-code"].render(prompt_file=tmp_path / "p", workdir=tmp_path, job="j", branch="b")
    assert argv[0] == str(claude_on_the_runners_path)
    script = loaded["script"].render(prompt_file=tmp_path / "p", workdir=tmp_path, job="j", branch="b")
    assert script[:2] == [sys.executable, "-I"]


@pytest.mark.parametrize("profile, problem", [
    pytest.param({"argv": ["agent"], "allow": {"env": ["PATH"]}}, "reserved", id="allow-PATH"),
    pytest.param({"argv": ["agent"], "allow": {"env": ["NODE_OPTIONS"]}}, "reserved", id="allow-NODE_OPTIONS"),
    pytest.param({"argv": ["agent"], "allow": {"env": ["PY*"]}}, "reserved", id="allow-a-prefix-reaching-PYTHONPATH"),
    pytest.param({"argv": ["agent", "--prompt-file", "{prompt_file}"], "allow": {"args": [{"flag": "--prompt-file", "value": ".*"}]}},
                 "could override", id="allow-the-profiles-own-flag"),
    pytest.param({"argv": ["agent", "--prompt-file", "{prompt_file}"], "allow": {"args": [{"flag": "--prompt", "value": ".*"}]}},
                 "could override", id="allow-an-abbreviation-of-it"),
    pytest.param({"argv": ["claude", "-p"], "allow": {"args": [{"flag": "-pX"}]}}, "could override", id="allow-a-short-flag-with-a-value"),
    pytest.param({"argv": ["agent"], "allow": {"args": [{"flag": "--model", "value": "(?!gpt).*"}]}}, "not RE2", id="lookahead"),
    pytest.param({"argv": ["agent"], "allow": {"args": [{"flag": "model"}]}}, "flag", id="not-a-flag"),
])
def test_a_profile_that_would_let_a_job_take_over_does_not_load(tmp_path, profile, problem) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"x": profile}}))
    with pytest.raises(ValueError, match="cannot load agent profiles") as failed:
        profiles.load(path)
    assert problem in str(failed.value)


# ------------------------------------------------------------------------------- the API server


@pytest.fixture(scope="module")
def crds(install_crds) -> None:
    install_crds(ROOT / "crds")


def _create(kubeconfig: str, manifest: dict) -> dict | kubeclient.ApiError:
    async def create() -> dict | kubeclient.ApiError:
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            try:
                return await client.create(kubeclient.AGENTJOBS, manifest, namespace=manifest["metadata"]["namespace"])
            except kubeclient.ApiError as exc:
                return exc
    return asyncio.run(create())


def _manifest(namespace: str, agent: dict) -> dict:
    return {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob",
            "metadata": {"name": f"j-{uuid.uuid4().hex[:8]}", "namespace": namespace},
            "spec": {"repo": {"url": "https://git.example.com/acme/api.git"}, "task": {"prompt": "fix it"}, "agent": agent}}


@pytest.mark.parametrize("name", LOADER_ENV)
def test_the_schema_refuses_env_names_that_change_how_programs_load(crds, kubeconfig, namespace, name) -> None:
    created = _create(kubeconfig, _manifest(namespace, {"profile": "claude-code", "env": [{"name": name, "value": "."}]}))
    assert isinstance(created, kubeclient.Invalid), created
    assert "spec.agent.env[0]" in created.message and "env name is reserved" in created.message, created.message


# ------------------------------------------------------------------------------------- the chart


def _render(*args: str) -> list[dict]:
    out = subprocess.run([str(HELM), "template", "gf", str(CHART), "-n", "gf", *args], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@needs_helm
def test_the_charts_default_pools_offer_no_script_profile() -> None:
    docs = _render()
    factories = [d for d in docs if d["kind"] == "Factory"]
    offered = [yaml.safe_load(d["data"]["profiles.yaml"])["profiles"] for d in docs
               if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-profiles")]
    assert factories and offered
    assert all("script" not in f["spec"]["agents"] for f in factories)
    for pool in offered:
        assert "script" not in pool and not any("script_agent" in " ".join(p["argv"]) for p in pool.values()), pool


def _job_inputs_policy(values: str, tmp_path: pathlib.Path) -> tuple[dict, dict]:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    docs = _render("-f", str(DEMO_VALUES), "-f", str(path))
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "gf-job-inputs")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding" and d["spec"]["policyName"] == "gf-job-inputs")
    return policy, binding


# Two pools offering `script` with different allowances (their union is admitted; each runner checks its own).
TWO_POOLS = """
pools:
  - name: default
    agents: [script]
    profiles:
      script:
        argv: ["{python}", "-m", "gigafactory.runner.script_agent", "{args}", "--prompt-file", "{prompt_file}"]
        allow: {args: [{flag: --exit, value: "[0-9]{1,3}"}, {flag: --hang}], env: [SCRIPT_MODE]}
  - name: other
    agents: [script, aider]
    profiles:
      script:
        argv: ["{python}", "-m", "gigafactory.runner.script_agent", "{args}", "--prompt-file", "{prompt_file}"]
        allow: {args: [{flag: --exit, value: "x[a-z]"}], env: ["TOOL_*"]}
      aider:
        argv: [aider, "{args}", --message-file, "{prompt_file}"]
        allow: {args: [{flag: --model, value: "[a-z0-9-]+"}]}
"""


def _admit(policy: dict, operation: str, agent: dict, old_agent: dict | None = None) -> str | None:
    """The policy's verdict as the API server reaches it: None (admitted) or the denial message. An
    expression that errors denies (failurePolicy: Fail)."""
    obj = {"spec": {"agent": agent}}
    context: dict[str, Any] = {"request": {"operation": operation}, "object": obj,
                               "oldObject": {"spec": {"agent": old_agent}} if old_agent is not None else None}
    if not all(cel.evaluate(c["expression"], context) for c in policy["spec"]["matchConditions"]):
        return None
    context["variables"] = {}
    for variable in policy["spec"]["variables"]:  # in order: later ones read earlier ones
        context["variables"][variable["name"]] = cel.evaluate(variable["expression"], context)
    for validation in policy["spec"]["validations"]:
        if cel.evaluate(validation["expression"], context) is not True:
            return cel.evaluate(validation["messageExpression"], context)
    return None


@needs_helm
@pytest.mark.parametrize("agent, refused", [
    pytest.param({"profile": "script"}, None, id="nothing-added"),
    pytest.param({"profile": "script", "args": ["--exit", "3", "--hang"]}, None, id="allowed-args"),
    pytest.param({"profile": "script", "args": ["--exit", "xy"]}, None, id="value-of-the-other-pool"),
    pytest.param({"profile": "script", "env": [{"name": "SCRIPT_MODE"}, {"name": "TOOL_LEVEL"}]}, None, id="allowed-env"),
    pytest.param({"profile": "aider", "args": ["--model", "gpt-5"]}, None, id="other-profile"),
    pytest.param({"profile": "script", "args": ["--prompt-file", "/etc/shadow"]}, "spec.agent.args[0]: ", id="override"),
    pytest.param({"profile": "script", "args": ["--hang", "--prompt-file=/etc/shadow"]}, "spec.agent.args[1]: ", id="override-equals"),
    pytest.param({"profile": "script", "args": ["--exit", "--prompt-file"]}, "spec.agent.args[0]: ", id="flag-as-value"),
    pytest.param({"profile": "script", "args": ["--exit", "3; id"]}, "spec.agent.args[0]: ", id="value-outside-patterns"),
    pytest.param({"profile": "script", "args": ["--exit"]}, "spec.agent.args[0]: ", id="value-missing"),
    pytest.param({"profile": "script", "args": ["/etc/shadow"]}, "spec.agent.args[0]: ", id="positional"),
    pytest.param({"profile": "aider", "args": ["--hang"]}, "spec.agent.args[0]: ", id="another-profiles-flag"),
    pytest.param({"profile": "nobody-offers", "args": ["--x"]}, "spec.agent.args[0]: ", id="unknown-profile"),
    pytest.param({"profile": "script", "env": [{"name": "SCRIPT_MODE"}, {"name": "ANTHROPIC_BASE_URL"}]},
                 "spec.agent.env[1].name: ANTHROPIC_BASE_URL is not", id="env-not-listed"),
])
def test_the_charts_admission_policy_refuses_what_no_pools_profile_allows(tmp_path, agent, refused) -> None:
    policy, binding = _job_inputs_policy(TWO_POOLS, tmp_path)
    assert policy["spec"]["failurePolicy"] == "Fail" and binding["spec"]["validationActions"] == ["Deny"]
    verdict = _admit(policy, "CREATE", agent)
    assert verdict is None if refused is None else (verdict or "").startswith(refused), verdict
    # Changing a job's agent to it is the same; any other update of a job passes (the operator must be
    # able to remove the finalizers of a job admitted before a profile narrowed).
    assert _admit(policy, "UPDATE", agent, old_agent={"profile": "script"}) == verdict
    assert _admit(policy, "UPDATE", agent, old_agent=agent) is None


@pytest.mark.real_only
@needs_helm
def test_the_api_server_enforces_the_charts_job_inputs_policy(crds, kubectl, kubeconfig, namespace, tmp_path) -> None:
    """The rendered policy on kube-apiserver (bound to this test's namespace only, so that other tests on the
    server are untouched): a job with arguments its profile does not allow is refused, naming the field."""
    policy, binding = _job_inputs_policy(TWO_POOLS, tmp_path)
    name = f"gf-job-inputs-{uuid.uuid4().hex[:6]}"
    policy["metadata"]["name"] = binding["metadata"]["name"] = binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    group = "admissionregistration.k8s.io"
    version = "v1" if _serves_v1(kubectl) else "v1beta1"  # as the chart picks it (1.28: v1beta1)
    for doc in (policy, binding):
        doc["apiVersion"] = f"{group}/{version}"
    # A job admitted before the policy: later updates that leave spec.agent alone (the operator's
    # finalizers) must still pass, or it could never be deleted.
    early = _create(kubeconfig, _manifest(namespace, {"profile": "script", "args": ["--prompt-file", "/etc/shadow"]}))
    assert isinstance(early, dict), early
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    try:
        bad = {"profile": "script", "args": ["--prompt-file", "/etc/shadow"]}

        def refused() -> kubeclient.ApiError | None:
            created = _create(kubeconfig, _manifest(namespace, bad))
            return created if isinstance(created, kubeclient.ApiError) else None

        denial = wait_for(refused, timeout=60, message="the job-inputs policy to deny")
        assert denial.status == 422 and "spec.agent.args[0]: not an argument that agent profile script allows" in denial.message
        assert isinstance(_create(kubeconfig, _manifest(namespace, {"profile": "script", "args": ["--exit", "3"]})), dict)
        env = _create(kubeconfig, _manifest(namespace, {"profile": "script", "env": [{"name": "ANTHROPIC_BASE_URL", "value": "x"}]}))
        assert isinstance(env, kubeclient.ApiError) and "spec.agent.env[0].name: ANTHROPIC_BASE_URL is not" in env.message
        many = ["--exit", "255", "--hang"] * 21  # 63 arguments, every one allowed: within the CEL cost budget
        assert isinstance(_create(kubeconfig, _manifest(namespace, {"profile": "script", "args": many})), dict)
        job = ["agentjob", early["metadata"]["name"], "-n", namespace, "--type", "merge", "-p"]
        kubectl("patch", *job, '{"metadata": {"finalizers": ["gigafactory.dev/cleanup"], "labels": {"x": "y"}}}')
        kubectl("patch", *job, '{"metadata": {"finalizers": null}}')
        changed = kubectl("patch", *job, '{"spec": {"agent": {"args": ["--prompt-file", "/etc/passwd"]}}}', check=False)
        assert changed.returncode != 0 and "spec.agent.args[0]" in changed.stderr, changed.stderr
    finally:
        kubectl("delete", f"validatingadmissionpolicybindings.{version}.{group}", name, "--ignore-not-found", check=False)
        kubectl("delete", f"validatingadmissionpolicies.{version}.{group}", name, "--ignore-not-found", check=False)


def _serves_v1(kubectl) -> bool:
    result = kubectl("get", "--raw", "/apis/admissionregistration.k8s.io/v1", check=False)
    return result.returncode == 0 and "validatingadmissionpolicies" in result.stdout
