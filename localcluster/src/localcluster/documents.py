"""The server's documents: discovery (legacy and aggregated), OpenAPI v2 and v3, and the request
counters of `/_gigafactory/requests`. A mixin of server.Server; the documents' contents are discovery.py's.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from localcluster import discovery, errors, responses

logger = logging.getLogger(__name__)
Obj = dict[str, Any]

OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"  # as kube-apiserver labels it
OPENAPI_V2_EMPTY_PROTOBUF = b"\x0a\x032.0"  # gnostic openapi_v2.Document{swagger: "2.0"}


class Documents:
    """The endpoints that describe the API rather than serve its objects."""

    def _meta(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts[1:] != ["requests"]:
            raise errors.not_found_path()
        if request.method == "DELETE":
            self.counts.clear()
            return responses.respond({"total": 0, "counts": []})
        counts = [{"verb": verb, "resource": resource, "count": n}
                  for (verb, resource), n in sorted(self.counts.items())]
        return responses.respond({"total": sum(self.counts.values()), "internalErrors": self.internal_errors,
                        "counts": counts})

    def _discovery(self, request: web.Request, parts: list[str]) -> web.Response:
        self.counts[("discovery", request.path)] += 1
        accept = request.headers.get("Accept", "")
        if len(parts) == 1:
            version = _aggregated_version(accept)
            if version is not None:
                body = discovery.aggregated(self.cluster.registry, legacy=parts[0] == "api", api_version=version)
                return responses.respond(body, content_type=discovery.AGGREGATED.format(version))
            if parts[0] == "api":
                return responses.respond(discovery.api_versions(self.address))
            return responses.respond(discovery.api_group_list(self.cluster.registry))
        if parts[0] == "apis" and len(parts) == 2:
            found = discovery.api_group(self.cluster.registry, parts[1])
            if found is not None:
                return responses.respond(found)
        raise errors.not_found_path()

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        self.counts[("openapi", "/".join(parts[:2]))] += 1
        registry = self.cluster.registry
        if parts[1:] == ["v2"]:
            accept = request.headers.get("Accept", "")
            if "protobuf" in accept and "json" not in accept:
                # kubectl asks for v2 in protobuf only when v3 has no schema for a kind (a misspelt
                # kind, say). An OpenAPI v2 Document that holds only `swagger: "2.0"` has no schema for
                # it either, so kubectl goes on to say what kube-apiserver's answer makes it say:
                # `no matches for kind "AgentJobb"` (with JSON it failed to parse the proto instead).
                return web.Response(body=OPENAPI_V2_EMPTY_PROTOBUF, headers={"Content-Type": OPENAPI_V2_PROTOBUF})
            return responses.respond(discovery.openapi_v2(registry))
        if parts[1:] == ["v3"]:
            return responses.respond(discovery.openapi_v3_root(registry, self.cluster.schema_version))
        if len(parts) >= 4 and parts[1] == "v3":
            if parts[2] == "api" and len(parts) == 4:
                found = discovery.openapi_v3_group_version(registry, "", parts[3])
            elif parts[2] == "apis" and len(parts) == 5:
                found = discovery.openapi_v3_group_version(registry, parts[3], parts[4])
            else:
                found = None
            if found is not None:
                return responses.respond(found)
        raise errors.not_found_path()


def _aggregated_version(accept: str) -> str | None:
    """The first aggregated discovery version the client accepts that we serve: v2 as kube-apiserver
    1.30+ does, v2beta1 as 1.26-1.32 do (v1.28.7, the reference, serves only v2beta1)."""
    for offer in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in offer.split(";")[1:])
        if (params.get("g"), params.get("as")) == ("apidiscovery.k8s.io", "APIGroupDiscoveryList") \
                and params.get("v") in ("v2", "v2beta1"):
            return params["v"]
    return None
