"""Fault injection: a policy consulted before every API request, and between watch events.

The default (`NoFaults`) injects nothing. `FaultPolicy` makes a share of requests fail, chosen by a
seeded RNG, with what a real API server and its load balancers do under stress:

    error         500 InternalError
    unavailable   503 ServiceUnavailable, with Retry-After: 1
    conflict      409 Conflict on writes only (the object has been modified)
    throttle      429 TooManyRequests, with Retry-After: 1
    slow          the request waits `delay` seconds, then goes through
    drop          a watch connection is cut mid-stream (checked before each event it would send)

Switch it on in code (`server.faults = FaultPolicy(rate=0.05, seed=1)`), over HTTP
(`PUT /_gigafactory/faults` with the same fields as JSON; `GET` shows the policy and what it injected;
`{"rate": 0}` switches it off), or at start (`python -m localcluster --faults 0.05`).
Discovery, OpenAPI and the /_gigafactory endpoints are never faulted.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
from typing import Any

from aiohttp import web

from localcluster import errors

KINDS = ("error", "unavailable", "conflict", "throttle", "slow", "drop")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclasses.dataclass(frozen=True)
class Call:
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


class NoFaults:
    rate = 0.0
    counts: collections.Counter[str] = collections.Counter()

    async def before(self, request: web.Request, call: Call) -> web.StreamResponse | None:
        return None

    def drop_watch(self, call: Call) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"rate": 0.0, "injected": {}}


@dataclasses.dataclass
class FaultPolicy:
    rate: float = 0.05
    seed: int | None = None
    kinds: tuple[str, ...] = KINDS
    delay: float = 0.5  # seconds, for "slow"
    verbs: tuple[str, ...] = ()  # empty: every verb
    resources: tuple[str, ...] = ()  # plurals; empty: every resource
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within 0..1, not {self.rate}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        self.kinds = tuple(self.kinds)
        self.verbs = tuple(self.verbs)
        self.resources = tuple(self.resources)
        self._random = random.Random(self.seed)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultPolicy | NoFaults:
        if not isinstance(data, dict):
            raise ValueError("the fault policy is a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - {"counts"}
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown fields {sorted(extra)}; known: {', '.join(sorted(known))}")
        if not float(data.get("rate", 0.05)):
            return NoFaults()
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    def describe(self) -> dict[str, Any]:
        return {"rate": self.rate, "seed": self.seed, "kinds": list(self.kinds), "delay": self.delay,
                "verbs": list(self.verbs), "resources": list(self.resources), "injected": dict(self.counts)}

    def _applies(self, call: Call) -> bool:
        return (not self.verbs or call.verb in self.verbs) and (not self.resources or call.plural in self.resources)

    async def before(self, request: web.Request, call: Call) -> web.StreamResponse | None:
        if not self._applies(call) or self._random.random() >= self.rate:
            return None
        choices = [k for k in self.kinds if k != "drop" and (k != "conflict" or call.verb in WRITE_VERBS)]
        if not choices:
            return None
        kind = self._random.choice(choices)
        self.counts[kind] += 1
        if kind == "slow":
            await asyncio.sleep(self.delay)
            return None
        what = f"{call.plural}{'/' + call.name if call.name else ''}"
        if kind == "error":
            return _status(500, "InternalError", f"Internal error occurred: injected fault on {call.verb} {what}")
        if kind == "unavailable":
            return _status(503, "ServiceUnavailable", "the server is currently unable to handle the request (injected)",
                           retry_after=1)
        if kind == "throttle":
            return _status(429, "TooManyRequests", "Too many requests, please try again later. (injected)", retry_after=1)
        return _status(409, "Conflict", f"Operation cannot be fulfilled on {what}: the object has been modified; "
                                        "please apply your changes to the latest version and try again (injected)")

    def drop_watch(self, call: Call) -> bool:
        if "drop" not in self.kinds or not self._applies(call) or self._random.random() >= self.rate:
            return False
        self.counts["drop"] += 1
        return True


def _status(code: int, reason: str, message: str, *, retry_after: int | None = None) -> web.Response:
    details = {"retryAfterSeconds": retry_after} if retry_after else None
    headers = {"Content-Type": "application/json"}
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    body = errors.status(code=code, reason=reason, message=message, details=details)
    return web.Response(body=json.dumps(body).encode(), status=code, headers=headers)
