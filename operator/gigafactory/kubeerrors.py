"""The API server's answers as typed exceptions: a Status in, the class a caller catches out.

Re-exported by `kubeclient` (callers write `kubeclient.NotFound`); kept apart so that the client
itself stays about requests, credentials and watches.
"""

import json
from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """A failed API call, with the Status the server answered."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = dict(body or {})


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409 Conflict: a stale resourceVersion (someone else wrote first)."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: the name is taken."""


class Gone(ApiError):
    """410 Gone: a watch's resourceVersion is too old; list again."""


class Invalid(ApiError):
    """422 Invalid: the object breaks the schema."""


class Unauthorized(ApiError):
    """401 Unauthorized: the server took no credentials we have, even after reading them again; or
    no credentials could be had (a token file unreadable, an exec plugin failed)."""


def parse(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def error_from_response(status: int, text: str) -> ApiError:
    payload = parse(text)
    return error_for(status, payload if isinstance(payload, dict) else {}, text)


def error_for(status: int, body: Mapping[str, Any], text: str) -> ApiError:
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or text[:500])
    if status == 404:
        return NotFound(status, reason or "NotFound", message, body)
    if status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(status, reason or "Conflict", message, body)
    if status == 410:
        return Gone(status, reason or "Gone", message, body)
    if status == 422:
        return Invalid(status, reason or "Invalid", message, body)
    if status == 401:
        return Unauthorized(status, reason or "Unauthorized", message, body)
    return ApiError(status, reason or "Error", message, body)
