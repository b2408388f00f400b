"""Kubernetes `Status` error objects, shaped exactly as kube-apiserver returns them.

Clients branch on `reason` and `code` (kopf retries on 409, the `kubernetes` client raises
`ApiException` with the body), so every failure the emulator reports goes through here.
"""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error to answer with a Status body and its HTTP code."""

    def __init__(self, status: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status.get("message", ""))
        self.status = status
        self.code: int = status["code"]
        self.headers = headers or {}
        self.no_route = False  # the URL names no resource (see not_found_path)
        self.close_connection = False  # answer, then close (a body that never finished arriving)


def status(
    *,
    code: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def success(*, name: str, group: str, kind: str, uid: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind} if group else {"name": name, "kind": kind}
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def _qualified(plural: str, group: str) -> str:
    # The real server names resources as "<plural>.<group>", or bare "<plural>" in the core group.
    return f"{plural}.{group}" if group else plural


def not_found(*, plural: str, group: str, name: str) -> ApiError:
    return ApiError(status(
        code=404, reason="NotFound",
        message=f'{_qualified(plural, group)} "{name}" not found',
        details={"name": name, "group": group, "kind": plural},
    ))


def not_found_path() -> ApiError:
    # What kube-apiserver answers for a URL under a built-in API (/api, /apis/apps...) that names no resource.
    error = ApiError(status(code=404, reason="NotFound", message="the server could not find the requested resource",
                            details={}))
    error.no_route = True
    return error


class PageNotFound(Exception):
    """A URL no built-in API owns (unknown groups, a CRD group's unknown resources, non-API paths):
    kube-apiserver's last handler answers a plain-text "404 page not found", not a Status."""


def already_exists(*, plural: str, group: str, name: str) -> ApiError:
    return ApiError(status(
        code=409, reason="AlreadyExists",
        message=f'{_qualified(plural, group)} "{name}" already exists',
        details={"name": name, "group": group, "kind": plural},
    ))


def conflict(*, plural: str, group: str, name: str, message: str | None = None) -> ApiError:
    message = message or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(status(
        code=409, reason="Conflict",
        message=f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {message}',
        details={"name": name, "group": group, "kind": plural},
    ))


def precondition_failed(*, kind: str, group: str, name: str, message: str) -> ApiError:
    """409 for a failed delete precondition; kube-apiserver names the kind here, not the resource."""
    return ApiError(status(
        code=409, reason="Conflict",
        message=f'Operation cannot be fulfilled on {kind}{"." + group if group else ""} "{name}": {message}',
        details={"name": name, "group": group, "kind": kind} if group else {"name": name, "kind": kind},
    ))


def invalid(*, kind: str, group: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid; each cause is {"reason", "message", "field"} as in field.ErrorList."""
    rendered = [f'{c["field"]}: {c["message"]}' if c.get("field") else c["message"] for c in causes]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    return ApiError(status(
        code=422, reason="Invalid",
        message=f'{qualified_kind} "{name}" is invalid: {summary}',
        details={"name": name, "group": group, "kind": kind, "causes": causes},
    ))


def bad_request(message: str) -> ApiError:
    return ApiError(status(code=400, reason="BadRequest", message=message))


def forbidden(*, plural: str, group: str, name: str, message: str) -> ApiError:
    return ApiError(status(
        code=403, reason="Forbidden",
        message=f'{_qualified(plural, group)} "{name}" is forbidden: {message}',
        details={"name": name, "group": group, "kind": plural},
    ))


def gone(message: str) -> ApiError:
    return ApiError(status(code=410, reason="Expired", message=message))


def method_not_allowed(message: str | None = None) -> ApiError:
    message = message or "the server does not allow this method on the requested resource"
    return ApiError(status(code=405, reason="MethodNotAllowed", message=message, details={}))


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(status(
        code=415, reason="UnsupportedMediaType",
        message=f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(accepted)}",
    ))


def not_acceptable(message: str) -> ApiError:
    return ApiError(status(code=406, reason="NotAcceptable", message=message, details={}))


def internal(message: str) -> ApiError:
    return ApiError(status(
        code=500, reason="InternalError",
        message=f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    ))


def cause(field: str, reason: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}
