"""The `gigafactory` command: one typer app; each process or user command registers here."""

import asyncio
import pathlib
from typing import Annotated, Any

import typer

import gigafactory
from gigafactory.cli import jobs

app = typer.Typer(
    name="gigafactory",
    help="Dispatch autonomous coding-agent jobs to runner pools on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[env ...]" in option help and print flags as "<bool>".
    rich_markup_mode=None,
)


@app.callback()
def root() -> None:
    """Dispatch autonomous coding-agent jobs to runner pools on Kubernetes."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(gigafactory.__version__)


jobs.register(app)


@app.command()
def operator(
    kubeconfig: Annotated[
        pathlib.Path | None, typer.Option(help="Kubeconfig file to use (unset: the in-cluster service account).")
    ] = None,
) -> None:
    """Run the operator: enroll factories, schedule and bind jobs. Settings from GIGAFACTORY_* env."""
    from gigafactory import config, kopfmain  # the operator's dependencies load only for this command

    settings = config.OperatorSettings()
    if kubeconfig is not None:
        settings = settings.model_copy(update={"kubeconfig": str(kubeconfig)})
    kopfmain.run(settings)


@app.command()
def runner(
    kubeconfig: Annotated[
        pathlib.Path | None, typer.Option(help="Kubeconfig file to use (unset: the in-cluster service account).")
    ] = None,
    pod_name: Annotated[str | None, typer.Option(help="This pod's name [env GIGAFACTORY_RUNNER_POD_NAME].")] = None,
    namespace: Annotated[str | None, typer.Option(help="This pod's namespace [env GIGAFACTORY_RUNNER_NAMESPACE].")] = None,
    factory: Annotated[str | None, typer.Option(help="The Factory this pod belongs to [env GIGAFACTORY_RUNNER_FACTORY].")] = None,
    slots: Annotated[int | None, typer.Option(help="Jobs at once [env GIGAFACTORY_RUNNER_SLOTS].")] = None,
    work_dir: Annotated[pathlib.Path | None, typer.Option(help="Mirrors and worktrees [env GIGAFACTORY_RUNNER_WORK_DIR].")] = None,
    profiles_file: Annotated[
        pathlib.Path | None, typer.Option(help="Agent profiles YAML [env GIGAFACTORY_RUNNER_PROFILES_FILE].")
    ] = None,
    allow_local_repos: Annotated[
        bool | None, typer.Option(help="Accept file:// URLs and local paths (dev, tests) [env GIGAFACTORY_RUNNER_ALLOW_LOCAL_REPOS].")
    ] = None,
) -> None:
    """Run a factory runner: heartbeat, claim bound jobs, run agents in worktrees, push, report.
    Settings from GIGAFACTORY_RUNNER_* env; a flag beats its variable (see docs/runner.md)."""
    import logging

    import pydantic

    from kubernetes import config as kubernetes_config

    from gigafactory import config
    from gigafactory.runner import running

    flags = {"kubeconfig": kubeconfig, "pod_name": pod_name, "namespace": namespace, "factory": factory, "slots": slots,
             "work_dir": work_dir, "profiles_file": profiles_file, "allow_local_repos": allow_local_repos}
    overrides: dict[str, Any] = {key: str(value) if isinstance(value, pathlib.Path) else value
                 for key, value in flags.items() if value is not None}
    try:
        settings = config.RunnerSettings(**overrides)
    except pydantic.ValidationError as exc:
        problems = ", ".join(f"--{str(e['loc'][0]).replace('_', '-')} / GIGAFACTORY_RUNNER_{str(e['loc'][0]).upper()}: {e['msg']}"
                             for e in exc.errors())
        typer.echo(f"error: runner settings missing or invalid: {problems}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(running.main(settings))
    except (ValueError, kubernetes_config.ConfigException) as exc:  # one line, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def dashboard(
    kubeconfig: Annotated[
        pathlib.Path | None, typer.Option(help="Kubeconfig file to use (unset: the in-cluster service account).")
    ] = None,
    address: Annotated[str, typer.Option(help="Listen on this address (loopback by default: see docs/dashboard.md before "
                                               "exposing it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Listen on this port (0: any free one).")] = 17081,
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="A host name requests may name besides loopback and --address (repeatable), e.g. behind a proxy.")] = None,
    runner_namespace: Annotated[str | None, typer.Option(
        help="Read the runners' heartbeat Leases in this namespace only (unset: every namespace).")] = None,
) -> None:
    """Serve the read-only fleet dashboard: factories, queues and jobs, live in a browser."""
    import logging

    from kubernetes import config as kubernetes_config

    from gigafactory.dashboard import serving

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = serving.Settings(address=address, port=port,
                                allowed_hosts=frozenset(h.lower() for h in allowed_host or ()), runner_namespace=runner_namespace)
    try:
        asyncio.run(serving.run(None if kubeconfig is None else str(kubeconfig), settings,
                                ready=lambda url: typer.echo(f"dashboard at {url}", err=False)))
    except (kubernetes_config.ConfigException, OSError) as exc:  # one line, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def dev(
    work_dir: Annotated[pathlib.Path, typer.Option(help="Where the sample repository, runner work dirs and logs go.")] = pathlib.Path(".dev"),
    kubeconfig: Annotated[pathlib.Path | None, typer.Option(help="Write the kubeconfig here (default: WORK_DIR/kubeconfig).")] = None,
    port: Annotated[int | None, typer.Option(
        help="Embedded API server port on 127.0.0.1 [default: 17080, the same every run; 0: any free port].")] = None,
    runners: Annotated[int, typer.Option(min=1, max=16, help="Local runner processes.")] = 2,
    slots: Annotated[int, typer.Option(min=1, max=8, help="Slots per runner.")] = 2,
    examples: Annotated[bool, typer.Option(help="Submit the example jobs.")] = True,
    exit_when_done: Annotated[bool, typer.Option(help="Stop once the example jobs finished.")] = False,
    on_demand: Annotated[bool, typer.Option(help="Scale the dev factory from zero with demand (up to --runners).")] = False,
    dashboard_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="The dashboard's port on 127.0.0.1 [default: 17081; 0: any free port].")] = None,
    dashboard: Annotated[bool, typer.Option(help="Serve the fleet dashboard.")] = True,
    server: Annotated[pathlib.Path | None, typer.Option(
        help="Use the API server of this kubeconfig (a real kube-apiserver, say) instead of starting the embedded "
             "one; installs the CRDs there. --kubeconfig and --port then do not apply.")] = None,
) -> None:
    """Run Gigafactory locally: embedded API server, operator, runners, a sample repo and example jobs."""
    from gigafactory import devmode  # imports git and the runner's code only for this command

    if server is None and not devmode.embedded_server_installed():
        typer.echo(f"error: gigafactory dev: {devmode.DEV_PACKAGE_HINT}", err=True)
        raise typer.Exit(2)

    options = devmode.Options(
        work_dir=work_dir, kubeconfig=kubeconfig or work_dir / "kubeconfig",
        port=devmode.DEFAULT_PORT if port is None else port, runners=runners,
        slots=slots, examples=examples, exit_when_done=exit_when_done, on_demand=on_demand,
        server=server,
        dashboard_port=(devmode.DASHBOARD_PORT if dashboard_port is None else dashboard_port) if dashboard else None,
    )
    raise typer.Exit(asyncio.run(devmode.run(options)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
