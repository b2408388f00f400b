"""The Helm chart with the real helm: it lints, renders what a platform team expects, stays
least-privilege and locked down, and its output applies to an API server."""

import pathlib
import subprocess
import uuid

import pytest
import yaml

from gigafactory.runner import profiles

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gigafactory"
HELM = ROOT / ".venv" / "bin" / "helm"

CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)")

TWO_POOLS = """
pools:
  - name: {a}
    agents: [script]
    profiles: {{script: {{argv: ["{{python}}", "-m", "gigafactory.runner.script_agent", "--prompt-file", "{{prompt_file}}"]}}}}
  - name: {b}
    replicas: 3
    slotsPerPod: 4
    capabilities: [python, gpu]
    agents: [claude-code]
    subscriptions: [ml]
    profiles: {{claude-code: {{argv: [claude, -p], stdin: prompt, timeoutSeconds: 3600}}}}
metrics:
  serviceMonitor: {{enabled: true}}
operator:
  podDisruptionBudget: {{enabled: true}}
"""


def helm(*args: str) -> str:
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(tmp_path: pathlib.Path, values: str | None = None, namespace: str = "gigafactory-system") -> list[dict]:
    args = ["template", "gf", str(CHART), "-n", namespace]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(values)
        args += ["-f", str(path)]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


def test_lint() -> None:
    assert "0 chart(s) failed" in helm("lint", str(CHART))


def test_each_pool_yields_its_factory_runners_account_and_profiles(tmp_path) -> None:
    docs = render(tmp_path, TWO_POOLS.format(a="alpha", b="beta"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for pool in ("alpha", "beta"):
        assert ("Factory", pool) in kinds
        assert ("Deployment", f"gf-{pool}-runner") in kinds
        assert ("ServiceAccount", f"gf-{pool}-runner") in kinds
        assert ("ConfigMap", f"gf-{pool}-profiles") in kinds
    beta = next(d for d in docs if d["kind"] == "Factory" and d["metadata"]["name"] == "beta")
    assert beta["spec"]["slotsPerPod"] == 4 and beta["spec"]["capabilities"] == ["python", "gpu"]
    runner = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-beta-runner")
    assert runner["spec"]["replicas"] == 3
    env = {e["name"]: e for e in runner["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GIGAFACTORY_RUNNER_FACTORY"]["value"] == "beta" and env["GIGAFACTORY_RUNNER_SLOTS"]["value"] == "4"
    assert env["GIGAFACTORY_RUNNER_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {("ServiceMonitor", "gf-operator"), ("PodDisruptionBudget", "gf-operator")} <= kinds


def test_profiles_configmap_is_what_the_runner_loads(tmp_path) -> None:
    docs = render(tmp_path, TWO_POOLS.format(a="alpha", b="beta"))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gf-beta-profiles")
    path = tmp_path / "profiles.yaml"
    path.write_text(cm["data"]["profiles.yaml"])
    loaded = profiles.load(path)
    assert loaded["claude-code"].stdin == "prompt" and loaded["claude-code"].argv == ["claude", "-p"]


@pytest.mark.parametrize("values", [pytest.param(None, id="default"), pytest.param(TWO_POOLS.format(a="a", b="b"), id="full")])
def test_every_container_is_locked_down(tmp_path, values) -> None:
    for doc in render(tmp_path, values):
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, doc["metadata"]["name"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert "resources" in container


def test_runner_may_write_nothing_cluster_wide_but_job_status(tmp_path) -> None:
    docs = render(tmp_path)
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "gf-default-runner")
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for rule in role["rules"]:
        written = writes & set(rule["verbs"])
        if written:
            assert rule["resources"] == ["agentjobs/status"] and written == {"patch"}, rule


def test_rendered_chart_applies_to_an_api_server(tmp_path, kubectl, namespace, install_crds) -> None:
    install_crds(ROOT / "crds")
    pool = f"pool-{uuid.uuid4().hex[:6]}"  # Factories are cluster-scoped: one of this test's own
    values = f"pools:\n  - name: {pool}\n    agents: [script]\n    profiles: {{}}\n"
    docs = render(tmp_path, values, namespace=namespace)
    for doc in docs:  # the release namespace is this test's; cluster-scoped names get a unique suffix
        if doc["kind"] in CLUSTER_SCOPED:
            doc["metadata"]["name"] += f"-{namespace}"
            if "roleRef" in doc:
                doc["roleRef"]["name"] += f"-{namespace}"
            if "policyName" in doc.get("spec", {}):
                doc["spec"]["policyName"] += f"-{namespace}"
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
        factory = kubectl("get", "factory", pool, "-o", "yaml").stdout
        assert "slotsPerPod: 1" in factory
        assert kubectl("get", "deployment", f"gf-{pool}-runner", "-n", namespace).returncode == 0
    finally:
        kubectl("delete", "factory", pool, "--ignore-not-found", check=False)
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", check=False)


@pytest.mark.parametrize(
    "values, fragment",
    [
        pytest.param("pools:\n  - {name: Bad_Name, agents: [script]}\n", "name", id="pool-name"),
        pytest.param("pools:\n  - {name: a, agents: []}\n", "agents", id="no-agents"),
        pytest.param("operator: {replicas: 2}\n", "replicas", id="replicas-before-leader-election"),
        pytest.param("pools:\n  - {name: a, agents: [x], slotsPerPod: 0}\n", "slotsPerPod", id="zero-slots"),
    ],
)
def test_values_schema_refuses_bad_values(tmp_path, values, fragment) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = subprocess.run([str(HELM), "template", "gf", str(CHART), "-f", str(path)], capture_output=True, text=True)
    assert result.returncode != 0 and fragment in result.stderr, result.stderr
