"""A small async Kubernetes API client on aiohttp: dicts in, dicts out, errors as typed exceptions.

Why not the official client: it is synchronous (a thread per call) and deserializes every object
into generated classes; the scheduler's bind path and the runners want many concurrent writes of
plain dicts, and a watch that survives reconnects and 410 Gone. Credentials come from kubeconfigs
(which file, which server) and kubeauth (kept current as tokens rotate and plugins' credentials
expire; only a legacy auth-provider still goes through the official client's loader).

`Informer` is list-then-watch with a local cache, resumed from the last resourceVersion after a
dropped connection and re-listed after 410 Gone: the building block of every watcher here.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from gigafactory import constants, kubeauth, kubeconfigs
from gigafactory.models import objects
from gigafactory.kubeerrors import (
    AlreadyExists as AlreadyExists,
    ApiError as ApiError,
    Conflict as Conflict,
    Gone as Gone,
    Invalid as Invalid,
    NotFound as NotFound,
    Unauthorized as Unauthorized,
    error_for as _error_for,
    error_from_response as _error_from_response,
    parse as _parse,
)

logger = logging.getLogger(__name__)

Body = dict[str, Any]

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


@dataclasses.dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


AGENTJOBS = Resource(constants.GROUP, constants.VERSION, constants.AGENTJOB_PLURAL, constants.AGENTJOB_KIND)
FACTORIES = Resource(constants.GROUP, constants.VERSION, constants.FACTORY_PLURAL, constants.FACTORY_KIND, namespaced=False)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
EVENTS = Resource("", "v1", "events", "Event")
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")


# Where the server is and how to authenticate, kept valid as tokens rotate and plugins' credentials
# expire: see kubeauth.
Credentials = kubeauth.Credentials


# Credentials from an explicit kubeconfig file, or the in-cluster service account when None.
load_credentials = kubeconfigs.load


RETRIES = 10
MAX_RETRY_AFTER = 5.0


def _retry_after(status: int, header: str | None) -> float | None:
    """Seconds to wait before retrying a 429/5xx that says when to come back; None: do not retry."""
    if header is None or not (status == 429 or status >= 500):
        return None
    try:
        return min(max(float(header), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


class Client:
    """One aiohttp session to one API server. Create with `Client.from_kubeconfig()`; close with `close()`.

    Every request asks `credentials` for what to send at that moment (kubeauth keeps it valid); a 401,
    or a failed TLS handshake, makes it read its sources again and the request is sent once more."""

    def __init__(self, credentials: Credentials, *, max_connections: int = 64, user_agent: str = "gigafactory") -> None:
        self.credentials = credentials
        self._max_connections = max_connections
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None, **kwargs: Any) -> "Client":
        return cls(load_credentials(kubeconfig), **kwargs)

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the event loop that uses it. Credentials go per request (open()).
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One HTTP exchange with the current credentials (see `send`), released at the end of the block."""
        response = await self.send(method, path, params=params, data=data, headers=headers, timeout=timeout)
        try:
            yield response
        finally:
            response.release()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """One HTTP exchange with the current credentials; the caller releases the response. After a
        401 (or a failed TLS handshake) the credentials are read again, once for all requests that
        failed alike, and when they changed the request goes once more, as client-go's exec and
        token-file round trippers do."""
        url = self.credentials.server + path
        try:
            auth = await self.credentials.current()
            for retry in (False, True):
                options: dict[str, Any] = {"params": params, "data": data, "headers": {**headers, **auth.headers} if headers else auth.headers}
                if auth.ssl is not False:  # https: the context of the current client certificate
                    options["ssl"] = auth.ssl
                    options["server_hostname"] = self.credentials.tls_server_name
                if timeout is not None:
                    options["timeout"] = timeout
                try:
                    response = await self.session.request(method, url, **options)
                except aiohttp.ClientSSLError:
                    if retry or not await self.credentials.rejected(auth):
                        raise
                    auth = await self.credentials.current()
                    continue
                if response.status != 401 or retry:
                    return response
                # Read the (small) Status first: the connection goes back to the pool while the
                # credentials are renewed, and the caller still gets this answer if nothing changed.
                try:
                    await response.read()
                finally:
                    response.release()
                if not await self.credentials.rejected(auth):
                    return response
                auth = await self.credentials.current()
        except kubeauth.CredentialsError as exc:
            raise Unauthorized(401, "Unauthorized", f"no usable credentials for {self.credentials.server}: {exc}") from None
        raise AssertionError("unreachable")  # the second pass returns or raises

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Body:
        """One call. As client-go does, a 429 or 5xx that carries Retry-After is retried after that long
        (capped), up to RETRIES times: the server said it is busy, not that the request is wrong. A GET
        is also retried after a broken connection. Everything else is the caller's to handle."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        for attempt in range(RETRIES + 1):
            try:
                response = await self.send(method, path, params=params, data=data, headers=headers)
                try:
                    text = await response.text()
                    wait = _retry_after(response.status, response.headers.get("Retry-After"))
                    if wait is not None and attempt < RETRIES:
                        await asyncio.sleep(wait)
                        continue
                    if response.status >= 400:
                        raise _error_from_response(response.status, text)
                    payload = _parse(text)
                    return payload if isinstance(payload, dict) else {}
                finally:
                    response.release()
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                if method != "GET" or attempt >= RETRIES:
                    raise
                await asyncio.sleep(min(0.1 * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> Body:
        return await self.request("GET", resource.path(namespace=namespace, name=name))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> tuple[list[Body], str]:
        """Every matching object (paging through), and the list's resourceVersion to watch from."""
        items: list[Body] = []
        params: dict[str, str] = {"limit": str(page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            page = await self.request("GET", resource.path(namespace=namespace), params=params)
            for item in page.get("items") or []:
                # Lists omit apiVersion/kind on items; put them back so an item reads like a GET.
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            meta = objects.field(page, "metadata")  # a ListMeta: continue, resourceVersion
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion", ""))
            params["continue"] = meta["continue"]

    async def create(self, resource: Resource, body: Body, *, namespace: str | None = None) -> Body:
        namespace = namespace or objects.namespace(body) or None
        return await self.request("POST", resource.path(namespace=namespace), body=body)

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> Body:
        """A merge patch by default. Put `metadata.resourceVersion` in it for a precondition (409 if stale)."""
        return await self.request(
            "PATCH",
            resource.path(namespace=namespace, name=name, subresource=subresource),
            body=patch,
            content_type=PATCH_TYPES[patch_type],
        )

    async def replace(
        self, resource: Resource, name: str, body: Body, *, namespace: str | None = None, subresource: str | None = None
    ) -> Body:
        return await self.request("PUT", resource.path(namespace=namespace, name=name, subresource=subresource), body=body)

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        uid: str | None = None,
        missing_ok: bool = True,
    ) -> Body | None:
        """Delete; a 404 is success when `missing_ok` (deletes are idempotent here). A `uid` or
        `resource_version` precondition makes it 409 when the object is not the one meant."""
        body: Body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        preconditions = {k: v for k, v in (("resourceVersion", resource_version), ("uid", uid)) if v is not None}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            return await self.request("DELETE", resource.path(namespace=namespace, name=name), body=body)
        except NotFound:
            if missing_ok:
                return None
            raise

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[Body]:
        """Watch events from a resourceVersion until the server ends the stream. ERROR events raise."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self.open("GET", resource.path(namespace=namespace), params=params, timeout=timeout) as response:
            if response.status >= 400:
                raise _error_from_response(response.status, await response.text())
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = objects.mapping(event.get("object"))
                    raise _error_for(int(status.get("code") or 500), status, "")
                yield event


object_key = objects.key  # (namespace, name): the informers' cache key


EventHandler = Callable[[str, Body], Awaitable[None] | None]


class Informer:
    """List-then-watch of one resource with a local cache, kept current across reconnects.

    `handler(event_type, obj)` is called for every change (ADDED, MODIFIED, DELETED) after the
    cache is updated; after a re-list, objects that vanished meanwhile come as DELETED. `synced`
    is set once the first list is in the cache. With `keep`, an object it refuses never enters the
    cache nor reaches `handler`: it goes to `refused(event_type, obj)` instead (a filter the API
    cannot apply server-side, such as a set of namespaces on one cluster-wide watch).
    """

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        handler: EventHandler | None = None,
        retry_delay: float = 1.0,
        keep: Callable[[Body], bool] | None = None,
        refused: EventHandler | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.handler = handler
        self.retry_delay = retry_delay
        self.keep = keep
        self.refused = refused
        self.cache: dict[tuple[str, str], Body] = {}
        self.synced = asyncio.Event()
        self.resource_version: str | None = None

    async def _emit(self, event_type: str, obj: Body) -> None:
        if self.handler is not None:
            result = self.handler(event_type, obj)
            if asyncio.iscoroutine(result):
                await result

    async def _refuse(self, event_type: str, obj: Body) -> None:
        if self.refused is not None:
            result = self.refused(event_type, obj)
            if asyncio.iscoroutine(result):
                await result

    async def _relist(self) -> None:
        items, version = await self.client.list(
            self.resource, namespace=self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        if self.keep is not None:
            for item in [item for item in items if not self.keep(item)]:
                await self._refuse("ADDED", item)
            items = [item for item in items if self.keep(item)]
        fresh = {object_key(item): item for item in items}
        gone = [obj for key, obj in self.cache.items() if key not in fresh]
        self.cache = fresh
        self.resource_version = version
        self.synced.set()
        for obj in gone:
            await self._emit("DELETED", obj)
        for obj in items:
            await self._emit("ADDED", obj)

    async def run(self) -> None:
        """Run until cancelled. Survives dropped connections and API errors, with a delay between tries."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for event in self.client.watch(
                    self.resource,
                    namespace=self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    resource_version=self.resource_version,
                ):
                    obj = objects.mapping(event.get("object"))
                    version = objects.meta(obj).get("resourceVersion")
                    if version:
                        self.resource_version = version
                    kind = event.get("type")
                    if kind == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if self.keep is not None and kind in ("ADDED", "MODIFIED", "DELETED") and not self.keep(obj):
                        await self._refuse(kind, obj)
                        continue
                    if kind == "DELETED":
                        self.cache.pop(key, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        obj.setdefault("apiVersion", self.resource.api_version)
                        obj.setdefault("kind", self.resource.kind)
                        self.cache[key] = obj
                    else:
                        continue
                    await self._emit(kind, obj)
            except asyncio.CancelledError:
                raise
            except Gone:
                need_list = True
            except (aiohttp.ClientError, asyncio.TimeoutError, ApiError, json.JSONDecodeError, ConnectionError) as exc:
                logger.warning("watch of %s interrupted (%s); resuming", self.resource.plural, exc)
                await asyncio.sleep(self.retry_delay)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Informer"]:
        """Run in a background task for the duration of the block (after the first sync)."""
        task = asyncio.create_task(self.run(), name=f"informer:{self.resource.plural}")
        try:
            waiter = asyncio.create_task(self.synced.wait())
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiter.cancel()
                task.result()  # raises what killed it
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
