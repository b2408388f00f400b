"""SPEC invariant 9 — no input crashes the operator or a runner; a bad spec is rejected or failed with a
clear reason. Generated manifests (hypothesis: a valid job, then nasty values at random places) and a
hand-written nasty corpus go through every layer that reads a job: the CRD schema at the API server,
the operator's validation (snapshots.spec_problem / job_from_body), the runner's URL and ref checks."""

import asyncio
import pathlib
import string

import hypothesis
import pytest
import yaml
from hypothesis import strategies as st

from gigafactory import constants, kubeclient
from gigafactory.models import agentjobs
from gigafactory import remotes
from gigafactory.runner import profiles
from gigafactory.scheduling import snapshots

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROFILE = hypothesis.settings(max_examples=150, deadline=None, derandomize=True, database=None,
                              suppress_health_check=[hypothesis.HealthCheck.too_slow])

NASTY_TEXT = [
    "", " ", "-", "--upload-pack=touch /tmp/x", "-oProxyCommand=touch /tmp/x", "../../x", "refs/heads/x", "a..b", "x.lock",
    "$(touch /tmp/x)", "`id`", "; rm -rf /", "a\x00b", "\u202etxt.exe", "e\u0301", "👩\u200d💻", "x" * 300, "ext::sh -c id",
    "file:///etc", "/etc/passwd", "https://u:p@h/r.git", "GIT_DIR", "LD_PRELOAD", "GIGAFACTORY_RUNNER_POD_NAME", "\n", "%s%n",
]
LEAVES = st.one_of(
    st.sampled_from(NASTY_TEXT), st.text(alphabet=string.printable + "é€\u200b", max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.lists(st.sampled_from(NASTY_TEXT), max_size=3), st.dictionaries(st.sampled_from(["a", "name", "value", "-"]),
                                                                         st.sampled_from(NASTY_TEXT), max_size=2),
)
def _schema_paths() -> list[tuple[str, ...]]:
    """Every field of AgentJob.spec, from the generated CRD's openAPIV3Schema (objects and leaves),
    plus one field the schema does not know."""
    crd = yaml.safe_load((ROOT / "crds" / "agentjobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    paths: list[tuple[str, ...]] = []

    def walk(node: dict, at: tuple[str, ...]) -> None:
        for name, child in (node.get("properties") or {}).items():
            paths.append((*at, name))
            walk(child, (*at, name))

    walk(spec, ())
    return [*paths, ("unknownField",)]


PATHS = _schema_paths()
SHIPPED_PROFILES = profiles.load()


def base_spec() -> dict:
    return {"repo": {"url": "https://git.example.com/acme/api.git", "baseRef": "main"}, "task": {"prompt": "Fix it"},
            "agent": {"profile": "script"}}


def mutated(changes: list[tuple[tuple[str, ...], object]]) -> dict:
    spec = base_spec()
    for path, value in changes:
        node = spec
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return spec


SPECS = st.lists(st.tuples(st.sampled_from(PATHS), LEAVES), min_size=1, max_size=3).map(mutated)
# For the API server: also plain values, so that some manifests are stored and reach the operator's checks.
PLAIN = st.sampled_from(["default", "main", "agent/fix-1", "https://git.example.com/a/b.git", 5, 30, True, False, ["python"]])
MIXED = st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(PLAIN, LEAVES)), min_size=0, max_size=2).map(mutated)


def body(spec: dict, name: str = "job") -> dict:
    return {"apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
            "metadata": {"name": name, "namespace": "team", "uid": "u1", "resourceVersion": "1", "generation": 1}, "spec": spec}


def operator_decides(spec: dict) -> str | None:
    """What the operator does with a spec: None (it schedules it) or the InvalidSpec reason. Never raises."""
    problem = snapshots.spec_problem(body(spec))
    if problem is None:
        snapshots.job_from_body(body(spec))  # the scheduler's parse must then work too
    else:
        assert problem.startswith("spec"), problem  # the reason names where
    return problem


def runner_decides(spec: dict) -> str | None:
    """The runner's own checks of what it will hand to git: the reason it refuses, or None."""
    try:
        parsed = agentjobs.AgentJobSpec.model_validate(spec)
    except Exception as exc:  # noqa: BLE001 - only a ValidationError is acceptable here
        assert type(exc).__name__ == "ValidationError", repr(exc)
        return "InvalidSpec"
    profile = SHIPPED_PROFILES.get(parsed.agent.profile)
    try:
        if profile is not None:  # what the job adds, against the profile the runner would run (Runner.execute)
            profile.check_args(parsed.agent.args)
            profile.check_env(env.name for env in parsed.agent.env)
        remotes.check_url(parsed.repo.url, allow_local=False)
        remotes.check_ref(parsed.repo.branch or "agent/job", what="branch")
    except profiles.NotAllowed as exc:
        assert exc.message.startswith("spec.agent."), exc.message
        return exc.reason
    except remotes.GitFailure as exc:
        assert exc.outcome == "Rejected" and exc.message, exc
        return exc.reason
    return None


@PROFILE
@hypothesis.given(SPECS)
def test_invariant_9_no_generated_spec_crashes_the_operators_or_the_runners_checks(spec) -> None:
    decision = operator_decides(spec)
    refusal = runner_decides(spec)
    if decision is None and refusal is None:
        # Accepted everywhere: then git gets nothing that looks like an option or a transport.
        parsed = agentjobs.AgentJobSpec.model_validate(spec)
        assert not parsed.repo.url.startswith("-") and "::" not in parsed.repo.url.split("/")[0]
        assert not (parsed.repo.branch or "").startswith("-")


@pytest.fixture(scope="module")
def crds(install_crds) -> None:
    install_crds(ROOT / "crds")


def test_invariant_9_generated_manifests_are_refused_with_the_field_or_decided(crds, kubeconfig, namespace) -> None:
    """A sample of generated manifests applied to the API server: each is refused (422 naming a field
    under spec) or stored; what is stored, the operator schedules or fails with a reason."""
    examples: list[dict] = []

    @hypothesis.settings(PROFILE, max_examples=40)
    @hypothesis.given(MIXED)
    def collect(spec: dict) -> None:
        examples.append(spec)

    collect()

    async def apply_all() -> tuple[int, int]:
        refused = stored = 0
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            for index, spec in enumerate(examples):
                manifest = body(spec, name=f"gen-{index}")
                manifest["metadata"] = {"name": f"gen-{index}", "namespace": namespace}
                try:
                    created = await client.create(kubeclient.AGENTJOBS, manifest, namespace=namespace)
                except kubeclient.Invalid as exc:
                    refused += 1
                    assert "spec" in exc.message, exc.message
                    continue
                except kubeclient.ApiError as exc:
                    assert exc.status == 400, exc  # a body the server cannot even decode (e.g. a NUL in JSON)
                    refused += 1
                    continue
                stored += 1
                operator_decides(created["spec"])
        return refused, stored

    refused, stored = asyncio.run(apply_all())
    assert refused + stored == len(examples) and refused > 0 and stored > 0


NASTY = yaml.safe_load((ROOT / "tests" / "data" / "nasty.yaml").read_text())
for _case in NASTY:  # a prompt just over the schema's limit (256 Ki characters), spelled out here rather than in the file
    _case["set"] = {k: ("x" * (256 * 1024 + 1) if v == "__HUGE__" else v) for k, v in _case["set"].items()}


@pytest.mark.parametrize("case", NASTY, ids=[c["id"] for c in NASTY])
def test_invariant_9_each_hand_written_nasty_spec_is_stopped_where_the_corpus_says(crds, kubeconfig, namespace, case) -> None:
    spec = mutated([(tuple(k.split(".")), v) for k, v in case["set"].items()])
    manifest = {"apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
                "metadata": {"name": case["id"], "namespace": namespace}, "spec": spec}

    async def create() -> dict | kubeclient.ApiError:
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            try:
                return await client.create(kubeclient.AGENTJOBS, manifest, namespace=namespace)
            except kubeclient.ApiError as exc:
                return exc

    stored = asyncio.run(create())
    where = case["stopped_by"]
    if where == "schema":
        assert isinstance(stored, kubeclient.Invalid), stored
        assert case["field"] in stored.message, stored.message
        return
    assert isinstance(stored, dict), stored
    # Stored: the operator schedules it (None) and the runner refuses it with its reason, or runs it.
    assert operator_decides(stored["spec"]) is None
    assert runner_decides(stored["spec"]) == (case["reason"] if where == "runner" else None)
