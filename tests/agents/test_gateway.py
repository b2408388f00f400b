"""The runner's model gateway (runner/gateway.py): agents reach the model with a per-attempt token on
loopback, never the pool's key; the gateway forwards, streams, counts tokens per model, and stops an
attempt that crosses spec.agent.limits (Stopped, BudgetExceeded; the job fails, not retried)."""

import asyncio
import json
import pathlib
import sys

import aiohttp
import git
import pytest

from gigafactory.runner import gateway
from tests.agents import modelserver
from tests.agents.test_agents import RunnerProcess
from tests.conftest import wait_for
from tests.integration.operator import stubs

REAL_KEY = "sk-ant-pool-key-never-for-agents-42"
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


async def _call(url: str, token: str, body: dict, *, stream: bool = False) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/anthropic/v1/messages", json={**body, "stream": stream},
                               headers={"x-api-key": token, "anthropic-version": "2023-06-01"}) as response:
            return response.status, await response.read()


def test_the_gateway_forwards_with_the_pool_key_streams_and_counts() -> None:
    async def go(server: modelserver.ModelServer) -> None:
        gw = await gateway.Gateway({"anthropic": gateway.Upstream("anthropic", server.url, REAL_KEY)}).start()
        stops: list[str] = []
        try:
            session = gw.open(gateway.Limits(requests=3), stops.append)
            env = gw.env(session)
            assert env["ANTHROPIC_API_KEY"] == session.token != REAL_KEY
            assert env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:")
            # Not streamed, then streamed: both pass through whole, and both are counted.
            status, raw = await _call(gw.url, session.token, MESSAGES)
            assert status == 200 and json.loads(raw)["content"][0]["text"] == "Scripted side answer."
            status, raw = await _call(gw.url, session.token, MESSAGES, stream=True)
            assert status == 200 and raw.count(b"event: message_stop") == 1 and b"event: message_start" in raw
            assert session.summary() == {"claude-sonnet-4-5": {**{k: server.usage["claude-sonnet-4-5"][k] for k in ("input", "output")}, "requests": 2}}
            # A wrong token never reaches the model.
            status, raw = await _call(gw.url, "sk-ant-guess", MESSAGES)
            assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
            # Nor does anything but a model call, with a good token: batches, files, admin APIs.
            async with aiohttp.ClientSession() as client:
                for method, path in (("POST", "v1/messages/batches"), ("GET", "v1/files"), ("POST", "v1/organizations/x/api_keys"),
                                     ("GET", "v1/models/../../admin")):
                    async with client.request(method, f"{gw.url}/anthropic/{path}", headers={"x-api-key": session.token}) as answer:
                        assert answer.status == 404, (method, path, answer.status)
            # The third request is the last the limit allows; the fourth is refused and stops the attempt.
            assert (await _call(gw.url, session.token, MESSAGES))[0] == 200
            status, raw = await _call(gw.url, session.token, MESSAGES)
            assert status == 429 and json.loads(raw)["error"]["type"] == "budget_exceeded"
            assert len(stops) == 1 and "3 requests" in stops[0]
        finally:
            await gw.close()

    with modelserver.ModelServer(key=REAL_KEY) as server:
        asyncio.run(go(server))
        assert server.violations == []  # every request that reached it carried the pool's key
        assert len(server.requests) == 3


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
RATE_LIMITED = {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}}


def test_upstream_errors_reach_the_agent_as_sent_and_a_cut_stream_keeps_its_count() -> None:
    async def go(server: modelserver.ModelServer) -> None:
        gw = await gateway.Gateway({"anthropic": gateway.Upstream("anthropic", server.url, REAL_KEY)}).start()
        try:
            session = gw.open(gateway.Limits(), lambda why: None)
            server.faults += [("status", 529, OVERLOADED), ("status", 429, RATE_LIMITED), ("status", 500, {"type": "error"}),
                              ("cut", 3)]
            for code, error in ((529, OVERLOADED), (429, RATE_LIMITED), (500, {"type": "error"})):
                status, raw = await _call(gw.url, session.token, MESSAGES, stream=True)
                assert (status, json.loads(raw)) == (code, error)
            assert session.summary() == {}  # errors carry no usage: nothing counted
            # The stream is cut after message_start (its input tokens) and before message_delta.
            with pytest.raises(aiohttp.ClientPayloadError):
                await _call(gw.url, session.token, MESSAGES, stream=True)
            await asyncio.sleep(0)  # the gateway's side of the cut finishes its bookkeeping
            usage = wait_for(lambda: session.summary().get("claude-sonnet-4-5"), timeout=5, message="the cut stream's usage")
            assert usage["input"] == server.usage["claude-sonnet-4-5"]["input"] and usage["output"] == 1
            # And the next request goes through as usual.
            assert (await _call(gw.url, session.token, MESSAGES))[0] == 200
        finally:
            await gw.close()

    with modelserver.ModelServer(key=REAL_KEY) as server:
        asyncio.run(go(server))
        assert server.violations == []


def test_a_cut_stream_keeps_what_was_counted() -> None:
    meter = gateway.Meter("text/event-stream")
    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 70, "output_tokens": 1}}}
    meter.feed(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
    meter.feed(b"data: " + b"x" * (gateway.MAX_LINE + 10))  # a huge line is skipped, not buffered
    meter.feed(b"\ndata: {\"type\": \"message_delta\", \"usage\": {\"output_tokens\": 9}}\n")
    meter.feed(b"data: {\"type\": \"message_del")  # the stream is cut here
    meter.finish()
    assert (meter.model, meter.input, meter.output) == ("m", 70, 9)
    assert len(meter.buffer) == 0


SPY = """
import json, os, pathlib, urllib.request
env = dict(os.environ)
request = urllib.request.Request(env["ANTHROPIC_BASE_URL"] + "/v1/messages", method="POST",
    data=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"x-api-key": env["ANTHROPIC_API_KEY"], "content-type": "application/json"})
answer = json.load(urllib.request.urlopen(request))
# Every other process's environment it can read: in the sandbox (own pid namespace) not the runner's.
procs = {}
for entry in pathlib.Path("/proc").iterdir():
    try:
        procs[entry.name] = (entry / "environ").read_bytes().decode("utf-8", "replace")
    except OSError:
        pass
pathlib.Path("spy.json").write_text(json.dumps({"env": env, "answer": answer["content"][0]["text"], "procs": procs}))
"""


@pytest.fixture()
def gateway_fleet(api, kubeconfig, namespace, tmp_path, agent_path):
    """An operator and one runner whose settings hold the pool's key (its environment does not)."""
    factory = stubs.unique("fac")

    def start(profile: str, server: modelserver.ModelServer, extra_profiles: dict | None = None,
              readable: tuple[str, ...] = (), prices: list | None = None) -> RunnerProcess:
        api.create_factory(factory, namespace, slotsPerPod=1, agents=[profile], **({"prices": prices} if prices else {}))
        runner = RunnerProcess(kubeconfig, tmp_path, namespace=namespace, factory=factory, profile="claude-code",
                               path=agent_path, server=server)
        if extra_profiles:
            import yaml
            path = pathlib.Path(runner.env["GIGAFACTORY_RUNNER_PROFILES_FILE"])
            loaded = yaml.safe_load(path.read_text())
            loaded["profiles"].update(extra_profiles)
            path.write_text(yaml.safe_dump(loaded))
        for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_BASE"):
            runner.env.pop(name)
        runner.env.update(GIGAFACTORY_RUNNER_ANTHROPIC_API_KEY=REAL_KEY, GIGAFACTORY_RUNNER_ANTHROPIC_BASE_URL=server.url)
        shown = json.loads(runner.env["GIGAFACTORY_RUNNER_SANDBOX_READ_ONLY_PATHS"])
        runner.env["GIGAFACTORY_RUNNER_SANDBOX_READ_ONLY_PATHS"] = json.dumps([*shown, *readable])
        runners.append(runner.start())
        return runner

    runners: list[RunnerProcess] = []
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_CLAIM_TIMEOUT_SECONDS="60"):
        try:
            yield start
        except BaseException:
            for runner in runners:
                sys.stderr.write(f"--- runner log ---\n{runner.log.read_text(errors='replace')[-8000:]}\n")
            raise
        finally:
            for runner in runners:
                runner.stop()
            api.call("delete", stubs.kubeclient.FACTORIES, factory)


def _finished(api, namespace, name):
    def done():
        status = api.job(namespace, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    return wait_for(done, timeout=stubs.within(60, slack=60), message=f"job {name} to finish")


def test_the_agent_holds_a_token_never_the_key(api, namespace, remote, gateway_fleet, tmp_path) -> None:
    spy = tmp_path / "spy.py"  # a file: argv entries are templates, and the script's braces are not fields
    spy.write_text(SPY)
    with modelserver.ModelServer(key=REAL_KEY) as server:
        gateway_fleet("spy", server, {"spy": {"argv": ["{python}", str(spy)], "timeoutSeconds": 60}}, readable=(str(spy),))
        api.create_job(namespace, "spy", repo={"url": str(remote)}, agent={"profile": "spy"})
        status = _finished(api, namespace, "spy")
    attempt = status["attempts"][-1]
    assert status["phase"] == "Succeeded", (attempt["outcome"], attempt.get("reason"), attempt.get("message"))
    pushed = git.Repo(remote).heads["agent/spy"].commit
    seen = json.loads((pushed.tree / "spy.json").data_stream.read())
    assert seen["answer"] == "Scripted side answer."  # it reached the model, through the gateway
    assert REAL_KEY not in json.dumps(seen["env"])  # and never saw the key it was reached with,
    assert seen["procs"] and REAL_KEY not in json.dumps(seen["procs"])  # not even in another process's environ
    assert seen["env"]["ANTHROPIC_API_KEY"].startswith("gf-") and seen["env"]["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:")
    assert server.violations == [] and len(server.requests) == 1


def test_claude_code_through_the_gateway_and_a_limit_that_stops_it(api, namespace, remote, gateway_fleet) -> None:
    with modelserver.ModelServer(key=REAL_KEY, models={"claude-sonnet-4-5"}) as server:
        gateway_fleet("claude-code", server)
        api.create_job(namespace, "whole", repo={"url": str(remote)}, task={"prompt": "Greet"},
                       agent={"profile": "claude-code", "args": ["--model", "claude-sonnet-4-5"]})
        api.create_job(namespace, "capped", repo={"url": str(remote)}, task={"prompt": "Greet"},
                       agent={"profile": "claude-code", "args": ["--model", "claude-sonnet-4-5"], "limits": {"requests": 2}})
        whole, capped = _finished(api, namespace, "whole"), _finished(api, namespace, "capped")
    assert server.violations == []
    assert whole["phase"] == "Succeeded" and modelserver.ANSWER in whole["result"]["summary"], whole["attempts"][-1]
    # The capped job's agent got two answers (read, write); its third request was refused and it was
    # stopped: the job failed with BudgetExceeded, after one attempt.
    assert capped["phase"] == "Failed" and capped["reason"] == "BudgetExceeded", capped
    (attempt,) = capped["attempts"]
    assert (attempt["outcome"], attempt["reason"]) == ("Stopped", "BudgetExceeded")
    assert "2 requests" in attempt["message"]
    assert "agent/capped" not in [head.name for head in git.Repo(remote).heads]


def test_a_token_limit_counts_every_model_together() -> None:
    stops: list[str] = []
    session = gateway.Session("t", gateway.Limits(tokens=1000), stops.append)
    session.count("big", 600, 100)
    session.count("small", 200, 99)
    assert stops == []  # 999
    session.count("small", 1, 0)
    assert stops == ["1000 tokens used, the limit is 1000"] and session.exceeded == stops[0]
    session.count("small", 5, 5)  # an answer already on its way is still counted, the stop said once
    assert len(stops) == 1 and session.summary()["small"] == {"input": 206, "output": 104, "requests": 3}


PRICES = [{"model": "claude-sonnet-4*", "inputPerMillion": 3, "outputPerMillion": 15}]


def test_a_cost_limit_counts_at_the_binding_prices() -> None:
    stops: list[str] = []
    session = gateway.Session("t", gateway.Limits(cost=0.01, prices=PRICES), stops.append)
    session.count("claude-sonnet-4-5", 1000, 300)  # 0.003 + 0.0045
    assert stops == [] and session.cost == pytest.approx(0.0075)
    session.count("claude-sonnet-4-5", 500, 67)  # 0.0015 + 0.001005: 0.010005
    assert stops == ["an estimated 0.010005 spent, the limit is 0.01"]


def test_a_cost_limit_stops_a_model_without_a_price() -> None:
    stops: list[str] = []
    session = gateway.Session("t", gateway.Limits(cost=100, prices=PRICES), stops.append)
    session.count("gpt-4o", 10, 10)
    assert len(stops) == 1 and "'gpt-4o' has no price" in stops[0]
    # Without a cost limit an unpriced model is only counted.
    free = gateway.Session("t", gateway.Limits(tokens=10**6, prices=PRICES), stops.append)
    free.count("gpt-4o", 10, 10)
    assert len(stops) == 1


def test_claude_code_stopped_by_a_cost_limit(api, namespace, remote, gateway_fleet) -> None:
    """The factory's prices reach the runner through the binding; the gateway prices each answer and
    stops the agent once the estimate crosses spec.agent.limits.cost; the job's status shows the tokens
    and the estimated cost at the same prices."""
    with modelserver.ModelServer(key=REAL_KEY, models={"claude-sonnet-4-5"}) as server:
        # The scripted answers cost 100+ input and 20 output tokens each: at 3 and 15 a million, about
        # 0.0006 each; the limit lets the first answer through and stops the agent at the second.
        gateway_fleet("claude-code", server, prices=PRICES)
        api.create_job(namespace, "dear", repo={"url": str(remote)}, task={"prompt": "Greet"},
                       agent={"profile": "claude-code", "args": ["--model", "claude-sonnet-4-5"], "limits": {"cost": 0.001}})
        api.create_job(namespace, "nocap", repo={"url": str(remote)}, task={"prompt": "Greet"},
                       agent={"profile": "claude-code", "args": ["--model", "claude-sonnet-4-5"]})
        dear, nocap = _finished(api, namespace, "dear"), _finished(api, namespace, "nocap")
        usage = dict(server.usage)
    assert server.violations == []
    assert dear["phase"] == "Failed" and dear["reason"] == "BudgetExceeded", dear
    (attempt,) = dear["attempts"]
    assert (attempt["outcome"], attempt["reason"]) == ("Stopped", "BudgetExceeded")
    assert "the limit is 0.001" in attempt["message"]
    assert attempt["tokens"][0]["model"] == "claude-sonnet-4-5" and attempt["tokens"][0]["requests"] >= 1
    assert attempt["cost"] >= 0.001 and dear["cost"] == attempt["cost"]
    assert dear["tokens"] == attempt["tokens"][0]["inputTokens"] + attempt["tokens"][0]["outputTokens"]
    # The uncapped job ran whole; its cost is its tokens at the factory's prices, to the millionth.
    assert nocap["phase"] == "Succeeded", nocap["attempts"][-1]
    (used,) = nocap["attempts"][-1]["tokens"]
    assert used["cost"] == round((used["inputTokens"] * 3 + used["outputTokens"] * 15) / 1e6, 6) == nocap["cost"]
    assert sum(u["input"] + u["output"] for u in usage.values()) == dear["tokens"] + nocap["tokens"]


def test_a_cost_limit_on_a_factory_without_prices_is_refused(api, namespace, remote, gateway_fleet) -> None:
    with modelserver.ModelServer(key=REAL_KEY) as server:
        gateway_fleet("claude-code", server)
        api.create_job(namespace, "unpriced", repo={"url": str(remote)}, task={"prompt": "Greet"},
                       agent={"profile": "claude-code", "limits": {"cost": 1}})
        status = _finished(api, namespace, "unpriced")
    assert status["phase"] == "Failed" and status["attempts"][-1]["reason"] == "LimitsNotEnforced", status
    assert "spec.prices" in status["attempts"][-1]["message"] and server.requests == []
