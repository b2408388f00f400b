"""The real agent CLIs, end to end: Claude Code, Codex and Aider, each run by the real runner (its
shipped profile from profiles.yaml) for a job the real operator scheduled, against the scripted model
server on loopback (tests/agents/modelserver.py). The pushed branch must hold the scripted change,
`status.result.summary` the scripted final answer, and the server must have seen every request it
expected, with the right model and key, and tool results that show the agent really ran its tools."""

import dataclasses
import json
import pathlib
import signal
import subprocess
import sys
import urllib.request

import git
import pytest
import yaml

from gigafactory.runner import executing, profiles
from tests.agents import install, modelserver
from tests.conftest import wait_for
from tests.integration.operator import stubs

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "sk-gigafactory-test-0123456789"  # what the scripted server accepts; no real key exists here
TASK = "Read the readme, write a greeting into a new file, then list the files."


@dataclasses.dataclass
class Agent:
    profile: str
    model: str
    models: set[str]  # every model the agent may ask for (Aider writes commit messages with a weak model)
    steps: int  # the scripted requests the agent must make (Aider reads and edits; it runs no command)


AGENTS = [
    pytest.param(Agent("claude-code", "claude-sonnet-4-5", {"claude-sonnet-4-5"}, 4), id="claude-code"),
    pytest.param(Agent("codex", "gpt-5-codex", {"gpt-5-codex"}, 4), id="codex"),
    pytest.param(Agent("aider", "openai/gpt-4o", {"gpt-4o", "gpt-4o-mini"}, 2), id="aider"),
]


class RunnerProcess(stubs.RunnerSubprocess):
    """`gigafactory runner` as a subprocess with the shipped profile of one agent."""

    def __init__(self, kubeconfig: str, tmp_path: pathlib.Path, *, namespace: str, factory: str, profile: str,
                 path: str, server: modelserver.ModelServer, via_gateway: bool = False) -> None:
        self.work_dir, self.log = tmp_path / "work", tmp_path / "runner.log"
        shipped = yaml.safe_load(profiles.DEFAULT_FILE.read_text())["profiles"][profile]
        gateway_port = stubs.free_port()
        if profile == "codex":
            # Codex takes another endpoint from its config, not from a variable: the pool's profile names a
            # model provider (the Responses API over HTTP) with -c (its $HOME is private in the sandbox).
            openai_url = f"http://127.0.0.1:{gateway_port}/openai/v1" if via_gateway else f"{server.url}/v1"
            provider = ['model_provider="gigafactory"', 'model_providers.gigafactory.name="Gigafactory test model"',
                        f'model_providers.gigafactory.base_url="{openai_url}"',
                        'model_providers.gigafactory.env_key="OPENAI_API_KEY"', 'model_providers.gigafactory.wire_api="responses"']
            shipped["argv"][2:2] = [part for setting in provider for part in ("-c", setting)]
        profiles_file = tmp_path / "profiles.yaml"
        profiles_file.write_text(yaml.safe_dump({"profiles": {profile: shipped}}))
        home = tmp_path / "home"
        home.mkdir()
        if via_gateway:
            # The pool's key is in the runner's settings alone; each agent gets a token for the gateway.
            endpoints = {"GIGAFACTORY_RUNNER_ANTHROPIC_API_KEY": KEY, "GIGAFACTORY_RUNNER_ANTHROPIC_BASE_URL": server.url,
                         "GIGAFACTORY_RUNNER_OPENAI_API_KEY": KEY, "GIGAFACTORY_RUNNER_OPENAI_BASE_URL": server.url,
                         "GIGAFACTORY_RUNNER_GATEWAY_PORT": str(gateway_port)}
        else:
            # The endpoint and key each CLI reads (the agent inherits the runner's environment).
            endpoints = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": KEY,
                         "OPENAI_API_BASE": f"{server.url}/v1", "OPENAI_API_KEY": KEY}
        self.env = {
            "PATH": path, "HOME": str(home), "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT / "operator"), **endpoints,
            # The agent sandbox shows the CLIs' install dir (outside /usr) read-only.
            "GIGAFACTORY_RUNNER_SANDBOX_READ_ONLY_PATHS": json.dumps([str(install.CACHE)]),
            "GIGAFACTORY_RUNNER_POD_NAME": "runner-0", "GIGAFACTORY_RUNNER_NAMESPACE": namespace,
            "GIGAFACTORY_RUNNER_FACTORY": factory, "GIGAFACTORY_RUNNER_WORK_DIR": str(self.work_dir),
            "GIGAFACTORY_RUNNER_PROFILES_FILE": str(profiles_file), "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
            "GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS": "6", "GIGAFACTORY_RUNNER_BINDING_LEASE_SECONDS": "6",
            "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": "1",
        }
        self.kubeconfig = kubeconfig

    def stop(self, sig: int = signal.SIGTERM) -> None:
        super().stop(sig)
        executing.kill_orphans(self.work_dir / "agents")


@pytest.mark.parametrize("via_gateway", [pytest.param(False, id="direct"), pytest.param(True, id="gateway")])
@pytest.mark.parametrize("agent", AGENTS)
def test_a_real_agent_runs_a_job_end_to_end(api, kubeconfig, namespace, tmp_path, remote, agent_path, agent, via_gateway) -> None:
    """Direct: the agent has the endpoint and key from the runner's environment. Gateway: the runner's
    model gateway between them, the key in the runner's settings only; the model sees the same key."""
    factory = stubs.unique("fac")
    # Estimates per million tokens: every model the script answers as is priced, so the attempt's cost is known.
    prices = [{"model": "*", "inputPerMillion": 3, "outputPerMillion": 15}]
    api.create_factory(factory, namespace, slotsPerPod=1, agents=[agent.profile], prices=prices)
    with modelserver.ModelServer(key=KEY, models=agent.models) as server, \
            stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="60"):
        runner = RunnerProcess(kubeconfig, tmp_path, namespace=namespace, factory=factory, profile=agent.profile,
                               path=agent_path, server=server, via_gateway=via_gateway).start()
        try:
            api.create_job(namespace, "greet", repo={"url": str(remote)}, task={"prompt": TASK},
                           agent={"profile": agent.profile, "args": ["--model", agent.model]}, retry={"maxAttempts": 1})

            def finished() -> dict | None:
                status = api.job(namespace, "greet").get("status") or {}
                return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

            status = wait_for(finished, timeout=stubs.within(60, slack=60), message="the agent's job to finish")
        except BaseException:
            sys.stderr.write(f"--- runner log ---\n{runner.log.read_text(errors='replace')[-8000:]}\n")
            raise
        finally:
            runner.stop()
            api.call("delete", stubs.kubeclient.FACTORIES, factory)
    attempt = status["attempts"][-1]
    assert status["phase"] == "Succeeded", (attempt, runner.log.read_text(errors="replace")[-6000:])
    assert server.violations == []
    scripted = [request.step for request in server.requests if request.step is not None]
    assert server.answered and len(scripted) == agent.steps, scripted
    # The pushed branch holds exactly the scripted change, and the summary the agent's final answer.
    result = status["result"]
    assert result["branch"] == "agent/greet" and result["changedFiles"] == [modelserver.WRITE_FILE]
    pushed = git.Repo(remote).heads["agent/greet"].commit
    assert pushed.hexsha == result["commit"]
    assert (pushed.tree / modelserver.WRITE_FILE).data_stream.read().decode() == modelserver.WRITE_TEXT
    assert modelserver.ANSWER in result["summary"]
    # The agent asked for the model the job named, and the server counted what it answered.
    assert set(server.usage) <= agent.models and agent.model.split("/")[-1] in server.usage
    if via_gateway:  # the gateway counted per model exactly what the model's answers said, and it is on record
        counted = {model: dict(server.usage[model]) for model in sorted(server.usage)}
        assert f"model usage: {counted}" in runner.log.read_text(), counted
        # The fold priced each model at the factory's prices (copied into the binding), and summed them.
        costs = {model: round((used["input"] * 3 + used["output"] * 15) / 1_000_000, 6) for model, used in counted.items()}
        assert attempt["tokens"] == [{"model": model, "inputTokens": used["input"], "outputTokens": used["output"],
                                      "requests": used["requests"], "cost": costs[model]} for model, used in counted.items()]
        assert attempt["cost"] == pytest.approx(sum(costs.values()), abs=1e-6) and status["cost"] == attempt["cost"]
        shown = subprocess.run([sys.executable, "-m", "gigafactory.cli.main", "describe", "greet", "-n", namespace,
                                "--kubeconfig", kubeconfig], capture_output=True, text=True, cwd=ROOT, timeout=60)
        model, used = next(iter(counted.items()))
        assert f"tokens {model}: {used['input']} in, {used['output']} out, {used['requests']} requests" in shown.stdout, shown


def test_the_scripted_server_flags_an_agent_that_misbehaves() -> None:
    """The server's checks are real: a wrong key, a wrong model and a tool result that shows the tool
    did not run are each a violation."""
    with modelserver.ModelServer(key=KEY, models={"m"}) as server:
        body = {"model": "other", "max_tokens": 10, "tools": [{"name": n} for n in ("Read", "Write", "Bash")],
                "messages": [{"role": "user", "content": "go"},
                             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_gf0001", "name": "Read", "input": {}}]},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_gf0001", "content": "no such file"}]}]}
        request = urllib.request.Request(f"{server.url}/v1/messages", data=json.dumps(body).encode(),
                                         headers={"x-api-key": "wrong", "content-type": "application/json"})
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
    assert answer["stop_reason"] == "tool_use" and answer["usage"]["input_tokens"] > 0
    assert len(server.violations) == 3, server.violations
