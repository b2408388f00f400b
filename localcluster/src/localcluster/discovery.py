"""Discovery and OpenAPI documents, built from the resource registry.

kubectl needs these to map kinds to URLs (`/api`, `/apis`, legacy and aggregated v2 discovery),
to decide whether the server validates fields itself (the PATCH operations' `fieldValidation`
parameter in OpenAPI v3), and to `explain` custom resources (their schemas as v3 components).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from localcluster import resources

VERSION = {
    "major": "1", "minor": "35", "gitVersion": "v1.35.0-gigafactory", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2025-12-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
    "platform": "linux/amd64",
}
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList"


def api_versions(address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: resources.Registry) -> dict[str, Any]:
    groups = [_group(name, versions) for name, versions in registry.groups().items() if name]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: resources.Registry, name: str) -> dict[str, Any] | None:
    versions = registry.groups().get(name)
    if not versions or not name:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def api_resource_list(registry: resources.Registry, group: str, version: str) -> dict[str, Any] | None:
    served = registry.in_group_version(group, version)
    if not served:
        return None
    entries: list[dict[str, Any]] = []
    for r in served:
        entry: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                                 "kind": r.kind, "verbs": list(r.verbs)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entry["storageVersionHash"] = _hash(r.qualified)[:12]
        entries.append(entry)
        if r.status_subresource:
            entries.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": entries}


def aggregated(registry: resources.Registry, *, legacy: bool, api_version: str = "v2") -> dict[str, Any]:
    """APIGroupDiscoveryList (apidiscovery.k8s.io/v2 or v2beta1, the same shape): all groups in one
    answer, as kubectl prefers."""
    items = []
    for name, versions in registry.groups().items():
        if bool(name) == legacy:
            continue
        version_entries = []
        for version in versions:
            served = []
            for r in registry.in_group_version(name, version):
                kind = {"group": r.group, "version": r.version, "kind": r.kind}
                entry: dict[str, Any] = {"resource": r.plural, "responseKind": kind,
                                         "scope": "Namespaced" if r.namespaced else "Cluster",
                                         "singularResource": r.singular, "verbs": list(r.verbs)}
                if r.short_names:
                    entry["shortNames"] = list(r.short_names)
                if r.categories:
                    entry["categories"] = list(r.categories)
                if r.status_subresource:
                    entry["subresources"] = [{"subresource": "status", "responseKind": kind,
                                              "verbs": ["get", "patch", "update"]}]
                served.append(entry)
            version_entries.append({"version": version, "resources": served, "freshness": "Current"})
        items.append({"metadata": {"name": name} if name else {}, "versions": version_entries})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{api_version}", "metadata": {},
            "items": items}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- OpenAPI --------------------------------------------------------------------------------

def _definition_name(r: resources.Resource) -> str:
    # The naming kube-apiserver uses for CRD schemas: reversed group, version, kind.
    group = ".".join(reversed(r.group.split("."))) if r.group else "io.k8s.api.core"
    return f"{group}.{r.version}.{r.kind}"


def _schema(r: resources.Resource) -> dict[str, Any]:
    schema = json.loads(json.dumps(r.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}))
    schema["x-kubernetes-group-version-kind"] = [{"group": r.group, "version": r.version, "kind": r.kind}]
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string", "description": "APIVersion defines the versioned "
                                         "schema of this representation of an object."})
    properties.setdefault("kind", {"type": "string", "description": "Kind is a string value representing the "
                                   "REST resource this object represents."})
    properties["metadata"] = {"type": "object", "description": "Standard object's metadata. More info: "
                              "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
                              "#metadata"}
    return schema


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_root(registry: resources.Registry, generation: int) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.groups().items():
        for version in versions:
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(f'{path}:{generation}')[:32]}"}
    return {"paths": paths}


def openapi_v3_group_version(registry: resources.Registry, group: str, version: str) -> dict[str, Any] | None:
    served = registry.in_group_version(group, version)
    if not served:
        return None
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
                        "description": "fieldValidation instructs the server on how to handle objects in the request "
                                       "containing unknown or duplicate fields."}
    for r in served:
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        ref = {"$ref": f"#/components/schemas/{_definition_name(r)}"}
        # Built-in schemas are left out on purpose: kubectl then computes strategic merge patches
        # from its compiled-in types instead of from a schema without patch metadata.
        if r.custom:
            schemas[_definition_name(r)] = _schema(r)
        base = "/" + _gv_path(group, version) + ("/namespaces/{namespace}" if r.namespaced else "")
        body = {"content": {"application/json": {"schema": ref}}} if r.custom else {}
        operation = {"x-kubernetes-group-version-kind": gvk, "parameters": [field_validation],
                     "responses": {"200": {"description": "OK"}}}
        if body:
            operation["requestBody"] = body
        paths[f"{base}/{r.plural}/{{name}}"] = {
            "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get",
                    "responses": {"200": {"description": "OK"}}},
            "put": {**operation, "x-kubernetes-action": "put"},
            "patch": {**operation, "x-kubernetes-action": "patch"},
            "delete": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "delete",
                       "responses": {"200": {"description": "OK"}}},
            "parameters": [field_validation],
        }
        paths[f"{base}/{r.plural}"] = {
            "post": {**operation, "x-kubernetes-action": "post"},
            "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "list",
                    "responses": {"200": {"description": "OK"}}},
            "parameters": [field_validation],
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_v2(registry: resources.Registry) -> dict[str, Any]:
    definitions = {}
    for r in registry.by_gvr.values():
        if r.custom:
            definitions[_definition_name(r)] = _schema(r)
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]}, "paths": {},
            "definitions": definitions}
