"""The small chaos run of the normal test command: real operators (leader-elected) and runners,
random SIGKILLs of runners and of the leader, pods replaced; then every invariant the harness checks
must hold (docs/reliability.md has the full run's table).

On the embedded server (the first pass) the harness starts a server of its own and injects API
faults too; on a real kube-apiserver (the second pass) it runs against the session's server, with
kills only (a real server injects no faults), in namespaces and factories of its own."""

import asyncio
import pathlib

import pytest

from tests.chaos import harness

pytestmark = pytest.mark.xdist_group("chaos")
ROOT = pathlib.Path(__file__).resolve().parents[2]


# Above the harness's own bound (timeout=150 s for the jobs, then its settle and checks), not below it.
@pytest.mark.timeout(360)
def test_invariants_1_2_3_5_10_hold_under_kills_and_api_faults(tmp_path, cluster_mode, kubeconfig, request) -> None:
    if cluster_mode == "real":
        request.getfixturevalue("install_crds")(ROOT / "crds")
        # Small: a real server takes ~100-200 job writes/s, and the real pass must stay quick.
        config = harness.Config(work_dir=tmp_path, kubeconfig=pathlib.Path(kubeconfig), jobs=24, factories=2,
                                runners_per_factory=2, slots=2, operators=2, fault_rate=0.0, interval=1.0,
                                chaos_seconds=20.0, timeout=150.0, seed=11)
    else:
        config = harness.Config(work_dir=tmp_path, jobs=40, factories=2, runners_per_factory=2, slots=2, operators=2,
                                fault_rate=0.03, interval=1.0, chaos_seconds=25.0, timeout=150.0, seed=11)
    report = asyncio.run(harness.run(config))
    print(report.table())
    kills = sum(n for action, n in report.actions.items() if action != "quiet")
    assert kills > 0, "no chaos happened: the run proves nothing"
    assert sum(report.phases.values()) == config.jobs
    assert report.violations == [], report.table()
