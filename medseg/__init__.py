"""medseg: medical image segmentation from scans on disk to trustworthy numbers.

The top-level names are the API for scripts and notebooks::

    import medseg
    ct = medseg.load("scans/patient01/")          # DICOM series, NIfTI, NRRD, PNG/TIFF ...
    model = medseg.load_segmenter("models/ct_organs")  # any Segmenter: model dir, MONAI bundle, SCHEME:NAME
    labels = model.segment(ct)                     # LabelMap on the input's grid
    table = medseg.measure(labels, ct)             # volumes (mL), shapes, HU statistics

Heavy modules (torch, MONAI) are imported on first use, not by ``import medseg``.
"""

from __future__ import annotations

import importlib
from typing import Any

from medseg._version import __version__
from medseg.errors import MedsegError
from medseg.io import Image, LabelMap, find_series, load, load_labels, save

# public name -> module that defines it; imported on first access
_LAZY: dict[str, str] = {"load_segmenter": "medseg.segmenters", "Segmenter": "medseg.segmenters", "load_model": "medseg.models", "measure": "medseg.measurement", "evaluate_case": "medseg.metrics", "match_instances": "medseg.metrics", "instance_metrics": "medseg.metrics", "resample_to": "medseg.io.resample", "save_dicom_series": "medseg.io.dicom", "run_batch": "medseg.batch", "show": "medseg.report.show", "viewer": "medseg.report.viewer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# the eager imports above and every key of _LAZY, as literals so that linters and IDEs can read them;
# a name added to _LAZY belongs here too
__all__ = [
    "Image",
    "LabelMap",
    "MedsegError",
    "Segmenter",
    "__version__",
    "evaluate_case",
    "find_series",
    "instance_metrics",
    "load",
    "load_labels",
    "load_model",
    "load_segmenter",
    "match_instances",
    "measure",
    "resample_to",
    "run_batch",
    "save",
    "save_dicom_series",
    "show",
    "viewer",
]
