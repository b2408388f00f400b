"""The status subresource: /status writes change only .status; main writes never change it."""
from __future__ import annotations

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget


def test_status_on_create_is_dropped(custom, namespace):
    body = widget("w")
    body["status"] = {"phase": "Fake"}
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "status" not in created or created["status"].get("phase") != "Fake"


def test_status_patch_changes_only_status(custom, namespace):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    patched = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "w", {
        "status": {"phase": "Ready"}, "spec": {"size": 99}, "metadata": {"labels": {"x": "y"}}})
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["size"] == 1
    assert "x" not in (patched["metadata"].get("labels") or {})
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_status_put(custom, namespace):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    created["status"] = {"phase": "Done", "observedGeneration": 1}
    replaced = custom.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "w", created)
    assert replaced["status"] == {"phase": "Done", "observedGeneration": 1}


def test_main_resource_writes_ignore_status(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "w", {"status": {"phase": "A"}})
    patched = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w",
                                                    {"status": {"phase": "B"}, "spec": {"size": 3}})
    assert patched["status"] == {"phase": "A"}
    assert patched["spec"]["size"] == 3
