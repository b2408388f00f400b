"""Per-factory token scoping: the CEL of the chart's ValidatingAdmissionPolicy, evaluated as
rendered (with the `cel` library), on requests a runner of pool `alpha` could make."""

import pathlib
import subprocess

import cel
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELM = ROOT / ".venv" / "bin" / "helm"
pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is installed by `make` (scripts/kube-tools.py)")

VALUES = "pools:\n  - {name: alpha, agents: [script], profiles: {}}\n  - {name: beta, agents: [script], profiles: {}}\n"
ALPHA_SA = "system:serviceaccount:runners:gf-alpha-runner"


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> dict:
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(VALUES)
    out = subprocess.run([str(HELM), "template", "gf", str(ROOT / "charts" / "gigafactory"), "-n", "runners", "-f", str(values)],
                         capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "gf-alpha-runner-scope")


def _admit(policy: dict, request: dict, obj: dict | None, old: dict | None) -> bool | None:
    """None when the policy does not apply; else whether every validation passes."""
    context = {"request": request, "object": obj, "oldObject": old}
    if not all(cel.evaluate(c["expression"], context) for c in policy["spec"]["matchConditions"]):
        return None
    context["variables"] = {v["name"]: cel.evaluate(v["expression"], context) for v in policy["spec"]["variables"]}
    return all(cel.evaluate(v["expression"], context) for v in policy["spec"]["validations"])


def _job(factory: str | None) -> dict:
    status = {"phase": "Running"}
    if factory:
        status["assignment"] = {"factory": factory, "pod": "p"}
    return {"metadata": {"name": "j"}, "status": status}


def _lease(factory: str) -> dict:
    return {"metadata": {"name": "l", "labels": {"gigafactory.dev/factory": factory}}, "spec": {}}


def _request(resource: str, operation: str = "UPDATE", user: str = ALPHA_SA) -> dict:
    return {"operation": operation, "userInfo": {"username": user}, "resource": {"resource": resource}}


@pytest.mark.parametrize(
    "request_, obj, old, admitted",
    [
        pytest.param(_request("agentjobs"), _job("alpha"), _job("alpha"), True, id="status-of-own-job"),
        pytest.param(_request("agentjobs"), _job("beta"), _job("beta"), False, id="status-of-other-factorys-job"),
        pytest.param(_request("agentjobs"), _job("alpha"), _job(None), False, id="status-of-unbound-job"),
        pytest.param(_request("leases"), _lease("alpha"), _lease("alpha"), True, id="renew-own-lease"),
        pytest.param(_request("leases"), _lease("beta"), _lease("beta"), False, id="renew-other-lease"),
        pytest.param(_request("leases"), _lease("alpha"), _lease("beta"), False, id="relabel-other-lease-into-own"),
        pytest.param(_request("leases"), _lease("beta"), _lease("alpha"), False, id="relabel-own-lease-away"),
        pytest.param(_request("leases", "CREATE"), _lease("alpha"), None, True, id="create-own-heartbeat"),
        pytest.param(_request("leases", "CREATE"), _lease("beta"), None, False, id="create-other-factorys-lease"),
        pytest.param(_request("leases", "DELETE"), None, _lease("beta"), False, id="delete-other-lease"),
        pytest.param(_request("leases", "DELETE"), None, _lease("alpha"), True, id="delete-own-heartbeat"),
        pytest.param(_request("leases", user="system:serviceaccount:gigafactory:gf-operator"), _lease("beta"), _lease("beta"),
                     None, id="operator-not-matched"),
    ],
)
def test_runner_writes_are_confined_to_its_factory(policy, request_, obj, old, admitted) -> None:
    assert _admit(policy, request_, obj, old) is admitted
