"""The client over HTTP while its credentials change under it: one retry after a 401 with credentials
read again (token file, exec plugin), no retry when there is nothing new, one plugin run for many
failed requests, and watches that reconnect with the new token. A small server here holds the set of
tokens it accepts and counts what it was sent; the embedded server's own token check (dev mode) is
rotated too. The real kube-apiserver, with revoked ServiceAccount tokens, is in
tests/chart/test_credentials_rotation.py."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import pathlib
import socket
import sys
from collections.abc import AsyncIterator

import pytest
import yaml
from aiohttp import web

from gigafactory import kubeclient
import localcluster
from tests.unit.test_kubeauth import Plugin, kubeconfig as write_kubeconfig

pytestmark = pytest.mark.timeout(60)
ROOT = pathlib.Path(__file__).resolve().parents[3]


class Server:
    """Accepts the tokens in `valid`; counts requests per token; a watch sends what `events` holds
    (one event per connection, then ends the stream, as a server does at its timeout)."""

    def __init__(self) -> None:
        self.valid: set[str] = {"token-1"}
        self.seen: collections.Counter[str] = collections.Counter()
        self.bodies: list[dict] = []
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.url = ""

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen[token] += 1
        return token in self.valid

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "Unauthorized",
                                      "reason": "Unauthorized", "code": 401}, status=401)
        if request.method == "POST":
            self.bodies.append(await request.json())
            return web.json_response(self.bodies[-1], status=201)
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            event = await self.events.get()
            await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        if request.path.endswith("/configmaps"):
            return web.json_response({"kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": []})
        return web.json_response({"kind": "Namespace", "metadata": {"name": "default"}})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Server"]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)  # a watch waiting for its event ends at once
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            yield self
        finally:
            await runner.cleanup()


@pytest.fixture()
async def server() -> AsyncIterator[Server]:
    async with Server().running() as srv:
        yield srv


NS = kubeclient.NAMESPACES


async def test_a_rotated_token_file_is_read_after_a_401_and_the_request_retried_once(server, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("token-1")
    path = write_kubeconfig(tmp_path / "kubeconfig", {"tokenFile": str(token)}, server=server.url)
    async with kubeclient.Client.from_kubeconfig(path) as client:
        await client.get(NS, "default")
        # Revoked and replaced: the server takes only the new token, the file holds it (well before
        # the minute after which it would be read anyway).
        server.valid = {"token-2"}
        token.write_text("token-2")
        await client.get(NS, "default")
        assert server.seen == {"token-1": 2, "token-2": 1}  # one 401, then the retry with the new token
        # A write is retried with its body too (a 401 is answered before anything is done).
        server.valid = {"token-3"}
        token.write_text("token-3")
        await client.create(kubeclient.CONFIGMAPS, {"metadata": {"name": "cm"}}, namespace="default")
        assert [b["metadata"]["name"] for b in server.bodies] == ["cm"]


async def test_a_401_with_nothing_new_to_try_is_not_retried(server, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("token-1")
    path = write_kubeconfig(tmp_path / "kubeconfig", {"tokenFile": str(token)}, server=server.url)
    async with kubeclient.Client.from_kubeconfig(path) as client:
        await client.get(NS, "default")
        server.valid = set()  # revoked, and no new token anywhere
        with pytest.raises(kubeclient.Unauthorized):
            await client.get(NS, "default")
        assert server.seen["token-1"] == 2  # the first request and the failed one: no second try
    static = write_kubeconfig(tmp_path / "static", {"token": "token-1"}, server=server.url)
    async with kubeclient.Client.from_kubeconfig(static) as client:
        with pytest.raises(kubeclient.Unauthorized):
            await client.get(NS, "default")
        assert server.seen["token-1"] == 3  # a token written into the kubeconfig: nothing to re-read


async def test_many_requests_refused_at_once_share_one_plugin_run(server, tmp_path) -> None:
    plugin = Plugin(tmp_path)
    plugin.token.write_text("token-1")
    path = write_kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}, server=server.url)
    async with kubeclient.Client.from_kubeconfig(path) as client:
        await asyncio.gather(*(client.get(NS, "default") for _ in range(10)))
        assert plugin.count() == 1
        server.valid = {"token-2"}
        plugin.token.write_text("token-2")
        await asyncio.gather(*(client.get(NS, "default") for _ in range(30)))
        assert plugin.count() == 2  # not 30: the first 401 renews, the others retry with its result
        assert server.seen["token-2"] == 30


async def test_a_plugin_that_fails_surfaces_as_unauthorized(server, tmp_path) -> None:
    plugin = Plugin(tmp_path)
    (plugin.dir / "fail").touch()
    path = write_kubeconfig(tmp_path / "kubeconfig", {"exec": plugin.spec()}, server=server.url)
    async with kubeclient.Client.from_kubeconfig(path) as client:
        with pytest.raises(kubeclient.Unauthorized, match="cloud auth login"):
            await client.get(NS, "default")
    assert not server.seen  # nothing was sent without credentials


async def test_an_informer_reconnects_with_the_new_token(server, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("token-1")
    path = write_kubeconfig(tmp_path / "kubeconfig", {"tokenFile": str(token)}, server=server.url)
    seen: list[str] = []
    got = asyncio.Event()

    def handler(kind: str, obj: dict) -> None:
        seen.append(obj["metadata"]["name"])
        got.set()

    def cm(name: str, version: str) -> dict:
        return {"type": "ADDED", "object": {"metadata": {"name": name, "namespace": "default", "resourceVersion": version}}}

    async with kubeclient.Client.from_kubeconfig(path) as client:
        informer = kubeclient.Informer(client, kubeclient.CONFIGMAPS, namespace="default", handler=handler, retry_delay=0.05)
        async with informer.running():
            await server.events.put(cm("before", "2"))
            await asyncio.wait_for(got.wait(), 10)
            got.clear()
            # The stream ended (its timeout); meanwhile the token was revoked and the file rotated: the
            # reconnect gets a 401, reads the file, and watches on with the new token.
            server.valid = {"token-2"}
            token.write_text("token-2")
            await server.events.put(cm("after", "3"))
            await asyncio.wait_for(got.wait(), 10)
    assert seen == ["before", "after"]
    assert server.seen["token-2"] >= 1


def test_the_embedded_server_token_rotates_under_a_running_client(tmp_path) -> None:
    """Dev mode's server checks its bearer token (localcluster/guarding.py); change it while a client
    with a token file runs: writes and reads go on once the file holds the new token."""
    token = tmp_path / "token"
    with localcluster.running(token=localcluster.new_token(), crd_dirs=[]) as srv:
        srv.write_kubeconfig(tmp_path / "kubeconfig")
        config = yaml.safe_load((tmp_path / "kubeconfig").read_text())
        user = config["users"][0]["user"]
        token.write_text(user.pop("token"))
        user["tokenFile"] = str(token)
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        os.chmod(tmp_path / "kubeconfig", 0o600)

        async def go() -> list[str]:
            async with kubeclient.Client.from_kubeconfig(str(tmp_path / "kubeconfig")) as client:
                await client.create(kubeclient.CONFIGMAPS, {"metadata": {"name": "one"}}, namespace="default")
                fresh = localcluster.new_token()
                srv.local.server.token = fresh  # the old token is refused from now on
                token.write_text(fresh)
                await client.create(kubeclient.CONFIGMAPS, {"metadata": {"name": "two"}}, namespace="default")
                items, _ = await client.list(kubeclient.CONFIGMAPS, namespace="default")
                return sorted(i["metadata"]["name"] for i in items)

        assert asyncio.run(go()) == ["one", "two"]


def _with_token_file(kubeconfig_path: pathlib.Path, token_file: pathlib.Path, target: pathlib.Path) -> str:
    config = yaml.safe_load(kubeconfig_path.read_text())
    user = config["users"][0]["user"]
    token_file.write_text(user.pop("token"))
    user["tokenFile"] = str(token_file)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(target)


@pytest.mark.timeout(240)
def test_operator_and_runner_on_the_embedded_server_carry_on_after_its_token_changes(tmp_path) -> None:
    """Dev mode's server with its token check: the real operator and a real runner, each with a token
    file; the server's token is replaced (the old one refused from then on) and the files rewritten,
    well within the minute after which they would be read anyway: each process meets a 401, reads its
    file again and retries. A second job runs end to end.
    The same on kube-apiserver with revoked ServiceAccount tokens: tests/chart/test_credentials_rotation.py."""
    from tests import gitrepos
    from tests.conftest import wait_for
    from tests.integration.operator import stubs
    from tests.integration.runner.test_runner import RunnerProcess

    remote = gitrepos.make_remote(tmp_path)
    with localcluster.running(token=localcluster.new_token(), crd_dirs=[str(ROOT / "crds")]) as srv:
        srv.write_kubeconfig(tmp_path / "server.kubeconfig")
        files = {who: tmp_path / f"{who}.token" for who in ("admin", "operator", "runner")}
        configs = {who: _with_token_file(tmp_path / "server.kubeconfig", file, tmp_path / f"{who}.kubeconfig")
                   for who, file in files.items()}
        api = stubs.Api(configs["admin"])
        api.call("create", kubeclient.NAMESPACES, {"metadata": {"name": "team"}})
        api.create_factory("pool", "team")
        runner = RunnerProcess(configs["runner"], tmp_path, pod="runner-0", namespace="team", factory="pool").start()

        def finished(name: str) -> dict | None:
            status = api.job("team", name).get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

        try:
            with stubs.operators(configs["operator"], tmp_path) as (operator,):
                api.create_job("team", "before", repo={"url": str(remote)})
                assert wait_for(lambda: finished("before"), timeout=60, message="the first job")["phase"] == "Succeeded"
                fresh = localcluster.new_token()
                srv.local.server.token = fresh  # every old token refused from here on
                for file in files.values():
                    file.write_text(fresh)
                api.create_job("team", "after", repo={"url": str(remote)})
                status = wait_for(lambda: finished("after"), timeout=60, message="the job after the change")
                assert status["phase"] == "Succeeded", status
                operator_log = operator.logs()
        except BaseException:
            sys.stderr.write(f"--- runner ---\n{runner.log.read_text(errors='replace')[-4000:]}\n")
            raise
        finally:
            runner.stop()
        assert "API credentials renewed" in operator_log
        assert "API credentials renewed" in runner.log.read_text(errors="replace")
