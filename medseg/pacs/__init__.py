"""PACS access over DICOMweb: find series (QIDO-RS), retrieve them (WADO-RS), store SEGs back (STOW-RS).

::

    from medseg.pacs import DicomwebPacs
    pacs = DicomwebPacs("http://pacs:8042/dicom-web", timeout_s=30)
    pacs.find_series({"Modality": "CT", "StudyDate": "20240101-20240131"})

``medseg pacs find URL --modality CT`` searches from the command line, ``medseg
pacs store URL FOLDER`` uploads series (with deterministic UIDs where an
anonymiser blanked them), and ``medseg batch MODEL dicomweb://HOST/PATH?StudyInstanceUID=... OUT --store``
segments the series a query finds and stores their SEGs back (docs/BATCH.md).
"""

from __future__ import annotations

from medseg.pacs.dicomweb import DicomwebPacs, DicomwebQuery, SeriesRecord, is_dicomweb, redact
from medseg.pacs.transfer import StoreReport, store_files, store_once

__all__ = [
    "DicomwebPacs",
    "DicomwebQuery",
    "SeriesRecord",
    "StoreReport",
    "is_dicomweb",
    "redact",
    "store_files",
    "store_once",
]
