"""One ground-truth alignment rule: ``medseg batch --gt`` and ``medseg evaluate`` score a pair identically.

The scans (and so the predictions) lie on grids that differ from the
reference's by an axis flip, an axis permutation and a resampling; both
commands put the prediction onto the reference grid in world space.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import medseg
from medseg.batch import run_batch
from medseg.io.image import Image
from medseg.io.resample import resample_to
from medseg.metrics.cohort import evaluate_cohort

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
from medseg_threshold_plugin import FixedThreshold

METRICS = ["dice", "iou", "precision", "recall", "hd95_mm", "assd_mm", "nsd", "pred_volume_ml", "ref_volume_ml"]


def _flipped(img: Image) -> Image:
    direction = img.direction.copy()
    direction[:, 0] *= -1
    origin = img.index_to_world(np.array([img.shape[0] - 1, 0, 0]))
    return Image(img.array[::-1].copy(), img.spacing, tuple(origin), direction, modality=img.modality)


def _permuted(img: Image) -> Image:
    return Image(np.ascontiguousarray(img.array.transpose(1, 0, 2)), (img.spacing[1], img.spacing[0], img.spacing[2]),
                 img.origin, img.direction[:, [1, 0, 2]], modality=img.modality)


def _resampled(img: Image) -> Image:
    grid = Image(np.zeros((110, 90, 50), np.uint8), (2.5, 2.5, 3.0), tuple(np.array(img.origin) + 0.7), img.direction)
    out = resample_to(img, grid, "linear")
    return Image(out.array, out.spacing, out.origin, out.direction, modality=img.modality)


def test_batch_gt_and_evaluate_agree_on_flip_permutation_and_resampling(sample_data: Path, tmp_path: Path) -> None:
    scan = medseg.load(sample_data / "ct_organs" / "imagesTs" / "case_006.nii.gz")
    truth_path = sample_data / "ct_organs" / "labelsTs" / "case_006.nii.gz"
    scans, gt = tmp_path / "scans", tmp_path / "gt"
    variants = {"flip": _flipped(scan), "perm": _permuted(scan), "resampled": _resampled(scan)}
    truth = medseg.load(truth_path)
    for name, image in variants.items():
        assert not image.same_grid(truth)
        medseg.save(image, scans / f"{name}.nii.gz")
        medseg.save(truth, gt / f"{name}.nii.gz")

    segmenter = FixedThreshold(150.0)
    result = run_batch(segmenter, scans, tmp_path / "out", gt_dir=gt, id_style="path")
    assert result.exit_code == 0 and not result.failures
    batch = pd.read_csv(tmp_path / "out" / "metrics.csv")

    for name in variants:
        labels = tmp_path / "out" / "cases" / name / "labels.nii.gz"
        cohort = evaluate_cohort(labels, gt / f"{name}.nii.gz")
        assert cohort.cases[0].status == "ok", cohort.cases[0].error
        if name == "resampled":
            assert any("resampled" in n for n in cohort.cases[0].notes)
        ev = cohort.per_case.set_index("label").loc[1, METRICS].astype(float)
        ba = batch[batch.case_id == name].set_index("label").loc[1, METRICS].astype(float)
        assert np.isfinite(ev.to_numpy()).all() and ev["dice"] > 0.05
        assert ev.to_numpy() == pytest.approx(ba.to_numpy(), rel=1e-12, abs=1e-12), name
