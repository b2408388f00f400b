"""The dashboard benchmark's smoke run: it runs and prints its figures (the 10,000-job figures, and
their bounds, live in docs/performance.md; here only that it works, on a few hundred jobs)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("benchmarks")


@pytest.mark.timeout(300)
def test_the_dashboard_benchmark_runs_and_prints_its_figures(tmp_path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dashboard.py"), "--jobs", "300", "--json", str(out)],
                            capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["jobs"] == 300 and figures["rss_mb"] > 0
    assert set(figures["pages"]) >= {"jobs (first page)", "queues", "fleet", "job (pending, queue position)"}
    assert "| jobs (first page) |" in result.stdout
    # Idle, with no browser open: not one request beyond the watches it holds open.
    assert figures["idle_requests_5s"] == {}, figures["idle_requests_5s"]
