"""``medseg info`` and ``medseg convert``: CliRunner for the logic, one real subprocess for the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medseg.cli import app
from medseg.errors import ConfigError, SeriesError
from medseg.io import load, save
from medseg.io.dicom_write import save_dicom_series
from medseg.io.image import Image
from medseg.io.sitk import from_sitk

runner = CliRunner()


def _sitk_series(folder: Path) -> Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return from_sitk(reader.Execute())


def _info_json(path: Path) -> list[dict]:
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_info_json_on_shared_files_matches_nibabel_and_simpleitk(shared_data: Path) -> None:
    (row,) = _info_json(shared_data / "ct_3mm.nii.gz")
    nii = nib.load(shared_data / "ct_3mm.nii.gz")
    assert row["dimensions"] == list(nii.shape)
    assert np.allclose(row["spacing_mm"], nii.header.get_zooms())
    assert row["orientation"] == "".join(nib.aff2axcodes(nii.affine))
    data = np.asarray(nii.dataobj)
    assert (row["intensity_min"], row["intensity_max"]) == (data.min(), data.max())
    (series,) = _info_json(shared_data / "ct_abdomen_dicom")
    ref = _sitk_series(shared_data / "ct_abdomen_dicom")
    assert series["modality"] == "CT" and series["intensity_unit"] == "HU"
    assert series["dimensions"] == [512, 512, 20] and np.allclose(series["spacing_mm"], ref.spacing, atol=1e-4)
    assert (series["intensity_min"], series["intensity_max"]) == (ref.array.min(), ref.array.max())


def _two_series_folder(root: Path) -> tuple[Path, list[Image]]:
    rng = np.random.default_rng(5)
    images = []
    for number, shape in ((1, (6, 5, 4)), (2, (4, 4, 3))):
        img = Image(rng.integers(-100, 100, shape).astype(np.int16), spacing=(0.8, 0.8, 2.0), modality="CT")
        save_dicom_series(img, root / "dicom" / f"s{number}", series_description=f"part {number}", series_number=number)
        images.append(img)
    return root / "dicom", images


def test_info_on_a_mixed_folder_lists_everything_and_flags_bad_files(tmp_path: Path) -> None:
    _two_series_folder(tmp_path)
    save(Image(np.zeros((3, 3, 3), np.uint8), spacing=(2, 2, 2)), tmp_path / "labels.nii.gz")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = _info_json(tmp_path)
    assert len(rows) == 4
    series = [r for r in rows if "[series" in r["image"]]
    assert sorted(r["dimensions"] for r in series) == [[4, 4, 3], [6, 5, 4]]
    assert {r["series_description"] for r in series} == {"part 1", "part 2"}
    (broken,) = [r for r in rows if r["image"].endswith("broken.png")]
    assert "broken.png" in broken["error"]
    table = runner.invoke(app, ["info", str(tmp_path)], terminal_width=200)
    assert table.exit_code == 0 and "labels.nii.gz" in table.output and "2x2x2" in table.output
    assert "dicom/s1 [series" in table.output and "dicom/s2 [series" in table.output  # not swallowed as markup


def test_info_reports_unknown_spacing_and_warnings(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "xray.png")
    (row,) = _info_json(tmp_path / "xray.png")
    assert row["spacing_mm"] is None and any("spacing unknown" in w for w in row["warnings"])


@pytest.mark.parametrize("ext", ["nrrd", "mha", "nii"])
def test_convert_volume_keeps_voxels_and_geometry(shared_data: Path, tmp_path: Path, ext: str) -> None:
    src = shared_data / "mr_3mm.nii.gz"
    result = runner.invoke(app, ["convert", str(src), str(tmp_path / f"mr.{ext}")])
    assert result.exit_code == 0, result.output
    a, b = load(src), load(tmp_path / f"mr.{ext}")
    assert np.array_equal(a.array, b.array) and a.same_grid(b, atol_mm=1e-4) and b.orientation == "LPS"


def test_convert_file_into_a_folder_keeps_its_name(tmp_path: Path) -> None:
    src = save(Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=(1, 1, 2)), tmp_path / "scan.nii.gz")
    result = runner.invoke(app, ["convert", str(src), str(tmp_path / "out"), "--format", "mha"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(load(tmp_path / "out" / "scan.mha").array, load(src).array)


def test_convert_folder_with_several_series(tmp_path: Path) -> None:
    folder, images = _two_series_folder(tmp_path)
    result = runner.invoke(app, ["convert", str(folder), str(tmp_path / "out.nii.gz")])
    assert isinstance(result.exception, SeriesError) and "--series" in str(result.exception)
    result = runner.invoke(app, ["convert", str(folder), str(tmp_path / "each"), "--format", "nrrd"])
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "each").iterdir())
    assert [p.suffix for p in written] == [".nrrd", ".nrrd"]
    assert sorted(load(p).shape for p in written) == sorted(img.shape for img in images)
    for index in ("0", "1"):
        target = tmp_path / f"one_{index}.mha"
        assert runner.invoke(app, ["convert", str(folder), str(target), "--series", index]).exit_code == 0
        assert load(target).shape in [img.shape for img in images]
    bad = runner.invoke(app, ["convert", str(folder), str(tmp_path / "x"), "--format", "png"])
    assert isinstance(bad.exception, ConfigError) and str(bad.exception).startswith("--format: must be one of")


def test_console_script_converts_shared_dicom_like_simpleitk(shared_data: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("medseg")
    script = script if script.exists() else Path(shutil.which("medseg") or "medseg-not-installed")
    assert script.exists(), "the medseg console script is not installed (pip install -e .)"
    out = tmp_path / "ct.nii.gz"
    done = subprocess.run(
        [script, "convert", shared_data / "ct_abdomen_dicom", out], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    converted, ref = load(out), _sitk_series(shared_data / "ct_abdomen_dicom")
    assert np.array_equal(converted.array, ref.array)
    assert np.allclose(converted.spacing, ref.spacing, atol=1e-5) and np.allclose(
        converted.origin, ref.origin, atol=1e-4
    )
    assert np.allclose(converted.direction, ref.direction, atol=1e-6)
    # and through SimpleITK's own NIfTI reader, independent of medseg's
    assert np.array_equal(from_sitk(sitk.ReadImage(str(out))).array, ref.array)
    failed = subprocess.run([script, "info", tmp_path / "missing.nii.gz"], capture_output=True, text=True, check=False)
    assert failed.returncode == 2 and "missing.nii.gz" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr


def test_convert_labels_to_coco_and_back(sample_data: Path, tmp_path: Path) -> None:
    labels_path = sample_data / "nuclei" / "labelsTs" / "case_004.tif"
    image_path = sample_data / "nuclei" / "imagesTs" / "case_004.tif"
    coco = tmp_path / "case_004.json"
    assert runner.invoke(app, ["convert", str(labels_path), str(coco), "--format", "coco"]).exit_code == 0
    assert {"images", "annotations", "categories"} <= set(json.loads(coco.read_text()))
    back = tmp_path / "back.tif"
    result = runner.invoke(app, ["convert", str(coco), str(back), "--like", str(image_path)])
    assert result.exit_code == 0, result.output
    original, restored = load(labels_path).array, load(back).array
    assert restored.shape == original.shape and np.array_equal(restored > 0, original > 0)
    pairs = np.unique(np.stack([original[original > 0], restored[original > 0]]), axis=1)
    n_objects = len(np.unique(original)) - 1
    assert pairs.shape[1] == n_objects == len(np.unique(pairs[1]))  # object for object, pixel for pixel
