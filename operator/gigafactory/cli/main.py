"""The `gigafactory` command: one typer app; each process or user command registers here."""

import typer

import gigafactory
from gigafactory.cli import jobs

app = typer.Typer(
    name="gigafactory",
    help="Dispatch autonomous coding-agent jobs to runner pools on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """Dispatch autonomous coding-agent jobs to runner pools on Kubernetes."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(gigafactory.__version__)


jobs.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
