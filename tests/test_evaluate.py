"""``medseg evaluate`` end to end on a folder pair built from the real reference labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import medseg
from medseg._files import read_label_names
from medseg.cli import app
from medseg.errors import ConfigError
from medseg.metrics import evaluate_case, pair_cases


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory) -> Path:
    """pred/ and gt/ folders: a perturbed case, an empty prediction, a cropped grid, a far-away grid, an unpaired file."""
    root = tmp_path_factory.mktemp("cohort")
    ref = medseg.load(shared_data / "ct_3mm_reference_labels.nii.gz")
    a = ref.array
    for name in ("case1", "case2", "case3", "case4", "case5"):
        medseg.save(ref, root / "gt" / f"{name}.nii.gz")
    moved = ndimage.shift(a, (1, 0, 0), order=0)
    moved[moved == 52] = 0  # the aorta is missed
    medseg.save(ref.with_array(moved), root / "pred" / "case1_pred.nii.gz")
    medseg.save(ref.with_array(np.zeros_like(a)), root / "pred" / "case2.nii.gz")
    crop = medseg.Image(
        a[10:110, 5:95, 2:28],
        spacing=ref.spacing,
        origin=tuple(ref.index_to_world([10, 5, 2])),
        direction=ref.direction,
    )
    medseg.save(crop, root / "pred" / "case3_seg.nii.gz")
    far = medseg.Image(a, spacing=ref.spacing, origin=tuple(np.add(ref.origin, 5000.0)), direction=ref.direction)
    medseg.save(far, root / "pred" / "case4.nii.gz")
    medseg.save(ref, root / "img" / "case1.nii.gz")
    return root


def test_folder_pair_reports_each_problem(cohort, shared_data, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(cohort / "pred"),
            str(cohort / "gt"),
            "--out",
            str(out),
            "--no-overlays",
            "--labels",
            str(shared_data / "reference_label_names.json"),
            "--tolerance-mm",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "case4: FAILED" in result.output and "unpaired reference" in result.output
    per_case = pd.read_csv(out / "per_case.csv", keep_default_na=False, na_values=[""])
    assert {"case", "label", "name", "dice", "iou", "hd95_mm", "assd_mm", "nsd", "empty_in"} <= set(per_case.columns)
    assert per_case["label"].dtype.kind == "i"
    assert sorted(per_case["case"].unique()) == ["case1", "case2", "case3"]
    # the empty prediction: every reference structure missed, flagged, Dice 0, distances undefined
    c2 = per_case[(per_case.case == "case2") & (per_case["empty_in"] != "both")]
    assert (c2["empty_in"] == "prediction").all() and (c2["dice"] == 0).all() and c2["hd95_mm"].isna().all()
    # the cropped grid was put back on the reference grid: structures inside the crop agree exactly
    ref = medseg.load(cohort / "gt" / "case3.nii.gz").array
    inside = [
        v
        for v in np.unique(ref[10:110, 5:95, 2:28])
        if v and not (ref == v).sum() - (ref[10:110, 5:95, 2:28] == v).sum()
    ]
    c3 = per_case[per_case.case == "case3"].set_index("label")
    assert len(inside) > 3 and (c3.loc[inside, "dice"] == 1.0).all() and (c3.loc[inside, "hd_mm"] == 0).all()
    # case1 matches a direct evaluation
    direct = evaluate_case(
        medseg.load(cohort / "pred" / "case1_pred.nii.gz"), medseg.load(cohort / "gt" / "case1.nii.gz")
    )
    c1 = per_case[per_case.case == "case1"].set_index("label")
    direct = direct.set_index("label")
    assert np.allclose(c1.loc[direct.index, "dice"], direct["dice"]) and c1.loc[52, "empty_in"] == "prediction"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["cases_failed"]) == {"case4"}
    assert "case4.nii.gz" in summary["cases_failed"]["case4"] and "overlap" in summary["cases_failed"]["case4"]
    assert summary["unpaired_reference_files"] == [str(cohort / "gt" / "case5.nii.gz")]
    assert "resampled" in summary["case_notes"]["case3"][0] and summary["case_notes"]["case2"] == [
        "prediction is empty"
    ]
    liver = summary["labels"]["5"]
    assert liver["name"] == "liver" and liver["metrics"]["dice"]["n"] == 3
    assert liver["empty_in"] == {"none": 2, "prediction": 1}
    html = (out / "report.html").read_text()
    for text in ("case4", "case5.nii.gz", "resampled", "prediction is empty", 'id="cohort"', "<img"):
        assert text in html


def test_instances_mode_on_nuclei(shared_data, tmp_path):
    import tifffile

    ref = tifffile.imread(shared_data / "cells_fluo" / "nuclei_labels.tif")
    pred = ndimage.grey_erosion(ref, size=(3, 3))
    tifffile.imwrite(tmp_path / "nuclei_pred.tif", pred)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "nuclei_pred.tif"),
            str(shared_data / "cells_fluo" / "nuclei_labels.tif"),
            "--instances",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out / "per_case.csv").iloc[0]
    expected = medseg.instance_metrics(pred, ref)
    for key in ("f1", "pq", "sq", "aji", "tp", "fp", "fn"):
        assert row[key] == pytest.approx(expected[key])
    assert row["label"] == 1


def test_pairing_rule_and_label_files(tmp_path):
    for folder, names in (
        ("p", ["a_pred.nii.gz", "b.nii.gz", "c_seg.png", "x.nii.gz"]),
        ("g", ["a.nii.gz", "b_gt.nii.gz", "c.png", "y.nii"]),
    ):
        (tmp_path / folder).mkdir()
        for n in names:
            (tmp_path / folder / n).write_bytes(b"")
    pairing = pair_cases(tmp_path / "p", tmp_path / "g")
    assert [name for name, _, _ in pairing.pairs] == ["a", "b", "c"]
    assert [p.name for p in pairing.unpaired_pred] == ["x.nii.gz"] and [p.name for p in pairing.unpaired_ref] == [
        "y.nii"
    ]
    with pytest.raises(ConfigError, match="both be files or both be folders"):
        pair_cases(tmp_path / "p" / "b.nii.gz", tmp_path / "g")
    (tmp_path / "names.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": "2"}}))
    assert read_label_names(tmp_path / "names.json") == {1: "liver", 2: "spleen"}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="label names file is not valid JSON"):
        read_label_names(tmp_path / "bad.json")
