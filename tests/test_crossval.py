"""Cross-validation (``medseg train --folds K``): the split, the per-fold models, summary.json and the ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.errors import ConfigError, ModelError
from medseg.train.crossval import assign_folds, cross_validate
from tests.test_train import _config, _dataset


@pytest.mark.parametrize(("n", "k"), [(5, 5), (7, 3), (10, 4)])
def test_folds_are_balanced_seeded_and_cover_every_case(n: int, k: int) -> None:
    folds = assign_folds(n, k, seed=0)
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
    assert assign_folds(n, k, seed=0) == folds
    assert any(assign_folds(n, k, seed=s) != folds for s in range(1, 6))


def test_too_few_cases_or_folds_are_refused_naming_the_cases(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", n=2)
    with pytest.raises(ConfigError, match=r"3 folds need at least 3 training cases; the dataset has 2 \(case_000, case_001\)"):
        cross_validate(_config(), ds, tmp_path / "cv", folds=3)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        cross_validate(_config(), ds, tmp_path / "cv", folds=1)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cv")
    ds = _dataset(root / "data", n=3)
    cfg = root / "toy.yaml"
    cfg.write_text(yaml.safe_dump(_config(train={"max_epochs": 2, "batch_size": 2, "samples_per_image": 2,
                                                 "val_every": 1}).model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train", str(cfg), "--data", str(ds), "--out", str(root / "run"), "--folds", "3",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "3-fold ensemble written" in result.output and "cross-validation Dice: a " in result.output
    return root / "run", ds


def test_each_case_is_held_out_once_and_scored_by_the_fold_that_never_saw_it(ensemble: tuple[Path, Path]) -> None:
    run, _ = ensemble
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 3 and sorted(r["case"] for r in summary["per_case"]) == ["case_000", "case_001", "case_002"]
    for row in summary["per_case"]:
        card = json.loads((run / f"fold_{row['fold']}" / "model_card.json").read_text())
        assert card["training"]["validation_cases"] == [row["case"]]
        assert row["case"] not in card["training"]["train_data"]["cases"] and card["train"]["fold"] == row["fold"]
        # the Dice recomputed from the fold model's own label map on the case's grid
        model = medseg.load_model(run / f"fold_{row['fold']}", device="cpu")
        predicted = model.segment(medseg.load(run.parent / "data" / "imagesTr" / f"{row['case']}.nii.gz")).array
        reference = medseg.load(run.parent / "data" / "labelsTr" / f"{row['case']}.nii.gz").array
        for name, value in (("a", 1), ("b", 2)):
            p, r = predicted == value, reference == value
            assert row["dice"][name] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()), abs=1e-5)
    for name in ("a", "b"):
        assert summary["mean"][name] == pytest.approx(np.mean([r["dice"][name] for r in summary["per_case"]]), abs=1e-5)
    assert summary["foreground_mean"] == pytest.approx(np.mean(list(summary["mean"].values())), abs=1e-5)


def test_the_ensemble_averages_the_folds_probabilities(ensemble: tuple[Path, Path]) -> None:
    run, _ = ensemble
    image = medseg.load(run.parent / "data" / "imagesTr" / "case_000.nii.gz")
    model = medseg.load_segmenter(run, device="cpu")
    assert model.folds == ["0", "1", "2"] and len(model.networks) == 3
    singles = [medseg.load_model(run / f"fold_{f}", device="cpu") for f in range(3)]
    mean = np.mean([m.probabilities(image).array for m in singles], axis=0)
    np.testing.assert_allclose(model.probabilities(image).array, mean, atol=1e-5)
    labels = model.segment(image)
    assert labels.array.shape == image.shape and set(np.unique(labels.array)) <= {0, 1, 2}
    assert len({m.fingerprint() for m in singles} | {model.fingerprint()}) == 4
    two = medseg.load_model(run, device="cpu", folds="0,2")
    assert two.folds == ["0", "2"] and two.fingerprint() != model.fingerprint()
    with pytest.raises(ModelError, match=r"folds \['5'\] are not in this ensemble"):
        medseg.load_model(run, folds="5")
    with pytest.raises(ModelError, match="is an ensemble of 3 folds"):
        _ = model.network


def test_segment_command_takes_the_ensemble_and_its_folds(ensemble: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = ensemble
    image = run.parent / "data" / "imagesTr" / "case_001.nii.gz"
    result = CliRunner().invoke(app, ["segment", str(run), str(image), "--out", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["segment", str(run), str(image), "--out", str(tmp_path / "one"), "--folds", "1"])
    assert result.exit_code == 0, result.output
    one = medseg.load(next((tmp_path / "one").iterdir())).array
    alone = medseg.load_model(run / "fold_1", device="cpu").segment(medseg.load(image)).array
    np.testing.assert_array_equal(one, alone)


def test_resume_keeps_finished_folds(ensemble: tuple[Path, Path], tmp_path: Path) -> None:
    run, ds = ensemble
    stamps = {f: (run / f"fold_{f}" / "model.safetensors").stat().st_mtime_ns for f in range(3)}
    cfg = _config(train={"max_epochs": 2, "batch_size": 2, "samples_per_image": 2, "val_every": 1})
    cross_validate(cfg, ds, run, folds=3, resume=True, device="cpu", progress=False)
    assert {f: (run / f"fold_{f}" / "model.safetensors").stat().st_mtime_ns for f in range(3)} == stamps
    with pytest.raises(ConfigError, match="already holds a training run"):
        cross_validate(cfg, ds, run, folds=3, device="cpu", progress=False)
