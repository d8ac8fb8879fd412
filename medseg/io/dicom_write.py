"""Write an :class:`~medseg.io.image.Image` as a single-frame CT or MR DICOM series.

Used to build the committed sample data and DICOM edge cases for tests, so the
output is deterministic when a ``seed`` is given: the same image, seed and
description always give byte-identical files with the same UIDs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from medseg.atomic import atomic_path
from medseg.errors import WriteError
from medseg.io.image import Image

SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
_INT16 = np.iinfo(np.int16)


def write_dataset(ds: Dataset, target: Path, what: str) -> Path:
    """Write ``ds`` to ``target`` atomically as a DICOM file; a WriteError names ``what`` and the reason."""
    try:
        with atomic_path(target) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    except OSError as exc:
        raise WriteError(f"cannot write {what} ({exc.strerror})", target) from exc
    return target


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DICOM DS limit)."""
    return format_number_as_ds(float(value)) if value != 0 else "0"


def _rescale(array: np.ndarray) -> tuple[float, float]:
    """Slope and intercept mapping ``array`` into int16 storage.

    Integer-valued data spanning at most 65535 values is stored exactly
    (slope 1); anything else is quantised to 16 bits over its range.
    """
    lo, hi = float(array.min()), float(array.max())
    integral = np.issubdtype(array.dtype, np.integer) or bool(np.all(np.mod(array, 1) == 0))
    if integral and hi - lo <= _INT16.max - _INT16.min:
        if lo >= _INT16.min and hi <= _INT16.max:
            return 1.0, 0.0
        return 1.0, float(np.floor((lo + hi) / 2))
    slope = (hi - lo) / (_INT16.max - _INT16.min) if hi > lo else 1.0
    return slope, lo - _INT16.min * slope


def _uid(seed: str | None, *parts: object) -> str:
    return generate_uid() if seed is None else generate_uid(entropy_srcs=[seed, *map(str, parts)])


def save_dicom_series(
    image: Image,
    folder: str | os.PathLike[str],
    *,
    series_description: str = "",
    modality: str | None = None,
    seed: str | None = None,
    study_uid: str | None = None,
    series_number: int = 1,
    body_part: str = "",
    overwrite: bool = False,
) -> list[Path]:
    """Write a 3D scalar image as one single-frame DICOM file per slice.

    Slice ``k`` holds ``image.array[:, :, k]``: columns run along array axis 0,
    rows along axis 1, and its ImagePositionPatient is the world position of
    voxel ``(0, 0, k)``. Voxels are stored as int16 with RescaleSlope/Intercept
    (exact for integer-valued data spanning at most 65535 values, else
    quantised to 16 bits). No patient identity is written (PatientName
    ``ANONYMOUS^PHANTOM``).

    Parameters
    ----------
    image : Image
        3D scalar image; the first two direction columns must be orthonormal
        (the slice axis may be oblique to them, which reads back as a gantry tilt).
    folder : path-like
        Output folder, created if needed; files are ``IM0001.dcm``, ``IM0002.dcm`` ...
    series_description : str
        SeriesDescription.
    modality : {"CT", "MR"}, optional
        Defaults to ``image.modality`` when that is CT or MR, else CT.
    seed : str, optional
        Derive every UID deterministically from this string (plus the
        description and series number); None gives fresh random UIDs.
    study_uid : str, optional
        StudyInstanceUID to join an existing study; derived from ``seed`` otherwise.
    series_number : int
        SeriesNumber.
    body_part : str
        BodyPartExamined; defaults to ``image.meta["BodyPartExamined"]`` if present.
    overwrite : bool
        Replace files of the same names; otherwise an existing file is an error.

    Returns
    -------
    list of Path
        The written files, in slice order.

    Raises
    ------
    medseg.errors.WriteError
        For a 2D/multi-channel image, a bad modality or direction, an existing file.
    """
    folder = Path(folder)
    modality = (modality or (image.modality if image.modality in SOP_CLASS else "CT")).upper()
    if modality not in SOP_CLASS:
        raise WriteError(f"save_dicom_series writes CT or MR series, not modality {modality!r}", folder)
    if image.ndim != 3 or image.channel_axis:
        raise WriteError(f"save_dicom_series needs a 3D scalar image, got {image!r}", folder)
    array = np.asarray(image.array)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) or array.dtype == bool:
        array = array.astype(np.int16)
    if not np.all(np.isfinite(array)):
        raise WriteError("image holds NaN or infinite values", folder)
    row_dir, col_dir = image.direction[:, 0], image.direction[:, 1]
    if abs(row_dir @ col_dir) > 1e-6 or not np.allclose([row_dir @ row_dir, col_dir @ col_dir], 1.0, atol=1e-6):
        raise WriteError("the first two direction columns must be orthonormal (in-plane axes)", folder)

    slope, intercept = (float(_ds(v)) for v in _rescale(array))  # the values the files will hold
    stored = np.rint((array.astype(np.float64) - intercept) / slope).clip(_INT16.min, _INT16.max).astype(np.int16)
    normal = np.cross(row_dir, col_dir)
    nx, ny, nz = image.shape
    sx, sy, sz = image.spacing
    origin = np.asarray(image.origin)
    study_uid = study_uid or _uid(seed, "study")
    series_uid = _uid(seed, "series", series_description, series_number)
    frame_uid = _uid(seed, "frame-of-reference")
    body_part = body_part or str(image.meta.get("BodyPartExamined", ""))

    targets = [folder / f"IM{k + 1:04d}.dcm" for k in range(nz)]
    if not overwrite and (existing := [p for p in targets if p.exists()]):
        raise WriteError(f"{existing[0].name} exists (pass overwrite=True to replace)", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create output folder ({exc.strerror})", folder) from exc

    for k, target in enumerate(targets):
        position = origin + k * sz * image.direction[:, 2]
        sop_uid = _uid(seed, "sop", series_description, series_number, k)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SOPClassUID = SOP_CLASS[modality]
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer = "medseg"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName = "ANONYMOUS^PHANTOM"
        ds.PatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.BodyPartExamined = body_part
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = ""
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(position @ normal)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [_ds(sy), _ds(sx)]  # (between rows, between columns)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        write_dataset(ds, target, "DICOM slice")
    return targets
