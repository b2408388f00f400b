"""Admission of a write, as kube-apiserver's validation and defaulting do it: the body's kind,
names and metadata, the namespace it needs, the built-in kinds' own rules (Secrets, Leases,
Events, ConfigMaps), immutable fields, CRD schemas and their CEL rules. A mixin of handling.Cluster.
"""
from __future__ import annotations

import base64
import datetime
import json
import logging
import re
from typing import Any


from localcluster import conversions, errors, resources, schemas

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fold_string_data(resource: resources.Resource, obj: Obj) -> None:
    # Secrets' write-only stringData is merged into data, base64-encoded, as the real server does.
    if resource.plural == "secrets" and not resource.group and isinstance(obj.get("stringData"), dict):
        data = obj.setdefault("data", {}) or {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _path_segment_causes(field: str, name: str, *, prefix: bool) -> list[dict[str, str]]:
    """apimachinery's ValidatePathSegmentName (as prefix: only the forbidden characters)."""
    messages = [] if prefix else [f"may not be '{name}'" for bad in (".", "..") if name == bad]
    messages += [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    return [errors.cause(field, "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: {m}") for m in messages]


def _immutable_causes(plural: str, old: Obj, new: Obj) -> list[dict[str, str]]:
    """`immutable: true` freezes a ConfigMap's or Secret's data and the flag itself; a Secret's type
    never changes."""
    causes = []
    if old.get("immutable"):
        for field in ("data", "binaryData") if plural == "configmaps" else ("data",):
            if (old.get(field) or {}) != (new.get(field) or {}):
                causes.append(errors.cause(field, "FieldValueForbidden",
                                           "Forbidden: field is immutable when `immutable` is set"))
        if not new.get("immutable"):
            causes.append(errors.cause("immutable", "FieldValueForbidden",
                                       "Forbidden: field is immutable when `immutable` is set"))
    if plural == "secrets" and old.get("type") != new.get("type"):
        causes.append(errors.cause("type", "FieldValueInvalid",
                                   f"Invalid value: {json.dumps(new.get('type'))}: field is immutable"))
    return causes


def _check_secret_data(obj: Obj) -> None:
    for value in (obj.get("data") or {}).values() if isinstance(obj.get("data"), dict) else []:
        text = value if isinstance(value, str) else ""
        try:
            base64.b64decode(text, validate=True)
        except ValueError:
            bad = next((i for i, c in enumerate(text) if not (c.isascii() and (c.isalnum() or c in "+/="))), len(text))
            raise errors.bad_request(f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at '
                                     f'input byte {bad}') from None


_MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")


def _go_type(value: Any) -> str:
    return ("bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else
            "string" if isinstance(value, str) else "array" if isinstance(value, list) else "object")


def _check_lease(obj: Obj) -> list[dict[str, str]]:
    """A Lease decodes into typed fields (400 when it cannot) and MicroTimes parse with exactly six
    fractional digits, stored in UTC; durations must be positive, transitions not negative (422)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []

    def undecodable(detail: str) -> errors.ApiError:
        return errors.bad_request(f'Lease in version "v1" cannot be handled as a Lease: {detail}')

    for field, go in (("holderIdentity", "string"), ("leaseDurationSeconds", "int32"), ("leaseTransitions", "int32")):
        value = spec.get(field)
        ok = isinstance(value, str) if go == "string" else (
            isinstance(value, int) and not isinstance(value, bool) and -2**31 <= value < 2**31)
        if value is not None and not ok:
            raise undecodable(f"json: cannot unmarshal {_go_type(value)} into Go struct field LeaseSpec.spec.{field} "
                              f"of type {go}")
    for field in ("acquireTime", "renewTime"):
        value = spec.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise undecodable(f"json: cannot unmarshal {_go_type(value)} into Go value of type string")
        if not _MICRO_TIME.fullmatch(value):
            raise undecodable(f'parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse '
                              f'"{value[19:] or value}" as ".000000"' if re.fullmatch(
                                  r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", value)
                              else f'parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse '
                                   f'"{value}" as "2006"')
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        spec[field] = moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    causes = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if duration is not None and duration <= 0:
        causes.append(errors.cause("spec.leaseDurationSeconds", "FieldValueInvalid",
                                   f"Invalid value: {duration}: must be greater than 0"))
    if transitions is not None and transitions < 0:
        causes.append(errors.cause("spec.leaseTransitions", "FieldValueInvalid",
                                   f"Invalid value: {transitions}: must be greater than or equal to 0"))
    return causes


def _normalize_event_times(event: Obj) -> None:
    """eventTime (and series.lastObservedTime) are MicroTimes: six fractional digits or 400; the
    legacy timestamps are Times: any RFC 3339, stored to the second in UTC."""
    for holder, field in ((event, "eventTime"), (event.get("series"), "lastObservedTime")):
        value = holder.get(field) if isinstance(holder, dict) else None
        if value is None:
            continue
        if not isinstance(value, str) or not _MICRO_TIME.fullmatch(value):
            raise errors.bad_request(f'Event in version "v1" cannot be handled as a Event: parsing time '
                                     f'"{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "{str(value)[19:]}" '
                                     f'as ".000000"')
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        holder[field] = moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for field in ("firstTimestamp", "lastTimestamp", "deprecatedFirstTimestamp", "deprecatedLastTimestamp"):
        value = event.get(field)
        if not isinstance(value, str) or not value:
            continue
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise errors.bad_request(f'Event in version "v1" cannot be handled as a Event: parsing time '
                                     f'"{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}"') from None
        event[field] = moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validate_event(event: Obj, *, events_api: bool = False, creating: bool = True) -> list[dict[str, str]]:
    """kube-apiserver's Event rules, on the core shape: the legacy ones for every request (the
    involved object's namespace must be the event's — an event about a cluster-scoped object lives in
    "default", with eventTime also in "kube-system" — and an eventTime needs the reporting fields),
    and the strict ones for creates through events.k8s.io/v1."""
    namespace = event["metadata"].get("namespace") or ""
    involved = (event.get("involvedObject") or {}).get("namespace") or ""
    causes = []
    if event.get("eventTime"):
        wrong = not involved and namespace not in ("default", "kube-system")
    elif not involved:
        wrong = namespace not in ("", "default")
    else:
        wrong = namespace != involved
    if wrong:
        causes.append(errors.cause("involvedObject.namespace", "FieldValueInvalid",
                                   f"Invalid value: {json.dumps(involved)}: does not match event.namespace"))
    if event.get("eventTime"):
        controller = "reportingController" if events_api else "reportingComponent"
        for field, key in ((controller, "reportingComponent"), ("reportingInstance", "reportingInstance"),
                           ("action", "action"), ("reason", "reason")):
            if not event.get(key):
                causes.append(errors.cause(field, "FieldValueRequired", "Required value"))
    if events_api and creating:
        if not event.get("eventTime"):
            causes.append(errors.cause("eventTime", "FieldValueRequired", "Required value"))
        if event.get("type") not in ("Normal", "Warning"):
            causes.append(errors.cause("type", "FieldValueInvalid",
                                       f'Invalid value: "": has invalid value: {event.get("type") or ""}'))
        for field in ("firstTimestamp", "lastTimestamp", "count"):
            if event.get(field):
                causes.append(errors.cause(field, "FieldValueInvalid", 'Invalid value: "": needs to be unset'))
        if any((event.get("source") or {}).get(k) for k in ("component", "host")):
            causes.append(errors.cause("source", "FieldValueInvalid", 'Invalid value: "": needs to be unset'))
    return causes


_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _validate_configmap(obj: Obj) -> list[dict[str, str]]:
    causes = []
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for field, values in (("data", data), ("binaryData", binary)):
        for key in values if isinstance(values, dict) else {}:
            if not _CONFIG_KEY.fullmatch(key) or len(key) > 253:
                causes.append(errors.cause(f"{field}[{key}]", "FieldValueInvalid", (
                    f'Invalid value: {json.dumps(key)}: a valid config key must consist of alphanumeric characters, '
                    f"'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                    f"is '[-._a-zA-Z0-9]+')")))
            elif field == "data" and isinstance(binary, dict) and key in binary:
                causes.append(errors.cause(f"data[{key}]", "FieldValueInvalid",
                                           f'Invalid value: {json.dumps(key)}: duplicate of key present in binaryData'))
    # kube-apiserver: keys and values together at most 1 MiB (corev1.MaxSecretSize), binary data decoded.
    total = 0
    for field, values in (("data", data), ("binaryData", binary)):
        for key, value in values.items() if isinstance(values, dict) else ():
            size = len(str(value).encode())
            if field == "binaryData":
                size = len(str(value)) * 3 // 4 - str(value).count("=")
            total += len(key.encode()) + size
    if total > _MAX_CONFIG_BYTES:
        causes.append(errors.cause("[]", "FieldValueTooLong", f"Too long: must have at most {_MAX_CONFIG_BYTES} bytes"))
    return causes


_MAX_CONFIG_BYTES = 1024 * 1024


class Admitting:
    """What a create or update must pass before it is stored."""

    def _check_body(self, resource: resources.Resource, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of the request must be a {resource.kind} object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version is not None and api_version != resource.api_version:
            other = self.registry.by_kind(api_version, kind or "")
            if other is None or resources.storage_key(other) != resources.storage_key(resource):
                raise errors.bad_request(f"the API version in the data ({api_version}) does not match the "
                                         f"expected API version ({resource.api_version})")
        if kind is not None and kind != resource.kind and resource.custom:
            # Custom resources decode as unstructured objects: the kind fails validation, not decoding.
            meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            raise errors.invalid(kind=str(kind), group=resource.group, name=str(meta.get("name") or ""), causes=[
                errors.cause("kind", "FieldValueInvalid", f'Invalid value: "{kind}": must be {resource.kind}')])
        if kind is not None and kind != resource.kind:
            raise errors.bad_request(f"{kind} in version \"{resource.version}\" cannot be handled as a "
                                     f"{resource.kind}: the kind in the data does not match the URL")
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if resource.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match the namespace "
                                         "sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        body["apiVersion"], body["kind"] = resource.api_version, resource.kind
        return body

    def _require_namespace(self, resource: resources.Resource, namespace: str | None, name: str) -> None:
        if not resource.namespaced:
            return
        ns = self.store.get(("", "namespaces"), "", namespace or "")
        if ns is None:
            raise errors.not_found(plural="namespaces", group="", name=namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(plural=resource.plural, group=resource.group, name=name,
                                   message=f"unable to create new content in namespace {namespace} because it "
                                           f"is being terminated")

    def _admit(self, resource: resources.Resource, obj: Obj, old: Obj | None, *,
               field_validation: str, warnings: list[str]) -> Obj:
        """Validate metadata, and for CRs prune/default/validate against the schema; raise 422 on failure."""
        meta = obj["metadata"]
        name = meta.get("name", "")
        causes = []
        generate = meta.get("generateName")
        if resources.storage_key(resource) == ("", "events") and not resource.group:
            # Event names are only path segments through the core API (kubelet's "<pod>.<hash>", any case).
            if isinstance(generate, str) and generate:
                causes += _path_segment_causes("metadata.generateName", generate, prefix=True)
            causes += _path_segment_causes("metadata.name", name, prefix=False)
        else:
            if isinstance(generate, str) and generate:
                # Validated as a prefix: a trailing dash is fine.
                masked = generate[:-1] + "a" if generate.endswith("-") else generate
                for found in schemas.validate_name(masked, label=resource.plural == "namespaces"):
                    causes.append(errors.cause("metadata.generateName", found["reason"], found["message"].replace(
                        f"Invalid value: {schemas.render(masked)}", f"Invalid value: {schemas.render(generate)}", 1)))
            causes += schemas.validate_name(name, label=resource.plural == "namespaces")
        if resource.plural == "secrets" and not resource.group:
            _check_secret_data(obj)
        if resource.plural == "leases" and resource.group == "coordination.k8s.io":
            causes += _check_lease(obj)
        causes += schemas.validate_labels(meta.get("labels"))
        causes += schemas.validate_annotation_keys(meta.get("annotations"))
        causes += schemas.validate_finalizers(meta.get("finalizers"))
        annotations = meta.get("annotations")
        if annotations is not None and not (isinstance(annotations, dict)
                                            and all(isinstance(v, str) for v in annotations.values())):
            # ObjectMeta is typed even in custom resources: a non-string value fails decoding.
            bad = next((v for v in annotations.values() if not isinstance(v, str)), annotations) \
                if isinstance(annotations, dict) else annotations
            go_type = ("bool" if isinstance(bad, bool) else "number" if isinstance(bad, (int, float)) else
                       "array" if isinstance(bad, list) else "object" if isinstance(bad, dict) else "string")
            go_field = "ObjectMeta.annotations" if resource.custom else "ObjectMeta.metadata.annotations"
            into = "string" if isinstance(annotations, dict) else "map[string]string"
            raise errors.bad_request(f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                                     f'{resource.kind}: json: cannot unmarshal {go_type} into Go struct field '
                                     f'{go_field} of type {into}')
        for index, ref in enumerate(meta.get("ownerReferences") or []):
            ref = ref if isinstance(ref, dict) else {}
            for field, text in (("apiVersion", "version must not be empty"), ("kind", "kind must not be empty"),
                                ("name", "name must not be empty"), ("uid", "uid must not be empty")):
                if not ref.get(field):
                    causes.append(errors.cause(f"metadata.ownerReferences.{field}", "FieldValueInvalid",
                                               f'Invalid value: "": {text}'))
        if resource.custom and resource.schema:
            unknown: list[str] = []
            schemas.prune(resource.schema, obj, unknown=unknown, root=True)
            if unknown:
                texts = [f'unknown field "{path}"' for path in unknown]
                if field_validation == "Strict":
                    raise errors.bad_request(f'{resource.kind} in version "{resource.version}" cannot be handled as '
                                             f'a {resource.kind}: strict decoding error: {", ".join(texts)}')
                if field_validation != "Ignore":
                    warnings.extend(texts)
            schemas.default(resource.schema, obj)
            causes += schemas.validate(resource.schema, obj, old)
        if resource.plural == "customresourcedefinitions":
            causes += self._validate_crd(obj)
        if resources.storage_key(resource) == ("", "events"):
            _normalize_event_times(obj)
            event = obj if obj.get("apiVersion") == "v1" else conversions.events_to_core(obj)
            event_causes = _validate_event(event, events_api=bool(resource.group), creating=old is None)
            if event_causes:  # validated as the internal core Event, whichever API it came through
                raise errors.invalid(kind="Event", group="", name=name, causes=causes + event_causes)
        if resource.plural == "configmaps" and not resource.group:
            causes += _validate_configmap(obj)
        if resource.plural in ("configmaps", "secrets") and not resource.group and old is not None:
            causes += _immutable_causes(resource.plural, old, obj)
        if causes:
            raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=causes)
        return obj

    def _defaults_for_builtins(self, resource: resources.Resource, obj: Obj) -> None:
        if resource.plural == "namespaces" and not resource.group:
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif resource.plural == "pods" and not resource.group:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif resource.plural == "secrets" and not resource.group:
            obj.setdefault("type", "Opaque")
        fold_string_data(resource, obj)

