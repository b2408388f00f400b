"""The Helm chart with the real helm: it lints, renders what a platform team expects, stays
least-privilege and locked down, and its output applies to an API server."""

import json
import pathlib
import subprocess
import uuid

import pytest
import yaml

from gigafactory import config
from gigafactory.binding import scaler
from gigafactory.runner import profiles

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gigafactory"
HELM = ROOT / ".venv" / "bin" / "helm"
FULL_VALUES = CHART / "ci" / "full-values.yaml"

CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)")

SCRIPT_PROFILE = "profiles: {script: {argv: [python, -m, gigafactory.runner.script_agent]}}"

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


def render(tmp_path: pathlib.Path, values: str | None = None, namespace: str = "gigafactory-system",
           capabilities: tuple[str, ...] = ()) -> list[dict]:
    args = ["template", "gf", str(CHART), "-n", namespace, *capabilities]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(values)
        args += ["-f", str(path)]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


@pytest.mark.parametrize("values", [pytest.param([], id="default"), pytest.param(["-f", str(FULL_VALUES)], id="full"),
                                    pytest.param(["-f", str(ROOT / "examples" / "helm" / "values-script-agent.yaml")], id="demo")])
def test_lint(values) -> None:
    out = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out and "[WARNING]" not in out, out


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


def test_runner_reads_jobs_by_name_only(tmp_path) -> None:
    """No list, no watch: a runner learns a job's name from its own binding Lease, so it cannot
    enumerate the cluster's jobs (or Secrets) to find what to read."""
    docs = render(tmp_path)
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "gf-default-runner")
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "patch"}, rule


def test_pool_with_listed_namespaces_gets_rights_there_only(tmp_path) -> None:
    values = (f"pools:\n  - {{name: ml, agents: [script], namespaces: [ml-team, ml-lab], {SCRIPT_PROFILE}}}\n"
              f"  - {{name: any, agents: [script], {SCRIPT_PROFILE}}}\n")
    docs = render(tmp_path, values)
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and d["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gf-ml-runner"}]
    assert sorted((d["kind"], d["metadata"].get("namespace")) for d in bindings) == [("RoleBinding", "ml-lab"), ("RoleBinding", "ml-team")]
    factory = next(d for d in docs if d["kind"] == "Factory" and d["metadata"]["name"] == "ml")
    assert factory["spec"]["namespaces"] == ["ml-team", "ml-lab"]
    assert any(d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "gf-any-runner" for d in docs)


def test_operator_touches_workloads_only_in_its_own_namespace_and_reads_no_secret_cluster_wide(tmp_path) -> None:
    docs = render(tmp_path, FULL_VALUES.read_text())
    cluster = [r for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "gf-operator" for r in d["rules"]]
    local = [r for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "gf-operator" for r in d["rules"]]
    assert cluster and local
    for rule in cluster + local:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert not {"secrets", "serviceaccounts", "roles", "rolebindings"} & set(rule["resources"]), rule
    for rule in cluster:
        assert not {"pods", "deployments", "configmaps"} & set(rule["resources"]), rule
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "gf-operator")
    assert role["metadata"]["namespace"] == "gigafactory-system"
    # Runner Deployments are created and scaled, never deleted (the Factory owns them: GC does it); pods only annotated;
    # log ConfigMaps read by name (their labels must name the job: consent.log_belongs) before they are deleted.
    assert {tuple(r["resources"]): r["verbs"] for r in local} == {
        ("leases",): ["create", "patch", "delete"],
        ("configmaps",): ["get", "delete"], ("deployments",): ["get", "list", "watch", "create", "patch"], ("pods",): ["patch"]}
    # Leases: read everywhere (a stray heartbeat is reported), written only where the runners are.
    assert [r["verbs"] for r in cluster if r["resources"] == ["leases"]] == [["get", "list", "watch"]]


def test_the_operator_trusts_runners_in_the_release_namespace_and_forces_the_pools_service_account(tmp_path) -> None:
    docs = render(tmp_path, FULL_VALUES.read_text())
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = config.OperatorSettings(runner_namespaces=env["GIGAFACTORY_RUNNER_NAMESPACES"],
                                       runner_service_account=env["GIGAFACTORY_RUNNER_SERVICE_ACCOUNT"])
    assert settings.runner_namespace_set() == {"gigafactory-system"}
    # What the operator forces is the name the chart gives each pool's ServiceAccount.
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    scaled = [d for d in docs if d["kind"] == "Factory" and d["spec"].get("scaling")]
    assert scaled
    for factory in scaled:
        name = factory["metadata"]["name"]
        assert scaler.service_account(settings.runner_service_account, name) in accounts
        forced, problems = scaler.restrict_template(factory["spec"]["scaling"]["template"],
                                                    service_account=scaler.service_account(settings.runner_service_account, name))
        assert problems == [], problems  # the chart's own pools' templates pass as they are
        assert forced["spec"]["serviceAccountName"] == factory["spec"]["scaling"]["template"]["spec"]["serviceAccountName"]


def test_pool_replicas_and_cost_may_be_zero(tmp_path) -> None:
    docs = render(tmp_path, f"pools:\n  - {{name: idle, agents: [script], replicas: 0, costWeight: 0, {SCRIPT_PROFILE}}}\n")
    runner = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-idle-runner")
    factory = next(d for d in docs if d["kind"] == "Factory")
    assert runner["spec"]["replicas"] == 0 and factory["spec"]["costWeight"] == 0


def test_disruption_budgets_never_block_a_drain(tmp_path) -> None:
    docs = render(tmp_path, FULL_VALUES.read_text())
    budgets = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {"gf-operator", "gf-cpu-runner", "gf-gpu-runner"}
    for name, spec in budgets.items():
        assert "minAvailable" not in spec and spec["maxUnavailable"] not in (0, "0%"), name
    assert budgets["gf-cpu-runner"]["maxUnavailable"] == "50%" and budgets["gf-gpu-runner"]["maxUnavailable"] == 1


def _install_servicemonitor_crd(kubectl, install_crds) -> None:
    """The Prometheus Operator's CRD where there is one (a real cluster), else a stand-in."""
    if kubectl("get", "crd", "servicemonitors.monitoring.coreos.com", check=False).returncode != 0:
        install_crds(pathlib.Path(__file__).parent / "fixtures" / "servicemonitor-crd.yaml")


def server_capabilities(kubectl) -> tuple[str, ...]:
    """What `helm install` learns from a server and `helm template` must be told: its version, and which
    ValidatingAdmissionPolicy version it serves (the chart renders the policies at that version)."""
    flags: list[str] = []
    version = kubectl("version", "-o", "json", check=False)
    if version.returncode == 0 and "serverVersion" in json.loads(version.stdout):
        flags += ["--kube-version", json.loads(version.stdout)["serverVersion"]["gitVersion"]]
    for group_version in ("admissionregistration.k8s.io/v1", "admissionregistration.k8s.io/v1beta1"):
        found = kubectl("get", "--raw", f"/apis/{group_version}", check=False)
        if found.returncode == 0 and any(r["kind"] == "ValidatingAdmissionPolicy" for r in json.loads(found.stdout)["resources"]):
            flags += ["--api-versions", f"{group_version}/ValidatingAdmissionPolicy"]
    return tuple(flags)


@pytest.mark.parametrize("server, policies", [
    pytest.param((), "admissionregistration.k8s.io/v1", id="no-cluster-1.35"),
    pytest.param(("--kube-version", "1.30.0"), "admissionregistration.k8s.io/v1", id="1.30-ga"),
    pytest.param(("--kube-version", "1.31.2", "--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
                  "--api-versions", "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy"),
                 "admissionregistration.k8s.io/v1", id="1.31-serving-both"),
    pytest.param(("--kube-version", "1.28.7", "--api-versions", "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy"),
                 "admissionregistration.k8s.io/v1beta1", id="1.28-feature-gate"),
    pytest.param(("--kube-version", "1.29.4", "--api-versions", "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy"),
                 "admissionregistration.k8s.io/v1beta1", id="1.29-feature-gate"),
])
def test_policies_are_rendered_at_the_version_the_cluster_serves(tmp_path, server, policies) -> None:
    docs = render(tmp_path, capabilities=server)
    versions = {d["apiVersion"] for d in docs if d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")}
    assert versions == {policies}


@pytest.mark.parametrize("server", [
    pytest.param(("--kube-version", "1.28.7"), id="1.28-without-feature-gate"),
    pytest.param(("--kube-version", "1.29.0"), id="1.29-without-feature-gate"),
])
def test_a_cluster_without_admission_policies_fails_the_render(server) -> None:
    """Never the runners without their policies: that would let every runner token write any job's status."""
    result = subprocess.run([str(HELM), "template", "gf", str(CHART), *server], capture_output=True, text=True)
    assert result.returncode != 0 and "need ValidatingAdmissionPolicy" in result.stderr, result.stderr
    assert "feature-gates=ValidatingAdmissionPolicy=true" in result.stderr and "tokenScoping.enabled=false" in result.stderr
    # Switched off on purpose (NOTES.txt then warns), the chart renders, without policies.
    off = helm("template", "gf", str(CHART), *server, "--set", "tokenScoping.enabled=false", "--set", "jobAdmission.enabled=false")
    assert "kind: Deployment" in off and "ValidatingAdmissionPolicy" not in off


def test_kubernetes_before_1_28_is_refused() -> None:
    result = subprocess.run([str(HELM), "template", "gf", str(CHART), "--kube-version", "1.27.9"], capture_output=True, text=True)
    assert result.returncode != 0 and "kubeVersion" in result.stderr, result.stderr


def test_rendered_chart_applies_to_an_api_server(tmp_path, kubectl, namespace, install_crds) -> None:
    """The full values (every option on) as `kubectl apply` sends them: every kind must be served."""
    install_crds(ROOT / "crds")
    _install_servicemonitor_crd(kubectl, install_crds)
    suffix = uuid.uuid4().hex[:6]  # Factories are cluster-scoped: this test's own names
    values = yaml.safe_load(FULL_VALUES.read_text())
    for pool in values["pools"]:
        pool["name"] = f"{pool['name']}-{suffix}"
        pool["namespaces"] = [namespace] if pool["namespaces"] != ["*"] else ["*"]
    docs = render(tmp_path, yaml.safe_dump(values), namespace=namespace, capabilities=server_capabilities(kubectl))
    for doc in docs:  # the release namespace is this test's; cluster-scoped names get a unique suffix
        if doc["kind"] in CLUSTER_SCOPED:
            doc["metadata"]["name"] += f"-{namespace}"
            if "roleRef" in doc and doc["roleRef"]["kind"] == "ClusterRole":
                doc["roleRef"]["name"] += f"-{namespace}"
            if "policyName" in doc.get("spec", {}):
                doc["spec"]["policyName"] += f"-{namespace}"
        elif doc["kind"] == "RoleBinding" and doc["roleRef"]["kind"] == "ClusterRole":
            doc["roleRef"]["name"] += f"-{namespace}"
    try:
        out = kubectl("apply", "--server-side=false", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs)).stdout
        assert out.count("created") == len(docs), out
        for pool in values["pools"]:
            factory = yaml.safe_load(kubectl("get", "factory", pool["name"], "-o", "yaml").stdout)
            assert factory["spec"]["slotsPerPod"] == pool["slotsPerPod"] and factory["spec"]["agents"] == pool["agents"]
            kinds = "serviceaccount,pdb" if pool.get("scaling") else "deployment,serviceaccount,pdb"  # scaled: the operator's Deployment
            assert kubectl("get", kinds, f"gf-{pool['name']}-runner", "-n", namespace).returncode == 0
        policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
        stored = yaml.safe_load(kubectl("get", "validatingadmissionpolicy", policy["metadata"]["name"], "-o", "yaml").stdout)
        assert stored["spec"]["validations"] == policy["spec"]["validations"]
        assert kubectl("get", "servicemonitor", "gf-operator", "-n", namespace).returncode == 0
    finally:
        for pool in values["pools"]:
            kubectl("delete", "factory", pool["name"], "--ignore-not-found", check=False)
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", check=False)


@pytest.mark.parametrize(
    "values, fragment",
    [
        pytest.param("pools:\n  - {name: Bad_Name, agents: [script]}\n", "name", id="pool-name"),
        pytest.param("pools:\n  - {name: a, agents: []}\n", "agents", id="no-agents"),
        pytest.param("operator: {replicas: -1}\n", "replicas", id="negative-replicas"),
        pytest.param("pools:\n  - {name: a, agents: [x], slotsPerPod: 0}\n", "slotsPerPod", id="zero-slots"),
        pytest.param("pools:\n  - {name: a, agents: [x], namespaces: [Team_A]}\n", "namespaces", id="bad-namespace"),
        pytest.param("pools:\n  - {name: a, agents: [x], podDisruptionBudget: {maxUnavailable: 0}}\n", "maxUnavailable",
                     id="budget-blocking-every-drain"),
        pytest.param("operator: {logLevel: LOUD}\n", "logLevel", id="bad-log-level"),
        pytest.param("operator: {verbosity: 3}\n", "verbosity", id="unknown-value"),
        pytest.param("operator: {extraEnv: [{name: PATH, value: /x}]}\n", "extraEnv", id="extra-env-not-a-setting"),
        pytest.param("pools:\n  - {name: a, agents: [script, aider], profiles: {script: {argv: [x]}}}\n", "agent aider has no entry",
                     id="agent-without-profile"),
    ],
)
def test_values_schema_refuses_bad_values(tmp_path, values, fragment) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = subprocess.run([str(HELM), "template", "gf", str(CHART), "-f", str(path)], capture_output=True, text=True)
    assert result.returncode != 0 and fragment in result.stderr, result.stderr


def test_operator_probes_and_metrics_follow_the_port_it_listens_on(tmp_path) -> None:
    docs = render(tmp_path, "metrics: {port: 9191, serviceMonitor: {enabled: true}}\n")
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GIGAFACTORY_HTTP_PORT"] == "9191" and env["GIGAFACTORY_NAMESPACE"] == "gigafactory-system"
    assert set(env) <= {f"GIGAFACTORY_{name.upper()}" for name in config.OperatorSettings.model_fields}
    assert container["ports"] == [{"name": "http", "containerPort": 9191}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 9191 and service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_extra_env_names_are_settings_the_processes_read(tmp_path) -> None:
    """The full values' extraEnv reach the containers, and every GIGAFACTORY_* a container gets is a setting."""
    docs = render(tmp_path, FULL_VALUES.read_text())
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0] for d in docs if d["kind"] == "Deployment"}
    # A scaled pool's pod template lives in its Factory (the operator makes the Deployment from it).
    deployments |= {f"gf-{d['metadata']['name']}-runner": d["spec"]["scaling"]["template"]["spec"]["containers"][0]
                    for d in docs if d["kind"] == "Factory" and d["spec"].get("scaling")}
    operator_fields = {f"GIGAFACTORY_{n.upper()}" for n in config.OperatorSettings.model_fields}
    runner_fields = {f"GIGAFACTORY_RUNNER_{n.upper()}" for n in config.RunnerSettings.model_fields}
    operator_env = {e["name"]: e.get("value") for e in deployments.pop("gf-operator")["env"]}
    assert operator_env["GIGAFACTORY_WEIGHT_COST"] == "3" and set(operator_env) <= operator_fields
    cpu = {e["name"]: e.get("value") for e in deployments["gf-cpu-runner"]["env"]}
    gpu = {e["name"]: e.get("value") for e in deployments["gf-gpu-runner"]["env"]}
    assert cpu["GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS"] == "10" and "GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS" not in gpu
    assert cpu["GIGAFACTORY_RUNNER_GIT_TIMEOUT_SECONDS"] == gpu["GIGAFACTORY_RUNNER_GIT_TIMEOUT_SECONDS"] == "300"
    for env in (cpu, gpu):
        assert {n for n in env if n.startswith("GIGAFACTORY_")} <= runner_fields


def test_runner_env_is_what_the_runner_reads(tmp_path) -> None:
    """Every GIGAFACTORY_RUNNER_* the chart sets is a RunnerSettings field, and the paths it names are mounted."""
    docs = render(tmp_path)
    pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-default-runner")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    fields = {f"GIGAFACTORY_RUNNER_{name.upper()}" for name in config.RunnerSettings.model_fields}
    assert {name for name in env if name.startswith("GIGAFACTORY_RUNNER_")} <= fields
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert env["GIGAFACTORY_RUNNER_WORK_DIR"]["value"] in mounts
    profiles = env["GIGAFACTORY_RUNNER_PROFILES_FILE"]["value"]
    assert str(pathlib.PurePosixPath(profiles).parent) in mounts and mounts["/etc/gigafactory"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["GIGAFACTORY_RUNNER_WORK_DIR"]["value"]]["name"]]
    assert env["GIGAFACTORY_RUNNER_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_the_operator_runs_two_replicas_under_leader_election_and_rolls_without_a_gap(tmp_path) -> None:
    docs = render(tmp_path)
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-operator")
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GIGAFACTORY_LEADER_ELECTION"] == "true" and env["GIGAFACTORY_NAMESPACE"] == "gigafactory-system"
    assert config.OperatorSettings(log_level=env["GIGAFACTORY_LOG_LEVEL"]).log_level == "INFO"
    # The names the operator reads are settings it has (a typo here would silently leave election off).
    assert {"leader_election", "namespace"} <= set(config.OperatorSettings.model_fields)
    assert any(d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "gf-operator" for d in docs)


def test_the_operator_reads_credential_secrets_only_where_pools_take_jobs(tmp_path) -> None:
    listed = render(tmp_path, "pools:\n  - {name: a, agents: [script], namespaces: [team-a, team-b], " + SCRIPT_PROFILE + "}\n"
                    "  - {name: b, agents: [script], namespaces: [team-b], " + SCRIPT_PROFILE + "}\n")
    bindings = [d for d in listed if d["kind"] in ("RoleBinding", "ClusterRoleBinding") and d["metadata"]["name"] == "gf-operator-credentials"]
    assert sorted((d["kind"], d["metadata"].get("namespace")) for d in bindings) == [("RoleBinding", "team-a"), ("RoleBinding", "team-b")]
    role = next(d for d in listed if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "gf-operator-credentials")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    off = render(tmp_path, "operator: {branchCleanup: false}\n")
    assert not [d for d in off if d["metadata"]["name"] == "gf-operator-credentials"]


def test_a_pool_with_scaling_hands_its_runner_template_to_the_operator(tmp_path) -> None:
    pool = "pools:\n  - {name: burst, agents: [script], slotsPerPod: 2, " + SCRIPT_PROFILE + "%s}\n"
    fixed = render(tmp_path, pool % "")
    scaled = render(tmp_path, pool % ", scaling: {maxReplicas: 5, scaleDownDelaySeconds: 60}")
    deployment = next(d for d in fixed if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-burst-runner")
    factory = next(d for d in scaled if d["kind"] == "Factory")
    assert not [d for d in scaled if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-burst-runner"]
    scaling = factory["spec"]["scaling"]
    assert (scaling["minReplicas"], scaling["maxReplicas"], scaling["scaleDownDelaySeconds"]) == (0, 5, 60)
    # The same pod as a fixed pool's: service account, locked-down containers, profiles, volumes.
    assert scaling["template"] == deployment["spec"]["template"]
    built = scaler.build_deployment(factory, namespace="gigafactory-system", replicas=3, service_account="gf-burst-runner")
    assert built["spec"]["template"]["spec"]["serviceAccountName"] == "gf-burst-runner"
    # Forcing changes nothing of the chart's own template but the operator's own additions.
    assert built["spec"]["template"]["spec"]["securityContext"] == scaling["template"]["spec"]["securityContext"]
    assert built["spec"]["template"]["spec"]["containers"][0]["securityContext"] == \
        scaling["template"]["spec"]["containers"][0]["securityContext"]
    assert built["metadata"]["ownerReferences"][0]["name"] == "burst" and built["spec"]["replicas"] == 3
    env = {e["name"]: e for e in built["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GIGAFACTORY_RUNNER_FACTORY"]["value"] == "burst" and env["GIGAFACTORY_RUNNER_SLOTS"]["value"] == "2"
    assert [e["name"] for e in built["spec"]["template"]["spec"]["containers"][0]["env"]].count("GIGAFACTORY_RUNNER_POD_NAME") == 1


def test_the_dashboard_is_optional_read_only_and_reads_no_secret(tmp_path) -> None:
    assert not [d for d in render(tmp_path) if "dashboard" in d["metadata"]["name"]]  # off by default
    docs = [d for d in render(tmp_path, FULL_VALUES.read_text()) if d["metadata"]["name"] == "gf-dashboard"]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service"}
    for role in (kinds["ClusterRole"], kinds["Role"]):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            assert "secrets" not in rule["resources"] and "*" not in rule["resources"], rule
    assert kinds["Role"]["metadata"]["namespace"] == "gigafactory-system"  # Leases and logs: the runners' namespace only
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gf-dashboard"
    assert pod["containers"][0]["args"] == ["dashboard", "--address=0.0.0.0", "--port=8080", "--runner-namespace=gigafactory-system",
                                            "--allowed-host=gigafactory.example.com"]
    assert kinds["Service"]["spec"]["type"] == "ClusterIP"
    operator = next(d for d in render(tmp_path) if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-operator")
    assert pod["securityContext"] == operator["spec"]["template"]["spec"]["securityContext"]
    assert pod["containers"][0]["securityContext"] == operator["spec"]["template"]["spec"]["containers"][0]["securityContext"]


def test_the_gateway_key_comes_from_the_pools_secret_into_the_runner_container_only(tmp_path) -> None:
    """pools[].gateway (over runnerDefaults.gateway): each upstream's key from its Secret, as a file mounted
    in the runner container under /var/run/secrets (hidden from agents), named by a *_API_KEY_FILE setting;
    its base URL and the fixed port as settings; nothing in the operator, the dashboard or the profiles.
    The pool's prices become its Factory's spec.prices."""
    docs = render(tmp_path, FULL_VALUES.read_text())
    factories = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Factory"}
    cpu = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-cpu-runner")["spec"]["template"]["spec"]
    gpu = factories["gpu"]["spec"]["scaling"]["template"]["spec"]

    def keys(pod: dict) -> dict[str, tuple[str, str, int]]:
        """Setting → (Secret, key, mode) of the file it names."""
        container = pod["containers"][0]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        found = {}
        for env in container["env"]:
            if env["name"].endswith("_API_KEY_FILE"):
                directory, file = env["value"].rsplit("/", 1)
                assert mounts[directory]["readOnly"] is True and directory.startswith("/var/run/secrets/")
                secret = volumes[mounts[directory]["name"]]["secret"]
                (item,) = [i for i in secret["items"] if i["path"] == file]
                found[env["name"]] = (secret["secretName"], item["key"], secret["defaultMode"])
        return found

    # runnerDefaults.gateway.openai reaches both pools; gpu's own anthropic and port only gpu.
    assert keys(cpu) == {"GIGAFACTORY_RUNNER_OPENAI_API_KEY_FILE": ("openai-key", "api-key", 0o440)}
    assert keys(gpu) == {"GIGAFACTORY_RUNNER_OPENAI_API_KEY_FILE": ("openai-key", "api-key", 0o440),
                         "GIGAFACTORY_RUNNER_ANTHROPIC_API_KEY_FILE": ("anthropic-key", "api-key", 0o440)}
    cpu_env = {e["name"]: e for e in cpu["containers"][0]["env"]}
    gpu_env = {e["name"]: e for e in gpu["containers"][0]["env"]}
    assert gpu_env["GIGAFACTORY_RUNNER_ANTHROPIC_BASE_URL"]["value"] == "https://llm-gateway.example.com/anthropic"
    assert gpu_env["GIGAFACTORY_RUNNER_GATEWAY_PORT"]["value"] == "8042"
    assert "GIGAFACTORY_RUNNER_OPENAI_BASE_URL" not in cpu_env and "GIGAFACTORY_RUNNER_GATEWAY_PORT" not in cpu_env
    for env in (cpu_env, gpu_env):
        assert {n for n in env if n.startswith("GIGAFACTORY_")} <= {f"GIGAFACTORY_RUNNER_{n.upper()}" for n in config.RunnerSettings.model_fields}
        assert not [e for e in env.values() if "secretKeyRef" in json.dumps(e)]  # never in the environment
    # The Secrets are named by the runner pods' volumes and nowhere else (no other pod, ConfigMap or Factory field).
    for doc in docs:
        if doc["kind"] == "Factory" and doc["metadata"]["name"] == "gpu":
            doc = {**doc, "spec": {**doc["spec"], "scaling": None}}
        elif doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gf-cpu-runner":
            doc = {**doc["spec"]["template"]["spec"], "volumes": None}
        assert "openai-key" not in json.dumps(doc) and "anthropic-key" not in json.dumps(doc)
    # The scaled pool's template is one the operator runs (secret volumes are allowed there).
    assert scaler.restrict_template(factories["gpu"]["spec"]["scaling"]["template"], service_account="gf-gpu-runner")[1] == []
    assert factories["gpu"]["spec"]["prices"][0] == {"model": "claude-sonnet-4*", "inputPerMillion": 3, "outputPerMillion": 15}
    assert "prices" not in factories["cpu"]["spec"]
    # Without gateway values, no key setting at all (the default pool).
    default = next(d for d in render(tmp_path) if d["kind"] == "Deployment" and d["metadata"]["name"] == "gf-default-runner")
    assert not keys(default["spec"]["template"]["spec"])


def test_the_runner_reads_its_gateway_keys_from_files(tmp_path, monkeypatch) -> None:
    key = tmp_path / "api-key"
    key.write_text("sk-ant-from-a-secret\n")
    monkeypatch.setenv("GIGAFACTORY_RUNNER_ANTHROPIC_API_KEY_FILE", str(key))
    settings = config.RunnerSettings(pod_name="p", factory="f")
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-from-a-secret" and settings.openai_api_key is None
    monkeypatch.setenv("GIGAFACTORY_RUNNER_OPENAI_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="openai_api_key_file: cannot read"):
        config.RunnerSettings(pod_name="p", factory="f")


@pytest.mark.parametrize(
    "values, fragment",
    [
        pytest.param("pools:\n  - {name: a, agents: [x], gateway: {anthropic: {key: k}}}\n", "secretName", id="gateway-without-secret"),
        pytest.param("runnerDefaults: {gateway: {anthropic: {secretName: s, apiKey: sk-inline}}}\n", "apiKey", id="gateway-inline-key"),
        pytest.param("pools:\n  - {name: a, agents: [x], prices: [{model: m, inputPerMillion: -1, outputPerMillion: 1}]}\n",
                     "inputPerMillion", id="negative-price"),
    ],
)
def test_values_schema_refuses_bad_gateway_and_prices(tmp_path, values, fragment) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = subprocess.run([str(HELM), "template", "gf", str(CHART), "-f", str(path)], capture_output=True, text=True)
    assert result.returncode != 0 and fragment in result.stderr, result.stderr
