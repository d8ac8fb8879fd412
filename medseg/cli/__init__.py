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
COMMAND_MODULES = ["io_commands", "engine_commands", "measure_commands", "evaluate_commands", "batch_commands",
                   "pacs_commands"]


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


def join_option_values(args: list[str], option: str = "--folds") -> list[str]:
    """``--folds 0 1 ...`` -> ``--folds 0,1``: the fold numbers (or ``all``) after the option become one value.

    Options take one value on a typer command line; nnU-Net's ``-f 0 1`` style
    is kept by joining the fold numbers that follow ``--folds`` (a path
    argument named only by digits can still follow after ``--``).
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if arg == option and i + 1 < len(args):
            values = [args[i + 1]]
            i += 2
            while i < len(args) and args[i].isdigit():
                values.append(args[i])
                i += 1
            out.extend([option, ",".join(values)])
            continue
        out.append(arg)
        i += 1
    return out


def main(args: list[str] | None = None) -> None:
    """Console entry point (``args``: the command line, default ``sys.argv[1:]``).

    A medseg error becomes one red line on stderr, ``medseg error: <file>: <reason>``, and exit code 2.
    """
    import sys

    from medseg.errors import MedsegError

    args = join_option_values(list(sys.argv[1:] if args is None else args))
    try:
        app(args, prog_name="medseg")
    except MedsegError as exc:
        from rich.console import Console
        from rich.markup import escape

        line = escape(" ".join(str(exc).splitlines()))  # one line, whatever the message holds; no markup from paths
        Console(stderr=True).print(f"[red]medseg error:[/red] {line}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
