"""``medseg measure`` on files and folders: tables in CSV/JSON/Parquet, names, instances, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medseg.cli import main


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["medseg", "measure", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _write_case(folder: Path, name: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((16, 12, 6), np.uint8)
    labels[2:6, 2:6, 1:4] = 1
    labels[9:14, 3:10, 2:5] = 2
    labels[10:12, 0:2, 0:2] = 2  # a second object of label 2
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # RAS affine of an LPS-stored scan
    nib.save(nib.Nifti1Image(labels, affine), folder / "labels" / f"{name}.nii.gz")
    image = rng.normal(100, 10, labels.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), folder / "images" / f"{name}_0000.nii.gz")
    return labels


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    for i, name in enumerate(["case01", "case02"]):
        _write_case(tmp_path, name, i)
    (tmp_path / "names.json").write_text(json.dumps({"1": "cyst", "2": "lesion"}))
    return tmp_path


def test_file_to_csv_with_names_and_image(cases: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = cases / "out" / "table.csv"
    code = _run(
        monkeypatch,
        cases / "labels" / "case01.nii.gz",
        "--image",
        cases / "images" / "case01_0000.nii.gz",
        "--labels",
        cases / "names.json",
        "--out",
        out,
    )
    assert code == 0
    table = pd.read_csv(out)
    assert table.label.tolist() == [1, 2] and table.name.tolist() == ["cyst", "lesion"]
    voxel = float(np.prod(nib.load(cases / "labels" / "case01.nii.gz").header.get_zooms(), dtype=np.float64))
    np.testing.assert_allclose(table.volume_mm3, [48 * voxel, (105 + 8) * voxel], rtol=1e-12)
    assert {"mean_intensity", "p95_intensity", "surface_area_mm2"} <= set(table.columns)
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_folder_with_instances(cases: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    out = cases / f"table{suffix}"
    assert (
        _run(monkeypatch, cases / "labels", "--image", cases / "images", "--instances", "--no-shape", "--out", out) == 0
    )
    table = pd.read_json(out) if suffix == ".json" else pd.read_parquet(out)
    assert sorted(set(table.file)) == ["case01.nii.gz", "case02.nii.gz"]
    per_file = table[table.level == "instance"].groupby("file").size()
    assert per_file.tolist() == [3, 3]
    assert "surface_area_mm2" not in table.columns


def test_bad_inputs_exit_2_with_one_line(cases: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    labels = cases / "labels" / "case01.nii.gz"
    assert _run(monkeypatch, labels, "--out", cases / "table.xlsx") == 2
    assert "table format" in capsys.readouterr().err
    other = cases / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)), other)
    assert _run(monkeypatch, labels, "--image", other, "--out", cases / "t.csv") == 2
    err = capsys.readouterr().err
    assert "case01.nii.gz" in err and "other.nii.gz" in err and len(err.strip().splitlines()) == 1
    (cases / "bad.json").write_text("{1: spleen}")
    assert _run(monkeypatch, labels, "--labels", cases / "bad.json", "--out", cases / "t.csv") == 2
    assert "bad.json" in capsys.readouterr().err
