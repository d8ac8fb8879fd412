"""Deterministic DICOM UIDs: repaired UIDs of anonymised series, and the UIDs of the objects medseg derives.

Anonymisers often blank StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID
(the shared abdominal CT is one such series). A PACS refuses such files and a
SEG or RTSTRUCT cannot reference them, so :func:`series_uids` gives every
series the UIDs it needs: the file's own where present, else one *derived*
from what identifies the object, so the same input always gets the same UID:

* SOPInstanceUID: the file meta's MediaStorageSOPInstanceUID, else derived
  from the pixel data, the position and the instance number;
* SeriesInstanceUID: derived from the series' SOP Instance UIDs;
* StudyInstanceUID: derived from the frame of reference, study date and time,
  accession number, study ID and patient ID (series of one study agree).

Derived UIDs are ``2.25.<integer>`` UIDs of name-based (SHA-1) UUIDs
(ISO/IEC 9834-8, PS3.5 B.2), at most 44 characters.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "medseg:dicom-uids")
# storage SOP classes by modality, for files whose SOP Class UID was blanked as well
_SOP_CLASS_BY_MODALITY = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_STUDY_KEYS = ("FrameOfReferenceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "PatientID")


def derived_uid(*parts: object) -> str:
    """A UID determined by ``parts`` alone: the same parts always give the same UID, others another one."""
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _file_meta(ds: Dataset, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get(keyword, "") or "").strip() if meta is not None else ""


@dataclass(frozen=True)
class SeriesUIDs:
    """The UIDs of one image series, each the file's own or derived (see the module docstring).

    ``instances`` and ``sop_classes`` follow the order of the datasets given to
    :func:`series_uids`; ``frame_of_reference`` is ``""`` for images without
    one (radiographs); ``repaired`` says whether any UID was derived.
    """

    study: str
    series: str
    frame_of_reference: str
    instances: tuple[str, ...]
    sop_classes: tuple[str, ...]
    repaired: bool


def _instance_uid(ds: Dataset) -> tuple[str, bool]:
    """SOPInstanceUID (file's own or derived) and whether it was derived."""
    own = _text(ds, "SOPInstanceUID") or _file_meta(ds, "MediaStorageSOPInstanceUID")
    if own:
        return own, False
    h = hashlib.sha256()
    if "PixelData" in ds:
        h.update(bytes(ds.PixelData))
    h.update(f"{ds.get('ImagePositionPatient', '')}|{ds.get('InstanceNumber', '')}".encode())
    return derived_uid("instance", h.hexdigest()), True


def _sop_class(ds: Dataset) -> str:
    own = _text(ds, "SOPClassUID") or _file_meta(ds, "MediaStorageSOPClassUID")
    return own or _SOP_CLASS_BY_MODALITY.get(_text(ds, "Modality").upper(), _SECONDARY_CAPTURE)


def series_uids(datasets: Sequence[Dataset]) -> SeriesUIDs:
    """The UIDs of the series made of ``datasets`` (headers of its files), repaired where blank.

    Deterministic: the same files always give the same UIDs, whatever their order.
    """
    pairs = [_instance_uid(ds) for ds in datasets]
    instances = tuple(uid for uid, _ in pairs)
    first = datasets[0]
    series = next((u for ds in datasets if (u := _text(ds, "SeriesInstanceUID"))), "")
    study = next((u for ds in datasets if (u := _text(ds, "StudyInstanceUID"))), "")
    repaired = any(derived for _, derived in pairs) or not series or not study
    series = series or derived_uid("series", *sorted(set(instances)))
    frame = _text(first, "FrameOfReferenceUID")
    # without a frame of reference nothing ties series of one study together: one study per series then
    study = study or derived_uid("study", *(_text(first, k) for k in _STUDY_KEYS), "" if frame else series)
    return SeriesUIDs(study, series, frame, instances, tuple(_sop_class(ds) for ds in datasets), repaired)


def with_uids(ds: Dataset, uids: SeriesUIDs, index: int) -> Dataset:
    """A copy of ``ds`` (dataset ``index`` of the series) carrying the series' UIDs, file meta included."""
    out = ds.copy()
    out.StudyInstanceUID = uids.study
    out.SeriesInstanceUID = uids.series
    out.SOPInstanceUID = uids.instances[index]
    out.SOPClassUID = uids.sop_classes[index]
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta.copy()
        out.file_meta.MediaStorageSOPInstanceUID = uids.instances[index]
        out.file_meta.MediaStorageSOPClassUID = uids.sop_classes[index]
    return out


__all__ = ["SeriesUIDs", "derived_uid", "series_uids", "with_uids"]
