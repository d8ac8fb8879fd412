"""``medseg demo`` on sample_data/ with the committed models, and what those models do on phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medseg
from medseg.io.image import Image
from medseg.io.resample import resample_to
from medseg.metrics import evaluate_case

MODELS = ("ct_organs", "nuclei_2d")


@pytest.mark.parametrize("name", MODELS)
def test_committed_models_say_how_they_were_made(sample_data: Path, name: str) -> None:
    model = medseg.load_model(sample_data / "models" / name, device="cpu")
    card = model.card
    assert card["training"]["command"].startswith(f"medseg train configs/{name}.yaml --data sample_data/")
    assert card["validation"]["dice"] and card["medseg_version"]
    size = sum(p.stat().st_size for p in (sample_data / "models" / name).iterdir())
    assert size < 3_000_000, f"committed model {name} is {size} bytes"


def test_demo_command_prints_table_and_writes_label_maps(sample_data: Path, tmp_path: Path) -> None:
    from medseg.cli import app

    out = tmp_path / "demo_output"
    result = CliRunner().invoke(app, ["demo", "--sample-data", str(sample_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "held-out cases" in result.output and "Dice" in result.output
    table = np.genfromtxt(out / "demo_results.csv", delimiter=",", names=True, dtype=None, encoding=None)
    cases = set(table["case"].tolist())
    assert "ct_organs_dicom (DICOM)" in cases and {"case_006", "case_007", "case_004", "case_005"} <= cases
    assert {"dice", "pred_volume_ml", "ref_volume_ml"} <= set(table.dtype.names)
    # every written label map lies on its input's grid, and the table's figures follow from it and the reference
    inputs = {"ct_organs_dicom (DICOM)": ("ct_organs", "ct_organs_dicom", "ct_organs/labelsTs/case_006.nii.gz")}
    for model, folder in (("ct_organs", "ct_organs"), ("nuclei_2d", "nuclei")):
        for entry in json.loads((sample_data / folder / "dataset.json").read_text())["test"]:
            case = Path(entry["image"]).name.split(".")[0]
            inputs[case] = (model, f"{folder}/{entry['image']}", f"{folder}/{entry['label']}")
    assert set(inputs) == cases
    for case, (model, image_path, label_path) in inputs.items():
        image, truth = medseg.load(sample_data / image_path), medseg.load(sample_data / label_path)
        written = medseg.load(out / model / f"{case.split(' ')[0]}.nii.gz")
        assert written.same_grid(image) and written.same_grid(truth)
        pred, ref = written.array, truth.array
        if model == "nuclei_2d":  # instance reference: the foreground is scored, its area in um^2
            pred, ref = (pred > 0).astype(np.uint8), (ref > 0).astype(np.uint8)
        for row in table[table["case"] == case]:
            p, t = pred == row["label"], ref == row["label"]
            assert row["dice"] == pytest.approx(2 * np.sum(p & t) / (p.sum() + t.sum()), abs=1e-9)
            if model == "ct_organs":
                ml_per_voxel = np.prod(image.spacing) / 1000.0
                assert row["pred_volume_ml"] == pytest.approx(p.sum() * ml_per_voxel, rel=1e-9)
                assert row["ref_volume_ml"] == pytest.approx(t.sum() * ml_per_voxel, rel=1e-9)
            else:
                um2_per_pixel = np.prod(image.spacing) * 1e6
                assert row["pred_area_um2"] == pytest.approx(p.sum() * um2_per_pixel, rel=1e-9)


def test_ct_model_segments_held_out_phantom_and_its_flipped_copy_consistently(sample_data: Path) -> None:
    model = medseg.load_model(sample_data / "models" / "ct_organs", device="cpu")
    image = medseg.load(sample_data / "ct_organs" / "imagesTs" / "case_007.nii.gz")
    truth = medseg.load(sample_data / "ct_organs" / "labelsTs" / "case_007.nii.gz")
    labels = model.segment(image)
    scores = evaluate_case(labels, truth, labels={i: n for n, i in model.labels.items() if i}, surface=False)
    dice = dict(zip(scores["name"], scores["dice"], strict=True))
    assert dice["liver"] > 0.85 and dice["lungs"] > 0.85, dice

    # the same scan stored mirrored along x and z (another converter's voxel order), same world positions
    far = image.index_to_world(np.asarray(image.shape) - 1)
    flipped = Image(
        image.array[::-1, :, ::-1].copy(),
        spacing=image.spacing,
        origin=(far[0], image.origin[1], far[2]),
        direction=image.direction @ np.diag([-1.0, 1.0, -1.0]),
        modality="CT",
        intensity_unit="HU",
    )
    flipped_labels = model.segment(flipped)
    assert flipped_labels.same_grid(flipped)
    assert np.array_equal(resample_to(flipped_labels, labels, "nearest").array, labels.array)


@pytest.mark.slow
def test_nuclei_training_from_scratch_learns_the_sample_phantoms(sample_data: Path, tmp_path: Path) -> None:
    from medseg.plan import workflow_for
    from medseg.train import train

    dataset_json = sample_data / "nuclei" / "dataset.json"
    config, plan = workflow_for(sample_data.parent / "configs" / "nuclei_2d.yaml", dataset_json, minutes=1.5)
    assert plan is not None  # the shipped task YAML is planned for the phantoms
    out = train(config, dataset_json, tmp_path / "nuclei", max_minutes=1.5, progress=False)
    model = medseg.load_model(out, device="cpu")
    dataset = json.loads((sample_data / "nuclei" / "dataset.json").read_text())
    for entry in dataset["test"]:
        image = medseg.load(sample_data / "nuclei" / entry["image"])
        truth = medseg.load(sample_data / "nuclei" / entry["label"]).array > 0
        pred = model.segment(image).array > 0
        dice = 2 * np.sum(pred & truth) / (pred.sum() + truth.sum())
        assert dice > 0.8, dice
