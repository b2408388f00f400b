"""The small chaos run of the normal test command: real operators (leader-elected) and runners,
random SIGKILLs of runners and of the leader, pods replaced, API faults; then every invariant the
harness checks must hold (docs/reliability.md has the full run's table)."""

import asyncio

import pytest

from tests.chaos import harness

pytestmark = pytest.mark.xdist_group("chaos")


def test_invariants_1_2_3_5_10_hold_under_kills_and_api_faults(tmp_path, cluster_mode) -> None:
    if cluster_mode == "real":
        pytest.skip("the chaos harness runs its own embedded API server (it injects faults and kills processes)")
    config = harness.Config(work_dir=tmp_path, jobs=40, factories=2, runners_per_factory=2, slots=2, operators=2,
                            fault_rate=0.03, interval=1.0, chaos_seconds=25.0, timeout=150.0, seed=11)
    report = asyncio.run(harness.run(config))
    print(report.table())
    assert sum(n for action, n in report.actions.items() if action != "quiet") > 0, "no chaos happened: the run proves nothing"
    assert sum(report.phases.values()) == 40
    assert report.violations == [], report.table()
