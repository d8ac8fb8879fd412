"""DICOM files to planes: header parsing, per-frame geometry and pixel decoding.

A *plane* is one 2D image of a DICOM object: a single-frame file, or one frame
of a multi-frame file. :func:`read_header` parses a file once (pixel data is
deferred, read from disk only when decoded); :func:`planes_of` turns it into
:class:`Plane` records carrying everything series assembly needs;
:func:`decode_file` decodes a file's pixels to stored values. Every failure
is a :class:`~medseg.errors.ReadError` subclass naming the file.

Files are untrusted: :func:`read_header` converts every element medseg reads
later, so a corrupt one fails there; :func:`planes_of` refuses frame counts
and bit depths the pixel data cannot hold, :func:`check_pixel_data` a
declared size larger than the bytes present (or than memory), and
:func:`decode_file` a codestream whose size differs from the header's, all
before any decoder runs; a decoder's own failure, native panics included,
becomes a ReadError (:func:`medseg.io.guard.decoding`).
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from medseg.errors import NotAnImageError, ReadError, UnsupportedTransferSyntaxError
from medseg.io.guard import PASS_THROUGH, check_declared_size, decoding, one_line

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# modalities whose objects are never images, even when they carry pixel-like data
NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "PR", "KO", "SEG", "REG", "ECG", "HD", "AU", "DOC"}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_RAW_DICOM_STARTS = (b"\x02\x00", b"\x00\x02", b"\x08\x00", b"\x00\x08")  # first tag group, LE or BE
_DEFER_BYTES = 8192  # values larger than this (pixel data) are read from disk only when used
_NATIVE_LITTLE_ENDIAN = frozenset({pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian})
# Lossless compressed syntaxes: decoding is exact, so decoders that release the GIL (and therefore decode
# slices in parallel threads) give pydicom's values: imagecodecs for JPEG 2000 (the OpenJPEG library of
# pydicom's plugin, faster than GDCM's copy), GDCM through SimpleITK for the others.
IMAGECODECS_PARALLEL_SYNTAXES = frozenset({pydicom.uid.JPEG2000Lossless})
GDCM_PARALLEL_SYNTAXES = frozenset(
    {pydicom.uid.RLELossless, pydicom.uid.JPEGLossless, pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEGLSLossless}
)
IDENTITY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate")
META_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesDescription",
    "SeriesNumber",
    "PhotometricInterpretation",
)
# pixel description attributes that must hold one integer each
PIXEL_INTEGERS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation")
# Elements medseg reads outside planes_of (grouping, sorting, metadata, decoder choice), which pydicom converts
# from raw bytes when first read. read_header checks them once, so that a corrupt one (unknown VR, wrong length,
# several values where one belongs) rejects its file as a ReadError instead of failing anywhere later. Those read
# for every file are converted there (no extra cost); those read for a series' first file only have their VR
# checked, which costs less than converting them (pydicom converts text of the right VR leniently).
_CONVERTED = (*PIXEL_INTEGERS, "Modality", "SeriesInstanceUID", "SOPInstanceUID", "ImageType",
              "PhotometricInterpretation")  # fmt: skip
_VR_CHECKED = (*IDENTITY_KEYWORDS, *(k for k in META_KEYWORDS if k not in _CONVERTED), "SOPClassUID",
               "FrameOfReferenceUID", "SpacingBetweenSlices", "RescaleType", "Units", "DoseUnits")  # fmt: skip
_FILE_META_CONVERTED = ("MediaStorageSOPClassUID", "TransferSyntaxUID")
_SINGLE_UIDS = ("TransferSyntaxUID", "MediaStorageSOPClassUID")


def _tags(keywords: tuple[str, ...]) -> tuple[tuple[str, BaseTag, frozenset[str]], ...]:
    """``(keyword, tag, VRs the dictionary allows, UN included)`` for each keyword: tag lookups are the cheap ones."""
    return tuple((k, Tag(tag_for_keyword(k)), frozenset({"UN", *dictionary_VR(k).split(" or ")})) for k in keywords)


_HEADER_CHECKS = (
    (_tags(_CONVERTED), _tags(_VR_CHECKED)),
    (_tags(_FILE_META_CONVERTED), _tags(("MediaStorageSOPInstanceUID",))),
)
_SUBSAMPLED_422 = ("YBR_FULL_422", "YBR_PARTIAL_422")  # native 4:2:2 pixels: two samples per pixel, not three
_J2K_SYNTAXES = frozenset(pydicom.uid.JPEG2000TransferSyntaxes)
_JPEG_SYNTAXES = frozenset(pydicom.uid.JPEGTransferSyntaxes + pydicom.uid.JPEGLSTransferSyntaxes)
_J2K_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the image and tile size marker
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, their arithmetic-coded and
# differential forms) and JPEG-LS's SOF55
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


def read_header(path: Path) -> Dataset | None:
    """Parse one DICOM file, leaving pixel data on disk until it is decoded.

    Files without the 128-byte preamble are accepted when they parse as DICOM.
    Returns None for a file that is not DICOM at all.

    Raises
    ------
    medseg.errors.ReadError
        When the file is DICOM but its header is corrupt or truncated.
    """
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except pydicom.errors.InvalidDicomError:
        ds = None
    except Exception as exc:  # pydicom raises many types for corrupt headers
        raise ReadError(f"corrupt or truncated DICOM header ({one_line(exc, path)})", path) from exc
    if ds is not None:
        _check_header(ds, path)
        # pydicom stops quietly at a truncation between elements: a storage object left with
        # none of its defining attributes was cut short
        sop_class = ds.file_meta.get("MediaStorageSOPClassUID", "")
        essentials = ("SOPClassUID", "Modality", *PIXEL_KEYWORDS)
        if sop_class and sop_class != MEDIA_STORAGE_DIRECTORY and not any(k in ds for k in essentials):
            raise ReadError("DICOM header ends early (truncated file?): no SOP Class UID, modality or pixel data", path)
        return ds
    try:  # no preamble: only worth parsing when the file starts with a group 0002 or 0008 tag
        with open(path, "rb") as fh:
            if fh.read(2) not in _RAW_DICOM_STARTS:
                return None
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
        if "SOPClassUID" not in ds and not any(k in ds for k in PIXEL_KEYWORDS):
            return None
    except Exception:  # noqa: BLE001 - any failure parsing a preamble-less file means it is not DICOM
        return None
    _check_header(ds, path)
    return ds


def _check_header(ds: Dataset, path: Path) -> None:
    """Check the elements medseg reads outside :func:`planes_of`: their VR, and for some their value.

    Raises
    ------
    medseg.errors.ReadError
        Naming the first element with a VR its keyword does not have or that
        pydicom cannot convert, a pixel attribute that is not one integer, a
        UID attribute holding several values, or a sequence where a value belongs.
    """
    file_meta = getattr(ds, "file_meta", None)
    for source, (converted, vr_checked) in zip((ds, file_meta), _HEADER_CHECKS, strict=True):
        if source is None:
            continue
        for keyword, tag, vrs in vr_checked:
            element = source.get_item(tag, keep_deferred=True)  # a deferred value would be read and converted
            if element is None:
                continue
            undefined_length = getattr(element, "length", 0) == 0xFFFFFFFF  # implicit VR: read as a sequence
            vr = element.VR or ("SQ" if undefined_length else None)
            if vr is not None and vr not in vrs:
                raise ReadError(f"DICOM element {keyword} has VR {one_line(repr(vr), limit=20)}", path)
        for keyword, tag, _ in converted:
            if tag not in source:
                continue
            try:
                value = source[tag].value
            except Exception as exc:
                raise ReadError(f"corrupt DICOM element {keyword} ({one_line(exc, path)})", path) from exc
            if value in (None, ""):
                continue
            if keyword in PIXEL_INTEGERS and (not isinstance(value, int) or value < 0):
                raise ReadError(f"{keyword} is {one_line(repr(value), limit=40)}, not one integer", path)
            if keyword in _SINGLE_UIDS and not isinstance(value, str):
                raise ReadError(f"{keyword} is {one_line(repr(value), limit=60)}, not one UID", path)
            if isinstance(value, Sequence):  # none of them is a sequence; its items are unparsed
                raise ReadError(f"{keyword} holds a sequence, not a value", path)


def transfer_syntax(ds: Dataset) -> UID | None:
    """The file meta's TransferSyntaxUID, None when the file has none."""
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return syntax if isinstance(syntax, UID) or not syntax else UID(syntax)  # a UI element's value is a UID


def is_image(ds: Dataset) -> bool:
    """True when ``ds`` holds pixel data meant to be viewed as an image."""
    modality = str(ds.get("Modality", "")).upper()
    return modality not in NON_IMAGE_MODALITIES and "Rows" in ds and any(k in ds for k in PIXEL_KEYWORDS)


def describe_non_image(ds: Dataset) -> str:
    """A short name for what a non-image object is (e.g. ``'RTSTRUCT (RT Structure Set Storage)'``)."""
    modality = one_line(str(ds.get("Modality", "") or ""), limit=40)
    sop = ds.get("SOPClassUID")
    name = one_line(UID(str(sop)).name, limit=80) if sop else ""  # str: a corrupt one may hold several values
    return f"{modality} ({name})" if modality and name else modality or name or "object of unknown type"


@dataclass
class Plane:
    """One 2D image of a DICOM object, with the geometry and rescale that apply to it.

    ``position`` (LPS mm) and ``orientation`` (row then column direction
    cosines) are None when the object has no patient geometry (radiographs,
    secondary captures). ``pixel_spacing`` is ``(between rows, between
    columns)`` in mm, None when unknown; ``spacing_source`` names the attribute it came from.
    """

    path: Path
    ds: Dataset
    frame: int | None
    rows: int
    columns: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    spacing_source: str
    slice_thickness: float | None
    slope: float
    intercept: float
    instance: int
    localizer: bool


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _number_text(ds: Dataset, keyword: str) -> Any:
    """A DS/IS attribute's value as float or tuple of floats, parsed from its raw text once per distinct text.

    The geometry and rescale attributes repeat, byte for byte, across the slices of a
    series; converting them through pydicom's element machinery for every file is most
    of the per-file header cost. Converted elements (or odd text) take pydicom's path.
    """
    elem = ds.get_item(keyword)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        parsed = _parse_number_text(elem.value)
        if parsed is not None:
            return parsed[0] if len(parsed) == 1 else parsed
    return ds.get(keyword)


@functools.lru_cache(maxsize=4096)
def _parse_number_text(raw: bytes) -> tuple[float, ...] | None:
    text = raw.strip(b" \x00")
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(b"\\"))
    except ValueError:
        return None


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _pick(groups: list[Dataset | None], sequence: str, keyword: str) -> Any:
    """``keyword`` from ``sequence`` in the first functional group that has it (per-frame before shared)."""
    for group in groups:
        item = _first_item(group, sequence) if group is not None else None
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _plane_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    """In-plane spacing (mm) and the attribute it came from.

    PixelSpacing (patient plane), else ImagerPixelSpacing (detector plane of a
    radiograph) divided by EstimatedRadiographicMagnificationFactor when
    present, else NominalScannedPixelSpacing (digitised film); None when absent.
    """
    if (sp := _floats(_number_text(ds, "PixelSpacing"), 2)) is not None:
        return (sp[0], sp[1]), "PixelSpacing"
    if (sp := _floats(ds.get("ImagerPixelSpacing"), 2)) is not None:
        mag = _number(ds.get("EstimatedRadiographicMagnificationFactor"), None)
        if mag is not None and mag > 0:
            return (sp[0] / mag, sp[1] / mag), "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return (sp[0], sp[1]), "ImagerPixelSpacing"
    if (sp := _floats(ds.get("NominalScannedPixelSpacing"), 2)) is not None:
        return (sp[0], sp[1]), "NominalScannedPixelSpacing"
    return None, ""


def _number(value: Any, default: float | None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _frame_offsets(ds: Dataset, n_frames: int) -> np.ndarray | None:
    """Frame offsets (mm along the slice normal, from the first frame) of an RT Dose grid, if given."""
    offsets = _floats(ds.get("GridFrameOffsetVector") or [], n_frames)
    if offsets is None:
        return None
    return offsets - offsets[0]  # relative (first 0) and absolute (first = z of ImagePosition) forms alike


def planes_of(ds: Dataset, path: Path) -> list[Plane]:
    """The planes of an image object: one per frame, with per-frame functional groups applied.

    Raises
    ------
    medseg.errors.ReadError
        When the header's image attributes are missing or malformed.
    """
    try:
        return _planes_of(ds, path)
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(f"malformed image attributes ({one_line(exc, path)})", path) from exc


def frame_count(ds: Dataset, path: Path) -> int:
    """NumberOfFrames as an integer >= 1 (1 when absent, empty or 0, as some writers store it).

    Raises
    ------
    medseg.errors.ReadError
        When it is negative, fractional, not a number or several values.
    """
    value = _number_text(ds, "NumberOfFrames")
    if value is None or value == "":
        return 1
    n = _number(value, None)
    if n is None or n < 0 or not n.is_integer():
        raise ReadError(f"NumberOfFrames {one_line(repr(value), limit=40)} is not a whole number of frames", path)
    return max(1, int(n))


def _frame_bits(ds: Dataset, path: Path, rows: int, columns: int) -> tuple[int, str]:
    """Bits of one decoded frame, rows x columns x samples x BitsAllocated (4:2:2 YBR: two samples per pixel),
    and those terms for a message.

    Raises
    ------
    medseg.errors.ReadError
        For a BitsAllocated or BitsStored no decoder honours.
    """
    bits = int(ds.get("BitsAllocated") or 0)
    if bits != 1 and (bits % 8 or not 8 <= bits <= 64):
        raise ReadError(f"BitsAllocated {bits} is not 1 or a multiple of 8 up to 64", path)
    stored = int(ds.get("BitsStored") or bits)
    if not 1 <= stored <= bits:
        raise ReadError(f"BitsStored {stored} is not between 1 and BitsAllocated {bits}", path)
    samples = int(ds.get("SamplesPerPixel") or 1)
    subsampled = samples == 3 and str(ds.get("PhotometricInterpretation", "")).upper() in _SUBSAMPLED_422
    terms = f"{rows} x {columns} pixels x {samples} samples x {bits} bits"
    return rows * columns * samples * bits * (2 if subsampled else 3) // 3, terms


def _pixel_bytes_held(ds: Dataset, path: Path) -> tuple[int | None, bool]:
    """Bytes of pixel data the file holds (None when unknown) and whether they are encapsulated (compressed).

    Deferred pixel data counts up to the end of the file, whatever its length field says.
    """
    element = ds.get_item(next(k for k in PIXEL_KEYWORDS if k in ds), keep_deferred=True)
    if not isinstance(element, RawDataElement):
        return len(element.value or b""), element.is_undefined_length
    undefined = element.length == 0xFFFFFFFF
    if element.value is not None:
        return len(element.value), undefined
    if transfer_syntax(ds) == pydicom.uid.DeflatedExplicitVRLittleEndian:  # offsets are in the inflated stream
        return None, undefined
    room = max(0, path.stat().st_size - element.value_tell)
    return (room if undefined else min(element.length, room)), undefined


def _check_frame_count(ds: Dataset, path: Path, rows: int, columns: int, n_frames: int) -> None:
    """Refuse a NumberOfFrames the pixel data has no room for (each frame is a plane: this bounds the work)."""
    if n_frames == 1:
        return
    frame_bits, _ = _frame_bits(ds, path, rows, columns)
    held, encapsulated = _pixel_bytes_held(ds, path)
    if held is None:
        return
    room = held // 8 if encapsulated else held * 8 // frame_bits  # a compressed frame takes an 8-byte item at least
    if n_frames > room:
        raise ReadError(f"NumberOfFrames {n_frames}, but the pixel data has room for {room} frames at most", path)


def check_pixel_data(ds: Dataset, path: Path) -> None:
    """Refuse pixel data smaller than the header declares, or decoded frames larger than memory, before decoding.

    Native (uncompressed) pixel data must hold rows x columns x frames x
    samples x BitsAllocated bits; compressed frames have no bound but memory.

    Raises
    ------
    medseg.errors.ReadError
        Giving the declared and the present sizes.
    """
    n_frames = frame_count(ds, path)
    frame_bits, terms = _frame_bits(ds, path, int(ds.Rows), int(ds.Columns))
    held, encapsulated = _pixel_bytes_held(ds, path)
    check_declared_size(
        path,
        math.ceil(frame_bits * n_frames / 8),
        f"{n_frames} frames of {terms}",
        present=None if encapsulated else held,
    )


def _planes_of(ds: Dataset, path: Path) -> list[Plane]:
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows < 1 or columns < 1:
        raise ReadError(f"image has {rows} rows x {columns} columns", path)
    n_frames = frame_count(ds, path)
    _check_frame_count(ds, path, rows, columns, n_frames)
    multi = "NumberOfFrames" in ds
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    localizer = "LOCALIZER" in image_type or "SCOUT" in image_type
    top_spacing, top_source = _plane_spacing(ds)
    top_orientation = _floats(_number_text(ds, "ImageOrientationPatient"), 6)
    top_position = _floats(_number_text(ds, "ImagePositionPatient"), 3)
    top_thickness = _number(_number_text(ds, "SliceThickness"), None)
    top_slope = (
        _number(_number_text(ds, "RescaleSlope"), None) or _number(_number_text(ds, "DoseGridScaling"), None) or 1.0
    )
    top_intercept = _number(_number_text(ds, "RescaleIntercept"), 0.0) or 0.0
    instance = int(_number(_number_text(ds, "InstanceNumber"), 0) or 0)
    grid_offsets = _frame_offsets(ds, n_frames) if multi and not per_frame else None
    planes = []
    for f in range(n_frames):
        groups = [per_frame[f] if f < len(per_frame) else None, shared]
        position = _floats(_pick(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
        orientation = _floats(_pick(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        spacing, source = top_spacing, top_source
        if (sp := _floats(_pick(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)) is not None:
            spacing, source = (sp[0], sp[1]), "PixelMeasuresSequence/PixelSpacing"
        thickness = _number(_pick(groups, "PixelMeasuresSequence", "SliceThickness"), None)
        slope = _number(_pick(groups, "PixelValueTransformationSequence", "RescaleSlope"), None)
        intercept = _number(_pick(groups, "PixelValueTransformationSequence", "RescaleIntercept"), None)
        if orientation is None:
            orientation = top_orientation
        if position is None and (not multi or grid_offsets is not None):
            position = top_position
            if position is not None and grid_offsets is not None and orientation is not None:
                position = position + grid_offsets[f] * np.cross(orientation[:3], orientation[3:])
        planes.append(
            Plane(
                path=path,
                ds=ds,
                frame=f if multi else None,
                rows=rows,
                columns=columns,
                position=position,
                orientation=orientation,
                pixel_spacing=spacing,
                spacing_source=source,
                slice_thickness=thickness if thickness is not None else top_thickness,
                slope=slope if slope is not None else top_slope,
                intercept=intercept if intercept is not None else top_intercept,
                instance=instance,
                localizer=localizer,
            )
        )
    if multi and per_frame and len(per_frame) != len(planes):
        raise ReadError(f"{len(per_frame)} per-frame functional groups for {len(planes)} frames", path)
    return planes


def decode_file(ds: Dataset, path: Path) -> np.ndarray:
    """Decode all frames of ``ds`` to stored values, shape ``(frames, rows, columns[, samples])``.

    Colour images come back as RGB (YBR converted); MONOCHROME1 is inverted
    so that bright means dense.

    Raises
    ------
    medseg.errors.UnsupportedTransferSyntaxError
        When no installed decoder handles the transfer syntax (the message names the package).
    medseg.errors.ReadError
        When the pixel data is missing, truncated or corrupt.
    """
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise NotAnImageError("no pixel data", path)
    syntax = transfer_syntax(ds) or pydicom.uid.ExplicitVRLittleEndian
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntaxError(
            f"no installed package decodes transfer syntax {one_line(syntax.name, limit=80)} "
            f"({one_line(syntax, limit=80)}); "
            "convert the file to an uncompressed syntax first (e.g. dcmdjpeg, gdcmconv --raw)",
            path,
        ) from exc
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies) or "a pydicom pixel decoder plugin"
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {syntax.name} needs a decoder package, install one of: {options}", path
        )
    frames = frame_count(ds, path)
    with decoding(path, "cannot decode pixel data", syntax.name):
        if syntax in _J2K_SYNTAXES | _JPEG_SYNTAXES:
            extended = ds.get("ExtendedOffsetTable"), ds.get("ExtendedOffsetTableLengths")
            codestreams = generate_frames(
                ds.PixelData, number_of_frames=frames, extended_offsets=extended if all(extended) else None
            )
            for k, codestream in enumerate(codestreams):
                check_codestream_size(codestream, syntax, int(ds.Rows), int(ds.Columns), path, k)
        array, info = decoder.as_array(ds, as_rgb=True)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1 and array.ndim == (2 if samples == 1 else 3):
        array = array[np.newaxis]
    if str(info.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).upper() == "MONOCHROME1":
        array = invert_monochrome1(array, int(ds.get("BitsStored", array.dtype.itemsize * 8)))
    return array


def codestream_size(codestream: bytes, syntax: str) -> tuple[int, int] | None:
    """``(columns, rows)`` a JPEG 2000 codestream's SIZ or a JPEG / JPEG-LS frame's SOF marker declares.

    None when the marker is not found (the decoder then reports the problem).
    """
    if syntax in _J2K_SYNTAXES:
        at = codestream.find(_J2K_SIZ)  # JP2 wrappers put boxes first
        if at < 0 or at + 24 > len(codestream):
            return None
        x, y, x0, y0 = struct.unpack_from(">4I", codestream, at + 8)
        return x - x0, y - y0
    at = 2 if codestream[:2] == b"\xff\xd8" else len(codestream)  # after SOI, segment after segment
    while at + 9 <= len(codestream) and codestream[at] == 0xFF:
        marker = codestream[at + 1]
        if marker in _JPEG_SOF:
            rows, columns = struct.unpack_from(">HH", codestream, at + 5)
            return columns, rows
        at += 1 if marker == 0xFF else 2 + struct.unpack_from(">H", codestream, at + 2)[0]  # 0xFF: fill byte
    return None


def check_codestream_size(codestream: bytes, syntax: str, rows: int, columns: int, path: Path, index: int) -> None:
    """Refuse a compressed frame whose codestream declares another size than the header, before decoding it.

    A decoder sizes its work by the codestream: a corrupt size field would
    have it allocate and decode an image of that size first. A JPEG height of
    0 (the height left to a later DNL marker) is refused as well: a decoder
    can spend seconds searching the stream for that marker.

    Raises
    ------
    medseg.errors.ReadError
        Naming the frame and both sizes.
    """
    size = codestream_size(codestream, syntax)
    if size is not None and size != (columns, rows):
        raise ReadError(
            f"frame {index + 1}: the {syntax.name} codestream is {size[0]} x {size[1]} pixels, "
            f"the header says {columns} x {rows} (columns x rows)",
            path,
        )


def invert_monochrome1(array: np.ndarray, bits_stored: int) -> np.ndarray:
    """Invert MONOCHROME1 stored values over the range ``bits_stored`` allows (bright = dense afterwards)."""
    if np.issubdtype(array.dtype, np.floating):
        return array.max() + array.min() - array
    if np.issubdtype(array.dtype, np.signedinteger):
        lo, hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        lo, hi = 0, 2**bits_stored - 1
    return (lo + hi - array.astype(np.int64)).astype(array.dtype)


def _single_grayscale_frames(planes: list[Plane], syntaxes: frozenset[str]) -> bool:
    """True when every plane is a whole single-frame file, grayscale MONOCHROME2, 8/16-bit, in one of ``syntaxes``."""
    ds = planes[0].ds
    return (
        transfer_syntax(ds) in syntaxes
        and int(ds.get("SamplesPerPixel", 1) or 1) == 1
        and str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME2"
        and int(ds.get("BitsAllocated", 0) or 0) in (8, 16)
        and all(p.frame is None for p in planes)
    )


def gdcm_decodable(planes: list[Plane]) -> bool:
    """True when SimpleITK/GDCM decodes these single-frame planes to exactly pydicom's values.

    That is: one frame per file, grayscale MONOCHROME2, 8/16-bit, a lossless
    compressed transfer syntax and integer rescale slopes/intercepts (which
    GDCM applies itself).
    """
    return _single_grayscale_frames(planes, GDCM_PARALLEL_SYNTAXES) and all(
        float(p.slope).is_integer() and float(p.intercept).is_integer() for p in planes
    )


def imagecodecs_decodable(planes: list[Plane]) -> bool:
    """True when these are single-frame grayscale JPEG 2000 lossless files.

    imagecodecs wraps the OpenJPEG library pydicom's plugin uses, so the
    values are identical; unlike that plugin it releases the GIL, and it
    decodes about 15% faster than GDCM's bundled OpenJPEG.
    """
    return _single_grayscale_frames(planes, IMAGECODECS_PARALLEL_SYNTAXES)


def decode_with_imagecodecs(path: Path, plane: Plane) -> np.ndarray | None:
    """Stored values ``(1, rows, columns)`` of a single-frame JPEG 2000 file, decoded without holding the GIL.

    Returns None when imagecodecs cannot decode the pixel data or the
    codestream does not match the header (size, bit depth or signedness):
    pydicom's decoder, which reconciles such files and names the error of a
    corrupt one, then takes over.
    """
    from imagecodecs import jpeg2k_decode

    ds = plane.ds
    try:
        codestream = get_frame(ds.PixelData, 0, number_of_frames=1)
        if codestream_size(codestream, pydicom.uid.JPEG2000Lossless) != (plane.columns, plane.rows):
            return None
        frame = jpeg2k_decode(codestream)
    except PASS_THROUGH:
        raise
    except BaseException:  # noqa: BLE001 - the caller falls back to pydicom, which reports the reason
        return None
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    expected = np.dtype(f"{'i' if signed else 'u'}{int(ds.BitsAllocated) // 8}")
    if frame.shape != (plane.rows, plane.columns) or frame.dtype != expected:
        return None
    return frame[np.newaxis]


def decode_with_gdcm(path: Path, plane: Plane) -> np.ndarray:
    """Modality values (rescale applied) of a single-frame file decoded by GDCM, shape ``(rows, columns)``.

    SimpleITK releases the GIL while reading, so calls run in parallel
    threads; GDCM parses the header again in C++ (cheap next to decoding).

    Raises
    ------
    medseg.errors.ReadError
        When GDCM cannot read the file or returns another shape.
    """
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.SetNumberOfThreads(1)
    with decoding(path, "GDCM cannot decode pixel data"):
        values = sitk.GetArrayFromImage(reader.Execute())
    if values.shape != (1, plane.rows, plane.columns):
        raise ReadError(f"GDCM decoded shape {values.shape}, expected {(1, plane.rows, plane.columns)}", path)
    return values[0]


@dataclass(frozen=True)
class NativeLayout:
    """Where uncompressed little-endian grayscale pixels of a single-frame file lie on disk."""

    offset: int
    dtype: np.dtype
    bits_stored: int
    count: int


def native_layout(ds: Dataset, plane: Plane) -> NativeLayout | None:
    """The on-disk layout of ``ds``'s pixels when they can be read straight into numpy, else None.

    Applies to single-frame MONOCHROME2 files in Implicit/Explicit VR Little
    Endian whose pixel data was deferred (still on disk) and has exactly
    rows x columns values of 8, 16 or 32 bits.
    """
    if transfer_syntax(ds) not in _NATIVE_LITTLE_ENDIAN or plane.frame is not None:
        return None
    element = ds.get_item("PixelData", keep_deferred=True)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if (
        not isinstance(element, RawDataElement)
        or element.value is not None
        or bits not in (8, 16, 32)
        or int(ds.get("SamplesPerPixel", 1) or 1) != 1
        or str(ds.get("PhotometricInterpretation", "")).upper() != "MONOCHROME2"
        or element.length != plane.rows * plane.columns * bits // 8
    ):
        return None
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return NativeLayout(element.value_tell, dtype, int(ds.get("BitsStored", bits) or bits), plane.rows * plane.columns)


def read_native(path: Path, layout: NativeLayout, rows: int, columns: int) -> np.ndarray:
    """Stored values read directly from disk (one read, no GIL held), shape ``(1, rows, columns)``.

    Bits above BitsStored are masked (unsigned) or sign-extended (signed), as pydicom does.

    Raises
    ------
    medseg.errors.ReadError
        When the file ends before the pixel data does.
    """
    values = np.empty(layout.count, layout.dtype)
    try:
        with open(path, "rb") as fh:
            fh.seek(layout.offset)
            n_read = fh.readinto(memoryview(values).cast("B"))
    except OSError as exc:
        raise ReadError(f"cannot read pixel data ({exc.strerror})", path) from exc
    if n_read != values.nbytes:
        raise ReadError(f"truncated pixel data: {n_read} of {values.nbytes} bytes", path)
    spare = layout.dtype.itemsize * 8 - layout.bits_stored
    if 0 < spare < layout.dtype.itemsize * 8:
        if layout.dtype.kind == "u":
            values &= layout.dtype.type((1 << layout.bits_stored) - 1)
        else:
            values <<= spare
            values >>= spare
    return values.reshape(1, rows, columns)
