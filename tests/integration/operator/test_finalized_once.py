"""Issue 15: a deleted job is finalized once — one "job finalized", its branch deleted once, and no
false "moved or gone: left alone" for the branch the operator has just deleted."""

import git
import pytest

from gigafactory import kubeclient
from tests.conftest import wait_for
from tests.gitrepos import commit_file, make_remote
from tests.integration.operator import stubs

pytestmark = pytest.mark.xdist_group("operator")


def _exists(api, namespace, name) -> bool:
    try:
        api.job(namespace, name)
        return True
    except kubeclient.NotFound:
        return False


def test_a_deleted_job_is_finalized_once_and_its_deleted_branch_is_not_called_moved(api, kubeconfig, namespace, tmp_path) -> None:
    bare = git.Repo(make_remote(tmp_path))
    work = git.Repo.clone_from(bare.git_dir, tmp_path / "work")
    commit_file(tmp_path / "work", "agent-work")
    work.git.push("origin", "HEAD:refs/heads/agent/done")
    commit = work.head.commit.hexsha
    runner = stubs.one_runner(api, namespace, "once")
    with stubs.operators(kubeconfig, tmp_path, GIGAFACTORY_ALLOW_LOCAL_REPOS="true") as (operator,):
        api.create_job(namespace, "done", repo={"url": f"file://{bare.git_dir}"}, cleanup={"deleteBranch": "Always"})
        runner.claim(wait_for(lambda: next(iter(runner.bindings()), None), timeout=15, message="binding"))
        runner.report(namespace, "done", outcome="Succeeded", message="pushed",
                      result={"branch": "agent/done", "commit": commit, "summary": "done"})
        wait_for(lambda: stubs.phase(api, namespace, "done") == "Succeeded", timeout=10, message="succeeded")
        api.call("delete", kubeclient.AGENTJOBS, "done", namespace=namespace)
        wait_for(lambda: not _exists(api, namespace, "done"), timeout=15, message="job gone")
        # This job's lines only: the operator watches every namespace, and other tests' jobs go too.
        mine = f'"job": "{namespace}/done"'
        def logs() -> str:
            return "\n".join(line for line in operator.logs().splitlines() if mine in line)
        wait_for(lambda: "job finalized" in logs(), timeout=5, message="finalized logged")
        # (a second finalization is kept from starting by the job's record: tests/unit/binding/test_controllers.py)
        log = logs()
    assert "agent/done" not in {h.name for h in bare.heads}
    assert log.count("job finalized") == 1, log[-4000:]
    assert log.count("deleted branch agent/done") == 1, log[-4000:]
    assert "left alone" not in log, log[-4000:]
    events = api.call("list", kubeclient.EVENTS, namespace=namespace)[0]
    assert [e["reason"] for e in events if e.get("reason", "").startswith("Branch")] == ["BranchDeleted"]
