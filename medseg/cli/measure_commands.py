"""``medseg measure``: volumes, shapes and intensity statistics of existing label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medseg._files import read_label_names
from medseg.errors import ConfigError, WriteError
from medseg.workflows.measure import TABLE_SUFFIXES, measure_files, write_table


def _totalsegmentator(labels: Path, out: Path, image: Path | None, names: Path | None) -> None:
    """``--format totalsegmentator``: TotalSegmentator's statistics.json of one label map (and its scan)."""
    import json

    from medseg.atomic import write_text_atomic
    from medseg.errors import ReadError
    from medseg.workflows.measure import totalsegmentator_statistics

    if out.suffix.lower() != ".json":
        raise WriteError("--format totalsegmentator writes JSON: give --out statistics.json", out)
    if labels.is_dir():
        raise ReadError("--format totalsegmentator measures one label map (and its scan), not a folder", labels)
    stats = totalsegmentator_statistics(labels, image, read_label_names(names) if names else None)
    write_text_atomic(out, json.dumps(stats, indent=4) + "\n")
    typer.echo(f"{len(stats)} structures -> {out}")


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
        fmt: Annotated[
            str, typer.Option("--format", help="table (one row per label; .csv/.json/.parquet by --out) or "
                                               "totalsegmentator (TotalSegmentator's statistics.json: volume in "
                                               "mm3 and mean intensity per structure, plus touches_border).")
        ] = "table",
    ) -> None:
        """Measure label maps: one row per label (and per object) with volumes, shape and intensity statistics."""
        if fmt not in ("table", "totalsegmentator"):
            raise ConfigError(f"unknown --format {fmt!r} (table or totalsegmentator)", "--format")
        if fmt == "totalsegmentator":
            _totalsegmentator(labels, out, image, names)
            return
        if out.suffix.lower() not in TABLE_SUFFIXES:
            raise WriteError(f"unknown table format {out.suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}", out)
        label_names = read_label_names(names) if names else None
        result, n_maps = measure_files(labels, image, label_names=label_names, instances=instances, shape=shape,
                                       connectivity=connectivity,
                                       warn=lambda message: typer.echo(f"warning: {message}", err=True))
        write_table(result, out)
        typer.echo(f"{len(result)} rows from {n_maps} label map(s) -> {out}")
