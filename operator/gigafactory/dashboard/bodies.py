"""Reading raw bodies that may be odd (a status a runner or an older operator wrote oddly): each
reader answers something printable and never fails, so one strange job cannot fail a page.
"""

import datetime
from collections.abc import Mapping
from typing import Any

from gigafactory.models import agentjobs

Body = Mapping[str, Any]


def meta(body: Body) -> Mapping[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str:
    return "" if value is None else str(value)


def phase_of(body: Body) -> str:
    return text(mapping(body.get("status")).get("phase")) or agentjobs.Phase.PENDING.value


def placement(body: Body) -> tuple[str, str]:
    """(factory, pod) of the current attempt, or of the last one once it ended."""
    status = mapping(body.get("status"))
    assignment = mapping(status.get("assignment"))
    attempts = items(status.get("attempts"))
    last = mapping(attempts[-1]) if attempts else {}
    factory = assignment.get("factory") or status.get("factory") or last.get("factory") or ""
    pod = assignment.get("pod") or status.get("pod") or last.get("pod") or ""
    return text(factory), text(pod)


def age(moment: datetime.datetime | None, *, now: datetime.datetime) -> str:
    """A duration as kubectl prints an age: 5s, 3m, 2h, 4d."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    return duration(max(seconds, 0))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
