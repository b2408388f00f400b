"""Malformed requests get 4xx Status answers, never 500s and never hangs."""
from __future__ import annotations

import pytest

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget, widgets_path


def test_invalid_json_is_bad_request(raw, namespace):
    code, status = raw.json("POST", widgets_path(namespace), raw=b"{not json", content_type="application/json")
    assert code == 400 and status["reason"] == "BadRequest" and status["kind"] == "Status"


@pytest.mark.parametrize("path", [
    "/apis/conformance.gigafactory.dev/v1/namespaces/default/nothings",
    "/apis/no.such.group/v1/things",
    "/api/v1/namespaces/default/widgets",
    "/not/an/api/path",
])
def test_unknown_resources_are_not_found(raw, path):
    code, status = raw.json("GET", path)
    assert code == 404 and status["reason"] == "NotFound" and status["kind"] == "Status"


def test_kind_mismatch_is_bad_request(raw, namespace):
    body = widget("w")
    body["kind"] = "Gadget"
    code, status = raw.json("POST", widgets_path(namespace), body)
    assert code == 400 and status["reason"] == "BadRequest"


def test_namespace_mismatch_is_bad_request(raw, namespace):
    body = widget("w")
    body["metadata"]["namespace"] = "default"
    code, status = raw.json("POST", widgets_path(namespace), body)
    assert code == 400
    assert status["message"] == "the namespace of the provided object does not match the namespace sent on the request"


def test_unsupported_method_is_method_not_allowed(raw, namespace):
    code, status = raw.json("POST", widgets_path(namespace, "w"), widget("w"))
    assert code == 405 and status["reason"] == "MethodNotAllowed"


def test_unknown_patch_type_is_unsupported_media_type(raw, custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    code, status = raw.json("PATCH", widgets_path(namespace, "w"), {"spec": {}}, content_type="text/plain")
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
