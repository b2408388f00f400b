"""API semantics per verb — create, update, patch, delete, list — on top of the store.

Independent of HTTP: the server parses requests into calls here. This is where the server-set
metadata, optimistic concurrency, the status subresource, finalizers, namespaces, CRD
registration, schema validation and ownerReference garbage collection live.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import random
import re
import uuid
from typing import Any

import yaml

from localcluster import conversions, errors, guarding, patching, resources, schemas, selectors, storing

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
# ObjectMeta fields the server owns: a client's values are ignored on create and update.
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                "resourceVersion", "selfLink", "managedFields")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_suffix() -> str:
    # The real generator avoids vowels and confusable digits so that suffixes never spell words.
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))


def _fold_string_data(resource: resources.Resource, obj: Obj) -> None:
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


class Cluster:
    def __init__(self, *, history: int = storing.HISTORY) -> None:
        self.store = storing.Store(history=history)
        self.registry = resources.Registry()
        self.schema_version = 0  # bumped on every CRD change; the OpenAPI documents key on it
        self.orphaned: set[str] = set()  # owners deleted with propagationPolicy=Orphan
        for builtin in resources.BUILTINS:  # served from the start: their watch windows begin at 0
            self.store.bucket(resources.storage_key(builtin))
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self._resource("", "v1", "namespaces"), None, {"metadata": {"name": name}})

    def _resource(self, group: str, version: str, plural: str) -> resources.Resource:
        resource = self.registry.get(group, version, plural)
        assert resource is not None
        return resource

    # --- reads --------------------------------------------------------------------------------

    def get(self, resource: resources.Resource, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(resources.storage_key(resource), namespace or "", name)
        if obj is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        return self.present(resource, obj)

    def present(self, resource: resources.Resource, obj: Obj) -> Obj:
        """The stored object as seen through `resource` (its apiVersion; no conversion otherwise)."""
        if obj.get("apiVersion") != resource.api_version:
            if resource.group == "events.k8s.io":
                return conversions.core_to_events(obj)
            if obj.get("apiVersion") == "events.k8s.io/v1":
                return conversions.events_to_core(obj)
            return {**obj, "apiVersion": resource.api_version}
        return obj

    def list(self, resource: resources.Resource, namespace: str | None, *, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> Obj:
        labels = selectors.parse_labels(label_selector)
        fields = selectors.parse_fields(field_selector, storage=resources.storage_key(resource),
                                        custom=resource.custom)
        start: tuple[str, str] | None = None
        list_rv = self.store.rv
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, list_rv = tuple(token["start"]), token["rv"]  # type: ignore[assignment]
            except Exception:
                raise errors.bad_request("continue key is not valid: illegal base64 data")
        items: list[Obj] = []
        next_token = None
        remaining = 0
        for obj in self.store.iterate(resources.storage_key(resource), namespace):
            meta = obj["metadata"]
            position = (meta.get("namespace", ""), meta["name"])
            if start is not None and position <= start:
                continue
            if not selectors.labels_match(labels, obj) or not selectors.fields_match(fields, obj):
                continue
            if limit and limit > 0 and len(items) >= limit:  # a negative limit means none, as in kube-apiserver
                if next_token is None:
                    last = items[-1]["metadata"]
                    next_token = base64.urlsafe_b64encode(json.dumps(
                        {"start": [last.get("namespace", ""), last["name"]], "rv": list_rv}).encode()).decode()
                remaining += 1
                continue
            items.append(self.present(resource, obj))
        metadata: Obj = {"resourceVersion": str(list_rv)}
        if next_token:
            metadata["continue"] = next_token
            metadata["remainingItemCount"] = remaining
        return {"apiVersion": resource.api_version, "kind": f"{resource.kind}List", "metadata": metadata,
                "items": items}

    # --- writes -------------------------------------------------------------------------------

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

    def _validate_crd(self, crd: Obj) -> list[dict[str, str]]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes = []
        if not spec.get("group"):
            causes.append(errors.cause("spec.group", "FieldValueRequired", "Required value"))
        for field in ("plural", "kind"):
            if not names.get(field):
                causes.append(errors.cause(f"spec.names.{field}", "FieldValueRequired", "Required value"))
        if spec.get("scope") not in ("Cluster", "Namespaced"):
            causes.append(errors.cause("spec.scope", "FieldValueNotSupported", f"Unsupported value: "
                                       f"{json.dumps(spec.get('scope'))}: supported values: \"Cluster\", \"Namespaced\""))
        if not spec.get("versions"):
            causes.append(errors.cause("spec.versions", "FieldValueInvalid", "Invalid value: null: must have "
                                       "exactly one version marked as storage version"))
        for index, version in enumerate(spec.get("versions") or []):
            # apiextensions.k8s.io/v1 requires a structural schema for every version.
            if not ((version or {}).get("schema") or {}).get("openAPIV3Schema"):
                causes.append(errors.cause(f"spec.versions[{index}].schema.openAPIV3Schema", "FieldValueRequired",
                                           "Required value: schemas are required"))
        if not causes and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            causes.append(errors.cause("metadata.name", "FieldValueInvalid",
                                       f"Invalid value: {schemas.render(crd['metadata']['name'])}: must be "
                                       f"spec.names.plural+\".\"+spec.group"))
        return causes

    def create(self, resource: resources.Resource, namespace: str | None, body: Any, *,
               field_validation: str = "Warn", dry_run: bool = False, warnings: list[str] | None = None) -> Obj:
        warnings = warnings if warnings is not None else []
        obj = self._check_body(resource, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + _random_suffix()
            else:
                raise errors.invalid(kind=resource.kind, group=resource.group, name="", causes=[errors.cause(
                    "metadata.name", "FieldValueRequired", "Required value: name or generateName is required")])
        name = meta["name"]
        self._require_namespace(resource, namespace, name)
        for field in _SERVER_META:
            meta.pop(field, None)
        if resource.status_subresource:
            # Status is written through /status only; a create starts from an empty status.
            obj.pop("status", None)
        self._defaults_for_builtins(resource, obj)
        self._admit(resource, obj, None, field_validation=field_validation, warnings=warnings)
        key = resources.storage_key(resource)
        if self.store.get(key, namespace or "", name) is not None:
            raise errors.already_exists(plural=resource.plural, group=resource.group, name=name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if resource.generation:
            meta["generation"] = 1
        if resource.plural == "customresourcedefinitions":
            self._crd_status(obj)
        if dry_run:
            meta["resourceVersion"] = str(self.store.rv)
            return obj
        stored = self.store.put(key, obj, old=None)
        if resource.plural == "customresourcedefinitions":
            self._register_crd(stored)
        if meta.get("ownerReferences"):
            self._schedule_gc([ref.get("uid", "") for ref in meta["ownerReferences"]])
        return self.present(resource, stored)

    def _defaults_for_builtins(self, resource: resources.Resource, obj: Obj) -> None:
        if resource.plural == "namespaces" and not resource.group:
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif resource.plural == "pods" and not resource.group:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif resource.plural == "secrets" and not resource.group:
            obj.setdefault("type", "Opaque")
        _fold_string_data(resource, obj)

    def update(self, resource: resources.Resource, namespace: str | None, name: str, body: Any, *,
               subresource: str | None = None, field_validation: str = "Warn", dry_run: bool = False,
               warnings: list[str] | None = None, current: Obj | None = None) -> Obj:
        warnings = warnings if warnings is not None else []
        key = resources.storage_key(resource)
        old = current or self.store.get(key, namespace or "", name)
        if old is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        obj = self._check_body(resource, namespace, body)
        meta = obj["metadata"]
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the "
                                     f"URL ({name})")
        meta["name"] = name
        rv = meta.get("resourceVersion")
        if rv:
            if rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(plural=resource.plural, group=resource.group, name=name)
        elif not resource.unconditional_update:
            raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=[errors.cause(
                "metadata.resourceVersion", "FieldValueInvalid", "Invalid value: 0x0: must be specified for an update")])
        old_meta = old["metadata"]
        uid = meta.get("uid")
        if uid and uid != old_meta.get("uid"):
            if current is None:  # PUT: the uid is a storage precondition
                prefix = f"{resource.group}/{resource.plural}" if resource.custom else resource.plural
                where = f"/registry/{prefix}/{namespace + '/' if namespace else ''}{name}"
                raise errors.conflict(plural=resource.plural, group=resource.group, name=name, message=(
                    f"StorageError: invalid object, Code: 4, Key: {where}, ResourceVersion: 0, AdditionalErrorMsg: "
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old_meta.get('uid')}"))
            raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=[errors.cause(
                "metadata.uid", "FieldValueInvalid", f"Invalid value: {json.dumps(uid)}: field is immutable")])
        if subresource == "status":
            # A status write changes the status and nothing else (metadata included).
            new = {k: v for k, v in old.items() if k != "status"}
            new["metadata"] = dict(old_meta)
            if "status" in obj:
                new["status"] = obj["status"]
            obj = patching.copy(new)
            meta = obj["metadata"]
        else:
            if resource.status_subresource:
                obj.pop("status", None)
                if "status" in old:
                    obj["status"] = patching.copy(old["status"])
            for field in _SERVER_META:
                meta.pop(field, None)
                if field in old_meta:
                    meta[field] = old_meta[field]
            if old_meta.get("deletionTimestamp"):
                added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
                if added:
                    listed = ", ".join(json.dumps(f) for f in added)
                    raise errors.invalid(kind=resource.kind, group=resource.group, name=name, causes=[errors.cause(
                        "metadata.finalizers", "FieldValueForbidden", "Forbidden: no new finalizers can be added if "
                        f"the object is being deleted, found new finalizers []string{{{listed}}}")])
        if resource.plural == "namespaces" and not resource.group and subresource != "status":
            obj["spec"] = patching.copy(old.get("spec") or {})  # spec.finalizers changes only via /finalize
        _fold_string_data(resource, obj)
        if resource.plural == "secrets" and not resource.group and subresource != "status":
            obj.setdefault("type", "Opaque")  # defaulted on every write, as when kube-apiserver decodes
        self._admit(resource, obj, old, field_validation=field_validation, warnings=warnings)
        if resource.generation and subresource != "status" and self._spec_changed(resource, old, obj):
            meta["generation"] = old_meta.get("generation", 1) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if obj == old:
            return self.present(resource, old)  # a no-op write keeps the resourceVersion, emits nothing
        if resource.plural == "customresourcedefinitions":
            self._crd_status(obj)
        if dry_run:
            return obj
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._held_by_namespace(resource, obj):
            # As in kube-apiserver, the last write is never stored: the object is deleted instead, the
            # DELETED event carries the last stored state, and the writer gets its update at the old
            # resourceVersion.
            final = self.store.remove(key, old)
            self._after_removal(resource, final)
            return self.present(resource, obj)
        stored = self.store.put(key, obj, old=old)
        if resource.plural == "customresourcedefinitions":
            self._register_crd(stored)
        if meta.get("ownerReferences") != old_meta.get("ownerReferences") and meta.get("ownerReferences"):
            self._schedule_gc([ref.get("uid", "") for ref in meta["ownerReferences"]])
        return self.present(resource, stored)

    def _spec_changed(self, resource: resources.Resource, old: Obj, new: Obj) -> bool:
        ignored = ("metadata", "status") if resource.status_subresource else ("metadata",)
        keys = (set(old) | set(new)) - set(ignored)
        return any(old.get(k) != new.get(k) for k in keys)

    def patch(self, resource: resources.Resource, namespace: str | None, name: str, patch_body: bytes,
              content_type: str, *, subresource: str | None = None, field_validation: str = "Warn",
              dry_run: bool = False, field_manager: str | None = None, force: bool = False,
              warnings: list[str] | None = None) -> Obj:
        key = resources.storage_key(resource)
        old = self.store.get(key, namespace or "", name)
        if content_type == patching.APPLY:
            return self._apply(resource, namespace, name, patch_body, old, subresource=subresource,
                               field_validation=field_validation, dry_run=dry_run, field_manager=field_manager,
                               warnings=warnings)
        accepted = [patching.JSON, patching.MERGE, patching.APPLY]
        if not resource.custom:
            accepted.append(patching.STRATEGIC)
        if content_type not in accepted:
            if not resource.custom:
                # kube-apiserver's built-in handlers answer an unknown patch type in net/http's words.
                raise errors.ApiError(errors.status(code=415, reason="UnsupportedMediaType",
                                                    message="415: Unsupported Media Type", details={}))
            raise errors.unsupported_media_type(content_type, accepted)
        try:
            patch = guarding.load_json(patch_body or b"null")
        except ValueError as e:
            raise errors.bad_request(f"error decoding patch: {e}")
        if old is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        current = self.present(resource, old)
        if content_type == patching.JSON:
            new = patching.json_patch(current, patch, describe=f"{resource.qualified} \"{name}\"")
        elif content_type == patching.MERGE:
            if not isinstance(patch, dict):
                raise errors.bad_request("json: cannot unmarshal into a merge patch: the patch must be an object")
            new = patching.merge_patch(current, patch)
        else:
            if not isinstance(patch, dict):
                raise errors.bad_request("json: cannot unmarshal into a strategic merge patch: must be an object")
            new = patching.strategic_merge_patch(current, patch)
        if not isinstance(new, dict):
            raise errors.bad_request("the patch result is not an object")
        return self.update(resource, namespace, name, new, subresource=subresource, field_validation=field_validation,
                           dry_run=dry_run, warnings=warnings, current=old)

    def _apply(self, resource: resources.Resource, namespace: str | None, name: str, body: bytes, old: Obj | None,
               **kw: Any) -> Obj:
        """Server-side apply, approximated: create if missing, else merge the applied fields in.

        No managedFields, no field ownership, no conflicts between managers, and fields dropped
        from the applied configuration are not removed.
        """
        if not kw.pop("field_manager", None):
            raise errors.invalid(kind="PatchOptions", group="meta.k8s.io", name="", causes=[errors.cause(
                "fieldManager", "FieldValueRequired", "Required value: is required for apply patch")])
        try:
            applied = guarding.load_yaml(body or b"")
        except yaml.YAMLError as e:
            raise errors.bad_request(f"error decoding YAML: {e}")
        if not isinstance(applied, dict):
            raise errors.bad_request("the applied configuration must be an object")
        api_version, kind = str(applied.get("apiVersion") or ""), str(applied.get("kind") or "")
        if not api_version or not kind:
            group, _, version = api_version.rpartition("/")
            raise errors.bad_request(f"invalid object type: {group}/{version}, Kind={kind}")
        applied_name = (applied.get("metadata") or {}).get("name") if isinstance(applied.get("metadata"), dict) else None
        if applied_name not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({applied_name}) does not match the name on the URL "
                                     f"({name})")
        subresource = kw.pop("subresource")
        if old is None:
            if subresource:
                raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
            applied.setdefault("metadata", {})["name"] = name
            return self.create(resource, namespace, applied, **kw)
        applied.get("metadata", {}).pop("resourceVersion", None)
        merge = patching.merge_patch if resource.custom else patching.strategic_merge_patch
        new = merge(self.present(resource, old), applied)
        return self.update(resource, namespace, name, new, subresource=subresource, current=old, **kw)

    # --- deletion -----------------------------------------------------------------------------

    def delete(self, resource: resources.Resource, namespace: str | None, name: str, options: Obj | None = None, *,
               dry_run: bool = False) -> Obj:
        key = resources.storage_key(resource)
        old = self.store.get(key, namespace or "", name)
        if old is None:
            raise errors.not_found(plural=resource.plural, group=resource.group, name=name)
        options = options or {}
        preconditions = options.get("preconditions") or {}
        meta = old["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise errors.precondition_failed(kind=resource.kind, group=resource.group, name=name, message=(
                f"the UID in the precondition ({preconditions['uid']}) does not match the UID in record "
                f"({meta.get('uid')}). The object might have been deleted and then recreated"))
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
            raise errors.precondition_failed(kind=resource.kind, group=resource.group, name=name, message=(
                f"the ResourceVersion in the precondition ({preconditions['resourceVersion']}) does not match the "
                f"ResourceVersion in record ({meta.get('resourceVersion')}). The object might have been modified"))
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            self._orphan(meta.get("uid", ""))
        is_namespace = resource.plural == "namespaces" and not resource.group
        if is_namespace and name in ("default", "kube-system", "kube-public"):
            raise errors.forbidden(plural="namespaces", group="", name=name, message="this namespace may not be deleted")
        if dry_run:
            return self.present(resource, old)
        if meta.get("finalizers") or is_namespace:
            if meta.get("deletionTimestamp"):
                return self.present(resource, old)  # already being deleted: nothing changes
            new = patching.copy(old)
            new_meta = new["metadata"]
            new_meta["deletionTimestamp"] = now()
            new_meta["deletionGracePeriodSeconds"] = 0
            if new_meta.get("generation"):
                new_meta["generation"] += 1
            if is_namespace:
                new["status"] = {"phase": "Terminating"}
            stored = self.store.put(key, new, old=old)
            if is_namespace:
                asyncio.get_running_loop().call_soon(self._sweep_namespace, name)
            return self.present(resource, stored)
        final = self.store.remove(key, old)
        self._after_removal(resource, final)
        return self.present(resource, final)

    def delete_collection(self, resource: resources.Resource, namespace: str | None, options: Obj | None, *,
                          label_selector: str | None, field_selector: str | None, dry_run: bool = False) -> Obj:
        listed = self.list(resource, namespace, label_selector=label_selector, field_selector=field_selector)
        deleted = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            try:
                deleted.append(self.delete(resource, meta.get("namespace"), meta["name"], options, dry_run=dry_run))
            except errors.ApiError as e:
                if e.code != 404:
                    raise
        listed["items"] = deleted
        return listed

    def _held_by_namespace(self, resource: resources.Resource, obj: Obj) -> bool:
        # A terminating namespace stays until all of its content is gone.
        return (resource.plural == "namespaces" and not resource.group
                and not self.store.namespace_is_empty(obj["metadata"]["name"]))

    def _after_removal(self, resource: resources.Resource, final: Obj) -> None:
        meta = final["metadata"]
        if resource.plural == "customresourcedefinitions":
            self._unregister_crd(final)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._collect_dependents, meta.get("uid", ""))
        if meta.get("namespace"):
            ns = self.store.get(("", "namespaces"), "", meta["namespace"])
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                loop.call_soon(self._sweep_namespace, meta["namespace"])

    def _sweep_namespace(self, namespace: str) -> None:
        """The namespace controller: delete all content, then the namespace once it is empty."""
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key, obj in list(self.store.namespaced_objects(namespace)):
            resource = self._served(key)
            if resource is None or obj["metadata"].get("deletionTimestamp"):
                continue
            self.delete(resource, namespace, obj["metadata"]["name"])
        if self.store.namespace_is_empty(namespace):
            namespaces = self._resource("", "v1", "namespaces")
            final = self.store.remove(("", "namespaces"), ns)
            self._after_removal(namespaces, final)

    def _served(self, key: storing.Key) -> resources.Resource | None:
        for resource in self.registry.by_gvr.values():
            if resources.storage_key(resource) == key:
                return resource
        return None

    # --- garbage collection -------------------------------------------------------------------

    def _orphan(self, uid: str) -> None:
        self.orphaned.add(uid)

    def _schedule_gc(self, owner_uids: list[str]) -> None:
        # Dependents created with owners that do not exist (any more) are collected too.
        loop = asyncio.get_running_loop()
        for uid in owner_uids:
            if uid not in self.store.uids:
                loop.call_soon(self._collect_dependents, uid)

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background propagation: delete dependents none of whose owners exist any more."""
        if owner_uid in self.store.uids or owner_uid in self.orphaned:
            return
        for key, namespace, name in list(self.store.dependents.pop(owner_uid, ())):
            obj = self.store.get(key, namespace, name)
            resource = self._served(key)
            if obj is None or resource is None or obj["metadata"].get("deletionTimestamp"):
                continue
            owners = [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []]
            if any(uid in self.store.uids for uid in owners):
                continue
            try:
                self.delete(resource, namespace or None, name)
            except errors.ApiError:
                logger.debug("garbage collection of %s/%s failed", namespace, name, exc_info=True)

    # --- CRDs ---------------------------------------------------------------------------------

    def _crd_status(self, crd: Obj) -> None:
        names = (crd.get("spec") or {}).get("names") or {}
        stamp = now()
        crd["status"] = {
            "acceptedNames": patching.copy(names),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": stamp},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": stamp},
            ],
            "storedVersions": [v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")],
        }

    def _register_crd(self, crd: Obj) -> None:
        self.registry.remove_crd(crd["metadata"]["name"])
        for resource in resources.from_crd(crd):
            self.registry.add(resource)
            self.store.bucket(resources.storage_key(resource))  # its watch window starts now
            if resource.schema:
                self._default_stored(resource)
        self.schema_version += 1

    def _default_stored(self, resource: resources.Resource) -> None:
        # Defaults apply on read to objects stored before the schema had them; the result is the
        # same whether done now or per read, as the real server never persists read-time defaults.
        bucket = self.store.buckets.get(resources.storage_key(resource))
        if bucket is None or resource.schema is None:
            return
        for names in bucket.by_namespace.values():
            for name, obj in list(names.items()):
                defaulted = schemas.default(resource.schema, patching.copy(obj))
                if defaulted != obj:
                    names[name] = defaulted

    def _unregister_crd(self, crd: Obj) -> None:
        gone = self.registry.remove_crd(crd["metadata"]["name"])
        for key in {resources.storage_key(r) for r in gone}:
            self.store.drop_bucket(key)
        self.schema_version += 1

    def load_crd(self, crd: Obj) -> Obj:
        """Create or replace a CRD from a manifest (used at start-up)."""
        crds = self._resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        existing = self.store.get(resources.storage_key(crds), "", crd["metadata"]["name"])
        if existing is None:
            return self.create(crds, None, patching.copy(crd))
        body = patching.copy(crd)
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return self.update(crds, None, crd["metadata"]["name"], body)
