"""The embedded API server's sustained create + merge-patch rate: .venv/bin/python benchmarks/apiserver.py

Starts a server in-process (its own thread), then from one client creates N ConfigMaps and
merge-patches each once, reporting pairs per second — with aiohttp (concurrent, one session)
and with the official synchronous `kubernetes` client (sequential).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import time

import aiohttp
import kubernetes

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "localcluster" / "src"))  # also when not installed
from localcluster import serving  # noqa: E402


async def _aiohttp_pairs(url: str, count: int, namespace: str, concurrency: int) -> float:
    headers = {"Content-Type": "application/json"}
    patch_headers = {"Content-Type": "application/merge-patch+json"}
    base = f"{url}/api/v1/namespaces/{namespace}/configmaps"
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def pair(i: int) -> None:
            async with semaphore:
                body = {"metadata": {"name": f"cm-{i}", "labels": {"bench": "yes"}}, "data": {"i": str(i)}}
                async with session.post(base, data=json.dumps(body), headers=headers) as response:
                    assert response.status == 201, await response.text()
                async with session.patch(f"{base}/cm-{i}", data=json.dumps({"data": {"patched": "yes"}}),
                                         headers=patch_headers) as response:
                    assert response.status == 200, await response.text()
        started = time.perf_counter()
        await asyncio.gather(*(pair(i) for i in range(count)))
        return count / (time.perf_counter() - started)


def _sync_pairs(kubeconfig: str, count: int, namespace: str) -> float:
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    started = time.perf_counter()
    for i in range(count):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm-{i}"}, "data": {"i": str(i)}})
        core.patch_namespaced_config_map(f"cm-{i}", namespace, {"data": {"patched": "yes"}})
    rate = count / (time.perf_counter() - started)
    client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with serving.running() as srv, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = str(srv.write_kubeconfig(f"{tmp}/kubeconfig"))
        for ns in ("bench-aiohttp", "bench-sync"):
            srv.call(srv.local.apply, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        rate = asyncio.run(_aiohttp_pairs(srv.url, args.objects, "bench-aiohttp", args.concurrency))
        print(f"aiohttp, {args.concurrency} concurrent: {rate:.0f} create+merge-patch pairs/s "
              f"({args.objects} objects)")
        rate = _sync_pairs(kubeconfig, args.objects, "bench-sync")
        print(f"kubernetes client, sequential: {rate:.0f} create+merge-patch pairs/s ({args.objects} objects)")


if __name__ == "__main__":
    main()
