"""Built-in kinds the operator writes (leases, events, config maps, secrets): what kube-apiserver
decodes (400) and validates (422) for them, and the metadata rules every kind shares."""
from __future__ import annotations

import json

import pytest

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget, widgets_path

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _lease(raw, namespace, spec):
    return raw.json("POST", LEASES.format(namespace=namespace), {"metadata": {"generateName": "l-"}, "spec": spec})


@pytest.mark.parametrize("stamp", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00.1234567Z",
                                   "yesterday"])
def test_lease_times_need_six_fractional_digits(raw, namespace, stamp):
    code, status = _lease(raw, namespace, {"renewTime": stamp})
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"].startswith(f'Lease in version "v1" cannot be handled as a Lease: parsing time "{stamp}" '
                                        f'as "2006-01-02T15:04:05.000000Z07:00"')


def test_lease_times_are_stored_in_utc(raw, namespace):
    code, lease = _lease(raw, namespace, {"renewTime": "2026-01-01T01:00:00.123456+01:00",
                                          "acquireTime": "2026-01-01T00:00:00.000001Z"})
    assert code == 201, lease
    assert (lease["spec"]["renewTime"], lease["spec"]["acquireTime"]) == ("2026-01-01T00:00:00.123456Z",
                                                                          "2026-01-01T00:00:00.000001Z")


@pytest.mark.parametrize("spec, field", [
    ({"holderIdentity": 5}, "holderIdentity"),
    ({"leaseDurationSeconds": "15"}, "leaseDurationSeconds"),
    ({"leaseTransitions": 1.5}, "leaseTransitions"),
])
def test_lease_fields_are_typed(raw, namespace, spec, field):
    code, status = _lease(raw, namespace, spec)
    assert (code, status["reason"]) == (400, "BadRequest")
    assert f"Go struct field LeaseSpec.spec.{field} of type" in status["message"]


def test_lease_durations_are_positive(raw, namespace):
    code, status = _lease(raw, namespace, {"leaseDurationSeconds": 0, "leaseTransitions": -1})
    assert (code, status["reason"]) == (422, "Invalid")
    assert {(c["field"], c["message"]) for c in status["details"]["causes"]} == {
        ("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0"),
        ("spec.leaseTransitions", "Invalid value: -1: must be greater than or equal to 0")}


@pytest.mark.parametrize("involved, ok", [
    pytest.param("{namespace}", True, id="same-namespace"),
    pytest.param(None, False, id="cluster-scoped-object-outside-default"),
    pytest.param("default", False, id="other-namespace"),
])
def test_events_live_in_their_objects_namespace(raw, namespace, involved, ok):
    obj = {"kind": "Widget", "name": "w"}
    if involved:
        obj["namespace"] = involved.format(namespace=namespace)
    code, body = raw.json("POST", f"/api/v1/namespaces/{namespace}/events",
                          {"metadata": {"generateName": "e-"}, "involvedObject": obj, "reason": "R"})
    if ok:
        assert code == 201, body
    else:
        assert (code, body["reason"]) == (422, "Invalid")
        assert body["details"]["causes"][0]["field"] == "involvedObject.namespace"
        assert body["details"]["causes"][0]["message"].endswith("does not match event.namespace")


@pytest.mark.parametrize("data, field", [
    ({"data": {"bad key": "1"}}, "data[bad key]"),
    ({"data": {"k": "v"}, "binaryData": {"k": "dg=="}}, "data[k]"),
])
def test_configmap_keys_are_validated(raw, namespace, data, field):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "c"}, **data})
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == field


def test_secret_data_must_be_base64(raw, namespace):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/secrets",
                            {"metadata": {"name": "s"}, "data": {"k": "not base64!"}})
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == ('Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input '
                                 'byte 3')


def test_owner_references_need_a_uid(raw, namespace):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {
        "name": "c", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner"}]}})
    assert (code, status["reason"]) == (422, "Invalid")
    assert [(c["field"], c["message"]) for c in status["details"]["causes"]] == [
        ("metadata.ownerReferences.uid", 'Invalid value: "": uid must not be empty')]


@pytest.mark.parametrize("path", ["/api/v1/namespaces/{namespace}/configmaps", widgets_path("{namespace}")])
def test_annotations_must_be_strings(raw, namespace, path):
    body = widget("w") if "widgets" in path else {"metadata": {"name": "w"}}
    body["metadata"]["annotations"] = {"a": 1}
    code, status = raw.json("POST", path.format(namespace=namespace), body)
    assert (code, status["reason"]) == (400, "BadRequest")
    assert "json: cannot unmarshal number into Go struct field ObjectMeta" in status["message"]


def test_generate_name_is_validated_as_a_prefix(raw, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    code, created = raw.json("POST", path, {"metadata": {"generateName": "ok-"}})
    assert code == 201 and created["metadata"]["name"].startswith("ok-")
    code, status = raw.json("POST", path, {"metadata": {"generateName": "Bad_"}})
    assert (code, status["reason"]) == (422, "Invalid")
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.generateName", "metadata.name"]
    assert status["details"]["causes"][0]["message"].startswith('Invalid value: "Bad_": a lowercase RFC 1123 subdomain')


def test_uid_is_immutable(raw, core, namespace):
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    path = f"/api/v1/namespaces/{namespace}/configmaps/c"
    code, status = raw.json("PUT", path, {"metadata": {"name": "c", "uid": "0" * 8}, "data": {"a": "1"}})
    assert (code, status["reason"]) == (409, "Conflict")  # PUT: the uid is a storage precondition
    assert f"Precondition failed: UID in precondition: 00000000, UID in object meta: {created.metadata.uid}" in \
        status["message"]
    code, status = raw.json("PATCH", path, {"metadata": {"uid": "0" * 8}}, content_type="application/merge-patch+json")
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == 'ConfigMap "c" is invalid: metadata.uid: Invalid value: "00000000": field is immutable'
    assert core.read_namespaced_config_map("c", namespace).data is None


def test_immediate_delete_answers_a_status_or_the_object(raw, custom, core, namespace):
    # Kubernetes allows either; kube-apiserver answers a Status for config maps and custom resources.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    for path, group, plural, uid in [(f"/api/v1/namespaces/{namespace}/configmaps/c", "", "configmaps", None),
                                     (widgets_path(namespace, "w"), GROUP, PLURAL, created["metadata"]["uid"])]:
        code, body = raw.json("DELETE", path)
        assert code == 200
        if body["kind"] == "Status":
            assert body["status"] == "Success"
            assert (body["details"]["name"], body["details"]["kind"]) == (path.rsplit("/", 1)[1], plural)
            assert body["details"].get("group", "") == group
            assert uid is None or body["details"]["uid"] == uid
        else:
            assert body["metadata"]["name"] == path.rsplit("/", 1)[1]


def test_dry_run_in_delete_options_keeps_the_object(raw, core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    code, _ = raw.json("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/c",
                       {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})
    assert code == 200
    assert core.read_namespaced_config_map("c", namespace).metadata.name == "c"


@pytest.mark.parametrize("method, options", [("POST", "CreateOptions"), ("DELETE", "DeleteOptions")])
def test_unknown_dry_run_is_invalid(raw, core, namespace, method, options):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    path = f"/api/v1/namespaces/{namespace}/configmaps" + ("/c" if method == "DELETE" else "")
    code, status = raw.json(method, path + "?dryRun=Maybe", {"metadata": {"name": "d"}} if method == "POST" else None)
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == (f'{options}.meta.k8s.io "" is invalid: dryRun: Unsupported value: '
                                 f'[]string{{"Maybe"}}: supported values: "All"')
    assert core.read_namespaced_config_map("c", namespace).metadata.name == "c"


def test_unknown_field_validation_is_invalid(raw, namespace):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/configmaps?fieldValidation=Loose",
                            {"metadata": {"name": "c"}})
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "fieldValidation"


@pytest.mark.parametrize("query, field_message", [
    ("resourceVersionMatch=Exact",
     "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"),
    ("resourceVersion=0&resourceVersionMatch=Exact",
     'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"'),
    ("resourceVersion=1&resourceVersionMatch=Sometimes",
     'Unsupported value: "Sometimes": supported values: "Exact", "NotOlderThan", ""'),
])
def test_list_resource_version_match_is_checked(raw, namespace, query, field_message):
    code, status = raw.json("GET", f"/api/v1/namespaces/{namespace}/configmaps?{query}")
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["message"] == field_message


@pytest.mark.parametrize("suffix", ["", "/c"])
def test_resource_version_from_the_future_times_out(raw, core, namespace, suffix):
    # kube-apiserver waits up to 3 s for its watch cache to reach the version, then answers 504.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    future = int(core.list_namespaced_config_map(namespace).metadata.resource_version) + 10**9
    response = raw.request("GET", f"/api/v1/namespaces/{namespace}/configmaps{suffix}?resourceVersion={future}")
    assert response.status == 504 and response.headers["Retry-After"] == "1"
    status = json.loads(response.data)
    assert status["reason"] == "Timeout"
    assert status["message"].startswith(f"Timeout: Too large resource version: {future}, current: ")
    assert status["details"]["causes"] == [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]


@pytest.mark.parametrize("metadata, invalid", [
    pytest.param({"generateName": "job."}, None, id="generate-name-ending-in-a-dot"),
    pytest.param({"name": "Pod_Name.17a"}, None, id="any-case"),
    pytest.param({"name": "a/b"}, "may not contain '/'", id="slash"),
    pytest.param({"name": ".."}, "may not be '..'", id="dot-dot"),
])
def test_event_names_are_path_segments(raw, namespace, metadata, invalid):
    # Unlike most kinds, Events only need names that fit in a URL path segment.
    code, body = raw.json("POST", f"/api/v1/namespaces/{namespace}/events", {
        "metadata": metadata, "reason": "R", "involvedObject": {"kind": "Widget", "name": "w", "namespace": namespace}})
    if invalid is None:
        assert code == 201, body
    else:
        assert (code, body["details"]["causes"][0]["field"]) == (422, "metadata.name")
        assert body["details"]["causes"][0]["message"].endswith(invalid)


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_system_namespaces_may_not_be_deleted(raw, core, name):
    code, status = raw.json("DELETE", f"/api/v1/namespaces/{name}")
    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == f'namespaces "{name}" is forbidden: this namespace may not be deleted'
    assert core.read_namespace(name).status.phase == "Active"


@pytest.mark.parametrize("finalizer, field, message", [
    ("nodomain", "metadata.finalizers[2]",
     'Invalid value: "nodomain": name is neither a standard finalizer name nor is it fully qualified'),
    ("bad domain/x", "metadata.finalizers", 'Invalid value: "bad domain/x": prefix part a lowercase RFC 1123'),
])
def test_finalizer_names_are_qualified(raw, namespace, finalizer, field, message):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                            {"metadata": {"name": "c", "finalizers": ["example.com/ok", "orphan", finalizer]}})
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == field
    assert status["details"]["causes"][0]["message"].startswith(message)


def test_annotation_keys_are_qualified_names(raw, namespace):
    code, status = raw.json("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                            {"metadata": {"name": "c", "annotations": {"example.com/fine": "x", "not fine": "y"}}})
    assert (code, status["reason"]) == (422, "Invalid")
    assert [(c["field"], c["message"][:28]) for c in status["details"]["causes"]] == [
        ("metadata.annotations", 'Invalid value: "not fine": n')]


def test_watch_parameter_on_an_object_url_is_a_get(raw, core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    code, body = raw.json("GET", f"/api/v1/namespaces/{namespace}/configmaps/c?watch=true&timeoutSeconds=1")
    assert code == 200 and (body["kind"], body["metadata"]["name"]) == ("ConfigMap", "c")


@pytest.mark.parametrize("query, code", [("limit=-1", 200), ("limit=x", 400), ("timeoutSeconds=x", 400)])
def test_list_parameters_are_parsed(raw, core, namespace, query, code):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    status, body = raw.json("GET", f"/api/v1/namespaces/{namespace}/configmaps?{query}")
    assert status == code, body
    if code == 200:  # a negative limit is no limit
        assert "c" in [i["metadata"]["name"] for i in body["items"]] and not body["metadata"].get("continue")
    else:
        assert body["reason"] == "BadRequest"


@pytest.mark.parametrize("kind, path, data", [
    ("ConfigMap", "configmaps", {"a": "1"}),
    ("Secret", "secrets", {"a": "YQ=="}),
])
def test_immutable_data_stays(raw, namespace, kind, path, data):
    base = f"/api/v1/namespaces/{namespace}/{path}"
    code, _ = raw.json("POST", base, {"metadata": {"name": "x"}, "immutable": True, "data": data})
    assert code == 201
    for change, field in [({"data": {"a": "Yg=="}}, "data"), ({"immutable": False}, "immutable")]:
        code, status = raw.json("PATCH", f"{base}/x", change, content_type="application/merge-patch+json")
        assert (code, status["reason"]) == (422, "Invalid")
        assert status["message"] == (f'{kind} "x" is invalid: {field}: Forbidden: field is immutable when '
                                     f'`immutable` is set')
    code, labelled = raw.json("PATCH", f"{base}/x", {"metadata": {"labels": {"a": "b"}}},
                              content_type="application/merge-patch+json")
    assert code == 200 and labelled["data"] == data


def test_secret_type_is_immutable(raw, core, namespace):
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "data": {"a": "YQ=="}})
    code, status = raw.json("PATCH", f"/api/v1/namespaces/{namespace}/secrets/s", {"type": "example.com/other"},
                            content_type="application/merge-patch+json")
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == 'Secret "s" is invalid: type: Invalid value: "example.com/other": field is immutable'
    replaced = core.replace_namespaced_secret("s", namespace, {"metadata": {"name": "s"}, "data": {"a": "Yg=="}})
    assert replaced.type == "Opaque"  # a write without a type keeps the default


def test_events_api_creates_are_strict(raw, namespace):
    path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    good = {"metadata": {"name": "e"}, "reason": "R", "action": "A", "reportingController": "example.com/c",
            "reportingInstance": "i", "eventTime": "2026-01-01T01:00:00.000001+01:00", "type": "Normal",
            "regarding": {"kind": "Widget", "name": "w", "namespace": namespace}}
    code, status = raw.json("POST", path, {**good, "eventTime": None, "type": "Loud"})
    assert (code, status["reason"]) == (422, "Invalid")
    assert [c["field"] for c in status["details"]["causes"]] == ["eventTime", "type"]
    code, status = raw.json("POST", path, {**good, "eventTime": "2026-01-01T00:00:00Z"})
    assert (code, status["reason"]) == (400, "BadRequest")
    code, created = raw.json("POST", path, good)
    assert code == 201 and created["eventTime"] == "2026-01-01T00:00:00.000001Z"


def test_core_event_timestamps_are_stored_to_the_second(raw, namespace):
    code, created = raw.json("POST", f"/api/v1/namespaces/{namespace}/events", {
        "metadata": {"name": "e"}, "reason": "R", "involvedObject": {"kind": "Widget", "name": "w",
                                                                     "namespace": namespace},
        "firstTimestamp": "2026-01-01T01:00:00.5+01:00"})
    assert code == 201 and created["firstTimestamp"] == "2026-01-01T00:00:00Z"
