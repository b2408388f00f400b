"""What a request must show before the embedded server serves it, and the limits on what it may send.

`gigafactory dev` serves on loopback, where every local user and every page a browser opens can
reach it. So, as kube-apiserver does for its own clients:

- **a bearer token** (random per server, written into its 0600 kubeconfig): 401 without it;
- **its own Host** (`127.0.0.1:<port>` or `localhost:<port>`): a page that DNS-rebinds a name of
  its own onto 127.0.0.1 sends its own name, and gets 403;
- **a media type of the API** on every body (JSON, YAML, protobuf, the patch types): a browser's
  "simple" cross-site POST (`text/plain`, forms) gets 415 as from kube-apiserver;
- **sizes**: a request body over 3 MiB gets 413 (kube-apiserver's limit), an object over etcd's
  1.5 MiB request limit is not stored (`storing.MAX_OBJECT_BYTES`: 500 `etcdserver: request is too
  large`, kube-apiserver's answer), a body nested deeper than `MAX_DEPTH` gets 400 (never a RecursionError's 500), and YAML
  aliases that expand beyond `MAX_NODES` get 400;
- **time**: a connection that has not sent a complete request head within `HEADER_TIMEOUT_SECONDS`
  (kube-apiserver's ReadHeaderTimeout) is closed, and a body that takes longer than
  `BODY_TIMEOUT_SECONDS` to arrive is answered 504 and the connection closed (slowloris).

Servers that tests start directly may leave the token out (`token=None`); everything else holds.
"""
from __future__ import annotations

import hmac
import json
from typing import Any

import yaml

from localcluster import errors

# kube-apiserver: --max-request-body-bytes defaults to 3 MiB (DefaultMaxRequestSizeBytes).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
# kube-apiserver's JSON and YAML decoders stop at 10,000 levels; Python's recursion (json, copying,
# validation) gives out well before that, so the embedded server stops much earlier: far deeper than
# any real object (a pod template nests about 12 levels, the deepest CRD schemas about 60).
MAX_DEPTH = 200
# YAML aliases let a small body stand for a huge tree (the "billion laughs"): at most this many
# values, counting each use of an alias anew (a 3 MiB JSON body holds fewer than 1.6 million).
MAX_NODES = 2_000_000
# kube-apiserver's http.Server: ReadHeaderTimeout 32 s. Its request timeout (60 s) covers the body.
HEADER_TIMEOUT_SECONDS = 32.0
BODY_TIMEOUT_SECONDS = 60.0

# Paths kube-apiserver lets anyone read (system:public-info-viewer) when no credentials are sent.
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
BODY_TYPES = (JSON, YAML, PROTOBUF)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host headers that name this server: its address, and `localhost` when it is loopback."""
    names = {host}
    if host in ("127.0.0.1", "localhost"):
        names |= {"127.0.0.1", "localhost"}
    return frozenset(f"{name}:{port}" for name in names)


def check_host(header: str | None, allowed: frozenset[str]) -> None:
    if header is None or header.lower() not in allowed:
        raise errors.ApiError(errors.status(
            code=403, reason="Forbidden",
            message=f"host {json.dumps(header or '')} is not this server's address ({', '.join(sorted(allowed))}): "
                    f"refused, as a page that rebinds a name of its own to 127.0.0.1 would send it"))


def check_token(path: str, authorization: str | None, token: str | None) -> None:
    """401 Unauthorized (kube-apiserver's body) unless the request carries the server's token."""
    if token is None or (authorization is None and path in PUBLIC_PATHS):
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise unauthorized()


def unauthorized() -> errors.ApiError:
    return errors.ApiError(errors.status(code=401, reason="Unauthorized", message="Unauthorized"))


def too_large() -> errors.ApiError:
    return errors.ApiError(errors.status(code=413, reason="RequestEntityTooLarge",
                                         message=f"Request entity too large: limit is {MAX_REQUEST_BYTES}"))


def body_timeout() -> errors.ApiError:
    return errors.ApiError(errors.status(
        code=504, reason="Timeout", details={},
        message="Timeout: request did not complete within requested timeout - context deadline exceeded"))


def unsupported_body(content_type: str) -> errors.ApiError:
    """kube-apiserver's 415 for a create, update or delete body of another media type."""
    body = errors.status(code=415, reason="UnsupportedMediaType",
                         message="the body of the request was in an unknown format - accepted media types include: "
                                 + ", ".join(BODY_TYPES))
    return errors.ApiError(body)


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, without parameters; empty when there is none."""
    return (header or "").split(";")[0].strip().lower()


def check_shape(value: Any, *, what: str = "json") -> Any:
    """`value` if it nests at most MAX_DEPTH levels and holds at most MAX_NODES values (each use of a
    shared YAML alias counted), else 400. Iterative: it must not itself run out of stack."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise errors.bad_request(f"{what} parse error: document contains excessive aliasing "
                                     f"(more than {MAX_NODES} values)")
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > MAX_DEPTH:
            raise exceeded(what)
        stack.extend((child, depth + 1) for child in children)
    return value


def exceeded(what: str) -> errors.ApiError:
    return errors.bad_request(f"{what} parse error: exceeded max depth of {MAX_DEPTH}")


def load_json(raw: bytes, *, empty: Any = None) -> Any:
    """json.loads held to the limits; ValueError for what is not JSON (callers word that 400)."""
    if not raw.strip():
        return empty
    try:
        value = json.loads(raw)
    except RecursionError:
        raise exceeded("json") from None
    return check_shape(value)


def load_yaml(raw: bytes) -> Any:
    """yaml.safe_load held to the limits; yaml.YAMLError for what is not YAML."""
    try:
        value = yaml.safe_load(raw)
    except RecursionError:
        raise exceeded("yaml") from None
    return check_shape(value, what="yaml")
