"""``medseg measure``: volumes, shapes and intensity statistics of existing label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg._files import read_label_names
from medseg.errors import WriteError
from medseg.workflows.measure import TABLE_SUFFIXES, measure_files, write_table


def register(app: typer.Typer) -> None:
    """Add ``medseg measure`` to ``app``."""

    @app.command("measure")
    def measure_command(
        labels: Annotated[Path, typer.Argument(help="Label map file, or a folder of label map files.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output table: .csv, .json or .parquet.")],
        image: Annotated[
            Path | None,
            typer.Option(
                "--image",
                "-i",
                help="Scan for intensity statistics (file or DICOM folder; a folder of images for a folder of label maps).",
            ),
        ] = None,
        names: Annotated[
            Path | None, typer.Option("--labels", help='JSON file {"1": "spleen", ...} naming the label values.')
        ] = None,
        instances: Annotated[bool, typer.Option("--instances", help="Also one row per connected object.")] = False,
        shape: Annotated[
            bool, typer.Option("--shape/--no-shape", help="Compute shape features (surface, diameters, ...).")
        ] = True,
        connectivity: Annotated[
            int | None, typer.Option(help="4/8 (2D) or 6/18/26 (3D) for --instances; full by default.")
        ] = None,
    ) -> None:
        """Measure label maps: one row per label (and per object) with volumes, shape and intensity statistics."""
        if out.suffix.lower() not in TABLE_SUFFIXES:
            raise WriteError(f"unknown table format {out.suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}", out)
        label_names = read_label_names(names) if names else None
        result, n_maps = measure_files(labels, image, label_names=label_names, instances=instances, shape=shape,
                                       connectivity=connectivity,
                                       warn=lambda message: typer.echo(f"warning: {message}", err=True))
        write_table(result, out)
        typer.echo(f"{len(result)} rows from {n_maps} label map(s) -> {out}")
