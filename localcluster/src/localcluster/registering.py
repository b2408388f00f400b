"""CustomResourceDefinitions: validated, their resources registered and served (and their stored
objects defaulted), their status kept, unregistered when they go. A mixin of handling.Cluster.
"""
from __future__ import annotations

import json
import logging
from typing import Any


from localcluster import admitting, errors, patching, resources, schemas

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


class Registering:
    """The CRD registry on top of the store."""

    def _validate_crd(self, crd: Obj) -> list[dict[str, str]]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes = []
        if not spec.get("group"):
            causes.append(errors.cause("spec.group", "FieldValueRequired", "Required value"))
        for field in ("plural", "kind"):
            if not names.get(field):
                causes.append(errors.cause(f"spec.names.{field}", "FieldValueRequired", "Required value"))
        if spec.get("scope") not in ("Cluster", "Namespaced"):
            causes.append(errors.cause("spec.scope", "FieldValueNotSupported", f"Unsupported value: "
                                       f"{json.dumps(spec.get('scope'))}: supported values: \"Cluster\", \"Namespaced\""))
        if not spec.get("versions"):
            causes.append(errors.cause("spec.versions", "FieldValueInvalid", "Invalid value: null: must have "
                                       "exactly one version marked as storage version"))
        for index, version in enumerate(spec.get("versions") or []):
            # apiextensions.k8s.io/v1 requires a structural schema for every version.
            if not ((version or {}).get("schema") or {}).get("openAPIV3Schema"):
                causes.append(errors.cause(f"spec.versions[{index}].schema.openAPIV3Schema", "FieldValueRequired",
                                           "Required value: schemas are required"))
        if not causes and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            causes.append(errors.cause("metadata.name", "FieldValueInvalid",
                                       f"Invalid value: {schemas.render(crd['metadata']['name'])}: must be "
                                       f"spec.names.plural+\".\"+spec.group"))
        return causes

    def _crd_status(self, crd: Obj) -> None:
        names = (crd.get("spec") or {}).get("names") or {}
        stamp = admitting.now()
        crd["status"] = {
            "acceptedNames": patching.copy(names),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": stamp},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": stamp},
            ],
            "storedVersions": [v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")],
        }

    def _register_crd(self, crd: Obj) -> None:
        self.registry.remove_crd(crd["metadata"]["name"])
        for resource in resources.from_crd(crd):
            self.registry.add(resource)
            self.store.bucket(resources.storage_key(resource))  # its watch window starts now
            if resource.schema:
                self._default_stored(resource)
        self.schema_version += 1

    def _default_stored(self, resource: resources.Resource) -> None:
        # Defaults apply on read to objects stored before the schema had them; the result is the
        # same whether done now or per read, as the real server never persists read-time defaults.
        bucket = self.store.buckets.get(resources.storage_key(resource))
        if bucket is None or resource.schema is None:
            return
        for names in bucket.by_namespace.values():
            for name, obj in list(names.items()):
                defaulted = schemas.default(resource.schema, patching.copy(obj))
                if defaulted != obj:
                    names[name] = defaulted

    def _unregister_crd(self, crd: Obj) -> None:
        gone = self.registry.remove_crd(crd["metadata"]["name"])
        for key in {resources.storage_key(r) for r in gone}:
            self.store.drop_bucket(key)
        self.schema_version += 1

    def load_crd(self, crd: Obj) -> Obj:
        """Create or replace a CRD from a manifest (used at start-up)."""
        crds = self._resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        existing = self.store.get(resources.storage_key(crds), "", crd["metadata"]["name"])
        if existing is None:
            return self.create(crds, None, patching.copy(crd))
        body = patching.copy(crd)
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return self.update(crds, None, crd["metadata"]["name"], body)

