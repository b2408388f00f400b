"""The object store: objects by key, one resourceVersion counter, watch history and fan-out.

Stored objects are never mutated after they are stored: writers build a new dict and `put` it.
That lets the watch history and every watcher share the same object without copying, and keeps
reads O(1) by key. Each resource keeps a bounded window of events so that watches can resume
from a resourceVersion; older resume points get 410 Gone, as from the real watch cache.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from typing import Any, Iterable, Iterator

from localcluster import errors

Key = tuple[str, str]  # storage key: (group, plural)
HISTORY = 10_000
# etcd's --max-request-bytes default (1.5 MiB): the largest put it accepts, key and framing included.
MAX_OBJECT_BYTES = 1536 * 1024


def _too_large() -> dict[str, Any]:
    """kube-apiserver's answer when etcd refuses a put: a 500 Status without a reason."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "etcdserver: request is too large", "code": 500}


@dataclasses.dataclass
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None
    rv: int
    _encoded: bytes | None = None

    def encoded(self) -> bytes:
        """The plain watch line, serialised once however many watchers receive it."""
        if self._encoded is None:
            self._encoded = json.dumps({"type": self.type, "object": self.obj}, separators=(",", ":")).encode() + b"\n"
        return self._encoded


class Watcher:
    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()


class Bucket:
    """All objects of one storage key."""

    def __init__(self, history: int) -> None:
        self.by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        # Every event with rv > horizon is still in history.
        self.horizon = 0
        self.watchers: set[Watcher] = set()

    def __len__(self) -> int:
        return sum(len(names) for names in self.by_namespace.values())


class Store:
    def __init__(self, history: int = HISTORY) -> None:
        self.rv = 0
        self.history_size = history
        self.buckets: dict[Key, Bucket] = {}
        # uid → where the object lives, for ownerReference garbage collection.
        self.uids: dict[str, tuple[Key, str, str]] = {}
        self.dependents: dict[str, set[tuple[Key, str, str]]] = {}

    def bucket(self, key: Key) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            # Like a watch cache's initial list: the window starts at the resourceVersion of the moment
            # the resource begins to be served (for a CRD's resource, well after resourceVersion 1).
            bucket = self.buckets[key] = Bucket(self.history_size)
            bucket.horizon = self.rv
        return bucket

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        bucket = self.buckets.get(key)
        if bucket is None:
            return None
        return bucket.by_namespace.get(namespace, {}).get(name)

    def iterate(self, key: Key, namespace: str | None) -> Iterator[dict[str, Any]]:
        """Objects in storage order (namespace, then name), like etcd's key order."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return
        namespaces = [namespace] if namespace is not None else sorted(bucket.by_namespace)
        for ns in namespaces:
            names = bucket.by_namespace.get(ns) or {}
            for name in sorted(names):
                yield names[name]

    def namespace_is_empty(self, namespace: str) -> bool:
        return not any(bucket.by_namespace.get(namespace) for bucket in self.buckets.values())

    def namespaced_objects(self, namespace: str) -> Iterable[tuple[Key, dict[str, Any]]]:
        for key, bucket in list(self.buckets.items()):
            for obj in list((bucket.by_namespace.get(namespace) or {}).values()):
                yield key, obj

    def put(self, key: Key, obj: dict[str, Any], *, old: dict[str, Any] | None) -> dict[str, Any]:
        """Store (ADDED if old is None, else MODIFIED) with a fresh resourceVersion; return the stored object.

        An object larger than etcd takes in one request is refused as kube-apiserver passes etcd's
        refusal on (a dry run, never stored, is not held to it there either)."""
        if len(json.dumps(obj, separators=(",", ":"))) > MAX_OBJECT_BYTES:
            raise errors.ApiError(_too_large())
        rv = self.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        bucket = self.bucket(key)
        bucket.by_namespace.setdefault(namespace, {})[name] = obj
        self._index_owners(key, obj, old)
        self._publish(bucket, Event("ADDED" if old is None else "MODIFIED", obj, old, rv))
        return obj

    def remove(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """Delete; the DELETED event carries the last state with a new resourceVersion, as etcd does."""
        meta = obj["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        bucket = self.bucket(key)
        names = bucket.by_namespace.get(namespace) or {}
        names.pop(name, None)
        if not names:
            bucket.by_namespace.pop(namespace, None)
        final = {**obj, "metadata": {**meta, "resourceVersion": str(self.next_rv())}}
        self.uids.pop(meta.get("uid", ""), None)
        for ref in meta.get("ownerReferences") or []:
            self.dependents.get(ref.get("uid", ""), set()).discard((key, namespace, name))
        self._publish(bucket, Event("DELETED", final, obj, self.rv))
        return final

    def drop_bucket(self, key: Key) -> list[dict[str, Any]]:
        """Forget a whole resource (its CRD was deleted); returns the objects that were in it."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return []
        objects = [o for names in bucket.by_namespace.values() for o in names.values()]
        for obj in objects:
            self.remove(key, obj)
        for watcher in bucket.watchers:
            watcher.queue.put_nowait(None)
        del self.buckets[key]
        return objects

    def _index_owners(self, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        where = (key, meta.get("namespace", ""), meta["name"])
        self.uids[meta["uid"]] = where
        if old is not None:
            for ref in old["metadata"].get("ownerReferences") or []:
                self.dependents.get(ref.get("uid", ""), set()).discard(where)
        for ref in meta.get("ownerReferences") or []:
            self.dependents.setdefault(ref.get("uid", ""), set()).add(where)

    def _publish(self, bucket: Bucket, event: Event) -> None:
        if len(bucket.history) == bucket.history.maxlen:
            bucket.horizon = bucket.history[0].rv
        bucket.history.append(event)
        namespace = event.obj["metadata"].get("namespace", "")
        for watcher in bucket.watchers:
            if watcher.namespace is None or watcher.namespace == namespace:
                watcher.queue.put_nowait(event)

    def subscribe(self, key: Key, namespace: str | None, *, since: int | None) -> tuple[Watcher, list[Event]]:
        """Register a watcher; with `since`, also return the history after it (or raise 410 Gone)."""
        bucket = self.bucket(key)
        backlog: list[Event] = []
        if since is not None:
            if since < bucket.horizon:
                raise errors.ApiError(errors.status(code=410, reason="Expired",
                                                    message=f"too old resource version: {since} ({bucket.horizon})"))
            backlog = [e for e in bucket.history if e.rv > since and (
                namespace is None or e.obj["metadata"].get("namespace", "") == namespace)]
        watcher = Watcher(namespace)
        bucket.watchers.add(watcher)
        return watcher, backlog

    def unsubscribe(self, key: Key, watcher: Watcher) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.watchers.discard(watcher)

    def close_watchers(self) -> None:
        for bucket in self.buckets.values():
            for watcher in bucket.watchers:
                watcher.queue.put_nowait(None)
