"""Conversion between the two Event APIs, which share storage like in kube-apiserver.

Events are stored in whichever shape they were written (core v1 or events.k8s.io/v1) and
converted when read through the other API. Only the renamed fields are mapped.
"""
from __future__ import annotations

from typing import Any

# core/v1 field → events.k8s.io/v1 field
_RENAMED = {
    "involvedObject": "regarding",
    "message": "note",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "related": "related",
    "reportingComponent": "reportingController",
}


def core_to_events(obj: dict[str, Any]) -> dict[str, Any]:
    result = {_RENAMED.get(k, k): v for k, v in obj.items()}
    result["apiVersion"] = "events.k8s.io/v1"
    result.setdefault("eventTime", None)
    return result


def events_to_core(obj: dict[str, Any]) -> dict[str, Any]:
    back = {v: k for k, v in _RENAMED.items()}
    result = {back.get(k, k): v for k, v in obj.items()}
    result["apiVersion"] = "v1"
    return result
