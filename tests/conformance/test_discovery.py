"""Discovery, OpenAPI, and CRDs becoming servable (and unservable) through the API."""
from __future__ import annotations

import time

import kubernetes

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


def test_aggregated_discovery(raw):
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    response = raw.request("GET", "/apis", headers={"Accept": accept})
    assert response.status == 200
    assert "apidiscovery.k8s.io" in response.headers["Content-Type"]
    import json
    body = json.loads(response.data)
    assert body["kind"] == "APIGroupDiscoveryList"
    [group] = [g for g in body["items"] if g["metadata"].get("name") == GROUP]
    [widgets] = group["versions"][0]["resources"]
    assert widgets["resource"] == "widgets" and widgets["subresources"][0]["subresource"] == "status"


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
