"""Deletion: finalizers, deletionTimestamp, namespaces, collections, ownerReference GC."""
from __future__ import annotations

import json

import kubernetes
import pytest

from tests.conftest import wait_for
from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget

ApiException = kubernetes.client.ApiException


def _gone(get):
    try:
        get()
    except ApiException as e:
        return e.status == 404
    return False


def test_delete_without_finalizers_is_immediate(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    deleted = custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    assert deleted.get("metadata", {}).get("name") == "w" or deleted.get("status") == "Success"
    with pytest.raises(ApiException) as error:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    assert error.value.status == 404
    with pytest.raises(ApiException) as error:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    assert error.value.status == 404 and json.loads(error.value.body)["reason"] == "NotFound"


def test_finalizers_block_deletion_until_removed(custom, namespace):
    body = widget("w")
    body["metadata"]["finalizers"] = ["conformance.gigafactory.dev/hold"]
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    deleting = custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 0
    assert deleting["metadata"]["generation"] == created["metadata"]["generation"] + 1
    still = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    assert still["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {
            "metadata": {"finalizers": ["conformance.gigafactory.dev/hold", "another/one"]}})
    assert error.value.status == 422
    assert "no new finalizers can be added if the object is being deleted" in json.loads(error.value.body)["message"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"metadata": {"finalizers": None}})
    wait_for(lambda: _gone(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")),
             message="the widget to be gone after its last finalizer was removed")


def test_delete_collection_by_label(core, namespace):
    for name, team in [("a", "x"), ("b", "x"), ("c", "y")]:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": {"team": team}}})
    core.delete_collection_namespaced_config_map(namespace, label_selector="team=x")
    # Only ours: a real cluster adds its kube-root-ca.crt ConfigMap to every namespace.
    left = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
    assert [n for n in left if n in ("a", "b", "c")] == ["c"]


def test_delete_options_body_is_accepted(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    core.delete_namespaced_config_map("c", namespace, body=kubernetes.client.V1DeleteOptions(
        propagation_policy="Background", grace_period_seconds=0))
    assert _gone(lambda: core.read_namespaced_config_map("c", namespace))


def test_stale_precondition_conflicts(core, namespace):
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    current = core.patch_namespaced_config_map("c", namespace, {"data": {"a": "b"}})
    with pytest.raises(ApiException) as error:
        core.delete_namespaced_config_map("c", namespace, body=kubernetes.client.V1DeleteOptions(
            preconditions={"resourceVersion": created.metadata.resource_version}))
    assert error.value.status == 409
    assert json.loads(error.value.body)["message"] == (
        f'Operation cannot be fulfilled on ConfigMap "c": the ResourceVersion in the precondition '
        f'({created.metadata.resource_version}) does not match the ResourceVersion in record '
        f'({current.metadata.resource_version}). The object might have been modified')
    with pytest.raises(ApiException) as error:
        core.delete_namespaced_config_map("c", namespace, body=kubernetes.client.V1DeleteOptions(
            preconditions={"uid": "0" * 8}))
    assert error.value.status == 409
    assert json.loads(error.value.body)["message"] == (
        f'Operation cannot be fulfilled on ConfigMap "c": the UID in the precondition (00000000) does not match '
        f'the UID in record ({created.metadata.uid}). The object might have been deleted and then recreated')
    assert core.read_namespaced_config_map("c", namespace).data == {"a": "b"}


def test_unknown_propagation_policy_is_invalid(core, raw, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    code, status = raw.json("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/c",
                            {"propagationPolicy": "Sideways"})
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "propagationPolicy"
    assert core.read_namespaced_config_map("c", namespace).metadata.name == "c"


def test_delete_on_the_status_subresource_is_not_allowed(custom, raw, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    for method in ("DELETE", "POST"):
        code, status = raw.json(method, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/w/status",
                                widget("w") if method == "POST" else None)
        assert (code, status["reason"]) == (405, "MethodNotAllowed")
    assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")["metadata"]["name"] == "w"


def test_deleting_a_namespace_deletes_its_content(core, custom):
    name = "t-ns-cascade"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "c"}})
    custom.create_namespaced_custom_object(GROUP, VERSION, name, PLURAL, widget("w"))
    core.delete_namespace(name)
    wait_for(lambda: _gone(lambda: core.read_namespace(name)), timeout=60, message="the namespace to be gone")
    assert _gone(lambda: core.read_namespaced_config_map("c", name))


def test_owner_references_garbage_collection(core, namespace):
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    other = core.create_namespaced_config_map(namespace, {"metadata": {"name": "other"}})

    def ref(obj):
        return {"apiVersion": "v1", "kind": "ConfigMap", "name": obj.metadata.name, "uid": obj.metadata.uid}

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dep", "ownerReferences": [ref(owner)]}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "shared", "ownerReferences": [
        ref(owner), ref(other)]}})
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: _gone(lambda: core.read_namespaced_config_map("dep", namespace)), timeout=30,
             message="the dependent to be garbage-collected")
    assert core.read_namespaced_config_map("shared", namespace).metadata.name == "shared"
