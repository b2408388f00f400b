"""Create/get/update semantics: server-set metadata, concurrency, namespaces, error Status shapes."""
from __future__ import annotations

import json
import re

import kubernetes
import pytest

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget

ApiException = kubernetes.client.ApiException


def status_of(error: ApiException) -> dict:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def test_server_sets_metadata(custom, namespace):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w1"))
    meta = created["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str) and meta["resourceVersion"].isdigit()
    second = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w2"))
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert second["metadata"]["uid"] != meta["uid"]
    fetched = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert fetched["metadata"]["resourceVersion"] == meta["resourceVersion"]


def test_generation_bumps_on_spec_changes_only(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    spec = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"spec": {"size": 2}})
    assert spec["metadata"]["generation"] == 2
    labels = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w",
                                                   {"metadata": {"labels": {"a": "b"}}})
    assert labels["metadata"]["generation"] == 2
    assert int(labels["metadata"]["resourceVersion"]) > int(spec["metadata"]["resourceVersion"])
    status = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "w",
                                                          {"status": {"phase": "Ready"}})
    assert status["metadata"]["generation"] == 2


def test_noop_update_keeps_resource_version(custom, namespace):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    same = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"spec": {"size": 1}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_generate_name(core, namespace):
    created = core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "cm-"}})
    assert re.fullmatch(r"cm-[a-z0-9]{5}", created.metadata.name)


def test_create_in_missing_namespace_is_not_found(custom):
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, "no-such-namespace-x", PLURAL, widget("w"))
    body = status_of(error.value)
    assert (body["reason"], body["code"]) == ("NotFound", 404)
    assert body["message"] == 'namespaces "no-such-namespace-x" not found'


def test_create_existing_is_already_exists(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    body = status_of(error.value)
    assert (body["reason"], body["code"]) == ("AlreadyExists", 409)
    assert body["message"] == f'{PLURAL}.{GROUP} "w" already exists'
    assert body["details"] == {"name": "w", "group": GROUP, "kind": PLURAL}


def test_get_missing_is_not_found(custom, namespace):
    with pytest.raises(ApiException) as error:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "nope")
    body = status_of(error.value)
    assert body["reason"] == "NotFound"
    assert body["message"] == f'{PLURAL}.{GROUP} "nope" not found'
    assert body["details"]["name"] == "nope"


@pytest.mark.parametrize("write", ["put", "merge-patch", "json-patch"])
def test_stale_resource_version_conflicts(custom, namespace, raw, write):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    stale = created["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"spec": {"size": 5}})
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/w"
    if write == "put":
        body = {**created, "spec": {"size": 9}}
        code, status = raw.json("PUT", path, body)
    elif write == "merge-patch":
        code, status = raw.json("PATCH", path, {"metadata": {"resourceVersion": stale}, "spec": {"size": 9}},
                                content_type="application/merge-patch+json")
    else:
        code, status = raw.json("PATCH", path, [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale},
                                                {"op": "replace", "path": "/spec/size", "value": 9}],
                                content_type="application/json-patch+json")
    assert code == 409 and status["reason"] == "Conflict"
    assert status["message"] == (f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "w": the object has been '
                                 f'modified; please apply your changes to the latest version and try again')
    assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")["spec"]["size"] == 5


def test_put_without_resource_version_is_invalid_for_custom_resources(custom, namespace, raw):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    del created["metadata"]["resourceVersion"]
    code, status = raw.json("PUT", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/w", created)
    assert code == 422 and status["reason"] == "Invalid"
    assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in status["message"]


def test_put_without_resource_version_is_allowed_for_configmaps(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    replaced = core.replace_namespaced_config_map("c", namespace, {"metadata": {"name": "c"}, "data": {"a": "2"}})
    assert replaced.data == {"a": "2"}


def test_namespaces_exist_as_objects(core, api_client):
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system"} <= names
    name = "t-ns-object-check"
    created = core.create_namespace({"metadata": {"name": name}})
    try:
        assert created.status.phase == "Active"
        assert created.metadata.labels["kubernetes.io/metadata.name"] == name
    finally:
        core.delete_namespace(name)


def test_leases_are_plain_objects(api_client, namespace):
    leases = kubernetes.client.CoordinationV1Api(api_client)
    created = leases.create_namespaced_lease(namespace, {"metadata": {"name": "l"}, "spec": {
        "holderIdentity": "me", "leaseDurationSeconds": 15}})
    created.spec.holder_identity = "you"
    updated = leases.replace_namespaced_lease("l", namespace, created)
    assert updated.spec.holder_identity == "you"
    stale = created
    stale.spec.holder_identity = "them"
    with pytest.raises(ApiException) as error:
        leases.replace_namespaced_lease("l", namespace, stale)
    assert error.value.status == 409


def test_events_in_both_apis(raw, core, namespace):
    core.create_namespaced_event(namespace, {"metadata": {"generateName": "e-"}, "reason": "Tested",
                                             "involvedObject": {"kind": "Widget", "name": "w", "namespace": namespace},
                                             "message": "hello", "type": "Normal"})
    # Raw HTTP: the typed client cannot read events.k8s.io events converted from core events
    # (their eventTime is null, which it rejects) on real clusters either.
    code, listed = raw.json("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    assert code == 200 and (listed["kind"], listed["apiVersion"]) == ("EventList", "events.k8s.io/v1")
    [event] = listed["items"]
    # Items of a built-in list carry no apiVersion/kind of their own on kube-apiserver (the list's
    # apply); a server that sends them must send the list's.
    assert event.get("apiVersion", "events.k8s.io/v1") == "events.k8s.io/v1"
    assert (event["reason"], event["note"], event["regarding"]["name"]) == ("Tested", "hello", "w")
    code, single = raw.json("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{event['metadata']['name']}")
    assert code == 200 and (single["kind"], single["apiVersion"]) == ("Event", "events.k8s.io/v1")
    assert (single["reason"], single["note"]) == ("Tested", "hello")
