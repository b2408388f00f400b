"""Test doubles and helpers: the operator as a real subprocess, a stub runner that speaks the
protocol of docs/protocol.md by hand (announce, claim, report), and a small synchronous API."""

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gigafactory import constants, kubeclient, leases

ROOT = pathlib.Path(__file__).resolve().parents[3]

# The protocol's timings in these tests, and the waits derived from them. A wait is a multiple of the
# timing that decides it, so a loaded machine (where one operator cycle may take a second) does not
# turn a correct run into a failure, while a wrong one still fails within a bounded time.
CLAIM_TIMEOUT = 30  # seconds: the protocol's default; tests about claim timeouts set a short one explicitly
STARTUP = 60.0  # a process's start-up (imports, first list) on a busy machine: not a protocol timing, only a bound


def within(seconds: float, factor: float = 3.0, slack: float = 10.0) -> float:
    """How long to wait for something the protocol does `seconds` after a cause: a few of its periods
    (a timer may fire one period late, a write may be retried) plus the operator's own work."""
    return seconds * factor + slack


class Api:
    """Synchronous calls through gigafactory.kubeclient (one short-lived client per call)."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            async with kubeclient.Client.from_kubeconfig(self.kubeconfig) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(go())

    def job(self, namespace: str, name: str) -> dict:
        return self.call("get", kubeclient.AGENTJOBS, name, namespace=namespace)

    def jobs(self, namespace: str) -> list[dict]:
        return self.call("list", kubeclient.AGENTJOBS, namespace=namespace)[0]

    def bindings(self, namespace: str) -> list[dict]:
        return self.call("list", kubeclient.LEASES, namespace=namespace, label_selector="gigafactory.dev/role=binding")[0]

    def create_job(self, namespace: str, name: str, **spec: Any) -> dict:
        body = {
            "apiVersion": constants.API_VERSION, "kind": constants.AGENTJOB_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"repo": {"url": "https://git.example/app.git"}, "task": {"prompt": "fix it"},
                     "agent": {"profile": "script"}, **spec},
        }
        return self.call("create", kubeclient.AGENTJOBS, body, namespace=namespace)

    def create_factory(self, name: str, namespace: str, **spec: Any) -> dict:
        body = {
            "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": name},
            # Only this test's namespace: factories are cluster-scoped and outlive the test.
            "spec": {"agents": ["script"], "namespaces": [namespace], **spec},
        }
        return self.call("create", kubeclient.FACTORIES, body)


class StubRunner:
    """One runner pod, driven step by step by the test."""

    def __init__(self, api: Api, *, pod: str, namespace: str, factory: str, slots: int = 1,
                 agents: tuple[str, ...] = ("script",), warm_repos: tuple[str, ...] = ()) -> None:
        self.api, self.pod, self.namespace, self.factory = api, pod, namespace, factory
        self.slots, self.agents, self.warm_repos = slots, agents, warm_repos

    def announce(self, *, duration_seconds: int = 120) -> None:
        body = leases.build_heartbeat_lease(
            pod=self.pod, namespace=self.namespace, factory=self.factory, slots=self.slots, agents=self.agents,
            warm_repos=self.warm_repos, duration_seconds=duration_seconds, moment=leases.now(),
        )
        self.api.call("create", kubeclient.LEASES, body, namespace=self.namespace)
        self.heartbeat_seconds = duration_seconds

    def renew(self) -> None:
        """One heartbeat renewal (a runner sends one every leaseDurationSeconds / 3)."""
        lease = self.api.call("get", kubeclient.LEASES, self.pod, namespace=self.namespace)
        self.api.call("patch", kubeclient.LEASES, self.pod, leases.renew_patch(
            moment=leases.now(), resource_version=lease["metadata"]["resourceVersion"]), namespace=self.namespace)

    @contextlib.contextmanager
    def alive(self) -> Iterator[Callable[[], None]]:
        """Renew the heartbeat as a live runner does, every leaseDurationSeconds / 3, until the block
        ends or the function it yields is called: then the pod is dead (its heartbeat lapses
        leaseDurationSeconds after the last renewal)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_seconds / 3):
                self.renew()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()

        def die() -> None:
            stop.set()
            thread.join()

        try:
            yield die
        finally:
            die()

    def bindings(self) -> list[dict]:
        return self.api.call("list", kubeclient.LEASES, namespace=self.namespace,
                             label_selector=f"gigafactory.dev/role=binding,gigafactory.dev/pod={self.pod}")[0]

    def claim(self, lease: dict, *, duration_seconds: int = 30) -> dict:
        """Steps 1–3 of the claim in docs/protocol.md."""
        binding = leases.parse_binding(lease)
        job = self.api.job(binding.job_namespace, binding.job_name)
        status = job["status"]
        assert status["phase"] == "Bound" and status["assignment"]["pod"] == self.pod
        assert status["assignment"]["attempt"] == binding.attempt
        now = leases.now()
        self.api.call("patch", kubeclient.LEASES, binding.name, leases.claim_patch(
            pod=self.pod, duration_seconds=duration_seconds, moment=now, resource_version=binding.resource_version,
        ), namespace=self.namespace)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
                 "status": {"phase": "Running", "assignment": {"claimedAt": stamp}}}
        return self.api.call("patch", kubeclient.AGENTJOBS, binding.job_name, patch,
                             namespace=binding.job_namespace, subresource="status")

    def report(self, job_namespace: str, job_name: str, *, outcome: str, **extra: Any) -> dict:
        job = self.api.job(job_namespace, job_name)
        report = {"attempt": job["status"]["attempt"], "pod": self.pod, "outcome": outcome,
                  "finishedAt": leases.now().strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
        patch = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]}, "status": {"report": report}}
        return self.api.call("patch", kubeclient.AGENTJOBS, job_name, patch, namespace=job_namespace, subresource="status")


def forget_pods(api: Api, namespace: str) -> None:
    """Delete the test's runner pods' Leases (heartbeats and bindings) as it ends. A deleted namespace
    takes them along only when the namespace controller gets to it (seconds later on a real server, more
    on a busy machine), and until then a later test's operator counts those pods in its explanations."""
    for lease in api.call("list", kubeclient.LEASES, namespace=namespace)[0]:
        if (lease["metadata"].get("labels") or {}).get(constants.LABEL_ROLE) in (constants.ROLE_HEARTBEAT, constants.ROLE_BINDING):
            with contextlib.suppress(kubeclient.NotFound):
                api.call("delete", kubeclient.LEASES, lease["metadata"]["name"], namespace=namespace)



def free_port() -> int:
    """A port free now: for a server whose address must be known before it starts (another process may
    take it meanwhile; where the server can bind port 0 and say which it got, prefer that)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunnerSubprocess:
    """`gigafactory runner` as a real subprocess; a subclass sets kubeconfig, env and log."""

    kubeconfig: str
    env: dict[str, str]
    log: pathlib.Path
    process: "subprocess.Popen[bytes] | None" = None

    def start(self) -> "RunnerSubprocess":
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gigafactory.cli.main", "runner", "--kubeconfig", self.kubeconfig],
                env=self.env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class OperatorProcess:
    """`gigafactory operator` as a real subprocess."""

    def __init__(self, kubeconfig: str, log: pathlib.Path, **env: str) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self._port: int | None = None
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
            "GIGAFACTORY_CLAIM_TIMEOUT_SECONDS": str(CLAIM_TIMEOUT),
            # Port 0: the kernel picks a free one as the operator binds it, and its log names it. A port
            # picked here first could be taken by another process before the operator binds it.
            "GIGAFACTORY_HTTP_PORT": "0",
            **env,
        }
        if "GIGAFACTORY_NAMESPACE" not in env and "GIGAFACTORY_RUNNER_NAMESPACES" not in env:
            # These tests' stub runners live in each test's own namespace: trust them all. Tests of the
            # trust boundary itself (tests/security/test_operator_trust.py) declare the namespaces.
            self.env["GIGAFACTORY_RUNNER_NAMESPACES"] = "*"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "OperatorProcess":
        handle = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gigafactory.cli.main", "operator", "--kubeconfig", self.kubeconfig],
            env=self.env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        handle.close()
        return self

    @property
    def port(self) -> int | None:
        """The probe port, from the operator's "serving probes and metrics" log line (None before it)."""
        if self._port is None:
            for line in self.logs().splitlines():
                if '"serving probes and metrics"' in line:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self._port = int(json.loads(line)["port"])
                        break
        return self._port

    def ready(self) -> bool:
        if self.port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def operators(kubeconfig: str, tmp_path: pathlib.Path, count: int = 1, *, ready: bool = True, **env: str) -> Iterator[list[OperatorProcess]]:
    """Operator processes; with `ready`, yields once one of them has synced its informers, so a test's
    waits measure the protocol, not how long Python takes to start on a busy machine."""
    procs = [OperatorProcess(kubeconfig, tmp_path / f"operator-{uuid.uuid4().hex[:4]}-{i}.log", **env).start() for i in range(count)]
    try:
        if ready:
            deadline = time.monotonic() + STARTUP
            while not any(p.ready() for p in procs):
                dead = [p for p in procs if p.process is not None and p.process.poll() is not None]
                if len(dead) == len(procs) or time.monotonic() > deadline:
                    raise AssertionError(f"no operator became ready within {STARTUP}s ({len(dead)} exited)")
                time.sleep(0.1)
        yield procs
    except BaseException:
        for proc in procs:
            sys.stderr.write(f"--- {proc.log.name} ---\n{proc.logs()[-6000:]}\n")
        raise
    finally:
        for proc in procs:
            proc.stop()


def phase(api: Api, namespace: str, name: str) -> str | None:
    return (api.job(namespace, name).get("status") or {}).get("phase")


def one_runner(api: Api, namespace: str, prefix: str, **factory_spec: Any) -> "StubRunner":
    """A factory of this test with one announced stub runner pod."""
    factory = unique(prefix)
    api.create_factory(factory, namespace, **factory_spec)
    runner = StubRunner(api, pod=f"{factory}-0", namespace=namespace, factory=factory)
    runner.announce()
    return runner


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(autouse=True)
def forget_pods_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's runner pods go with it (forget_pods), before its namespace does. Put in a conftest
    (`_forget_pods = stubs.forget_pods_after_test`) to apply to its tests."""
    if "namespace" not in request.fixturenames:
        yield
        return
    api, namespace = Api(request.getfixturevalue("kubeconfig")), request.getfixturevalue("namespace")
    yield
    forget_pods(api, namespace)
