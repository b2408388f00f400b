"""A real headless Chromium for the dashboard's tests, driven over the Chrome DevTools Protocol.

Debian's `chromium` (`.ci/run` installs it when missing) and a small CDP client on aiohttp's
websocket, which is a dependency already: no Playwright or Selenium, and no browser download. The
browser runs with a private profile, no network but loopback (a proxy that does not exist for every
other host), and reports every JavaScript dialog (`alert()`), console message and CSP violation it
sees, so a test can prove that hostile text ran nothing.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

STARTUP_SECONDS = 30.0


def executable() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One tab, attached through a flat CDP session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session
        self.dialogs: list[str] = []
        self.console: list[str] = []
        self.loaded = asyncio.Event()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(str(params.get("message")))
            asyncio.get_running_loop().create_task(self.send("Page.handleJavaScriptDialog", accept=False))
        elif method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args") or []))
        elif method == "Log.entryAdded":
            entry = params.get("entry") or {}
            self.console.append(f"{entry.get('source')}: {entry.get('text')}")
        elif method == "Runtime.exceptionThrown":
            self.console.append("exception: " + str((params.get("exceptionDetails") or {}).get("text")))

    async def goto(self, url: str) -> None:
        self.loaded.clear()
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {answer['errorText']}")
        await asyncio.wait_for(self.loaded.wait(), timeout=30)

    async def eval(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return (answer.get("result") or {}).get("value")

    async def text(self, selector: str = "main") -> str:
        return str(await self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"))

    async def wait_text(self, needle: str, *, timeout: float, selector: str = "main") -> float:
        """Seconds until `needle` shows in the element's text (checked every 20 ms); raises after `timeout`."""
        start = time.monotonic()
        while True:
            if needle in await self.text(selector):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{needle!r} did not show within {timeout} s; the page says:\n{await self.text(selector)}")
            await asyncio.sleep(0.02)

    async def screenshot(self, path: pathlib.Path) -> None:
        height = int(await self.eval("Math.min(document.documentElement.scrollHeight, 2400)"))
        await self.send("Emulation.setDeviceMetricsOverride", width=1280, height=max(height, 400), deviceScaleFactor=1, mobile=False)
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        await self.send("Emulation.clearDeviceMetricsOverride")


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self.waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(str(data["error"])))
                    else:
                        future.set_result(data.get("result") or {})
            elif data.get("sessionId") in self.pages:
                self.pages[data["sessionId"]].on_event(data.get("method", ""), data.get("params") or {})

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        ident = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, timeout=30)

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        self.pages[page.session] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the block, with a fresh profile; killed and removed afterwards."""
    binary = executable()
    if binary is None:
        raise RuntimeError("no chromium on PATH: `apt-get install chromium` (.ci/run does it)")
    profile = tempfile.mkdtemp(prefix="gf-chromium-")
    args = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-first-run",
            "--no-default-browser-check", "--disable-gpu", "--disable-extensions", "--disable-background-networking",
            "--disable-sync", "--mute-audio", "--window-size=1280,900",
            # Nothing but loopback (which Chromium never proxies): every other host goes to a proxy that is not there.
            "--proxy-server=127.0.0.1:9", "about:blank"]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium's own sandbox refuses to run as root
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = pathlib.Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {process.poll()})")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=64 * 1024 * 1024) as ws:
                browser = Browser(ws)
                try:
                    yield browser
                finally:
                    browser.reader.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
