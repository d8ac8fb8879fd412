"""Instance metrics: one-to-one matching, detection F1, panoptic quality and AJI.

An instance map holds one positive integer per object (cell, nucleus, lesion)
and 0 for background. Definitions follow the nuclei-segmentation literature
as implemented by HoVer-Net (Graham et al. 2019):

* **matching** -- a predicted and a reference instance match when their IoU is
  at least ``iou_threshold``; each instance matches at most one other. Above
  0.5 a match is unique by construction; at or below 0.5 the pairing with the
  largest total IoU is chosen (Hungarian assignment), as StarDist does.
* **TP / FP / FN** -- matched pairs / unmatched predictions / unmatched
  references; precision = TP/(TP+FP), recall = TP/(TP+FN),
  F1 = 2TP/(2TP+FP+FN).
* **panoptic quality** (Kirillov et al. 2019) -- SQ = mean IoU of the matched
  pairs, RQ = TP/(TP + FP/2 + FN/2) (= F1), PQ = SQ x RQ.
* **aggregated Jaccard index** (Kumar et al. 2017) -- every reference instance
  is paired with the prediction of highest IoU (ties: lowest id; no pairing
  without overlap); AJI = sum of the pairs' intersections / (sum of the pairs'
  unions + areas of unpaired references and predictions).

When a quantity is 0/0 (e.g. precision with no prediction, anything with both
maps empty) it is NaN, never a silent 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from medseg.metrics._inputs import LabelInput, pair_arrays

_DENSE_TABLE_LIMIT = 1 << 24  # bincount over pred x ref pairs below this many cells


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


@dataclass(frozen=True)
class Overlaps:
    """The overlap table of two instance maps.

    Attributes
    ----------
    pred_ids, ref_ids : ndarray
        Instance values present (0 excluded), ascending.
    pred_sizes, ref_sizes : ndarray
        Voxel counts of those instances.
    pairs_pred, pairs_ref : ndarray
        Indices into ``pred_ids`` / ``ref_ids`` of every overlapping pair.
    pairs_inter : ndarray
        Voxel count of each pair's intersection.
    """

    pred_ids: np.ndarray
    ref_ids: np.ndarray
    pred_sizes: np.ndarray
    ref_sizes: np.ndarray
    pairs_pred: np.ndarray
    pairs_ref: np.ndarray
    pairs_inter: np.ndarray

    @property
    def pairs_union(self) -> np.ndarray:
        """Voxel count of each overlapping pair's union."""
        return self.pred_sizes[self.pairs_pred] + self.ref_sizes[self.pairs_ref] - self.pairs_inter

    @property
    def pairs_iou(self) -> np.ndarray:
        """IoU of each overlapping pair."""
        return self.pairs_inter / self.pairs_union


def overlaps(pred: np.ndarray, ref: np.ndarray) -> Overlaps:
    """Count the voxels shared by every (predicted, reference) instance pair in one pass."""
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    r_ids, r_inv = np.unique(ref.ravel(), return_inverse=True)
    n_p, n_r = len(p_ids), len(r_ids)
    if n_p * n_r <= _DENSE_TABLE_LIMIT:
        table = np.bincount(p_inv * n_r + r_inv, minlength=n_p * n_r)
        codes = np.flatnonzero(table)
        counts = table[codes]
    else:
        codes, counts = np.unique(p_inv.astype(np.int64) * n_r + r_inv, return_counts=True)
    pi, ri = np.divmod(codes, n_r)
    p_sizes = np.bincount(p_inv, minlength=n_p)
    r_sizes = np.bincount(r_inv, minlength=n_r)
    # drop background (value 0, always first when present)
    p_off = int(n_p > 0 and p_ids[0] == 0)
    r_off = int(n_r > 0 and r_ids[0] == 0)
    keep = (pi >= p_off) & (ri >= r_off)
    return Overlaps(
        pred_ids=p_ids[p_off:],
        ref_ids=r_ids[r_off:],
        pred_sizes=p_sizes[p_off:],
        ref_sizes=r_sizes[r_off:],
        pairs_pred=pi[keep] - p_off,
        pairs_ref=ri[keep] - r_off,
        pairs_inter=counts[keep],
    )


@dataclass(frozen=True)
class InstanceMatch:
    """Result of :func:`match_instances`.

    Attributes
    ----------
    pred_ids, ref_ids : ndarray
        Matched instance values, pairwise (``pred_ids[i]`` matches ``ref_ids[i]``).
    ious : ndarray
        IoU of each matched pair.
    unmatched_pred, unmatched_ref : ndarray
        Instance values left without a partner (false positives / negatives).
    iou_threshold : float
        The IoU a pair needed to match.
    """

    pred_ids: np.ndarray
    ref_ids: np.ndarray
    ious: np.ndarray
    unmatched_pred: np.ndarray
    unmatched_ref: np.ndarray
    iou_threshold: float

    @property
    def tp(self) -> int:
        """Number of matched pairs."""
        return len(self.ious)

    @property
    def fp(self) -> int:
        """Number of unmatched predicted instances."""
        return len(self.unmatched_pred)

    @property
    def fn(self) -> int:
        """Number of unmatched reference instances."""
        return len(self.unmatched_ref)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); NaN without predictions."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); NaN without reference instances."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN), equal to the recognition quality RQ; NaN when both maps are empty."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def sq(self) -> float:
        """Segmentation quality: mean IoU of the matched pairs; NaN without matches."""
        return float(self.ious.mean()) if self.tp else float("nan")

    @property
    def pq(self) -> float:
        """Panoptic quality SQ x RQ (0 when nothing matched but something exists; NaN when both maps are empty)."""
        return self.sq * self.f1 if self.tp else self.f1

    def pairs(self) -> pd.DataFrame:
        """The matched pairs as a table (``pred_id``, ``ref_id``, ``iou``)."""
        return pd.DataFrame({"pred_id": self.pred_ids, "ref_id": self.ref_ids, "iou": self.ious})

    def as_dict(self) -> dict[str, float | int]:
        """Counts and scores as a flat dict (``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``sq``, ``pq``)."""
        return {
            "n_pred": self.tp + self.fp,
            "n_ref": self.tp + self.fn,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "sq": self.sq,
            "pq": self.pq,
        }


def check_iou_threshold(iou_threshold: float) -> None:
    """Raise ``ValueError`` unless ``iou_threshold`` is in (0, 1] (NaN is not)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")


def _match(ov: Overlaps, iou_threshold: float) -> InstanceMatch:
    iou = ov.pairs_iou
    cand = np.flatnonzero(iou >= iou_threshold)
    pi, ri, ci = ov.pairs_pred[cand], ov.pairs_ref[cand], iou[cand]
    # above IoU 0.5 no instance can have two candidates; otherwise assign optimally
    if len(cand) and (len(np.unique(pi)) < len(pi) or len(np.unique(ri)) < len(ri)):
        rows, row_of = np.unique(pi, return_inverse=True)
        cols, col_of = np.unique(ri, return_inverse=True)
        score = np.zeros((len(rows), len(cols)))
        score[row_of, col_of] = ci
        a, b = linear_sum_assignment(score, maximize=True)
        ok = score[a, b] >= iou_threshold
        pi, ri, ci = rows[a[ok]], cols[b[ok]], score[a[ok], b[ok]]
    order = np.argsort(ri, kind="stable")
    pi, ri, ci = pi[order], ri[order], ci[order]
    return InstanceMatch(
        pred_ids=ov.pred_ids[pi],
        ref_ids=ov.ref_ids[ri],
        ious=np.asarray(ci, dtype=float),
        unmatched_pred=np.setdiff1d(ov.pred_ids, ov.pred_ids[pi]),
        unmatched_ref=np.setdiff1d(ov.ref_ids, ov.ref_ids[ri]),
        iou_threshold=float(iou_threshold),
    )


def match_instances(pred: LabelInput, ref: LabelInput, iou_threshold: float = 0.5) -> InstanceMatch:
    """Match predicted to reference instances one-to-one at IoU >= ``iou_threshold``.

    Parameters
    ----------
    pred, ref : Image or ndarray
        Instance maps on the same grid (0 = background, one integer per object).
    iou_threshold : float
        Minimum IoU of a matched pair, in (0, 1].

    Returns
    -------
    InstanceMatch
        Matched pairs with their IoUs, unmatched ids, and TP/FP/FN, precision,
        recall, F1, SQ and PQ as properties.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[1, 1, 0, 2, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 0, 4]])
    >>> m = match_instances(pred, ref)
    >>> m.tp, m.fp, m.fn, m.pred_ids.tolist(), m.ref_ids.tolist(), m.ious.tolist()
    (1, 1, 1, [3], [1], [1.0])
    """
    check_iou_threshold(iou_threshold)
    p, r, _ = pair_arrays(pred, ref)
    return _match(overlaps(p, r), iou_threshold)


def aggregated_jaccard_index(pred: LabelInput, ref: LabelInput) -> float:
    """Aggregated Jaccard index (Kumar et al. 2017) of two instance maps; NaN when both are empty.

    Each reference instance is paired with its highest-IoU prediction (a
    prediction may serve several references, as in the original definition).
    """
    p, r, _ = pair_arrays(pred, ref)
    return _aji(overlaps(p, r))


def _aji(ov: Overlaps) -> float:
    n_ref = len(ov.ref_ids)
    iou = ov.pairs_iou
    # best pair per reference: highest IoU, then lowest prediction index
    order = np.lexsort((ov.pairs_pred, -iou, ov.pairs_ref))
    first = order[np.r_[True, np.diff(ov.pairs_ref[order]) != 0]] if len(order) else order
    inter = ov.pairs_inter[first].sum()
    union = ov.pairs_union[first].sum()
    paired_ref = np.zeros(n_ref, bool)
    paired_ref[ov.pairs_ref[first]] = True
    paired_pred = np.zeros(len(ov.pred_ids), bool)
    paired_pred[ov.pairs_pred[first]] = True
    union += ov.ref_sizes[~paired_ref].sum() + ov.pred_sizes[~paired_pred].sum()
    return _ratio(inter, union)


def instance_metrics(pred: LabelInput, ref: LabelInput, iou_threshold: float = 0.5) -> dict[str, float | int]:
    """All instance metrics of one image: counts, precision, recall, F1, SQ, PQ and AJI.

    Returns
    -------
    dict
        ``n_pred``, ``n_ref``, ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``, ``sq``, ``pq``, ``aji``, ``iou_threshold``.
    """
    check_iou_threshold(iou_threshold)
    p, r, _ = pair_arrays(pred, ref)
    ov = overlaps(p, r)
    out = _match(ov, iou_threshold).as_dict()
    out["aji"] = _aji(ov)
    out["iou_threshold"] = float(iou_threshold)
    return out


def instance_table(pred: LabelInput, ref: LabelInput, thresholds: Sequence[float] = (0.5,)) -> pd.DataFrame:
    """:func:`instance_metrics` at several IoU thresholds, one row each."""
    return pd.DataFrame([instance_metrics(pred, ref, t) for t in thresholds])
