"""The live table of `gigafactory dev`: every phase a job went through, and why one failed or waits."""
import io

import pytest
import rich.console

from gigafactory import devmode


def _render(board: devmode.Board, jobs: dict) -> str:
    console = rich.console.Console(file=io.StringIO(), width=200, color_system=None)
    console.print(board.table(jobs))
    return console.file.getvalue()


def _job(name: str, **status) -> dict:
    return {"metadata": {"namespace": "default", "name": name}, "status": status}


def test_the_table_keeps_phases_that_passed_between_two_refreshes() -> None:
    board = devmode.Board()
    for phase in (None, "Bound", "Running", "Running", "Succeeded"):
        board.record("MODIFIED", _job("a", **({"phase": phase} if phase else {})))
    out = _render(board, {("default", "a"): _job("a", phase="Succeeded", result={"branch": "agent/a"})})
    assert "Pending → Bound → Running → Succeeded" in out and "agent/a" in out


def test_a_job_deleted_and_made_again_starts_a_new_history() -> None:
    board = devmode.Board()
    board.record("ADDED", _job("a", phase="Succeeded"))
    board.record("DELETED", _job("a", phase="Succeeded"))
    board.record("ADDED", _job("a"))
    assert board.seen[("default", "a")] == ["Pending"]


@pytest.mark.parametrize("status, shown", [
    pytest.param({"phase": "Failed", "attempts": [{"outcome": "PushFailed", "reason": "BranchExists",
                                                   "message": "branch agent/a already exists on the remote"}]},
                 "PushFailed BranchExists branch agent/a already exists on the remote", id="failed"),
    pytest.param({"phase": "Pending", "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable",
                                                      "message": "0/2 factory pods fit: 2 full"}]},
                 "Unschedulable: 0/2 factory pods fit: 2 full", id="waiting"),
    pytest.param({"phase": "Running", "attempts": [{"outcome": "InfraError", "reason": "ClaimTimeout", "message": ""}]},
                 "InfraError ClaimTimeout", id="retrying"),
])
def test_the_reason_column_says_why(status, shown) -> None:
    assert shown in _render(devmode.Board(), {("default", "a"): _job("a", **status)})


def test_a_succeeded_job_has_no_reason() -> None:
    out = _render(devmode.Board(), {("default", "a"): _job("a", phase="Succeeded", attempts=[
        {"outcome": "InfraError", "reason": "ClaimTimeout"}, {"outcome": "Succeeded", "reason": "Succeeded"}])})
    assert "ClaimTimeout" not in out
