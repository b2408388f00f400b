"""The committed CRDs are what the models generate, and they are structural schemas a real API server accepts."""

import pathlib

import pytest
import yaml

from gigafactory import crdgen

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(crdgen.generated_files()), ids=lambda p: p.name)
def test_committed_file_matches_generated(path: pathlib.Path) -> None:
    generated = crdgen.generated_files()[path]
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make crds`"
    assert path.read_text() == generated, f"{path.relative_to(ROOT)} is stale: run `make crds` and commit"


def test_check_mode_fails_on_a_stale_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(crdgen, "REPO_ROOT", tmp_path)
    assert crdgen.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert crdgen.main([]) == 0
    assert crdgen.main(["--check"]) == 0


def _nodes(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))


@pytest.mark.parametrize("crd_file", CRD_FILES, ids=lambda p: p.name)
def test_schema_is_structural(crd_file: pathlib.Path) -> None:
    # The rules kube-apiserver enforces on a CRD's schema; a violation makes `kubectl apply -f crds/` fail.
    crd = yaml.safe_load(crd_file.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "const"):
            assert forbidden not in node, f"{path}: {forbidden} is not allowed in a structural schema"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: every node needs a type"
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], (
                    f"{path}: list-map key {key} must be required"
                )
        if node.get("x-kubernetes-validations"):
            # CEL cost is estimated from bounds: unbounded strings or lists under a rule get the CRD refused.
            for sub_path, sub in _nodes(node):
                if sub.get("type") == "string" and sub is node:
                    assert "maxLength" in sub or "enum" in sub, f"{sub_path}: a string under a CEL rule needs maxLength"


@pytest.mark.parametrize("crd_file", CRD_FILES, ids=lambda p: p.name)
def test_every_field_is_described(crd_file: pathlib.Path) -> None:
    # `kubectl explain` shows these; a field without one leaves a user guessing.
    crd = yaml.safe_load(crd_file.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [
        path
        for path, node in _nodes(schema)
        if path.count(".") >= 2 and not path.endswith("[]") and "{" not in path and not node.get("description")
    ]
    assert not missing, f"fields without a description: {missing}"


def test_retry_descriptions_reach_the_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "agentjobs.yaml").read_text())
    retry = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["retry"]
    assert retry["description"] == "How failed attempts are retried."
    assert retry["properties"]["maxAttempts"]["description"].startswith("Attempts that count")
    assert retry["properties"]["backoff"]["x-kubernetes-validations"][0]["rule"].endswith("self.maxSeconds >= self.initialSeconds")
