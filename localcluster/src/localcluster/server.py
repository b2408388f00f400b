"""The HTTP layer: aiohttp routes that parse Kubernetes API URLs into calls on the cluster.

Also: discovery/OpenAPI endpoints, Table content negotiation, watch streaming, per-verb request
counters (`/_gigafactory/requests`), the fault-injection hook, and a last-resort middleware that
turns any unexpected exception into a 500 Status (tests assert it never fires).
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

import yaml
from aiohttp import web

from localcluster import (discovery, documents, errors, faults, guarding, handling, protobufs, resources, responses,
                          streaming, tables)

logger = logging.getLogger(__name__)
Obj = dict[str, Any]
_JSON = responses.JSON
_READ_VERBS = {"get", "list", "watch"}


class Server(documents.Documents, streaming.Streaming):
    """Routes, guards and the verbs on resources; discovery/OpenAPI documents and watch streams are its mixins."""

    def __init__(self, cluster: handling.Cluster | None = None, *, bookmark_interval: float = 5.0,
                 default_watch_timeout: float = 1800.0, token: str | None = None,
                 body_timeout: float = guarding.BODY_TIMEOUT_SECONDS) -> None:
        self.cluster = cluster or handling.Cluster()
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        # The bearer token every request must carry (guarding.check_token); None: no check (tests).
        self.token = token
        self.body_timeout = body_timeout
        self.faults: Any = faults.NoFaults()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.internal_errors = 0
        self.address = "127.0.0.1:0"
        # The Host headers that name this server, set once it listens (guarding.check_host).
        self.hosts: frozenset[str] | None = None
        self.app = web.Application(middlewares=[self._guard, self._catch_all],
                                   client_max_size=guarding.MAX_REQUEST_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Host first (a rebinding page learns nothing, not even whether a token is needed), then the token."""
        try:
            if self.hosts is not None:
                guarding.check_host(request.headers.get("Host"), self.hosts)
            guarding.check_token(request.path, request.headers.get("Authorization"), self.token)
        except errors.ApiError as e:
            return responses.respond(e.status, status=e.code)
        return await handler(request)

    @web.middleware
    async def _catch_all(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as e:
            response = responses.respond(e.status, status=e.code, headers=e.headers)
            if e.close_connection:
                response.force_close()
            return response
        except web.HTTPRequestEntityTooLarge:
            return responses.respond(guarding.too_large().status, status=413)
        except errors.PageNotFound:
            return web.Response(status=404, text="404 page not found\n", charset="utf-8")
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # The client went away mid-request (a killed process): nobody to answer, nothing to log.
            return web.Response(status=499)
        except web.HTTPException:
            raise
        except Exception as e:
            self.internal_errors += 1
            logger.exception("internal error serving %s %s", request.method, request.path_qs)
            error = errors.internal(f"{type(e).__name__}: {e}")
            return responses.respond(error.status, status=500)

    # --- routing ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except errors.ApiError as e:
            # Only the built-in APIs answer a missing resource with a Status.
            parts = [p for p in request.path.split("/") if p]
            if e.no_route and not (parts[:1] in (["api"], ["version"]) or (
                    parts[:1] == ["apis"] and len(parts) >= 2 and parts[1] in resources.BUILTIN_GROUPS)):
                raise errors.PageNotFound() from None
            raise

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return responses.respond({"paths": ["/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version"]})
        head = parts[0]
        if head in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if head == "_gigafactory":
            if parts[1:] == ["faults"]:
                return await self._faults(request)
            return self._meta(request, parts)
        if parts == ["version"]:
            return responses.respond(discovery.VERSION)
        if head == "version":
            raise errors.not_found_path()
        if head == "openapi":
            return self._openapi(request, parts)
        if head == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif head == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif head in ("api", "apis"):
            return self._discovery(request, parts)
        else:
            raise errors.not_found_path()
        if not rest:
            if request.method != "GET":
                raise errors.method_not_allowed()
            found = discovery.api_resource_list(self.cluster.registry, group, version)
            if found is None:
                raise errors.not_found_path()
            return responses.respond(found)
        return await self._resource_request(request, group, version, rest)

    async def _faults(self, request: web.Request) -> web.Response:
        """GET: the fault policy and what it injected; PUT: a new policy (faults.FaultPolicy fields)."""
        if request.method == "PUT":
            if guarding.media_type(request.headers.get("Content-Type")) not in ("", _JSON):
                raise guarding.unsupported_body(request.headers.get("Content-Type", ""))
            try:
                self.faults = faults.FaultPolicy.from_json(guarding.load_json(await _read(request, self.body_timeout)))
            except (ValueError, TypeError) as exc:
                raise errors.bad_request(f"bad fault policy: {exc}") from None
        elif request.method != "GET":
            raise errors.method_not_allowed()
        return responses.respond(self.faults.describe())

    async def _resource_request(self, request: web.Request, group: str, version: str,
                                rest: list[str]) -> web.StreamResponse:
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise errors.not_found_path()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        resource = self.cluster.registry.get(group, version, plural)
        if resource is None:
            raise errors.not_found_path()
        if (namespace is not None and not resource.namespaced) or (
                namespace is None and resource.namespaced and name is not None):
            raise errors.not_found_path()
        if subresource is not None and not (subresource == "status" and resource.status_subresource):
            raise errors.not_found_path()

        method = request.method
        query = request.query
        if subresource == "status" and method not in ("GET", "PUT", "PATCH"):
            # /status serves get, update and patch only (a DELETE there must not delete the object).
            verb = {"POST": "create", "DELETE": "delete"}.get(method, method.lower())
            raise errors.method_not_allowed(f'{verb} is not supported on resources of kind "{resource.qualified}"'
                                            if resource.custom else None)
        # ?watch= on an object's own URL is ignored (a plain get); /watch/... paths and collections watch.
        is_watch = watch_path or (query.get("watch", "").lower() in ("true", "1") and name is None)
        if method == "GET":
            verb = "get" if name is not None and not is_watch else ("watch" if is_watch else "list")
        elif method == "POST" and (name is None or (resource.custom and subresource is None)):
            # kube-apiserver's CRD handler takes the verb from the method alone: a POST to an object's
            # URL creates the body's object; built-in APIs have no such route (405).
            verb = "create"
        elif method in ("PUT", "PATCH") and name is None and resource.custom:
            raise errors.bad_request("name must be provided")
        elif method == "PUT" and name is not None:
            verb = "update"
        elif method == "PATCH" and name is not None:
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if name is not None else "deletecollection"
        else:
            raise errors.method_not_allowed()
        if verb not in resource.verbs and verb != "get":
            raise errors.method_not_allowed()

        if verb == "create" and resource.namespaced and namespace is None:
            raise errors.method_not_allowed()

        self.counts[(verb, resource.qualified + ("/" + subresource if subresource else ""))] += 1
        call = faults.Call(verb=verb, group=group, plural=plural, namespace=namespace, name=name,
                           subresource=subresource)
        injected = await self.faults.before(request, call)
        if injected is not None:
            return injected

        table = _wants_table(request.headers.get("Accept", ""))
        if verb not in _READ_VERBS:
            _check_accept(request.headers.get("Accept", ""))
        cluster = self.cluster
        options_kind = {"create": "CreateOptions", "update": "UpdateOptions", "patch": "PatchOptions"}.get(
            verb, "DeleteOptions")
        field_validation = query.get("fieldValidation", "Warn") or "Warn"
        if field_validation not in ("Strict", "Warn", "Ignore") and verb in ("create", "update", "patch"):
            raise _invalid_option(options_kind, "fieldValidation", "FieldValueNotSupported", (
                f'Unsupported value: {json.dumps(field_validation)}: supported values: "", "Ignore", "Strict", "Warn"'))
        dry_runs = query.getall("dryRun", [])
        if any(d != "All" for d in dry_runs) and verb not in _READ_VERBS:
            raise _invalid_option(options_kind, "dryRun", "FieldValueNotSupported", (
                f'Unsupported value: []string{{{", ".join(json.dumps(d) for d in dry_runs)}}}: supported values: "All"'))
        dry_run = "All" in dry_runs
        if verb in ("get", "list"):
            _check_read_resource_version(query, cluster.store.rv, listing=verb == "list")
        warnings: list[str] = []
        if verb == "watch":
            if "sendInitialEvents" in query and query.get("resourceVersionMatch") != "NotOlderThan":
                raise _invalid_option("ListOptions", "resourceVersionMatch", "FieldValueForbidden",
                                      "Forbidden: sendInitialEvents requires setting resourceVersionMatch to "
                                      "NotOlderThan")
            if name is not None:
                query = _with_name_selector(query, name)
            return await self._watch(request, resource, namespace, query, call, table)
        if verb == "list":
            responses.int_param(query.get("timeoutSeconds"))
            listed = cluster.list(resource, namespace, label_selector=query.get("labelSelector"),
                                  field_selector=query.get("fieldSelector"), limit=responses.int_param(query.get("limit")),
                                  continue_token=query.get("continue"))
            if table:
                return responses.respond(tables.table(resource, listed["items"], metadata=listed["metadata"],
                                            include=query.get("includeObject", "Metadata")))
            return responses.respond(_list_body(resource, listed))
        if verb == "get":
            obj = cluster.get(resource, namespace, name or "")
            if table:
                return responses.respond(tables.table(resource, [obj], metadata={"resourceVersion": obj["metadata"].get(
                    "resourceVersion", "")}, include=query.get("includeObject", "Metadata")))
            return responses.respond(obj)
        if verb == "create":
            body = await _read_body(request, self.body_timeout)
            obj = cluster.create(resource, namespace, body, field_validation=field_validation, dry_run=dry_run,
                                 warnings=warnings)
            return responses.respond(obj, status=201, headers=_warning_headers(warnings))
        if verb == "update":
            body = await _read_body(request, self.body_timeout)
            obj = cluster.update(resource, namespace, name or "", body, subresource=subresource,
                                 field_validation=field_validation, dry_run=dry_run, warnings=warnings)
            return responses.respond(obj, headers=_warning_headers(warnings))
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            raw = await _read(request, self.body_timeout)
            # Server-side apply creates a missing object, and then answers 201 like a create.
            created = content_type == "application/apply-patch+yaml" and subresource is None and cluster.store.get(
                resources.storage_key(resource), namespace or "", name or "") is None
            obj = cluster.patch(resource, namespace, name or "", raw, content_type, subresource=subresource,
                                field_validation=field_validation, dry_run=dry_run,
                                field_manager=query.get("fieldManager"), force=query.get("force") == "true",
                                warnings=warnings)
            return responses.respond(obj, status=201 if created and not dry_run else 200, headers=_warning_headers(warnings))
        options = await _delete_options(request, self.body_timeout)
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        if verb == "delete":
            obj = cluster.delete(resource, namespace, name or "", options, dry_run=dry_run)
            status = 200
            if obj["metadata"].get("deletionTimestamp") and options.get("orphanDependents") is False:
                status = 202
            if not obj["metadata"].get("deletionTimestamp") and not (
                    resource.group == "" and resource.plural in ("pods", "services")):
                # Deleted at once: kube-apiserver's generic registry answers a Status, not the object
                # (pods and services return the object).
                obj = errors.success(name=obj["metadata"]["name"], group=resource.group, kind=resource.plural,
                                     uid=obj["metadata"].get("uid"))
            return responses.respond(obj, status=status)
        listed = cluster.delete_collection(resource, namespace, options, label_selector=query.get("labelSelector"),
                                           field_selector=query.get("fieldSelector"), dry_run=dry_run)
        return responses.respond(_list_body(resource, listed))

    # --- watch --------------------------------------------------------------------------------


def _invalid_option(kind: str, field: str, reason: str, message: str) -> errors.ApiError:
    return errors.invalid(kind=kind, group="meta.k8s.io", name="", causes=[errors.cause(field, reason, message)])


def _check_read_resource_version(query: Any, current: int, *, listing: bool) -> None:
    """resourceVersion/resourceVersionMatch of a get or list, checked as kube-apiserver checks them.
    Every resourceVersion up to the current one is served from the latest state (no compaction)."""
    rv, match = query.get("resourceVersion", ""), query.get("resourceVersionMatch", "")
    if listing and match:
        if match not in ("Exact", "NotOlderThan"):
            raise _invalid_option("ListOptions", "resourceVersionMatch", "FieldValueNotSupported", (
                f'Unsupported value: {json.dumps(match)}: supported values: "Exact", "NotOlderThan", ""'))
        if not rv:
            raise _invalid_option("ListOptions", "resourceVersionMatch", "FieldValueForbidden",
                                  "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")
        if match == "Exact" and rv == "0":
            raise _invalid_option("ListOptions", "resourceVersionMatch", "FieldValueForbidden",
                                  'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"')
    if rv in ("", "0"):
        return
    try:
        wanted = int(rv)
    except ValueError:
        raise errors.bad_request(f'resourceVersion: Invalid value: {json.dumps(rv)}: invalid syntax') from None
    if wanted > current:
        # kube-apiserver waits up to 3 s for its watch cache to catch up, then gives up like this.
        raise errors.ApiError(errors.status(
            code=504, reason="Timeout", message=f"Timeout: Too large resource version: {wanted}, current: {current}",
            details={"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                     "retryAfterSeconds": 1}), headers={"Retry-After": "1"})


def _list_body(resource: resources.Resource, listed: Obj) -> Obj:
    """kube-apiserver's lists of built-in kinds carry apiVersion/kind once, on the list, not on each
    item (custom resources are unstructured and keep theirs)."""
    if resource.custom:
        return listed
    items = [{k: v for k, v in item.items() if k not in ("apiVersion", "kind")} for item in listed["items"]]
    return {**listed, "items": items}


def _wants_table(accept: str) -> bool:
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def _check_accept(accept: str) -> None:
    if accept and "json" not in accept and "*/*" not in accept and "yaml" not in accept:
        raise errors.not_acceptable("only the following media types are accepted: application/json, "
                                    "application/yaml")


def _with_name_selector(query: Any, name: str) -> dict[str, str]:
    merged = dict(query)
    extra = f"metadata.name={name}"
    merged["fieldSelector"] = f"{merged['fieldSelector']},{extra}" if merged.get("fieldSelector") else extra
    return merged


def _warning_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None
    # aiohttp takes one value per header name here; the texts are joined as HTTP allows.
    return {"Warning": ", ".join('299 - ' + json.dumps(w) for w in warnings)}


async def _read(request: web.Request, timeout: float) -> bytes:
    """The whole body, within the body timeout and the size limit (guarding)."""
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        error = guarding.body_timeout()
        error.close_connection = True
        raise error from None
    except web.HTTPRequestEntityTooLarge:
        raise guarding.too_large() from None


async def _read_body(request: web.Request, timeout: float) -> Any:
    """A create or update body: JSON (also when no Content-Type is given, as kube-apiserver assumes),
    YAML or protobuf; any other media type (a browser form, text/plain) is 415."""
    content_type = guarding.media_type(request.headers.get("Content-Type")) or _JSON
    if content_type not in guarding.BODY_TYPES:
        raise guarding.unsupported_body(content_type)
    raw = await _read(request, timeout)
    if content_type == guarding.PROTOBUF:
        try:
            return protobufs.decode(raw)
        except (ValueError, IndexError, UnicodeDecodeError):
            raise errors.unsupported_media_type(content_type, [_JSON, "application/yaml"])
    try:
        if content_type == guarding.YAML:
            return guarding.load_yaml(raw)
        return guarding.load_json(raw, empty=None)
    except (ValueError, yaml.YAMLError) as e:
        raise errors.bad_request(f"the body of the request could not be decoded: {e}")


async def _delete_options(request: web.Request, timeout: float) -> Obj:
    raw = await _read(request, timeout)
    options: Obj = {}
    if raw.strip():
        content_type = guarding.media_type(request.headers.get("Content-Type")) or _JSON
        if content_type not in guarding.BODY_TYPES:
            raise guarding.unsupported_body(content_type)
        try:
            options = guarding.load_yaml(raw) if content_type == guarding.YAML else guarding.load_json(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"the DeleteOptions body could not be decoded: {e}")
        if not isinstance(options, dict):
            raise errors.bad_request("the DeleteOptions body must be an object")
    for param in ("propagationPolicy",):
        if param in request.query:
            options[param] = request.query[param]
    policy = options.get("propagationPolicy")
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise errors.invalid(kind="DeleteOptions", group="meta.k8s.io", name="", causes=[errors.cause(
            "propagationPolicy", "FieldValueNotSupported", f'Unsupported value: {json.dumps(policy)}: supported values: '
                                                           f'"Foreground", "Background", "Orphan", "nil"')])
    return options
