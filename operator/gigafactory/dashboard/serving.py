"""The dashboard's HTTP server: read-only pages, live updates by Server-Sent Events.

Only GET (and HEAD). Every response carries a strict Content-Security-Policy: the dashboard's own
script and stylesheet, nothing inline, nothing from elsewhere, no framing. A request whose `Host`
is not one the dashboard answers to (loopback names, the address it listens on, `allowed_hosts`) is
refused, so a web page cannot reach it through DNS rebinding. Live updates: each page holds one
event stream (`/events`) that says "changed" when what the page shows changed (coalesced); the page
then fetches its own `<main>` again. No polling anywhere.
"""

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import importlib.resources
import ipaddress
import logging
import signal
from collections.abc import AsyncIterator, Callable, Collection, Hashable
from typing import Any

from aiohttp import web

from gigafactory import config, consent, kubeclient
from gigafactory.dashboard import pages, views, watching
from gigafactory.models import objects

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 17081
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# A page asks for its <main> alone with this header (the event stream's refresh).
FRAGMENT_HEADER = "Gigafactory-Fragment"
# Event streams at once: each is one open response; more are refused (503), not queued.
MAX_STREAMS = 100
# A burst of changes within this long is one refresh.
COALESCE_SECONDS = 0.2
# A comment line this often, so that a stream to a closed tab ends (the write fails) and proxies keep it open.
KEEPALIVE_SECONDS = 15.0
LOG_LINES = 200
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}



@dataclasses.dataclass(frozen=True)
class Settings:
    address: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    # Host names (without port) a request may name besides loopback and the listening address.
    allowed_hosts: frozenset[str] = frozenset()
    # Where the runners' heartbeat Leases are (None: every namespace).
    runner_namespace: str | None = None
    aging_seconds_per_point: float = config.OperatorSettings.model_fields["aging_seconds_per_point"].default


def host_allowed(host_header: str | None, settings: Settings) -> bool:
    """Whether a request's Host names this dashboard: a loopback name or address, the address it
    listens on, or an allowed host. The port is not compared (kubectl port-forward may map any)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in {"localhost", settings.address.lower()} or host in settings.allowed_hosts:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    # /healthz says nothing but ok: the kubelet's probes name the pod's IP, whatever the host check allows.
    if request.path != "/healthz" and not host_allowed(request.headers.get("Host"), request.app[SETTINGS]):
        response: web.StreamResponse = web.Response(status=421, text="misdirected request: this dashboard does not serve that host\n")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405...: as a response, so that it gets the headers too
            response = web.Response(status=exc.status, reason=exc.reason, text=exc.text,
                                    headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, event streams included, as it is sent."""
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")


class LogCache:
    """Log ConfigMaps read so far: a runner writes each once and never updates it, so one GET each."""

    def __init__(self, client: kubeclient.Client, size: int = 64) -> None:
        self.client, self.size = client, size
        self.entries: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        key = (namespace, name)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        body = await self.client.get(kubeclient.CONFIGMAPS, name, namespace=namespace)
        self.entries[key] = body
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return body


WATCHER = web.AppKey("watcher", watching.Watcher)
SETTINGS = web.AppKey("settings", Settings)
LOGS = web.AppKey("logs", LogCache)
STREAMS = web.AppKey("streams", list)  # one entry per open event stream


async def _log_tail(request: web.Request, job: dict[str, Any], detail: views.JobDetail) -> tuple[str | None, str]:
    """(the log tail, a note): shown only when the log's name and labels bind it to the attempt's pod
    and this job, as `gigafactory logs` checks (a runner wrote the reference)."""
    if detail.log_ref is None:
        return None, "No attempt has kept a log yet: an attempt's output is kept when it ends."
    ref, pod, attempt = detail.log_ref
    parsed = consent.parse_log_ref(ref, pod=pod)
    if parsed is None:
        return None, f"Attempt {attempt} names a log that is not its pod's ({ref[:200]!r}): not shown."
    try:
        cm = await request.app[LOGS].get(*parsed)
    except kubeclient.ApiError as exc:
        return None, f"Attempt {attempt}: its log {parsed[0]}/{parsed[1]} cannot be read ({exc.status} {exc.reason})."
    if not consent.log_belongs(cm, pod=pod, job_uid=objects.uid(job)):
        return None, f"Attempt {attempt}: log {parsed[0]}/{parsed[1]} is not labelled as this job's on pod {pod[:100]!r}: not shown."
    output = objects.text(objects.data(cm), "output")
    lines = output.splitlines()
    return "\n".join(lines[-LOG_LINES:]), f"Attempt {attempt}, the last {min(len(lines), LOG_LINES)} lines (of {len(lines)})."


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


def _page(request: web.Request, *, title: str, page: str, body: pages.Markup, topics: Collection[str],
          status: int = 200) -> web.Response:
    if request.headers.get(FRAGMENT_HEADER):
        text = str(body)
    else:
        text = str(pages.document(title=title, page=page, body=body, topics=topics))
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def fleet_page(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    data = views.fleet(watcher.factories.cache.values(), watcher.heartbeats.cache.values(), watcher.jobs.cache.values(), now=_now())
    return _page(request, title="Fleet", page="Fleet", body=pages.fleet(data), topics=watching.TOPICS)


async def queues_page(request: web.Request) -> web.Response:
    rows = views.queue_rows(request.app[WATCHER].summaries.values(), now=_now())
    return _page(request, title="Queues", page="Queues", body=pages.queues(rows), topics=[watching.JOBS])


async def jobs_page(request: web.Request) -> web.Response:
    filters = views.Filters.parse(request.query)
    data = views.job_list(request.app[WATCHER].ordered_jobs(), filters, now=_now())
    return _page(request, title="Jobs", page="Jobs", body=pages.jobs(data, filters), topics=[watching.JOBS])


async def job_page(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    watcher = request.app[WATCHER]
    job = watcher.jobs.cache.get((namespace, name))
    topics = [f"job:{namespace}/{name}"]
    if job is None:
        return _page(request, title="Not found", page="Jobs", status=404, topics=topics,
                     body=pages.not_found(f"There is no job {namespace}/{name} (it may have been deleted)."))
    detail = views.job_detail(job, watcher.jobs.cache.values(), now=_now(),
                              aging_seconds_per_point=request.app[SETTINGS].aging_seconds_per_point)
    log, note = await _log_tail(request, job, detail)
    return _page(request, title=f"{namespace}/{name}", page="Jobs", body=pages.job(detail, log=log, log_note=note), topics=topics)


def _state(watcher: watching.Watcher, topics: list[str]) -> Callable[[], Hashable]:
    """What a page's stream compares: the version of its topics, or the one job's resourceVersion."""
    jobs = [t.removeprefix("job:") for t in topics if t.startswith("job:")]
    plain = [t for t in topics if t in watching.TOPICS]

    def state() -> Hashable:
        versions = []
        for ref in jobs:
            namespace, _, name = ref.partition("/")
            versions.append(objects.meta(watcher.jobs.cache.get((namespace, name)) or {}).get("resourceVersion"))
        return (watcher.version(plain) if plain else 0, tuple(versions))
    return state


async def events(request: web.Request) -> web.StreamResponse:
    """`change` whenever what the page shows changed; the page then reloads its `<main>`."""
    if len(request.app[STREAMS]) >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(text="too many open dashboards\n")
    watcher = request.app[WATCHER]
    topics = [t for t in request.query.get("topics", "").split(",")[:8] if t][:8]
    state = _state(watcher, topics)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    request.app[STREAMS].append(response)
    try:
        await response.prepare(request)
        await response.write(b"retry: 1000\nevent: ready\ndata: \n\n")
        seen = state()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watcher.wait_for(lambda: state() != seen), timeout=KEEPALIVE_SECONDS)
            if state() == seen:
                await response.write(b": keepalive\n\n")
                continue
            await asyncio.sleep(COALESCE_SECONDS)  # let a burst land: one refresh for all of it
            seen = state()
            await response.write(b"event: change\ndata: \n\n")
    except ConnectionResetError:  # the tab was closed
        pass
    finally:
        request.app[STREAMS].remove(response)
    return response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    data = importlib.resources.files("gigafactory.dashboard").joinpath("static", name).read_bytes()
    return web.Response(body=data, content_type=STATIC[name], headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    ok = request.app[WATCHER].synced
    return web.Response(status=200 if ok else 503, text="ok\n" if ok else "syncing\n")


def make_app(watcher: watching.Watcher, settings: Settings) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=1024)
    app[WATCHER] = watcher
    app[SETTINGS] = settings
    app[LOGS] = LogCache(watcher.client)
    app[STREAMS] = []
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", fleet_page)
    app.router.add_get("/queues", queues_page)
    app.router.add_get("/jobs", jobs_page)
    app.router.add_get("/jobs/{namespace}/{name}", job_page)
    app.router.add_get("/events", events)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)
    return app


@dataclasses.dataclass
class Dashboard:
    """A running dashboard: `url` to open."""

    url: str
    watcher: watching.Watcher


@contextlib.asynccontextmanager
async def serving(client: kubeclient.Client, settings: Settings) -> AsyncIterator[Dashboard]:
    """Watch, then serve, for the duration of the block."""
    watcher = watching.Watcher(client, runner_namespace=settings.runner_namespace)
    async with watcher.running():
        runner = web.AppRunner(make_app(watcher, settings), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.address, settings.port)
            await site.start()
            port = runner.addresses[0][1]
            host = f"[{settings.address}]" if ":" in settings.address else settings.address
            if settings.address in ("0.0.0.0", "::"):
                host = "127.0.0.1"
            yield Dashboard(url=f"http://{host}:{port}/", watcher=watcher)
        finally:
            await runner.cleanup()


async def run(kubeconfig: str | None, settings: Settings, *, ready: Callable[[str], None] = print) -> None:
    """`gigafactory dashboard`: serve until cancelled (SIGINT, SIGTERM)."""
    async with kubeclient.Client.from_kubeconfig(kubeconfig, user_agent="gigafactory-dashboard") as client:
        async with serving(client, settings) as dashboard:
            ready(dashboard.url)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
