"""The ``medseg`` command line: a thin layer over the Python API.

Each sub-module registers its commands on :data:`app` through ``register(app)``;
heavy imports (torch, MONAI) happen inside the commands, so ``medseg info`` starts fast.
"""

from __future__ import annotations

import importlib

import typer

from medseg import __version__

app = typer.Typer(
    name="medseg",
    help="Medical image segmentation: read scans, segment, measure, evaluate, batch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per group of commands, in the order of the data flow.
COMMAND_MODULES = ["io_commands", "engine_commands", "measure_commands", "evaluate_commands", "batch_commands"]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
) -> None:
    """medseg: from scans on disk to trustworthy numbers."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"medseg.cli.{_name}").register(app)


def main(args: list[str] | None = None) -> None:
    """Console entry point (``args``: the command line, default ``sys.argv[1:]``).

    A medseg error becomes one red line on stderr, ``medseg error: <file>: <reason>``, and exit code 2.
    """
    from medseg.errors import MedsegError

    try:
        app(args, prog_name="medseg")
    except MedsegError as exc:
        from rich.console import Console
        from rich.markup import escape

        line = escape(" ".join(str(exc).splitlines()))  # one line, whatever the message holds; no markup from paths
        Console(stderr=True).print(f"[red]medseg error:[/red] {line}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
