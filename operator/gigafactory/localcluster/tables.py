"""Server-side printing: `meta.k8s.io/v1` Table responses for `kubectl get`.

Columns come from a CRD's `additionalPrinterColumns` (a JSONPath subset: dotted fields, `[n]`
indexes and `[?(@.k=="v")]` filters), or NAME/AGE-style defaults for built-ins. Ages are
rendered on the server like kube-apiserver's `HumanDuration`.
"""
from __future__ import annotations

import datetime
import re
from typing import Any

from gigafactory.localcluster import resources

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}
_BUILTIN_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "namespaces": [{"name": "Status", "type": "string", "jsonPath": ".status.phase",
                    "description": "The status of the namespace"}, _AGE],
    "pods": [{"name": "Status", "type": "string", "jsonPath": ".status.phase", "description": "The pod phase"},
             _AGE],
    "leases": [{"name": "Holder", "type": "string", "jsonPath": ".spec.holderIdentity",
                "description": "The holder"}, _AGE],
    "events": [{"name": "Type", "type": "string", "jsonPath": ".type", "description": "Event type"},
               {"name": "Reason", "type": "string", "jsonPath": ".reason", "description": "Reason"},
               {"name": "Message", "type": "string", "jsonPath": ".message", "description": "Message"}, _AGE],
    "customresourcedefinitions": [{"name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp",
                                   "description": "Creation time"}],
}
_TOKEN = re.compile(r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]|\['([^']+)'\]""")


def columns(resource: resources.Resource) -> list[dict[str, Any]]:
    if resource.custom:
        extra = list(resource.printer_columns) or [_AGE]
    else:
        extra = _BUILTIN_COLUMNS.get(resource.plural, [_AGE])
    return [_NAME] + extra


def json_path(obj: Any, path: str) -> Any:
    """Evaluate the JSONPath subset printer columns use; None when any step is missing."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    position = 0
    value = obj
    while position < len(path) and value is not None:
        match = _TOKEN.match(path, position)
        if not match:
            return None
        field, index, filter_key, filter_value, quoted = match.groups()
        position = match.end()
        if field is not None or quoted is not None:
            value = value.get(field or quoted) if isinstance(value, dict) else None
        elif index is not None:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            found = None
            for item in value if isinstance(value, list) else []:
                if isinstance(item, dict) and str(json_path(item, "." + filter_key)) == filter_value:
                    found = item
                    break
            value = found
    return value


def human_duration(seconds: float) -> str:
    """kube's duration.HumanDuration: 45s, 3m20s, 15m, 5h10m, 10h, 3d4h, 30d, 2y30d, 9y."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    if column.get("format") == "name" and "jsonPath" not in column:
        return obj["metadata"]["name"]
    value = json_path(obj, column.get("jsonPath", ""))
    if value is None:
        return None
    kind = column.get("type")
    if kind == "date":
        try:
            then = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return "<invalid>"
        return human_duration((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    if kind == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, (int, float)):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value, separators=(",", ":"))
    return str(value) if kind == "string" else value


def row(resource: resources.Resource, obj: dict[str, Any], include: str) -> dict[str, Any]:
    result: dict[str, Any] = {"cells": [_cell(c, obj) for c in columns(resource)]}
    if include == "Object":
        result["object"] = obj
    elif include != "None":
        result["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj["metadata"]}
    return result


def table(resource: resources.Resource, objects: list[dict[str, Any]], *, metadata: dict[str, Any],
          include: str = "Metadata", headers: bool = True) -> dict[str, Any]:
    definitions = [{k: c.get(k, "" if k != "priority" else 0) for k in ("name", "type", "format", "description",
                                                                        "priority")}
                   for c in columns(resource)] if headers else []
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": definitions, "rows": [row(resource, o, include) for o in objects]}
