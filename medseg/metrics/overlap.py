"""Overlap metrics for every label at once, from one confusion matrix.

The confusion matrix ``C[p, r]`` counts voxels predicted ``p`` whose
reference is ``r``; it comes from a single ``np.bincount`` over
``pred * K + ref`` (in slabs, so memory stays small), with no one-hot
expansion. For label ``l``: TP = ``C[l, l]``, predicted volume = row sum,
reference volume = column sum, and

* Dice = 2 TP / (|P| + |R|), IoU = TP / (|P| + |R| - TP),
* precision = TP / |P|, recall = TP / |R|,
* accuracy = (TP + TN) / N, the share of all N voxels whose membership in
  label ``l`` is right (label ``l`` against the rest, as MONAI's
  ``ConfusionMatrixMetric`` "accuracy"; the per-class "class accuracy" of
  Long et al. 2015 is the recall).

Over all labels at once, :func:`pixel_accuracy` is trace(C) / N: the share of
voxels (pixels) given the right label, background included.
"""

from __future__ import annotations

import numpy as np

from medseg.errors import LabelError

_SLAB_VOXELS = 1 << 22
_MAX_TABLE = 1 << 26


def confusion_matrix(pred: np.ndarray, ref: np.ndarray, n_labels: int | None = None) -> np.ndarray:
    """Confusion matrix ``C[p, r]`` of two integer label maps of the same shape.

    Parameters
    ----------
    pred, ref : ndarray of int
        Label maps with values in ``[0, n_labels)``.
    n_labels : int, optional
        Size of the matrix; default one more than the largest value present.

    Examples
    --------
    >>> import numpy as np
    >>> confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    p, r = pred.ravel(), ref.ravel()
    lo = min(int(p.min(initial=0)), int(r.min(initial=0)))
    if lo < 0:
        raise LabelError(f"label maps must not hold negative values (found {lo})")
    k = n_labels or max(int(p.max(initial=0)), int(r.max(initial=0))) + 1
    if k * k > _MAX_TABLE:
        raise LabelError(f"label values up to {k - 1} are too large for a dense confusion matrix; renumber them")
    code_dtype = np.uint16 if k * k <= 1 << 16 else np.uint32
    table = np.zeros(k * k, np.int64)
    for start in range(0, p.size, _SLAB_VOXELS):
        ps = p[start : start + _SLAB_VOXELS].astype(code_dtype)
        ps *= code_dtype(k)
        ps += r[start : start + _SLAB_VOXELS].astype(code_dtype)
        table += np.bincount(ps, minlength=k * k)
    return table.reshape(k, k)


def pixel_accuracy(conf: np.ndarray) -> float:
    """Share of voxels whose predicted label is the reference label (all labels, background included); NaN if none.

    Examples
    --------
    >>> import numpy as np
    >>> pixel_accuracy(confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])))
    0.75
    """
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def overlap_from_confusion(conf: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Voxel counts and overlap scores of ``labels`` from a confusion matrix.

    Returns arrays (one value per label) ``tp``, ``n_pred``, ``n_ref``,
    ``dice``, ``iou``, ``accuracy``, ``precision``, ``recall``. Where both maps
    lack the label, every score is NaN; where exactly one lacks it, Dice and
    IoU are 0, precision (no prediction) or recall (no reference) is NaN, and
    accuracy is defined.
    """
    labels = np.asarray(labels, dtype=int)
    inside = labels < conf.shape[0]
    safe = np.where(inside, labels, 0)
    tp = np.where(inside, conf[safe, safe], 0)
    n_pred = np.where(inside, conf.sum(axis=1)[safe], 0)
    n_ref = np.where(inside, conf.sum(axis=0)[safe], 0)
    total = conf.sum()
    tn = total - n_pred - n_ref + tp
    return {
        "tp": tp,
        "n_pred": n_pred,
        "n_ref": n_ref,
        "dice": _div(2 * tp, n_pred + n_ref),
        "iou": _div(tp, n_pred + n_ref - tp),
        "accuracy": np.where(n_pred + n_ref > 0, (tp + tn) / max(total, 1), np.nan),
        "precision": _div(tp, n_pred),
        "recall": _div(tp, n_ref),
    }
