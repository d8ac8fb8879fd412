"""Segmentation metrics computed the way the literature computes them.

* :mod:`medseg.metrics.overlap` -- Dice, IoU, accuracy, precision, recall for all labels in one pass, pixel accuracy;
* :mod:`medseg.metrics.surface` -- HD, HD95, ASSD (pooled and both directed averages), NSD with DeepMind
  ``surface-distance`` definitions;
* :mod:`medseg.metrics.instances` -- one-to-one instance matching, F1, PQ, AJI;
* :mod:`medseg.metrics.evaluate` -- per-case tables (:func:`evaluate_case`) and cohort summaries;
* :mod:`medseg.metrics.cohort` -- pairing prediction and reference files and evaluating a cohort.
"""

from __future__ import annotations

from medseg.metrics.cohort import CohortResult, evaluate_cohort, pair_cases
from medseg.metrics.evaluate import evaluate_case, summarize
from medseg.metrics.instances import (
    InstanceMatch,
    aggregated_jaccard_index,
    instance_metrics,
    instance_table,
    match_instances,
)
from medseg.metrics.overlap import confusion_matrix, pixel_accuracy
from medseg.metrics.surface import SurfaceDistances, surface_distances, surface_metrics

__all__ = [
    "CohortResult",
    "InstanceMatch",
    "SurfaceDistances",
    "aggregated_jaccard_index",
    "confusion_matrix",
    "evaluate_case",
    "evaluate_cohort",
    "instance_metrics",
    "instance_table",
    "match_instances",
    "pair_cases",
    "pixel_accuracy",
    "summarize",
    "surface_distances",
    "surface_metrics",
]
