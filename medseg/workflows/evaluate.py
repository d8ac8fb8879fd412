"""``medseg evaluate --baseline``: a Segmenter run on the scans and scored like any prediction folder."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.io.formats import is_image_file
from medseg.metrics.cohort import CaseRecord, CohortResult, evaluate_cohort
from medseg.segmenters.base import Segmenter
from medseg.workflows.segment import segment_files

PREDICTIONS_DIR = "predictions"


def baseline_folder_name(segmenter: Segmenter) -> str:
    """A file-system-safe folder name for a baseline's outputs (from its name and fingerprint)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", segmenter.name).strip("._") or "segmenter"
    return f"{slug}-{segmenter.fingerprint()[:8]}"


def _scans(images: Path) -> list[Path]:
    """The scans to segment: a file, or every image file and DICOM series folder directly inside a folder."""
    if not images.exists():
        raise ConfigError("no such file or folder", images)
    if not images.is_dir():
        return [images]
    return sorted(p for p in images.iterdir() if not p.name.startswith(".") and (p.is_dir() or is_image_file(p)))


def evaluate_segmenter(
    segmenter: Segmenter,
    images: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    progress: Callable[[CaseRecord], None] | None = None,
    **evaluate_options: Any,
) -> CohortResult:
    """Segment every scan under ``images`` into ``OUT/predictions/`` and evaluate it against ``reference``.

    The predictions are paired with the references by case name and scored
    exactly as ``medseg evaluate PRED GT`` scores a folder of predictions
    (:func:`medseg.metrics.cohort.evaluate_cohort`).

    Parameters
    ----------
    segmenter : Segmenter
        Any segmenter (a classical recipe, a model, a plugin).
    images : path-like
        A scan, or a folder of scans (image files and DICOM series folders).
    reference : path-like
        The reference label map(s): a file for one scan, a folder for several.
    out_dir : path-like
        Where ``predictions/`` is written.
    **evaluate_options
        ``labels``, ``tolerance_mm``, ``instances``, ``iou_threshold``, ``figures`` of :func:`evaluate_cohort`.
    """
    scans = _scans(Path(images))
    predictions = Path(out_dir) / PREDICTIONS_DIR
    written = segment_files(segmenter, scans, predictions)
    pred: Path = written[0] if Path(reference).is_file() and len(written) == 1 else predictions
    return evaluate_cohort(pred, reference, images=images, progress=progress, **evaluate_options)
