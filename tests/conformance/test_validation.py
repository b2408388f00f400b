"""CRD schema enforcement: 422 Invalid with field causes, pruning, defaulting, CEL rules, names."""
from __future__ import annotations

import json

import kubernetes
import pytest

from tests.conformance.conftest import GROUP, PLURAL, VERSION, widget, widgets_path


@pytest.mark.parametrize("spec, field, text", [
    pytest.param({"size": 1001}, "spec.size",
                 "Invalid value: 1001: spec.size in body should be less than or equal to 1000", id="maximum"),
    pytest.param({"size": 0}, "spec.size",
                 "Invalid value: 0: spec.size in body should be greater than or equal to 1", id="minimum"),
    pytest.param({"size": "big"}, "spec.size", "spec.size in body must be of type integer", id="type"),
    pytest.param({}, "spec.size", "Required value", id="required"),
    pytest.param({"size": 1, "color": "pink"}, "spec.color", 'Unsupported value: "pink"', id="enum"),
    pytest.param({"size": 1, "label": "abcdefghijk"}, "spec.label", "Too long", id="maxLength"),
    pytest.param({"size": 1, "label": ""}, "spec.label", "should be at least 1 chars long", id="minLength"),
    pytest.param({"size": 1, "label": "ABC"}, "spec.label", "should match '^[-a-z]+$'", id="pattern"),
    pytest.param({"size": 1, "tags": ["a", "b", "c", "d"]}, "spec.tags", "must have at most 3 items",
                 id="maxItems"),
    pytest.param({"size": 1, "port": True}, "spec.port", "", id="int-or-string"),
    pytest.param({"size": 1, "labels": {"a": 1}}, "spec.labels.a", "must be of type string", id="map-values"),
    pytest.param({"size": 1, "minReplicas": 3, "maxReplicas": 2}, "spec",
                 "minReplicas must not exceed maxReplicas", id="cel-rule"),
    pytest.param({"size": 1, "label": "-x"}, "spec.label", "label must not start with a dash", id="cel-fieldPath"),
])
def test_invalid_specs_are_rejected(custom, namespace, spec, field, text):
    body = widget("w")
    body["spec"] = spec
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    status = json.loads(error.value.body)
    assert (error.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"].startswith(f'Widget.{GROUP} "w" is invalid: ')
    assert status["details"]["kind"] == "Widget" and status["details"]["group"] == GROUP
    causes = [c for c in status["details"]["causes"] if c["field"] == field]
    assert causes, status
    assert text in causes[0]["message"], status


def test_exact_message_for_a_bound(custom, namespace):
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w", size=1001))
    assert json.loads(error.value.body)["message"] == (
        f'Widget.{GROUP} "w" is invalid: spec.size: Invalid value: 1001: spec.size in body should be less than '
        f'or equal to 1000')


def test_valid_values_pass(custom, namespace):
    body = widget("w", port="http", labels={"a": "b"}, extra={"anything": [1, {"x": None}]}, note=None, tags=[])
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert created["spec"]["port"] == "http"
    assert created["spec"]["extra"] == {"anything": [1, {"x": None}]}


def test_integer_formats_are_not_bounds(custom, namespace):
    # `format: int32` documents the field (OpenAPI, generated clients); kube-apiserver validates only
    # string formats, so an integer outside int32 is stored as it is.
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                     widget("w", minReplicas=2**31, maxReplicas=2**40))
    assert (created["spec"]["minReplicas"], created["spec"]["maxReplicas"]) == (2**31, 2**40)


def test_defaults_are_applied(custom, namespace):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    assert created["spec"]["color"] == "red"
    assert created["spec"]["retry"] == {"limit": 3}
    assert (created["spec"]["minReplicas"], created["spec"]["maxReplicas"]) == (1, 1)
    patched = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w",
                                                    {"spec": {"color": None}})
    assert patched["spec"]["color"] == "red"


def test_unknown_fields_are_pruned(custom, namespace):
    body = widget("w")
    body["spec"]["unknown"] = 1
    body["spec"]["retry"] = {"limit": 1, "bogus": True}
    body["topLevel"] = "x"
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "unknown" not in created["spec"] and "topLevel" not in created
    assert created["spec"]["retry"] == {"limit": 1}


def test_strict_field_validation_rejects_unknown_fields(raw, namespace):
    body = widget("w")
    body["spec"]["unknown"] = 1
    code, status = raw.json("POST", widgets_path(namespace) + "?fieldValidation=Strict", body)
    assert code == 400 and status["reason"] == "BadRequest"
    assert 'unknown field "spec.unknown"' in status["message"]


def test_updates_are_validated_too(custom, namespace):
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("w"))
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w", {"spec": {"size": 5000}})
    assert error.value.status == 422


@pytest.mark.parametrize("name", ["UPPER", "under_score", "-dash", "a" * 254])
def test_names_must_be_dns_subdomains(custom, namespace, name):
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget(name))
    status = json.loads(error.value.body)
    assert error.value.status == 422
    assert status["details"]["causes"][0]["field"] == "metadata.name"


@pytest.mark.parametrize("labels", [{"a": "has space"}, {"a": "x" * 64}, {"bad key!": "v"}])
def test_label_values_and_keys_are_validated(core, namespace, labels):
    with pytest.raises(kubernetes.client.ApiException) as error:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "c", "labels": labels}})
    assert error.value.status == 422
    assert json.loads(error.value.body)["details"]["causes"][0]["field"] == "metadata.labels"


def test_rules_still_run_beside_a_pattern_error(custom, namespace):
    # kube-apiserver skips CEL only after "blocking" schema errors (type, required, enum, too long/many);
    # a pattern or bound violation is reported together with the rules' messages.
    body = widget("w")
    body["spec"] = {"size": 1, "minReplicas": 3, "maxReplicas": 2, "label": "ABC"}
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    message = json.loads(error.value.body)["message"]
    assert "should match '^[-a-z]+$'" in message
    assert "minReplicas must not exceed maxReplicas" in message


def test_blocking_schema_error_skips_the_rules(custom, namespace):
    body = widget("w")
    body["spec"] = {"size": "big", "minReplicas": 3, "maxReplicas": 2}
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    message = json.loads(error.value.body)["message"]
    assert "must be of type integer" in message
    assert "minReplicas must not exceed maxReplicas" not in message
    assert "some validation rules were not checked" in message
