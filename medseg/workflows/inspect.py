"""``medseg info``: what every image or DICOM series under a path is (modality, grid, intensities)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError, ReadError, SeriesError
from medseg.io import Image, find_series, load
from medseg.io.formats import format_of, is_image_file


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


def describe_slide(path: Path, label: str) -> dict[str, Any]:
    """:func:`describe` of a whole-slide image: level-0 size and pixel size, intensities of its overview, and
    under ``slide`` its levels, microns per pixel, objective power and associated images."""
    from medseg.io.slide import open_slide

    with open_slide(path) as slide:
        overview = slide.overview(1024)
        row = describe(overview, label)
        row.update(
            dimensions=list(slide.dimensions),
            spacing_mm=[round(m / 1000.0, 9) for m in slide.mpp] if slide.mpp else None,
            slide=slide.describe(),
            warnings=[] if slide.mpp else ["pixel size unknown: pass --mpp (um per pixel) for results in um"],
        )
    return row


def _describe_file(path: Path, label: str) -> dict[str, Any]:
    from medseg.io.slide import is_slide_file

    return describe_slide(path, label) if is_slide_file(path) else describe(load(path), label)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p) and format_of(p).family != "dicom")


def dicom_series(folder: Path) -> list[Any]:
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
        yield _describe_file(path, str(path))
        return
    found = False
    for info in dicom_series(path):
        found = True
        label = f"{info.files[0].parent if info.files else path} [series {info.index}]"
        if not info.is_image:
            yield {"image": label, "modality": info.modality, "note": f"not an image: {info.description}"}
            continue
        try:
            yield describe(load(path, series=info.index), label)
        except MedsegError as exc:
            yield {"image": label, "error": str(exc)}
    for file in image_files(path):
        found = True
        try:
            yield _describe_file(file, str(file))
        except MedsegError as exc:
            yield {"image": str(file), "error": str(exc)}
    if not found:
        raise ReadError("no image file or DICOM image series found", path)
