"""``medseg measure`` (volumes, shapes and intensity statistics of existing label maps) and ``medseg ctr``
(chest radiographs segmented and tabulated: lung and heart areas, cardiothoracic ratio)."""

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
def _check_table_suffix(out: Path) -> None:
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise WriteError(f"unknown table format {out.suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}", out)


def _is_dicom_folder(path: Path) -> bool:
    """A folder given as --image is a DICOM series when it holds no NIfTI/NRRD/PNG... files of its own."""
    from medseg.io.formats import is_image_file

    return not any(p.is_file() and is_image_file(p) and p.suffix.lower() != ".dcm" for p in path.iterdir())


def register(app: typer.Typer) -> None:
    """Add ``medseg measure`` and ``medseg ctr`` to ``app``."""

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
        chest: Annotated[
            bool,
            typer.Option(
                "--chest",
                help="Chest radiograph masks (right lung, left lung, heart): one row per label map with the areas "
                "(cm2), heart and thoracic widths and the cardiothoracic ratio, flagged when doubtful.",
            ),
        ] = False,
    ) -> None:
        """Measure label maps: one row per label (and per object) with volumes, shape and intensity statistics."""
        if fmt not in ("table", "totalsegmentator"):
            raise ConfigError(f"unknown --format {fmt!r} (table or totalsegmentator)", "--format")
        if fmt == "totalsegmentator":
            _totalsegmentator(labels, out, image, names)
            return
        _check_table_suffix(out)
        if chest and instances:
            raise ConfigError("--chest gives one row per label map; it does not combine with --instances", "--chest")
        label_names = read_label_names(names) if names else None
        result, n_maps = measure_files(
            labels,
            image,
            label_names=label_names,
            instances=instances,
            shape=shape,
            connectivity=connectivity,
            chest=chest,
            warn=lambda message: typer.echo(f"warning: {message}", err=True),
        )
        write_table(result, out)
        typer.echo(f"{len(result)} rows from {n_maps} label map(s) -> {out}")

    @app.command("ctr")
    def ctr_command(
        segmenter: Annotated[str, typer.Argument(help="Chest radiograph segmenter (right lung, left lung, heart).")],
        inputs: Annotated[list[Path], typer.Argument(help="Radiographs (DICOM, PNG, JPEG, TIFF) or folders of them.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output table: .csv, .json or .parquet.")],
        labels_out: Annotated[
            Path | None, typer.Option("--labels-out", help="Also write each label map into this folder.")
        ] = None,
        device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")] = "auto",
    ) -> None:
        """Segment chest radiographs and write one table: lung and heart areas, cardiothoracic ratio, flags."""
        from medseg.cli.engine_commands import segmenter_options
        from medseg.segmenters import load_segmenter
        from medseg.workflows.chest import ctr_table

        _check_table_suffix(out)
        table = ctr_table(load_segmenter(segmenter, **segmenter_options(device)), inputs, labels_out=labels_out)
        write_table(table, out)
        failed = table[table["error"] != ""]
        for row in failed.itertuples():
            typer.echo(f"warning: {row.error}", err=True)
        flagged = int(table["flags"].fillna("").ne("").sum())
        typer.echo(f"{len(table)} radiograph(s) -> {out} ({flagged} flagged, {len(failed)} failed)")
