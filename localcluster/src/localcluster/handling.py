"""API semantics per verb — create, update, patch, delete, list — on top of the store.

Independent of HTTP: the server parses requests into calls here. This is where the server-set
metadata, optimistic concurrency, the status subresource, finalizers, namespaces, CRD
registration, schema validation and ownerReference garbage collection live.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import uuid
from typing import Any

import yaml

from localcluster import (admitting, conversions, deleting, errors, guarding, patching, registering, resources,
                          selectors, storing)

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
# ObjectMeta fields the server owns: a client's values are ignored on create and update.
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                "resourceVersion", "selfLink", "managedFields")


def _random_suffix() -> str:
    # The real generator avoids vowels and confusable digits so that suffixes never spell words.
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))


class Cluster(admitting.Admitting, deleting.Deleting, registering.Registering):
    """The API's verbs on one store; admission, deletion and the CRD registry are its mixins."""

    def __init__(self, *, history: int = storing.HISTORY) -> None:
        self.store = storing.Store(history=history)
        self.registry = resources.Registry()
        self.schema_version = 0  # bumped on every CRD change; the OpenAPI documents key on it
        self.orphaned: set[str] = set()  # owners deleted with propagationPolicy=Orphan
        for builtin in resources.BUILTINS:  # served from the start: their watch windows begin at 0
            self.store.bucket(resources.storage_key(builtin))
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self._resource("", "v1", "namespaces"), None, {"metadata": {"name": name}})

    def _resource(self, group: str, version: str, plural: str) -> resources.Resource:
        resource = self.registry.get(group, version, plural)
        assert resource is not None
        return resource

    # --- reads --------------------------------------------------------------------------------

    def get(self, resource: resources.Resource, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(resources.storage_key(resource), namespace or "", name)
        if obj is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        return self.present(resource, obj)

    def present(self, resource: resources.Resource, obj: Obj) -> Obj:
        """The stored object as seen through `resource` (its apiVersion; no conversion otherwise)."""
        if obj.get("apiVersion") != resource.api_version:
            if resource.group == "events.k8s.io":
                return conversions.core_to_events(obj)
            if obj.get("apiVersion") == "events.k8s.io/v1":
                return conversions.events_to_core(obj)
            return {**obj, "apiVersion": resource.api_version}
        return obj

    def list(self, resource: resources.Resource, namespace: str | None, *, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> Obj:
        labels = selectors.parse_labels(label_selector)
        fields = selectors.parse_fields(field_selector, storage=resources.storage_key(resource),
                                        custom=resource.custom)
        start: tuple[str, str] | None = None
        list_rv = self.store.rv
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, list_rv = tuple(token["start"]), token["rv"]  # type: ignore[assignment]
            except Exception:
                raise errors.bad_request("continue key is not valid: illegal base64 data")
        items: list[Obj] = []
        next_token = None
        remaining = 0
        for obj in self.store.iterate(resources.storage_key(resource), namespace):
            meta = obj["metadata"]
            position = (meta.get("namespace", ""), meta["name"])
            if start is not None and position <= start:
                continue
            if not selectors.labels_match(labels, obj) or not selectors.fields_match(fields, obj):
                continue
            if limit and limit > 0 and len(items) >= limit:  # a negative limit means none, as in kube-apiserver
                if next_token is None:
                    last = items[-1]["metadata"]
                    next_token = base64.urlsafe_b64encode(json.dumps(
                        {"start": [last.get("namespace", ""), last["name"]], "rv": list_rv}).encode()).decode()
                remaining += 1
                continue
            items.append(self.present(resource, obj))
        metadata: Obj = {"resourceVersion": str(list_rv)}
        if next_token:
            metadata["continue"] = next_token
            metadata["remainingItemCount"] = remaining
        return {"apiVersion": resource.api_version, "kind": f"{resource.kind}List", "metadata": metadata,
                "items": items}

    # --- writes -------------------------------------------------------------------------------

    def create(self, resource: resources.Resource, namespace: str | None, body: Any, *,
               field_validation: str = "Warn", dry_run: bool = False, warnings: list[str] | None = None) -> Obj:
        warnings = warnings if warnings is not None else []
        obj = self._check_body(resource, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + _random_suffix()
            else:
                raise errors.invalid(kind=resource.kind, group=resource.group, name="", causes=[errors.cause(
                    "metadata.name", "FieldValueRequired", "Required value: name or generateName is required")])
        name = meta["name"]
        self._require_namespace(resource, namespace, name)
        for field in _SERVER_META:
            meta.pop(field, None)
        if resource.status_subresource:
            # Status is written through /status only; a create starts from an empty status.
            obj.pop("status", None)
        self._defaults_for_builtins(resource, obj)
        self._admit(resource, obj, None, field_validation=field_validation, warnings=warnings)
        key = resources.storage_key(resource)
        if self.store.get(key, namespace or "", name) is not None:
            raise errors.already_exists(plural=resource.plural, group=resource.group, name=name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = admitting.now()
        if resource.generation:
            meta["generation"] = 1
        if resource.plural == "customresourcedefinitions":
            self._crd_status(obj)
        if dry_run:
            meta["resourceVersion"] = str(self.store.rv)
            return obj
        stored = self.store.put(key, obj, old=None)
        if resource.plural == "customresourcedefinitions":
            self._register_crd(stored)
        if meta.get("ownerReferences"):
            self._schedule_gc([ref.get("uid", "") for ref in meta["ownerReferences"]])
        return self.present(resource, stored)

    def update(self, resource: resources.Resource, namespace: str | None, name: str, body: Any, *,
               subresource: str | None = None, field_validation: str = "Warn", dry_run: bool = False,
               warnings: list[str] | None = None, current: Obj | None = None) -> Obj:
        warnings = warnings if warnings is not None else []
        key = resources.storage_key(resource)
        old = current or self.store.get(key, namespace or "", name)
        if old is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        obj = self._check_body(resource, namespace, body)
        meta = obj["metadata"]
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the "
                                     f"URL ({name})")
        meta["name"] = name
        rv = meta.get("resourceVersion")
        if rv:
            if rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(plural=resource.plural, group=resource.group, name=name)
        elif not resource.unconditional_update:
            raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=[errors.cause(
                "metadata.resourceVersion", "FieldValueInvalid", "Invalid value: 0x0: must be specified for an update")])
        old_meta = old["metadata"]
        uid = meta.get("uid")
        if uid and uid != old_meta.get("uid"):
            if current is None:  # PUT: the uid is a storage precondition
                prefix = f"{resource.group}/{resource.plural}" if resource.custom else resource.plural
                where = f"/registry/{prefix}/{namespace + '/' if namespace else ''}{name}"
                raise errors.conflict(plural=resource.plural, group=resource.group, name=name, message=(
                    f"StorageError: invalid object, Code: 4, Key: {where}, ResourceVersion: 0, AdditionalErrorMsg: "
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old_meta.get('uid')}"))
            raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=[errors.cause(
                "metadata.uid", "FieldValueInvalid", f"Invalid value: {json.dumps(uid)}: field is immutable")])
        if subresource == "status":
            # A status write changes the status and nothing else (metadata included).
            new = {k: v for k, v in old.items() if k != "status"}
            new["metadata"] = dict(old_meta)
            if "status" in obj:
                new["status"] = obj["status"]
            obj = patching.copy(new)
            meta = obj["metadata"]
        else:
            if resource.status_subresource:
                obj.pop("status", None)
                if "status" in old:
                    obj["status"] = patching.copy(old["status"])
            for field in _SERVER_META:
                meta.pop(field, None)
                if field in old_meta:
                    meta[field] = old_meta[field]
            if old_meta.get("deletionTimestamp"):
                added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
                if added:
                    listed = ", ".join(json.dumps(f) for f in added)
                    raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=[errors.cause(
                        "metadata.finalizers", "FieldValueForbidden", "Forbidden: no new finalizers can be added if "
                        f"the object is being deleted, found new finalizers []string{{{listed}}}")])
        if resource.plural == "namespaces" and not resource.group and subresource != "status":
            obj["spec"] = patching.copy(old.get("spec") or {})  # spec.finalizers changes only via /finalize
        admitting.fold_string_data(resource, obj)
        if resource.plural == "secrets" and not resource.group and subresource != "status":
            obj.setdefault("type", "Opaque")  # defaulted on every write, as when kube-apiserver decodes
        self._admit(resource, obj, old, field_validation=field_validation, warnings=warnings)
        if resource.generation and subresource != "status" and self._spec_changed(resource, old, obj):
            meta["generation"] = old_meta.get("generation", 1) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if obj == old:
            return self.present(resource, old)  # a no-op write keeps the resourceVersion, emits nothing
        if resource.plural == "customresourcedefinitions":
            self._crd_status(obj)
        if dry_run:
            return obj
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._held_by_namespace(resource, obj):
            # As in kube-apiserver, the last write is never stored: the object is deleted instead, the
            # DELETED event carries the last stored state, and the writer gets its update at the old
            # resourceVersion.
            final = self.store.remove(key, old)
            self._after_removal(resource, final)
            return self.present(resource, obj)
        stored = self.store.put(key, obj, old=old)
        if resource.plural == "customresourcedefinitions":
            self._register_crd(stored)
        if meta.get("ownerReferences") != old_meta.get("ownerReferences") and meta.get("ownerReferences"):
            self._schedule_gc([ref.get("uid", "") for ref in meta["ownerReferences"]])
        return self.present(resource, stored)

    def _spec_changed(self, resource: resources.Resource, old: Obj, new: Obj) -> bool:
        ignored = ("metadata", "status") if resource.status_subresource else ("metadata",)
        keys = (set(old) | set(new)) - set(ignored)
        return any(old.get(k) != new.get(k) for k in keys)

    def patch(self, resource: resources.Resource, namespace: str | None, name: str, patch_body: bytes,
              content_type: str, *, subresource: str | None = None, field_validation: str = "Warn",
              dry_run: bool = False, field_manager: str | None = None, force: bool = False,
              warnings: list[str] | None = None) -> Obj:
        key = resources.storage_key(resource)
        old = self.store.get(key, namespace or "", name)
        if content_type == patching.APPLY:
            return self._apply(resource, namespace, name, patch_body, old, subresource=subresource,
                               field_validation=field_validation, dry_run=dry_run, field_manager=field_manager,
                               warnings=warnings)
        accepted = [patching.JSON, patching.MERGE, patching.APPLY]
        if not resource.custom:
            accepted.append(patching.STRATEGIC)
        if content_type not in accepted:
            if not resource.custom:
                # kube-apiserver's built-in handlers answer an unknown patch type in net/http's words.
                raise errors.ApiError(errors.status(code=415, reason="UnsupportedMediaType",
                                                    message="415: Unsupported Media Type", details={}))
            raise errors.unsupported_media_type(content_type, accepted)
        try:
            patch = guarding.load_json(patch_body or b"null")
        except ValueError as e:
            raise errors.bad_request(f"error decoding patch: {e}")
        if old is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        current = self.present(resource, old)
        if content_type == patching.JSON:
            new = patching.json_patch(current, patch, describe=f"{resource.qualified} \"{name}\"")
        elif content_type == patching.MERGE:
            if not isinstance(patch, dict):
                raise errors.bad_request("json: cannot unmarshal into a merge patch: the patch must be an object")
            new = patching.merge_patch(current, patch)
        else:
            if not isinstance(patch, dict):
                raise errors.bad_request("json: cannot unmarshal into a strategic merge patch: must be an object")
            new = patching.strategic_merge_patch(current, patch)
        if not isinstance(new, dict):
            raise errors.bad_request("the patch result is not an object")
        return self.update(resource, namespace, name, new, subresource=subresource, field_validation=field_validation,
                           dry_run=dry_run, warnings=warnings, current=old)

    def _apply(self, resource: resources.Resource, namespace: str | None, name: str, body: bytes, old: Obj | None,
               **kw: Any) -> Obj:
        """Server-side apply, approximated: create if missing, else merge the applied fields in.

        No managedFields, no field ownership, no conflicts between managers, and fields dropped
        from the applied configuration are not removed.
        """
        if not kw.pop("field_manager", None):
            raise errors.invalid(kind="PatchOptions", group="meta.k8s.io", name="", causes=[errors.cause(
                "fieldManager", "FieldValueRequired", "Required value: is required for apply patch")])
        try:
            applied = guarding.load_yaml(body or b"")
        except yaml.YAMLError as e:
            raise errors.bad_request(f"error decoding YAML: {e}")
        if not isinstance(applied, dict):
            raise errors.bad_request("the applied configuration must be an object")
        api_version, kind = str(applied.get("apiVersion") or ""), str(applied.get("kind") or "")
        if not api_version or not kind:
            group, _, version = api_version.rpartition("/")
            raise errors.bad_request(f"invalid object type: {group}/{version}, Kind={kind}")
        applied_name = (applied.get("metadata") or {}).get("name") if isinstance(applied.get("metadata"), dict) else None
        if applied_name not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({applied_name}) does not match the name on the URL "
                                     f"({name})")
        subresource = kw.pop("subresource")
        if old is None:
            if subresource:
                raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
            applied.setdefault("metadata", {})["name"] = name
            return self.create(resource, namespace, applied, **kw)
        applied.get("metadata", {}).pop("resourceVersion", None)
        merge = patching.merge_patch if resource.custom else patching.strategic_merge_patch
        new = merge(self.present(resource, old), applied)
        return self.update(resource, namespace, name, new, subresource=subresource, current=old, **kw)

    # --- deletion -----------------------------------------------------------------------------

    # --- garbage collection -------------------------------------------------------------------

    # --- CRDs ---------------------------------------------------------------------------------

