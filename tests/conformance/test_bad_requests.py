"""Malformed requests get 4xx Status answers, never 500s and never hangs."""
from __future__ import annotations

import json

import pytest

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget, widgets_path


def test_invalid_json_is_bad_request(raw, namespace):
    code, status = raw.json("POST", widgets_path(namespace), raw=b"{not json", content_type="application/json")
    assert code == 400 and status["reason"] == "BadRequest" and status["kind"] == "Status"


@pytest.mark.parametrize("path", [
    "/apis/conformance.gigafactory.dev/v1/namespaces/default/nothings",
    "/apis/conformance.gigafactory.dev/v2/widgets",
    "/apis/no.such.group/v1/things",
    "/api/v1/namespaces/default/widgets",
    "/apis/apps/v1/namespaces/default/nothings",
    "/not/an/api/path",
    "/version/x",
])
def test_unknown_resources_are_not_found(raw, path):
    # A 404 either way; kube-apiserver answers a Status where a built-in API (/api, /apis/apps...)
    # owns the path, and a plain "404 page not found" where nothing does (unknown groups, unknown
    # resources or versions of a CRD's group, non-API paths). Clients must cope with both.
    response = raw.request("GET", path)
    assert response.status == 404
    if response.headers.get("Content-Type", "").startswith("application/json"):
        status = json.loads(response.data)
        assert status["kind"] == "Status" and status["reason"] == "NotFound" and status["code"] == 404
    else:
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.data.decode().strip() == "404 page not found"


def test_kind_mismatch_of_a_custom_resource_is_invalid(raw, namespace):
    body = widget("w")
    body["kind"] = "Gadget"
    code, status = raw.json("POST", widgets_path(namespace), body)
    assert code == 422 and status["reason"] == "Invalid"
    assert {"field": "kind", "reason": "FieldValueInvalid",
            "message": 'Invalid value: "Gadget": must be Widget'} in status["details"]["causes"]


def test_kind_mismatch_of_a_builtin_is_bad_request(raw, namespace):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}})
    assert code == 400 and status["reason"] == "BadRequest"
    assert status["message"].startswith('Secret in version "v1" cannot be handled as a ConfigMap')


def test_api_version_mismatch_is_bad_request(raw, namespace):
    body = widget("w")
    body["apiVersion"] = f"{GROUP}/v2"
    code, status = raw.json("POST", widgets_path(namespace), body)
    assert code == 400 and status["reason"] == "BadRequest"
    assert status["message"] == (f"the API version in the data ({GROUP}/v2) does not match the expected API "
                                 f"version ({GROUP}/{VERSION})")


def test_namespace_mismatch_is_bad_request(raw, namespace):
    body = widget("w")
    body["metadata"]["namespace"] = "default"
    code, status = raw.json("POST", widgets_path(namespace), body)
    assert code == 400
    assert status["message"] == "the namespace of the provided object does not match the namespace sent on the request"


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/v1/namespaces/{namespace}/configmaps/c"),
    ("PUT", "/api/v1/namespaces/{namespace}/configmaps"),
    ("PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments"),
])
def test_unsupported_method_is_method_not_allowed(raw, namespace, method, path):
    code, status = raw.json(method, path.format(namespace=namespace), {"metadata": {"name": "c"}},
                            content_type="application/merge-patch+json" if method == "PATCH" else "application/json")
    assert code == 405 and status["reason"] == "MethodNotAllowed"


def test_custom_resources_take_the_verb_from_the_method(raw, custom, namespace):
    # The CRD handler picks the verb from the method and the name's presence alone: a POST to an
    # object's URL is a create (of the body's name), an update or patch of the collection lacks a name.
    code, created = raw.json("POST", widgets_path(namespace, "ignored"), widget("w"))
    assert code == 201 and created["metadata"]["name"] == "w"
    assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")["spec"]["size"] == 1
    for method, content_type in [("PUT", "application/json"), ("PATCH", "application/merge-patch+json")]:
        code, status = raw.json(method, widgets_path(namespace), widget("w"), content_type=content_type)
        assert (code, status["reason"], status["message"]) == (400, "BadRequest", "name must be provided")


def test_unknown_patch_type_is_unsupported_media_type(raw, custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    code, status = raw.json("PATCH", widgets_path(namespace, "w"), {"spec": {}}, content_type="text/plain")
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
