"""The fleet dashboard of `gigafactory dev`, in a real headless Chromium (tests/browser.py): each page
shows the factories and jobs that exist, and a job created while the Jobs page is open appears and
changes phase there without a reload, within 2 s of the change in the API.

Screenshots of each page are taken on the way; `make screenshots` (GIGAFACTORY_SCREENSHOTS=docs)
writes them into docs/dashboard/ for docs/dashboard.md.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gigafactory import constants, kubeclient
from tests import browser

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ("add-docstrings", "fix-rounding", "write-tests")
# What the issue asks of a live page: a change in the API shows within this long, without a reload.
LIVE_SECONDS = 2.0
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


class Dev:
    def __init__(self, process: subprocess.Popen[str], work: pathlib.Path) -> None:
        self.process, self.work = process, work
        self.lines: list[str] = []
        self.url = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"dashboard at (http://\S+)", line)
            if found:
                self.url = found.group(1)

    @property
    def kubeconfig(self) -> str:
        return str(self.work / "kubeconfig")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("dashboard-dev")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    env.pop("KUBECONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gigafactory.cli.main", "dev", "--work-dir", ".dev", "--port", "0", "--dashboard-port", "0"],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    running = Dev(process, tmp / ".dev")
    try:
        deadline = time.monotonic() + 90
        while not running.url:
            assert process.poll() is None and time.monotonic() < deadline, "".join(running.lines)
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _shots() -> pathlib.Path | None:
    where = os.environ.get("GIGAFACTORY_SCREENSHOTS")
    return (ROOT / "docs" / "dashboard") if where == "docs" else (pathlib.Path(where) if where else None)


async def _phases(client: kubeclient.Client) -> dict[str, str]:
    items, _ = await client.list(kubeclient.AGENTJOBS, namespace="default")
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "Pending") for i in items}


async def _until_examples_end(client: kubeclient.Client) -> dict[str, str]:
    deadline = time.monotonic() + 90
    while True:
        phases = await _phases(client)
        if all(phases.get(name) in TERMINAL for name in EXAMPLES):
            return phases
        assert time.monotonic() < deadline, f"the example jobs did not finish: {phases}"
        await asyncio.sleep(0.1)


async def _until(page: browser.Page, check: Any, *, timeout: float = 10) -> str:
    """The page's text once `check(text)` holds: the dashboard's watch may trail the API a moment, and
    the page follows it live (deadline: a dashboard that never catches up)."""
    deadline = time.monotonic() + timeout
    while True:
        text = await page.text()
        if check(text):
            return text
        assert time.monotonic() < deadline, f"the page never showed it; it says:\n{text}"
        await asyncio.sleep(0.05)


def _row(text: str, first: str) -> list[str]:
    return next((line.split("\t") for line in text.splitlines() if line.startswith(first + "\t")), [])


async def test_each_page_shows_what_exists(dev: Dev, tmp_path: pathlib.Path) -> None:
    async with kubeclient.Client.from_kubeconfig(dev.kubeconfig) as client:
        phases = await _until_examples_end(client)
        # A job no factory fits (the dev factory offers no gpu): it waits, and says why.
        await client.create(kubeclient.AGENTJOBS, {
            "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
            "metadata": {"name": "needs-gpu", "namespace": "default"},
            "spec": {"queue": "ml", "repo": {"url": str(dev.work / "repos" / "sample.git")}, "task": {"prompt": "Train it."},
                     "agent": {"profile": "script"}, "requirements": {"capabilities": ["gpu"]}}})
    shots = _shots() or tmp_path
    async with browser.chromium() as chrome:
        page = await chrome.new_page()

        await page.goto(dev.url)
        await page.wait_text("dev-runner-1", timeout=10)
        fleet = await page.text()
        assert "dev" in fleet and "dev-runner-0" in fleet and "script" in fleet
        await page.screenshot(shots / "fleet.png")

        await page.goto(dev.url + "queues")
        succeeded = sum(1 for name in EXAMPLES if phases[name] == "Succeeded")
        # pending, bound or running, oldest wait, succeeded and failed in the last hour
        expected = ["0", "0", "-", str(succeeded), str(len(EXAMPLES) - succeeded)]
        await _until(page, lambda text: _row(text, "default")[1:6] == expected)
        await page.screenshot(shots / "queues.png")

        await page.goto(dev.url + "jobs")
        # namespace, name, phase
        await _until(page, lambda text: all(_row(text, "default\t" + name)[2:3] == [phases[name]] for name in EXAMPLES))
        await page.screenshot(shots / "jobs.png")

        await page.goto(dev.url + "jobs?q=rounding")
        assert "fix-rounding" in await page.text() and "add-docstrings" not in await page.text()

        await page.goto(dev.url + "jobs/default/fix-rounding")
        job = await page.text()
        assert "Round order totals to two decimals." in job
        assert "agent/fix-rounding" in job and "#1" in job and "FreeCapacity" in job  # branch, attempt, score breakdown
        assert "script agent: task of" in await page.text("pre.log")  # the log tail the runner kept
        await page.screenshot(shots / "job.png")

        # The scheduler's explanation (as `gigafactory explain` prints it) and the queue position, live:
        # the page may open before the operator's first verdict, and shows it when it comes.
        await page.goto(dev.url + "jobs/default/needs-gpu")
        await page.wait_text("lack capability gpu", timeout=30, selector=".explain")
        assert "position 1 of 1 in queue ml" in await page.text(".explain")
        await page.screenshot(shots / "job-waiting.png")
        assert page.dialogs == []
    for name in ("fleet", "queues", "jobs", "job", "job-waiting"):
        assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_new_job_appears_and_changes_phase_without_reload(dev: Dev) -> None:
    seen: list[tuple[float, str]] = []  # (when, phase) as the API says

    def record(event: str, body: dict[str, Any]) -> None:
        if body["metadata"]["name"] == "live-job":
            seen.append((time.monotonic(), (body.get("status") or {}).get("phase", "Pending")))

    async with kubeclient.Client.from_kubeconfig(dev.kubeconfig) as client:
        await _until_examples_end(client)  # the fleet is idle: the new job is the only one to change
        informer = kubeclient.Informer(client, kubeclient.AGENTJOBS, namespace="default", handler=record)
        async with browser.chromium() as chrome, informer.running():
            page = await chrome.new_page()
            await page.goto(dev.url + "jobs?q=live")
            await page.wait_text("live", timeout=10, selector="#live")  # the event stream is open
            await page.eval("window.__stayed = true")
            created = time.monotonic()
            await client.create(kubeclient.AGENTJOBS, {
                "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
                "metadata": {"name": "live-job", "namespace": "default"},
                "spec": {"repo": {"url": str(dev.work / "repos" / "sample.git")}, "task": {"prompt": "Live."},
                         "agent": {"profile": "script"}}})
            assert await page.wait_text("live-job", timeout=LIVE_SECONDS) <= LIVE_SECONDS
            shown: list[tuple[float, str]] = []
            deadline = created + 90
            while not (seen and seen[-1][1] in TERMINAL and shown and shown[-1][1] == seen[-1][1]):
                assert time.monotonic() < deadline, f"API: {seen}; page: {shown}"
                phase = await page.eval("(document.querySelector('table.jobs tbody tr td:nth-child(3)') || {}).innerText || ''")
                if phase and (not shown or shown[-1][1] != phase):
                    shown.append((time.monotonic(), phase))
                await asyncio.sleep(0.02)
            assert await page.eval("window.__stayed === true"), "the page was reloaded"
    final_in_api = next(when for when, phase in seen if phase == seen[-1][1])
    final_on_page = shown[-1][0]
    assert final_on_page - final_in_api <= LIVE_SECONDS, (seen, shown)
    assert len({phase for _, phase in shown}) >= 2, shown  # it changed phase on the page: Pending, then on
