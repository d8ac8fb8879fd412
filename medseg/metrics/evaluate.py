"""Per-case, per-label evaluation tables and cohort summaries.

Empty structures are flagged in the ``empty_in`` column and never silently
averaged, in line with Metrics Reloaded (Maier-Hein et al. 2024): a missed or
spurious structure scores 0 on the overlap metrics, its distances are
undefined, and a structure absent from both maps is undefined throughout
(a true negative, counted apart); the per-label ``accuracy`` (label against
the rest) is defined whenever either map holds the label, and the case's
``pixel_accuracy`` (all labels) on every row:

=====================  =========================================  ==============================
``empty_in``           scores                                      meaning
=====================  =========================================  ==============================
``""``                 all defined                                 both maps hold the label
``"prediction"``       Dice = IoU = recall = NSD = 0;              missed structure
                       precision, HD, HD95, ASSDs = NaN
``"reference"``        Dice = IoU = precision = NSD = 0;           structure that should be absent
                       recall, HD, HD95, ASSDs = NaN
``"both"``             every score NaN                             correctly absent (true negative)
=====================  =========================================  ==============================

:func:`summarize` averages only finite values and reports, per label and
metric, how many cases it averaged (``n``) and how many it could not
(``n_undefined``), plus the counts of each kind of empty case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from medseg.metrics._inputs import LabelInput, pair_arrays
from medseg.metrics.overlap import confusion_matrix, overlap_from_confusion, pixel_accuracy
from medseg.metrics.surface import surface_metrics

Labels = Mapping[int, str] | Sequence[int] | None

#: overlap and surface metrics per label, in report order
OVERLAP_METRICS = ("dice", "iou", "accuracy", "pixel_accuracy", "precision", "recall")
#: ``assd_mm`` pools both surfaces; ``asd_ref_to_pred_mm`` / ``asd_pred_to_ref_mm`` are the directed averages
SURFACE_METRICS = ("hd_mm", "hd95_mm", "assd_mm", "asd_ref_to_pred_mm", "asd_pred_to_ref_mm", "nsd")
#: metrics summarised per label, in report order
SUMMARY_METRICS = (*OVERLAP_METRICS, *SURFACE_METRICS, "abs_volume_diff_ml", "rel_volume_diff_pct")


def _label_names(labels: Labels, present: np.ndarray) -> dict[int, str]:
    if labels is None:
        return {int(v): "" for v in present if v != 0}
    if isinstance(labels, Mapping):
        return {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0])) if int(k) != 0}
    return {int(v): "" for v in sorted(labels) if int(v) != 0}


def _union_box(a: slice | None, b: slice | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def evaluate_case(
    pred: LabelInput,
    ref: LabelInput,
    labels: Labels = None,
    tolerance_mm: float = 2.0,
    spacing: Sequence[float] | None = None,
    surface: bool = True,
    case: str | None = None,
) -> pd.DataFrame:
    """Overlap, volume and surface metrics of every label of one case.

    Parameters
    ----------
    pred, ref : Image or ndarray
        Predicted and reference label maps on the same grid (Images are
        checked; resample a prediction first with
        :func:`medseg.io.resample.resample_to`).
    labels : mapping int -> name, or sequence of int, optional
        Labels to report (0 is background and skipped); default every label
        present in either map.
    tolerance_mm : float
        Tolerance of the normalised surface distance, mm.
    spacing : sequence of float, optional
        Voxel size in mm for plain arrays (default: the reference Image's, or 1).
    surface : bool
        Compute HD, HD95, ASSD and NSD (the slow part); False gives overlap and volumes only.
    case : str, optional
        Case name put in a leading ``case`` column.

    Returns
    -------
    pandas.DataFrame
        One row per label: ``label``, ``name``, ``empty_in``, ``dice``, ``iou``,
        ``accuracy`` (this label against the rest: (TP + TN) / all voxels),
        ``pixel_accuracy`` (the case's share of voxels with the right label,
        background included; the same on every row), ``precision``,
        ``recall``, ``ref_volume_ml``, ``pred_volume_ml``,
        ``abs_volume_diff_ml``, ``rel_volume_diff_pct`` (2D: areas in mm^2,
        ``*_area_mm2`` columns), ``hd_mm``, ``hd95_mm``, ``assd_mm`` (both
        surfaces pooled, as Metrics Reloaded), ``asd_ref_to_pred_mm`` and
        ``asd_pred_to_ref_mm`` (the directed averages, whose plain mean many
        papers call ASSD), ``nsd``, ``tolerance_mm``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((10, 10, 4), np.uint8); ref[2:6, 2:6] = 1
    >>> pred = np.roll(ref, 1, axis=0)
    >>> row = evaluate_case(pred, ref, spacing=(1, 1, 2)).iloc[0]
    >>> float(row.dice), float(row.hd_mm)
    (0.75, 1.0)
    """
    p, r, sp = pair_arrays(pred, ref, spacing)
    conf = confusion_matrix(p, r)
    names = _label_names(labels, np.flatnonzero(conf.sum(axis=0) + conf.sum(axis=1)))
    ids = np.fromiter(names, dtype=np.int64, count=len(names))
    ov = overlap_from_confusion(conf, ids)
    voxel = float(np.prod(sp))
    is3d = r.ndim == 3
    unit, scale = ("volume_ml", voxel / 1000.0) if is3d else ("area_mm2", voxel)
    ref_size, pred_size = ov["n_ref"] * scale, ov["n_pred"] * scale
    empty = np.select(
        [(ov["n_ref"] == 0) & (ov["n_pred"] == 0), ov["n_pred"] == 0, ov["n_ref"] == 0],
        ["both", "prediction", "reference"],
        "",
    )
    table = pd.DataFrame(
        {
            "label": ids,
            "name": [names[i] for i in ids],
            "empty_in": empty,
            "dice": ov["dice"],
            "iou": ov["iou"],
            "accuracy": ov["accuracy"],
            "pixel_accuracy": pixel_accuracy(conf),
            "precision": ov["precision"],
            "recall": ov["recall"],
            f"ref_{unit}": ref_size,
            f"pred_{unit}": pred_size,
            f"abs_{unit.replace('_', '_diff_', 1)}": np.abs(pred_size - ref_size),
            f"rel_{unit.split('_')[0]}_diff_pct": np.where(
                ref_size > 0, 100.0 * (pred_size - ref_size) / np.where(ref_size > 0, ref_size, 1), np.nan
            ),
        }
    )
    if surface:
        surf = _surface_rows(p, r, sp, ids, tolerance_mm)
        for key in SURFACE_METRICS:
            table[key] = [s[key] for s in surf]
        table["tolerance_mm"] = float(tolerance_mm)
    if case is not None:
        table.insert(0, "case", case)
    return table


def _surface_rows(
    p: np.ndarray, r: np.ndarray, spacing: tuple[float, ...], ids: np.ndarray, tolerance_mm: float
) -> list[dict[str, float]]:
    top = int(ids.max(initial=0))
    p_boxes = ndimage.find_objects(p, max_label=top) if top else []
    r_boxes = ndimage.find_objects(r, max_label=top) if top else []
    rows = []
    for label in ids:
        box = _union_box(p_boxes[label - 1], r_boxes[label - 1]) if 0 < label <= top else None
        if box is None:
            rows.append(dict.fromkeys(SURFACE_METRICS, np.nan))
            continue
        rows.append(surface_metrics(p[box] == label, r[box] == label, spacing, tolerance_mm))
    return rows


def summarize(per_case: pd.DataFrame, metrics: Sequence[str] | None = None) -> dict:
    """Cohort statistics per label and metric, with the counts behind them.

    Parameters
    ----------
    per_case : pandas.DataFrame
        Concatenated :func:`evaluate_case` tables (a ``case`` column, one row
        per case x label), or instance tables with a ``case`` column.
    metrics : sequence of str, optional
        Columns to summarise; default every known metric column present.

    Returns
    -------
    dict
        ``{"n_cases": int, "labels": {label: {"name", "n_cases", "empty_in":
        {kind: count}, "metrics": {metric: {"n", "n_undefined", "mean", "sd",
        "median", "q1", "q3", "iqr", "min", "max"}}}}}``. Only finite values
        enter the statistics; ``n_undefined`` counts the NaN/inf ones. ``sd``
        is the sample standard deviation; statistics without values are None (JSON null).
    """
    known = metrics or [
        m
        for m in (*SUMMARY_METRICS, "abs_area_diff_mm2", "rel_area_diff_pct", "f1", "pq", "sq", "aji")
        if m in per_case.columns
    ]
    out: dict = {"n_cases": int(per_case["case"].nunique()) if "case" in per_case else 1, "labels": {}}
    groups = per_case.groupby("label", sort=True) if "label" in per_case else [(None, per_case)]
    for label, rows in groups:
        entry: dict = {
            "name": str(rows["name"].iloc[0]) if "name" in rows else "",
            "n_cases": len(rows),
            "empty_in": {k: int(v) for k, v in rows["empty_in"].replace("", "none").value_counts().items()}
            if "empty_in" in rows
            else {},
            "metrics": {},
        }
        for m in known:
            vals = pd.to_numeric(rows[m], errors="coerce").to_numpy(dtype=float)
            finite = vals[np.isfinite(vals)]
            entry["metrics"][m] = _stats(finite, len(vals) - len(finite))
        out["labels"][str(label) if label is not None else "all"] = entry
    return out


def _stats(v: np.ndarray, n_undefined: int) -> dict[str, float | int | None]:
    if v.size == 0:
        return {
            "n": 0,
            "n_undefined": n_undefined,
            "mean": None,
            "sd": None,
            "median": None,
            "q1": None,
            "q3": None,
            "iqr": None,
            "min": None,
            "max": None,
        }
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "n_undefined": int(n_undefined),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
        "min": float(v.min()),
        "max": float(v.max()),
    }
