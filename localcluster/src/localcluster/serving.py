"""Starting and stopping an embedded API server: in the current event loop, in a thread, as a CLI.

`start()` serves on 127.0.0.1 and returns a `LocalCluster` handle; `running()` is the same in a
background thread for synchronous code such as pytest fixtures.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import os
import pathlib
import secrets
import ssl
import tempfile
import threading
from typing import Any, Iterable, Iterator

import yaml
from aiohttp import web

from localcluster import guarding, handling, resources, server

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


def serving_tls(host: str) -> tuple[ssl.SSLContext, bytes]:
    """A TLS context for one server's life and the PEM of the CA that signed its certificate.

    client-go (kubectl) sends a kubeconfig's token only over TLS (never to an http:// server), so a
    server that checks a token must speak TLS. A fresh CA and serving certificate each start, for
    127.0.0.1 and localhost; the keys never touch the disk but for a moment in a private directory."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gigafactory-local-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if host not in ("127.0.0.1", "localhost"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gigafactory-local")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory() as private:  # created 0700
        chain, key_file = pathlib.Path(private) / "serving.crt", pathlib.Path(private) / "serving.key"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context.load_cert_chain(chain, key_file)
    return context, ca.public_bytes(serialization.Encoding.PEM)


def kubeconfig(url: str, token: str | None = None, ca: bytes | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": url}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT, "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": {"token": token or UNCHECKED_TOKEN}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
    }


class LocalCluster:
    """A running embedded API server."""

    def __init__(self, srv: server.Server, runner: web.AppRunner, url: str, ca: bytes | None = None) -> None:
        self.server = srv
        self.cluster = srv.cluster
        self.runner = runner
        self.url = url
        self.ca = ca  # PEM of the CA of its TLS certificate (None: plain http)

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
            handle.write(yaml.safe_dump(kubeconfig(self.url, self.server.token, self.ca), sort_keys=False))
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


class _Site(web.TCPSite):
    """aiohttp's TCPSite with a TLS handshake timeout: a client that opens a connection and never
    finishes its handshake is dropped after the header timeout (asyncio's default: 60 s)."""

    def __init__(self, *args: Any, handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)
        assert self._runner.server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self.handshake_timeout if self._ssl_context else None)
        self._bound_port = self._server.sockets[0].getsockname()[1]


async def start(*, port: int = 0, host: str = "127.0.0.1", crd_dirs: Iterable[str | os.PathLike[str]] = (),
                apply: Iterable[str | os.PathLike[str]] = (), bookmark_interval: float = 5.0,
                history: int = 10_000, token: str | None = None,
                header_timeout: float = guarding.HEADER_TIMEOUT_SECONDS,
                body_timeout: float = guarding.BODY_TIMEOUT_SECONDS) -> LocalCluster:
    """Serve on host:port. With `token`, every request must carry it (`new_token()` makes one; the
    kubeconfig written holds it) and the server speaks TLS (kubectl sends a token over TLS only);
    without, none is checked, over plain http (tests that start their own server)."""
    srv = server.Server(handling.Cluster(history=history), bookmark_interval=bookmark_interval, token=token,
                        body_timeout=body_timeout)
    # aiohttp's keep-alive timer also runs from the moment a connection opens and closes it if no
    # complete request head has come by then: the header timeout (slowloris), and the idle timeout.
    runner = web.AppRunner(srv.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           keepalive_timeout=header_timeout)
    await runner.setup()
    context, ca = serving_tls(host) if token is not None else (None, None)
    site = _Site(runner, host, port, reuse_address=True, ssl_context=context, handshake_timeout=header_timeout)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"{'https' if context else 'http'}://{host}:{bound}"
    srv.address = f"{host}:{bound}"
    srv.hosts = guarding.allowed_hosts(host, bound)
    local = LocalCluster(srv, runner, url, ca)
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
