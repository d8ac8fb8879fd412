"""DICOM Segmentation (SEG) objects: write a label map as a SEG of its source series, read SEGs back.

Writing (:func:`save_seg`): one segment per label, labelled with the label's
name, coded with the SNOMED CT category and type of :mod:`medseg.io.structure_codes`,
with its recommended display colour and (for a model's output) the algorithm's
identification: model name, fingerprint and medseg version. BINARY by default
(one 1-bit frame per segment and slice, empty frames included: viewers misplace
SEGs with omitted frames), LABELMAP on request (one frame per slice holding
segment numbers). Frames are pixel-aligned with the source series and
reference its instances; 2D sources (CR, DX) give one frame per segment.
UIDs are deterministic (the same labels, source and model always give the same
SEG UIDs), so storing a SEG twice stores nothing new.

The segment descriptions are highdicom content items; the per-frame
functional groups and the pixel data are encoded here (:mod:`medseg.io.dicom_raw`,
frames of bounding boxes only): for the 12 000 frames of a 300-slice CT with 40
labels that is about 1 s, against about 20 s for highdicom's generic
``Segmentation`` encoder and pydicom's writer (``benchmarks/bench_dicom_seg.py``).

Segment numbers run 1..N as the standard requires; the label value of each
segment is kept in a private element (creator ``MEDSEG``) so that
:func:`load_seg` gives back the original values; SEGs of other writers read
with their segment numbers as values.

Reading (:func:`load_seg`, :func:`load_segments`): frames are placed on the grid
of the referenced series (found beside the SEG or in its sibling folders, or
``reference=``; see :mod:`medseg.io.dicom_source`) by their
plane positions, or for SEGs without positions by their source image
references. Overlapping segments never merge silently: :func:`load_seg` names
them and :func:`load_segments` gives one mask per segment.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds
from scipy.ndimage import find_objects

from medseg.atomic import atomic_path
from medseg.errors import GeometryError, LabelError, ReadError, WriteError
from medseg.io import dicom_raw as raw
from medseg.io.dicom_frames import read_header, transfer_syntax
from medseg.io.dicom_source import (
    SourceLike,
    SourceSeries,
    check_frame_of_reference,
    derived_dataset,
    find_referenced_series,
    on_source_grid,
    open_series,
)
from medseg.io.dicom_uids import derived_uid
from medseg.io.guard import decoding, one_line
from medseg.io.image import Image, LabelMap
from medseg.io.structure_codes import structure_code

if TYPE_CHECKING:
    from medseg.segmenters.base import Segmenter

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SegmentationType = Literal["BINARY", "LABELMAP"]
PRIVATE_GROUP, PRIVATE_CREATOR = 0x0071, "MEDSEG"  # segment item: (0071,xx01) UL = medseg label value
_SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_DERIVATION_SEGMENTATION = ("113076", "DCM", "Segmentation")
PER_FRAME_GROUPS = 0x52009230  # (5200,9230) Per-Frame Functional Groups Sequence
# tags read from each per-frame item: segment number, plane position, source image and frame, orientation, spacing
_SEGMENT_NUMBER, _POSITION, _SOURCE_INSTANCE, _SOURCE_FRAME = 0x0062000B, 0x00200032, 0x00081155, 0x00081160
_ORIENTATION, _PIXEL_SPACING = 0x00200037, 0x00280030
_POSITION_TOL_VOXELS = 0.05  # a frame this close to a slice (in voxels) lies on it


def _ds_number(value: float) -> str:
    return format_number_as_ds(float(value)) if value != 0 else "0"


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


# ---- writing ---------------------------------------------------------------------------------------------------


def _segment_item(number: int, value: int, name: str, segmenter: Segmenter | None) -> Dataset:
    """One Segment Sequence item: label, SNOMED CT codes, laterality, colour, algorithm, medseg label value."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medseg._version import __version__

    code = structure_code(name, value)
    algorithm = None
    if segmenter is not None:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=str(segmenter.name)[:64] or "medseg model", family=codes.DCM.ArtificialIntelligence,
            version=str(segmenter.fingerprint())[:64], source=f"medseg {__version__}",
        )
    item = hd.seg.SegmentDescription(
        number, name[:64], code.category, code.type, "AUTOMATIC" if segmenter is not None else "MANUAL",
        algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*code.rgb),
    )
    if code.modifier is not None:
        item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _code_item(code.modifier.value, code.modifier.scheme_designator, code.modifier.meaning)
        ]
    item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True).add_new(0x01, "UL", value)
    return item


def _header(src: SourceSeries, values: list[int], names: dict[int, str], seg_type: SegmentationType,
            segmenter: Segmenter | None, series_number: int, series_description: str, content_creator: str,
            uids: tuple[str, str]) -> Dataset:
    """Every SEG attribute but the per-frame functional groups and the pixel data."""
    series_uid, sop_uid = uids
    ds = derived_dataset(src, sop_class=SEG_STORAGE, sop_uid=sop_uid, series_uid=series_uid, modality="SEG",
                         series_number=series_number, description=series_description,
                         transfer_syntax=ExplicitVRLittleEndian)
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
    ds.DeviceSerialNumber = "1"
    if not src.uids.frame_of_reference:  # General Image: images without patient geometry say how they are oriented
        ds.PatientOrientation = src.datasets[0].get("PatientOrientation", "") or ""
    ds.ReferencedSeriesSequence = [_referenced_series(src)]
    # image pixel and segmentation image modules
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = src.planes[0].rows, src.planes[0].columns
    bits = 1 if seg_type == "BINARY" else (8 if len(values) < 256 else 16)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.LossyImageCompression = "00"
    ds.SegmentationType = seg_type
    ds.ContentLabel = "MEDSEG"
    ds.ContentDescription = f"medseg: {segmenter.name}"[:64] if segmenter is not None else "medseg label map"
    ds.ContentCreatorName = content_creator
    ds.SegmentSequence = [_segment_item(n, v, names.get(v, f"label {v}"), segmenter) for n, v in enumerate(values, 1)]
    ds.DimensionOrganizationSequence = [Dataset()]
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = derived_uid("dimension-organization", sop_uid)
    ds.DimensionIndexSequence = _dimension_index(ds.DimensionOrganizationSequence[0].DimensionOrganizationUID,
                                                 seg_type, bool(src.uids.frame_of_reference))
    ds.SharedFunctionalGroupsSequence = [_shared_groups(src)]
    return ds


def _referenced_series(src: SourceSeries) -> Dataset:
    item = Dataset()
    item.ReferencedInstanceSequence = []
    for sop_class, sop_instance in zip(src.uids.sop_classes, src.uids.instances, strict=True):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_instance
        item.ReferencedInstanceSequence.append(ref)
    item.SeriesInstanceUID = src.uids.series
    return item


def _dimension_index(organization: str, seg_type: SegmentationType, positions: bool) -> list[Dataset]:
    """Dimensions: segment number (BINARY) and plane position (3D sources)."""
    pointers = []
    if seg_type == "BINARY":
        pointers.append((0x0062000B, 0x0062000A, "ReferencedSegmentNumber"))
    if positions:
        pointers.append((0x00200032, 0x00209113, "ImagePositionPatient"))
    items = []
    for index, group, label in pointers:
        item = Dataset()
        item.DimensionOrganizationUID = organization
        item.DimensionIndexPointer, item.FunctionalGroupPointer = index, group
        item.DimensionDescriptionLabel = label
        items.append(item)
    return items


def _shared_groups(src: SourceSeries) -> Dataset:
    """Pixel measures and plane orientation shared by every frame (the source series'); 2D sources: pixel measures."""
    plane, grid = src.planes[0], src.grid
    shared = Dataset()
    if not grid.spacing_known:
        return shared
    measures = Dataset()
    measures.PixelSpacing = [_ds_number(grid.spacing[1]), _ds_number(grid.spacing[0])]  # between rows, columns
    thickness = plane.slice_thickness or (grid.spacing[2] if grid.ndim == 3 else None)
    if thickness:
        measures.SliceThickness = _ds_number(thickness)
    if grid.ndim == 3 and len(src.planes) > 1:
        measures.SpacingBetweenSlices = _ds_number(grid.spacing[2])
    shared.PixelMeasuresSequence = [measures]
    if plane.orientation is not None and src.uids.frame_of_reference:
        orientation = Dataset()
        orientation.ImageOrientationPatient = [_ds_number(v) for v in plane.orientation]
        shared.PlaneOrientationSequence = [orientation]
    return shared


def _code_bytes(value: str, scheme: str, meaning: str) -> bytes:
    return raw.item(raw.element(0x00080100, "SH", value) + raw.element(0x00080102, "SH", scheme)
                    + raw.element(0x00080104, "LO", meaning))


def _per_frame_sequence(src: SourceSeries, seg_type: SegmentationType, segments: int) -> bytes:
    """The Per-Frame Functional Groups Sequence, encoded directly (see :mod:`medseg.io.dicom_raw`).

    BINARY: the frames of segment 1 slice by slice, then segment 2 ...; LABELMAP: one frame per slice.
    Each frame references its source image, its plane position (3D sources) and its segment (BINARY).
    """
    positions = bool(src.uids.frame_of_reference)
    purpose, derivation_code = _code_bytes(*_SOURCE_IMAGE_PURPOSE), _code_bytes(*_DERIVATION_SEGMENTATION)
    per_plane = []
    for k, plane in enumerate(src.planes):
        sop_class, sop_instance, frame = src.instance(k)
        source = (raw.element(0x00081150, "UI", sop_class) + raw.element(0x00081155, "UI", sop_instance)
                  + (raw.element(0x00081160, "IS", str(frame)) if frame is not None else b"")
                  + raw.element(0x0028135A, "CS", "YES")  # spatial locations preserved: frames are pixel-aligned
                  + raw.sequence(0x0040A170, [purpose]))
        derivation = raw.sequence(0x00089124, [raw.item(raw.sequence(0x00082112, [raw.item(source)])
                                                        + raw.sequence(0x00089215, [derivation_code]))])
        position = (raw.sequence(0x00209113, [raw.item(raw.element(
            0x00200032, "DS", "\\".join(_ds_number(v) for v in plane.position)))]) if positions else b"")
        per_plane.append((derivation, position))
    items = []
    for number in range(1, segments + 1) if seg_type == "BINARY" else [0]:
        for k, (derivation, position) in enumerate(per_plane):
            dims = ([number] if number else []) + ([k + 1] if positions else [])  # dimension index values
            content = raw.sequence(0x00209111, [raw.item(
                raw.element(0x00209157, "UL", struct.pack(f"<{len(dims)}I", *dims)))]) if dims else b""
            segment = raw.sequence(0x0062000A, [raw.item(
                raw.element(0x0062000B, "US", struct.pack("<H", number)))]) if number else b""
            items.append(raw.item(derivation + content + position + segment))
    return raw.sequence(PER_FRAME_GROUPS, items)


def _binary_pixels(planes_yx: np.ndarray, values: list[int], box: dict[int, tuple[slice, ...]]) -> np.ndarray:
    """1-bit frames (segment-major, slice-minor), bits packed across frame boundaries as PS3.5 8.1.1 requires.

    Only the bounding box ``box[v]`` (slices along k, y, x) of each label value is compared; frames
    outside its slices stay zero.
    """
    n_planes, rows, columns = planes_yx.shape
    frame_bits = rows * columns
    n_frames = len(values) * n_planes
    out = np.zeros(math.ceil(n_frames * frame_bits / 8), np.uint8)
    step = 8 // math.gcd(frame_bits, 8)  # frames that fill a whole number of bytes
    for start in range(0, n_frames, step):
        chunk = [(values[f // n_planes], f % n_planes) for f in range(start, min(start + step, n_frames))]
        hits = [(i, v, k) for i, (v, k) in enumerate(chunk) if v in box and box[v][0].start <= k < box[v][0].stop]
        if not hits:
            continue
        frames = np.zeros((len(chunk), rows, columns), bool)
        for i, v, k in hits:
            _, ys, xs = box[v]
            frames[i, ys, xs] = planes_yx[k, ys, xs] == v
        bits = np.packbits(frames, bitorder="little")
        at = start * frame_bits // 8
        out[at : at + bits.size] |= bits
    return out


def save_seg(
    labels: LabelMap,
    source: SourceLike | SourceSeries,
    path: str | os.PathLike[str],
    *,
    series: str | int | None = None,
    segmentation_type: SegmentationType = "BINARY",
    segmenter: Segmenter | None = None,
    series_number: int = 1000,
    series_description: str | None = None,
    content_creator: str = "",
) -> Path:
    """Write ``labels`` as a DICOM SEG of its source series, atomically.

    Parameters
    ----------
    labels : LabelMap
        On the source series' grid (the same voxels in another order are reordered exactly).
    source : path-like, sequence of path-like, Image or SourceSeries
        The series the labels were made from: its folder, files, or the Image loaded from it.
    path : path-like
        The ``.dcm`` file to write.
    series : str or int, optional
        Which series of a source folder holding several (UID or index).
    segmentation_type : {"BINARY", "LABELMAP"}
        BINARY: a 1-bit frame per segment and slice; LABELMAP: a frame of segment numbers per slice.
    segmenter : Segmenter, optional
        The model that made the labels: recorded as the segments' algorithm (name, fingerprint,
        medseg version) and in the UIDs; None marks the segments MANUAL.
    series_number, series_description : int, str
        SeriesNumber and SeriesDescription of the SEG (default description ``medseg <model name>``).
    content_creator : str
        ContentCreatorName (a DICOM person name, ``Family^Given``).

    Raises
    ------
    medseg.errors.WriteError
        For an unwritable path or an unknown segmentation type.
    medseg.errors.GeometryError
        When the labels are not on the source series' grid.
    """
    target = Path(path)
    if segmentation_type not in ("BINARY", "LABELMAP"):
        raise WriteError(f"segmentation type must be BINARY or LABELMAP, got {segmentation_type!r}", target)
    src = source if isinstance(source, SourceSeries) else open_series(source, series=series)
    if segmentation_type == "LABELMAP" and not src.uids.frame_of_reference:
        raise WriteError("a LABELMAP SEG needs a source series with patient positions (CT, MR); use BINARY", target)
    array = on_source_grid(labels, src.grid, target)
    planes_yx = np.ascontiguousarray(array.T if array.ndim == 2 else array.transpose(2, 1, 0)).reshape(
        len(src.planes), src.planes[0].rows, src.planes[0].columns
    )
    boxes = {v: box for v, box in enumerate(find_objects(planes_yx), 1) if box is not None}  # (k, y, x) extent
    values = sorted(set(boxes) | {int(v) for v in labels.label_names})
    if not values:
        raise WriteError("the label map holds no labels (all background, no label names)", target)
    fingerprint = str(segmenter.fingerprint()) if segmenter is not None else "manual"
    series_uid = derived_uid("seg-series", src.series_uid, fingerprint, series_number)
    content_hash = hashlib.sha256(memoryview(planes_yx).cast("B")).hexdigest()
    names = {int(k): v for k, v in labels.label_names.items()}
    sop_uid = derived_uid("seg-instance", series_uid, segmentation_type, content_hash, sorted(names.items()))
    description = series_description or (f"medseg {segmenter.name}" if segmenter is not None else "medseg labels")
    ds = _header(src, values, names, segmentation_type, segmenter, series_number, description, content_creator,
                 (series_uid, sop_uid))
    if segmentation_type == "BINARY":
        pixels = _binary_pixels(planes_yx, values, boxes)
        ds.NumberOfFrames = len(values) * len(src.planes)
    else:
        lut = np.zeros(values[-1] + 1, np.uint8 if ds.BitsAllocated == 8 else np.uint16)
        lut[values] = np.arange(1, len(values) + 1)
        pixels = lut[planes_yx]
        ds.NumberOfFrames = len(src.planes)
    body = BytesIO()
    pydicom.dcmwrite(body, ds, enforce_file_format=True)
    frames = _per_frame_sequence(src, segmentation_type, len(values))
    pad = pixels.nbytes % 2
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            fh.write(body.getvalue())
            fh.write(frames)
            fh.write(b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", pixels.nbytes + pad))
            fh.write(memoryview(np.ascontiguousarray(pixels)).cast("B"))
            fh.write(b"\x00" * pad)
    except OSError as exc:
        raise WriteError(f"cannot write the SEG ({exc.strerror})", target) from exc
    return target


# ---- reading -----------------------------------------------------------------------------------------------------


@dataclass
class _SegInfo:
    number: int
    value: int
    label: str
    category: Code | None
    type: Code | None


@dataclass
class Segment(_SegInfo):
    """One segment of a SEG (or ROI of an RTSTRUCT), on the grid of its referenced series.

    Attributes
    ----------
    number : int
        SegmentNumber (ROI Number).
    value : int
        Label value: the one medseg wrote, else the segment number.
    label : str
        SegmentLabel (ROI Name).
    category, type : Code or None
        Segmented property category and type (None for RTSTRUCT ROIs).
    mask : Image
        A :class:`LabelMap` of 0/1 for BINARY and LABELMAP SEGs and ROIs; for FRACTIONAL segments
        a float32 Image in [0, 1] (probability or occupancy).
    """

    mask: Image


def _code(item: Dataset, keyword: str) -> Code | None:
    seq = item.get(keyword)
    if not seq:
        return None
    c = seq[0]
    return Code(str(c.get("CodeValue", "")), str(c.get("CodingSchemeDesignator", "")), str(c.get("CodeMeaning", "")))


def _segment_infos(ds: Dataset, path: Path) -> dict[int, _SegInfo]:
    out = {}
    for item in ds.get("SegmentSequence") or []:
        number = int(item.get("SegmentNumber", 0) or 0)
        block = item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR) if _has_private(item) else None
        value = int(block[0x01].value) if block is not None and 0x01 in block else number
        out[number] = _SegInfo(number, value, str(item.get("SegmentLabel", "") or f"segment {number}"),
                               _code(item, "SegmentedPropertyCategoryCodeSequence"),
                               _code(item, "SegmentedPropertyTypeCodeSequence"))
    if not out:
        raise ReadError("DICOM SEG without segments (empty Segment Sequence)", path)
    if len({s.value for s in out.values()}) < len(out):  # copied private values: the numbers tell segments apart
        for s in out.values():
            s.value = s.number
    return out


def _has_private(item: Dataset) -> bool:
    try:
        item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return False
    return True


def _first_item(ds: Dataset | None, sequence: str) -> Dataset | None:
    seq = ds.get(sequence) if ds is not None else None
    return seq[0] if seq else None


@dataclass
class _Frame:
    segment: int  # 0 for LABELMAP frames (they hold segment numbers)
    position: np.ndarray | None
    source: tuple[str, int | None] | None  # referenced SOP instance and frame


def _file_buffer(path: Path, ds: Dataset) -> mmap.mmap:
    """The SEG file mapped read-only: element offsets pydicom records index into it."""
    if transfer_syntax(ds) == pydicom.uid.DeflatedExplicitVRLittleEndian:
        raise ReadError("Deflated Explicit VR Little Endian SEGs are not supported (convert with dcmconv +te)", path)
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _span(ds: Dataset, keyword: str) -> tuple[int, int] | None:
    """File offset and length (:data:`~medseg.io.dicom_raw.UNDEFINED` when undefined) of a top-level element's value."""
    element = ds.get_item(keyword, keep_deferred=True)
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        return element.value_tell, element.length
    return element.file_tell, raw.UNDEFINED  # an undefined-length sequence pydicom has parsed already


def _numbers(value: bytes | Any, count: int, keyword: str, path: Path) -> np.ndarray:
    """The ``count`` numbers of a DS value (raw bytes or a pydicom value), or a ReadError naming ``keyword``."""
    try:
        items = value.strip(b" \x00").split(b"\\") if isinstance(value, bytes) else list(value)
        numbers = np.array([float(v) for v in items])
    except (TypeError, ValueError):
        numbers = np.empty(0)
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise ReadError(f"{keyword} must be {count} finite numbers, not {value!r:.60}", path)
    return numbers


def _frames(ds: Dataset, buffer: mmap.mmap, path: Path, n_frames: int,
            labelmap: bool) -> tuple[list[_Frame], np.ndarray | None, tuple[float, float] | None]:
    """Per-frame segment, position and source image; the orientation and pixel spacing of the frames.

    Per-frame functional groups are decoded by :func:`medseg.io.dicom_raw.sequence_items`; values a
    frame lacks come from the shared functional groups.
    """
    syntax = transfer_syntax(ds) or ImplicitVRLittleEndian
    little = syntax != pydicom.uid.ExplicitVRBigEndian
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    span = _span(ds, "PerFrameFunctionalGroupsSequence")
    wanted = {_SEGMENT_NUMBER, _POSITION, _SOURCE_INSTANCE, _SOURCE_FRAME, _ORIENTATION, _PIXEL_SPACING}
    per_frame = ([{}] * n_frames if span is None else
                 raw.sequence_items(buffer, *span, explicit=syntax != ImplicitVRLittleEndian, little=little,
                                    wanted=wanted))
    if len(per_frame) != n_frames:
        raise ReadError(f"{len(per_frame)} per-frame functional groups for {n_frames} frames", path)
    seg_item = _first_item(shared, "SegmentIdentificationSequence")
    shared_segment = int(seg_item.ReferencedSegmentNumber) if seg_item is not None else 1
    pos_item = _first_item(shared, "PlanePositionSequence")
    shared_position = (_numbers(pos_item.ImagePositionPatient, 3, "ImagePositionPatient", path)
                       if pos_item is not None else None)
    order = "little" if little else "big"
    frames = []
    for values in per_frame:
        segment = 0 if labelmap else (int.from_bytes(values[_SEGMENT_NUMBER][:2], order)
                                      if _SEGMENT_NUMBER in values else shared_segment)
        position = (_numbers(values[_POSITION], 3, "ImagePositionPatient", path) if _POSITION in values
                    else shared_position)
        source = None
        if _SOURCE_INSTANCE in values:
            number = values[_SOURCE_FRAME].strip(b" \x00") if _SOURCE_FRAME in values else b""
            source = (values[_SOURCE_INSTANCE].rstrip(b"\x00 ").decode("ascii", "replace"),
                      int(number) if number else None)
        frames.append(_Frame(segment, position, source))
    first = per_frame[0] if per_frame else {}
    orientation = _numbers(first[_ORIENTATION], 6, "ImageOrientationPatient", path) if _ORIENTATION in first else None
    spacing = tuple(_numbers(first[_PIXEL_SPACING], 2, "PixelSpacing", path)) if _PIXEL_SPACING in first else None
    if orientation is None and (item := _first_item(shared, "PlaneOrientationSequence")) is not None:
        orientation = _numbers(item.ImageOrientationPatient, 6, "ImageOrientationPatient", path)
    if spacing is None and (item := _first_item(shared, "PixelMeasuresSequence")) is not None and "PixelSpacing" in item:
        spacing = tuple(_numbers(item.PixelSpacing, 2, "PixelSpacing", path))
    return frames, orientation, spacing


def _pixel_frames(ds: Dataset, buffer: mmap.mmap, path: Path, n_frames: int) -> Any:
    """A function: frame index -> its (rows, columns) stored values, None for an all-zero frame.

    Uncompressed little-endian pixel data is used in place (mapped file) and unpacked frame by
    frame; other syntaxes go through pydicom's decoders.
    """
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    frame_bits = rows * columns * bits
    syntax = transfer_syntax(ds) or ImplicitVRLittleEndian
    if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        span = _span(ds, "PixelData")
        if span is None:
            raise ReadError("DICOM SEG without pixel data", path)
        at, length = span
        if length == raw.UNDEFINED or at + length > len(buffer):
            raise ReadError("pixel data is encapsulated or truncated, but the transfer syntax is uncompressed", path)
        stored = np.frombuffer(buffer, np.uint8, count=length, offset=at)
        if length * 8 < frame_bits * n_frames:
            raise ReadError(f"pixel data holds {length} bytes, {n_frames} frames need {frame_bits * n_frames // 8}",
                            path)

        def native(f: int) -> np.ndarray | None:
            start = f * frame_bits
            chunk = stored[start // 8 : (start + frame_bits + 7) // 8]
            if not chunk.any():
                return None
            if bits == 1:
                return np.unpackbits(chunk, bitorder="little")[start % 8 : start % 8 + frame_bits].reshape(rows, columns)
            return chunk.view(f"<u{bits // 8}").reshape(rows, columns)

        return native
    with decoding(path, "cannot decode the SEG's pixel data", str(syntax)):
        decoded = list(pydicom.pixels.iter_pixels(ds))
    if len(decoded) != n_frames:
        raise ReadError(f"pixel data decodes to {len(decoded)} frames, the header says {n_frames}", path)

    def compressed(f: int) -> np.ndarray | None:
        frame = decoded[f]
        return frame if frame.any() else None

    return compressed


def _plane_placement(frames: list[_Frame], orientation: np.ndarray | None, spacing: tuple[float, float] | None,
                     src: SourceSeries, rows: int, columns: int, path: Path) -> list[tuple[int, int, int]]:
    """(plane k, column offset i0, row offset j0) of every frame on the reference grid.

    By position when the SEG and the grid have patient positions, else by the frame's source image.
    """
    grid = src.grid
    by_position = grid.ndim == 3 and all(fr.position is not None for fr in frames) and src.planes[0].position is not None
    if by_position:
        ref_orient = src.planes[0].orientation
        if orientation is not None and not np.allclose(orientation, ref_orient, atol=1e-3):
            raise GeometryError(f"SEG frames are oriented {list(orientation)}, the referenced series "
                                f"{list(np.round(ref_orient, 6))}: not pixel-aligned", path)
        if spacing is not None and not np.allclose(spacing, (grid.spacing[1], grid.spacing[0]), rtol=1e-3):
            raise GeometryError(f"SEG pixel spacing {spacing} mm differs from the referenced series' "
                                f"{(grid.spacing[1], grid.spacing[0])} mm: not pixel-aligned", path)
        index = grid.world_to_index(np.array([fr.position for fr in frames]))
        rounded = np.rint(index)
        off = np.abs(index - rounded).max(axis=0) if len(frames) else np.zeros(3)
        if (off > _POSITION_TOL_VOXELS).any():
            f = int(np.abs(index - rounded).max(axis=1).argmax())
            raise GeometryError(f"SEG frame {f + 1} at {list(frames[f].position)} mm lies between the referenced "
                                "series' voxels (not pixel-aligned)", path)
        placed = [(int(k), int(i), int(j)) for i, j, k in rounded]
    else:
        lookup = src.plane_of_instance()
        placed = []
        for f, fr in enumerate(frames):
            key = fr.source
            k = lookup.get(key) if key else None
            if k is None and key is not None:
                k = lookup.get((key[0], None))
            if k is None and len(src.planes) == 1:
                k = 0
            if k is None:
                raise GeometryError(f"SEG frame {f + 1} has no position and references no image of the series", path)
            placed.append((k, 0, 0))
    nx, ny = grid.shape[0], grid.shape[1]
    n_planes = len(src.planes)
    for f, (k, i0, j0) in enumerate(placed):
        if not (0 <= k < n_planes and i0 >= 0 and i0 + columns <= nx and j0 >= 0 and j0 + rows <= ny):
            raise GeometryError(f"SEG frame {f + 1} lies outside the referenced series' grid "
                                f"(slice {k}, offset {i0}, {j0} of {nx}x{ny}x{n_planes})", path)
    return placed


@dataclass
class _OpenSeg:
    path: Path
    ds: Dataset
    seg_type: str
    segments: dict[int, _SegInfo]
    frames: list[_Frame]
    placed: list[tuple[int, int, int]]
    pixels: Any
    grid: Image
    warnings: list[str]

    def coordinates(self, f: int, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid indices (x, y) of the pixels ``flat`` (row-major indices into frame ``f``)."""
        _, i0, j0 = self.placed[f]
        rows, columns = np.divmod(flat, int(self.ds.Columns))
        return columns + i0, rows + j0

    def view(self, target: np.ndarray, f: int) -> np.ndarray:
        """The region of ``target`` (on the grid, ``[x, y, k]`` or ``[x, y]``) frame ``f`` covers, as ``[x, y]``."""
        k, i0, j0 = self.placed[f]
        rows, columns = int(self.ds.Rows), int(self.ds.Columns)
        region = target[i0 : i0 + columns, j0 : j0 + rows]
        return region[..., k] if target.ndim == 3 else region


def _open(path: str | os.PathLike[str], reference: SourceLike | None, series: str | int | None) -> _OpenSeg:
    p = Path(path)
    ds = read_header(p)
    if ds is None:
        raise ReadError("not a DICOM file", p)
    if str(ds.get("SOPClassUID", "")) != SEG_STORAGE and str(ds.get("Modality", "")) != "SEG":
        raise ReadError(f"not a DICOM SEG (modality {ds.get('Modality', '')!r})", p)
    try:
        seg_type = str(ds.SegmentationType).upper()
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        segments = _segment_infos(ds, p)
        buffer = _file_buffer(p, ds)
        frames, orientation, spacing = _frames(ds, buffer, p, n_frames, seg_type == "LABELMAP")
        refs = [(str(item.get("SeriesInstanceUID", "")),
                 [str(r.ReferencedSOPInstanceUID) for r in item.get("ReferencedInstanceSequence") or []])
                for item in ds.get("ReferencedSeriesSequence") or []]
    except Exception as exc:  # pydicom converts elements when read: unknown VRs, bad lengths raise too
        raise ReadError(f"malformed DICOM SEG ({one_line(exc, p)})", p) from exc
    instances = {uid for _, uids in refs for uid in uids} | {fr.source[0] for fr in frames if fr.source}
    series_uids = {uid for uid, _ in refs if uid}
    if reference is not None:
        src = open_series(reference, series=series)
    else:
        src = find_referenced_series(p, next(iter(sorted(series_uids)), ""), sorted(instances))
    refers = src.series_uid in series_uids or bool(instances & set(src.uids.instances))
    warnings = check_frame_of_reference(str(ds.get("FrameOfReferenceUID", "") or ""), src, refers, p)
    unknown = sorted({fr.segment for fr in frames if fr.segment} - set(segments))
    if unknown:
        raise ReadError(f"frames reference segment numbers {unknown[:5]} the Segment Sequence does not define", p)
    placed = _plane_placement(frames, orientation, spacing, src, int(ds.Rows), int(ds.Columns), p)
    return _OpenSeg(p, ds, seg_type, segments, frames, placed, _pixel_frames(ds, buffer, p, len(frames)), src.grid,
                    warnings)


def load_seg(
    path: str | os.PathLike[str], *, reference: SourceLike | None = None, series: str | int | None = None
) -> LabelMap:
    """A DICOM SEG as a LabelMap on the grid of its referenced series.

    Parameters
    ----------
    path : path-like
        The SEG file.
    reference : path-like or Image, optional
        The referenced series (folder, files, or a loaded Image); by default it is looked
        for beside the SEG and in its sibling folders (see :mod:`medseg.io.dicom_source`).
    series : str or int, optional
        Which series of a reference folder holding several.

    Returns
    -------
    LabelMap
        Label values as medseg wrote them (else segment numbers), names from the segment labels.

    Raises
    ------
    medseg.errors.LabelError
        When segments overlap (use :func:`load_segments`) or are FRACTIONAL.
    medseg.errors.ReadError
        For a malformed SEG or a referenced series that cannot be found.
    medseg.errors.GeometryError
        For a frame of reference or frames that do not match the referenced series.
    """
    seg = _open(path, reference, series)
    if seg.seg_type == "FRACTIONAL":
        raise LabelError("the SEG's segments are FRACTIONAL (probabilities or occupancy), not labels; read them "
                         "with medseg.io.load_segments", seg.path)
    top = max(s.value for s in seg.segments.values())
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    out = np.zeros(seg.grid.shape, dtype)
    lut = np.zeros(max(seg.segments) + 1, dtype)
    for number, info in seg.segments.items():
        lut[number] = info.value
    overlaps: dict[tuple[int, int], int] = {}
    for f, frame in enumerate(seg.frames):
        stored = seg.pixels(f)
        if stored is None:
            continue
        at = np.flatnonzero(stored)
        values = lut[stored.ravel()[at]] if frame.segment == 0 else np.full(at.size, lut[frame.segment], dtype)
        xs, ys = seg.coordinates(f, at)
        target = out[xs, ys] if out.ndim == 2 else out[xs, ys, seg.placed[f][0]]
        clash = (target > 0) & (target != values)
        if clash.any():
            pairs, counts = np.unique(np.stack([target[clash], values[clash]]), axis=1, return_counts=True)
            for (a, b), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
                overlaps[(a, b)] = overlaps.get((a, b), 0) + n
        if out.ndim == 2:
            out[xs, ys] = values
        else:
            out[xs, ys, seg.placed[f][0]] = values
    if overlaps:
        names = {s.value: s.label for s in seg.segments.values()}
        pairs = "; ".join(f"{a} '{names.get(a)}' and {b} '{names.get(b)}' in {n} voxels"
                          for (a, b), n in sorted(overlaps.items())[:5])
        raise LabelError(f"segments overlap ({pairs}): a label map cannot hold both; read one mask per segment "
                         "with medseg.io.load_segments", seg.path)
    names = {s.value: s.label for s in seg.segments.values()}
    return seg.grid.with_labels(out, names, modality="SEG", source=str(seg.path), warnings=list(seg.warnings),
                                meta=_meta(seg))


def _meta(seg: _OpenSeg) -> dict[str, str]:
    ds = seg.ds
    return {"Modality": "SEG", "SegmentationType": seg.seg_type,
            "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "")),
            "ReferencedSeriesInstanceUID": str(seg.grid.meta.get("SeriesInstanceUID", ""))}


def load_segments(
    path: str | os.PathLike[str], *, reference: SourceLike | None = None, series: str | int | None = None
) -> list[Segment]:
    """Every segment of a DICOM SEG as its own mask on the referenced series' grid (overlaps kept).

    Parameters are those of :func:`load_seg`. FRACTIONAL segments come back as float32
    masks in [0, 1] (stored value / MaximumFractionalValue).
    """
    seg = _open(path, reference, series)
    fractional = seg.seg_type == "FRACTIONAL"
    scale = float(seg.ds.get("MaximumFractionalValue", 255) or 255) if fractional else 1.0
    masks = {n: np.zeros(seg.grid.shape, np.float32 if fractional else np.uint8) for n in seg.segments}
    for f, frame in enumerate(seg.frames):
        stored = seg.pixels(f)
        if stored is None:
            continue
        numbers = [frame.segment] if frame.segment else [n for n in seg.segments if (stored == n).any()]
        for number in numbers:
            region = seg.view(masks[number], f)
            if fractional:
                np.maximum(region, stored.T / scale, out=region)
            else:
                region |= np.equal(stored.T, number) if frame.segment == 0 else (stored.T > 0)
    out = []
    for number, info in sorted(seg.segments.items()):
        mask = masks[number]
        image = (seg.grid.with_array(mask, modality="SEG", source=str(seg.path)) if fractional else
                 seg.grid.with_labels(mask, {1: info.label}, modality="SEG", source=str(seg.path)))
        image.warnings = list(seg.warnings)
        out.append(Segment(**vars(info), mask=image))
    return out


def is_seg(ds: Dataset) -> bool:
    """True for a DICOM Segmentation object."""
    return str(ds.get("SOPClassUID", "")) == SEG_STORAGE or str(ds.get("Modality", "")).upper() == "SEG"


__all__ = ["SEG_STORAGE", "Segment", "is_seg", "load_seg", "load_segments", "save_seg"]
