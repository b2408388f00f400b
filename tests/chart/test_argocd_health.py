"""The Argo CD health checks, run as Argo CD runs them: Lua with the object in the global `obj`."""

import pathlib
import re

import lupa
import pytest
import yaml

from gigafactory.models import agentjobs, factories

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "charts" / "gigafactory" / "argocd"
ARGOCD_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(script: str, obj: dict) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    # Argo CD's sandbox offers no os, io or module loading: a script that needs them fails there.
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        lua.globals()[name] = None
    lua.globals().obj = to_lua(obj)
    result = lua.execute((SCRIPTS / script).read_text())
    assert result["status"] in ARGOCD_STATUSES and result["message"]
    return result["status"], result["message"]


def job(phase: str | None = None, **extra) -> dict:
    obj = {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob", "metadata": {"name": "j"}, "spec": {"suspend": False}}
    if phase is not None:
        obj["status"] = {"phase": phase, **extra}
    return obj


AGENTJOB_CASES = [
    pytest.param(job(), "Progressing", "waiting to be scheduled", id="no-status"),
    pytest.param(job("Pending"), "Progressing", "waiting to be scheduled", id="pending"),
    pytest.param(job("Pending", conditions=[{"type": "Scheduled", "status": "False", "message": "0/3 factory pods fit: 3 full"}]),
                 "Progressing", "0/3 factory pods fit", id="pending-explained"),
    pytest.param(job("Bound"), "Progressing", "bound", id="bound"),
    pytest.param(job("Running"), "Progressing", "running", id="running"),
    pytest.param(job("Succeeded", result={"branch": "agent/j"}), "Healthy", "agent/j", id="succeeded"),
    pytest.param(job("Failed", conditions=[{"type": "Failed", "status": "True", "message": "attempt 3 ended AgentFailed"}]),
                 "Degraded", "AgentFailed", id="failed"),
    pytest.param(job("Cancelled"), "Suspended", "cancelled", id="cancelled"),
    pytest.param({**job("Pending"), "spec": {"suspend": True}}, "Suspended", "suspend", id="suspended"),
    pytest.param({**job("Succeeded"), "spec": {"suspend": True}}, "Healthy", "pushed", id="suspended-after-success"),
]


@pytest.mark.parametrize("obj, status, fragment", AGENTJOB_CASES)
def test_agentjob_health(obj, status, fragment) -> None:
    got_status, message = health("agentjob.lua", obj)
    assert got_status == status and fragment in message


FACTORY_CASES = [
    pytest.param(None, "Progressing", id="no-status"),
    pytest.param({"phase": "Ready", "readyPods": 3}, "Healthy", id="ready"),
    pytest.param({"phase": "Draining", "readyPods": 3}, "Suspended", id="draining"),
    pytest.param({"phase": "Offline", "readyPods": 0}, "Degraded", id="offline"),
]


@pytest.mark.parametrize("status_, expected", FACTORY_CASES)
def test_factory_health(status_, expected) -> None:
    obj = {"kind": "Factory", "metadata": {"name": "f"}, "spec": {"agents": ["script"]}}
    if status_ is not None:
        obj["status"] = status_
    assert health("factory.lua", obj)[0] == expected


@pytest.mark.parametrize(
    "enum, cases",
    [pytest.param(agentjobs.Phase, AGENTJOB_CASES, id="agentjob"), pytest.param(factories.FactoryPhase, FACTORY_CASES, id="factory")],
)
def test_every_phase_of_the_api_has_a_case(enum, cases) -> None:
    """A phase added to the models must get its health decided here too."""
    ids = {case.id for case in cases}
    assert {phase.value.lower() for phase in enum} <= ids


def test_docs_show_the_scripts_verbatim() -> None:
    text = (ROOT / "docs" / "argocd.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "argocd-cm" in b)
    data = yaml.safe_load(block)["data"]
    assert data["resource.customizations.health.gigafactory.dev_AgentJob"] == (SCRIPTS / "agentjob.lua").read_text()
    assert data["resource.customizations.health.gigafactory.dev_Factory"] == (SCRIPTS / "factory.lua").read_text()
