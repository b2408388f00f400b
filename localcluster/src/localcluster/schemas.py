"""Structural-schema handling for custom resources: pruning, defaulting, validation, CEL rules.

Follows the apiextensions-apiserver order — prune unknown fields, apply defaults, validate the
OpenAPI v3 constraints, then evaluate `x-kubernetes-validations` — and reports problems as
field causes with the real server's wording, so `kubectl` users and tests see the same text.
Pure functions, no I/O.
"""
from __future__ import annotations

import json
import re
from typing import Any

import cel

from localcluster import errors, patching

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_PROGRAMS: dict[str, Any] = {}
_PATTERNS: dict[str, re.Pattern[str]] = {}


def render(value: Any) -> str:
    """A value as Go's field errors print it (strings quoted, containers by type name)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- pruning and defaulting -------------------------------------------------------------------

def prune(schema: dict[str, Any], obj: Any, path: str = "", unknown: list[str] | None = None, *,
          root: bool = False) -> Any:
    """Drop fields the schema does not declare (in place on a private copy); record their paths."""
    unknown = unknown if unknown is not None else []
    if isinstance(obj, dict) and schema.get("type", "object") == "object":
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        embedded = schema.get("x-kubernetes-embedded-resource", False)
        for key in list(obj):
            if (root or embedded) and key in _ROOT_KEEP:
                continue
            if properties and key in properties:
                obj[key] = prune(properties[key], obj[key], _join(path, key), unknown)
            elif isinstance(additional, dict):
                obj[key] = prune(additional, obj[key], _join(path, key), unknown)
            elif additional is True or preserve:
                continue
            else:
                unknown.append(_join(path, key))
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            obj[index] = prune(schema["items"], item, f"{path}[{index}]", unknown)
    return obj


def default(schema: dict[str, Any], obj: Any) -> Any:
    """Apply `default`s (in place) and drop nulls of non-nullable fields, as the real server does."""
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj and obj[key] is None and not sub.get("nullable", False):
                del obj[key]
            if key not in obj and "default" in sub:
                obj[key] = patching.copy(sub["default"])
            if key in obj:
                default(sub, obj[key])
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, value in obj.items():
                if key not in (schema.get("properties") or {}):
                    default(additional, value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            default(schema["items"], item)
    return obj


# --- validation -----------------------------------------------------------------------------

# Schema errors after which kube-apiserver does not evaluate CEL rules at all (its hasBlockingErr):
# the rules could not be trusted to see the types they were written for. An enum violation
# (FieldValueNotSupported) is not one of them: v1.28.7 reports it beside the rules' messages.
_BLOCKING = frozenset({"FieldValueRequired", "FieldValueTooLong", "FieldValueTooMany", "FieldValueTypeInvalid"})


def validate(schema: dict[str, Any], obj: Any, old: Any = None) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    _validate(schema, obj, old, "", causes, root=True, rules=False)
    if any(cause.get("reason") in _BLOCKING for cause in causes):
        causes.append(errors.cause("<nil>", "FieldValueInvalid", "Invalid value: \"null\": some validation rules were "
                                   "not checked because the object was invalid; correct the existing errors to "
                                   "complete validation"))
        return causes
    # Other schema errors (a pattern, a bound) do not stop the rules: both kinds are reported.
    rule_causes: list[dict[str, str]] = []
    _validate(schema, obj, old, "", rule_causes, root=True, rules=True)
    known = {json.dumps(c, sort_keys=True) for c in causes}
    causes.extend(c for c in rule_causes if json.dumps(c, sort_keys=True) not in known)
    return causes


def _invalid(causes: list[dict[str, str]], path: str, value: Any, detail: str, reason: str = "FieldValueInvalid") -> None:
    causes.append(errors.cause(path, reason, f"Invalid value: {render(value)}: {detail}"))


def _check_type(schema: dict[str, Any], value: Any, path: str, causes: list[dict[str, str]]) -> bool:
    expected = schema.get("type")
    if value is None:
        if schema.get("nullable"):
            return False
        if expected:
            _invalid(causes, path, "null", f"{path} in body must be of type {expected}: \"null\"",
                     "FieldValueTypeInvalid")
        return False
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            _invalid(causes, path, value, f"{path} in body must be of type integer,string: {render(type_name(value))}",
                     "FieldValueTypeInvalid")
            return False
        return True
    if not expected:
        return True
    actual = type_name(value)
    ok = actual == expected or (expected == "number" and actual == "integer")
    if not ok:
        _invalid(causes, path, actual, f"{path} in body must be of type {expected}: {render(actual)}",
                 "FieldValueTypeInvalid")
    return ok


def _validate(schema: dict[str, Any], value: Any, old: Any, path: str, causes: list[dict[str, str]], *,
              root: bool = False, rules: bool = True) -> None:
    if not _check_type(schema, value, path, causes):
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(render(v) for v in schema["enum"])
        causes.append(errors.cause(path, "FieldValueNotSupported",
                                   f"Unsupported value: {render(value)}: supported values: {supported}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(schema, value, path, causes)
    elif isinstance(value, str):
        _validate_string(schema, value, path, causes)
    elif isinstance(value, list):
        _validate_array(schema, value, old, path, causes, rules=rules)
    elif isinstance(value, dict):
        _validate_object(schema, value, old, path, causes, root=root, rules=rules)
    if rules and schema.get("x-kubernetes-validations"):
        _validate_rules(schema["x-kubernetes-validations"], value, old, path, causes, type_=schema.get("type", ""))


def _validate_number(schema: dict[str, Any], value: float, path: str, causes: list[dict[str, str]]) -> None:
    if "minimum" in schema:
        minimum = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= minimum:
            _invalid(causes, path, value, f"{path} in body should be greater than {minimum}")
        elif value < minimum:
            _invalid(causes, path, value, f"{path} in body should be greater than or equal to {minimum}")
    if "maximum" in schema:
        maximum = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= maximum:
            _invalid(causes, path, value, f"{path} in body should be less than {maximum}")
        elif value > maximum:
            _invalid(causes, path, value, f"{path} in body should be less than or equal to {maximum}")
    if schema.get("multipleOf") and value % schema["multipleOf"]:
        _invalid(causes, path, value, f"{path} in body should be a multiple of {schema['multipleOf']}")


def _validate_string(schema: dict[str, Any], value: str, path: str, causes: list[dict[str, str]]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(errors.cause(path, "FieldValueTooLong",
                                   f"Too long: may not be longer than {schema['maxLength']}"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        _invalid(causes, path, value, f"{path} in body should be at least {schema['minLength']} chars long")
    if "pattern" in schema:
        pattern = _PATTERNS.get(schema["pattern"])
        if pattern is None:
            pattern = _PATTERNS[schema["pattern"]] = re.compile(schema["pattern"])
        if not pattern.search(value):
            _invalid(causes, path, value, f"{path} in body should match '{schema['pattern']}'")
    if schema.get("format") in ("date-time",) and not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        _invalid(causes, path, value, f"{path} in body must be of type date-time: {render(value)}")


def _validate_array(schema: dict[str, Any], value: list[Any], old: Any, path: str,
                    causes: list[dict[str, str]], *, rules: bool) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(errors.cause(path, "FieldValueTooMany",
                                   f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
    if "minItems" in schema and len(value) < schema["minItems"]:
        _invalid(causes, path, len(value), f"{path} in body should have at least {schema['minItems']} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(items, item, None, f"{path}[{index}]", causes, rules=rules)
    if schema.get("x-kubernetes-list-type") == "set" and len({json.dumps(v, sort_keys=True) for v in value}) < len(value):
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                causes.append(errors.cause(f"{path}[{index}]", "FieldValueDuplicate",
                                           f"Duplicate value: {render(item)}"))
            seen.append(item)


def _validate_object(schema: dict[str, Any], value: dict[str, Any], old: Any, path: str,
                     causes: list[dict[str, str]], *, root: bool, rules: bool) -> None:
    old = old if isinstance(old, dict) else None
    for name in schema.get("required") or []:
        if name not in value:
            causes.append(errors.cause(_join(path, name), "FieldValueRequired", "Required value"))
    properties = schema.get("properties") or {}
    for key, sub in properties.items():
        if root and key in _ROOT_KEEP:
            continue
        if key in value:
            _validate(sub, value[key], old.get(key) if old else None, _join(path, key), causes, rules=rules)
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        for key, item in value.items():
            if key not in properties:
                _validate(additional, item, old.get(key) if old else None, _join(path, key), causes, rules=rules)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(errors.cause(path, "FieldValueTooMany",
                                   f"Too many: {len(value)}: must have at most {schema['maxProperties']} items"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        _invalid(causes, path, len(value), f"{path} in body should have at least {schema['minProperties']} properties")


def _program(rule: str) -> Any:
    program = _PROGRAMS.get(rule)
    if program is None:
        program = _PROGRAMS[rule] = cel.compile(rule)
    return program


def _validate_rules(rules: list[dict[str, Any]], value: Any, old: Any, path: str,
                    causes: list[dict[str, str]], *, type_: str) -> None:
    # kube-apiserver names the schema's type, not the value, in a rule's error ('Invalid value: "string"'):
    # the value may be large or secret, and the rule's message says what is wrong with it.
    for rule in rules:
        expression = rule.get("rule", "")
        field = path + rule["fieldPath"] if rule.get("fieldPath") else path
        try:
            program = _program(expression)
            names = program.variables()
            if "oldSelf" in names:
                if old is None and not rule.get("optionalOldSelf"):
                    continue  # a transition rule only applies to updates of an existing value
                result = program.execute({"self": value, "oldSelf": old})
            else:
                result = program.execute({"self": value})
        except Exception as e:  # the CEL library raises ValueError/RuntimeError on compile and eval errors
            _invalid(causes, field, type_, f"{e} evaluating rule: {expression}")
            continue
        if result is True:
            continue
        message = rule.get("message") or f"failed rule: {expression}"
        if rule.get("messageExpression"):
            try:
                message = str(_program(rule["messageExpression"]).execute({"self": value, "oldSelf": old}))
            except Exception:
                pass
        reason = rule.get("reason", "FieldValueInvalid")
        if reason == "FieldValueRequired":
            causes.append(errors.cause(field, reason, f"Required value: {message}"))
        elif reason == "FieldValueForbidden":
            causes.append(errors.cause(field, reason, f"Forbidden: {message}"))
        elif reason == "FieldValueDuplicate":
            causes.append(errors.cause(field, reason, f"Duplicate value: {render(type_)}: {message}"))
        else:
            _invalid(causes, field, type_, message)


# --- metadata -------------------------------------------------------------------------------

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def validate_name(name: str, *, label: bool = False) -> list[dict[str, str]]:
    if label:
        if len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
            return [errors.cause("metadata.name", "FieldValueInvalid", f"Invalid value: {render(name)}: a lowercase "
                                 "RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                                 "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")]
        return []
    if len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name):
        return [errors.cause("metadata.name", "FieldValueInvalid", f"Invalid value: {render(name)}: a lowercase RFC "
                             "1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
                             "start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]
    return []


def _qualified_name_invalid(key: str) -> bool:
    return bool(_qualified_name_problems(key))


def _qualified_name_problems(key: str) -> list[str]:
    """IsQualifiedName's messages: a DNS-1123 subdomain prefix, a name part of at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    problems = []
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        problems.append("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                        "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
                        "'example.com', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    if not name or len(name) > 63 or not QUALIFIED_NAME.fullmatch(name):
        problems.append("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                        "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
                        "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return problems


def validate_annotation_keys(annotations: Any) -> list[dict[str, str]]:
    """Annotation keys are qualified names, like label keys."""
    if not isinstance(annotations, dict):
        return []
    return [errors.cause("metadata.annotations", "FieldValueInvalid", f"Invalid value: {render(key)}: {problem}")
            for key in annotations for problem in _qualified_name_problems(key)]


_STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")


def validate_finalizers(finalizers: Any) -> list[dict[str, str]]:
    """Finalizers are qualified names with a domain ("example.com/x"), or one of the standard three."""
    causes: list[dict[str, str]] = []
    for index, value in enumerate(finalizers if isinstance(finalizers, list) else []):
        value = str(value)
        problems = _qualified_name_problems(value)
        for problem in problems:  # reported on the list, without an index, as kube-apiserver does
            causes.append(errors.cause("metadata.finalizers", "FieldValueInvalid",
                                       f"Invalid value: {render(value)}: {problem}"))
        if not problems and "/" not in value and value not in _STANDARD_FINALIZERS:
            causes.append(errors.cause(f"metadata.finalizers[{index}]", "FieldValueInvalid",
                                       f"Invalid value: {render(value)}: name is neither a standard finalizer name "
                                       "nor is it fully qualified"))
    return causes


def validate_labels(labels: Any) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    if labels is None:
        return causes
    if not isinstance(labels, dict):
        return [errors.cause("metadata.labels", "FieldValueTypeInvalid", "Invalid value: must be a map of strings")]
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not name or len(name) > 63 or not QUALIFIED_NAME.fullmatch(name) or (
                prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix))):
            causes.append(errors.cause("metadata.labels", "FieldValueInvalid", f"Invalid value: {render(key)}: name "
                                       "part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                                       "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                                       "'123-abc', regex used for validation is "
                                       "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"))
        if not isinstance(value, str):
            causes.append(errors.cause("metadata.labels", "FieldValueTypeInvalid",
                                       f"Invalid value: {render(value)}: must be a string"))
        elif len(value) > 63:
            causes.append(errors.cause("metadata.labels", "FieldValueInvalid", f"Invalid value: {render(value)}: must "
                                       "be no more than 63 characters"))
        elif not LABEL_VALUE.fullmatch(value):
            causes.append(errors.cause("metadata.labels", "FieldValueInvalid", f"Invalid value: {render(value)}: a "
                                       "valid label must be an empty string or consist of alphanumeric characters, "
                                       "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                                       "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                                       "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))
    return causes
