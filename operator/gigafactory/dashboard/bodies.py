"""Printing values read from raw bodies that may be odd (a status a runner or an older operator wrote
oddly): each answers something printable and never fails, so one strange job cannot fail a page.
The parts of an object are read through the typed views of models/objects.py; these turn what they
hold into text, numbers and kubectl-style ages (`gigafactory get` and `factories` print ages with
them too).
"""

import datetime
from typing import Any


def text(value: Any) -> str:
    return "" if value is None else str(value)


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
