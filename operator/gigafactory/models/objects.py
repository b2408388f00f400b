"""Typed views of Kubernetes objects as the API (or a cache of its watch events) hands them over:
plain dicts, read through these accessors instead of `(body.get("status") or {}).get(...)` chains.

Every accessor takes any mapping and returns a typed view of the part asked for, empty when the
part is missing or is not the JSON shape it should be: objects come from the API server, but their
status, labels and annotations were written by runners and agents too (hostile input), so a wrong
shape reads as absent instead of raising in the middle of a reconcile. The views are TypedDicts
(the dicts themselves, not copies): the type checker knows the fields the code reads, and nothing is
converted or validated on the hot path (pydantic models validate specs at admission and in the
scheduler; these only name the shape).
"""

from collections.abc import Mapping
from typing import Any, TypedDict, cast


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    finalizers: list[str]
    ownerReferences: list[dict[str, Any]]


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


def _mapping(value: object) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def meta(obj: Mapping[str, Any]) -> ObjectMeta:
    """metadata ({} when missing)."""
    return cast(ObjectMeta, _mapping(obj.get("metadata")))


def spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """spec ({} when missing)."""
    return _mapping(obj.get("spec"))


def status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """status ({} when missing or not an object)."""
    return _mapping(obj.get("status"))


def field(obj: Mapping[str, Any], *path: str) -> dict[str, Any]:
    """The object at a path of keys ({} where any step is missing or not an object):
    field(job, "status", "assignment")."""
    current: dict[str, Any] = _mapping(obj)
    for key in path:
        current = _mapping(current.get(key))
    return current


def text(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    """A string field (default when missing or not a string)."""
    value = obj.get(key)
    return value if isinstance(value, str) else default


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return _mapping(meta(obj).get("labels"))


def annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return _mapping(meta(obj).get("annotations"))


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    value = meta(obj).get("finalizers")
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def conditions(obj: Mapping[str, Any]) -> list[Condition]:
    """status.conditions, the entries that are objects."""
    value = status(obj).get("conditions")
    return [cast(Condition, item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def condition(obj: Mapping[str, Any], type: str) -> Condition | None:
    """The condition of this type in status.conditions, if any."""
    return next((item for item in conditions(obj) if item.get("type") == type), None)


def data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A ConfigMap's (or a Secret's) data ({} when missing)."""
    return _mapping(obj.get("data"))
