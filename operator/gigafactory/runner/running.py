"""The runner process: heartbeat, watch own bindings, claim, run, push, report, release.

The process and its bindings are here; an attempt's work is runner/working.py, its binding Lease
protocol runner/attempts.py. Every step follows docs/protocol.md. An attempt's binding Lease is
released in a `finally`, so every exit path (success, failure, exception, stop, shutdown) gives the
slot back.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import pathlib
import signal
from typing import Any

from gigafactory import config, constants, kubeclient, leases
from gigafactory.runner import attempts, executing, profiles, sandbox, working

logger = logging.getLogger(__name__)


class Runner(working.Working):
    """The process: its heartbeat, its informer on its bindings, one task per claimed attempt (claimed,
    worked on and reported by the layers below: runner/working.py on runner/attempts.py), the drain."""

    def __init__(self, settings: config.RunnerSettings, client: kubeclient.Client) -> None:
        super().__init__(settings, client)
        # Announced to the scheduler: a profile whose command is not installed in this image would
        # only turn every job bound for it into a failure.
        self.agents = sorted(name for name, profile in self.profiles.items() if profile.installed())
        self.attempts: dict[str, attempts.Attempt] = {}  # binding lease name → attempt
        self.seen: set[str] = set()
        self.draining = False
        self.heartbeat_version: str | None = None
        self.announced_repos: list[str] = []
        self.wake = asyncio.Event()
        self.heartbeat_task: asyncio.Task[None] | None = None

    # --- heartbeat ---

    def _heartbeat_body(self) -> dict[str, Any]:
        return leases.build_heartbeat_lease(
            pod=self.settings.pod_name, namespace=self.settings.namespace, factory=self.settings.factory,
            slots=self.settings.slots, agents=self.agents, warm_repos=self.announced_repos,
            duration_seconds=self.settings.heartbeat_seconds, moment=leases.now(), draining=self.draining,
            sandbox=self.sandbox.mode,
        )

    async def announce(self) -> None:
        self.announced_repos = self.workspace.warm_repos()
        body = self._heartbeat_body()
        try:
            created = await self.client.create(kubeclient.LEASES, body)
        except kubeclient.AlreadyExists:
            current = await self.client.get(kubeclient.LEASES, self.settings.pod_name, namespace=self.settings.namespace)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            created = await self.client.replace(kubeclient.LEASES, self.settings.pod_name, body, namespace=self.settings.namespace)
        self.heartbeat_version = created["metadata"]["resourceVersion"]

    async def renew_heartbeat(self) -> None:
        repos = self.workspace.warm_repos()
        patch: dict[str, Any] = leases.renew_patch(moment=leases.now(), resource_version=self.heartbeat_version or "")
        if repos != self.announced_repos:  # annotations change only when what they say changes
            patch["metadata"]["annotations"] = {constants.ANNOTATION_WARM_REPOS: ",".join(repos)}
        try:
            updated = await self.client.patch(kubeclient.LEASES, self.settings.pod_name, patch, namespace=self.settings.namespace)
            self.heartbeat_version = updated["metadata"]["resourceVersion"]
            self.announced_repos = repos
        except (kubeclient.Conflict, kubeclient.NotFound):
            await self.announce()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds / 3)
            try:
                await self.renew_heartbeat()
            except (kubeclient.ApiError, OSError) as exc:
                logger.warning("heartbeat renewal failed: %s", exc)

    # --- bindings ---

    def on_binding(self, kind: str, lease: dict[str, Any]) -> None:
        binding = leases.parse_binding(lease)
        if binding is None or binding.pod != self.settings.pod_name:
            return
        attempt = self.attempts.get(binding.name)
        if kind == "DELETED":
            self.seen.discard(binding.name)
            if attempt is not None and not attempt.stop.is_set():
                attempt.lost = True  # the operator moved on: stop, report nothing
                attempt.stop.set()
            return
        if attempt is not None:
            if binding.resource_version:
                attempt.lease_version = binding.resource_version
            if binding.stop and not attempt.stop.is_set():
                attempt.stop_reason = binding.stop
                attempt.stop.set()
            return
        if binding.name in self.seen or binding.claimed or binding.stop or binding.holder != self.settings.pod_name:
            return
        if self.draining or len(self.attempts) >= self.settings.slots:
            return  # unclaimed: the operator's claim timeout moves it elsewhere
        self.seen.add(binding.name)
        attempt = attempts.Attempt(binding)
        self.attempts[binding.name] = attempt
        attempt.task = asyncio.create_task(self.handle(attempt), name=f"attempt:{binding.name}")

    async def handle(self, attempt: attempts.Attempt) -> None:
        binding = attempt.binding
        renewer: asyncio.Task[None] | None = None
        try:
            job = await self.claim(attempt)
            if job is None:
                logger.info("binding %s is no longer ours; not running it", binding.name)
                return
            logger.info("claimed %s/%s attempt %d", binding.job_namespace, binding.job_name, binding.attempt)
            renewer = asyncio.create_task(self.renew_loop(attempt))
            try:
                report = await self.execute(attempt, job)
            except attempts.AttemptFailed as exc:
                report = {"outcome": exc.outcome, "reason": exc.reason, "message": exc.message[:4000]}
            except Exception as exc:  # a runner bug must not take the other slots down
                logger.exception("attempt %s failed inside the runner", binding.name)
                report = {"outcome": "InfraError", "reason": "RunnerError", "message": f"{type(exc).__name__}: {exc}"[:4000]}
            if attempt.lost:
                logger.info("lost the lease of %s; not reporting", binding.name)
                return
            logger.info("%s/%s attempt %d: %s %s %s", binding.job_namespace, binding.job_name, binding.attempt,
                        report["outcome"], report.get("reason", ""),
                        "" if report["outcome"] == "Succeeded" else report.get("message", ""))
            await self.report(attempt, report)
        except (kubeclient.ApiError, OSError) as exc:
            logger.warning("attempt %s: API trouble: %s", binding.name, exc)
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            with contextlib.suppress(kubeclient.ApiError, OSError):
                await self.release(attempt)
            self.attempts.pop(binding.name, None)
            self.wake.set()

    # --- process ---

    async def shutdown(self) -> None:
        self.draining = True
        with contextlib.suppress(kubeclient.ApiError, OSError):
            updated = await self.client.patch(kubeclient.LEASES, self.settings.pod_name,
                                              {"metadata": {"annotations": {leases.ANNOTATION_DRAINING: "true"}}},
                                              namespace=self.settings.namespace)
            self.heartbeat_version = updated["metadata"]["resourceVersion"]
        tasks = [a.task for a in self.attempts.values() if a.task is not None]
        if tasks:
            logger.info("draining: %d running jobs get %ds to finish", len(tasks), self.settings.shutdown_grace_seconds)
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for attempt in list(self.attempts.values()):
                attempt.stop_reason = "RunnerShutdown"
                attempt.stop.set()
            if pending:
                await asyncio.wait(pending, timeout=executing.KILL_GRACE_SECONDS + 10)
        if self.heartbeat_task is not None:  # else a last renewal could find the Lease gone and recreate it
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task
        with contextlib.suppress(kubeclient.ApiError, OSError):
            await self.client.delete(kubeclient.LEASES, self.settings.pod_name, namespace=self.settings.namespace)

    async def run(self, stop: asyncio.Event) -> None:
        orphans = executing.kill_orphans(self.pids)
        if orphans:
            logger.info("start-up: killed agents a previous run left behind: %s", orphans)
        missing = sorted(set(self.profiles) - set(self.agents))
        if missing:
            logger.info("not offering agent profiles whose command is not installed: %s", ", ".join(missing))
        swept = self.workspace.sweep()
        if swept:
            logger.info("start-up sweep removed: %s", ", ".join(swept))
        if self.gateway is not None:
            await self.gateway.start()
            logger.info("model gateway on %s for %s", self.gateway.url, ", ".join(sorted(self.gateway.upstreams)))
        await self.announce()
        informer = kubeclient.Informer(
            self.client, kubeclient.LEASES, namespace=self.settings.namespace,
            label_selector=f"{constants.LABEL_ROLE}={constants.ROLE_BINDING},{constants.LABEL_POD}={self.settings.pod_name}",
            handler=self.on_binding,
        )
        self.heartbeat_task = heartbeat = asyncio.create_task(self.heartbeat_loop())
        async with informer.running():
            logger.info("runner %s of factory %s ready with %d slots", self.settings.pod_name, self.settings.factory, self.settings.slots)
            while not stop.is_set():
                self.wake.clear()
                # A slot freed up: bindings skipped while full are offered again.
                for lease in list(informer.cache.values()):
                    self.on_binding("MODIFIED", lease)
                waiter = asyncio.create_task(self.wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
            # The heartbeat goes on while draining: the pod is alive, just taking nothing new.
            try:
                await self.shutdown()
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                if self.gateway is not None:
                    await self.gateway.close()


def lock_work_dir(work_dir: pathlib.Path) -> Any:
    """Hold an exclusive lock on the work dir for the life of the process: a second runner on the
    same directory would sweep the first one's worktrees at start-up. The kernel drops the lock when
    the process dies, kill -9 included. Raises ValueError (a one-line error) when it is taken."""
    work_dir.mkdir(parents=True, exist_ok=True)
    handle = open(work_dir / ".runner.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ValueError(f"work dir {work_dir} is in use by another runner (pid {holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_sandbox(settings: config.RunnerSettings) -> None:
    """Fail closed: a runner whose agents would run unconfined without the pool saying so does not
    start. Raises ValueError (one line naming the setting)."""
    if settings.sandbox == "none":
        logger.warning("AGENT SANDBOX OFF (GIGAFACTORY_RUNNER_SANDBOX=none): agents run as the runner's user and can "
                       "read its ServiceAccount token, every job's worktree and credentials, and change the runner's git")
        return
    try:
        seconds = sandbox.Sandbox(mode=settings.sandbox, network=settings.sandbox_network == "shared").check()
    except sandbox.SandboxError as exc:
        raise ValueError(f"cannot build the agent sandbox ({exc}); give the pod what docs/security.md \"Agent sandbox\" "
                         f"lists, or opt the pool out with GIGAFACTORY_RUNNER_SANDBOX=none") from None
    logger.info("agent sandbox: namespaces (a sandbox starts in %.0f ms)", seconds * 1000)


async def main(settings: config.RunnerSettings) -> None:
    profiles.load(settings.profiles_file)  # a broken profiles file is reported before anything starts
    check_sandbox(settings)
    lock = lock_work_dir(pathlib.Path(settings.work_dir))  # noqa: F841 — held until the process ends
    client = kubeclient.Client.from_kubeconfig(settings.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Runner(settings, client).run(stop)
    finally:
        await client.close()
