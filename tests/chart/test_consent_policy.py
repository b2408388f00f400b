"""The job-consent policy (templates/consent.yaml): its CEL, as helm renders it, evaluated with the `cel`
package (as test_token_scoping.py does) and a stand-in for Kubernetes' `authorizer` library that answers
from a table of what the requesting user may do. The real authorizer, RBAC, answers in
tests/security/test_consent.py on kube-apiserver; here are the many shapes of request it is asked about."""

import pathlib
import subprocess
from typing import Any

import cel
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELM = ROOT / ".venv" / "bin" / "helm"
pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)")

VALUES = "pools:\n  - {name: alpha, agents: [script], profiles: {script: {argv: [x]}}}\n"
TENANT = "tenant-a"


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> dict:
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(VALUES)
    out = subprocess.run([str(HELM), "template", "gf", str(ROOT / "charts" / "gigafactory"), "-n", "runners", "-f", str(values)],
                         capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (found,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "gf-job-consent"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding" and d["spec"]["policyName"] == "gf-job-consent"]
    assert found["spec"]["failurePolicy"] == "Fail" and binding["spec"]["validationActions"] == ["Deny"]
    rules = found["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": ["gigafactory.dev"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["agentjobs"]}]  # the spec, not agentjobs/status
    return found


def authorizer(grants: set[tuple[str, str, str, str]], asked: list[tuple]) -> cel.Context:
    """`authorizer.group(g).resource(r).namespace(ns).name(n).check(verb).allowed()`, answered from `grants`
    (resource, namespace, name, verb); every check asked is recorded."""
    def step(key: str) -> Any:
        return lambda this, value: {**this, key: value}

    def allowed(this: dict) -> bool:
        asked.append((this.get("group"), this["resource"], this.get("namespace"), this.get("name"), this["verb"]))
        return (this["resource"], this.get("namespace"), this.get("name"), this["verb"]) in grants

    return {"authorizer": {}, "group": step("group"), "resource": step("resource"), "namespace": step("namespace"),
            "name": step("name"), "check": step("verb"), "allowed": allowed}


def _evaluate(expression: str, context: dict) -> Any:
    try:
        return cel.evaluate(expression, context)
    except Exception:  # noqa: BLE001 - an expression that errors denies, as with failurePolicy: Fail
        return False


def admit(policy: dict, *, obj: dict, old: dict | None = None, user: str = TENANT,
          grants: frozenset = frozenset()) -> tuple[bool | None, list[str], list[tuple]]:
    """(None when the policy does not apply, else whether it admits; the denial messages; the checks asked)."""
    asked: list[tuple] = []
    request = {"operation": "UPDATE" if old else "CREATE", "namespace": "team-a", "userInfo": {"username": user}}
    context: dict[str, Any] = {"request": request, "object": obj, "oldObject": old, **authorizer(set(grants), asked)}
    if not all(_evaluate(c["expression"], context) for c in policy["spec"]["matchConditions"]):
        return None, [], asked
    context["variables"] = {v["name"]: _evaluate(v["expression"], context) for v in policy["spec"]["variables"]}
    failed = [v for v in policy["spec"]["validations"] if _evaluate(v["expression"], context) is not True]
    return not failed, [_evaluate(v["messageExpression"], context) or v["message"] for v in failed], asked


def job(*, secret: str | None = None, prompt_from: str | None = None) -> dict:
    repo: dict[str, Any] = {"url": "https://git.example.com/acme/api.git"}
    if secret:
        repo["credentialsSecret"] = secret
    task = {"promptFrom": {"configMapKeyRef": {"name": prompt_from, "key": "p"}}} if prompt_from else {"prompt": "fix it"}
    return {"metadata": {"name": "j", "namespace": "team-a"}, "spec": {"repo": repo, "task": task}}


GIT_CREDS = ("secrets", "team-a", "git-creds", "get")
PROMPT = ("configmaps", "team-a", "prompt", "get")


@pytest.mark.parametrize("obj, old, grants, admitted, field", [
    pytest.param(job(), None, set(), True, None, id="no-secret-no-prompt"),
    pytest.param(job(secret="git-creds"), None, {GIT_CREDS}, True, None, id="a-secret-the-author-may-get"),
    pytest.param(job(secret="payments-db"), None, {GIT_CREDS}, False, "spec.repo.credentialsSecret", id="phantom-secret"),
    pytest.param(job(secret="git-creds"), None, {("secrets", "team-b", "git-creds", "get")}, False, "spec.repo.credentialsSecret",
                 id="get-in-another-namespace-is-not-enough"),
    pytest.param(job(secret="git-creds"), None, {("secrets", "team-a", "git-creds", "list")}, False, "spec.repo.credentialsSecret",
                 id="list-is-not-get"),
    pytest.param(job(prompt_from="prompt"), None, {PROMPT}, True, None, id="a-prompt-the-author-may-get"),
    pytest.param(job(prompt_from="other"), None, {PROMPT}, False, "spec.task.promptFrom.configMapKeyRef.name", id="someone-elses-prompt"),
    pytest.param(job(secret="git-creds", prompt_from="prompt"), None, {GIT_CREDS, PROMPT}, True, None, id="both-readable"),
    pytest.param(job(secret="git-creds"), job(secret="git-creds"), set(), True, None, id="update-keeping-the-reference"),
    pytest.param(job(secret="payments-db"), job(secret="git-creds"), set(), False, "spec.repo.credentialsSecret",
                 id="update-swapping-in-a-secret"),
    pytest.param(job(secret="payments-db"), job(), set(), False, "spec.repo.credentialsSecret", id="update-adding-a-secret"),
    pytest.param(job(prompt_from="other"), job(prompt_from="prompt"), set(), False, "spec.task.promptFrom.configMapKeyRef.name",
                 id="update-swapping-in-a-prompt"),
])
def test_a_job_names_only_what_its_author_may_get(policy, obj, old, grants, admitted, field) -> None:
    verdict, messages, asked = admit(policy, obj=obj, old=old, grants=frozenset(grants))
    assert verdict is admitted
    if field:
        (message,) = messages
        assert message.startswith(f"{field}: {TENANT} may not get ")
    # The check is asked about the one object named, in the job's namespace, never a wildcard.
    assert all(a[0] == "" and a[2] == "team-a" and a[3] and a[4] == "get" for a in asked)


@pytest.mark.parametrize("user, matched", [
    pytest.param("system:serviceaccount:runners:gf-operator", False, id="the-operator"),
    pytest.param("system:serviceaccount:runners:gf-alpha-runner", False, id="a-runner"),
    pytest.param("system:serviceaccount:elsewhere:gf-operator", True, id="same-name-other-namespace"),
    pytest.param("system:serviceaccount:team-a:ci", True, id="a-tenants-ci"),
    pytest.param("admin", True, id="a-person"),
])
def test_everyone_but_gigafactory_itself_is_checked(policy, user, matched) -> None:
    verdict, _, _ = admit(policy, obj=job(secret="payments-db"), user=user)
    assert (verdict is not None) is matched
