"""Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch.

Every function returns a new object and never mutates its inputs, because stored objects are
shared with watch history and must stay immutable.
"""
from __future__ import annotations

from typing import Any

import jsonpatch

from localcluster import errors

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def copy(value: Any) -> Any:
    """Deep copy for JSON values, several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy(v) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy(patch)
    result = copy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], patch: Any, *, describe: str) -> dict[str, Any]:
    if not isinstance(patch, list):
        raise errors.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    # kube-apiserver's json-patch replaces a missing member of an object as if it were added.
    patch = [_replace_as_add(target, op) for op in patch]
    try:
        return jsonpatch.JsonPatch(patch).apply(target, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError,
            AttributeError, ValueError):
        # A failed "test" op, or an op that does not apply: 422 Invalid, with kube-apiserver's words only.
        raise errors.ApiError(errors.status(code=422, reason="Invalid", message="the server rejected our request "
                                            "due to an error in our request")) from None


def _replace_as_add(target: Any, op: Any) -> Any:
    if not (isinstance(op, dict) and op.get("op") == "replace" and isinstance(op.get("path"), str)):
        return op
    try:
        pointer = jsonpatch.JsonPointer(op["path"])
        parent, last = pointer.to_last(target)
    except (jsonpatch.JsonPointerException, TypeError, KeyError, IndexError):
        return op
    if isinstance(parent, dict) and last not in parent:
        return {**op, "op": "add"}
    return op


# Merge keys of lists that strategic merge patch merges by key instead of replacing (from the
# `patchMergeKey` tags of the built-in Go types we serve). Primitive lists listed with None merge
# as sets. Ports merge by containerPort in containers, by port in services.
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "finalizers": None,
    "secrets": "name",
}


def _merge_key(field: str, items: list[Any]) -> str | None | bool:
    """The merge key for a list field; False means the list is replaced wholesale."""
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    return False


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue  # ordering hints: the emulator keeps the server-side order
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = [_strip(v) for v in value] if isinstance(value, list) else copy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    return copy(value)


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    key = _merge_key(field, current + patch)
    if key is False:
        return [_strip(v) for v in patch]
    if key is None:  # a set of primitives
        result = copy(current)
        for item in patch:
            if item not in result:
                result.append(item)
        return _in_patch_order(result, patch, current, None)
    result = copy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_strip(item))
            continue
        index = next((i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return _in_patch_order(result, [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")],
                           current, key)


def _in_patch_order(merged: list[Any], patch: list[Any], server: list[Any], key: str | None) -> list[Any]:
    """kube-apiserver's order for a merged list (strategicpatch normalizeElementOrder, no
    $setElementOrder): the patch's items in patch order, the server-only ones in server order, the
    two interleaved by server order where both are known — so items new to the server come first."""
    def ident(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    patch_ids, server_ids = [ident(i) for i in patch], [ident(i) for i in server]

    def position(ids: list[Any], item: Any) -> int:
        try:
            return ids.index(ident(item))
        except ValueError:
            return -1

    from_patch = [m for m in merged if position(patch_ids, m) >= 0]
    from_patch.sort(key=lambda m: position(patch_ids, m))
    server_only = [m for m in merged if position(patch_ids, m) < 0]
    known = sorted((m for m in server_only if position(server_ids, m) >= 0), key=lambda m: position(server_ids, m))
    server_only = known + [m for m in server_only if position(server_ids, m) < 0]
    result, i, j = [], 0, 0
    while i < len(server_only) or j < len(from_patch):
        if j >= len(from_patch):
            result.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            result.append(from_patch[j])
            j += 1
        else:
            left, right = position(server_ids, server_only[i]), position(server_ids, from_patch[j])
            if left >= 0 and right >= 0 and left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(from_patch[j])
                j += 1
    return result
