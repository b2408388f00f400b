"""What every controller of the operator shares: the informers and caches, the clock, the tasks,
and the shell that carries out the lifecycle decisions (binding/lifecycle.py).

The controllers (jobs, finalizing, factory statuses, scheduling) are classes over this one state,
composed into `operating.Operator`; a call from one to another goes through a method declared here.
Informer handlers are cheap and never write: they wake the loop or start a task.
"""

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from gigafactory import config, constants, electing, kubeclient, leases, observing
from gigafactory.binding import lifecycle, scaler, trust
from gigafactory.controllers import caches
from gigafactory.models import objects
from gigafactory.scheduling import framework, plugins, snapshots

logger = logging.getLogger(__name__)

Body = dict[str, Any]


def name_of(body: Mapping[str, Any]) -> str:
    meta = objects.meta(body)
    return f"{meta.get('namespace')}/{meta.get('name')}"


class Base:
    def __init__(self, settings: config.OperatorSettings, client: kubeclient.Client,
                 clock: Callable[[], datetime.datetime] = leases.now) -> None:
        self.settings = settings
        self.client = client
        self.now = clock  # every lifecycle decision reads the time here: tests inject their own
        self.profile = plugins.default_profile(**framework.settings_values(settings))
        self.metrics = observing.Metrics()
        self.jobs = kubeclient.Informer(client, kubeclient.AGENTJOBS, handler=self._on_job)
        self.factories = kubeclient.Informer(client, kubeclient.FACTORIES, handler=self._on_factory)
        # Runner pods count only in the namespaces the platform declared (binding/trust.py): a Lease
        # elsewhere never enters these caches, so nothing (scheduler, binder, folds, drains, cleanup)
        # can act on it; it is reported once instead. One cluster-wide watch per role, filtered here:
        # the strays are what the report is about, so they must be seen to be reported.
        self.runner_namespaces = settings.runner_namespace_set()
        self.strays: set[str] = set()  # uids of ignored Leases already reported
        self.stray_events = caches.TokenBucket(rate=1, burst=20)
        self.heartbeats = kubeclient.Informer(
            client, kubeclient.LEASES, label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_HEARTBEAT}", handler=self._on_heartbeat,
            keep=self._in_runner_namespaces, refused=self._on_stray_lease,
        )
        self.bindings = kubeclient.Informer(
            client, kubeclient.LEASES, label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_BINDING}", handler=self._on_binding,
            keep=self._in_runner_namespaces, refused=self._on_stray_lease,
        )
        # The runner Deployments this operator owns for scaled factories (binding/scaler.py).
        self.deployments = kubeclient.Informer(client, kubeclient.DEPLOYMENTS, namespace=settings.namespace,
                                               label_selector=f"{constants.LABEL_ROLE}=runners", handler=lambda *_: self.wake())
        self.informers = (self.jobs, self.factories, self.heartbeats, self.bindings, self.deployments)
        self.scaler = scaler.Scaler(client, namespace=settings.namespace, profile=self.profile,
                                    service_account=settings.runner_service_account)
        self.waiting_for: dict[str, str] = {}  # job uid → the scaled factory it waits on (this cycle's plan)
        self.wakeup = asyncio.Event()
        self.records = caches.JobRecords()  # job uid → what this operator remembers of it
        self.beats: dict[tuple[str, str], leases.Heartbeat] = {}
        self.timers = caches.Timers(clock)
        # Jobs with a fold, undo, stop or finalization in flight: one write per job at a time (the
        # serialisation kopf gives its handlers). Not in the job's record: it outlives the job's
        # DELETED event while the write that was under way ends.
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.success = snapshots.SuccessRatios()
        # Before this operator's first explanation of a job, its start counts as the last one (so a
        # restart does not rewrite every waiting job). Loop clock.
        self.started_at = 0.0
        self.started = False
        self.working = asyncio.Event()  # set with `started`: this replica leads and its caches are synced
        # Deleted factories whose drain someone awaits (kopf's delete handler, factorykopf.py): set,
        # and forgotten, when no binding of the factory is left (lifecycle.Drained) or it is gone.
        self.drains: dict[str, asyncio.Event] = {}
        self.cycles = 0
        self.elector: electing.LeaderElector | None = None
        self.event_budget = caches.TokenBucket(rate=settings.bind_events_per_second, burst=10 * settings.bind_events_per_second)

    # --- what one controller asks of another (each is defined in exactly one controller) ---

    def _on_job(self, event: str, body: Body) -> None:
        raise NotImplementedError

    def _on_factory(self, event: str, body: Body) -> None:
        raise NotImplementedError

    def _on_heartbeat(self, event: str, body: Body) -> None:
        raise NotImplementedError

    def _on_binding(self, event: str, body: Body) -> None:
        raise NotImplementedError

    def _on_binding_expired(self, key: tuple[str, str]) -> None:
        raise NotImplementedError

    def _on_deadline(self, key: tuple[str, str]) -> None:
        raise NotImplementedError

    def _maybe_fold(self, body: Body) -> None:
        raise NotImplementedError

    def _maybe_stop(self, body: Body) -> None:
        raise NotImplementedError

    def _maybe_retry(self, body: Body) -> None:
        raise NotImplementedError

    def _drop_bindings_of(self, uids: set[str]) -> None:
        raise NotImplementedError

    def _maybe_finalize(self, body: Body) -> None:
        raise NotImplementedError

    def _maybe_drain(self, body: Body) -> None:
        raise NotImplementedError

    def _redrain(self, name: str) -> None:
        raise NotImplementedError

    async def _stop(self, body: Body, reason: str) -> None:
        raise NotImplementedError

    async def _end_waiting(self, body: Body, reason: str, *, message: str) -> None:
        raise NotImplementedError

    async def _expire(self, binding: leases.Binding, *, reason: str | None = None, message: str | None = None) -> None:
        raise NotImplementedError

    async def _delete_finished(self, key: tuple[str, str]) -> None:
        raise NotImplementedError

    async def _request_stop(self, body: Body, binding: leases.Binding, reason: str) -> None:
        raise NotImplementedError

    async def _drop_binding(self, binding: leases.Binding) -> None:
        raise NotImplementedError

    async def _finalize(self, body: Body) -> None:
        raise NotImplementedError

    # --- the shared machinery ---

    def wake(self) -> None:
        self.wakeup.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _drained(self, name: str) -> None:
        """No binding of the factory `name` is left (or the factory is gone): its waiters may go on."""
        waiting = self.drains.pop(name, None)
        if waiting is not None:
            waiting.set()

    def _release(self, uid: str, key: tuple[str, str]) -> None:
        """A job's write ended: it may take the next one (a report or deletion that came meanwhile)."""
        self.busy.discard(uid)
        body = self.jobs.cache.get(key)
        if body is not None and self.started:
            self._maybe_fold(body)
            self._maybe_finalize(body)
        self.wake()

    def _apply(self, body: Body, actions: list[lifecycle.Action]) -> None:
        """Carry out what a lifecycle decision returned. A write for a job that has one in flight is
        skipped: that task's end brings the job back to its decision (_release)."""
        for action in actions:
            if isinstance(action, lifecycle.Disarm):
                self.timers.disarm((action.kind, *action.key))
            elif isinstance(action, lifecycle.Arm):
                self.timers.arm((action.kind, *action.key), action.at, self._on_timer(action))
            elif isinstance(action, lifecycle.DropBinding):
                self._spawn(self._drop_binding(action.binding), name=f"drop:{action.binding.name}")
            elif isinstance(action, lifecycle.Drained):
                self._drained(str(body["metadata"]["name"]))
            else:
                self._start_write(body, action)

    def _start_write(self, body: Body, action: lifecycle.Action) -> None:
        binding: leases.Binding | None = getattr(action, "binding", None)
        uid = binding.job_uid if binding is not None else objects.uid(body)
        if uid in self.busy:
            return
        if isinstance(action, lifecycle.Expire):
            self.busy.add(uid)
            self._spawn(self._expire(action.binding, reason=action.reason, message=action.message), name=f"expire:{action.binding.name}")
        elif isinstance(action, lifecycle.RequestStop) and action.binding is not None:
            job = body if objects.uid(body) == uid else self.jobs.cache.get(
                (action.binding.job_namespace, action.binding.job_name))
            if job is not None:
                self.busy.add(uid)
                self._spawn(self._request_stop(job, action.binding, action.reason), name=f"stop:{name_of(job)}")
        elif isinstance(action, (lifecycle.RequestStop, lifecycle.EndWaiting)):
            self.busy.add(uid)
            self._spawn(self._stop(body, action.reason), name=f"stop:{name_of(body)}")
        elif isinstance(action, lifecycle.Finalize):
            self.busy.add(uid)
            self._spawn(self._finalize(body), name=f"finalize:{name_of(body)}")

    def _on_timer(self, action: lifecycle.Arm) -> Callable[[], None]:
        """What a lifecycle timer does when it fires: bring its object back to its decision."""
        key, binding = action.key, action.binding
        if action.kind == "deadline":
            return lambda: self._on_deadline(key)
        if action.kind == "ttl":
            return lambda: self._spawn(self._delete_finished(key), name=f"ttl:{key[0]}/{key[1]}")
        if action.kind == "finalize" and binding is not None:
            return lambda: self._spawn(self._drop_binding(binding), name=f"drop:{binding.name}")
        if action.kind == "drain":
            return lambda: self._redrain(key[1])
        if action.kind == "binding":
            return lambda: self._on_binding_expired(key)
        return self.wake

    # --- Leases outside the runner namespaces ---

    def _in_runner_namespaces(self, lease: Body) -> bool:
        return trust.in_runner_namespaces(objects.namespace(lease), self.runner_namespaces)

    def _on_stray_lease(self, event: str, lease: Body) -> None:
        """A heartbeat or binding Lease outside the runner namespaces: ignored, and reported once per
        Lease (a metric always, an Event on the Lease within a budget), never per renewal."""
        meta = objects.meta(lease)
        uid = objects.uid(lease)
        if event == "DELETED":
            self.strays.discard(uid)
            return
        if uid in self.strays:
            return
        self.strays.add(uid)
        role = str(objects.labels(lease).get(constants.LABEL_ROLE) or "")
        self.metrics.leases_ignored.labels(role=role).inc()
        declared = ", ".join(sorted(self.runner_namespaces or ()))
        message = (f"{role} Lease {meta.get('namespace')}/{meta.get('name')} ignored: runner pods count only in the runner "
                   f"namespaces the platform declared ({declared}; GIGAFACTORY_RUNNER_NAMESPACES)")
        logger.warning(message, extra={"lease": f"{meta.get('namespace')}/{meta.get('name')}", "reason": "LeaseIgnored"})
        if self.stray_events.take():
            self._spawn(self._stray_event(lease, message), name=f"stray:{meta.get('name')}")

    async def _stray_event(self, lease: Body, message: str) -> None:
        with contextlib.suppress(kubeclient.ApiError):
            event = trust.ignored_lease_event(lease, message=message, now=self.now())
            await self.client.create(kubeclient.EVENTS, event, namespace=event["metadata"]["namespace"])
