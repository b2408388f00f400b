"""The Argo CD health checks, run as Argo CD runs them: Lua with the object in the global `obj`."""

import pathlib

import lupa
import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "charts" / "gigafactory" / "argocd"


def health(script: str, obj: dict) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute((SCRIPTS / script).read_text())
    return result["status"], result["message"]


def job(phase: str | None = None, **extra) -> dict:
    obj = {"apiVersion": "gigafactory.dev/v1alpha1", "kind": "AgentJob", "metadata": {"name": "j"}, "spec": {"suspend": False}}
    if phase is not None:
        obj["status"] = {"phase": phase, **extra}
    return obj


@pytest.mark.parametrize(
    "obj, status, fragment",
    [
        pytest.param(job(), "Progressing", "waiting to be scheduled", id="no-status"),
        pytest.param(job("Pending", conditions=[{"type": "Scheduled", "status": "False", "message": "0/3 factory pods fit: 3 full"}]),
                     "Progressing", "0/3 factory pods fit", id="pending-explained"),
        pytest.param(job("Bound"), "Progressing", "bound", id="bound"),
        pytest.param(job("Running"), "Progressing", "running", id="running"),
        pytest.param(job("Succeeded", result={"branch": "agent/j"}), "Healthy", "agent/j", id="succeeded"),
        pytest.param(job("Failed", conditions=[{"type": "Failed", "status": "True", "message": "attempt 3 ended AgentFailed"}]),
                     "Degraded", "AgentFailed", id="failed"),
        pytest.param(job("Cancelled"), "Suspended", "cancelled", id="cancelled"),
        pytest.param({**job("Pending"), "spec": {"suspend": True}}, "Suspended", "suspend", id="suspended"),
    ],
)
def test_agentjob_health(obj, status, fragment) -> None:
    got_status, message = health("agentjob.lua", obj)
    assert got_status == status and fragment in message


@pytest.mark.parametrize(
    "status_, expected",
    [
        pytest.param(None, "Progressing", id="no-status"),
        pytest.param({"phase": "Ready", "readyPods": 3}, "Healthy", id="ready"),
        pytest.param({"phase": "Draining", "readyPods": 3}, "Suspended", id="draining"),
        pytest.param({"phase": "Offline", "readyPods": 0}, "Degraded", id="offline"),
    ],
)
def test_factory_health(status_, expected) -> None:
    obj = {"kind": "Factory", "metadata": {"name": "f"}, "spec": {"agents": ["script"]}}
    if status_ is not None:
        obj["status"] = status_
    assert health("factory.lua", obj)[0] == expected
