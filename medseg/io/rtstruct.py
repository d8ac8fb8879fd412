"""DICOM RT Structure Sets (RTSTRUCT): contours rasterised onto the referenced CT grid, label maps contoured.

Reading (:func:`load_rtstruct`, :func:`load_rois`) follows the standard's rule:

* the structure set's frame of reference must be its series' (a mismatch with
  explicit references to that series' images is a warning, see
  :func:`medseg.io.dicom_source.check_frame_of_reference`);
* each CLOSED_PLANAR contour (points in patient mm) is matched to a slice by
  its position along the slice normal, not by the optional Contour Image
  Sequence; a contour more than a quarter of a slice gap away from every
  slice is skipped with a warning, and an ROI set whose contours all miss
  every slice is an error;
* a pixel belongs to the ROI when its centre is inside; several contours of
  one ROI on one slice combine even-odd (holes, islands inside holes);
  contours reaching outside the field of view are clipped
  (:func:`medseg.io.contours.fill_even_odd`);
* POINT and OPEN contours are skipped with a warning.

Writing (:func:`save_rtstruct`): one ROI per label (ROI Number = label value,
ROI Name = label name, display colour from :mod:`medseg.io.structure_codes`),
closed planar contours along the pixel edges of each slice's mask, holes as
separate contours (:func:`medseg.io.contours.trace_outlines`): reading the file
back gives the same mask. Written in Implicit VR Little Endian, whose 32-bit
lengths hold contours of any length.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian
from scipy.ndimage import find_objects

from medseg.errors import GeometryError, LabelError, ReadError, WriteError
from medseg.io.contours import fill_even_odd, trace_outlines
from medseg.io.dicom_frames import read_header
from medseg.io.dicom_seg import Segment
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
from medseg.io.dicom_write import write_dataset
from medseg.io.guard import one_line
from medseg.io.image import Image, LabelMap
from medseg.io.structure_codes import structure_code

if TYPE_CHECKING:
    from medseg.segmenters.base import Segmenter

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_DETACHED_STUDY = "1.2.840.10008.3.1.2.3.1"  # the SOP class RT objects reference studies by
CONTOUR_DATA = 0x30060050
_SLICE_TOL = 0.25  # a contour within this fraction of a slice gap of a slice lies on it


def is_rtstruct(ds: Dataset) -> bool:
    """True for an RT Structure Set."""
    return str(ds.get("SOPClassUID", "")) == RTSTRUCT_STORAGE or str(ds.get("Modality", "")).upper() == "RTSTRUCT"


# ---- reading ----------------------------------------------------------------------------------------------------


def _references(ds: Dataset) -> tuple[str, set[str], set[str]]:
    """The structure set's frame of reference, and the series and image UIDs it references."""
    frame, series, images = "", set(), set()
    for ref in ds.get("ReferencedFrameOfReferenceSequence") or []:
        frame = frame or str(ref.get("FrameOfReferenceUID", "") or "")
        for study in ref.get("RTReferencedStudySequence") or []:
            for s in study.get("RTReferencedSeriesSequence") or []:
                series.add(str(s.get("SeriesInstanceUID", "")))
                images.update(str(i.ReferencedSOPInstanceUID) for i in s.get("ContourImageSequence") or [])
    for roi in ds.get("StructureSetROISequence") or []:
        frame = frame or str(roi.get("ReferencedFrameOfReferenceUID", "") or "")
    for roi in ds.get("ROIContourSequence") or []:
        for contour in roi.get("ContourSequence") or []:
            images.update(str(i.ReferencedSOPInstanceUID) for i in contour.get("ContourImageSequence") or [])
    return frame, series - {""}, images


def _points(contour: Dataset) -> np.ndarray:
    """ContourData as ``(n, 3)`` patient mm, parsed from the raw text when pydicom has not converted it yet."""
    element = contour.get_item(CONTOUR_DATA)
    if element is None:
        return np.zeros((0, 3))
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes):
        text = element.value.strip(b" \x00")
        values = np.array(text.split(b"\\")).astype(float) if text else np.zeros(0)
    else:
        values = np.asarray([float(v) for v in contour.ContourData or []])
    return values[: len(values) // 3 * 3].reshape(-1, 3)


def _rasterise(ds: Dataset, grid: Image, path: Path) -> tuple[dict[int, np.ndarray], dict[int, str], list[str]]:
    """Mask per ROI number on ``grid``, ROI names, and warnings (skipped contours)."""
    names = {int(r.ROINumber): str(r.get("ROIName", "") or f"ROI {r.ROINumber}")
             for r in ds.get("StructureSetROISequence") or []}
    skipped: dict[str, int] = defaultdict(int)
    closed: list[tuple[int, np.ndarray]] = []  # (ROI number, points mm) of every closed contour
    for roi in ds.get("ROIContourSequence") or []:
        number = int(roi.ReferencedROINumber)
        names.setdefault(number, f"ROI {number}")
        for contour in roi.get("ContourSequence") or []:
            kind = str(contour.get("ContourGeometricType", "") or "").upper()
            points = _points(contour)
            if kind != "CLOSED_PLANAR":
                skipped[f"{kind or 'untyped'} contours skipped (only CLOSED_PLANAR ones enclose pixels)"] += 1
            elif len(points) < 3:
                skipped["closed contours with fewer than 3 points skipped"] += 1
            else:
                closed.append((number, points))
    by_slice: dict[tuple[int, int], list[np.ndarray]] = defaultdict(list)
    if closed:  # every contour's points to indices at once
        index = grid.world_to_index(np.concatenate([points for _, points in closed]))
        ends = np.cumsum([len(points) for _, points in closed])
        for (number, _), part in zip(closed, np.split(index, ends[:-1]), strict=True):
            k = round(float(np.median(part[:, 2])))
            if np.abs(part[:, 2] - k).max() > _SLICE_TOL:
                skipped["contours between slices (or not planar) skipped"] += 1
            elif not 0 <= k < grid.shape[2]:
                skipped["contours outside the series' slices skipped"] += 1
            else:
                by_slice[(number, k)].append(part[:, :2])
    n_closed = len(closed)
    if n_closed and not by_slice:
        raise GeometryError(f"all {n_closed} closed contours lie off every slice of the referenced series "
                            f"(z index {grid.shape[2]} slices)", path)
    masks: dict[int, np.ndarray] = {n: np.zeros(grid.shape, bool) for n in names}
    for (number, k), polygons in by_slice.items():
        masks[number][:, :, k] = fill_even_odd(polygons, grid.shape[:2])
    return masks, names, [f"{n} {what}" for what, n in skipped.items()]


def _open(path: str | os.PathLike[str], reference: SourceLike | None,
          series: str | int | None) -> tuple[dict[int, np.ndarray], dict[int, str], Image, list[str], Path]:
    p = Path(path)
    ds = read_header(p)
    if ds is None or not is_rtstruct(ds):
        raise ReadError("not a DICOM RT Structure Set", p)
    try:
        frame, series_uids, images = _references(ds)
        src = open_series(reference, series=series) if reference is not None else find_referenced_series(
            p, next(iter(sorted(series_uids)), ""), sorted(images))
        refers = src.series_uid in series_uids or bool(images & set(src.uids.instances))
        warnings = check_frame_of_reference(frame, src, refers, p)
        if src.grid.ndim != 3 or src.planes[0].position is None:
            raise GeometryError("an RT Structure Set needs a series with patient positions (CT, MR, PET)", p)
        masks, names, skipped = _rasterise(ds, src.grid, p)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ReadError(f"malformed RT Structure Set ({one_line(exc, p)})", p) from exc
    return masks, names, src.grid, warnings + skipped, p


def load_rtstruct(
    path: str | os.PathLike[str], *, reference: SourceLike | None = None, series: str | int | None = None
) -> LabelMap:
    """An RT Structure Set as a LabelMap on its referenced series' grid (label = ROI Number, name = ROI Name).

    ``reference`` and ``series`` are those of :func:`medseg.io.dicom_seg.load_seg`.

    Raises
    ------
    medseg.errors.LabelError
        When ROIs overlap (read them with :func:`load_rois`).
    medseg.errors.GeometryError
        For a frame of reference that does not match, or contours off every slice.
    medseg.errors.ReadError
        For a malformed file or a referenced series that cannot be found.
    """
    masks, names, grid, warnings, p = _open(path, reference, series)
    top = max(names, default=0)
    out = np.zeros(grid.shape, np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)
    for number, mask in sorted(masks.items()):
        clash = mask & (out > 0)
        if clash.any():
            other = int(np.bincount(out[clash]).argmax())
            raise LabelError(f"ROIs {other} '{names[other]}' and {number} '{names[number]}' overlap in "
                             f"{int(clash.sum())} voxels: a label map cannot hold both; read one mask per ROI "
                             "with medseg.io.load_segments", p)
        out[mask] = number
    return grid.with_labels(out, names, modality="RTSTRUCT", source=str(p), warnings=warnings,
                            meta={"Modality": "RTSTRUCT", "ReferencedSeriesInstanceUID": grid.meta.get("SeriesInstanceUID", "")})


def load_rois(
    path: str | os.PathLike[str], *, reference: SourceLike | None = None, series: str | int | None = None
) -> list[Segment]:
    """Every ROI of an RT Structure Set as its own 0/1 mask on the referenced grid (overlaps kept)."""
    masks, names, grid, warnings, p = _open(path, reference, series)
    out = []
    for number, mask in sorted(masks.items()):
        image = grid.with_labels(mask.astype(np.uint8), {1: names[number]}, modality="RTSTRUCT", source=str(p),
                                 warnings=list(warnings))
        out.append(Segment(number, number, names[number], None, None, image))
    return out


# ---- writing ----------------------------------------------------------------------------------------------------


def _contour(points_xy: np.ndarray, k: int, grid: Image, image_ref: Dataset) -> Dataset:
    """One CLOSED_PLANAR contour: index-space vertices on slice ``k`` as patient mm (0.001 mm precision)."""
    world = grid.index_to_world(np.column_stack([points_xy, np.full(len(points_xy), k)]))
    contour = Dataset()
    contour.ContourImageSequence = [image_ref]
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(world)
    # written as it will be stored (Implicit VR Little Endian): pydicom's per-value DS checks take seconds
    text = "\\".join(f"{v:.3f}".rstrip("0").rstrip(".") or "0" for v in np.round(world, 3).ravel()).encode()
    contour[CONTOUR_DATA] = RawDataElement(Tag(CONTOUR_DATA), "DS", len(text), text, 0, True, True)
    return contour


def _image_ref(src: SourceSeries, k: int) -> Dataset:
    sop_class, sop_instance, frame = src.instance(k)
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_instance
    if frame is not None:
        ref.ReferencedFrameNumber = frame
    return ref


def save_rtstruct(
    labels: LabelMap,
    source: SourceLike | SourceSeries,
    path: str | os.PathLike[str],
    *,
    series: str | int | None = None,
    segmenter: Segmenter | None = None,
    series_number: int = 1001,
    series_description: str | None = None,
) -> Path:
    """Write ``labels`` as an RT Structure Set of its source series, atomically.

    Parameters are those of :func:`medseg.io.dicom_seg.save_seg` (``segmenter``: ROIs
    generated AUTOMATIC, else MANUAL).

    Raises
    ------
    medseg.errors.WriteError
        For a 2D source, an empty label map or an unwritable path.
    medseg.errors.GeometryError
        When the labels are not on the source series' grid.
    """
    target = Path(path)
    src = source if isinstance(source, SourceSeries) else open_series(source, series=series)
    if src.grid.ndim != 3 or not src.uids.frame_of_reference or src.planes[0].position is None:
        raise WriteError("an RT Structure Set needs a source series with patient positions and a frame of reference",
                         target)
    array = on_source_grid(labels, src.grid, target)
    boxes = {v: box for v, box in enumerate(find_objects(array), 1) if box is not None}
    values = sorted(set(boxes) | {int(v) for v in labels.label_names})
    if not values:
        raise WriteError("the label map holds no labels (all background, no label names)", target)
    names = {int(k): v for k, v in labels.label_names.items()}
    fingerprint = str(segmenter.fingerprint()) if segmenter is not None else "manual"
    content = hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()
    series_uid = derived_uid("rtstruct-series", src.series_uid, fingerprint, series_number)
    sop_uid = derived_uid("rtstruct-instance", series_uid, content, sorted(names.items()))
    title = f"medseg {segmenter.name}" if segmenter is not None else "medseg labels"
    ds = derived_dataset(src, sop_class=RTSTRUCT_STORAGE, sop_uid=sop_uid, series_uid=series_uid, modality="RTSTRUCT",
                         series_number=series_number, description=series_description or title,
                         transfer_syntax=ImplicitVRLittleEndian)
    ds.OperatorsName = ""
    ds.StructureSetLabel = "MEDSEG"
    ds.StructureSetName = title[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.SeriesDate, ds.SeriesTime

    image_refs = [_image_ref(src, k) for k in range(len(src.planes))]
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = src.series_uid
    referenced_series.ContourImageSequence = image_refs
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = _DETACHED_STUDY, src.uids.study
    study.RTReferencedSeriesSequence = [referenced_series]
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = src.uids.frame_of_reference
    frame_ref.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame_ref]

    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for value in values:
        name = names.get(value, f"label {value}")
        code = structure_code(name, value)
        roi = Dataset()
        roi.ROINumber = value
        roi.ReferencedFrameOfReferenceUID = src.uids.frame_of_reference
        roi.ROIName = name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC" if segmenter is not None else "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contours = Dataset()
        contours.ROIDisplayColor = list(code.rgb)
        xs, ys, ks = boxes.get(value, (slice(0), slice(0), slice(0)))  # the label's bounding box
        offset = np.array([xs.start, ys.start])
        contours.ContourSequence = [
            _contour(loop + offset, k, src.grid, image_refs[k])
            for k in range(ks.start, ks.stop)
            for loop in trace_outlines(array[xs, ys, k] == value)
        ]
        contours.ReferencedROINumber = value
        ds.ROIContourSequence.append(contours)
        observation = Dataset()
        observation.ObservationNumber = value
        observation.ReferencedROINumber = value
        observation.RTROIInterpretedType = "ORGAN" if code.known and code.category.value != "49755003" else ""
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    return write_dataset(ds, target, "the RT Structure Set")


__all__ = ["RTSTRUCT_STORAGE", "is_rtstruct", "load_rois", "load_rtstruct", "save_rtstruct"]
