"""The benchmark suite's smoke runs: it runs and prints every figure (no timing is asserted here;
the figures live in docs/performance.md)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("benchmarks")


@pytest.mark.timeout(400)  # the suite's own bound is 300 s; pytest's default (120 s) is for single tests
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
        "sandbox": "overhead_ms",
    }
    for scenario, figure in expected.items():
        assert isinstance(figures[scenario].get(figure), (int, float)), (scenario, figures[scenario])
        assert f"| {scenario} {figure}" in result.stdout  # and the table shows it
    assert "bind_rate_over_naive_kopf" in figures["derived"]


@pytest.mark.timeout(180)
def test_the_quick_suite_runs_against_a_kubeconfig_and_leaves_nothing_behind(tmp_path, kubeconfig, cluster_mode) -> None:
    """--kubeconfig, as on a real cluster (in the real pass: kube-apiserver): the scenarios that start
    an operator (ours, the naive kopf peer) and the idle one (its counting proxy), then nothing of
    the suite's is left: no namespace, no Factory. About 40 s on kube-apiserver."""
    from gigafactory import kubeclient  # noqa: PLC0415

    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--only", "bind,naive,idle",
                             "--kubeconfig", kubeconfig, "--json", str(out)], capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["bind"]["binds_per_second"] > 0 and figures["naive"]["binds_per_second"] > 0, figures
    assert isinstance(figures["idle"]["other_requests"], int), figures["idle"]
    assert "proxy" in figures["idle"]["counted_by"], figures["idle"]

    import asyncio

    async def left() -> list[str]:
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            namespaces, _ = await client.list(kubeclient.NAMESPACES, label_selector="bench.gigafactory.dev/run")
            factories, _ = await client.list(kubeclient.FACTORIES, label_selector="bench.gigafactory.dev/run")
            return [o["metadata"]["name"] for o in namespaces + factories]

    assert asyncio.run(left()) == []


def test_the_gateway_benchmark_runs_and_counts_what_it_forwarded() -> None:
    """benchmarks/gateway.py --quick: the model gateway's added latency per request (figure in
    docs/performance.md; no timing asserted on a shared machine), and every request's usage counted."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gateway.py"), "--quick"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "operator")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert float(figures["added_p50_ms"]) == float(figures["added_p50_ms"])  # a number
    assert int(figures["counted_tokens"]) == (int(figures["requests"]) + 20) * 1220  # and 20 to warm up
