"""`gigafactory retry`: a Failed or Cancelled job runs again with a fresh attempt budget."""

import pytest
from typer.testing import CliRunner

from gigafactory.cli import main
from tests.conftest import wait_for
from tests.integration.operator import stubs

pytestmark = pytest.mark.xdist_group("operator")


def gf(kubeconfig, *args):
    result = CliRunner().invoke(main.app, [*args, "--kubeconfig", kubeconfig])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def in_phase(api, namespace, name, phase):
    job = api.job(namespace, name)
    return job if (job.get("status") or {}).get("phase") == phase else None


def run_attempt(api, runner, namespace, name, outcome, **extra):
    lease = wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding")
    runner.claim(lease)
    runner.report(namespace, name, outcome=outcome, **extra)


def test_a_failed_job_retried_runs_again_with_a_fresh_budget_and_keeps_its_history(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    runner = stubs.one_runner(api, namespace, "retry")
    with stubs.operators(kubeconfig, tmp_path):
        api.create_job(namespace, "flaky", retry={"maxAttempts": 1})
        run_attempt(api, runner, namespace, "flaky", "AgentFailed", exitCode=1, message="it broke")
        wait_for(lambda: api.job(namespace, "flaky")["status"].get("phase") == "Failed", timeout=10, message="failed")

        code, out = gf(kubeconfig, "retry", "flaky", "-n", namespace)
        assert code == 0 and "retry requested" in out
        # With maxAttempts 1 and one counted failure behind it, only a fresh budget lets it bind again.
        run_attempt(api, runner, namespace, "flaky", "Succeeded", result={"branch": "agent/flaky", "commit": "c" * 40})
        status = wait_for(lambda: in_phase(api, namespace, "flaky", "Succeeded"), timeout=10, message="succeeded after the retry")["status"]
        assert [(a["attempt"], a["outcome"]) for a in status["attempts"]] == [(1, "AgentFailed"), (2, "Succeeded")]
        assert status["countFrom"] == 2 and status["retryRequest"]

        code, out = gf(kubeconfig, "retry", "flaky", "-n", namespace)
        assert code == 1 and out.strip().count("\n") == 0
        assert "is Succeeded: only a Failed or Cancelled job can be retried" in out


def test_a_cancelled_job_retried_is_uncancelled_and_runs(kubeconfig, namespace, tmp_path) -> None:
    api = stubs.Api(kubeconfig)
    with stubs.operators(kubeconfig, tmp_path):
        api.create_job(namespace, "stopped", targetFactory="nowhere")
        gf(kubeconfig, "cancel", "stopped", "-n", namespace)
        wait_for(lambda: in_phase(api, namespace, "stopped", "Cancelled"), timeout=10, message="cancelled")
        code, _ = gf(kubeconfig, "retry", "stopped", "-n", namespace)
        assert code == 0
        job = wait_for(lambda: in_phase(api, namespace, "stopped", "Pending"), timeout=10, message="pending again")
        assert job["spec"]["cancel"] is False
        # It waits like any job for its (missing) factory, and says so.
        wait_for(lambda: "Unschedulable" in str(api.job(namespace, "stopped")["status"].get("conditions")), timeout=10,
                 message="explained again")


def test_invariant_10_requests_made_while_no_operator_ran_are_acted_on_when_one_starts(kubeconfig, namespace, tmp_path) -> None:
    """Cancels and deadlines live in timers and events: a starting operator must look at every job
    once, or a job cancelled during an outage would wait forever."""
    api = stubs.Api(kubeconfig)
    api.create_job(namespace, "cancelled-meanwhile", targetFactory="nowhere", cancel=True)
    with stubs.operators(kubeconfig, tmp_path):
        wait_for(lambda: in_phase(api, namespace, "cancelled-meanwhile", "Cancelled"), timeout=15,
                 message="a cancel made during the outage is honoured")
