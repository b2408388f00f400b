"""Watches over HTTP, as kube-apiserver streams them: a resume point checked against the store's
window (410 Gone when it is older), initial events, bookmarks, timeouts, JSON or Table frames. A mixin
of server.Server.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from localcluster import errors, faults, resources, responses, selectors, tables

logger = logging.getLogger(__name__)
Obj = dict[str, Any]


class Streaming:
    """GET ...?watch=true on a resource."""

    async def _watch(self, request: web.Request, resource: resources.Resource, namespace: str | None,
                     query: Any, call: faults.Call, table: bool) -> web.StreamResponse:
        cluster = self.cluster
        labels = selectors.parse_labels(query.get("labelSelector"))
        fields = selectors.parse_fields(query.get("fieldSelector"), storage=resources.storage_key(resource),
                                        custom=resource.custom)
        filtered = bool(labels or fields)
        rv = query.get("resourceVersion") or ""
        if rv not in ("", "0"):
            try:
                since: int | None = int(rv)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{rv}"')
        else:
            since = None
        timeout = responses.int_param(query.get("timeoutSeconds"))
        deadline = time.monotonic() + (timeout if timeout else self.default_watch_timeout)
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        include = query.get("includeObject", "Metadata")
        key = resources.storage_key(resource)

        def matches(obj: Obj | None) -> bool:
            return obj is not None and selectors.labels_match(labels, obj) and selectors.fields_match(fields, obj)

        response = web.StreamResponse(headers={"Content-Type": responses.JSON})
        response.enable_chunked_encoding()
        try:
            watcher, backlog = cluster.store.subscribe(key, namespace, since=since)
        except errors.ApiError as e:
            # Like the watch cache: HTTP 200, then a single ERROR event carrying the Status.
            await response.prepare(request)
            await response.write(responses.dumps({"type": "ERROR", "object": e.status}) + b"\n")
            await response.write_eof()
            return response
        # Streaming lists (client-go's WatchListClient): the current state as ADDED events, then a
        # bookmark annotated k8s.io/initial-events-end, then the changes.
        send_initial = query.get("sendInitialEvents", "").lower() == "true"
        initial = []
        if since is None or send_initial:
            initial = [o for o in cluster.store.iterate(key, namespace) if matches(o)]
            if send_initial:
                backlog = []
        initial_rv = cluster.store.rv

        def encode(kind: str, obj: Obj) -> bytes:
            obj = cluster.present(resource, obj)
            if table:
                obj = tables.table(resource, [obj], metadata={"resourceVersion": obj["metadata"]["resourceVersion"]},
                                   include=include)
            return responses.dumps({"type": kind, "object": obj}) + b"\n"

        def convert(event: Any) -> bytes | None:
            if not filtered and not table and resource.api_version == event.obj.get("apiVersion"):
                return event.encoded()
            now_in, was_in = matches(event.obj), matches(event.old)
            if event.type == "ADDED":
                return encode("ADDED", event.obj) if now_in else None
            if event.type == "DELETED":
                return encode("DELETED", event.obj) if was_in or now_in else None
            if now_in and was_in:
                return encode("MODIFIED", event.obj)
            if now_in:
                return encode("ADDED", event.obj)  # it entered the selector's set
            if was_in:
                return encode("DELETED", event.obj)  # it left the selector's set
            return None

        try:
            await response.prepare(request)
            for obj in initial:
                await response.write(encode("ADDED", obj))
            if send_initial:
                mark = {"kind": resource.kind, "apiVersion": resource.api_version,
                        "metadata": {**_bookmark_meta(resource, initial_rv),
                                     "annotations": {"k8s.io/initial-events-end": "true"}}}
                await response.write(responses.dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
            for event in backlog:
                line = convert(event)
                if line is not None:
                    await response.write(line)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except asyncio.TimeoutError:
                    if bookmarks and watcher.queue.empty() and deadline - time.monotonic() > 0:
                        # Safe: every event up to the current resourceVersion has been delivered.
                        mark = {"kind": resource.kind, "apiVersion": resource.api_version,
                                "metadata": _bookmark_meta(resource, cluster.store.rv)}
                        await response.write(responses.dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
                    continue
                if event is None:
                    break
                if self.faults.drop_watch(call):
                    # Cut, not ended: the client sees a broken stream, as when a load balancer drops it.
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                line = convert(event)
                if line is not None:
                    await response.write(line)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            cluster.store.unsubscribe(key, watcher)
        return response


def _bookmark_meta(resource: resources.Resource, rv: int) -> Obj:
    # An empty object of the kind; a built-in one's ObjectMeta serialises its zero creationTimestamp as null.
    return {"resourceVersion": str(rv)} if resource.custom else {"resourceVersion": str(rv), "creationTimestamp": None}
