"""Instance metrics: hand-checked examples and the real nuclei annotation against perturbed copies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import medseg
from medseg.metrics import aggregated_jaccard_index, instance_metrics, match_instances


def test_hand_checked_example():
    # reference: A (4 px), B (4 px), C (2 px); prediction: A' = A exactly, B' covers 2 of B's 4 px plus
    # 2 new px (IoU 2/6), D' (2 px) overlaps nothing.
    ref = np.array(
        [
            [1, 1, 0, 2, 2, 0, 3, 3],
            [1, 1, 0, 2, 2, 0, 0, 0],
        ]
    )
    pred = np.array(
        [
            [7, 7, 0, 0, 0, 0, 0, 0],
            [7, 7, 0, 5, 5, 5, 9, 9],
        ]
    )
    pred[0, 5] = 5  # B' = {(1,3), (1,4), (1,5), (0,5)}: 2 px inside B, 2 outside -> IoU 2 / 6
    m = match_instances(pred, ref)
    assert (m.tp, m.fp, m.fn) == (1, 2, 2)  # only A matches at IoU >= 0.5
    assert m.pred_ids.tolist() == [7] and m.ref_ids.tolist() == [1] and m.ious.tolist() == [1.0]
    assert m.precision == pytest.approx(1 / 3) and m.recall == pytest.approx(1 / 3)
    assert m.f1 == pytest.approx(2 / (2 + 2 + 2))
    assert m.sq == 1.0 and m.pq == pytest.approx(1 / 3)
    # at IoU >= 0.3, B' matches B too: TP 2, FP 1 (D'), FN 1 (C); SQ = (1 + 1/3) / 2
    m3 = match_instances(pred, ref, iou_threshold=0.3)
    assert (m3.tp, m3.fp, m3.fn) == (2, 1, 1)
    assert m3.sq == pytest.approx(2 / 3) and m3.pq == pytest.approx(2 / 3 * 4 / 6)
    # AJI: A-A' (I 4, U 4), B-B' (I 2, U 6); C unpaired (2 px), D' unpaired (2 px): 6 / (10 + 2 + 2)
    assert aggregated_jaccard_index(pred, ref) == pytest.approx(6 / 14)


def test_one_to_one_when_iou_is_exactly_one_half():
    # P covers R1 and R2 exactly, each half of it: both IoU 0.5, but only one may match
    ref = np.array([[1, 1, 2, 2]])
    pred = np.array([[4, 4, 4, 4]])
    m = match_instances(pred, ref, iou_threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    # AJI (Kumar): both references pick P: intersections 2 + 2, unions 4 + 4 -> 0.5
    assert aggregated_jaccard_index(pred, ref) == pytest.approx(0.5)


def test_empty_maps_are_undefined_not_zero():
    z = np.zeros((5, 5), int)
    one = z.copy()
    one[1:3, 1:3] = 1
    both = instance_metrics(z, z)
    assert both["tp"] == both["fp"] == both["fn"] == 0
    assert all(np.isnan(both[k]) for k in ("precision", "recall", "f1", "sq", "pq", "aji"))
    missed = instance_metrics(z, one)
    assert missed["fn"] == 1 and missed["recall"] == 0 and np.isnan(missed["precision"])
    assert missed["f1"] == 0 and missed["pq"] == 0 and missed["aji"] == 0


def _brute_force(pred: np.ndarray, ref: np.ndarray, thr: float) -> tuple[int, int, int, list[float], float]:
    """Loop-by-loop versions of the definitions, for comparison."""
    p_ids = [v for v in np.unique(pred) if v]
    r_ids = [v for v in np.unique(ref) if v]
    iou = np.zeros((len(r_ids), len(p_ids)))
    inter = np.zeros_like(iou)
    union = np.zeros_like(iou)
    for i, r in enumerate(r_ids):
        rm = ref == r
        for j, p in enumerate(p_ids):
            pm = pred == p
            inter[i, j] = (rm & pm).sum()
            union[i, j] = (rm | pm).sum()
            iou[i, j] = inter[i, j] / union[i, j]
    # above 0.5 each reference has at most one candidate
    matched = [(i, int(np.argmax(iou[i]))) for i in range(len(r_ids)) if len(p_ids) and iou[i].max() >= thr]
    tp = len(matched)
    ious = sorted(iou[i, j] for i, j in matched)
    # AJI
    c = u = 0.0
    used = set()
    for i, r in enumerate(r_ids):
        if len(p_ids) and iou[i].max() > 0:
            j = int(np.argmax(iou[i]))
            c += inter[i, j]
            u += union[i, j]
            used.add(j)
        else:
            u += (ref == r).sum()
    u += sum((pred == p).sum() for j, p in enumerate(p_ids) if j not in used)
    return tp, len(p_ids) - tp, len(r_ids) - tp, ious, c / u


@pytest.fixture(scope="module")
def nuclei(shared_data) -> np.ndarray:
    return medseg.load(shared_data / "cells_fluo" / "nuclei_labels.tif").array.astype(np.int32)


def test_nuclei_identity_and_relabelled_copy(nuclei):
    n = len(np.unique(nuclei)) - 1
    rng = np.random.default_rng(0)
    perm = np.r_[0, rng.permutation(np.arange(1, nuclei.max() + 1)) + 1000]
    out = instance_metrics(perm[nuclei], nuclei)
    assert (out["tp"], out["fp"], out["fn"]) == (n, 0, 0)
    assert out["pq"] == 1.0 and out["aji"] == 1.0 and out["f1"] == 1.0


def test_nuclei_perturbed_copies_match_brute_force(nuclei):
    rng = np.random.default_rng(1)
    # crop to keep the brute-force loops quick
    ref = nuclei[:256, :256]
    ids = [v for v in np.unique(ref) if v]
    pred = ref.copy()
    pred[np.isin(pred, ids[:5])] = 0  # 5 nuclei missed
    grown = ndimage.grey_dilation(pred, size=(3, 3))
    pred = np.where(pred == 0, grown, pred)  # the rest dilated by one pixel
    for k in ids[5:12]:  # 7 nuclei eroded hard
        m = pred == k
        pred[m & ~ndimage.binary_erosion(m, iterations=3)] = 0
    pred = ndimage.shift(pred, (1, 0), order=0)
    free = np.argwhere(ndimage.binary_dilation(ref == 0, iterations=4) & (pred == 0) & (ref == 0))
    for i, (y, x) in enumerate(free[rng.choice(len(free), 3, replace=False)]):
        pred[y : y + 2, x : x + 2] = 5000 + i  # 3 false detections (may touch background only)
    tp, fp, fn, ious, aji = _brute_force(pred, ref, 0.5)
    out = instance_metrics(pred, ref, 0.5)
    assert (out["tp"], out["fp"], out["fn"]) == (tp, fp, fn)
    assert out["fn"] >= 5 and out["fp"] >= 1
    assert out["sq"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert out["aji"] == pytest.approx(aji, abs=1e-12)
    m = match_instances(pred, ref)
    assert sorted(m.ious.tolist()) == pytest.approx(ious)


def test_3d_instances(shared_data):
    ref = medseg.load(shared_data / "cells_3d_synthetic" / "nuclei3d_labels.tif").array.astype(np.int32)
    ids = [v for v in np.unique(ref) if v]
    pred = np.where(np.isin(ref, ids[:2]), 0, ref)  # two nuclei missed, the rest exact
    out = instance_metrics(pred, ref)
    assert (out["tp"], out["fp"], out["fn"]) == (len(ids) - 2, 0, 2)
    assert out["sq"] == 1.0 and out["pq"] == pytest.approx((len(ids) - 2) / (len(ids) - 1))
    # AJI: the missed nuclei add their volume to the union only
    missed = np.isin(ref, ids[:2]).sum()
    assert out["aji"] == pytest.approx(((ref > 0).sum() - missed) / (ref > 0).sum())
