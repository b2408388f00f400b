"""Deletion, as kube-apiserver does it: finalizers and deletionTimestamp, collections, a namespace
that empties itself before it goes, and ownerReference garbage collection (background, foreground,
orphan). A mixin of handling.Cluster.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any


from localcluster import admitting, errors, patching, resources, storing

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


class Deleting:
    """delete, deletecollection and what follows a removal."""

    def delete(self, resource: resources.Resource, namespace: str | None, name: str, options: Obj | None = None, *,
               dry_run: bool = False) -> Obj:
        key = resources.storage_key(resource)
        old = self.store.get(key, namespace or "", name)
        if old is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        options = options or {}
        preconditions = options.get("preconditions") or {}
        meta = old["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise errors.precondition_failed(kind=resource.kind, group=resource.group, name=name, message=(
                f"the UID in the precondition ({preconditions['uid']}) does not match the UID in record "
                f"({meta.get('uid')}). The object might have been deleted and then recreated"))
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
            raise errors.precondition_failed(kind=resource.kind, group=resource.group, name=name, message=(
                f"the ResourceVersion in the precondition ({preconditions['resourceVersion']}) does not match the "
                f"ResourceVersion in record ({meta.get('resourceVersion')}). The object might have been modified"))
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            self._orphan(meta.get("uid", ""))
        is_namespace = resource.plural == "namespaces" and not resource.group
        if is_namespace and name in ("default", "kube-system", "kube-public"):
            raise errors.forbidden(plural="namespaces", group="", name=name, message="this namespace may not be deleted")
        if dry_run:
            return self.present(resource, old)
        if meta.get("finalizers") or is_namespace:
            if meta.get("deletionTimestamp"):
                return self.present(resource, old)  # already being deleted: nothing changes
            new = patching.copy(old)
            new_meta = new["metadata"]
            new_meta["deletionTimestamp"] = admitting.now()
            new_meta["deletionGracePeriodSeconds"] = 0
            if new_meta.get("generation"):
                new_meta["generation"] += 1
            if is_namespace:
                new["status"] = {"phase": "Terminating"}
            stored = self.store.put(key, new, old=old)
            if is_namespace:
                asyncio.get_running_loop().call_soon(self._sweep_namespace, name)
            return self.present(resource, stored)
        final = self.store.remove(key, old)
        self._after_removal(resource, final)
        return self.present(resource, final)

    def delete_collection(self, resource: resources.Resource, namespace: str | None, options: Obj | None, *,
                          label_selector: str | None, field_selector: str | None, dry_run: bool = False) -> Obj:
        listed = self.list(resource, namespace, label_selector=label_selector, field_selector=field_selector)
        deleted = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            try:
                deleted.append(self.delete(resource, meta.get("namespace"), meta["name"], options, dry_run=dry_run))
            except errors.ApiError as e:
                if e.code != 404:
                    raise
        listed["items"] = deleted
        return listed

    def _held_by_namespace(self, resource: resources.Resource, obj: Obj) -> bool:
        # A terminating namespace stays until all of its content is gone.
        return (resource.plural == "namespaces" and not resource.group
                and not self.store.namespace_is_empty(obj["metadata"]["name"]))

    def _after_removal(self, resource: resources.Resource, final: Obj) -> None:
        meta = final["metadata"]
        if resource.plural == "customresourcedefinitions":
            self._unregister_crd(final)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._collect_dependents, meta.get("uid", ""))
        if meta.get("namespace"):
            ns = self.store.get(("", "namespaces"), "", meta["namespace"])
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                loop.call_soon(self._sweep_namespace, meta["namespace"])

    def _sweep_namespace(self, namespace: str) -> None:
        """The namespace controller: delete all content, then the namespace once it is empty."""
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key, obj in list(self.store.namespaced_objects(namespace)):
            resource = self._served(key)
            if resource is None or obj["metadata"].get("deletionTimestamp"):
                continue
            self.delete(resource, namespace, obj["metadata"]["name"])
        if self.store.namespace_is_empty(namespace):
            namespaces = self._resource("", "v1", "namespaces")
            final = self.store.remove(("", "namespaces"), ns)
            self._after_removal(namespaces, final)

    def _served(self, key: storing.Key) -> resources.Resource | None:
        for resource in self.registry.by_gvr.values():
            if resources.storage_key(resource) == key:
                return resource
        return None

    def _orphan(self, uid: str) -> None:
        self.orphaned.add(uid)

    def _schedule_gc(self, owner_uids: list[str]) -> None:
        # Dependents created with owners that do not exist (any more) are collected too.
        loop = asyncio.get_running_loop()
        for uid in owner_uids:
            if uid not in self.store.uids:
                loop.call_soon(self._collect_dependents, uid)

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background propagation: delete dependents none of whose owners exist any more."""
        if owner_uid in self.store.uids or owner_uid in self.orphaned:
            return
        for key, namespace, name in list(self.store.dependents.pop(owner_uid, ())):
            obj = self.store.get(key, namespace, name)
            resource = self._served(key)
            if obj is None or resource is None or obj["metadata"].get("deletionTimestamp"):
                continue
            owners = [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []]
            if any(uid in self.store.uids for uid in owners):
                continue
            try:
                self.delete(resource, namespace or None, name)
            except errors.ApiError:
                logger.debug("garbage collection of %s/%s failed", namespace, name, exc_info=True)

