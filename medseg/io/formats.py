"""The one registry of image file formats: suffixes, dimensionality, reader, writer, label capability.

Every place that asks "is this an image file", "what is this file's case name"
or "how do I write this" asks here, so adding a format is one entry::

    >>> format_of("scan.nii.gz").name, format_of("mask.PNG").name
    ('nifti', 'png')
    >>> strip_image_suffix("case_007_seg.nii.gz")
    'case_007_seg'

Readers and writers are named as ``"module:function"`` and imported on first
use, so asking about a suffix never imports nibabel, SimpleITK or Pillow.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medseg.errors import WriteError

Family = Literal["volume", "raster", "dicom", "slide"]


@dataclass(frozen=True)
class Format:
    """One file format medseg reads (and maybe writes).

    Attributes
    ----------
    name : str
        Short name used by ``--format`` options (``nifti``, ``nrrd``, ``mha``, ``png``, ``tiff`` ...).
    suffixes : tuple of str
        Lower-case file suffixes, the preferred one (for writing) first.
    family : {"volume", "raster", "dicom", "slide"}
        Volumes carry full geometry; rasters are 2D pictures (TIFF also stacks) in stored pixel order;
        slides are whole-slide images, read lazily (:mod:`medseg.io.slide`): their reader returns a
        low-resolution overview, never a whole full-resolution level.
    dims : tuple of int
        Spatial dimensionalities the format stores.
    reader, writer : str or None
        ``"module:function"`` of the reader (``path, **options -> Image``) and the writer
        (``image, path -> Path``); None when medseg does not write the format.
    lossless_labels : bool
        True when a label map written in this format reads back unchanged (JPEG is lossy).
    aliases : tuple of str
        Other names ``--format`` accepts.
    """

    name: str
    suffixes: tuple[str, ...]
    family: Family
    dims: tuple[int, ...]
    reader: str
    writer: str | None
    lossless_labels: bool
    aliases: tuple[str, ...] = ()

    def read(self, path: Path, **options: Any) -> Any:
        """Read ``path`` with this format's reader."""
        return _resolve(self.reader)(path, **options)

    def write(self, image: Any, path: Path, **options: Any) -> Path:
        """Write ``image`` to ``path`` with this format's writer (atomically)."""
        if self.writer is None:
            raise WriteError(f"medseg does not write {self.name} files", path)
        if image.ndim not in self.dims:
            dims = " or ".join(f"{d}D" for d in self.dims)
            raise WriteError(f"a {image.ndim}D image cannot be written as {self.name} (it holds {dims} images)", path)
        return _resolve(self.writer)(image, path, **options)


FORMATS: tuple[Format, ...] = (
    Format("nifti", (".nii.gz", ".nii"), "volume", (2, 3), "medseg.io.volumes:load_volume",
           "medseg.io.volumes:save_volume", True),
    Format("nrrd", (".nrrd", ".nhdr"), "volume", (2, 3), "medseg.io.volumes:load_volume",
           "medseg.io.volumes:save_volume", True),
    Format("mha", (".mha", ".mhd"), "volume", (2, 3), "medseg.io.volumes:load_volume",
           "medseg.io.volumes:save_volume", True),
    Format("png", (".png",), "raster", (2,), "medseg.io.raster:load_raster", "medseg.io.raster_write:save_raster", True),
    Format("jpeg", (".jpg", ".jpeg"), "raster", (2,), "medseg.io.raster:load_raster", None, False),
    Format("bmp", (".bmp",), "raster", (2,), "medseg.io.raster:load_raster", None, True),
    Format("tiff", (".tif", ".tiff"), "raster", (2, 3), "medseg.io.raster:load_raster",
           "medseg.io.raster_write:save_raster", True),
    # DICOM images and series; SEG and RTSTRUCT files read as label maps, and label maps are written as a
    # DICOM SEG (or an RTSTRUCT) of their source series (medseg.io.dicom_labels)
    Format("dicom", (".dcm",), "dicom", (2, 3), "medseg.io.dicom_labels:load_dicom_path",
           "medseg.io.dicom_labels:write_seg", True, aliases=("dicom-seg", "seg")),
    Format("rtstruct", (".dcm",), "dicom", (3,), "medseg.io.dicom_labels:load_dicom_path",
           "medseg.io.dicom_labels:write_rtstruct", False),
    Format("slide", (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif"), "slide", (2,),
           "medseg.io.slide:load_slide_overview", None, False),
)
# suffix -> format, longest suffix first so ".nii.gz" wins over ".gz"-less matches
_BY_SUFFIX = sorted(((s, f) for f in FORMATS for s in f.suffixes), key=lambda sf: len(sf[0]), reverse=True)
_DICOM = next(f for f in FORMATS if f.name == "dicom")


def _resolve(spec: str) -> Callable[..., Any]:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)


def _suffix_match(name: str) -> tuple[str, Format] | None:
    lower = name.lower()
    return next(((s, f) for s, f in _BY_SUFFIX if lower.endswith(s)), None)


def format_of(path: str | os.PathLike[str]) -> Format | None:
    """The format of ``path`` by its suffix; a folder is a DICOM series folder; None for an unknown suffix."""
    p = Path(path)
    if p.is_dir():
        return _DICOM
    match = _suffix_match(p.name)
    return match[1] if match else None


def reader_of(path: str | os.PathLike[str]) -> Format:
    """The format to read ``path`` with: by suffix, DICOM for folders and for files without a known suffix."""
    return format_of(path) or _DICOM


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a visible file whose suffix is an image format's (``.dcm`` included)."""
    p = Path(path)
    return not p.name.startswith(".") and _suffix_match(p.name) is not None


def strip_image_suffix(name: str) -> str:
    """``name`` without its image suffix (``ct.nii.gz`` -> ``ct``); unchanged when it has none."""
    match = _suffix_match(name)
    return name[: -len(match[0])] if match else name


def format_named(name: str) -> Format:
    """The writable format called ``name`` (a name, an alias or a suffix: ``nii.gz``, ``.png``, ``seg``).

    Raises
    ------
    medseg.errors.WriteError
        For an unknown or read-only format, listing the writable ones.
    """
    key = name.lower().strip()
    dotted = key if key.startswith(".") else f".{key}"
    for f in FORMATS:
        if f.writer and (key == f.name or key in f.aliases or dotted in f.suffixes):
            return f
    writable = ", ".join(f.name for f in FORMATS if f.writer)
    raise WriteError(f"unknown output format {name!r}; medseg writes {writable}")


def label_output_format(source: str | os.PathLike[str] | None, ndim: int) -> Format:
    """Default format of a label map derived from ``source``: the input's own raster family, else NIfTI.

    PNG/JPEG/BMP inputs give PNG (same pixel order, so the mask overlays the
    input in any viewer), TIFF gives TIFF; volumes and DICOM give NIfTI.
    """
    fmt = format_of(source) if source is not None else None
    if fmt is not None and fmt.family == "raster" and ndim in (2, 3):
        return format_named("tiff" if fmt.name == "tiff" or ndim == 3 else "png")
    return format_named("nifti")


__all__ = [
    "FORMATS",
    "Format",
    "format_named",
    "format_of",
    "is_image_file",
    "label_output_format",
    "reader_of",
    "strip_image_suffix",
]
