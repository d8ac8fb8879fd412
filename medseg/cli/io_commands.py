"""``medseg info``, ``medseg convert`` and ``medseg sample-data``: look at scans, change their format."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from medseg.errors import MedsegError, ReadError, SeriesError
from medseg.io import RASTER_SUFFIXES, VOLUME_SUFFIXES, Image, find_series, load, save

OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "mha")


def describe(image: Image, label: str) -> dict[str, Any]:
    """One JSON-ready summary of ``image``: what ``medseg info`` prints, units in the key names."""
    arr = image.array
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    lo, hi = (finite.min().item(), finite.max().item()) if finite.size else (None, None)
    return {
        "image": label,
        "modality": image.modality,
        "dimensions": list(image.shape),
        "channels": image.n_channels,
        "dtype": str(arr.dtype),
        "spacing_mm": [round(s, 6) for s in image.spacing] if image.spacing_known else None,
        "orientation": image.orientation,
        "intensity_min": lo,
        "intensity_max": hi,
        "intensity_unit": image.intensity_unit,
        "series_uid": image.meta.get("SeriesInstanceUID", ""),
        "series_description": image.meta.get("SeriesDescription", ""),
        "warnings": list(image.warnings),
    }


def _image_files(folder: Path) -> list[Path]:
    suffixes = VOLUME_SUFFIXES + RASTER_SUFFIXES
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffixes)
    )


def _dicom_series(folder: Path) -> list[Any]:
    """The DICOM image series under ``folder``; empty when it holds none."""
    try:
        return list(find_series(folder))
    except SeriesError:
        raise
    except ReadError:  # no DICOM image series here: the folder may hold other formats only
        return []


def scan(path: Path) -> Iterator[dict[str, Any]]:
    """One :func:`describe` row per image under ``path``; rows with ``error`` or ``note`` for what is not one.

    A file is loaded as is (errors raise). A folder yields each DICOM series
    (label ``folder [series index]``), each non-image DICOM object (with a ``note``)
    and each volume or raster file in it; a file that fails gives an ``error`` row.
    """
    if not path.is_dir():
        yield describe(load(path), str(path))
        return
    found = False
    for info in _dicom_series(path):
        found = True
        label = f"{info.files[0].parent if info.files else path} [series {info.index}]"
        if not info.is_image:
            yield {"image": label, "modality": info.modality, "note": f"not an image: {info.description}"}
            continue
        try:
            yield describe(load(path, series=info.index), label)
        except MedsegError as exc:
            yield {"image": label, "error": str(exc)}
    for file in _image_files(path):
        found = True
        try:
            yield describe(load(file), str(file))
        except MedsegError as exc:
            yield {"image": str(file), "error": str(exc)}
    if not found:
        raise ReadError("no image file or DICOM image series found", path)


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


def _series_option(series: str | None) -> dict[str, str | int]:
    """``load`` options for ``--series``: an index when it is all digits, else a SeriesInstanceUID."""
    if series is None:
        return {}
    return {"series": int(series) if series.isdigit() else series}


def _series_file_name(index: int, image: Image, fmt: str) -> str:
    """A file name that identifies a series without patient identity: index, modality, description."""
    words = [f"{index:03d}", image.modality or "image", image.meta.get("SeriesDescription", "")]
    stem = re.sub(r"[^A-Za-z0-9]+", "_", "_".join(w for w in words if w)).strip("_")
    return f"{stem}.{fmt}"


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
        str, typer.Option("--format", help="File format when OUTPUT is a folder: nii.gz, nii, nrrd, mha.")
    ] = "nii.gz",
) -> None:
    """Convert an image or DICOM series to NIfTI, NRRD or MHA, keeping geometry and values.

    A folder with several image series needs ``--series`` or a folder as OUTPUT
    (one file per series, named by index, modality and description).
    """
    if fmt not in OUTPUT_FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(OUTPUT_FORMATS)}", param_hint="--format")
    to_file = output.name.lower().endswith(VOLUME_SUFFIXES)
    if input_path.is_dir() and series is None:
        candidates = [info for info in _dicom_series(input_path) if info.is_image]
        if len(candidates) > 1 and to_file:
            raise SeriesError(
                f"{len(candidates)} image series found: choose one with --series UID|INDEX, or give a folder as OUTPUT",
                input_path,
            )
        if len(candidates) > 1:
            for info in candidates:
                image = load(input_path, series=info.index)
                _write(image, output / _series_file_name(info.index, image, fmt))
            return
    image = load(input_path, **_series_option(series))
    if to_file:
        _write(image, output)
    elif input_path.is_dir():
        _write(image, output / _series_file_name(0, image, fmt))
    else:
        _write(image, output / f"{input_path.name.split('.')[0]}.{fmt}")


def _write(image: Image, target: Path) -> None:
    save(image, target)
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
