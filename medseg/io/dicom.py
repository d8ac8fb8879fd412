"""DICOM series discovery and loading with trustworthy geometry.

:func:`find_series` lists every series under a folder; :func:`load_dicom`
loads one series (or one file) into an :class:`~medseg.io.image.Image`.

Series assembly rules:

* Slices are sorted by ImagePositionPatient projected on the slice normal
  (the cross product of the ImageOrientationPatient row and column vectors),
  never by InstanceNumber; RescaleSlope/Intercept is applied per slice.
* Images of one SeriesInstanceUID with different orientations, sizes or pixel
  spacings are split into separate entries (with a warning), never stacked.
  Localizer/scout images (ImageType LOCALIZER/SCOUT, or at most two images
  whose orientation differs from the bulk of the series) are excluded.
* Non-uniform slice spacing or missing slices: a warning giving the largest
  deviation (mm) of a slice from the uniform grid through the first and last
  slices, which the volume uses; ``strict=True`` raises instead.
* Two different images at the same position (multi-echo, temporal series)
  cannot be stacked: :class:`~medseg.errors.SeriesError`.
* Gantry tilt (slices stacked along an axis oblique to their plane): the
  voxels are kept as acquired and the slice axis of ``direction`` is the true
  stacking direction, so the direction matrix is sheared (not orthogonal) and
  the affine places every voxel exactly; a warning says so.
* Enhanced multi-frame CT/MR: per-frame PlanePosition, PlaneOrientation,
  PixelMeasures and PixelValueTransformation functional groups are honoured.
* Radiographs: MONOCHROME1 is inverted; spacing from PixelSpacing, else
  ImagerPixelSpacing (divided by EstimatedRadiographicMagnificationFactor
  when present), recorded in ``meta["spacing_source"]``; no spacing at all
  gives ``spacing_known=False`` and a warning.

Speed: every header is parsed once by pydicom (pixel data deferred). Pixels
are decoded in a thread pool; lossless-compressed grayscale series go through
decoders that release the GIL so slices decode in parallel (the pydicom
plugins hold it): imagecodecs for JPEG 2000, GDCM via SimpleITK for the rest.
``benchmarks/bench_io.py`` measures this against SimpleITK's and MONAI's
series readers.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medseg.errors import NotAnImageError, ReadError, SeriesError
from medseg.io.dicom_frames import (
    IDENTITY_KEYWORDS,
    META_KEYWORDS,
    PIXEL_KEYWORDS,
    Plane,
    check_pixel_data,
    decode_file,
    decode_with_gdcm,
    decode_with_imagecodecs,
    describe_non_image,
    gdcm_decodable,
    imagecodecs_decodable,
    is_image,
    native_layout,
    planes_of,
    read_header,
    read_native,
    transfer_syntax,
)
from medseg.io.dicom_geometry import Grid, geometry_key, positive_number, stack_planes
from medseg.io.dicom_write import save_dicom_series
from medseg.io.guard import one_line
from medseg.io.image import Image

_MAX_SCOUT_IMAGES = 2  # an off-orientation group this small inside a series is treated as a localizer
PARALLEL_MIN_SLICES = 8  # decoding compressed slices in parallel threads pays off from this many


def _workers() -> int:
    """Threads for reading and decoding: the CPUs this process may use, at most 8."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, usable or 1))


@dataclass(frozen=True)
class SeriesInfo:
    """One entry of :func:`find_series`: an image series (or part of one) or a non-image object set.

    ``shape`` and ``spacing`` (mm) are in array order ``(x, y, z)`` (``(x, y)``
    for a 2D image); ``orientation`` is the axis code (e.g. ``'LPS'``); ``index``
    is the position in the list, usable as ``load_dicom(folder, series=index)``.
    Non-image entries (SR, RTSTRUCT, RTPLAN, waveforms, presentation states)
    have ``is_image=False`` and empty geometry.
    """

    index: int
    uid: str
    modality: str
    description: str
    n_images: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    files: tuple[Path, ...]
    is_image: bool
    warnings: tuple[str, ...] = ()
    study_uid: str = ""
    spacing_known: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings, ``spacing_mm`` for the spacing)."""
        d = asdict(self)
        d["files"] = [str(p) for p in self.files]
        d["spacing_mm"] = [round(float(s), 6) for s in d.pop("spacing")]
        d["shape"] = list(self.shape)
        d["warnings"] = list(self.warnings)
        return d


@dataclass
class _Candidate:
    """A loadable set of planes (or a non-image group) found while scanning."""

    uid: str
    datasets: list[Dataset]
    files: list[Path]
    planes: list[Plane] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # expected exclusions (localizers, copies): not strict-mode errors
    grid: Grid | None = None
    error: SeriesError | None = None

    @property
    def image(self) -> bool:
        return bool(self.planes)

    def info(self, index: int) -> SeriesInfo:
        ds = self.datasets[0]
        grid = self.grid
        return SeriesInfo(
            index=index,
            uid=self.uid,
            modality=str(ds.get("Modality", "")),
            description=str(ds.get("SeriesDescription", "")) if self.image else describe_non_image(ds),
            n_images=len(self.planes) if self.image else len(self.datasets),
            shape=grid.shape if grid else (),
            spacing=grid.spacing if grid else (),
            orientation=_orientation_code(grid.direction) if grid else "",
            files=tuple(self.files),
            is_image=self.image,
            warnings=tuple(
                self.notes
                + self.warnings
                + (grid.warnings if grid else [])
                + ([self.error.reason] if self.error else [])
            ),
            study_uid=str(ds.get("StudyInstanceUID", "")),
            spacing_known=grid.spacing_known if grid else False,
        )


def _orientation_code(direction: np.ndarray) -> str:
    return Image(np.zeros((1,) * len(direction)), direction=direction).orientation


# ---- scanning -------------------------------------------------------------------------


def _series_key(ds: Dataset, path: Path) -> tuple[str, ...]:
    """SeriesInstanceUID; for anonymised files without one: folder, frame of reference, modality, number, description."""
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if uid:
        return (uid,)
    fields = ("FrameOfReferenceUID", "Modality", "SeriesNumber", "SeriesDescription")
    return ("", str(path.parent), *(str(ds.get(k, "") or "") for k in fields))


def _instance_uid(ds: Dataset) -> str:
    """SOPInstanceUID, else the file meta's MediaStorageSOPInstanceUID (anonymisers may blank one of them)."""
    file_meta = getattr(ds, "file_meta", None)
    return str(
        ds.get("SOPInstanceUID", "") or (file_meta.get("MediaStorageSOPInstanceUID", "") if file_meta else "") or ""
    )


def _split_single_frames(uid: str, planes: list[Plane]) -> list[_Candidate]:
    """Split one series' single-frame planes into stackable groups, dropping localizers and copies."""
    notes: list[str] = []
    warnings: list[str] = []
    seen: dict[str, Plane] = {}
    for p in planes:
        seen.setdefault(_instance_uid(p.ds) or str(p.path), p)
    if len(seen) < len(planes):
        notes.append(f"ignored {len(planes) - len(seen)} duplicate files of the same SOPInstanceUID")
    planes = list(seen.values())
    if any(p.localizer for p in planes) and not all(p.localizer for p in planes):
        n = sum(p.localizer for p in planes)
        notes.append(f"excluded {n} localizer/scout image(s)")
        planes = [p for p in planes if not p.localizer]
    loose = [p for p in planes if p.position is None or p.orientation is None]
    groups: dict[tuple[Any, ...], list[Plane]] = defaultdict(list)
    for p in planes:
        if p.position is not None and p.orientation is not None:
            groups[geometry_key(p)].append(p)
    parts = sorted(groups.values(), key=len, reverse=True)
    if parts:
        bulk = parts[0]
        scouts = [
            g
            for g in parts[1:]
            if len(g) <= _MAX_SCOUT_IMAGES < len(bulk) and geometry_key(g[0])[2] != geometry_key(bulk[0])[2]
        ]
        if scouts:
            notes.append(
                f"excluded {sum(map(len, scouts))} image(s) whose orientation differs from the series (scouts)"
            )
            parts = [g for g in parts if not any(g is s for s in scouts)]
    pieces = parts + [[p] for p in loose]
    if len(pieces) > 1:
        warnings.append(f"series holds images of different orientations or sizes: split into {len(pieces)} entries")
    return [_Candidate(uid, [p.ds for p in g], [p.path for p in g], g, list(warnings), list(notes)) for g in pieces]


def _read_all(paths: list[Path]) -> tuple[list[tuple[Path, Dataset]], list[str]]:
    """Headers of every DICOM file in ``paths``; corrupt ones become warnings, non-DICOM files are ignored."""

    def read(path: Path) -> Dataset | ReadError | None:
        try:
            return read_header(path)
        except ReadError as exc:
            return exc

    found, problems = [], []
    with ThreadPoolExecutor(_workers()) as pool:
        for path, result in zip(paths, pool.map(read, paths), strict=True):
            if isinstance(result, ReadError):
                problems.append(f"{path.name}: {result.reason}")
            elif result is not None:
                found.append((path, result))
    return found, problems


def _candidates(found: list[tuple[Path, Dataset]], problems: list[str], folder: Path) -> list[_Candidate]:
    by_series: dict[tuple[str, ...], list[tuple[Path, Dataset]]] = defaultdict(list)
    for path, ds in found:
        by_series[_series_key(ds, path)].append((path, ds))
    out: list[_Candidate] = []
    for key, members in by_series.items():
        uid, first_of_series = key[0], len(out)
        non_images = [(p, d) for p, d in members if not is_image(d)]
        if non_images:
            out.append(_Candidate(uid, [d for _, d in non_images], [p for p, _ in non_images]))
        singles: list[Plane] = []
        for path, ds in members:
            if not is_image(ds):
                continue
            try:
                planes = planes_of(ds, path)
            except ReadError as exc:
                problems.append(f"{path.name}: {exc.reason}")
                continue
            if "NumberOfFrames" in ds:
                out.append(_Candidate(uid, [ds], [path], planes))
            else:
                singles.extend(planes)
        if singles:
            out.extend(_split_single_frames(uid, singles))
        if not uid:
            for cand in out[first_of_series:]:
                cand.notes.append(
                    "no SeriesInstanceUID: images grouped by folder, frame of reference, modality and description"
                )
    for cand in out:
        if problems:
            cand.warnings.append(f"skipped {len(problems)} unreadable file(s), first {problems[0]}")
        if cand.image:
            try:
                cand.grid = stack_planes(cand.planes, folder)
                cand.files = list(dict.fromkeys(p.path for p in cand.grid.planes))  # in slice order
            except SeriesError as exc:
                cand.error = exc
    out.sort(
        key=lambda c: (
            not c.image,
            str(c.datasets[0].get("StudyInstanceUID", "")),
            positive_number(c.datasets[0], "SeriesNumber") or 0,
            c.uid,
            str(c.files[0]),
        )
    )
    return out


def _scan(folder: Path) -> list[_Candidate]:
    if not folder.is_dir():
        raise ReadError("not a folder", folder)
    try:
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise ReadError(f"cannot list folder ({exc.strerror})", folder) from exc
    if not paths:
        raise ReadError("empty folder: no files", folder)
    found, problems = _read_all(paths)
    if not found:
        detail = f"; {len(problems)} corrupt, first {problems[0]}" if problems else ""
        raise ReadError(f"no DICOM files among {len(paths)} files{detail}", folder)
    return _candidates(found, problems, folder)


def find_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """List every DICOM series under ``folder`` (searched recursively), images first.

    Each file's header is read once; pixel data is not decoded.

    Parameters
    ----------
    folder : path-like
        Folder to search; non-DICOM files are ignored, corrupt DICOM files
        are reported in the entries' ``warnings``.

    Returns
    -------
    list of SeriesInfo
        Image series (split where one SeriesInstanceUID mixes geometries),
        then non-image objects (``is_image=False``).

    Raises
    ------
    medseg.errors.ReadError
        For a missing or empty folder, or one without any DICOM file.
    """
    return [c.info(i) for i, c in enumerate(_scan(Path(folder)))]


# ---- loading ---------------------------------------------------------------------------


def _rescaled_dtype(planes: list[Plane]) -> np.dtype:
    """Type of the rescaled values: for integer slopes/intercepts int16 when every value the stored bits
    allow fits (CT HU from 12-bit data), else int32 when they fit it; else float32, or float64 for values
    beyond float32's range (a corrupt rescale)."""
    ends = []
    for ds in {id(p.ds): p.ds for p in planes}.values():
        bits = int(ds.get("BitsStored", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        ends += [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1]
    values = [p.slope * v + p.intercept for p in planes for v in (min(ends), max(ends))]
    low, high = min(values), max(values)
    if all(float(v).is_integer() for p in planes for v in (p.slope, p.intercept)):
        for dtype in (np.int16, np.int32):
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                return np.dtype(dtype)
    return np.dtype(np.float32 if max(-low, high) <= float(np.finfo(np.float32).max) else np.float64)


def _decode(path: Path, plane: Plane, route: str) -> tuple[np.ndarray, bool]:
    """Frames of one file and whether they are already rescaled (GDCM applies the rescale itself).

    ``route`` is the series' parallel decoder (:func:`_parallel_route`):
    imagecodecs or GDCM when the series qualifies; otherwise, and for files
    they turn down, a direct read of uncompressed pixels, else pydicom's
    decoders (which also give the precise error when a parallel decoder fails).
    """
    if route == "imagecodecs":
        frames = decode_with_imagecodecs(path, plane)
        if frames is not None:
            return frames, False
    elif route == "gdcm":
        try:
            return decode_with_gdcm(path, plane)[np.newaxis], True
        except ReadError:
            pass
    layout = native_layout(plane.ds, plane)
    if layout is not None:
        return read_native(path, layout, plane.rows, plane.columns), False
    return decode_file(plane.ds, path), False


def _parallel_route(planes: list[Plane]) -> str:
    """The GIL-free decoder for a series: ``"imagecodecs"`` (JPEG 2000), ``"gdcm"`` (lossless syntaxes) or ``""``."""
    if len(planes) < PARALLEL_MIN_SLICES:
        return ""
    if imagecodecs_decodable(planes):
        return "imagecodecs"
    return "gdcm" if gdcm_decodable(planes) else ""


def _assemble(grid: Grid) -> np.ndarray:
    """Decode every plane of ``grid`` (files in parallel threads) into a ``[x, y, (z,) (c)]`` array of modality values.

    Lossless-compressed grayscale series of at least :data:`PARALLEL_MIN_SLICES`
    single-frame files are decoded by decoders that release the GIL (JPEG 2000
    by imagecodecs, the other syntaxes by GDCM through SimpleITK); uncompressed
    slices are read straight from disk; everything else goes through pydicom's
    plugins. Every file's pixel data is first checked against the size its
    header declares (:func:`~medseg.io.dicom_frames.check_pixel_data`). Each
    worker rescales its slices into the output: int16 when every value fits
    (CT HU), else int32, float32 for fractional slopes/intercepts (float64
    beyond float32's range); without a rescale the stored type is kept.
    """
    planes = grid.planes
    jobs: dict[Path, list[tuple[int, Plane]]] = defaultdict(list)
    for k, plane in enumerate(planes):
        jobs[plane.path].append((k, plane))
    paths = list(jobs)
    for path in paths:
        check_pixel_data(jobs[path][0][1].ds, path)
    samples = int(planes[0].ds.get("SamplesPerPixel", 1) or 1)
    rescaled = samples == 1 and any(p.slope != 1.0 or p.intercept != 0.0 for p in planes)
    route = _parallel_route(planes)
    first: tuple[np.ndarray, bool] | None = None
    if rescaled or route == "gdcm":
        dtype = _rescaled_dtype(planes)
        stack = np.empty((len(planes), planes[0].rows, planes[0].columns), dtype)
    else:  # keep the stored type, as the decoder reports it
        first = _decode(paths[0], planes[0], route)
        stack = np.empty((len(planes), *first[0].shape[1:]), first[0].dtype)
    measure = stack.dtype == np.int32  # int16 may still hold the actual values
    lows, highs = np.zeros(len(planes)), np.zeros(len(planes))

    def place(path: Path, decoded: tuple[np.ndarray, bool]) -> None:
        frames, done = decoded
        for k, plane in jobs[path]:
            frame, target = frames[plane.frame or 0], stack[k]
            if frame.shape != target.shape:
                raise SeriesError(f"frame is {frame.shape} (rows, columns), the series {target.shape}", path)
            if done or not rescaled:
                target[...] = frame
            elif plane.slope == 1.0:  # integer wrap-around is harmless: the result fits the target type
                np.add(frame, target.dtype.type(plane.intercept), out=target, dtype=target.dtype, casting="unsafe")
            else:
                np.multiply(frame, target.dtype.type(plane.slope), out=target, dtype=target.dtype, casting="unsafe")
                target += target.dtype.type(plane.intercept)
            if measure:
                lows[k], highs[k] = target.min(), target.max()

    if first is not None:
        place(paths[0], first)
    with ThreadPoolExecutor(_workers()) as pool:
        list(pool.map(lambda p: place(p, _decode(p, jobs[p][0][1], route)), paths[1:] if first else paths))

    if measure and lows.min() >= -(2**15) and highs.max() < 2**15:
        stack = stack.astype(np.int16)
    if grid.ndim == 2:
        return np.moveaxis(stack[0], 0, 1)
    return np.moveaxis(stack, (0, 1, 2), (2, 1, 0))


def _meta(grid: Grid, include_patient_identity: bool) -> dict[str, Any]:
    ds = grid.planes[0].ds
    meta: dict[str, Any] = {k: str(ds.get(k)) for k in META_KEYWORDS if ds.get(k) not in (None, "")}
    syntax = transfer_syntax(ds)
    meta["transfer_syntax"] = syntax.name if syntax else "unknown"
    meta["spacing_source"] = grid.spacing_source or "none"
    units = next((str(ds.get(k)) for k in ("RescaleType", "Units", "DoseUnits") if ds.get(k)), "")
    meta["units"] = "HU" if meta.get("Modality") == "CT" else units
    meta["rescale_per_slice"] = len({(p.slope, p.intercept) for p in grid.planes}) > 1
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        meta["monochrome1_inverted"] = True
    if include_patient_identity:
        meta.update({k: str(ds.get(k, "")) for k in IDENTITY_KEYWORDS})
    return meta


def _to_image(grid: Grid, source: Path, warnings: list[str], include_patient_identity: bool) -> Image:
    array = _assemble(grid)
    meta = _meta(grid, include_patient_identity)
    modality = meta.get("Modality", "")
    return Image(
        array,
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction,
        modality=modality,
        intensity_unit="HU" if modality == "CT" else "",
        spacing_known=grid.spacing_known,
        channel_axis=array.ndim > grid.ndim,
        meta=meta,
        warnings=warnings + grid.warnings,
        source=str(source),
    )


def _listing(items: list[tuple[int, _Candidate]]) -> str:
    """One-line list of candidates: ``[index] UID modality 'description' N images``."""
    infos = [c.info(i) for i, c in items]
    return one_line(
        "; ".join(
            f"[{i.index}] {i.uid or '(no UID)'} {i.modality} '{i.description}' {i.n_images} images" for i in infos
        ),
        limit=10_000,
    )


def _choose(cands: list[_Candidate], series: str | int | None, folder: Path) -> _Candidate:
    """The candidate ``series`` names (UID, index, or a digit string as index), or the only image series."""
    indexed = list(enumerate(cands))
    if isinstance(series, str) and series.isdigit():  # UIDs always have dots: a CLI "2" is an index
        series = int(series)
    if series is None:
        images = [(i, c) for i, c in indexed if c.image]
        if not images:
            kinds = ", ".join(sorted({describe_non_image(c.datasets[0]) for c in cands}))
            raise NotAnImageError(f"no image series, only non-image DICOM objects: {kinds}", folder)
        if len(images) > 1:
            raise SeriesError(
                f"{len(images)} image series found, choose one with series=UID or index: {_listing(images)}", folder
            )
        return images[0][1]
    if isinstance(series, int) and not isinstance(series, bool):
        if not 0 <= series < len(cands):
            raise SeriesError(f"series index {series} out of range 0..{len(cands) - 1}: {_listing(indexed)}", folder)
        cand = cands[series]
    else:
        matches = [(i, c) for i, c in indexed if c.uid == str(series)]
        if not matches:
            raise SeriesError(f"no series with UID {series}: {_listing(indexed)}", folder)
        images = [(i, c) for i, c in matches if c.image]
        if len(images) > 1:
            raise SeriesError(
                f"UID {series} was split into several entries, choose by index: {_listing(images)}", folder
            )
        cand = (images or matches)[0][1]
    if not cand.image:
        raise NotAnImageError(f"series {cand.uid} holds no image: {describe_non_image(cand.datasets[0])}", folder)
    return cand


def load_dicom(
    path: str | os.PathLike[str],
    *,
    series: str | int | None = None,
    strict: bool = False,
    include_patient_identity: bool = False,
) -> Image:
    """Load a DICOM series (folder) or a DICOM file into an :class:`Image`.

    Parameters
    ----------
    path : path-like
        A folder holding one image series (searched recursively), or one
        single- or multi-frame DICOM file.
    series : str or int, optional
        For a folder with several series: the SeriesInstanceUID or the index
        in :func:`find_series`.
    strict : bool
        Raise :class:`~medseg.errors.SeriesError` instead of warning on
        non-uniform spacing/missing slices, gantry tilt, unknown spacing,
        split series or unreadable files.
    include_patient_identity : bool
        Copy PatientName, PatientID and PatientBirthDate into ``meta``.

    Returns
    -------
    Image
        3D ``[x, y, z]`` (or 2D ``[x, y]``) array in modality units (HU for
        CT), LPS geometry, non-identifying metadata and warnings.

    Raises
    ------
    medseg.errors.ReadError
        (or a subclass) naming the file and the reason.
    """
    path = Path(path)
    if path.is_dir():
        cand = _choose(_scan(path), series, path)
        if cand.error is not None or cand.grid is None:
            raise cand.error or SeriesError("series has no geometry", path)
        grid, warnings, notes = cand.grid, cand.warnings, cand.notes
    elif path.is_file():
        ds = read_header(path)
        if ds is None:
            raise ReadError("not a DICOM file", path)
        if not is_image(ds):
            kind = describe_non_image(ds)
            detail = "no pixel data" if not any(k in ds for k in PIXEL_KEYWORDS) else "not an image object"
            raise NotAnImageError(f"DICOM {kind} holds no image ({detail})", path)
        grid, warnings, notes = stack_planes(planes_of(ds, path), path), [], []
    else:
        raise ReadError("no such file or folder", path)
    if strict and (problems := warnings + grid.warnings):
        raise SeriesError(f"strict mode: {problems[0]}", path)
    return _to_image(grid, path, notes + warnings, include_patient_identity)


__all__ = ["SeriesInfo", "find_series", "load_dicom", "save_dicom_series"]
