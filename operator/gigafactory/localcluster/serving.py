"""Starting and stopping an embedded API server: in the current event loop, in a thread, as a CLI.

`start()` serves on 127.0.0.1 and returns a `LocalCluster` handle; `running()` is the same in a
background thread for synchronous code such as pytest fixtures.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import secrets
import threading
from typing import Any, Iterable, Iterator

import yaml
from aiohttp import web

from gigafactory.localcluster import guarding, handling, resources, server

CONTEXT = "gigafactory-local"


def read_manifests(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """All YAML documents in the given files and directories (directories: *.yaml, *.yml, *.json, sorted)."""
    documents = []
    for path in map(pathlib.Path, paths):
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if path.is_dir() else [path]
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "List":
                    documents.extend(doc.get("items") or [])
                elif isinstance(doc, dict):
                    documents.append(doc)
    return documents


# What a kubeconfig of a server without a token holds (clients want some credential; it is not checked).
UNCHECKED_TOKEN = "gigafactory-local-token"


def new_token() -> str:
    """A bearer token for one server's life: 256 random bits."""
    return secrets.token_urlsafe(32)


def kubeconfig(url: str, token: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT, "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {"token": token or UNCHECKED_TOKEN}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
    }


class LocalCluster:
    """A running embedded API server."""

    def __init__(self, srv: server.Server, runner: web.AppRunner, url: str) -> None:
        self.server = srv
        self.cluster = srv.cluster
        self.runner = runner
        self.url = url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write atomically, so a reader that sees the file sees a server that is ready; readable by
        its owner only (it holds the token), from the moment it exists: created 0600, never widened."""
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.unlink(missing_ok=True)
        # O_EXCL | O_NOFOLLOW: a file or link someone left there is not written through.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the umask can only narrow it, but say it outright
            handle.write(yaml.safe_dump(kubeconfig(self.url, self.server.token), sort_keys=False))
        temporary.replace(target)
        return target

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create or update one object (CRDs included) directly, without HTTP."""
        api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
        if kind == "CustomResourceDefinition":
            return self.cluster.load_crd(manifest)
        resource = self.cluster.registry.by_kind(api_version, kind)
        if resource is None:
            raise LookupError(f"no resource serves {kind} in {api_version}")
        meta = manifest.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if resource.namespaced else None
        key = resources.storage_key(resource)
        existing = self.cluster.store.get(key, namespace or "", meta.get("name", ""))
        body = handling.patching.copy(manifest)
        if existing is None:
            return self.cluster.create(resource, namespace, body)
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return self.cluster.update(resource, namespace, meta["name"], body)

    async def stop(self) -> None:
        self.cluster.store.close_watchers()
        await self.runner.cleanup()


async def start(*, port: int = 0, host: str = "127.0.0.1", crd_dirs: Iterable[str | os.PathLike[str]] = (),
                apply: Iterable[str | os.PathLike[str]] = (), bookmark_interval: float = 5.0,
                history: int = 10_000, token: str | None = None,
                header_timeout: float = guarding.HEADER_TIMEOUT_SECONDS,
                body_timeout: float = guarding.BODY_TIMEOUT_SECONDS) -> LocalCluster:
    """Serve on host:port. With `token`, every request must carry it (`new_token()` makes one; the
    kubeconfig written holds it); without, none is checked (tests that start their own server)."""
    srv = server.Server(handling.Cluster(history=history), bookmark_interval=bookmark_interval, token=token,
                        body_timeout=body_timeout)
    # aiohttp's keep-alive timer also runs from the moment a connection opens and closes it if no
    # complete request head has come by then: the header timeout (slowloris), and the idle timeout.
    runner = web.AppRunner(srv.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           keepalive_timeout=header_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{host}:{bound}"
    srv.address = f"{host}:{bound}"
    srv.hosts = guarding.allowed_hosts(host, bound)
    local = LocalCluster(srv, runner, url)
    manifests = read_manifests(crd_dirs)
    manifests += read_manifests(apply)
    # CRDs first, then namespaces, then everything else: apply order should not matter to users.
    manifests.sort(key=lambda m: (m.get("kind") != "CustomResourceDefinition", m.get("kind") != "Namespace"))
    for manifest in manifests:
        local.apply(manifest)
    return local


class ThreadedCluster:
    """A LocalCluster served from its own event loop in a daemon thread."""

    def __init__(self, local: LocalCluster, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.local = local
        self.url = local.url
        self.loop = loop
        self.thread = thread

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> pathlib.Path:
        return self.local.write_kubeconfig(path)

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a function on the server's loop (the store is not thread-safe) and return its result."""
        async def wrapper() -> Any:
            return function(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.local.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def start_in_thread(**kwargs: Any) -> ThreadedCluster:
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["local"] = loop.run_until_complete(start(**kwargs))
        except BaseException as e:  # reported to the caller below
            ready["error"] = e
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, name="gigafactory-localcluster", daemon=True)
    thread.start()
    started.wait()
    if "error" in ready:
        raise ready["error"]
    return ThreadedCluster(ready["local"], loop, thread)


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[ThreadedCluster]:
    """`with running(crd_dirs=["crds"]) as srv:` — an embedded server for synchronous code."""
    threaded = start_in_thread(**kwargs)
    try:
        yield threaded
    finally:
        threaded.stop()
