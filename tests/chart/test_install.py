"""The chart installed with `helm install` on a real API server, then every right docs/security.md gives or
withholds a runner, exercised with a runner's real ServiceAccount token (TokenRequest, bound to its pod
as a runner pod's projected token is) and enforced by the server's own RBAC and ValidatingAdmissionPolicies.

The CEL of the policies is also evaluated in Python (test_token_scoping.py) on many more shapes; this is
the same table on kube-apiserver: schema type-checking, matchConditions, `request.userInfo.extra`, merge
patches and the status subresource as the server really applies them. Only against a real server (marker
`real_only`): the embedded one has no RBAC and no admission policies.

One release per test module (per pytest worker), with its own release name, namespace and Factory
names; every case makes its own objects. The release: pool alpha (one runner pod) serves job namespace
team-a only, pool beta (one runner pod) serves every namespace ("*")."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pathlib
import re
import subprocess
import uuid
from typing import Any, Callable, Iterator

import kubernetes
import pytest
import yaml

from gigafactory import leases
from tests.conftest import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gigafactory"
HELM = ROOT / ".venv" / "bin" / "helm"
GROUP, VERSION = "gigafactory.dev", "v1alpha1"
MERGE = "application/merge-patch+json"
STAMP = "2026-11-24T10:00:00Z"
OTHER_POD = "elsewhere-7d9f-zzzzz"  # a pod of the same factory, not the caller
ENFORCEMENT_TIMEOUT = 60.0  # a fresh policy is enforced once the server has compiled it (seconds, usually <1)

pytestmark = [
    pytest.mark.real_only,
    pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)"),
]


# ----------------------------------------------------------------- identities


def outcome(call: Callable[[], Any]) -> str:
    """'allowed', 'rbac' (403 from the authorizer) or 'policy' (denied by a ValidatingAdmissionPolicy)."""
    try:
        call()
    except kubernetes.client.ApiException as e:
        body = e.body.decode() if isinstance(e.body, bytes) else str(e.body or "")
        if "ValidatingAdmissionPolicy" in body:
            return "policy"
        if e.status == 403:
            return "rbac"
        raise
    return "allowed"


@dataclasses.dataclass
class Identity:
    """API clients acting with one token."""

    name: str
    client: kubernetes.client.ApiClient

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.client)

    @property
    def leases(self) -> kubernetes.client.CoordinationV1Api:
        return kubernetes.client.CoordinationV1Api(self.client)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)

    # What a runner sends: merge patches, as runner/running.py does.
    def patch_job_status(self, namespace: str, name: str, body: dict) -> Any:
        return self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agentjobs", name, body,
                                                                 _content_type=MERGE)

    def patch_job(self, namespace: str, name: str, body: dict) -> Any:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", name, body,
                                                          _content_type=MERGE)

    def get_job(self, namespace: str, name: str) -> Any:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", name)

    def patch_lease(self, namespace: str, name: str, body: dict) -> Any:
        return self.leases.patch_namespaced_lease(name, namespace, body, _content_type=MERGE)


@dataclasses.dataclass
class Release:
    name: str
    namespace: str
    team_a: str
    team_b: str
    alpha: str  # factory (pool) names
    beta: str
    admin: Identity
    alpha_runner: Identity  # pod-bound tokens
    alpha_pod: str
    beta_runner: Identity
    beta_pod: str
    alpha_unbound: Identity  # `kubectl create token`: bound to no pod
    operator: Identity
    manifest: str  # `helm get manifest`
    kubeconfigs: dict[str, str]  # per identity above: "alpha-runner", "beta-runner", "alpha-unbound", "operator"
    suffix: str
    home: pathlib.Path  # helm's (HOME, cache and config)

    def sa(self, pool: str) -> str:
        return f"{self.name}-{pool}-runner"


def _kubeconfig_for_token(kubeconfig: str, token: str, path: pathlib.Path) -> str:
    """The admin kubeconfig's cluster with a bearer token as its user (what control_plane.kubeconfig_with_token
    writes, and also right for an external cluster's kubeconfig)."""
    config = yaml.safe_load(pathlib.Path(kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    config["users"] = [{"name": context["user"], "user": {"token": token}}]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(path)


def _helm(kubeconfig: str, home: pathlib.Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    result = subprocess.run([str(HELM), "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _wait(predicate: Callable[[], Any], *, timeout: float, message: str) -> Any:
    return wait_for(predicate, timeout=timeout, interval=0.1, message=message)


def _runner_pod(core: kubernetes.client.CoreV1Api, namespace: str, factory: str) -> kubernetes.client.V1Pod:
    """The runner Deployment's pod (made by the controller manager; it never runs here, but it exists)."""
    def found() -> Any:
        pods = core.list_namespaced_pod(namespace, label_selector=f"gigafactory.dev/factory={factory}").items
        return pods[0] if pods else None
    return _wait(found, timeout=60, message=f"the runner pod of factory {factory}")


def _token(core: kubernetes.client.CoreV1Api, namespace: str, account: str, pod: kubernetes.client.V1Pod | None = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if pod is not None:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid}
    return core.create_namespaced_service_account_token(account, namespace, {"spec": spec}).status.token


@contextlib.contextmanager
def installed(kubeconfig: str, api_client: kubernetes.client.ApiClient, directory: pathlib.Path,
              extra_pools: tuple[dict, ...] = ()) -> Iterator[Release]:
    """`helm install` of a release of its own (names unique per call), its tokens, its policies in force;
    `helm uninstall` and its namespaces deleted afterwards. `extra_pools`: more pools, "{suffix}" in their
    names replaced by the release's suffix."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"gi{suffix}", f"gi-{suffix}"
    team_a, team_b = f"team-a-{suffix}", f"team-b-{suffix}"
    alpha, beta = f"alpha-{suffix}", f"beta-{suffix}"
    home = directory / "helm-home"
    home.mkdir()
    admin_core = kubernetes.client.CoreV1Api(api_client)
    for ns in (team_a, team_b):
        admin_core.create_namespace({"metadata": {"name": ns, "labels": {"gigafactory.dev/test": "true"}}})
    profile = {"script": {"argv": ["{python}", "-m", "gigafactory.runner.script_agent", "{args}", "--prompt-file", "{prompt_file}"],
                          "allow": {"args": [{"flag": "--hang"}]}}}  # what test_install_e2e's jobs add
    values = {"operator": {"replicas": 1},
              "pools": [{"name": alpha, "replicas": 1, "agents": ["script"], "namespaces": [team_a], "profiles": profile},
                        {"name": beta, "replicas": 1, "agents": ["script"], "namespaces": ["*"], "profiles": profile},
                        *({**pool, "name": pool["name"].format(suffix=suffix), "profiles": profile} for pool in extra_pools)]}
    values_file = home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    identities: list[Identity] = []
    # With CRDs (crds/ of the chart: Helm installs them first, or leaves them be when they exist).
    _helm(kubeconfig, home, "install", name, str(CHART), "-n", namespace, "--create-namespace", "-f", str(values_file))
    try:
        alpha_pod = _runner_pod(admin_core, namespace, alpha)
        beta_pod = _runner_pod(admin_core, namespace, beta)
        tokens = {
            "alpha-runner": _token(admin_core, namespace, f"{name}-{alpha}-runner", alpha_pod),
            "beta-runner": _token(admin_core, namespace, f"{name}-{beta}-runner", beta_pod),
            "alpha-unbound": _token(admin_core, namespace, f"{name}-{alpha}-runner"),
            "operator": _token(admin_core, namespace, f"{name}-operator"),
        }
        kubeconfigs = {key: _kubeconfig_for_token(kubeconfig, token, directory / f"{key}.kubeconfig") for key, token in tokens.items()}
        ids = {key: Identity(key, kubernetes.config.new_client_from_config(config_file=path)) for key, path in kubeconfigs.items()}
        identities += ids.values()
        rel = Release(name=name, namespace=namespace, team_a=team_a, team_b=team_b, alpha=alpha, beta=beta,
                      admin=Identity("admin", api_client), alpha_runner=ids["alpha-runner"], alpha_pod=alpha_pod.metadata.name,
                      beta_runner=ids["beta-runner"], beta_pod=beta_pod.metadata.name, alpha_unbound=ids["alpha-unbound"],
                      operator=ids["operator"], manifest=_helm(kubeconfig, home, "get", "manifest", name, "-n", namespace),
                      kubeconfigs=kubeconfigs, suffix=suffix, home=home)
        _wait_for_enforcement(rel)
        yield rel
    finally:
        _helm(kubeconfig, home, "uninstall", name, "-n", namespace)
        for ns in (team_a, team_b, namespace):
            try:
                admin_core.delete_namespace(ns)
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
        for identity in identities:
            identity.client.close()


@pytest.fixture(scope="module")
def release(kubeconfig: str, api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(kubeconfig, api_client, tmp_path_factory.mktemp("release")) as rel:
        yield rel


def _wait_for_enforcement(rel: Release) -> None:
    """Each pool's three policies deny once the server has loaded them and their bindings: probe each with a
    request it must deny (and RBAC allows) until it is denied, within a deadline. Never a fixed sleep."""
    probe = job(rel, factory=rel.beta, pod=rel.beta_pod, namespace=rel.team_a)
    beta_probe = job(rel, factory=rel.alpha, pod=rel.alpha_pod, namespace=rel.team_a)
    counter = iter(range(1_000_000))

    def unlabelled_lease(runner: Identity) -> Callable[[], Any]:
        return lambda: runner.leases.create_namespaced_lease(rel.namespace, {"metadata": {"name": f"probe-{next(counter)}"}, "spec": {}})

    def foreign_configmap(runner: Identity) -> Callable[[], Any]:
        return lambda: runner.core.create_namespaced_config_map(rel.namespace, {"metadata": {"name": f"probe-{next(counter)}"}})

    probes = {
        "alpha jobs": lambda: rel.alpha_runner.patch_job_status(rel.team_a, probe, {"status": {"phase": "Running"}}),
        "beta jobs": lambda: rel.beta_runner.patch_job_status(rel.team_a, beta_probe, {"status": {"phase": "Running"}}),
        "alpha leases": unlabelled_lease(rel.alpha_runner),
        "beta leases": unlabelled_lease(rel.beta_runner),
        "alpha logs": foreign_configmap(rel.alpha_runner),
        "beta logs": foreign_configmap(rel.beta_runner),
    }
    for what, call in probes.items():
        _wait(lambda: outcome(call) == "policy", timeout=ENFORCEMENT_TIMEOUT, message=f"the {what} policy to deny")
    for name in (probe, beta_probe):  # an operator started later would otherwise rebind and run them
        rel.admin.custom.delete_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", name)


# ----------------------------------------------------------------- AgentJobs as the operator binds them


def job(rel: Release, *, factory: str, pod: str, namespace: str, phase: str = "Bound", report: bool = False) -> str:
    """An AgentJob the operator (here: admin) has bound to `pod` of `factory`, at its attempt 2; its name."""
    name = f"job-{uuid.uuid4().hex[:8]}"
    rel.admin.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentjobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": name},
        "spec": {"queue": "backend", "repo": {"url": "https://git.example.com/acme/api.git", "baseRef": "main", "branch": "agent/fix"},
                 "task": {"prompt": "Fix the flaky test"}, "agent": {"profile": "script"}}})
    status: dict[str, Any] = {
        "phase": phase, "attempt": 2, "startTime": STAMP, "observedGeneration": 1,
        "attempts": [{"attempt": 1, "factory": factory, "pod": pod, "outcome": "InfraError", "reason": "LeaseExpired"}],
        "assignment": {"factory": factory, "pod": pod, "podNamespace": rel.namespace, "attempt": 2, "lease": f"{name}-2",
                       "leaseNamespace": rel.namespace, "boundAt": STAMP, "score": 87, "scores": {"FreeCapacity": 100}},
        "conditions": [{"type": "Scheduled", "status": "True", "reason": "Bound", "message": "bound", "observedGeneration": 1}],
    }
    if phase == "Running":
        status["assignment"]["claimedAt"] = STAMP
        status["conditions"] += claim_conditions(pod)
    if report:
        status["report"] = report_body(pod)["status"]["report"]
    rel.admin.patch_job_status(namespace, name, {"status": status})
    return name


def claim_conditions(pod: str) -> list[dict]:
    return [{"type": "Claimed", "status": "True", "reason": "Claimed", "message": f"claimed by {pod}"},
            {"type": "Running", "status": "True", "reason": "AgentRunning", "message": "the agent is running"}]


def claim_body(pod: str) -> dict:
    """The runner's claim (runner/running.py): phase Running, claimedAt, its two conditions."""
    scheduled = {"type": "Scheduled", "status": "True", "reason": "Bound", "message": "bound", "observedGeneration": 1}
    return {"status": {"phase": "Running", "assignment": {"claimedAt": STAMP}, "conditions": [scheduled, *claim_conditions(pod)]}}


def report_body(pod: str, attempt: int = 2) -> dict:
    return {"status": {"report": {"attempt": attempt, "pod": pod, "outcome": "Succeeded", "finishedAt": STAMP,
                                  "result": {"branch": "agent/fix", "commit": "0" * 40}}}}


# Each case: (who writes, the job as bound: factory/pod, its phase and report, the status patch, expected).
# "mine" is the alpha runner's own pod, "beta" beta's runner pod; OTHER_POD another pod of the same factory.
JOB_CASES = [
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: claim_body(pod), "allowed", id="claim-own-binding"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", False, lambda pod: report_body(pod), "allowed", id="report-own-attempt"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: report_body(pod), "allowed", id="report-before-claim"),
    pytest.param("alpha_unbound", "alpha", "other", "Bound", False, lambda pod: claim_body(OTHER_POD), "allowed",
                 id="token-bound-to-no-pod-is-held-to-the-factory-only"),
    pytest.param("alpha_runner", "alpha", "other", "Bound", False, lambda pod: claim_body(pod), "policy", id="claim-other-pods-binding"),
    pytest.param("alpha_runner", "beta", "beta", "Bound", False, lambda pod: claim_body(pod), "policy", id="claim-other-factorys-job"),
    pytest.param("alpha_unbound", "beta", "beta", "Bound", False, lambda pod: claim_body(pod), "policy",
                 id="other-factorys-job-with-token-bound-to-no-pod"),
    pytest.param("beta_runner", "alpha", "mine", "Bound", False, lambda pod: claim_body(pod), "policy",
                 id="other-pools-runner-claims-alphas-job"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", False, lambda pod: {"status": {"phase": "Succeeded"}}, "policy",
                 id="declare-own-success"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", False, lambda pod: {"status": {"phase": "Pending"}}, "policy",
                 id="unbind-itself"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"attempt": 1}}, "policy", id="rewind-attempt"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"attempts": None}}, "policy",
                 id="erase-attempt-history"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"result": {"branch": "main", "commit": "b" * 40}}}, "policy",
                 id="write-result-directly"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"assignment": {"pod": OTHER_POD}}}, "policy",
                 id="move-binding-to-other-pod"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"assignment": None}}, "policy",
                 id="drop-assignment"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False,
                 lambda pod: {"status": {"assignment": {"prices": [{"model": "*", "inputPerMillion": 0, "outputPerMillion": 0}]}}},
                 "policy", id="price-its-own-models-at-zero"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", False, lambda pod: {"status": {"cost": 0, "tokens": 0}}, "policy",
                 id="write-the-jobs-spending"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"conditions": []}}, "policy",
                 id="erase-scheduled-condition"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"countFrom": 3}}, "policy",
                 id="reset-own-retry-budget"),
    pytest.param("alpha_runner", "alpha", "mine", "Bound", False, lambda pod: {"status": {"retryRequest": "forged"}}, "policy",
                 id="forge-retry-request"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", False, lambda pod: report_body(pod, attempt=1), "policy",
                 id="report-stale-attempt"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", False, lambda pod: report_body(OTHER_POD), "policy",
                 id="report-as-other-pod"),
    pytest.param("alpha_runner", "alpha", "mine", "Running", True, lambda pod: {"status": {"report": None}}, "policy", id="erase-report"),
    pytest.param("operator", "alpha", "mine", "Running", True, lambda pod: {"status": {"phase": "Succeeded", "report": None}}, "allowed",
                 id="the-operator-is-not-held-by-the-policy"),
]


@pytest.mark.parametrize("who, factory, pod, phase, reported, patch, expected", JOB_CASES)
def test_runner_writes_only_its_claim_and_report_on_its_own_jobs(release, who, factory, pod, phase, reported, patch, expected) -> None:
    rel = release
    pods = {"mine": rel.alpha_pod, "other": OTHER_POD, "beta": rel.beta_pod}
    name = job(rel, factory={"alpha": rel.alpha, "beta": rel.beta}[factory], pod=pods[pod], namespace=rel.team_a, phase=phase,
               report=reported)
    caller: Identity = getattr(rel, who)
    caller_pod = {"alpha_runner": rel.alpha_pod, "beta_runner": rel.beta_pod}.get(who, pods[pod])
    before = rel.admin.get_job(rel.team_a, name)["status"]
    assert outcome(lambda: caller.patch_job_status(rel.team_a, name, patch(caller_pod))) == expected
    after = rel.admin.get_job(rel.team_a, name)["status"]
    assert (after != before) == (expected == "allowed")


def test_runner_reads_jobs_by_name_in_its_namespaces_and_never_writes_their_spec(release) -> None:
    rel = release
    mine = job(rel, factory=rel.alpha, pod=rel.alpha_pod, namespace=rel.team_a)
    elsewhere = job(rel, factory=rel.alpha, pod=rel.alpha_pod, namespace=rel.team_b)
    runner = rel.alpha_runner
    assert outcome(lambda: runner.get_job(rel.team_a, mine)) == "allowed"
    denied = {
        "list jobs": lambda: runner.custom.list_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs"),
        "watch jobs cluster-wide": lambda: runner.custom.list_cluster_custom_object(GROUP, VERSION, "agentjobs"),
        "change a job's spec": lambda: runner.patch_job(rel.team_a, mine, {"spec": {"priority": 99}}),
        "cancel a job": lambda: runner.patch_job(rel.team_a, mine, {"spec": {"cancel": True}}),
        "delete a job": lambda: runner.custom.delete_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", mine),
        "create a job": lambda: runner.custom.create_namespaced_custom_object(GROUP, VERSION, rel.team_a, "agentjobs", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentJob", "metadata": {"name": "forged"}, "spec": {}}),
        # alpha serves team-a only: team-b's jobs are out of its reach, even one bound to it.
        "read a job outside its namespaces": lambda: runner.get_job(rel.team_b, elsewhere),
        "claim a job outside its namespaces": lambda: runner.patch_job_status(rel.team_b, elsewhere, claim_body(rel.alpha_pod)),
        "read a Factory": lambda: runner.custom.get_cluster_custom_object(GROUP, VERSION, "factories", rel.alpha),
        "write a Factory's status": lambda: runner.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "factories", rel.alpha, {"status": {"phase": "Ready"}}, _content_type=MERGE),
    }
    assert {what: outcome(call) for what, call in denied.items()} == dict.fromkeys(denied, "rbac")
    assert rel.admin.get_job(rel.team_a, mine)["spec"].get("priority") != 99


def test_runner_reads_secrets_and_configmaps_by_name_only_where_its_pool_takes_jobs(release) -> None:
    """docs/security.md, 'what cannot be enforced': `get` by name in the job namespaces; no list, and
    nothing outside them (alpha: team-a only; beta serves "*", so everywhere)."""
    rel = release
    for ns in (rel.team_a, rel.team_b, rel.namespace):
        rel.admin.core.create_namespaced_secret(ns, {"metadata": {"name": "git-creds"}, "stringData": {"token": "x"}})
        rel.admin.core.create_namespaced_config_map(ns, {"metadata": {"name": "prompt"}, "data": {"prompt": "x"}})
    alpha, beta = rel.alpha_runner, rel.beta_runner
    seen = {
        "alpha get secret in team-a": outcome(lambda: alpha.core.read_namespaced_secret("git-creds", rel.team_a)),
        "alpha get configmap in team-a": outcome(lambda: alpha.core.read_namespaced_config_map("prompt", rel.team_a)),
        "alpha list secrets in team-a": outcome(lambda: alpha.core.list_namespaced_secret(rel.team_a)),
        "alpha list configmaps in team-a": outcome(lambda: alpha.core.list_namespaced_config_map(rel.team_a)),
        "alpha get secret in team-b": outcome(lambda: alpha.core.read_namespaced_secret("git-creds", rel.team_b)),
        "alpha get secret in its own namespace": outcome(lambda: alpha.core.read_namespaced_secret("git-creds", rel.namespace)),
        "alpha write a secret in team-a": outcome(lambda: alpha.core.patch_namespaced_secret(
            "git-creds", rel.team_a, {"stringData": {"token": "y"}})),
        "alpha list secrets cluster-wide": outcome(lambda: alpha.core.list_secret_for_all_namespaces()),
        "beta get secret in team-b": outcome(lambda: beta.core.read_namespaced_secret("git-creds", rel.team_b)),
        "beta list secrets in team-b": outcome(lambda: beta.core.list_namespaced_secret(rel.team_b)),
        "operator get secret in team-a": outcome(lambda: rel.operator.core.read_namespaced_secret("git-creds", rel.team_a)),
        "operator list secrets in team-a": outcome(lambda: rel.operator.core.list_namespaced_secret(rel.team_a)),
        "alpha list pods": outcome(lambda: alpha.core.list_namespaced_pod(rel.namespace)),
        "alpha mint a token": outcome(lambda: alpha.core.create_namespaced_service_account_token(
            rel.sa(rel.alpha), rel.namespace, {"spec": {}})),
    }
    assert seen == {
        "alpha get secret in team-a": "allowed", "alpha get configmap in team-a": "allowed",
        "alpha list secrets in team-a": "rbac", "alpha list configmaps in team-a": "rbac",
        "alpha get secret in team-b": "rbac", "alpha get secret in its own namespace": "rbac",
        "alpha write a secret in team-a": "rbac", "alpha list secrets cluster-wide": "rbac",
        "beta get secret in team-b": "allowed", "beta list secrets in team-b": "rbac",
        "operator get secret in team-a": "allowed", "operator list secrets in team-a": "rbac",
        "alpha list pods": "rbac", "alpha mint a token": "rbac",
    }


# ----------------------------------------------------------------- Leases


# With microseconds: the kubernetes client re-serialises a Lease's times with isoformat(), which drops a zero
# fraction that the server's MicroTime parser insists on (the runner's own client sends the strings as built).
MOMENT = datetime.datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc)


def test_runner_keeps_its_own_heartbeat_and_no_one_elses(release) -> None:
    rel = release
    runner, ns = rel.alpha_runner, rel.namespace

    def heartbeat(pod: str = rel.alpha_pod, factory: str = rel.alpha) -> dict:
        return leases.build_heartbeat_lease(pod=pod, namespace=ns, factory=factory, slots=2, agents=["script"],
                                            duration_seconds=15, moment=MOMENT)

    own = heartbeat()
    assert outcome(lambda: runner.leases.create_namespaced_lease(ns, own)) == "allowed"
    renew = leases.renew_patch(moment=MOMENT, resource_version="")
    del renew["metadata"]
    assert outcome(lambda: runner.patch_lease(ns, rel.alpha_pod, renew)) == "allowed"
    assert outcome(lambda: runner.patch_lease(ns, rel.alpha_pod, {"metadata": {"annotations": {leases.ANNOTATION_DRAINING: "true"}}})) == "allowed"
    stored = runner.leases.read_namespaced_lease(rel.alpha_pod, ns)
    stored.spec.lease_duration_seconds = 20
    assert outcome(lambda: runner.leases.replace_namespaced_lease(rel.alpha_pod, ns, stored)) == "allowed"  # replace (PUT)

    # Another factory's heartbeat, made by the operator's stand-in: out of reach.
    rel.admin.leases.create_namespaced_lease(ns, heartbeat(pod=rel.beta_pod, factory=rel.beta))
    binding = leases.build_binding_lease(job_namespace=rel.team_a, job_name="j", job_uid=uuid.uuid4().hex, attempt=1,
                                         factory=rel.alpha, pod=rel.alpha_pod, pod_namespace=ns, claim_timeout_seconds=30,
                                         moment=MOMENT)
    seen = {
        "create heartbeat for other pod": outcome(lambda: runner.leases.create_namespaced_lease(ns, heartbeat(pod=OTHER_POD))),
        "create heartbeat in other factory": outcome(lambda: runner.leases.create_namespaced_lease(
            ns, {**heartbeat(), "metadata": {**heartbeat()["metadata"], "name": f"{rel.alpha_pod}-b",
                                             "labels": {**heartbeat()["metadata"]["labels"], "gigafactory.dev/factory": rel.beta}}})),
        "create a binding lease": outcome(lambda: runner.leases.create_namespaced_lease(ns, binding)),
        "create an unlabelled lease": outcome(lambda: runner.leases.create_namespaced_lease(ns, {"metadata": {"name": rel.alpha_pod + "-x"},
                                                                                                   "spec": {}})),
        "renew other factory's heartbeat": outcome(lambda: runner.patch_lease(ns, rel.beta_pod, renew)),
        "relabel own heartbeat": outcome(lambda: runner.patch_lease(ns, rel.alpha_pod, {"metadata": {"labels": {"gigafactory.dev/pod": OTHER_POD}}})),
        "delete other factory's heartbeat": outcome(lambda: runner.leases.delete_namespaced_lease(rel.beta_pod, ns)),
        "create a lease in a job namespace": outcome(lambda: runner.leases.create_namespaced_lease(rel.team_a, heartbeat())),
    }
    assert seen == {
        "create heartbeat for other pod": "policy", "create heartbeat in other factory": "policy",
        "create a binding lease": "policy", "create an unlabelled lease": "policy",
        "renew other factory's heartbeat": "policy", "relabel own heartbeat": "policy",
        "delete other factory's heartbeat": "policy", "create a lease in a job namespace": "rbac",
    }
    assert outcome(lambda: runner.leases.delete_namespaced_lease(rel.alpha_pod, ns)) == "allowed"


def _binding(rel: Release, *, factory: str, pod: str, stopped: bool = False, pushed: bool = False) -> str:
    """A binding Lease as the operator (here: admin) creates it; its name."""
    lease = leases.build_binding_lease(job_namespace=rel.team_a, job_name=f"job-{uuid.uuid4().hex[:6]}", job_uid=uuid.uuid4().hex,
                                       attempt=2, factory=factory, pod=pod, pod_namespace=rel.namespace, claim_timeout_seconds=30,
                                       moment=MOMENT)
    if stopped:
        lease["metadata"]["annotations"][leases.ANNOTATION_STOP] = "Cancelled"
    if pushed:
        lease["metadata"]["annotations"][leases.ANNOTATION_PUSHED] = f"{'a' * 40} agent/x"
    rel.admin.leases.create_namespaced_lease(rel.namespace, lease)
    return lease["metadata"]["name"]


def _no_precondition(patch: dict) -> dict:
    patch = {**patch, "metadata": {k: v for k, v in patch.get("metadata", {}).items() if k != "resourceVersion"}}
    return patch if patch["metadata"] else {k: v for k, v in patch.items() if k != "metadata"}


CLAIM = _no_precondition(leases.claim_patch(pod="{pod}", duration_seconds=30, moment=MOMENT, resource_version=""))
RENEW = _no_precondition(leases.renew_patch(moment=MOMENT, resource_version=""))
RELEASE = _no_precondition(leases.release_patch(resource_version=""))
PUSHED = _no_precondition(leases.pushed_patch(branch="agent/x", commit="a" * 40, resource_version=""))

# (who, binding Lease of factory/pod, stopped, pushed, the patch or "delete", expected)
LEASE_CASES = [
    pytest.param("alpha_runner", "alpha", "mine", False, False, CLAIM, "allowed", id="claim-own-binding-lease"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, RENEW, "allowed", id="renew-own-binding-lease"),
    pytest.param("alpha_runner", "alpha", "mine", True, False, RELEASE, "allowed", id="release-after-stop-request"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, PUSHED, "allowed", id="announce-push"),
    pytest.param("alpha_runner", "alpha", "mine", True, False, PUSHED, "allowed", id="announce-push-after-stop-request"),
    pytest.param("alpha_unbound", "alpha", "other", False, False, CLAIM, "allowed", id="token-bound-to-no-pod-is-held-to-the-factory-only"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, "delete", "policy", id="delete-own-binding-lease"),
    pytest.param("alpha_runner", "alpha", "other", False, False, CLAIM, "policy", id="claim-other-pods-binding-lease"),
    pytest.param("alpha_runner", "beta", "beta", False, False, RENEW, "policy", id="renew-other-factorys-lease"),
    pytest.param("alpha_unbound", "beta", "beta", False, False, RENEW, "policy", id="other-factorys-lease-with-token-bound-to-no-pod"),
    pytest.param("alpha_runner", "beta", "beta", False, False, {"metadata": {"labels": {"gigafactory.dev/factory": "{alpha}",
                                                                                        "gigafactory.dev/pod": "{pod}"}}},
                 "policy", id="relabel-other-factorys-lease-into-own"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, {"metadata": {"labels": {"gigafactory.dev/factory": "{beta}"}}}, "policy",
                 id="relabel-own-lease-away"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, {"metadata": {"labels": {"gigafactory.dev/role": "heartbeat"}}}, "policy",
                 id="turn-binding-into-heartbeat"),
    pytest.param("alpha_runner", "alpha", "mine", True, False, {"metadata": {"annotations": {leases.ANNOTATION_STOP: None}}}, "policy",
                 id="erase-stop-request"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, {"metadata": {"annotations": {leases.ANNOTATION_JOB_NAME: "other"}}},
                 "policy", id="point-binding-at-other-job"),
    pytest.param("alpha_runner", "alpha", "mine", False, True, {"metadata": {"annotations": {leases.ANNOTATION_PUSHED: f"{'b' * 40} agent/x"}}},
                 "policy", id="rewrite-announced-push"),
    pytest.param("alpha_runner", "alpha", "mine", False, True, {"metadata": {"annotations": {leases.ANNOTATION_PUSHED: None}}}, "policy",
                 id="erase-announced-push"),
    pytest.param("alpha_runner", "alpha", "mine", False, False, {"metadata": {"annotations": {"gigafactory.dev/other": "x"}}}, "policy",
                 id="add-other-annotation-to-binding"),
    pytest.param("beta_runner", "alpha", "mine", False, False, RENEW, "policy", id="other-pools-runner-renews-alphas-lease"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, str):
        return value.format(**names)
    return value


@pytest.mark.parametrize("who, factory, pod, stopped, pushed, patch, expected", LEASE_CASES)
def test_runner_touches_only_its_own_binding_leases(release, who, factory, pod, stopped, pushed, patch, expected) -> None:
    rel = release
    pods = {"mine": rel.alpha_pod, "other": OTHER_POD, "beta": rel.beta_pod}
    name = _binding(rel, factory={"alpha": rel.alpha, "beta": rel.beta}[factory], pod=pods[pod], stopped=stopped, pushed=pushed)
    caller: Identity = getattr(rel, who)
    caller_pod = {"alpha_runner": rel.alpha_pod, "beta_runner": rel.beta_pod}.get(who, pods[pod])
    before = rel.admin.leases.read_namespaced_lease(name, rel.namespace).metadata.resource_version
    if patch == "delete":
        call: Callable[[], Any] = lambda: caller.leases.delete_namespaced_lease(name, rel.namespace)  # noqa: E731
    else:
        body = _fill(patch, {"pod": caller_pod, "alpha": rel.alpha, "beta": rel.beta})
        call = lambda: caller.patch_lease(rel.namespace, name, body)  # noqa: E731
    assert outcome(call) == expected
    if expected != "allowed":
        assert rel.admin.leases.read_namespaced_lease(name, rel.namespace).metadata.resource_version == before


# ----------------------------------------------------------------- log ConfigMaps


def test_runner_creates_only_its_own_log_configmaps(release) -> None:
    rel = release
    runner, ns = rel.alpha_runner, rel.namespace

    def log(name: str, pod: str = rel.alpha_pod, role: str = "log") -> dict:
        return {"metadata": {"name": name, "labels": {"gigafactory.dev/role": role, "gigafactory.dev/pod": pod,
                                                      "gigafactory.dev/job-uid": "uid"}},
                "data": {"output": "..."}}

    own = f"gf-log-{rel.alpha_pod}-2-abc"
    seen = {
        "create own log": outcome(lambda: runner.core.create_namespaced_config_map(ns, log(own))),
        "create log as other pod": outcome(lambda: runner.core.create_namespaced_config_map(
            ns, log(f"gf-log-{OTHER_POD}-2-abc", pod=OTHER_POD))),
        "create other pod's log name": outcome(lambda: runner.core.create_namespaced_config_map(ns, log(f"gf-log-{OTHER_POD}-2-abd"))),
        "create a profiles configmap": outcome(lambda: runner.core.create_namespaced_config_map(ns, log(f"{rel.sa(rel.alpha)}-x"))),
        "create unlabelled log": outcome(lambda: runner.core.create_namespaced_config_map(ns, {"metadata": {"name": "gf-log-bare"}})),
        "rewrite a log": outcome(lambda: runner.core.patch_namespaced_config_map(own, ns, {"data": {"output": "forged"}})),
        "delete a log": outcome(lambda: runner.core.delete_namespaced_config_map(own, ns)),
        "read its pool's profiles": outcome(lambda: runner.core.read_namespaced_config_map(f"{rel.name}-{rel.alpha}-profiles", ns)),
        "create a log in a job namespace": outcome(lambda: runner.core.create_namespaced_config_map(rel.team_a, log("gf-log-x"))),
    }
    assert seen == {
        "create own log": "allowed", "create log as other pod": "policy", "create other pod's log name": "policy",
        "create a profiles configmap": "policy",
        "create unlabelled log": "policy", "rewrite a log": "rbac", "delete a log": "rbac",
        "read its pool's profiles": "rbac", "create a log in a job namespace": "rbac",
    }


def test_the_policies_are_served_at_the_version_the_server_offers(release) -> None:
    """helm chose the policies' API version from discovery (v1 where served, else v1beta1); the server
    stored every policy of both pools, each with its Deny binding."""
    rel = release
    group = "admissionregistration.k8s.io"
    selector = f"app.kubernetes.io/instance={rel.name}"

    def served(version: str, plural: str) -> list[dict] | None:
        try:
            return rel.admin.custom.list_cluster_custom_object(group, version, plural, label_selector=selector)["items"]
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    version = "v1" if served("v1", "validatingadmissionpolicies") is not None else "v1beta1"
    rendered = [d for d in yaml.safe_load_all(rel.manifest) if d and d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert {d["apiVersion"] for d in rendered} == {f"{group}/{version}"} and len(rendered) == 16
    policies = served(version, "validatingadmissionpolicies") or []
    assert sorted(p["metadata"]["name"] for p in policies) == sorted([f"{rel.name}-job-inputs", f"{rel.name}-job-consent", *(
        f"{rel.name}-{pool}-runner-{kind}" for pool in (rel.alpha, rel.beta) for kind in ("jobs", "leases", "logs"))])
    bindings = served(version, "validatingadmissionpolicybindings") or []
    assert {b["spec"]["policyName"] for b in bindings} == {p["metadata"]["name"] for p in policies}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings)


def test_the_server_type_checks_the_policies_and_warns_of_nothing(release) -> None:
    """The controller manager type-checks each policy's CEL against the schema of the versions it names and
    writes what it finds to status.typeChecking. That it checks at all is shown first: a policy with a misspelt
    field (no binding: it enforces nothing) gets its warning. Then the chart's policies: checked, no warning.
    Two gaps of the checker before Kubernetes 1.30 are not the policies' fault: it knows the built-in kinds'
    schemas only (the AgentJob policy goes unchecked on 1.28), and it does not know `variables` (every use is
    reported as "undeclared reference to 'variables'", kubernetes/kubernetes#122935, fixed in 1.30); those
    reports are set aside, any other error (a misspelt field, a type mismatch) fails."""
    rel = release
    group = "admissionregistration.k8s.io"
    version = next(d["apiVersion"].split("/")[1] for d in yaml.safe_load_all(rel.manifest)
                   if d and d["kind"] == "ValidatingAdmissionPolicy")
    plural = "validatingadmissionpolicies"
    probe = f"{rel.name}-typo-probe"
    rel.admin.custom.create_cluster_custom_object(group, version, plural, {
        "apiVersion": f"{group}/{version}", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": probe},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                                                         "operations": ["UPDATE"], "resources": ["leases"]}]},
                 "validations": [{"expression": "object.spec.holderIdentiti == 'x'"}]}})
    try:
        def checked(name: str) -> dict | None:
            policy = rel.admin.custom.get_cluster_custom_object(group, version, plural, name)
            status = policy.get("status") or {}
            done = status.get("observedGeneration") == policy["metadata"]["generation"] and "typeChecking" in status
            return status["typeChecking"] if done else None

        warnings = _wait(lambda: (checked(probe) or {}).get("expressionWarnings"), timeout=60,
                         message="the type checker to flag a misspelt field (is the controller manager's "
                                 "ValidatingAdmissionPolicy feature gate on?)")
        assert "holderIdentiti" in warnings[0]["warning"]
        names = [f"{rel.name}-{pool}-runner-{kind}" for pool in (rel.alpha, rel.beta) for kind in ("jobs", "leases", "logs")]
        for name in [*names, f"{rel.name}-job-inputs", f"{rel.name}-job-consent"]:
            found = _wait(lambda: checked(name) is not None and [checked(name)], timeout=60, message=f"{name} type-checked")
            errors = [(w["fieldRef"], error) for w in found[0].get("expressionWarnings") or ()
                      for error in re.findall(r"ERROR: <input>:\d+:\d+: ([^\n]*)", w["warning"]) or [w["warning"]]
                      if not error.startswith("undeclared reference to 'variables'")]
            assert not errors, (name, errors)
    finally:
        rel.admin.custom.delete_cluster_custom_object(group, version, plural, probe)
