"""The CRDs at work in an API server: every example is accepted as written, every bad manifest
is refused with a message that names the field, and `kubectl explain` shows the models' text."""

import json
import pathlib
import uuid

import pytest
import yaml

from gigafactory.models import agentjobs, factories

ROOT = pathlib.Path(__file__).resolve().parents[3]
MODELS = {"AgentJob": agentjobs.AgentJob, "Factory": factories.Factory}


@pytest.fixture(autouse=True)
def _crds(install_crds) -> None:
    install_crds(ROOT / "crds")


def _unique(doc: dict) -> dict:
    # Factories are cluster-scoped: give each test's copy its own name so tests cannot collide.
    if doc["kind"] == "Factory":
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    return doc


def _subset(small, big, path: str) -> None:
    if isinstance(small, dict):
        for key, value in small.items():
            assert isinstance(big, dict) and key in big, f"{path}.{key} was pruned by the API server"
            _subset(value, big[key], f"{path}.{key}")
    elif isinstance(small, list):
        assert len(small) == len(big), f"{path}: {small!r} became {big!r}"
        for index, (a, b) in enumerate(zip(small, big)):
            _subset(a, b, f"{path}[{index}]")
    else:
        assert small == big, f"{path}: {small!r} became {big!r}"


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_as_written(path: pathlib.Path, kubectl, namespace: str) -> None:
    docs = [_unique(d) for d in yaml.safe_load_all(path.read_text()) if d]
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    for doc in docs:
        if doc["kind"] not in MODELS:
            continue
        scope = [] if doc["kind"] == "Factory" else ["-n", namespace]
        stored = json.loads(kubectl("get", doc["kind"].lower(), doc["metadata"]["name"], *scope, "-o", "json").stdout)
        _subset(doc["spec"], stored["spec"], "spec")  # nothing unknown, nothing rewritten
        MODELS[doc["kind"]].model_validate(stored)  # and the operator parses what the server stored
        if doc["kind"] == "Factory":
            kubectl("delete", "factory", doc["metadata"]["name"], "--wait=false")


def _bad_manifests():
    for path in sorted((ROOT / "tests" / "data" / "bad").glob("*.yaml")):
        text = path.read_text()
        header = dict(
            line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# expect-")
        )
        yield pytest.param(path, header["expect-field"], header["expect-message"], id=path.stem)


@pytest.mark.parametrize("path, field, message", list(_bad_manifests()))
def test_bad_manifest_is_refused_naming_the_field(path, field, message, kubectl, namespace) -> None:
    doc = _unique(yaml.safe_load(path.read_text()))
    result = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0, f"{path.name} was accepted"
    assert f"{field}:" in result.stderr or f"{field} " in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def test_huge_prompt_is_refused(kubectl, namespace) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "job.yaml").read_text())
    doc["spec"]["task"]["prompt"] = "x" * (256 * 1024 + 1)
    result = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0
    assert "spec.task.prompt" in result.stderr and "262144" in result.stderr


def test_defaults_are_filled_in_by_the_server(kubectl, namespace) -> None:
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "job.yaml"))
    stored = json.loads(kubectl("get", "aj", "fix-flaky-test", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["priority"] == 0
    assert stored["spec"]["retry"]["maxAttempts"] == 3
    assert stored["spec"]["retry"]["backoff"] == {"initialSeconds": 10, "factor": 2, "maxSeconds": 600, "jitter": 0.1}
    assert stored["spec"]["cleanup"] == {"deleteBranch": "Never"}


def test_kubectl_explain_shows_the_models_descriptions(kubectl) -> None:
    text = kubectl("explain", "agentjob.spec.retry").stdout
    assert "How failed attempts are retried." in text
    assert "maxAttempts" in text and "Attempts that count, including the first." in text


def test_short_names_and_printer_columns(kubectl, namespace) -> None:
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "job.yaml"))
    header = kubectl("get", "aj", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "QUEUE", "FACTORY", "ATTEMPT", "AGE"]
    assert "fix-flaky-test" in kubectl("get", "gigafactory", "-n", namespace).stdout  # the category
