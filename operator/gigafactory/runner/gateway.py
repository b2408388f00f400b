"""The model gateway: the agent talks to a model through the runner, never with the real API key.

Each attempt gets a token of its own and the gateway's loopback base URLs (`/anthropic` for the
Messages API, `/openai/v1` for the OpenAI APIs) in place of the endpoint and key variables the CLIs read.
The gateway checks the token, forwards the request to the pool's upstream with the pool's key, streams
the answer back as it arrives, and counts each answer's input and output tokens per model from the
usage figures the APIs send (SSE events or the JSON body). An attempt that crosses its limits
(`spec.agent.limits`: requests, tokens, cost at the binding's prices) is refused further requests (HTTP 429, the API's own error
shape) and stopped by the runner with reason BudgetExceeded.

Usage is read with bounded buffers: SSE lines longer than MAX_LINE and JSON bodies longer than
MAX_METERED_BODY are passed through uncounted rather than held in memory.
"""

import contextlib
import dataclasses
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from gigafactory import config
from gigafactory.models import prices

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 32 * 1024 * 1024
MAX_LINE = 1024 * 1024
MAX_METERED_BODY = 8 * 1024 * 1024
# Headers never forwarded in either direction: hop-by-hop ones, the agent's credentials (replaced by
# the pool's), and lengths aiohttp recomputes.
_DROP_REQUEST = frozenset({"host", "authorization", "x-api-key", "content-length", "connection", "keep-alive",
                           "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "accept-encoding"})
_DROP_RESPONSE = frozenset({"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding"})
# What an agent may call with the pool's key: the model calls the gateway meters, and model listings.
# Nothing else (batches, files, fine-tuning, admin and organisation APIs): those would spend or reach
# beyond the job without being counted.
ALLOWED = {
    "anthropic": {("POST", "v1/messages"), ("POST", "v1/messages/count_tokens"), ("GET", "v1/models")},
    "openai": {("POST", "v1/responses"), ("POST", "v1/chat/completions"), ("GET", "v1/models")},
}


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Where one API family goes: base URL (no trailing slash) and the pool's key."""

    kind: str  # "anthropic" (x-api-key) or "openai" (Authorization: Bearer)
    base_url: str
    key: str


@dataclasses.dataclass
class Limits:
    requests: int | None = None
    tokens: int | None = None  # input + output, summed over every model
    cost: float | None = None  # estimated, at `prices` (the binding's copy of the factory's spec.prices)
    prices: Sequence[Mapping[str, Any]] = ()


@dataclasses.dataclass
class ModelUsage:
    input: int = 0
    output: int = 0
    requests: int = 0


class Session:
    """One attempt's access: its token, its limits, what it used, and what to do when it is over."""

    def __init__(self, token: str, limits: Limits, on_exceeded: Callable[[str], None]) -> None:
        self.token = token
        self.limits = limits
        self.on_exceeded = on_exceeded
        self.usage: dict[str, ModelUsage] = {}
        self.requests = 0
        self.exceeded: str | None = None
        self.cost = 0.0

    @property
    def tokens(self) -> int:
        return sum(u.input + u.output for u in self.usage.values())

    def count(self, model: str, input_tokens: int, output_tokens: int) -> None:
        usage = self.usage.setdefault(model or "unknown", ModelUsage())
        usage.input += input_tokens
        usage.output += output_tokens
        usage.requests += 1
        if self.limits.tokens is not None and self.tokens >= self.limits.tokens:
            self.exceed(f"{self.tokens} tokens used, the limit is {self.limits.tokens}")
        if self.limits.cost is not None:
            price = prices.find(self.limits.prices, model or "unknown")
            if price is None:
                # A model the factory set no price for: its spending cannot be counted against the limit,
                # and a limit nobody counts is not a limit.
                self.exceed(f"model {(model or 'unknown')[:256]!r} has no price on this factory, so spec.agent.limits.cost cannot count it")
                return
            self.cost += prices.cost(input_tokens=input_tokens, output_tokens=output_tokens, price=price)
            if self.cost >= self.limits.cost:
                self.exceed(f"an estimated {self.cost:.6f} spent, the limit is {self.limits.cost}")

    def exceed(self, why: str) -> None:
        if self.exceeded is None:
            self.exceeded = why
            self.on_exceeded(why)

    def summary(self) -> dict[str, dict[str, int]]:
        return {model: dataclasses.asdict(usage) for model, usage in sorted(self.usage.items())}


class Meter:
    """Reads the usage of one answer as it streams by: SSE `data:` lines or a JSON body."""

    def __init__(self, content_type: str) -> None:
        self.sse = content_type.startswith("text/event-stream")
        self.buffer = bytearray()
        self.skipping = False  # inside an SSE line longer than MAX_LINE
        self.model = ""
        self.input = 0
        self.output = 0

    def feed(self, chunk: bytes) -> None:
        if not self.sse:
            if len(self.buffer) + len(chunk) <= MAX_METERED_BODY:
                self.buffer += chunk
            else:
                self.buffer.clear()
                self.skipping = True
            return
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    self.buffer.clear()
                    self.skipping = True
                return
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 1]
            if self.skipping:
                self.skipping = False
                continue
            if line.startswith(b"data:"):
                self._read(line[5:].strip())

    def finish(self) -> None:
        if not self.sse and not self.skipping:
            self._read(bytes(self.buffer))
        self.buffer.clear()

    def _read(self, raw: bytes) -> None:
        if not raw or raw == b"[DONE]":
            return
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        # Messages API: message_start carries the message (model, input usage), message_delta the output
        # so far; Responses API: response.completed carries the response; Chat Completions: the body or
        # the last chunk carries `usage`.
        for holder in (event, event.get("message"), event.get("response")):
            if not isinstance(holder, dict):
                continue
            if isinstance(holder.get("model"), str) and holder["model"]:
                self.model = holder["model"]
            usage = holder.get("usage")
            if isinstance(usage, dict):
                count = prices.token_count
                self.input = max(self.input, count(usage.get("input_tokens", usage.get("prompt_tokens")))
                                 + count(usage.get("cache_creation_input_tokens")) + count(usage.get("cache_read_input_tokens")))
                self.output = max(self.output, count(usage.get("output_tokens", usage.get("completion_tokens"))))


def _error(kind: str, status: int, kind_name: str, message: str) -> web.Response:
    """An error in the shape the agent's API answers with, so the CLI shows it as the real one would."""
    if kind == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": kind_name, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind_name, "param": None, "code": kind_name}}
    return web.json_response(body, status=status)


class Gateway:
    """One per runner, on loopback; sessions come and go with attempts."""

    def __init__(self, upstreams: Mapping[str, Upstream], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstreams = dict(upstreams)
        self.host, self.port = host, port
        self.sessions: dict[str, Session] = {}
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "Gateway":
        app = web.Application(client_max_size=MAX_REQUEST_BODY)
        app.router.add_route("*", "/{api}/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        # No timeout on the whole answer (an agent's stream may last minutes); connecting is bounded.
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                                             auto_decompress=False)
        return self

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def open(self, limits: Limits, on_exceeded: Callable[[str], None]) -> Session:
        session = Session(f"gf-{secrets.token_urlsafe(32)}", limits, on_exceeded)
        self.sessions[session.token] = session
        return session

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.token, None)

    def env(self, session: Session) -> dict[str, str]:
        """What the agent gets instead of the real endpoints and keys."""
        env: dict[str, str] = {}
        if "anthropic" in self.upstreams:
            env.update(ANTHROPIC_BASE_URL=f"{self.url}/anthropic", ANTHROPIC_API_KEY=session.token)
        if "openai" in self.upstreams:
            env.update(OPENAI_BASE_URL=f"{self.url}/openai/v1", OPENAI_API_BASE=f"{self.url}/openai/v1",
                       OPENAI_API_KEY=session.token)
        return env

    def _session(self, request: web.Request) -> Session | None:
        token = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization") or ""
        if not token and bearer.lower().startswith("bearer "):
            token = bearer[7:].strip()
        session = self.sessions.get(token)
        return session if session is not None and secrets.compare_digest(session.token, token) else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        upstream = self.upstreams.get(request.match_info["api"])
        if upstream is None:
            return _error("openai", 404, "not_found_error", f"no model API at /{request.match_info['api']}")
        session = self._session(request)
        if session is None:
            return _error(upstream.kind, 401, "authentication_error", "invalid x-api-key or bearer token")
        if session.limits.requests is not None and session.requests >= session.limits.requests:
            session.exceed(f"{session.requests} requests made, the limit is {session.limits.requests}")
        if session.exceeded is not None:
            return _error(upstream.kind, 429, "budget_exceeded", f"this job's model budget is spent: {session.exceeded}")
        path = request.match_info["path"]
        if (request.method, path) not in ALLOWED[upstream.kind] and not (
                request.method == "GET" and path.startswith("v1/models/") and "/" not in path[len("v1/models/"):]):
            return _error(upstream.kind, 404, "not_found_error", f"{request.method} /{path} is not a model call this gateway forwards")
        session.requests += 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        if upstream.kind == "anthropic":
            headers["x-api-key"] = upstream.key
        else:
            headers["Authorization"] = f"Bearer {upstream.key}"
        target = f"{upstream.base_url}/{path}"
        if request.query_string:
            target += f"?{request.query_string}"
        requested_model = ""
        with contextlib.suppress(ValueError, AttributeError):
            requested_model = str(json.loads(body or b"{}").get("model") or "")
        assert self._client is not None
        try:
            async with self._client.request(request.method, target, headers=headers, data=body) as answer:
                response = web.StreamResponse(status=answer.status, headers={
                    k: v for k, v in answer.headers.items() if k.lower() not in _DROP_RESPONSE})
                await response.prepare(request)
                meter = Meter(answer.headers.get("content-type", ""))
                try:
                    async for chunk in answer.content.iter_any():
                        meter.feed(chunk)
                        await response.write(chunk)
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                    # The upstream cut the stream: cut the agent's too (no clean end it would take for a
                    # whole answer), as the real API's cut would reach it.
                    logger.info("model gateway: the upstream cut its answer: %s", exc)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                finally:
                    # What was counted before a cut stream is kept: the tokens were spent all the same.
                    meter.finish()
                    if meter.input or meter.output:
                        session.count(meter.model or requested_model, meter.input, meter.output)
                await response.write_eof()
                return response
        except aiohttp.ClientError as exc:
            logger.warning("model gateway: %s %s failed: %s", request.method, target, exc)
            return _error(upstream.kind, 502, "api_error", f"the model endpoint could not be reached: {type(exc).__name__}")


def from_settings(settings: config.RunnerSettings) -> dict[str, Upstream]:
    """The upstreams a runner's settings configure: only those with a key."""
    upstreams = {}
    for kind, url, key in (("anthropic", settings.anthropic_base_url, settings.anthropic_api_key),
                           ("openai", settings.openai_base_url, settings.openai_api_key)):
        if key is not None and key.get_secret_value():
            upstreams[kind] = Upstream(kind, url.rstrip("/"), key.get_secret_value())
    return upstreams
