"""``medseg info``, ``medseg convert`` and ``medseg sample-data``: look at scans, change their format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medseg.io import Image
from medseg.workflows.inspect import scan


def _short_label(label: str, root: Path) -> str:
    """``label`` relative to the folder ``info`` was given, or the file name."""
    if root.is_dir() and label.startswith(str(root)):
        rest = label[len(str(root)) :].lstrip("/")
        return f"{root.name}{rest}" if not rest or rest.startswith(" [") else rest  # a series in root itself
    return Path(label).name


def _print_table(root: Path, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 160))
    table = Table(title=f"medseg info {root}", title_justify="left")
    table.add_column("Image", overflow="fold", min_width=12)
    for column in ("Modality", "Dimensions", "Spacing (mm)", "Orientation", "Intensity range"):
        table.add_column(column, no_wrap=True)
    table.add_column("Warnings", overflow="fold", min_width=12)
    for row in rows:
        name = escape(_short_label(row["image"], root))  # "[series 0]" is not rich markup
        if "error" in row or "note" in row:
            text = f"[red]error: {row['error']}[/red]" if "error" in row else row["note"]
            table.add_row(name, row.get("modality") or "", "", "", "", "", text)
            continue
        dims = "x".join(map(str, row["dimensions"])) + (f" x{row['channels']}ch" if row["channels"] > 1 else "")
        spacing = "x".join(f"{s:.4g}" for s in row["spacing_mm"]) if row["spacing_mm"] else "unknown"
        if row["intensity_min"] is None:
            intensity = "no finite values"
        else:
            intensity = f"{row['intensity_min']:.6g} .. {row['intensity_max']:.6g} {row['intensity_unit']}".strip()
        table.add_row(
            name, row["modality"] or "?", dims, spacing, row["orientation"], intensity, "\n".join(row["warnings"])
        )
    console.print(table)
    for row in rows:
        if "slide" in row:
            _print_slide(console, _short_label(row["image"], root), row["slide"])


def _print_slide(console: Any, name: str, slide: dict[str, Any]) -> None:
    """The levels, pixel size, objective and associated images of a whole-slide image."""
    from rich.markup import escape
    from rich.table import Table

    mpp = f"{slide['mpp_um'][0]:.4g} x {slide['mpp_um'][1]:.4g} um/px ({slide['mpp_source']})" if slide["mpp_um"] \
        else "unknown (give --mpp)"
    objective = f"{slide['objective_power']:g}x" if slide["objective_power"] else "unknown"
    table = Table(title=f"{escape(name)}: {slide['vendor'] or 'slide'} via {slide['backend']}, pixel size {mpp}, "
                        f"objective {objective}", title_justify="left")
    for column in ("Level", "Dimensions (px)", "Downsample", "um/px"):
        table.add_column(column, no_wrap=True)
    for level in slide["levels"]:
        um = f"{level['mpp_um'][0]:.4g}" if level["mpp_um"] else "?"
        table.add_row(str(level["level"]), "x".join(map(str, level["dimensions"])), f"{level['downsample']:g}", um)
    console.print(table)
    associated = ", ".join(f"{k} {w}x{h}" for k, (w, h) in slide["associated_images"].items()) or "none"
    console.print(f"associated images: {escape(associated)}")


def info(
    path: Annotated[Path, typer.Argument(help="An image file, a DICOM file, or a folder (searched recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show every image or DICOM series under PATH: modality, dimensions, spacing, orientation, intensities."""
    rows = list(scan(path))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_table(path, rows)


def convert(
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Image file, DICOM file or folder of DICOM series.")
    ],
    output: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT", help="Output .nii/.nii.gz/.nrrd/.mha file, or a folder for one file per series."
        ),
    ],
    series: Annotated[
        str | None, typer.Option("--series", help="Series to convert: SeriesInstanceUID or index.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="File format when OUTPUT is a folder: nii.gz, nii, nrrd, mha; or, for a "
                                           "2D label map, the annotation format of OUTPUT: coco, geojson, labelme, "
                                           "cvat.")
    ] = "nii.gz",
    like: Annotated[
        Path | None, typer.Option("--like", help="For an annotation file as INPUT: the image whose grid it is on.")
    ] = None,
) -> None:
    """Convert an image or DICOM series to NIfTI, NRRD or MHA, keeping geometry and values; label maps to and
    from annotation files (COCO, QuPath GeoJSON, LabelMe, CVAT XML).

    A folder with several image series needs ``--series`` or a folder as OUTPUT
    (one file per series, named by index, modality and description).
    """
    from medseg.workflows.convert import convert_image

    convert_image(input_path, output, series=series, fmt=fmt, like=like, on_write=_report_written)


def _report_written(image: Image, target: Path) -> None:
    dims = "x".join(map(str, image.shape))
    spacing = "x".join(f"{s:.4g}" for s in image.spacing) + " mm" if image.spacing_known else "spacing unknown"
    typer.echo(f"wrote {target} ({dims} {image.modality or 'image'}, {spacing}, {image.orientation})")


def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to write the sample data sets into.")] = Path("sample_data"),
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the committed sample_data/ uses 0.")] = 0,
) -> None:
    """Generate medseg's synthetic sample data (CT phantoms, radiographs, nuclei) with exact ground truth."""
    from medseg.sample_data import generate

    for path in generate(out, seed=seed):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``info``, ``convert`` and ``sample-data`` to the ``medseg`` app."""
    app.command("info")(info)
    app.command("convert")(convert)
    app.command("sample-data")(sample_data)
