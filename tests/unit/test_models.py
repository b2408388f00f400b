"""The pydantic models accept every example and refuse what the operator must not act on."""

import pathlib

import pydantic
import pytest
import yaml

from gigafactory.models import agentjobs, factories

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = {"AgentJob": agentjobs.AgentJob, "Factory": factories.Factory}


def _example_documents():
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc.get("kind") in MODELS:
                yield pytest.param(doc, id=f"{path.name}#{index}")


@pytest.mark.parametrize("doc", list(_example_documents()))
def test_example_parses_and_round_trips(doc: dict) -> None:
    model = MODELS[doc["kind"]].model_validate(doc)
    wire = model.to_dict()
    # Every field the example sets survives parsing: nothing is silently dropped as unknown.
    def subset(small, big, path="spec"):
        if isinstance(small, dict):
            for key, value in small.items():
                assert key in big, f"{path}.{key} was dropped by the model (unknown field?)"
                subset(value, big[key], f"{path}.{key}")
        elif isinstance(small, list):
            assert len(small) == len(big), path
            for index, (a, b) in enumerate(zip(small, big)):
                subset(a, b, f"{path}[{index}]")
        else:
            assert small == big or float(small) == float(big), f"{path}: {small!r} became {big!r}"

    subset(doc["spec"], wire["spec"])


MINIMAL = {
    "repo": {"url": "https://git.example.com/a.git"},
    "task": {"prompt": "x"},
    "agent": {"profile": "script"},
}


def test_defaults_of_a_minimal_job() -> None:
    spec = agentjobs.AgentJobSpec.model_validate(MINIMAL)
    assert spec.queue == "default"
    assert spec.priority == 0
    assert spec.repo.base_ref == "main"
    assert spec.repo.branch is None  # the runner derives agent/<job name>
    assert spec.retry.max_attempts == 3
    assert spec.retry.backoff.initial_seconds == 10
    assert spec.cleanup.delete_branch is agentjobs.DeleteBranchPolicy.NEVER
    assert spec.suspend is False and spec.cancel is False


def _with(path: str, value):
    spec = yaml.safe_load(yaml.safe_dump(MINIMAL))
    node = spec
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return spec


@pytest.mark.parametrize(
    "spec, fragment",
    [
        pytest.param(_with("priority", 1001), "less than or equal to 1000", id="priority-bound"),
        pytest.param(_with("repo.branch", "--upload-pack=x"), "should match pattern", id="branch-option"),
        pytest.param(_with("task.promptFrom", {"configMapKeyRef": {"name": "a", "key": "b"}}), "exactly one", id="both-prompts"),
        pytest.param(_with("task", {}), "exactly one", id="no-prompt"),
        pytest.param(_with("retry.backoff", {"initialSeconds": 60, "maxSeconds": 10}), "maxSeconds must be at least", id="backoff"),
        pytest.param(_with("agent.env", [{"name": "GIT_DIR", "value": "/"}]), "is reserved", id="env-git"),
        pytest.param(_with("agent.env", [{"name": "LD_PRELOAD", "value": "x.so"}]), "is reserved", id="env-ld"),
        pytest.param(_with("cleanup.deleteBranch", "Sometimes"), "Never", id="cleanup-enum"),
        pytest.param(_with("requirements.capabilities", ["GPU"]), "should match pattern", id="capability-case"),
    ],
)
def test_model_refuses_bad_spec(spec: dict, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        agentjobs.AgentJobSpec.model_validate(spec)
    assert fragment in str(info.value)


def test_wire_form_uses_camel_case_and_omits_unset() -> None:
    status = agentjobs.AgentJobStatus(phase=agentjobs.Phase.RUNNING, attempt=2)
    wire = status.to_dict()
    assert wire["phase"] == "Running"
    assert "assignment" not in wire and "requeueAt" not in wire
    assert wire["attempt"] == 2


def test_factory_scaling_bounds() -> None:
    with pytest.raises(pydantic.ValidationError, match="maxReplicas must be at least minReplicas"):
        factories.FactorySpec.model_validate({"agents": ["script"], "scaling": {"minReplicas": 3, "maxReplicas": 1}})
    spec = factories.FactorySpec.model_validate({"agents": ["script"]})
    assert spec.subscriptions == ["*"] and spec.namespaces == ["*"] and spec.slots_per_pod == 1
