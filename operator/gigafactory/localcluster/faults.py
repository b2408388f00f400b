"""The fault-injection hook: a policy consulted before every API request.

The default policy injects nothing. A policy may return a response (an error Status, a 429 with
Retry-After), sleep before returning None (a slow server), or return None to let the request
through; the watch stream also asks `drop_watch()` between events.
"""
from __future__ import annotations

import dataclasses

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class Call:
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


class NoFaults:
    async def before(self, request: web.Request, call: Call) -> web.StreamResponse | None:
        return None

    def drop_watch(self, call: Call) -> bool:
        return False
