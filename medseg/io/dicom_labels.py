"""DICOM label objects in the format registry: SEG and RTSTRUCT files read as label maps, label maps written as them.

The registry's DICOM reader (:func:`load_dicom_path`) looks at a file's SOP
class first: a Segmentation or an RT Structure Set becomes a
:class:`~medseg.io.image.LabelMap` on the grid of the series it references
(:func:`medseg.io.dicom_seg.load_seg`, :func:`medseg.io.rtstruct.load_rtstruct`);
everything else goes to :func:`medseg.io.dicom.load_dicom`. So ``medseg.load``,
``evaluate``, ``measure`` and training data sets take SEG and RTSTRUCT files
wherever they take a label map.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydicom

from medseg.errors import WriteError
from medseg.io.dicom_seg import SEG_STORAGE, Segment, load_seg, save_seg
from medseg.io.dicom_seg import load_segments as load_seg_segments
from medseg.io.dicom_source import SourceLike
from medseg.io.image import Image, LabelMap
from medseg.io.rtstruct import RTSTRUCT_STORAGE, load_rois, load_rtstruct, save_rtstruct

_KINDS = {SEG_STORAGE: "SEG", RTSTRUCT_STORAGE: "RTSTRUCT"}


def label_object_kind(path: str | os.PathLike[str]) -> str | None:
    """``"SEG"`` or ``"RTSTRUCT"`` for a file holding one, else None (images, other files, unreadable files)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        kind = _KINDS.get(str(ds.get("SOPClassUID", "")))  # converting a corrupt element raises too
        modality = str(ds.get("Modality", "")).upper()
    except Exception:  # noqa: BLE001 - anything unreadable is left to the image reader, which names the problem
        return None
    return kind or (modality if modality in ("SEG", "RTSTRUCT") else None)


def load_dicom_path(path: str | os.PathLike[str], **options: Any) -> Image:
    """A DICOM series folder or file as an Image; a SEG or RTSTRUCT file as a LabelMap.

    SEG and RTSTRUCT take ``reference=`` (their series' folder or Image) and ``series=``;
    images take :func:`medseg.io.dicom.load_dicom`'s options.
    """
    kind = label_object_kind(path)
    if kind == "SEG":
        return load_seg(path, **options)
    if kind == "RTSTRUCT":
        return load_rtstruct(path, **options)
    from medseg.io.dicom import load_dicom

    return load_dicom(path, **options)


def load_segments(
    path: str | os.PathLike[str], *, reference: SourceLike | None = None, series: str | int | None = None
) -> list[Segment]:
    """One mask per segment of a SEG, or per ROI of an RTSTRUCT, on the referenced series' grid (overlaps kept).

    Raises
    ------
    medseg.errors.ReadError
        For a file that is neither.
    """
    from medseg.errors import ReadError

    kind = label_object_kind(path)
    if kind == "SEG":
        return load_seg_segments(path, reference=reference, series=series)
    if kind == "RTSTRUCT":
        return load_rois(path, reference=reference, series=series)
    raise ReadError("not a DICOM SEG or RT Structure Set", path)


def _source(labels: LabelMap, source: SourceLike | None, path: Path) -> SourceLike:
    """The series a label map derives from: ``source``, else the DICOM series the labels were made on."""
    from medseg.io.formats import format_of

    if source is None:
        if not labels.source:
            raise WriteError("a DICOM SEG or RTSTRUCT needs its source series: pass source=SERIES_FOLDER", path)
        source = labels
    origin = source.source if isinstance(source, Image) else source
    if isinstance(origin, str | os.PathLike) and (fmt := format_of(origin)) is not None and fmt.family != "dicom":
        raise WriteError(f"a DICOM SEG or RTSTRUCT derives from a DICOM series, not from {Path(origin).name}", path)
    return source


def write_seg(labels: LabelMap, path: str | os.PathLike[str], *, source: SourceLike | None = None,
              **options: Any) -> Path:
    """Registry writer: :func:`medseg.io.dicom_seg.save_seg`, the source defaulting to the labels' own series."""
    p = Path(path)
    return save_seg(labels, _source(labels, source, p), p, **options)


def write_rtstruct(labels: LabelMap, path: str | os.PathLike[str], *, source: SourceLike | None = None,
                   **options: Any) -> Path:
    """Registry writer: :func:`medseg.io.rtstruct.save_rtstruct`, the source defaulting to the labels' own series."""
    p = Path(path)
    return save_rtstruct(labels, _source(labels, source, p), p, **options)


__all__ = ["label_object_kind", "load_dicom_path", "load_segments", "write_rtstruct", "write_seg"]
