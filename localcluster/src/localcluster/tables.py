"""Server-side printing: `meta.k8s.io/v1` Table responses for `kubectl get`.

Columns come from a CRD's `additionalPrinterColumns` (a JSONPath subset: dotted fields, `[n]`
indexes and `[?(@.k=="v")]` filters), or NAME/AGE-style defaults for built-ins. Ages are
rendered on the server like kube-apiserver's `HumanDuration`.
"""
from __future__ import annotations

import datetime
import re
from typing import Any

from localcluster import resources

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}


def _since(stamp: Any) -> str:
    """translateTimestampSince: the age of a timestamp, "<unknown>" when unset."""
    if not stamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())


def _col(name: str, compute: Any, *, type: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    return {"name": name, "type": type, "format": "", "priority": priority, "description": description or name,
            "compute": compute}


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _selector(labels: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) if isinstance(labels, dict) and labels else ""


def _containers(obj: Any, field: str) -> str:
    return ",".join(str(c.get(field, "")) for c in _get(obj, "spec", "template", "spec", "containers") or [])


def _ports(service: Any) -> str:
    ports = []
    for port in _get(service, "spec", "ports") or []:
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        ports.append(f"{port.get('port')}{node}/{port.get('protocol') or 'TCP'}")
    return ",".join(ports) or "<none>"


def _event_cells(event: Any) -> dict[str, Any]:
    """printEvent: ages of first/last seen (eventTime and series for the new API), target, source."""
    if event.get("apiVersion") == "events.k8s.io/v1":
        from localcluster import conversions
        event = conversions.events_to_core(event)
    first = _since(event.get("firstTimestamp") or event.get("eventTime"))
    last = _since(event.get("lastTimestamp")) if event.get("lastTimestamp") else first
    count = event.get("count") or 1
    series = event.get("series")
    if isinstance(series, dict):
        last, count = _since(series.get("lastObservedTime")), series.get("count") or count
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    return {"last": last, "first": first, "count": int(count),
            "target": f"{kind}/{involved['name']}" if involved.get("name") else kind,
            "source": f"{component}, {instance}" if instance else component}


def _readiness_gates(pod: Any) -> str:
    gates = _get(pod, "spec", "readinessGates") or []
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in _get(pod, "status", "conditions") or []}
    return f"{sum(1 for g in gates if conditions.get(g.get('conditionType')) == 'True')}/{len(gates)}"


_AGE_BUILTIN = _col("Age", lambda o: _since(_get(o, "metadata", "creationTimestamp")),
                    description="CreationTimestamp is a timestamp representing the server time when this object "
                                "was created.")
_NONE = "<none>"
# kube-apiserver's own printers (pkg/printers/internalversion) for the built-in kinds served here: the
# same columns, types, priorities and cell values, so `kubectl get` prints what it prints on a cluster.
_BUILTIN_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "namespaces": [_NAME, _col("Status", lambda o: _get(o, "status", "phase") or ""), _AGE_BUILTIN],
    "configmaps": [_NAME, _col("Data", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                   _AGE_BUILTIN],
    "secrets": [_NAME, _col("Type", lambda o: o.get("type") or ""), _col("Data", lambda o: len(o.get("data") or {})),
                _AGE_BUILTIN],
    "serviceaccounts": [_NAME, _col("Secrets", lambda o: len(o.get("secrets") or [])), _AGE_BUILTIN],
    "services": [_NAME, _col("Type", lambda o: _get(o, "spec", "type") or "ClusterIP"),
                 _col("Cluster-IP", lambda o: _get(o, "spec", "clusterIP") or _NONE),
                 _col("External-IP", lambda o: ",".join(_get(o, "spec", "externalIPs") or []) or _NONE),
                 _col("Port(s)", _ports), _AGE_BUILTIN,
                 _col("Selector", lambda o: _selector(_get(o, "spec", "selector")) or _NONE, priority=1)],
    "pods": [_NAME,
             _col("Ready", lambda o: f"{sum(1 for c in _get(o, 'status', 'containerStatuses') or [] if c.get('ready'))}"
                                     f"/{len(_get(o, 'spec', 'containers') or [])}"),
             _col("Status", lambda o: "Terminating" if _get(o, "metadata", "deletionTimestamp") else (
                 _get(o, "status", "reason") or _get(o, "status", "phase") or "")),
             _col("Restarts", lambda o: str(sum(c.get("restartCount", 0)
                                                for c in _get(o, "status", "containerStatuses") or []))),
             _AGE_BUILTIN,
             _col("IP", lambda o: _get(o, "status", "podIP") or _NONE, priority=1),
             _col("Node", lambda o: _get(o, "spec", "nodeName") or _NONE, priority=1),
             _col("Nominated Node", lambda o: _get(o, "status", "nominatedNodeName") or _NONE, priority=1),
             _col("Readiness Gates", _readiness_gates, priority=1)],
    "deployments": [_NAME,
                    _col("Ready", lambda o: f"{_get(o, 'status', 'readyReplicas') or 0}/"
                                            f"{_get(o, 'spec', 'replicas') if _get(o, 'spec', 'replicas') is not None else 1}"),
                    _col("Up-to-date", lambda o: _get(o, "status", "updatedReplicas") or 0),
                    _col("Available", lambda o: _get(o, "status", "availableReplicas") or 0), _AGE_BUILTIN,
                    _col("Containers", lambda o: _containers(o, "name"), priority=1),
                    _col("Images", lambda o: _containers(o, "image"), priority=1),
                    _col("Selector", lambda o: _selector(_get(o, "spec", "selector", "matchLabels")), priority=1)],
    "replicasets": [_NAME,
                    _col("Desired", lambda o: _get(o, "spec", "replicas") if _get(o, "spec", "replicas") is not None
                         else 1, type="integer"),
                    _col("Current", lambda o: _get(o, "status", "replicas") or 0, type="integer"),
                    _col("Ready", lambda o: _get(o, "status", "readyReplicas") or 0, type="integer"), _AGE_BUILTIN,
                    _col("Containers", lambda o: _containers(o, "name"), priority=1),
                    _col("Images", lambda o: _containers(o, "image"), priority=1),
                    _col("Selector", lambda o: _selector(_get(o, "spec", "selector", "matchLabels")), priority=1)],
    "leases": [_NAME, _col("Holder", lambda o: _get(o, "spec", "holderIdentity") or ""), _AGE_BUILTIN],
    "events": [_col("Last Seen", lambda o: _event_cells(o)["last"]),
               _col("Type", lambda o: o.get("type") or ""),
               _col("Reason", lambda o: o.get("reason") or ""),
               _col("Object", lambda o: _event_cells(o)["target"]),
               _col("Subobject", lambda o: _get(o, "involvedObject", "fieldPath") or _get(o, "regarding", "fieldPath")
                    or "", priority=1),
               _col("Source", lambda o: _event_cells(o)["source"], priority=1),
               _col("Message", lambda o: str(o.get("message") or o.get("note") or "").strip()),
               _col("First Seen", lambda o: _event_cells(o)["first"], priority=1),
               _col("Count", lambda o: _event_cells(o)["count"], priority=1),
               {**_NAME, "priority": 1}],
    "customresourcedefinitions": [_NAME, {"name": "Created At", "type": "date",
                                          "jsonPath": ".metadata.creationTimestamp", "description": "Creation time"}],
}
_TOKEN = re.compile(r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]|\['([^']+)'\]""")


def columns(resource: resources.Resource) -> list[dict[str, Any]]:
    if resource.custom:
        return [_NAME] + (list(resource.printer_columns) or [_AGE])
    return _BUILTIN_COLUMNS.get(resource.plural, [_NAME, _AGE_BUILTIN])


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
    if "compute" in column:
        return column["compute"](obj)
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
