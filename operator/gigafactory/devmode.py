"""`gigafactory dev`: the whole system on one machine, no cluster needed.

It starts the embedded API server with the CRDs (or, with `--server KUBECONFIG`, installs them into
the API server that kubeconfig names: a real kube-apiserver, say), the operator and a few local runner processes
(a dev Factory that takes jobs of every namespace and queue and offers the `script` profile),
makes a sample repository with a local bare remote, submits example jobs against it, shows a live
table until they finish and prints where the pushed branches are. Ctrl-C stops everything.
"""

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import shutil
import importlib.util
import signal
import sys
from typing import TYPE_CHECKING, Any

import git
import rich.console
import rich.live
import rich.table

from gigafactory import constants, crdgen, kubeclient
from gigafactory.binding.scaler import DELETION_COST
from gigafactory.models import agentjobs, objects
from gigafactory.runner import executing

if TYPE_CHECKING:
    import localcluster

# The embedded API server is a development package of this repository (localcluster/), not part of
# `pip install gigafactory` or the image: what to do when it is missing.
DEV_PACKAGE_HINT = ("the embedded API server is a development package, not installed here: `make venv` in a checkout "
                    "installs it, or `pip install ./localcluster` from one (the gigafactory-localcluster package); or "
                    "pass --server KUBECONFIG to use an API server you have")
DEV_NAMESPACE = "default"
RUNNER_NAMESPACE = "gigafactory-dev"
FACTORY = "dev"
# The embedded API server's port unless --port says otherwise: stable, so that a second shell's
# kubectl and .dev/kubeconfig keep working across restarts.
DEFAULT_PORT = 17080
# The dashboard's (gigafactory.dashboard), on 127.0.0.1 too; 0: any free port.
DASHBOARD_PORT = 17081
EXAMPLE_LABEL = "gigafactory.dev/dev-example"
# Ctrl-C: each runner drains (its running jobs get this long to finish), then stops its agents
# (SIGTERM to each agent's process group, SIGKILL KILL_GRACE_SECONDS later), reports and releases.
# The supervisor waits for all of that before it kills a runner, and then ends the process groups of
# any agent a killed runner left (its pid files), so no agent outlives `gigafactory dev`.
RUNNER_DRAIN_SECONDS = 5
STOP_GRACE_SECONDS = RUNNER_DRAIN_SECONDS + executing.KILL_GRACE_SECONDS + 20.0

console = rich.console.Console(highlight=False)


@dataclasses.dataclass
class Options:
    work_dir: pathlib.Path
    kubeconfig: pathlib.Path
    port: int = DEFAULT_PORT
    runners: int = 2
    slots: int = 2
    examples: bool = True
    exit_when_done: bool = False
    # The dev factory scales from zero with demand (Factory.spec.scaling): no runner runs until jobs
    # come, and a local process provider plays the Deployment controller.
    on_demand: bool = False
    scale_down_delay_seconds: int = 10
    # An existing API server to use instead of starting the embedded one (its kubeconfig).
    server: pathlib.Path | None = None
    # The fleet dashboard's port (None: no dashboard).
    dashboard_port: int | None = DASHBOARD_PORT


class ProcessProvider:
    """Plays the Deployment (and ReplicaSet) controller of the operator's runner Deployments on one
    machine: keeps as many local `gigafactory runner` processes as each Deployment's replicas. Each
    process gets a Pod object of its name (so the operator can mark it with the pod-deletion-cost
    annotation); on scale-down the pods with the lowest deletion cost get SIGTERM first (the runner
    drains: it finishes or hands back its jobs), and their Pod objects go when they have exited."""

    def __init__(self, client: kubeclient.Client, *, namespace: str, kubeconfig: pathlib.Path, work_dir: pathlib.Path) -> None:
        self.client, self.namespace, self.kubeconfig, self.work_dir = client, namespace, kubeconfig, work_dir
        self.processes: dict[str, dict[str, asyncio.subprocess.Process]] = {}  # deployment → pod → process
        self.started_total = 0
        self.counter = 0
        self.lock = asyncio.Lock()
        self.informer = kubeclient.Informer(client, kubeclient.DEPLOYMENTS, namespace=namespace,
                                            label_selector=f"{constants.LABEL_ROLE}=runners", handler=self._changed)
        self.kick = asyncio.Event()

    def _changed(self, event: str, body: dict[str, Any]) -> None:
        self.kick.set()

    async def run(self) -> None:
        async with self.informer.running():
            while True:
                self.kick.clear()
                async with self.lock:
                    await self.reconcile()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.kick.wait(), timeout=0.5)

    async def reconcile(self) -> None:
        for deployment in list(self.informer.cache.values()):
            name = deployment["metadata"]["name"]
            mine = self.processes.setdefault(name, {})
            for pod, proc in list(mine.items()):  # exited: its Pod object goes too
                if proc.returncode is not None:
                    del mine[pod]
                    with contextlib.suppress(kubeclient.ApiError):
                        await self.client.delete(kubeclient.PODS, pod, namespace=self.namespace)
            stopping = {pod for pod, proc in mine.items() if getattr(proc, "gigafactory_stopping", False)}
            running = [pod for pod in mine if pod not in stopping]
            want = int(objects.spec(deployment).get("replicas") or 0)
            template_env = {e["name"]: e.get("value") for c in deployment["spec"]["template"]["spec"].get("containers", [])[:1]
                            for e in c.get("env") or [] if "value" in e}
            while len(running) < want:
                self.counter += 1
                pod = f"{name}-{self.counter}"
                await self.client.create(kubeclient.PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "name": pod, "namespace": self.namespace, "labels": {constants.LABEL_FACTORY: template_env.get("GIGAFACTORY_RUNNER_FACTORY", "")}},
                    "spec": {"containers": [{"name": "runner", "image": "local"}]}}, namespace=self.namespace)
                mine[pod] = await _spawn(["runner", "--kubeconfig", str(self.kubeconfig)], {
                    "GIGAFACTORY_RUNNER_POD_NAME": pod, "GIGAFACTORY_RUNNER_NAMESPACE": self.namespace,
                    "GIGAFACTORY_RUNNER_FACTORY": template_env.get("GIGAFACTORY_RUNNER_FACTORY", ""),
                    "GIGAFACTORY_RUNNER_SLOTS": template_env.get("GIGAFACTORY_RUNNER_SLOTS", "1"),
                    "GIGAFACTORY_RUNNER_WORK_DIR": str(self.work_dir / "runners" / pod), "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
                    "GIGAFACTORY_RUNNER_HEARTBEAT_SECONDS": "3",
                    "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": str(RUNNER_DRAIN_SECONDS),
                }, self.work_dir / "logs" / f"{pod}.log")
                self.started_total += 1
                running.append(pod)
            if len(running) > want:
                costs = {}
                for pod in running:
                    try:
                        body = await self.client.get(kubeclient.PODS, pod, namespace=self.namespace)
                        costs[pod] = int(objects.annotations(body).get(DELETION_COST) or 0)
                    except (kubeclient.ApiError, ValueError):
                        costs[pod] = 0
                # As the ReplicaSet: lowest pod-deletion-cost first, then the newest.
                for pod in sorted(running, key=lambda p: (costs[p], -int(p.rsplit("-", 1)[1])))[: len(running) - want]:
                    proc = mine[pod]
                    proc.gigafactory_stopping = True  # type: ignore[attr-defined]
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)

    def all(self) -> list[asyncio.subprocess.Process]:
        return [p for mine in self.processes.values() for p in mine.values()]

    async def stop(self) -> None:
        await _stop(self.all())


def make_sample_repo(root: pathlib.Path) -> pathlib.Path:
    """A repository with one commit on main, pushed to a bare remote; returns the remote's path."""
    remote = root / "sample.git"
    if remote.exists():
        return remote
    work = root / "sample"
    repo = git.Repo.init(work, initial_branch="main")
    (work / "README.md").write_text("# Sample\n\nA repository for Gigafactory's dev mode.\n")
    (work / "orders.py").write_text("def total(items):\n    return sum(i['price'] for i in items)\n")
    repo.index.add(["README.md", "orders.py"])
    actor = git.Actor("Gigafactory Dev", "dev@gigafactory.invalid")
    repo.index.commit("Initial commit", author=actor, committer=actor)
    git.Repo.init(remote, bare=True, initial_branch="main")
    repo.create_remote("origin", str(remote)).push("main:main")
    return remote


def example_jobs(remote: pathlib.Path) -> list[dict[str, Any]]:
    tasks = {
        "add-docstrings": "Add docstrings to every function in orders.py.",
        "fix-rounding": "Round order totals to two decimals.",
        "write-tests": "Write unit tests for orders.total.",
    }
    return [
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.AGENTJOB_KIND,
            "metadata": {"name": name, "namespace": DEV_NAMESPACE, "labels": {EXAMPLE_LABEL: "true"}},
            "spec": {"queue": "default", "repo": {"url": str(remote)}, "task": {"prompt": prompt}, "agent": {"profile": "script"}},
        }
        for name, prompt in tasks.items()
    ]


CRDS = kubeclient.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                           namespaced=False)
ESTABLISHED_TIMEOUT = 60.0


async def install(client: kubeclient.Client) -> None:
    """The CRDs (created, or replaced by this version's) and the runner namespace, on an existing server."""
    for crd in crdgen.build_crds().values():
        try:
            await client.create(CRDS, crd)
        except kubeclient.AlreadyExists:
            current = await client.get(CRDS, crd["metadata"]["name"])
            crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
            await client.replace(CRDS, crd["metadata"]["name"], crd)
    with contextlib.suppress(kubeclient.AlreadyExists):
        await client.create(kubeclient.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RUNNER_NAMESPACE}})
    # A CRD serves its resource only once Established (kube-apiserver: a moment after the create).
    deadline = asyncio.get_running_loop().time() + ESTABLISHED_TIMEOUT
    for crd in crdgen.build_crds().values():
        while True:
            conditions = (await client.get(CRDS, crd["metadata"]["name"])).get("status", {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"CRD {crd['metadata']['name']} not Established after {ESTABLISHED_TIMEOUT:.0f} s")
            await asyncio.sleep(0.2)


async def _spawn(args: list[str], env: dict[str, str], log: pathlib.Path) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gigafactory.cli.main", *args,
            env={**os.environ, **env}, stdout=handle, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    finally:
        handle.close()


async def _stop(processes: list[asyncio.subprocess.Process], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM, then SIGKILL to whichever is still running after `grace` (longer than a runner's
    drain and agent stop, so a runner ends its own agents unless it hangs)."""
    for proc in processes:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    waits = [proc.wait() for proc in processes]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout=grace)
    except asyncio.TimeoutError:
        for proc in processes:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(proc.wait() for proc in processes))


def _end_left_agents(work_dir: pathlib.Path) -> list[int]:
    """The process groups of agents whose runner died before it could stop them (their pid files),
    as a runner restarted on the same work dir would end them (executing.kill_orphans)."""
    killed: list[int] = []
    for pids in sorted((work_dir / "runners").glob("*/agents")):
        killed += executing.kill_orphans(pids)
    return killed


class Board:
    """What the live table shows: each job's phases as they were seen (a bind and a claim can follow
    each other within one refresh, so the current phase alone would hide Bound) and why it failed."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], list[str]] = {}

    def record(self, event: str, body: dict[str, Any]) -> None:
        key = kubeclient.object_key(body)
        phase = objects.phase(body)
        if event == "DELETED":  # a job of the same name may come back (a rerun on an existing server)
            self.seen.pop(key, None)
            return
        phases = self.seen.setdefault(key, [])
        if not phases or phases[-1] != phase:
            phases.append(phase)

    def table(self, jobs: dict[tuple[str, str], dict[str, Any]]) -> rich.table.Table:
        table = rich.table.Table(box=None, pad_edge=False)
        # On a narrow terminal the reason gives way first; a job's name and phases stay on one line.
        for header, options in (("JOB", {"no_wrap": True}), ("PHASES", {"no_wrap": True}), ("ATTEMPT", {"no_wrap": True}),
                                ("RUNNER", {"no_wrap": True}), ("BRANCH", {"overflow": "fold"}), ("REASON", {"ratio": 1})):
            table.add_column(header, **options)
        for key, job in sorted(jobs.items()):
            status = objects.job_status(job)
            _, runner = objects.placement(job)
            phases = " → ".join(self.seen.get(key) or [objects.phase(job)])
            table.add_row(key[1], phases, str(status.get("attempt", 0)), runner, objects.text(objects.result(status), "branch"), _reason(job),
                          style="red" if status.get("phase") in ("Failed", "Cancelled") else None)
        return table


def _reason(job: dict[str, Any]) -> str:
    """Why a job is where it is: a failed attempt's outcome and message, or why a pending job waits."""
    phase, done = objects.phase(job), objects.attempts(job)
    last: objects.AttemptRecord = done[-1] if done else {}
    if phase == "Succeeded":
        return ""
    if last.get("outcome") and last.get("outcome") != "Succeeded":
        return " ".join(filter(None, [last.get("outcome"), last.get("reason"), last.get("message")]))[:120]
    if phase == "Pending":
        condition = objects.condition(job, constants.ConditionType.SCHEDULED.value)
        if condition is not None and condition.get("status") == "False":
            return f"{condition.get('reason', '')}: {condition.get('message', '')}"[:120]
    return ""


def _start_clean(work_dir: pathlib.Path) -> bool:
    """A run starts from a fresh sample remote and runner work dirs: the embedded API server starts
    empty, and a remote that kept the last run's branches would refuse this run's pushes."""
    stale = [work_dir / "repos", work_dir / "runners"]
    if not any(path.exists() for path in stale):
        return False
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return True


async def _drop_old_examples(client: kubeclient.Client) -> None:
    """On an existing API server: the example jobs of an earlier run go first (the operator, already
    running, finalizes them), so that this run's jobs start from scratch under the same names."""
    old, _ = await client.list(kubeclient.AGENTJOBS, namespace=DEV_NAMESPACE, label_selector=f"{EXAMPLE_LABEL}=true")
    for job in old:
        with contextlib.suppress(kubeclient.NotFound):
            await client.delete(kubeclient.AGENTJOBS, job["metadata"]["name"], namespace=DEV_NAMESPACE)
    deadline = asyncio.get_running_loop().time() + 60
    while old:
        old, _ = await client.list(kubeclient.AGENTJOBS, namespace=DEV_NAMESPACE, label_selector=f"{EXAMPLE_LABEL}=true")
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"the previous run's example jobs are still there after 60 s: {[j['metadata']['name'] for j in old]}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _dashboard(client: kubeclient.Client, port: int | None) -> Any:
    """The fleet dashboard on 127.0.0.1 for the duration of the block; its address is printed. A port
    in use costs the dashboard, not the run."""
    if port is None:
        yield None
        return
    from gigafactory.dashboard import serving

    async with contextlib.AsyncExitStack() as stack:
        try:
            dashboard = await stack.enter_async_context(serving.serving(client, serving.Settings(port=port, runner_namespace=RUNNER_NAMESPACE)))
        except OSError as exc:
            console.print(f"no dashboard: cannot serve on 127.0.0.1:{port} ({exc.strerror}); --dashboard-port picks another", markup=False)
            yield None
            return
        console.print(f"dashboard at {dashboard.url}", markup=False)
        yield dashboard


def embedded_server_installed() -> bool:
    """Whether the development package with the embedded API server can be imported."""
    try:
        return importlib.util.find_spec("localcluster.serving") is not None
    except ImportError:
        return False


async def run(options: Options) -> int:
    # Absolute: the sample remote's path becomes a job's repo URL, and git resolves it from elsewhere.
    options.work_dir = options.work_dir.resolve()
    options.work_dir.mkdir(parents=True, exist_ok=True)
    if _start_clean(options.work_dir):
        console.print(f"starting clean: removed the previous run's sample repository and runner work dirs in {options.work_dir}")
    server: "localcluster.LocalCluster | None" = None
    if options.server is None:
        import localcluster  # the development package: only for the embedded server (DEV_PACKAGE_HINT)

        try:
            # Private to whoever can read the kubeconfig (0600): other local users and browser pages
            # reach the loopback port too, and get 401 (localcluster.guarding).
            server = await localcluster.start(port=options.port, token=localcluster.new_token())
        except OSError as exc:
            console.print(f"error: cannot serve on 127.0.0.1:{options.port} ({exc.strerror}): is another `gigafactory dev` "
                          "running? Stop it, or pass --port with another port (0: any free one).", markup=False)
            return 2
        for crd in crdgen.build_crds().values():
            server.apply(crd)
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RUNNER_NAMESPACE}})
        kubeconfig = server.write_kubeconfig(options.kubeconfig)
        client = kubeclient.Client.from_kubeconfig(str(kubeconfig))
        console.print(f"API server at {server.url}; kubeconfig: {kubeconfig}")
    else:
        kubeconfig = options.server.resolve()
        client = kubeclient.Client.from_kubeconfig(str(kubeconfig))
        try:
            await install(client)
        except BaseException:
            await client.close()
            raise
        console.print(f"API server at {client.credentials.server} (from {kubeconfig}); CRDs installed")
    console.print(f"  try: kubectl --kubeconfig {kubeconfig} get agentjobs,factories -A")

    processes: list[asyncio.subprocess.Process] = []
    provider: ProcessProvider | None = None
    provider_task: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        remote = make_sample_repo(options.work_dir / "repos")
        factory_spec: dict[str, Any] = {"agents": ["script"], "slotsPerPod": options.slots, "subscriptions": ["*"], "namespaces": ["*"]}
        if options.on_demand:
            factory_spec["scaling"] = {"minReplicas": 0, "maxReplicas": options.runners,
                                       "scaleDownDelaySeconds": options.scale_down_delay_seconds}
        with contextlib.suppress(kubeclient.AlreadyExists):  # an existing server may keep it from a run before
            await client.create(kubeclient.FACTORIES, {
                "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": FACTORY}, "spec": factory_spec,
            })
        logs = options.work_dir / "logs"
        processes.append(await _spawn(
            ["operator", "--kubeconfig", str(kubeconfig)],
            {"GIGAFACTORY_NAMESPACE": RUNNER_NAMESPACE, "GIGAFACTORY_HTTP_PORT": "0", "GIGAFACTORY_ALLOW_LOCAL_REPOS": "true"}, logs / "operator.log"))
        if options.on_demand:
            provider = ProcessProvider(client, namespace=RUNNER_NAMESPACE, kubeconfig=kubeconfig, work_dir=options.work_dir)
            provider_task = asyncio.create_task(provider.run())
        for index in range(0 if options.on_demand else options.runners):
            pod = f"dev-runner-{index}"
            processes.append(await _spawn(["runner", "--kubeconfig", str(kubeconfig)], {
                "GIGAFACTORY_RUNNER_POD_NAME": pod,
                "GIGAFACTORY_RUNNER_NAMESPACE": RUNNER_NAMESPACE,
                "GIGAFACTORY_RUNNER_FACTORY": FACTORY,
                "GIGAFACTORY_RUNNER_SLOTS": str(options.slots),
                "GIGAFACTORY_RUNNER_WORK_DIR": str(options.work_dir / "runners" / pod),
                "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
                "GIGAFACTORY_RUNNER_SHUTDOWN_GRACE_SECONDS": str(RUNNER_DRAIN_SECONDS),
            }, logs / f"{pod}.log"))
        if options.on_demand:
            console.print(f"operator started; runners start with demand (up to {options.runners}); logs in {logs}")
        else:
            console.print(f"operator and {options.runners} runners started; their logs are in {logs}")

        board = Board()
        informer = kubeclient.Informer(client, kubeclient.AGENTJOBS, handler=board.record)
        async with informer.running(), _dashboard(client, options.dashboard_port):
            # Submitted once the informer watches, so that the table sees every phase from Pending on.
            if options.server is not None and options.examples:
                await _drop_old_examples(client)
            submitted = example_jobs(remote) if options.examples else []
            for job in submitted:
                with contextlib.suppress(kubeclient.AlreadyExists):
                    await client.create(kubeclient.AGENTJOBS, job)

            wanted = {(DEV_NAMESPACE, job["metadata"]["name"]) for job in submitted}
            reported = False
            with rich.live.Live(board.table(informer.cache), console=console, refresh_per_second=4) as live:
                while not stop.is_set():
                    live.update(board.table(informer.cache))
                    done = wanted and all(
                        objects.phase(informer.cache.get(key, {})) in {p.value for p in agentjobs.TERMINAL_PHASES}
                        for key in wanted
                    )
                    if done and not reported:
                        reported = True
                        live.update(board.table(informer.cache))
                        branches = [h.name for h in git.Repo(remote).heads if h.name != "main"]
                        failed = sorted(k[1] for k in wanted if informer.cache[k].get("status", {}).get("phase") != "Succeeded")
                        # Printed through the live display: the lines stay above the table, which keeps
                        # refreshing below them (stopping and restarting it would erase them).
                        live.console.print(f"all example jobs finished{f' ({len(failed)} not Succeeded: ' + ', '.join(failed) + ')' if failed else ''}; "
                                           f"branches pushed to {remote}: {', '.join(branches) or 'none'}", markup=False)
                        if options.exit_when_done:
                            return 1 if failed else 0
                        live.console.print("still serving: submit more with kubectl, Ctrl-C to stop")
                    dead = [p for p in processes if p.returncode is not None]
                    if dead:
                        console.print(f"a Gigafactory process exited (code {dead[0].returncode}); see {logs}")
                        return 1
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=0.25)
        return 0
    finally:
        if processes or provider is not None:
            console.print(f"stopping: runners stop their agents (up to {STOP_GRACE_SECONDS:.0f} s)")
        if provider_task is not None:
            provider_task.cancel()  # no new runner from here on
            with contextlib.suppress(asyncio.CancelledError, kubeclient.ApiError, OSError):
                await provider_task
        # All at once: the operator, the runners and the provider's runners each get the whole grace.
        await _stop(processes + (provider.all() if provider is not None else []))
        left = _end_left_agents(options.work_dir)
        if left:
            console.print(f"ended agents a runner left running: {', '.join(map(str, left))}")
        await client.close()
        if server is not None:
            await server.stop()
        console.print("stopped")
