"""The resource table: which kinds the emulator serves, and how (built-ins and CRD-defined).

Pure data: a `Resource` describes one served group/version/plural the way discovery, routing,
validation and table printing need it. CRDs are turned into `Resource`s by `from_crd`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    # Only CRs are validated against a schema, and only they reject strategic merge patches.
    custom: bool = False
    # Bumped on spec changes; the real server keeps no generation for most core kinds.
    generation: bool = False
    # A PUT without resourceVersion: allowed for most built-ins, rejected for CRs.
    unconditional_update: bool = True
    schema: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    verbs: tuple[str, ...] = tuple(VERBS)
    # Which CRD defines it, so deleting the CRD removes it.
    crd_name: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def store_key(self) -> tuple[str, str]:
        # Versions of one group share storage; the emulator does no conversion.
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _builtin(group: str, version: str, plural: str, kind: str, namespaced: bool = True, **kw: Any) -> Resource:
    singular = kw.pop("singular", kind.lower())
    return Resource(group=group, version=version, plural=plural, singular=singular, kind=kind,
                    namespaced=namespaced, **kw)


BUILTINS: tuple[Resource, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
             status_subresource=True,
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _builtin("", "v1", "pods", "Pod", short_names=("po",), categories=("all",), status_subresource=True,
             generation=True),
    _builtin("", "v1", "events", "Event", short_names=("ev",)),
    _builtin("", "v1", "secrets", "Secret"),
    _builtin("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _builtin("", "v1", "services", "Service", short_names=("svc",), categories=("all",),
             status_subresource=True),
    _builtin("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    _builtin("apps", "v1", "deployments", "Deployment", short_names=("deploy",), categories=("all",),
             status_subresource=True, generation=True),
    _builtin("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",), categories=("all",),
             status_subresource=True, generation=True),
    # Stored, not enforced: RBAC, admission policies and disruption budgets are served so that
    # manifests apply (no authz, no admission, no eviction).
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _builtin("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy",
             namespaced=False, status_subresource=True, generation=True),
    _builtin("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings",
             "ValidatingAdmissionPolicyBinding", namespaced=False, generation=True),
    _builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",),
             status_subresource=True, generation=True),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
             namespaced=False, short_names=("crd", "crds"), categories=("api-extensions",),
             status_subresource=True, generation=True),
)

# Core-group events and events.k8s.io events are the same objects seen through two APIs.
SHARED_STORAGE = {("events.k8s.io", "events"): ("", "events")}


# Groups kube-apiserver serves itself: its built-in handlers own every URL below /apis/<group>.
BUILTIN_GROUPS = frozenset(r.group for r in BUILTINS if r.group)


def storage_key(resource: Resource) -> tuple[str, str]:
    return SHARED_STORAGE.get(resource.store_key, resource.store_key)


def from_crd(crd: dict[str, Any]) -> list[Resource]:
    """One Resource per served version of a CustomResourceDefinition body."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(Resource(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(),
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status_subresource="status" in subresources,
            custom=True,
            generation=True,
            unconditional_update=False,
            schema=schema,
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            crd_name=crd["metadata"]["name"],
        ))
    return result


class Registry:
    """Served resources by (group, version, plural), with the lookups discovery and routing need."""

    def __init__(self) -> None:
        self.by_gvr: dict[tuple[str, str, str], Resource] = {}
        for resource in BUILTINS:
            self.add(resource)

    def add(self, resource: Resource) -> None:
        self.by_gvr[(resource.group, resource.version, resource.plural)] = resource

    def remove_crd(self, crd_name: str) -> list[Resource]:
        gone = [r for r in self.by_gvr.values() if r.crd_name == crd_name]
        for resource in gone:
            del self.by_gvr[(resource.group, resource.version, resource.plural)]
        return gone

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self.by_gvr.get((group, version, plural))

    def groups(self) -> dict[str, list[str]]:
        """Group → served versions, builtins first, in registration order."""
        result: dict[str, list[str]] = {}
        for resource in self.by_gvr.values():
            versions = result.setdefault(resource.group, [])
            if resource.version not in versions:
                versions.append(resource.version)
        for group, versions in result.items():
            versions.sort(key=_version_priority, reverse=True)
        return result

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in self.by_gvr.values() if r.group == group and r.version == version]

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        for resource in self.by_gvr.values():
            if resource.group == group and resource.version == version and resource.kind == kind:
                return resource
        return None


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, then by numbers (v1 > v1beta2 > v1alpha1)."""
    import re
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (-1, 0, 0)
    major, stage, minor = match.groups()
    return ({None: 2, "beta": 1, "alpha": 0}[stage], int(major), int(minor or 0))
