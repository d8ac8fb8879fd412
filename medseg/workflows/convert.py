"""``medseg convert``: an image or DICOM series to NIfTI/NRRD/MHA (or a 2D picture format), geometry kept."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from medseg.errors import ConfigError, SeriesError
from medseg.io import Image, load, save
from medseg.io.formats import format_of
from medseg.workflows.inspect import dicom_series

OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "mha")
"""``--format`` values for a folder OUTPUT."""
ANNOTATION_FORMATS = ("coco", "geojson", "labelme", "cvat")
"""``--format`` values that write a 2D label map as polygons (:mod:`medseg.annotations`)."""


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


def convert_image(
    input_path: Path,
    output: Path,
    *,
    series: str | None = None,
    fmt: str = "nii.gz",
    like: Path | None = None,
    on_write: Callable[[Image, Path], None] | None = None,
) -> list[Path]:
    """Convert ``input_path`` to ``output`` (a file, or a folder for one file per series); returns the files written.

    A folder with several image series needs ``series`` or a folder as
    ``output`` (one file per series, named by index, modality and description).
    Annotations: a 2D label map to a COCO/GeoJSON/LabelMe/CVAT file (``fmt``
    one of :data:`ANNOTATION_FORMATS`, or a ``.geojson``/``.xml`` output), and
    an annotation file back to a label map (on ``like``'s grid when given).
    ``on_write(image, path)`` is called after each file is written.

    Raises
    ------
    medseg.errors.SeriesError
        Several series and a file as ``output``.
    medseg.errors.ConfigError
        An unknown ``fmt``.
    """
    from medseg.annotations import is_annotation_file

    if fmt not in OUTPUT_FORMATS + ANNOTATION_FORMATS:
        raise ConfigError(f"must be one of {', '.join(OUTPUT_FORMATS + ANNOTATION_FORMATS)}, got {fmt!r}", "--format")
    if fmt in ANNOTATION_FORMATS or is_annotation_file(output) or is_annotation_file(input_path):
        written_one = _convert_annotations(input_path, output, fmt if fmt in ANNOTATION_FORMATS else None, like)
        if on_write is not None:
            on_write(*written_one)
        return [written_one[1]]
    written: list[Path] = []

    def write(image: Image, target: Path) -> None:
        written.append(save(image, target))
        if on_write is not None:
            on_write(image, target)

    to_file = (fmt_out := format_of(output)) is not None and fmt_out.family != "dicom"
    if input_path.is_dir() and series is None:
        candidates = [info for info in dicom_series(input_path) if info.is_image]
        if len(candidates) > 1 and to_file:
            raise SeriesError(
                f"{len(candidates)} image series found: choose one with --series UID|INDEX, or give a folder as OUTPUT",
                input_path,
            )
        if len(candidates) > 1:
            for info in candidates:
                image = load(input_path, series=info.index)
                write(image, output / _series_file_name(info.index, image, fmt))
            return written
    image = load(input_path, **_series_option(series))
    if to_file:
        write(image, output)
    elif input_path.is_dir():
        write(image, output / _series_file_name(0, image, fmt))
    else:
        write(image, output / f"{input_path.name.split('.')[0]}.{fmt}")
    return written


def _convert_annotations(input_path: Path, output: Path, fmt: str | None, like: Path | None) -> tuple[Image, Path]:
    """Label map -> annotation file, or annotation file -> label map; returns what was written and where."""
    from medseg.annotations import is_annotation_file, read_annotations, write_annotations
    from medseg.io import load_labels

    if is_annotation_file(input_path):
        labels = read_annotations(input_path, load(like) if like is not None else None)
        return labels, save(labels, output)
    labels = load_labels(input_path)
    return labels, write_annotations(labels, output, format=fmt)
