"""Label and field selectors: parsing the query strings and matching objects against them.

Pure functions; parse errors raise `errors.ApiError` (400 BadRequest) as the real server does.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from localcluster import errors

_REQUIREMENT = re.compile(
    r"""\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*
        (?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)
          |\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
        )?\s*""",
    re.VERBOSE,
)


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        raise AssertionError(self.op)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (set-based requirements contain commas)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_labels(text: str | None) -> list[Requirement]:
    if not text or not text.strip():
        return []
    requirements = []
    for part in _split_top_level(text):
        match = _REQUIREMENT.fullmatch(part)
        if not match or (match["neg"] and (match["op"] or match["setop"])):
            raise errors.bad_request(f"unable to parse requirement: found '{part.strip()}', expected: "
                                     f"identifier, '!', '=', '==', '!=', 'in', 'notin'")
        key = match["key"]
        if match["neg"]:
            requirements.append(Requirement(key, "!exists"))
        elif match["op"]:
            requirements.append(Requirement(key, "!=" if match["op"] == "!=" else "=", (match["value"],)))
        elif match["setop"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(Requirement(key, match["setop"], values))
        else:
            requirements.append(Requirement(key, "exists"))
    return requirements


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    if not requirements:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


# Field selectors each kind supports, beyond metadata.name and metadata.namespace (which all support).
FIELD_GETTERS: dict[tuple[str, str], dict[str, Callable[[dict[str, Any]], Any]]] = {
    ("", "events"): {
        "involvedObject.kind": lambda o: o.get("involvedObject", {}).get("kind"),
        "involvedObject.namespace": lambda o: o.get("involvedObject", {}).get("namespace"),
        "involvedObject.name": lambda o: o.get("involvedObject", {}).get("name"),
        "involvedObject.uid": lambda o: o.get("involvedObject", {}).get("uid"),
        "involvedObject.apiVersion": lambda o: o.get("involvedObject", {}).get("apiVersion"),
        "involvedObject.resourceVersion": lambda o: o.get("involvedObject", {}).get("resourceVersion"),
        "involvedObject.fieldPath": lambda o: o.get("involvedObject", {}).get("fieldPath"),
        "reason": lambda o: o.get("reason"),
        "reportingComponent": lambda o: o.get("reportingComponent"),
        "source": lambda o: (o.get("source") or {}).get("component"),
        "type": lambda o: o.get("type"),
    },
    ("", "pods"): {
        "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": lambda o: (o.get("spec") or {}).get("serviceAccountName"),
        "status.phase": lambda o: (o.get("status") or {}).get("phase"),
        "status.podIP": lambda o: (o.get("status") or {}).get("podIP"),
    },
    ("", "secrets"): {"type": lambda o: o.get("type")},
    ("", "namespaces"): {"status.phase": lambda o: (o.get("status") or {}).get("phase")},
}

_COMMON_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name"),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace"),
}


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    getter: Callable[[dict[str, Any]], Any]
    negate: bool
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        actual = self.getter(obj)
        actual = "" if actual is None else str(actual)
        return (actual != self.value) if self.negate else (actual == self.value)


def parse_fields(text: str | None, *, storage: tuple[str, str], custom: bool) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    getters = {**_COMMON_FIELDS, **FIELD_GETTERS.get(storage, {})}
    result = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not match:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = match.groups()
        getter = getters.get(field)
        if getter is None:
            # kube-apiserver: kinds with field selectors of their own (and custom resources) answer
            # "field label not supported"; the rest use the default metadata-only conversion's text.
            if custom or storage in FIELD_GETTERS:
                raise errors.bad_request(f'field label not supported: {field}')
            raise errors.bad_request(f'"{field}" is not a known field selector: only "metadata.name", '
                                     f'"metadata.namespace"')
        result.append(FieldRequirement(getter, op == "!=", value))
    return result


def fields_match(requirements: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all(r.matches(obj) for r in requirements)
