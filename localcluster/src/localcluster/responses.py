"""The server's JSON answers, and the query parameters every verb parses alike."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from localcluster import errors

JSON = "application/json"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def respond(obj: Any, status: int = 200, headers: dict[str, str] | None = None,
            content_type: str = JSON) -> web.Response:
    return web.Response(body=dumps(obj), status=status, headers={"Content-Type": content_type, **(headers or {})})


def int_param(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing {json.dumps(value)}: invalid syntax') from None
