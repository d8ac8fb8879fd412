"""Reading and writing images with their geometry intact.

``load`` picks the reader from the path: a folder or a DICOM file -> :mod:`medseg.io.dicom`;
``.nii``/``.nii.gz``/``.nrrd``/``.nhdr``/``.mha``/``.mhd`` -> :mod:`medseg.io.volumes`;
``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff``/``.bmp`` -> :mod:`medseg.io.raster`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medseg.errors import ReadError
from medseg.io.image import Image

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(VOLUME_SUFFIXES):
        return "volume"
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    return "dicom"


def load(path: str | os.PathLike[str], **options: Any) -> Image:
    """Read an image or DICOM series from ``path`` into an :class:`Image`.

    Parameters
    ----------
    path : path-like
        A file (DICOM, NIfTI, NRRD, MHA/MHD, PNG/JPEG/TIFF) or a folder
        searched recursively for DICOM series.
    **options
        Reader options: ``series`` (UID or index), ``strict`` and
        ``include_patient_identity`` for DICOM; ``spacing`` (mm) for raster
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
    kind = _kind(p)
    if kind == "volume":
        from medseg.io.volumes import load_volume

        return load_volume(p, **options)
    if kind == "raster":
        from medseg.io.raster import load_raster

        return load_raster(p, **options)
    from medseg.io.dicom import load_dicom

    return load_dicom(p, **options)


def find_series(folder: str | os.PathLike[str]) -> list[Any]:
    """List every DICOM image series under ``folder`` (see :func:`medseg.io.dicom.find_series`)."""
    from medseg.io.dicom import find_series as _find

    return _find(folder)


def save(image: Image, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write ``image`` to ``path`` (NIfTI, NRRD or MHA by extension), atomically."""
    from medseg.io.volumes import save_volume

    return save_volume(image, path, **options)


__all__ = ["Image", "find_series", "load", "save"]
