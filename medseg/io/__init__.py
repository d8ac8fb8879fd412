"""Reading and writing images with their geometry intact.

``load`` picks the reader from the format registry (:mod:`medseg.io.formats`): a
folder or a DICOM file -> :mod:`medseg.io.dicom` (a DICOM SEG or RTSTRUCT file ->
a label map on its referenced series' grid, :mod:`medseg.io.dicom_labels`);
NIfTI/NRRD/MHA -> :mod:`medseg.io.volumes`; PNG/JPEG/BMP/TIFF -> :mod:`medseg.io.raster`.
``save`` picks the writer the same way from the output path (``.dcm``: a DICOM SEG).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.errors import ReadError, WriteError
from medseg.io.formats import format_of, reader_of
from medseg.io.image import Image, LabelMap


def load(path: str | os.PathLike[str], **options: Any) -> Image:
    """Read an image or DICOM series from ``path`` into an :class:`Image`.

    Parameters
    ----------
    path : path-like
        A file (DICOM, NIfTI, NRRD, MHA/MHD, PNG/JPEG/TIFF) or a folder
        searched recursively for DICOM series.
    **options
        Reader options: ``series`` (UID or index), ``strict`` and
        ``include_patient_identity`` for DICOM; ``reference`` (the series
        folder or Image) for a DICOM SEG or RTSTRUCT; ``spacing`` (mm) for raster
        images (PNG/JPEG/BMP/TIFF); ``modality`` for volume and raster files,
        which do not store one.

    Raises
    ------
    medseg.errors.ReadError
        (or a subclass) naming the path and the reason.
    """
    p = Path(path)
    if not p.exists():
        raise ReadError("no such file or folder", p)
    return reader_of(p).read(p, **options)


def load_labels(path: str | os.PathLike[str], label_names: Mapping[int, str] | None = None, **options: Any) -> LabelMap:
    """Read a label map: :func:`load`, then checked and converted by :func:`medseg.labelmap.as_label_map`."""
    from medseg.labelmap import as_label_map

    return as_label_map(load(path, **options), label_names=label_names)


def find_series(folder: str | os.PathLike[str]) -> list[Any]:
    """List every DICOM image series under ``folder`` (see :func:`medseg.io.dicom.find_series`)."""
    from medseg.io.dicom import find_series as _find

    return _find(folder)


def save(image: Image, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write ``image`` to ``path`` atomically, in the format its suffix names.

    NIfTI/NRRD/MHA keep the full geometry; PNG and TIFF (2D label maps and
    pictures) store the pixels in the array's own order, so a mask written for
    a PNG input overlays that input pixel for pixel.
    """
    p = Path(path)
    fmt = format_of(p) if not p.is_dir() else None
    if fmt is None or fmt.writer is None:
        from medseg.io.formats import FORMATS

        writable = ", ".join(s for f in FORMATS if f.writer for s in f.suffixes[:1])
        raise WriteError(f"unknown output format (medseg writes {writable})", p)
    return fmt.write(image, p, **options)


def save_seg(labels: LabelMap, source: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write ``labels`` as a DICOM SEG of its source series (see :func:`medseg.io.dicom_seg.save_seg`)."""
    from medseg.io.dicom_seg import save_seg as _save

    return _save(labels, source, path, **options)


def save_rtstruct(labels: LabelMap, source: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write ``labels`` as an RT Structure Set of its source series (see :func:`medseg.io.rtstruct.save_rtstruct`)."""
    from medseg.io.rtstruct import save_rtstruct as _save

    return _save(labels, source, path, **options)


def load_segments(path: str | os.PathLike[str], **options: Any) -> list[Any]:
    """One mask per segment of a DICOM SEG or ROI of an RTSTRUCT (see :func:`medseg.io.dicom_labels.load_segments`)."""
    from medseg.io.dicom_labels import load_segments as _load

    return _load(path, **options)


__all__ = ["Image", "LabelMap", "find_series", "load", "load_labels", "load_segments", "save", "save_rtstruct",
           "save_seg"]
