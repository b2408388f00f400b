"""Generate the CRDs (crds/ and the chart's crds/) and the API reference (docs/api.md) from the models.

The models are the one source of truth: `python -m gigafactory.crdgen` writes the files,
`python -m gigafactory.crdgen --check` fails when the committed files differ from what the models
generate (CI runs it). Pydantic's JSON Schema is turned into a Kubernetes structural schema:
references inlined, Optional unwrapped, titles dropped, defaults kept only where the API server
should fill them in.
"""

import argparse
import copy
import difflib
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pydantic
import yaml

from gigafactory import constants
from gigafactory.models import agentjobs, factories

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

Schema = dict[str, Any]

# Keys that pydantic emits and a structural schema either forbids or has no use for.
_DROPPED_KEYS = frozenset({"title", "$defs"})


def _has_scalar_default(schema: Schema) -> bool:
    """Whether defaulting an absent object to {} would fill anything in (else `{}` is just noise)."""
    if "default" in schema and not isinstance(schema["default"], (dict, list)):
        return True
    return any(_has_scalar_default(sub) for sub in schema.get("properties", {}).values())


def _convert(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """One pydantic JSON-Schema node → one structural-schema node."""
    schema = dict(schema)
    if "$ref" in schema:
        target = _convert(defs[schema.pop("$ref").rsplit("/", 1)[-1]], defs)
        # The field's own keys (its description, its rules) win over the referenced model's.
        rules = target.pop("x-kubernetes-validations", []) + schema.pop("x-kubernetes-validations", [])
        schema = {**target, **{k: v for k, v in schema.items() if k not in _DROPPED_KEYS}}
        if rules:
            schema["x-kubernetes-validations"] = rules
    if "anyOf" in schema:
        branches = [b for b in schema.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {branches}")
        inner = _convert(branches[0], defs)
        rules = inner.pop("x-kubernetes-validations", []) + schema.pop("x-kubernetes-validations", [])
        schema = {**inner, **schema}
        if rules:
            schema["x-kubernetes-validations"] = rules
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]

    out: Schema = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = _convert(value, defs)
            # `true`/`false` have no structural meaning: unknown fields are pruned or preserved.
        else:
            out[key] = value

    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
        out["type"] = "object"
    if "default" in out:
        default = out["default"]
        if default is None or default == [] or (isinstance(default, dict) and not out.get("properties")):
            del out["default"]  # absent means the same; a default would only add noise to every object
        elif isinstance(default, dict):
            if _has_scalar_default(out):
                out["default"] = {}  # the API server then fills in the nested defaults
            else:
                del out["default"]
    return out


def structural_schema(model: type[pydantic.BaseModel]) -> Schema:
    """The openAPIV3Schema of a top-level resource model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = _convert(raw, defs)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": props["apiVersion"]["description"]}
    props["kind"] = {"type": "string", "description": props["kind"]["description"]}
    props["metadata"] = {"type": "object"}
    props["status"].pop("default", None)  # the status subresource owns it; never default it on create
    schema["required"] = ["spec"]
    return schema


def _column(name: str, json_path: str, type_: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path, "description": description}
    if priority:
        column["priority"] = priority
    return column


def _crd(
    *,
    model: type[pydantic.BaseModel],
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...],
    scope: str,
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{constants.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "gigafactory"},
        },
        "spec": {
            "group": constants.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": [constants.CATEGORY],
            },
            "scope": scope,
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": structural_schema(model)},
                }
            ],
        },
    }


def build_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD object."""
    age = _column("Age", ".metadata.creationTimestamp", "date", "Time since creation.")
    return {
        "agentjobs.yaml": _crd(
            model=agentjobs.AgentJob,
            kind=constants.AGENTJOB_KIND,
            plural=constants.AGENTJOB_PLURAL,
            singular=constants.AGENTJOB_SINGULAR,
            short_names=constants.AGENTJOB_SHORT_NAMES,
            scope="Namespaced",
            columns=[
                _column("Phase", ".status.phase", "string", "Where the job is in its life."),
                _column("Queue", ".spec.queue", "string", "The job's queue."),
                _column("Factory", ".status.factory", "string", "The factory of the current or last attempt."),
                _column("Attempt", ".status.attempt", "integer", "The current attempt."),
                age,
                _column("Pod", ".status.pod", "string", "The runner pod of the current or last attempt.", priority=1),
                _column("Reason", ".status.reason", "string", "Why the job is in its phase.", priority=1),
                _column("Tokens", ".status.tokens", "integer", "Input plus output tokens of every attempt so far.", priority=1),
                _column("Cost", ".status.cost", "number", "Estimated cost of every attempt so far, at the factories' prices.", priority=1),
            ],
        ),
        "factories.yaml": _crd(
            model=factories.Factory,
            kind=constants.FACTORY_KIND,
            plural=constants.FACTORY_PLURAL,
            singular=constants.FACTORY_SINGULAR,
            short_names=constants.FACTORY_SHORT_NAMES,
            scope="Cluster",
            columns=[
                _column("Phase", ".status.phase", "string", "Ready, Draining or Offline."),
                _column("Ready", ".status.readyPods", "integer", "Runner pods with a fresh heartbeat."),
                _column("Used", ".status.slotsUsed", "integer", "Slots in use."),
                _column("Slots", ".status.slotsTotal", "integer", "Slots of the ready pods."),
                age,
            ],
        ),
    }


def render_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=120, allow_unicode=True)


def _walk_fields(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        target = sub.get("items", sub)
        yield from _walk_fields(target, f"{path}.{name}" + ("[]" if "items" in sub else ""))


def _type_text(sub: Schema) -> str:
    if "enum" in sub:
        return " \\| ".join(f"`{v}`" for v in sub["enum"])
    if sub.get("type") == "array":
        return f"[]{_type_text(sub.get('items', {}))}"
    if sub.get("type") == "object" and "additionalProperties" in sub:
        return f"map[string]{_type_text(sub['additionalProperties'])}"
    return str(sub.get("format") or sub.get("type", "object"))


def _constraints_text(sub: Schema) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length"), ("maxLength", "max length"),
                       ("minItems", "min items"), ("maxItems", "max items")):
        if key in sub:
            parts.append(f"{label} {sub[key]}")
    if "pattern" in sub:
        parts.append(f"pattern `{sub['pattern']}`")
    for rule in sub.get("x-kubernetes-validations", []):
        parts.append(rule["message"])
    return "; ".join(parts)


def build_api_doc(crds: dict[str, dict[str, Any]]) -> str:
    """docs/api.md: every field with its type, default, bounds and description."""
    lines = [
        "# API reference",
        "",
        f"Group `{constants.GROUP}`, version `{constants.VERSION}`. Generated by `python -m gigafactory.crdgen`",
        "from the pydantic models in `operator/gigafactory/models/`; do not edit by hand.",
        "The same descriptions are what `kubectl explain` shows.",
    ]
    for crd in crds.values():
        version = crd["spec"]["versions"][0]
        names = crd["spec"]["names"]
        schema = version["schema"]["openAPIV3Schema"]
        lines += [
            "",
            f"## {names['kind']}",
            "",
            f"{schema.get('description', '')}",
            "",
            f"Scope: {crd['spec']['scope']}. Short names: {', '.join(names['shortNames'])}. "
            f"Category: {', '.join(names['categories'])}.",
            "",
            "| field | type | default | constraints | description |",
            "|---|---|---|---|---|",
        ]
        for path, sub in _walk_fields(schema, ""):
            top = path.split(".")[1].rstrip("[]")
            if top in {"apiVersion", "kind", "metadata"}:
                continue
            default = f"`{sub['default']}`" if "default" in sub else ""
            description = sub.get("description", "").replace("|", "\\|").replace("\n", " ")
            constraints = _constraints_text(sub).replace("|", "\\|")
            lines.append(f"| `{path[1:]}` | {_type_text(sub)} | {default} | {constraints} | {description} |")
    return "\n".join(lines) + "\n"


def generated_files() -> dict[pathlib.Path, str]:
    crds = build_crds()
    files = {REPO_ROOT / "crds" / name: render_yaml(crd) for name, crd in crds.items()}
    # Helm installs CRDs from the chart's own crds/ directory; it is a copy, kept equal by --check.
    files.update({REPO_ROOT / "charts" / "gigafactory" / "crds" / name: render_yaml(crd) for name, crd in crds.items()})
    files[REPO_ROOT / "docs" / "api.md"] = build_api_doc(copy.deepcopy(crds))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the CRDs and docs/api.md from the models.")
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ from the generated ones")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated_files().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path)
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(path), "generated", lineterm="", n=1)
            sys.stderr.write("\n".join(list(diff)[:40]) + "\n")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    if stale:
        names = ", ".join(str(p.relative_to(REPO_ROOT)) for p in stale)
        sys.stderr.write(f"generated files are stale: {names}\nrun `make crds` (python -m gigafactory.crdgen) and commit.\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
