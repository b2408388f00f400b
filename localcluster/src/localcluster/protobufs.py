"""A minimal decoder for the Kubernetes protobuf encoding of a few built-in kinds.

kubectl's typed commands (`kubectl create namespace|configmap|secret`) send protobuf bodies;
the emulator answers in JSON (kubectl accepts both) but has to read those bodies. Only the
fields these commands set are decoded: ObjectMeta basics, Namespace spec, ConfigMap and Secret
data. Other kinds get 415, as from a server that does not speak protobuf.
"""
from __future__ import annotations

import base64
from typing import Any, Iterator

MAGIC = b"k8s\x00"


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) pairs; length-delimited values come as bytes."""
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position:position + length], position + length
        elif wire == 1:
            value, position = data[position:position + 8], position + 8
        elif wire == 5:
            value, position = data[position:position + 4], position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, raw in fields(data):
        if number == 1:
            key = raw.decode()
        elif number == 2:
            value = raw
    return key, value


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, raw in fields(data):
        if number in names:
            meta[names[number]] = raw.decode()
        elif number == 11:
            key, value = _map_entry(raw)
            meta.setdefault("labels", {})[key] = value.decode()
        elif number == 12:
            key, value = _map_entry(raw)
            meta.setdefault("annotations", {})[key] = value.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(raw.decode())
    return meta


def decode(body: bytes) -> dict[str, Any]:
    """Decode a `k8s\\0`-framed runtime.Unknown holding a Namespace, ConfigMap or Secret."""
    if not body.startswith(MAGIC):
        raise ValueError("missing the k8s protobuf magic prefix")
    api_version = kind = ""
    raw = b""
    for number, value in fields(body[len(MAGIC):]):
        if number == 1:
            for sub, text in fields(value):
                if sub == 1:
                    api_version = text.decode()
                elif sub == 2:
                    kind = text.decode()
        elif number == 2:
            raw = value
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    for number, value in fields(raw):
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif kind == "Namespace" and number == 2:
            obj["spec"] = {"finalizers": [f.decode() for n, f in fields(value) if n == 1]}
        elif kind == "ConfigMap" and number in (2, 3):
            key, data = _map_entry(value)
            if number == 2:
                obj.setdefault("data", {})[key] = data.decode()
            else:
                obj.setdefault("binaryData", {})[key] = base64.b64encode(data).decode()
        elif kind == "ConfigMap" and number == 4:
            obj["immutable"] = bool(value)
        elif kind == "Secret" and number in (2, 4):
            key, data = _map_entry(value)
            if number == 2:
                obj.setdefault("data", {})[key] = base64.b64encode(data).decode()
            else:
                obj.setdefault("stringData", {})[key] = data.decode()
        elif kind == "Secret" and number == 3:
            obj["type"] = value.decode()
        elif kind == "Secret" and number == 5:
            obj["immutable"] = bool(value)
    if kind not in ("Namespace", "ConfigMap", "Secret"):
        raise ValueError(f"protobuf bodies of kind {kind!r} are not supported")
    return obj
