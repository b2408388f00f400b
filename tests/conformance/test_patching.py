"""Patch content types: merge patch, JSON patch, strategic merge patch (built-ins only), apply."""
from __future__ import annotations

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget, widgets_path


def test_merge_patch_null_deletes(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w", label="abc", tags=["a"]))
    patched = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w",
                                                    {"spec": {"label": None, "tags": ["b", "c"]}})
    assert "label" not in patched["spec"]
    assert patched["spec"]["tags"] == ["b", "c"]


def test_json_patch(raw, custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w", tags=["a"]))
    code, body = raw.json("PATCH", widgets_path(namespace, "w"), [
        {"op": "test", "path": "/spec/size", "value": 1},
        {"op": "add", "path": "/spec/tags/-", "value": "b"},
        {"op": "replace", "path": "/spec/size", "value": 4}], content_type="application/json-patch+json")
    assert code == 200, body
    assert body["spec"]["tags"] == ["a", "b"] and body["spec"]["size"] == 4


def test_json_patch_failed_test_is_invalid(raw, custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    code, body = raw.json("PATCH", widgets_path(namespace, "w"), [{"op": "test", "path": "/spec/size", "value": 7}],
                          content_type="application/json-patch+json")
    assert code == 422 and body["reason"] == "Invalid"


def test_strategic_merge_patch_on_custom_resources_is_unsupported(raw, custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    code, body = raw.json("PATCH", widgets_path(namespace, "w"), {"spec": {"size": 2}},
                          content_type="application/strategic-merge-patch+json")
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


def test_strategic_merge_patch_merges_containers_by_name(raw, api_client, namespace):
    import kubernetes
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {
            "containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                           {"name": "b", "image": "b:1"}]}}}})
    code, body = raw.json("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/d", {"spec": {"template": {
        "spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]},
                                {"name": "b", "$patch": "delete"}]}}}},
        content_type="application/strategic-merge-patch+json")
    assert code == 200, body
    containers = body["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a"]
    assert containers[0]["image"] == "a:1"
    # Merged by name. Without a $setElementOrder directive the order is not promised (kube-apiserver
    # puts the items new in the patch before the kept ones).
    assert sorted(containers[0]["env"], key=lambda e: e["name"]) == [{"name": "X", "value": "1"},
                                                                     {"name": "Y", "value": "2"}]
    assert body["metadata"]["generation"] == 2


def test_server_side_apply_creates_and_updates(raw, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps/ssa?fieldManager=tests"
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: '1'\n"
    code, body = raw.json("PATCH", path, raw=manifest.encode(), content_type="application/apply-patch+yaml")
    assert code == 201, body  # an apply that creates answers like a create
    code, body = raw.json("PATCH", path, raw=manifest.replace("'1'", "'2'").encode(),
                          content_type="application/apply-patch+yaml")
    assert code == 200 and body["data"] == {"a": "2"}


def test_server_side_apply_needs_a_field_manager(raw, namespace):
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n"
    code, status = raw.json("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/ssa", raw=manifest.encode(),
                            content_type="application/apply-patch+yaml")
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                                 'for apply patch')


def test_json_patch_replace_of_a_missing_member_adds_it(raw, custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    code, body = raw.json("PATCH", widgets_path(namespace, "w"), [{"op": "replace", "path": "/spec/label", "value": "x"}],
                          content_type="application/json-patch+json")
    assert code == 200 and body["spec"]["label"] == "x"
    code, body = raw.json("PATCH", widgets_path(namespace, "w"), [{"op": "replace", "path": "/spec/tags/3", "value": "x"}],
                          content_type="application/json-patch+json")
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["message"] == "the server rejected our request due to an error in our request"


def test_server_side_apply_checks_the_applied_object(raw, namespace):
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    code, status = raw.json("PATCH", f"{base}/a?fieldManager=tests", raw=b"metadata:\n  name: a\n",
                            content_type="application/apply-patch+yaml")
    assert (code, status["reason"], status["message"]) == (400, "BadRequest", "invalid object type: /, Kind=")
    manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n"
    code, status = raw.json("PATCH", f"{base}/a?fieldManager=tests", raw=manifest,
                            content_type="application/apply-patch+yaml")
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == "the name of the object (other) does not match the name on the URL (a)"
