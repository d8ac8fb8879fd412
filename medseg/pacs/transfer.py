"""Moving DICOM files to and from a PACS: local series stored with repaired UIDs, derived objects stored once.

:func:`store_files` sends the image series under local paths to a DICOMweb
server, with the deterministic UIDs of :mod:`medseg.io.dicom_uids` where an
anonymiser blanked them, so a SEG medseg derives from the same files
references exactly what the PACS holds. :func:`store_once` stores one derived
object (a SEG) unless the server already holds its SOP instance: with
deterministic SEG UIDs a re-run stores nothing twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from medseg.errors import ReadError
from medseg.pacs.dicomweb import DicomwebPacs

BATCH_INSTANCES = 16  # instances per STOW-RS request


@dataclass
class StoreReport:
    """What :func:`store_files` sent: instances stored and series (with whether their UIDs were repaired)."""

    stored: int = 0
    series: int = 0
    repaired_series: int = 0


def store_files(pacs: DicomwebPacs, paths: Sequence[str | os.PathLike[str]]) -> StoreReport:
    """Store every DICOM image series under ``paths`` (folders or files), repairing blank UIDs.

    Raises
    ------
    medseg.errors.ReadError
        When a path holds no DICOM image series.
    medseg.errors.PacsError
        When the server refuses an instance.
    """
    from medseg.io.dicom import find_series
    from medseg.io.dicom_uids import series_uids, with_uids

    report = StoreReport()
    for root in (Path(p) for p in paths):
        infos = [i for i in find_series(root) if i.is_image] if root.is_dir() else None
        groups = [list(i.files) for i in infos] if infos is not None else [[root]]
        if not groups:
            raise ReadError("no DICOM image series here", root)
        for files in groups:
            datasets = [pydicom.dcmread(f) for f in files]
            uids = series_uids(datasets)
            repaired = [with_uids(ds, uids, k) for k, ds in enumerate(datasets)]
            for start in range(0, len(repaired), BATCH_INSTANCES):
                report.stored += len(pacs.store(repaired[start : start + BATCH_INSTANCES]))
            report.series += 1
            report.repaired_series += int(uids.repaired)
    return report


def store_once(pacs: DicomwebPacs, path: str | os.PathLike[str]) -> bool:
    """Store the DICOM object at ``path`` unless the server holds its SOP instance already; True when sent."""
    ds = pydicom.dcmread(path)
    study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    if pacs.has_instance(study, series, sop):
        return False
    pacs.store([ds])
    return True


__all__ = ["BATCH_INSTANCES", "StoreReport", "store_files", "store_once"]
