"""What the operator shows of itself: /healthz, /readyz and /metrics (Prometheus), and JSON logs.

One registry per process (not the global one) so that tests and two operators in one interpreter
never collide.
"""

import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

import prometheus_client
from aiohttp import web

from gigafactory.models import objects

MAX_MODELS = 100  # distinct model labels of the spending metrics; more share "other"
LOG_FIELDS = ("job", "pod", "factory", "lease", "reason", "count", "seconds", "port", "identity")


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        r = self.registry
        self.pending = prometheus_client.Gauge("gigafactory_pending_jobs", "Jobs waiting to be bound.", ["queue"], registry=r)
        self.unschedulable = prometheus_client.Gauge(
            "gigafactory_unschedulable_pods", "Over unschedulable jobs of the last cycle: pods excluded, by reason.", ["reason"], registry=r
        )
        self.unschedulable_jobs = prometheus_client.Gauge("gigafactory_unschedulable_jobs", "Jobs that fit no pod in the last cycle.", registry=r)
        self.cycle_seconds = prometheus_client.Histogram(
            "gigafactory_scheduling_cycle_seconds", "Duration of one scheduling cycle (snapshot to decisions).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )
        self.bind_latency = prometheus_client.Histogram(
            "gigafactory_bind_latency_seconds", "From a job's creation (or requeue) to its bind.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800), registry=r,
        )
        self.binds = prometheus_client.Counter("gigafactory_binds", "Binds written, by factory.", ["factory"], registry=r)
        self.bind_conflicts = prometheus_client.Counter("gigafactory_bind_conflicts", "Binds that lost a race or failed.", registry=r)
        self.undone = prometheus_client.Counter("gigafactory_bindings_undone", "Bindings undone, by reason.", ["reason"], registry=r)
        self.slots_used = prometheus_client.Gauge("gigafactory_slots_used", "Slots held on ready pods, by factory.", ["factory"], registry=r)
        self.slots_total = prometheus_client.Gauge("gigafactory_slots_total", "Slots of ready pods, by factory.", ["factory"], registry=r)
        self.runners_desired = prometheus_client.Gauge("gigafactory_runners_desired", "Runner pods a scaled factory wants.", ["factory"], registry=r)
        self.runners_ready = prometheus_client.Gauge("gigafactory_runners_ready", "Runner pods of a scaled factory that announced themselves.",
                                                     ["factory"], registry=r)
        self.scale_up_seconds = prometheus_client.Histogram("gigafactory_scale_up_seconds", "From demand to the wanted runner pods ready.",
                                                            registry=r, buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
        self.leases_ignored = prometheus_client.Counter(
            "gigafactory_leases_ignored", "Heartbeat and binding Leases outside the runner namespaces, ignored (each counted once), by role.",
            ["role"], registry=r)
        self.reports_rejected = prometheus_client.Counter(
            "gigafactory_reports_rejected", "Runner reports and announced pushes not believed (a branch not the job's own), by field.",
            ["field"], registry=r)
        self.leader = prometheus_client.Gauge("gigafactory_leader", "1 while this replica is the active operator, else 0.", registry=r)
        self.agent_tokens = prometheus_client.Counter(
            "gigafactory_agent_tokens", "Model tokens the agents' attempts spent (the runners' model gateways' counts), by factory, "
            "queue, namespace, model and direction (input, output).", ["factory", "queue", "namespace", "model", "direction"], registry=r)
        self.agent_cost = prometheus_client.Counter(
            "gigafactory_agent_cost", "Estimated cost of the agents' attempts at the factories' prices, by factory, queue, namespace "
            "and model.", ["factory", "queue", "namespace", "model"], registry=r)
        self._models: set[str] = set()

    def model_label(self, model: str) -> str:
        """Model names come from runners' reports: the first MAX_MODELS distinct ones get a series of their
        own, the rest share "other", so a runner cannot grow the registry without bound."""
        if model in self._models or len(self._models) < MAX_MODELS:
            self._models.add(model)
            return model
        return "other"

    def count_spending(self, body: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        """Count one folded attempt's tokens and estimated cost (its record in status.attempts)."""
        labels = {"factory": str(record.get("factory") or ""), "queue": str(objects.spec(body).get("queue") or ""),
                  "namespace": objects.namespace(body)}
        for used in objects.tokens(record):
            model = self.model_label(str(used.get("model") or "unknown"))
            for direction in ("input", "output"):
                count = used.get(f"{direction}Tokens")
                if isinstance(count, int) and count > 0:
                    self.agent_tokens.labels(**labels, model=model, direction=direction).inc(count)
            cost = used.get("cost")
            if isinstance(cost, (int, float)) and cost > 0:
                self.agent_cost.labels(**labels, model=model).inc(cost)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


async def serve(*, port: int, metrics: Metrics, ready: Callable[[], bool]) -> tuple[web.AppRunner, int]:
    """Start the probe and metrics server; returns the runner (to clean up) and the bound port."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok") if ready() else web.Response(status=503, text="not synced")

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in LOG_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
