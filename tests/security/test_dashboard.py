"""The dashboard shows hostile text as text: a job's prompt, an attempt's message and a log line that
hold `<script>alert(1)</script>`, an `<img onerror>` or terminal escapes run nothing in a real
headless Chromium; a web page cannot reach the dashboard through DNS rebinding (a foreign Host is
refused); every answer carries the Content-Security-Policy; a log reference to another pod's log is
not followed. (On a main without the dashboard, all of these fail: there is no dashboard to serve.)

The job's status is written as a runner and the operator would write it (a Failed attempt with a
log reference to a log ConfigMap of its pod, labelled with the job's uid), on the embedded server
and on kube-apiserver alike; no operator runs here.
"""
from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gigafactory import constants, kubeclient
from gigafactory.dashboard import serving
from tests import browser

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
PROMPT = f"Fix it. {SCRIPT}<img src=x onerror=alert(2)> \x1b]52;c;ZXZpbA==\x07 \u202eevil"
LOG = f"step 1\n{SCRIPT}\n<img src=x onerror=alert(3)>\n\x1b[2Jcleared?\n"
POD = "runner-p1"


@pytest.fixture(scope="module", autouse=True)
def _crds(install_crds: Any) -> None:
    install_crds(ROOT / "crds")


@pytest.fixture()
async def dashboard(kubeconfig: str) -> AsyncIterator[serving.Dashboard]:
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
        async with serving.serving(client, serving.Settings(port=0)) as board:
            yield board


def job_log_ref(namespace: str, log_pod: str = POD) -> str:
    return f"configmap/{namespace}/{constants.LOG_PREFIX}{log_pod}-1"


async def _hostile_job(kubeconfig: str, namespace: str, *, log_pod: str = POD, name: str = "hostile") -> dict[str, Any]:
    """A Failed job whose prompt, attempt message and log hold markup, written as the runner and operator write them."""
    async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
        job = await client.create(kubeclient.AGENTJOBS, {
            "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"repo": {"url": "https://git.example.com/acme/api.git"}, "task": {"prompt": PROMPT},
                     "agent": {"profile": "script"}, "suspend": True}})
        log_name = f"{constants.LOG_PREFIX}{log_pod}-1"
        await client.create(kubeclient.CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": log_name, "namespace": namespace, "labels": {
                constants.LABEL_ROLE: "log", constants.LABEL_POD: log_pod, constants.LABEL_JOB_UID: job["metadata"]["uid"]}},
            "data": {"output": LOG}})
        status = {"phase": "Failed", "reason": "AttemptsExhausted", "attempt": 1, "attempts": [{
            "attempt": 1, "factory": "pool", "pod": POD, "outcome": "AgentFailed", "reason": "ExitCode",
            "message": f"agent said {SCRIPT}", "exitCode": 1, "logRef": f"configmap/{namespace}/{log_name}",
            "startedAt": "2026-11-30T05:00:00Z", "finishedAt": "2026-11-30T05:01:00Z"}]}
        return await client.patch(kubeclient.AGENTJOBS, name, {"status": status}, namespace=namespace, subresource="status")


async def _seen(dashboard: serving.Dashboard, job: dict[str, Any]) -> None:
    """Until the dashboard's informer holds the job as written (its watch may lag on a busy machine)."""
    key, version = (job["metadata"]["namespace"], job["metadata"]["name"]), job["metadata"]["resourceVersion"]
    cache = dashboard.watcher.jobs.cache
    await asyncio.wait_for(dashboard.watcher.wait_for(
        lambda: (cache.get(key) or {}).get("metadata", {}).get("resourceVersion") == version), timeout=30)


async def test_hostile_prompt_message_and_log_show_as_text_and_run_nothing(
        kubeconfig: str, namespace: str, dashboard: serving.Dashboard) -> None:
    await _seen(dashboard, await _hostile_job(kubeconfig, namespace))
    async with browser.chromium() as chrome:
        page = await chrome.new_page()
        await page.goto(f"{dashboard.url}jobs/{namespace}/hostile")
        await page.wait_text("step 1", timeout=10)  # the log tail is there
        prompt = await page.text("pre.prompt")
        log = await page.text("pre.log")
        assert SCRIPT in prompt and "<img src=x onerror=alert(2)>" in prompt
        assert "\\x1b]52;c;ZXZpbA==\\x07" in prompt and "\\u202eevil" in prompt  # escapes shown, not obeyed
        assert SCRIPT in log and "<img src=x onerror=alert(3)>" in log and "\\x1b[2Jcleared?" in log
        assert f"agent said {SCRIPT}" in await page.text(".timeline")
        # Nothing became an element: the only script is the dashboard's own, in <head>; no image at all.
        assert await page.eval("document.querySelectorAll('main script, main img, main iframe').length") == 0
        assert await page.eval("Array.from(document.scripts).map(s => new URL(s.src).pathname)") == ["/static/dashboard.js"]
        # The live path: a change swaps <main> in from the server while the page is open; still text.
        async with kubeclient.Client.from_kubeconfig(kubeconfig) as client:
            await client.patch(kubeclient.AGENTJOBS, "hostile", {"status": {"attempts": [{
                "attempt": 1, "factory": "pool", "pod": POD, "outcome": "AgentFailed", "reason": "ExitCode",
                "message": f"live {SCRIPT}<svg onload=alert(4)>", "exitCode": 1, "logRef": job_log_ref(namespace),
                "startedAt": "2026-11-30T05:00:00Z", "finishedAt": "2026-11-30T05:01:00Z"}]}},
                namespace=namespace, subresource="status")
        await page.wait_text(f"live {SCRIPT}<svg onload=alert(4)>", timeout=10, selector=".timeline")
        assert await page.eval("document.querySelectorAll('main script, main img, main iframe, main svg[onload]').length") == 0
        assert int(await page.eval("document.body.dataset.refreshed || '0'")) >= 1  # it came by the live refresh
        assert page.dialogs == []
        assert not [line for line in page.console if "exception" in line], page.console


async def test_a_log_of_another_pod_is_not_shown(kubeconfig: str, namespace: str, dashboard: serving.Dashboard) -> None:
    """The attempt ran on runner-p1, but its logRef names a log that runner-p2 made (a forged reference)."""
    await _seen(dashboard, await _hostile_job(kubeconfig, namespace, log_pod="runner-p2", name="forged"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{dashboard.url}jobs/{namespace}/forged") as response:
            text = await response.text()
    assert response.status == 200
    assert "is not its pod" in text and "step 1" not in text


async def test_every_answer_has_the_csp_and_a_foreign_host_is_refused(dashboard: serving.Dashboard) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("", "queues", "jobs", "jobs/x/y", "static/dashboard.js", "nope"):
            async with session.get(dashboard.url + path) as response:
                assert response.headers["Content-Security-Policy"] == serving.CSP, path
                assert response.headers["X-Content-Type-Options"] == "nosniff"
        # DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1.
        async with session.get(dashboard.url, headers={"Host": "attacker.example"}) as response:
            assert response.status == 421
            assert "Gigafactory" not in await response.text()
        async with session.get(dashboard.url, headers={"Host": "localhost:9999"}) as response:
            assert response.status == 200  # kubectl port-forward from any local port
        async with session.post(dashboard.url + "jobs", data="x") as response:
            assert response.status == 405  # read-only
