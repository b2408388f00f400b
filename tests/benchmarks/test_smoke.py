"""The benchmark suite's smoke run: it runs and prints every figure (no timing is asserted here;
the figures live in docs/performance.md)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("benchmarks")


def test_the_quick_suite_runs_every_scenario_and_prints_its_figures(tmp_path, cluster_mode) -> None:
    if cluster_mode == "real":
        pytest.skip("the smoke run uses the embedded API server")
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    expected = {
        "raw": "agentjob_pairs_per_second", "bind": "binds_per_second", "naive": "binds_per_second", "latency": "p99_ms",
        "cycle": "roomy_1000x100_ms", "idle": "other_requests", "memory": "operator_rss_mb", "e2e": "jobs_per_second",
    }
    for scenario, figure in expected.items():
        assert isinstance(figures[scenario].get(figure), (int, float)), (scenario, figures[scenario])
        assert f"| {scenario} {figure}" in result.stdout  # and the table shows it
    assert "bind_rate_over_naive_kopf" in figures["derived"]
