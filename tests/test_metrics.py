"""Overlap and surface metrics against the references: DeepMind surface-distance and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import medseg
from medseg.errors import GeometryError, LabelError
from medseg.metrics import confusion_matrix, evaluate_case, pixel_accuracy, summarize, surface_distances

sd = pytest.importorskip("surface_distance")
# the reference package imports scipy.ndimage's deprecated sub-namespaces
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ANISOTROPIC = (0.8, 1.3, 4.0)


@pytest.fixture(scope="module")
def labels_3mm(shared_data) -> medseg.Image:
    return medseg.load(shared_data / "ct_3mm_reference_labels.nii.gz")


def _shift(a: np.ndarray, by: tuple[int, ...]) -> np.ndarray:
    return ndimage.shift(a, by, order=0, mode="constant", cval=0)


def _perturbed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A realistic wrong prediction: shifted, eroded, dilated, removed and added structures."""
    out = _shift(labels, (1, -1, 0))
    ids = [v for v in np.unique(labels) if v]
    out[np.isin(out, ids[:3])] = 0  # three structures missed
    liver = labels == 5
    out[ndimage.binary_dilation(liver, iterations=2) & (out == 0)] = 5
    spleen = labels == 1
    out[spleen & ~ndimage.binary_erosion(spleen, iterations=2)] = 0
    centre = np.array(labels.shape) // 4
    out[tuple(slice(c, c + 4) for c in centre)] = 200  # a structure absent from the reference
    return out


def _reference_surface(pred: np.ndarray, ref: np.ndarray, spacing, tol: float) -> dict[str, float]:
    d = sd.compute_surface_distances(ref, pred, spacing)
    a_ref, a_pred = d["surfel_areas_gt"].sum(), d["surfel_areas_pred"].sum()
    asd_ref, asd_pred = sd.compute_average_surface_distance(d)
    return {
        "hd_mm": sd.compute_robust_hausdorff(d, 100),
        "hd95_mm": sd.compute_robust_hausdorff(d, 95),
        # pooled over both surfaces, weighted by area
        "assd_mm": (asd_ref * a_ref + asd_pred * a_pred) / (a_ref + a_pred),
        # the directed averages, reference -> prediction and prediction -> reference
        "asd_ref_to_pred_mm": asd_ref,
        "asd_pred_to_ref_mm": asd_pred,
        "nsd": sd.compute_surface_dice_at_tolerance(d, tol),
        "dice": sd.compute_dice_coefficient(ref, pred),
    }


@pytest.mark.parametrize("spacing", [(3.0, 3.0, 3.0), ANISOTROPIC])
@pytest.mark.parametrize(
    "perturb",
    [
        lambda m: _shift(m, (2, 0, -1)),
        lambda m: ndimage.binary_erosion(m, iterations=1),
        lambda m: ndimage.binary_dilation(m, iterations=2),
        lambda m: m ^ _shift(ndimage.binary_erosion(m, iterations=3), (1, 1, 0)),  # holes and shell
    ],
    ids=["shift", "erode", "dilate", "shell"],
)
def test_surface_metrics_match_surface_distance(labels_3mm, spacing, perturb):
    for label in (5, 1, 52, 98):  # liver, spleen, aorta, a small vertebra
        ref = labels_3mm.array == label
        pred = perturb(ref)
        rows = evaluate_case(pred.astype(np.uint8), ref.astype(np.uint8), labels=[1], spacing=spacing, tolerance_mm=2.5)
        expected = _reference_surface(pred, ref, spacing, 2.5)
        for key, value in expected.items():
            assert rows[key].iloc[0] == pytest.approx(value, abs=1e-6), (label, key)


def test_multilabel_case_matches_per_label_references(labels_3mm):
    rng = np.random.default_rng(0)
    ref = labels_3mm.array.astype(np.int64)
    pred = _perturbed(ref, rng)
    rows = evaluate_case(pred, ref, spacing=ANISOTROPIC, tolerance_mm=2.0).set_index("label")
    assert set(rows.index) == (set(np.unique(ref)) | {200}) - {0}
    for label, row in rows.iterrows():
        r, p = ref == label, pred == label
        if r.any() and p.any():
            expected = _reference_surface(p, r, ANISOTROPIC, 2.0)
            for key, value in expected.items():
                assert row[key] == pytest.approx(value, abs=1e-6), (label, key)
        elif r.any():
            assert row["empty_in"] == "prediction" and row["dice"] == 0 and row["nsd"] == 0 and np.isnan(row["hd95_mm"])
            assert row["recall"] == 0 and np.isnan(row["precision"])
        else:
            assert row["empty_in"] == "reference" and row["dice"] == 0 and row["nsd"] == 0 and np.isnan(row["assd_mm"])
            assert row["precision"] == 0 and np.isnan(row["recall"])


def test_dice_iou_match_monai_on_real_anisotropic_labels(shared_data):
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric, MeanIoU
    from monai.networks.utils import one_hot

    full = medseg.load(shared_data / "ct_abdomen_dicom_reference_labels.nii.gz")
    ref = full.array[128:384, 128:384].astype(np.int64)  # the abdomen, to keep the one-hot tensors small
    ref_img = medseg.Image(ref, spacing=full.spacing, direction=full.direction)
    pred = _perturbed(ref, np.random.default_rng(1))
    values = np.union1d(np.unique(ref), np.unique(pred))
    dense_p, dense_r = np.searchsorted(values, pred), np.searchsorted(values, ref)  # MONAI needs 0..K-1
    k = len(values)
    tp = one_hot(torch.from_numpy(dense_p)[None, None], k, dim=1)
    tr = one_hot(torch.from_numpy(dense_r)[None, None], k, dim=1)
    monai_dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(tp, tr)[0].numpy()
    monai_iou = MeanIoU(include_background=False, reduction="none", ignore_empty=True)(tp, tr)[0].numpy()
    rows = evaluate_case(ref_img.with_array(pred), ref_img.with_array(ref), surface=False)
    rows = rows.set_index("label")
    for i, label in enumerate(values[1:]):
        if (ref == label).any():  # MONAI leaves labels absent from the reference undefined (NaN)
            assert rows.loc[label, "dice"] == pytest.approx(float(monai_dice[i]), abs=1e-6)
            assert rows.loc[label, "iou"] == pytest.approx(float(monai_iou[i]), abs=1e-6)
        else:
            assert np.isnan(monai_dice[i]) and rows.loc[label, "dice"] == 0
    voxel_ml = float(np.prod(ref_img.spacing)) / 1000
    assert rows.loc[5, "ref_volume_ml"] == pytest.approx((ref == 5).sum() * voxel_ml)


def test_large_organ_on_real_anisotropic_grid(shared_data):
    ref_img = medseg.load(shared_data / "ct_abdomen_dicom_reference_labels.nii.gz")
    ref = ref_img.array == 5
    pred = _shift(ndimage.binary_dilation(ref), (3, -2, 1))
    got = surface_distances(pred, ref, ref_img.spacing)
    expected = _reference_surface(pred, ref, ref_img.spacing, 2.0)
    assert got.hausdorff() == pytest.approx(expected["hd_mm"], abs=1e-6)
    assert got.percentile_hausdorff(95) == pytest.approx(expected["hd95_mm"], abs=1e-6)
    assert got.average_symmetric() == pytest.approx(expected["assd_mm"], abs=1e-6)
    assert got.surface_dice(2.0) == pytest.approx(expected["nsd"], abs=1e-6)


def test_far_apart_structures_use_exact_distances():
    # distances beyond the precomputed lattice shells take the k-d tree path
    ref = np.zeros((60, 20, 20), bool)
    ref[2:6, 5:9, 5:9] = True
    pred = np.zeros_like(ref)
    pred[50:55, 6:10, 5:9] = True
    expected = _reference_surface(pred, ref, (1.1, 0.7, 0.9), 1.0)
    got = surface_distances(pred, ref, (1.1, 0.7, 0.9))
    assert got.hausdorff() == pytest.approx(expected["hd_mm"], abs=1e-6)
    assert got.average_symmetric() == pytest.approx(expected["assd_mm"], abs=1e-6)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.7)])
def test_2d_contours_match_surface_distance(shared_data, spacing):
    from PIL import Image as PILImage

    mask = np.asarray(PILImage.open(shared_data / "xray_chest" / "1-mask.png")) > 127
    mask = mask if mask.ndim == 2 else mask[..., 0]
    for pred in (_shift(mask, (4, -3)), ndimage.binary_erosion(mask, iterations=3)):
        got = evaluate_case(pred.astype(np.uint8), mask.astype(np.uint8), spacing=spacing, tolerance_mm=3.0).iloc[0]
        expected = _reference_surface(pred, mask, spacing, 3.0)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-6), key
        assert "ref_area_mm2" in got and got["ref_area_mm2"] == pytest.approx(mask.sum() * spacing[0] * spacing[1])


def test_empty_cases_follow_the_documented_conventions():
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    rows = evaluate_case(np.zeros_like(ref), ref, labels={1: "a", 2: "b"}).set_index("label")
    assert rows.loc[1, "empty_in"] == "prediction" and rows.loc[1, "dice"] == 0 and rows.loc[1, "nsd"] == 0
    assert rows.loc[2, "empty_in"] == "both"
    undefined = ["dice", "iou", "accuracy", "precision", "recall", "hd_mm", "hd95_mm", "assd_mm", "nsd"]
    assert rows.loc[2, [*undefined, "asd_ref_to_pred_mm", "asd_pred_to_ref_mm"]].isna().all()
    assert rows.loc[1, "accuracy"] == pytest.approx(1 - 8 / 216)  # the 8 missed voxels of 216
    assert rows.loc[1, "pixel_accuracy"] == rows.loc[1, "accuracy"]
    summary = summarize(rows.reset_index().assign(case="c1"))
    assert summary["labels"]["2"]["empty_in"] == {"both": 1}
    assert summary["labels"]["2"]["metrics"]["dice"] == {
        **summary["labels"]["2"]["metrics"]["dice"],
        "n": 0,
        "n_undefined": 1,
    }
    assert summary["labels"]["1"]["metrics"]["dice"]["n"] == 1


def test_summary_counts_and_statistics():
    import pandas as pd

    per_case = pd.DataFrame(
        {
            "case": ["a", "b", "c", "d"],
            "label": 1,
            "name": "x",
            "empty_in": ["", "", "", "both"],
            "dice": [0.5, 0.7, 0.9, np.nan],
            "hd95_mm": [1.0, 2.0, np.inf, np.nan],
        }
    )
    s = summarize(per_case)["labels"]["1"]["metrics"]
    assert s["dice"]["n"] == 3 and s["dice"]["n_undefined"] == 1
    assert s["dice"]["mean"] == pytest.approx(0.7) and s["dice"]["sd"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert s["dice"]["median"] == pytest.approx(0.7) and s["dice"]["iqr"] == pytest.approx(0.2)
    assert s["hd95_mm"]["n"] == 2 and s["hd95_mm"]["n_undefined"] == 2


def test_confusion_matrix_counts_each_pair():
    rng = np.random.default_rng(3)
    p, r = rng.integers(0, 7, (40, 30, 5)), rng.integers(0, 5, (40, 30, 5))
    expected = np.zeros((7, 7), np.int64)
    np.add.at(expected, (p.ravel(), r.ravel()), 1)
    assert np.array_equal(confusion_matrix(p, r), expected)


def test_geometry_and_label_checks():
    a = medseg.Image(np.zeros((4, 4, 4), np.uint8), spacing=(1, 1, 1))
    b = medseg.Image(np.zeros((4, 4, 4), np.uint8), spacing=(1, 1, 2))
    with pytest.raises(GeometryError, match="different grids"):
        evaluate_case(a, b)
    with pytest.raises(GeometryError):
        evaluate_case(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(LabelError, match="non-integer"):
        evaluate_case(np.full((3, 3), 0.5), np.zeros((3, 3)))
    with pytest.raises(LabelError, match="negative"):
        evaluate_case(np.full((3, 3), -1), np.zeros((3, 3), int))


@pytest.mark.parametrize("path", ["transform", "transform_checked"])
def test_every_distance_path_matches_surface_distance(labels_3mm, monkeypatch, path):
    """Force the distance-transform fallback (and its offset check) that far-apart large surfaces take."""
    import copy

    from medseg.metrics import surface

    monkeypatch.setattr(surface, "_SHELL_OFFSETS", 1)  # nothing found by the shell search
    monkeypatch.setattr(surface, "_TREE_LIMIT", 0)  # everything left goes to the transform
    if path == "transform_checked":
        shells = copy.copy(surface._shells((3.0, 1.1, 2.2)))
        shells.distinct = np.zeros(0)  # no length is known unique: every point checks the offsets themselves
        monkeypatch.setattr(surface, "_shells", lambda spacing: shells)
    ref = labels_3mm.array == 5
    pred = _shift(ndimage.binary_dilation(ref, iterations=2), (2, -3, 1))
    got = surface_distances(pred, ref, (3.0, 1.1, 2.2))
    expected = _reference_surface(pred, ref, (3.0, 1.1, 2.2), 2.0)
    assert got.hausdorff() == pytest.approx(expected["hd_mm"], abs=1e-6)
    assert got.percentile_hausdorff(95) == pytest.approx(expected["hd95_mm"], abs=1e-6)
    assert got.average_symmetric() == pytest.approx(expected["assd_mm"], abs=1e-6)
    assert got.surface_dice(2.0) == pytest.approx(expected["nsd"], abs=1e-6)


def test_pixel_accuracy_matches_numpy(labels_3mm):
    ref = labels_3mm.array.astype(np.int64)
    pred = _perturbed(ref, np.random.default_rng(2))
    rows = evaluate_case(pred, ref, surface=False).set_index("label")
    overall = float(np.mean(pred == ref))
    assert pixel_accuracy(confusion_matrix(pred, ref)) == pytest.approx(overall, abs=1e-12)
    assert np.allclose(rows["pixel_accuracy"], overall, rtol=0, atol=1e-12)
    for label, row in rows.iterrows():  # label against the rest: (TP + TN) / N
        assert row["accuracy"] == pytest.approx(float(np.mean((pred == label) == (ref == label))), abs=1e-12), label


def test_directed_average_distances_differ_from_the_pooled_assd():
    """A small prediction in a corner of a large reference: the directions and the two ASSD conventions disagree."""
    ref = np.zeros((40, 40), bool)
    ref[5:35, 5:35] = True
    pred = np.zeros_like(ref)
    pred[6:12, 6:12] = True  # near one corner
    d = sd.compute_surface_distances(ref, pred, (1.0, 1.0))
    got = evaluate_case(pred.astype(np.uint8), ref.astype(np.uint8), spacing=(1.0, 1.0)).iloc[0]
    to_pred, to_ref = sd.compute_average_surface_distance(d)
    assert got["asd_ref_to_pred_mm"] == pytest.approx(to_pred) and got["asd_pred_to_ref_mm"] == pytest.approx(to_ref)
    assert got["asd_ref_to_pred_mm"] > 2 * got["asd_pred_to_ref_mm"]  # the large surface lies farther from the small
    plain_mean = (got["asd_ref_to_pred_mm"] + got["asd_pred_to_ref_mm"]) / 2
    assert got["assd_mm"] != pytest.approx(plain_mean, rel=1e-3)  # pooled: weighted by the larger reference surface
