"""Discovery, OpenAPI, and CRDs becoming servable (and unservable) through the API."""
from __future__ import annotations

import json
import time

import kubernetes
import pytest

from tests.conftest import wait_for
from tests.conformance.conftest import GROUP, VERSION


def test_version(raw):
    code, body = raw.json("GET", "/version")
    assert code == 200 and body["major"] == "1" and body["gitVersion"].startswith("v1.")


def test_core_and_group_discovery(raw):
    code, api = raw.json("GET", "/api")
    assert code == 200 and api["kind"] == "APIVersions" and "v1" in api["versions"]
    code, groups = raw.json("GET", "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "coordination.k8s.io", "events.k8s.io", "apiextensions.k8s.io", GROUP} <= names
    code, group = raw.json("GET", f"/apis/{GROUP}")
    assert code == 200 and group["preferredVersion"]["groupVersion"] == f"{GROUP}/{VERSION}"


def test_resource_lists(raw):
    code, core = raw.json("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert {"namespaces", "pods", "events", "secrets", "configmaps", "serviceaccounts", "services"} <= set(by_name)
    assert by_name["namespaces"]["namespaced"] is False and by_name["pods"]["namespaced"] is True
    code, custom = raw.json("GET", f"/apis/{GROUP}/{VERSION}")
    by_name = {r["name"]: r for r in custom["resources"]}
    widgets = by_name["widgets"]
    assert widgets["kind"] == "Widget" and widgets["singularName"] == "widget" and widgets["namespaced"] is True
    assert widgets["shortNames"] == ["wg"] and widgets["categories"] == ["conformance"]
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(widgets["verbs"])
    assert set(by_name["widgets/status"]["verbs"]) == {"get", "patch", "update"}
    code, leases = raw.json("GET", "/apis/coordination.k8s.io/v1")
    assert "leases" in {r["name"] for r in leases["resources"]}


AGGREGATED = "application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList"


@pytest.mark.parametrize("offered", [
    pytest.param(["v2", "v2beta1"], id="as-kubectl"),  # client-go's order: v2 (GA in 1.30), v2beta1 (1.26-1.32)
    pytest.param(["v2beta1"], id="v2beta1"),  # clients of 1.26-1.29 (v1.28.7 serves only this one)
])
def test_aggregated_discovery(raw, offered):
    accept = ",".join([AGGREGATED.format(v) for v in offered] + ["application/json"])
    for path in ("/api", "/apis"):
        response = raw.request("GET", path, headers={"Accept": accept})
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        assert content_type in [AGGREGATED.format(v) for v in offered], content_type
        body = json.loads(response.data)
        version = content_type.split(";v=")[1].split(";")[0]
        assert (body["kind"], body["apiVersion"]) == ("APIGroupDiscoveryList", f"apidiscovery.k8s.io/{version}")
        if path == "/api":
            [core] = body["items"]
            assert "configmaps" in {r["resource"] for r in core["versions"][0]["resources"]}
    [group] = [g for g in body["items"] if g["metadata"].get("name") == GROUP]
    [widgets] = group["versions"][0]["resources"]
    assert widgets["resource"] == "widgets" and widgets["scope"] == "Namespaced"
    assert widgets["responseKind"] == {"group": GROUP, "version": VERSION, "kind": "Widget"}
    assert widgets["subresources"][0]["subresource"] == "status"


def test_unsupported_aggregated_discovery_version_falls_back(raw):
    # kube-apiserver v1.28 serves v2beta1 only: asked for v2 alone, it answers the plain APIGroupList.
    response = raw.request("GET", "/apis", headers={"Accept": AGGREGATED.format("v2") + ",application/json"})
    assert response.status == 200
    body = json.loads(response.data)
    if response.headers["Content-Type"] == "application/json":
        assert body["kind"] == "APIGroupList"
    else:
        assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"


def test_openapi_v3_has_crd_schemas(raw):
    code, root = raw.json("GET", "/openapi/v3")
    path = root["paths"][f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]
    code, document = raw.json("GET", path)
    assert code == 200
    schemas = [s for s in document["components"]["schemas"].values()
               if {"group": GROUP, "version": VERSION, "kind": "Widget"} in s.get("x-kubernetes-group-version-kind", [])]
    assert schemas and schemas[0]["properties"]["spec"]["properties"]["size"]["maximum"] == 1000


def test_crd_created_and_deleted_through_the_api(api_client, kubectl):
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    suffix = str(int(time.time() * 1000))[-8:]
    group, plural = "ephemeral.conformance.gigafactory.dev", f"gizmos{suffix}"
    extensions.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Cluster", "names": {"kind": f"Gizmo{suffix}", "plural": plural},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    try:
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.{group}")

        def created():
            try:
                return custom.create_cluster_custom_object(group, "v1", plural, {
                    "apiVersion": f"{group}/v1", "kind": f"Gizmo{suffix}", "metadata": {"name": "g"}})
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
        wait_for(created, timeout=30, message="the new resource to be served")
        assert custom.get_cluster_custom_object(group, "v1", plural, "g")["metadata"]["name"] == "g"
    finally:
        extensions.delete_custom_resource_definition(f"{plural}.{group}")

    def unserved():
        try:
            custom.list_cluster_custom_object(group, "v1", plural)
        except kubernetes.client.ApiException as e:
            return e.status == 404
        return False
    wait_for(unserved, timeout=60, message="the resource to stop being served")


@pytest.mark.parametrize("change, field, message", [
    pytest.param({"scope": "Everywhere"}, "spec.scope",
                 'Unsupported value: "Everywhere": supported values: "Cluster", "Namespaced"', id="scope"),
    pytest.param({"versions": [{"name": "v1", "served": True, "storage": True}]},
                 "spec.versions[0].schema.openAPIV3Schema", "Required value: schemas are required", id="no-schema"),
])
def test_invalid_crds_are_rejected(api_client, change, field, message):
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    spec = {"group": "invalid.conformance.gigafactory.dev", "scope": "Namespaced",
            "names": {"kind": "Nope", "plural": "nopes"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}], **change}
    with pytest.raises(kubernetes.client.ApiException) as error:
        extensions.create_custom_resource_definition({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "nopes.invalid.conformance.gigafactory.dev"}, "spec": spec})
    status = json.loads(error.value.body)
    assert (error.value.status, status["reason"]) == (422, "Invalid")
    assert {"field": field, "message": message} in [{k: c[k] for k in ("field", "message")}
                                                    for c in status["details"]["causes"]]
