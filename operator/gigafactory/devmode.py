"""`gigafactory dev`: the whole system on one machine, no cluster needed.

It starts the embedded API server with the CRDs, the operator and a few local runner processes
(a dev Factory that takes jobs of every namespace and queue and offers the `script` profile),
makes a sample repository with a local bare remote, submits example jobs against it, shows a live
table until they finish and prints where the pushed branches are. Ctrl-C stops everything.
"""

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import signal
import sys
from typing import Any

import git
import rich.console
import rich.live
import rich.table

from gigafactory import constants, crdgen, kubeclient, localcluster
from gigafactory.models import agentjobs

DEV_NAMESPACE = "default"
RUNNER_NAMESPACE = "gigafactory-dev"
FACTORY = "dev"

console = rich.console.Console(highlight=False)


@dataclasses.dataclass
class Options:
    work_dir: pathlib.Path
    kubeconfig: pathlib.Path
    port: int = 0
    runners: int = 2
    slots: int = 2
    examples: bool = True
    exit_when_done: bool = False


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
            "metadata": {"name": name, "namespace": DEV_NAMESPACE},
            "spec": {"queue": "default", "repo": {"url": str(remote)}, "task": {"prompt": prompt}, "agent": {"profile": "script"}},
        }
        for name, prompt in tasks.items()
    ]


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


async def _stop(processes: list[asyncio.subprocess.Process], grace: float = 10.0) -> None:
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


def _table(jobs: dict[tuple[str, str], dict[str, Any]]) -> rich.table.Table:
    table = rich.table.Table("JOB", "PHASE", "ATTEMPT", "RUNNER", "BRANCH", box=None, pad_edge=False)
    for (_, name), job in sorted(jobs.items()):
        status = job.get("status") or {}
        result = status.get("result") or {}
        last = (status.get("attempts") or [{}])[-1]
        runner = (status.get("assignment") or {}).get("pod") or last.get("pod", "")
        table.add_row(name, status.get("phase", "Pending"), str(status.get("attempt", 0)), runner, result.get("branch", ""))
    return table


async def run(options: Options) -> int:
    # Absolute: the sample remote's path becomes a job's repo URL, and git resolves it from elsewhere.
    options.work_dir = options.work_dir.resolve()
    options.work_dir.mkdir(parents=True, exist_ok=True)
    server = await localcluster.start(port=options.port)
    for crd in crdgen.build_crds().values():
        server.apply(crd)
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RUNNER_NAMESPACE}})
    kubeconfig = server.write_kubeconfig(options.kubeconfig)
    console.print(f"API server at {server.url}; kubeconfig: {kubeconfig}")
    console.print(f"  try: kubectl --kubeconfig {kubeconfig} get agentjobs,factories -A")

    processes: list[asyncio.subprocess.Process] = []
    client = kubeclient.Client.from_kubeconfig(str(kubeconfig))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        remote = make_sample_repo(options.work_dir / "repos")
        await client.create(kubeclient.FACTORIES, {
            "apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "metadata": {"name": FACTORY},
            "spec": {"agents": ["script"], "slotsPerPod": options.slots, "subscriptions": ["*"], "namespaces": ["*"]},
        })
        logs = options.work_dir / "logs"
        processes.append(await _spawn(
            ["operator", "--kubeconfig", str(kubeconfig)],
            {"GIGAFACTORY_NAMESPACE": RUNNER_NAMESPACE, "GIGAFACTORY_HTTP_PORT": "0", "GIGAFACTORY_ALLOW_LOCAL_REPOS": "true"}, logs / "operator.log"))
        for index in range(options.runners):
            pod = f"dev-runner-{index}"
            processes.append(await _spawn(["runner", "--kubeconfig", str(kubeconfig)], {
                "GIGAFACTORY_RUNNER_POD_NAME": pod,
                "GIGAFACTORY_RUNNER_NAMESPACE": RUNNER_NAMESPACE,
                "GIGAFACTORY_RUNNER_FACTORY": FACTORY,
                "GIGAFACTORY_RUNNER_SLOTS": str(options.slots),
                "GIGAFACTORY_RUNNER_WORK_DIR": str(options.work_dir / "runners" / pod),
                "GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS": "true",
            }, logs / f"{pod}.log"))
        console.print(f"operator and {options.runners} runners started; their logs are in {logs}")

        submitted = example_jobs(remote) if options.examples else []
        for job in submitted:
            with contextlib.suppress(kubeclient.AlreadyExists):
                await client.create(kubeclient.AGENTJOBS, job)

        informer = kubeclient.Informer(client, kubeclient.AGENTJOBS)
        async with informer.running():
            wanted = {(DEV_NAMESPACE, job["metadata"]["name"]) for job in submitted}
            reported = False
            with rich.live.Live(_table(informer.cache), console=console, refresh_per_second=4) as live:
                while not stop.is_set():
                    live.update(_table(informer.cache))
                    done = wanted and all(
                        (informer.cache.get(key, {}).get("status") or {}).get("phase") in {p.value for p in agentjobs.TERMINAL_PHASES}
                        for key in wanted
                    )
                    if done and not reported:
                        reported = True
                        live.update(_table(informer.cache))
                        live.stop()
                        console.print()
                        branches = [h.name for h in git.Repo(remote).heads if h.name != "main"]
                        console.print(f"all example jobs finished; branches pushed to {remote}: {', '.join(branches) or 'none'}")
                        if options.exit_when_done:
                            break
                        console.print("still serving: submit more with kubectl, Ctrl-C to stop")
                        live.start()
                    dead = [p for p in processes if p.returncode is not None]
                    if dead:
                        console.print(f"a Gigafactory process exited (code {dead[0].returncode}); see {logs}")
                        return 1
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=0.25)
        return 0
    finally:
        await _stop(processes)
        await client.close()
        await server.stop()
        console.print("stopped")
