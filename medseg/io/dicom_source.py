"""The image series a DICOM SEG or RTSTRUCT is drawn on: its headers in slice order, its UIDs, its grid.

:func:`open_series` reads the headers of a series (a folder, files, or the
source of a loaded Image) without decoding pixels and stacks its planes by
the same rules as :func:`medseg.io.dicom.load_dicom`, so :attr:`SourceSeries.grid`
is exactly the grid ``medseg.load`` gives that series. UIDs blanked by an
anonymiser are repaired deterministically (:mod:`medseg.io.dicom_uids`).

:func:`find_referenced_series` finds the series a SEG or RTSTRUCT file
references: first among the series under the object's own folder, then under
each sibling folder (the object's parent's sub-folders), matching the
SeriesInstanceUID, else the SOP Instance UIDs it names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from medseg.errors import GeometryError, NotAnImageError, ReadError, SeriesError
from medseg.io.dicom_frames import Plane, is_image, planes_of, read_header
from medseg.io.dicom_geometry import stack_planes
from medseg.io.dicom_uids import SeriesUIDs, series_uids
from medseg.io.image import Image, LabelMap

SourceLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Image


@dataclass
class SourceSeries:
    """An image series as a DICOM derived object needs it.

    Attributes
    ----------
    datasets : list of Dataset
        The headers of the series' files (pixel data left on disk), in file order.
    planes : list of Plane
        One per slice, in the order of the grid's last axis (one plane for a 2D image).
    uids : SeriesUIDs
        Study, series, frame of reference and per-dataset SOP UIDs (repaired where blank).
    grid : Image
        The series' geometry (shape, spacing, origin, direction; LPS mm) on a zero-size array.
    source : str
        Where the series was read from.
    """

    datasets: list[Dataset]
    planes: list[Plane]
    uids: SeriesUIDs
    grid: Image
    source: str
    _index: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {id(ds): i for i, ds in enumerate(self.datasets)}

    def instance(self, k: int) -> tuple[str, str, int | None]:
        """SOP Class UID, SOP Instance UID and frame number (1-based, None for single-frame files) of plane ``k``."""
        plane = self.planes[k]
        i = self._index[id(plane.ds)]
        return self.uids.sop_classes[i], self.uids.instances[i], None if plane.frame is None else plane.frame + 1

    def plane_of_instance(self) -> dict[tuple[str, int | None], int]:
        """(SOP Instance UID, frame number or None) -> plane index."""
        return {self.instance(k)[1:]: k for k in range(len(self.planes))}

    @property
    def series_uid(self) -> str:
        """The (possibly repaired) SeriesInstanceUID."""
        return self.uids.series


def _zero_grid(shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.zeros((), np.uint8), shape)


def _headers(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    found = []
    for path in paths:
        ds = read_header(path)
        if ds is None:
            raise ReadError("not a DICOM file", path)
        found.append((path, ds))
    return found


def _series_files(folder: Path, series: str | int | None, uid_hint: str) -> list[Path]:
    """Files of the image series in ``folder`` named by ``series``, else matching ``uid_hint``, else the only one."""
    from medseg.io.dicom import find_series

    images = [info for info in find_series(folder) if info.is_image]
    if not images:
        raise NotAnImageError("no DICOM image series in this folder", folder)
    if series is not None:
        chosen = [i for i in images if i.uid == str(series) or str(i.index) == str(series)]
    elif len(images) == 1:
        chosen = images
    else:
        chosen = [i for i in images if uid_hint and i.uid == uid_hint]
    if len(chosen) != 1:
        listing = "; ".join(f"[{i.index}] {i.uid or '(no UID)'} {i.modality} '{i.description}'" for i in images)
        raise SeriesError(f"{len(images)} image series here, choose one with series=UID or index: {listing}", folder)
    return [Path(p) for p in chosen[0].files]


def open_series(source: SourceLike, *, series: str | int | None = None) -> SourceSeries:
    """The headers, UIDs and grid of an image series.

    Parameters
    ----------
    source : path-like, sequence of path-like, or Image
        A series folder (searched recursively), one DICOM file, the files of
        one series, or an Image loaded from DICOM (its ``source`` is used, its
        SeriesInstanceUID picks the series in a folder of several).
    series : str or int, optional
        SeriesInstanceUID or :func:`medseg.find_series` index in a folder of several series.

    Raises
    ------
    medseg.errors.ReadError
        (or a subclass) for a missing, non-DICOM or non-image source, or an ambiguous folder.
    """
    uid_hint = ""
    if isinstance(source, Image):
        if not source.source:
            raise ReadError("the image was not read from DICOM: pass its series folder as the source")
        uid_hint = str(source.meta.get("SeriesInstanceUID", ""))
        source = source.source
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if root.is_dir():
            paths = _series_files(root, series, uid_hint)
        elif root.is_file():
            paths = [root]
        else:
            raise ReadError("no such file or folder", root)
        where = str(root)
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise ReadError("no files given for the source series")
        where = str(Path(os.path.commonpath([str(p) for p in paths])))
    found = _headers(paths)
    for path, ds in found:
        if not is_image(ds):
            raise NotAnImageError(f"not an image ({ds.get('Modality', '')}): a SEG or RTSTRUCT needs an image series", path)
    planes = [p for path, ds in found for p in planes_of(ds, path)]
    stacked = stack_planes(planes, Path(where))
    datasets = [ds for _, ds in found]
    uids = series_uids(datasets)
    first = datasets[0]
    grid = Image(
        _zero_grid(stacked.shape),
        spacing=stacked.spacing,
        origin=stacked.origin,
        direction=stacked.direction,
        modality=str(first.get("Modality", "")),
        spacing_known=stacked.spacing_known,
        meta={"StudyInstanceUID": uids.study, "SeriesInstanceUID": uids.series},
        warnings=list(stacked.warnings),
        source=where,
    )
    return SourceSeries(datasets, stacked.planes, uids, grid, where)


def _matches(info_files: Sequence[str | os.PathLike[str]], info_uid: str, series_uid: str, instances: set[str]) -> bool:
    """Whether a found series is the referenced one: by SeriesInstanceUID, else (blank UIDs) by its repaired UIDs."""
    if series_uid and info_uid == series_uid:
        return True
    if info_uid and not instances:
        return False
    uids = series_uids([ds for _, ds in _headers([Path(p) for p in info_files])])
    return (bool(series_uid) and uids.series == series_uid) or bool(instances & set(uids.instances))


def find_referenced_series(obj_path: Path, series_uid: str, instances: Sequence[str] = ()) -> SourceSeries:
    """The series ``obj_path`` (a SEG or RTSTRUCT) references, searched beside it and in its sibling folders.

    Raises
    ------
    medseg.errors.ReadError
        Naming the object and the UID when no such series is found.
    """
    from medseg.io.dicom import find_series

    wanted = set(instances)
    here = obj_path.resolve().parent
    siblings = sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here and not p.name.startswith("."))
    for folder in [here, *siblings]:
        try:
            infos = [i for i in find_series(folder) if i.is_image]
        except ReadError:  # a folder without DICOM files
            continue
        for info in infos:
            if _matches(info.files, info.uid, series_uid, wanted):
                return open_series(list(info.files))
    what = f"series {series_uid}" if series_uid else f"any of its {len(wanted)} referenced images"
    raise ReadError(
        f"referenced {what} not found in this folder or its sibling folders; pass reference=SERIES_FOLDER", obj_path
    )


def check_frame_of_reference(obj_frame: str, series: SourceSeries, refers_to_series: bool, what: Path) -> list[str]:
    """The frame-of-reference rule: equal, or differing with explicit image references (a warning), else an error.

    ``refers_to_series`` says whether the object names this series or its images.

    Raises
    ------
    medseg.errors.GeometryError
        When the frames of reference differ and the object does not reference this series.
    """
    own = series.uids.frame_of_reference
    if not obj_frame or not own or obj_frame == own:
        return [] if refers_to_series else [f"not the series the object references; placed by position in frame of reference {own}"]
    if refers_to_series:
        return [(f"frame of reference {obj_frame} differs from its series' {own}; positions trusted because the "
                 "object references that series' images")]
    raise GeometryError(f"frame of reference {obj_frame} does not match the series' {own}", what)


# copied from the source into derived objects: patient and study modules (type 2 ones written empty when absent)
_PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber")
_PATIENT_STUDY_OPTIONAL = ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientSize", "PatientWeight",
                           "StudyDescription", "PatientIdentityRemoved", "DeidentificationMethod")


def derived_dataset(src: SourceSeries, *, sop_class: str, sop_uid: str, series_uid: str, modality: str,
                    series_number: int, description: str, transfer_syntax: str) -> Dataset:
    """A new object of ``src``'s patient and study: file meta, SOP common, patient, study, series and equipment.

    The patient, study and frame of reference modules are copied from the
    source (DICOM needs them there); its UIDs are the source's, repaired where blank.
    """
    from medseg._version import __version__

    first = src.datasets[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    now = datetime.now()
    ds.InstanceCreationDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.SeriesTime = now.strftime("%H%M%S")
    for keyword in _PATIENT_STUDY_TYPE2:
        setattr(ds, keyword, first.get(keyword, "") or "")
    for keyword in _PATIENT_STUDY_OPTIONAL:
        if first.get(keyword) not in (None, ""):
            setattr(ds, keyword, first.get(keyword))
    ds.StudyInstanceUID = src.uids.study
    if src.uids.frame_of_reference:
        ds.FrameOfReferenceUID = src.uids.frame_of_reference
        ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "") or ""
    ds.Modality, ds.SeriesInstanceUID = modality, series_uid
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.SeriesDescription = description[:64]
    ds.Manufacturer = ds.ManufacturerModelName = "medseg"
    ds.SoftwareVersions = __version__
    return ds


def on_source_grid(labels: LabelMap, grid: Image, path: Path) -> np.ndarray:
    """``labels``' array on the source grid: as is, or exactly reordered (flips, permutations).

    Raises
    ------
    medseg.errors.GeometryError
        When the labels lie on another grid (resampling them would change them).
    """
    if labels.same_grid(grid):
        return np.asarray(labels.array)
    from medseg.io.resample import resample_to

    problem = (f"the labels ({'x'.join(map(str, labels.shape))}, {labels.orientation}) are not on the source series' "
               f"grid ({'x'.join(map(str, grid.shape))}, {grid.orientation}); resample them onto it first "
               "(medseg.resample_to)")
    try:
        moved = resample_to(labels, grid)
    except GeometryError as exc:
        raise GeometryError(f"{problem}: {exc.reason}", path) from exc
    counts = np.bincount(np.asarray(labels.array).ravel())
    if moved.shape != grid.shape or not np.array_equal(np.bincount(moved.array.ravel(), minlength=counts.size), counts):
        raise GeometryError(problem, path)
    return np.asarray(moved.array)


__all__ = [
    "SourceLike",
    "SourceSeries",
    "check_frame_of_reference",
    "derived_dataset",
    "find_referenced_series",
    "on_source_grid",
    "open_series",
]
