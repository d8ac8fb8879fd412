"""Segmentation models: the network factory, the model directory format, MONAI bundle import, nnU-Net folders.

>>> import medseg
>>> model = medseg.load_model("sample_data/models/ct_organs")   # doctest: +SKIP
>>> labels = model.segment(medseg.load("scan.nii.gz"))         # doctest: +SKIP

The names below are imported on first use, so ``medseg.models.nnunet`` (which
needs torch but not MONAI) starts without importing MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SegmentationModel": "medseg.models.model",
    "load_model": "medseg.models.model",
    "build_network": "medseg.models.networks",
    "ModelCard": "medseg.models.store",
    "save_model_dir": "medseg.models.store",
}

__all__ = ["ModelCard", "SegmentationModel", "build_network", "load_model", "save_model_dir"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
