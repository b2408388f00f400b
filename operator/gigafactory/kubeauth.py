"""Credentials for the API client that stay valid while the process runs, as client-go keeps them.

A kubeconfig, or a pod's ServiceAccount, names *where* credentials come from; what they hold changes
under a running process: the kubelet rewrites a projected ServiceAccount token (hourly by default),
cloud kubeconfigs run an exec plugin whose token lasts 15 to 60 minutes, certificates are renewed on
disk, a revoked token must be replaced. Reading them once at start means 401 on every request after
the first change, forever. So this module keeps sources, not values:

| source | first read | read again |
|---|---|---|
| `token` (or `username`/`password`) in the kubeconfig | at load | never: nothing to re-read |
| a token file: `tokenFile`, or in a pod the projected ServiceAccount token | first request | once a minute (client-go's cached file token source), and at once after a 401 |
| an exec plugin (`user.exec`, ExecCredential `client.authentication.k8s.io/v1` and `v1beta1`) | first request | shortly before its `expirationTimestamp`, and after a 401 |
| client certificate and key files | first request | once a minute if they changed, after a 401 and after a failed TLS handshake |
| `auth-provider` (legacy gcp, oidc, azure) | first request, through the kubernetes package's loader | after a 401 (that loader renews an expired token) |

`Credentials.current()` returns what a request sends (an `Auth`: headers and TLS context), loading
what is due. After a 401 the client calls `Credentials.rejected(auth)` with what it sent: every
source that can change is read again, once for all the requests that failed with the same
credentials (the `generation` tells a stale failure, already refreshed by another request, from a
fresh one: no thundering herd of plugin runs), and it answers whether a retry can succeed. The
client retries that request once (`kubeclient.Client.open`).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import ssl
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

# client-go's cachedFileTokenSource re-reads a token file after a minute; so do we.
TOKEN_FILE_PERIOD = 60.0
# Certificate files are checked for a change as often.
CERT_FILE_PERIOD = 60.0
# An exec plugin's credential is renewed this long before it expires (or a tenth of its lifetime,
# when that is shorter), so that no request goes out with a token about to lapse in flight.
EXEC_MARGIN = 60.0
# A plugin that does not answer within this long has failed (client-go waits forever; a hung plugin
# must not hang every request of the process).
EXEC_TIMEOUT = 60.0
# After a failed refresh a source is tried again no sooner than this (no plugin run per request).
RETRY_INTERVAL = 1.0

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class ConfigError(ValueError):
    """The kubeconfig (or the pod's environment) does not say how to reach or authenticate to a server."""


class CredentialsError(Exception):
    """A source could not produce credentials: a token file unreadable or empty, an exec plugin that failed."""


@dataclasses.dataclass(frozen=True)
class Material:
    """What one source holds at one moment."""

    token: str | None = None
    basic: tuple[str, str] | None = None  # username, password
    cert: tuple[bytes, bytes] | None = None  # PEM certificate (chain), PEM key
    expires: float | None = None  # wall-clock (epoch) seconds, when the source says so


@dataclasses.dataclass(frozen=True)
class Auth:
    """What a request sends: its authentication headers and TLS context, as of `generation`."""

    headers: Mapping[str, str]
    ssl: ssl.SSLContext | bool
    generation: int
    material: Material


class Source(abc.ABC):
    """One place credentials come from, with what it last produced."""

    #: worth reading again after a 401 (a fixed token is not)
    refreshable = True

    def __init__(self) -> None:
        self.material: Material | None = None
        self.loaded_at = 0.0  # monotonic time of the last successful read
        self.tried_at = float("-inf")  # monotonic time of the last attempt
        self.error: CredentialsError | None = None  # what the last attempt raised

    @abc.abstractmethod
    async def load(self) -> Material:
        """Read the credential now. Raises CredentialsError."""

    def stale(self, now: float, wall: float) -> bool:
        """Due for a periodic read (the caller holds the material)."""
        return False

    def due(self, now: float, wall: float) -> bool:
        if self.material is None:
            return True
        return self.stale(now, wall) and now - self.tried_at >= RETRY_INTERVAL

    async def refresh(self, *, forced: bool) -> bool:
        """Read again; True when the material changed. A failed periodic read keeps a usable old
        credential (as client-go does: the old token may well still be valid); a read forced by a 401,
        or with nothing to fall back on, raises. With nothing at all, a failure is not retried within
        RETRY_INTERVAL: the requests queued behind it get the same error, not a plugin run each."""
        now = time.monotonic()
        if self.material is None and self.error is not None and now - self.tried_at < RETRY_INTERVAL:
            raise CredentialsError(str(self.error))
        self.tried_at = now
        try:
            material = await self.load()
            self.error = None
        except CredentialsError as exc:
            self.error = exc
            usable = self.material is not None and (self.material.expires is None or self.material.expires > time.time())
            if forced or not usable:
                raise
            logger.warning("credentials not renewed, keeping the current ones: %s", exc)
            return False
        self.loaded_at = self.tried_at
        changed = material != self.material
        self.material = material
        return changed


class Fixed(Source):
    """A token or a username/password written into the kubeconfig: nothing to re-read."""

    refreshable = False

    def __init__(self, material: Material) -> None:
        super().__init__()
        self._fixed = material

    async def load(self) -> Material:
        return self._fixed


class TokenFile(Source):
    """A bearer token in a file (a projected ServiceAccount token, `tokenFile`), re-read each period.
    `fallback`: the kubeconfig's own `token`, sent while the file cannot be read (as client-go does)."""

    def __init__(self, path: str | os.PathLike[str], *, fallback: str | None = None, period: float = TOKEN_FILE_PERIOD) -> None:
        super().__init__()
        self.path = pathlib.Path(path)
        self.fallback = fallback
        self.period = period

    async def load(self) -> Material:
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            if self.fallback:
                return Material(token=self.fallback)
            raise CredentialsError(f"cannot read the token file {self.path}: {exc.strerror or exc}") from None
        if not token:
            if self.fallback:
                return Material(token=self.fallback)
            raise CredentialsError(f"the token file {self.path} is empty")
        return Material(token=token)

    def stale(self, now: float, wall: float) -> bool:
        return now - self.loaded_at >= self.period


class CertFiles(Source):
    """A client certificate and key in files, read again when they may have been renewed."""

    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str], *, period: float = CERT_FILE_PERIOD) -> None:
        super().__init__()
        self.paths = (pathlib.Path(cert), pathlib.Path(key))
        self.period = period

    async def load(self) -> Material:
        try:
            cert, key = (path.read_bytes() for path in self.paths)
        except OSError as exc:
            raise CredentialsError(f"cannot read the client certificate or key {exc.filename}: {exc.strerror}") from None
        return Material(cert=(cert, key))

    def stale(self, now: float, wall: float) -> bool:
        return now - self.loaded_at >= self.period


def _timestamp(text: str) -> float:
    """An RFC 3339 time (`2026-11-30T06:00:00Z`, fractions and offsets too) as epoch seconds."""
    moment = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


class ExecPlugin(Source):
    """A credential plugin (`users[].user.exec`), run without a terminal, per the ExecCredential protocol
    of client-go: `KUBERNETES_EXEC_INFO` in its environment, an ExecCredential on its stdout with
    `status.token` or `status.clientCertificateData` + `clientKeyData`, and maybe `expirationTimestamp`."""

    def __init__(self, spec: Mapping[str, Any], *, base_dir: pathlib.Path | None = None,
                 cluster: Mapping[str, Any] | None = None, timeout: float = EXEC_TIMEOUT) -> None:
        super().__init__()
        command = spec.get("command")
        if not command or not isinstance(command, str):
            raise ConfigError("exec: the kubeconfig's exec section has no command")
        self.api_version = str(spec.get("apiVersion") or "")
        if self.api_version not in EXEC_API_VERSIONS:
            raise ConfigError(f"exec: apiVersion {self.api_version!r} is not supported (use one of {', '.join(EXEC_API_VERSIONS)})")
        mode = spec.get("interactiveMode") or ("IfAvailable" if self.api_version.endswith("v1beta1") else None)
        if mode not in ("Never", "IfAvailable", "Always"):
            raise ConfigError(f"exec: interactiveMode must be Never, IfAvailable or Always (got {mode!r})")
        if mode == "Always":
            raise ConfigError(f"exec: plugin {command} needs a terminal (interactiveMode: Always), and a controller has none")
        # As kubectl resolves it: a relative path with a separator is relative to the kubeconfig's directory.
        if os.sep in command and not os.path.isabs(command) and base_dir is not None:
            command = str(base_dir / command)
        self.argv = [command, *(str(arg) for arg in spec.get("args") or [])]
        self.env = {str(item["name"]): str(item["value"]) for item in spec.get("env") or []}
        self.install_hint = str(spec.get("installHint") or "")
        self.cluster = dict(cluster) if cluster is not None and spec.get("provideClusterInfo") else None
        self.timeout = timeout

    def _info(self) -> str:
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = self.cluster
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})

    async def load(self) -> Material:
        name = self.argv[0]
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env, "KUBERNETES_EXEC_INFO": self._info()})
        except OSError as exc:
            hint = f" ({self.install_hint.strip()})" if self.install_hint else ""
            raise CredentialsError(f"exec plugin {name}: {exc.strerror or exc}{hint}") from None
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise CredentialsError(f"exec plugin {name} gave no credential within {self.timeout:.0f} s") from None
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-500:]
            raise CredentialsError(f"exec plugin {name} exited with {process.returncode}" + (f": {tail}" if tail else ""))
        return self._parse(stdout)

    def _parse(self, stdout: bytes) -> Material:
        name = self.argv[0]
        try:
            answer = json.loads(stdout)
        except ValueError:
            raise CredentialsError(f"exec plugin {name} did not print an ExecCredential (not JSON)") from None
        if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
            raise CredentialsError(f"exec plugin {name} did not print an ExecCredential")
        if answer.get("apiVersion") != self.api_version:
            raise CredentialsError(f"exec plugin {name} answered {answer.get('apiVersion')!r}, the kubeconfig asked for {self.api_version!r}")
        status = answer.get("status")
        if not isinstance(status, dict):
            raise CredentialsError(f"exec plugin {name}: the ExecCredential has no status")
        token, cert, key = (status.get(k) for k in ("token", "clientCertificateData", "clientKeyData"))
        if bool(cert) != bool(key):
            raise CredentialsError(f"exec plugin {name}: clientCertificateData and clientKeyData come together or not at all")
        if not token and not cert:
            raise CredentialsError(f"exec plugin {name}: the ExecCredential holds neither a token nor a client certificate")
        expires = None
        if status.get("expirationTimestamp"):
            try:
                expires = _timestamp(str(status["expirationTimestamp"]))
            except ValueError:
                raise CredentialsError(f"exec plugin {name}: expirationTimestamp {status['expirationTimestamp']!r} is not an RFC 3339 time") from None
        return Material(token=str(token) if token else None,
                        cert=(str(cert).encode(), str(key).encode()) if cert else None, expires=expires)

    def stale(self, now: float, wall: float) -> bool:
        material = self.material
        if material is None or material.expires is None:
            return False
        lifetime = material.expires - (wall - (now - self.loaded_at))
        return wall >= material.expires - min(EXEC_MARGIN, max(lifetime, 0.0) / 10)


class LegacyProvider(Source):
    """`auth-provider` (gcp, oidc, azure): left to the kubernetes package's loader, which renews an
    expired token when it loads. Read at first use and after a 401."""

    def __init__(self, kubeconfig: str, context: str | None) -> None:
        super().__init__()
        self.kubeconfig, self.context = kubeconfig, context

    async def load(self) -> Material:
        return await asyncio.to_thread(self._load)

    def _load(self) -> Material:
        from kubernetes import client as k8s_client, config as k8s_config

        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_kube_config(config_file=self.kubeconfig, context=self.context, client_configuration=cfg,
                                        persist_config=False)
        except Exception as exc:  # the loader raises many kinds
            raise CredentialsError(f"auth-provider of {self.kubeconfig}: {exc}") from None
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken") or ""
        if token.lower().startswith("bearer "):
            token = token[7:]
        return Material(token=token or None)


@contextlib.contextmanager
def _pem_files(cert: bytes, key: bytes) -> Iterator[tuple[str, str]]:
    """Paths for `SSLContext.load_cert_chain`, which reads only files: memory files where the kernel has
    them (the key never touches a disk), else private temporary files removed at once."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create(name, 0) for name in ("client-cert", "client-key")]
        try:
            for fd, data in zip(fds, (cert, key)):
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="gf-cert-") as directory:
        paths = (os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
        for path, data in zip(paths, (cert, key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                handle.write(data)
        yield paths


class Credentials:
    """Where the API server is, how to trust it, and where the credentials come from."""

    def __init__(self, server: str, *, ca_data: bytes | None = None, ca_file: str | None = None, insecure: bool = False,
                 tls_server_name: str | None = None, sources: Sequence[Source] = ()) -> None:
        self.server = server.rstrip("/")
        self.ca_data, self.ca_file, self.insecure = ca_data, ca_file, insecure
        self.tls_server_name = tls_server_name or None
        self.sources = list(sources)
        self.generation = 0
        self._auth: Auth | None = None
        self._contexts: dict[tuple[bytes, bytes] | None, ssl.SSLContext | bool] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        if self.server.startswith("https") and (ca_data or ca_file) and not insecure:
            try:  # a broken CA is a broken configuration: say so at load, not at the first request
                ssl.create_default_context(cafile=ca_file, cadata=ca_data.decode(errors="replace") if ca_data else None)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"the certificate authority of {self.server} cannot be used: {exc}") from None

    def __repr__(self) -> str:
        return f"Credentials({self.server!r}, sources={[type(s).__name__ for s in self.sources]})"

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def _due(self) -> list[Source]:
        now, wall = time.monotonic(), time.time()
        return [source for source in self.sources if source.due(now, wall)]

    async def current(self) -> Auth:
        """What to send now; reads the sources that are due first (one reader at a time)."""
        auth = self._auth
        if auth is not None and not self._due():
            return auth
        async with self._lock():
            due = self._due()
            if self._auth is None or due:
                await self._reload(due, forced=False)
            assert self._auth is not None
            return self._auth

    async def rejected(self, used: Auth) -> bool:
        """A request with `used` was answered 401 (or its TLS handshake failed): read every source that
        can change, once for every request that failed with the same credentials. True when the
        credentials are now different from `used`, so one retry can succeed."""
        async with self._lock():
            if self._auth is not None and self._auth.generation != used.generation:
                return True  # another request refreshed them meanwhile
            refreshable = [source for source in self.sources if source.refreshable]
            if not refreshable:
                return False
            return await self._reload(refreshable, forced=True)

    async def _reload(self, sources: Sequence[Source], *, forced: bool) -> bool:
        changed = False
        for source in sources:
            changed = await source.refresh(forced=forced) or changed
        if changed or self._auth is None:
            self._auth = self._compose(self.generation + 1)  # may raise (a key that does not fit): nothing changes then
            self.generation = self._auth.generation
            if self.generation > 1:
                logger.info("API credentials renewed (%s)", ", ".join(type(s).__name__ for s in sources))
        return changed

    def _compose(self, generation: int) -> Auth:
        token = basic = cert = None
        expiries = []
        for source in self.sources:
            m = source.material
            if m is None:
                continue
            token, basic, cert = token or m.token, basic or m.basic, cert or m.cert
            if m.expires is not None:
                expiries.append(m.expires)
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif basic:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        material = Material(token=token, basic=basic, cert=cert, expires=min(expiries) if expiries else None)
        return Auth(headers=headers, ssl=self._ssl(cert), generation=generation, material=material)

    def _ssl(self, cert: tuple[bytes, bytes] | None) -> ssl.SSLContext | bool:
        # One context per client certificate: aiohttp pools connections per context, so a renewed
        # certificate gets new connections while the old ones drain.
        if cert in self._contexts:
            return self._contexts[cert]
        if not self.server.startswith("https"):
            context: ssl.SSLContext | bool = False
        else:
            if self.insecure:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif self.ca_data or self.ca_file:
                context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None)
            else:
                context = ssl.create_default_context()
            if cert is not None:
                with _pem_files(*cert) as (cert_path, key_path):
                    try:
                        context.load_cert_chain(cert_path, key_path)
                    except ssl.SSLError as exc:
                        raise CredentialsError(f"the client certificate or key cannot be used: {exc}") from None
        self._contexts = {cert: context}  # the previous certificate's context is no longer needed
        return context
