"""What the runner's model gateway adds to one model request on loopback.

    .venv/bin/python benchmarks/gateway.py               # 2,000 requests each way
    .venv/bin/python benchmarks/gateway.py --quick       # 50: the smoke run

An upstream on 127.0.0.1 answers every `POST /v1/messages` with a short Messages API stream (SSE, usage
in message_start and message_delta), at once. One client sends the same streamed request, one at a
time, straight to the upstream and then through the gateway (token check, forwarding with the pool's
key, the stream passed through chunk by chunk and metered). The figure is the difference of the
medians (p50) and of the 99th percentiles of the full request time (until the stream's end).
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

from gigafactory.runner import gateway

EVENTS = [
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                            "model": "bench", "content": [], "stop_reason": None,
                                                            "usage": {"input_tokens": 1200, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    *[("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word "}})] * 20,
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}}),
    ("message_stop", {"type": "message_stop"}),
]
STREAM = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in EVENTS).encode()
REQUEST = {"model": "bench", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "x" * 4000}]}


async def upstream_app(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(STREAM)
    await response.write_eof()
    return response


async def timed(client: aiohttp.ClientSession, url: str, key: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with client.post(url, json=REQUEST, headers={"x-api-key": key}) as response:
            await response.read()
            assert response.status == 200, response.status
        times.append(time.perf_counter() - start)
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(n: int) -> dict[str, Any]:
    app = web.Application()
    app.router.add_post("/v1/messages", upstream_app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gw = await gateway.Gateway({"anthropic": gateway.Upstream("anthropic", f"http://127.0.0.1:{port}", "pool-key")}).start()
    session = gw.open(gateway.Limits(), lambda why: None)
    try:
        async with aiohttp.ClientSession() as client:
            await timed(client, f"http://127.0.0.1:{port}/v1/messages", "pool-key", 20)  # warm both paths
            await timed(client, f"{gw.url}/anthropic/v1/messages", session.token, 20)
            direct, via = [], []
            for _ in range(4):  # interleaved rounds: a busy moment of the machine hits both alike
                direct += await timed(client, f"http://127.0.0.1:{port}/v1/messages", "pool-key", n // 4)
                via += await timed(client, f"{gw.url}/anthropic/v1/messages", session.token, n // 4)
    finally:
        await gw.close()
        await runner.cleanup()
    counted = session.summary().get("bench", {})
    return {
        "requests": len(via),
        "direct_p50_ms": statistics.median(direct) * 1000, "gateway_p50_ms": statistics.median(via) * 1000,
        "added_p50_ms": (statistics.median(via) - statistics.median(direct)) * 1000,
        "added_p99_ms": (_percentile(via, 0.99) - _percentile(direct, 0.99)) * 1000,
        "counted_tokens": counted.get("input", 0) + counted.get("output", 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args(argv)
    figures = asyncio.run(run(50 if args.quick else args.n))
    for key, value in figures.items():
        print(f"{key:>16}: {value:.2f}" if isinstance(value, float) else f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
