"""Training: dataset checks before training, splits, seeded reproducibility, resume, outputs, LR schedule."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medseg
from medseg.config import validate_config
from medseg.errors import ConfigError, LabelError
from medseg.io.image import Image
from medseg.train import loop, train
from medseg.train.dataset import read_dataset, training_targets
from medseg.train.loop import _lr_factor, _progress_share

SPACING = (2.0, 2.0, 3.0)


def _config(**changes):
    base = {
        "name": "toy",
        "dims": 3,
        "labels": {"background": 0, "a": 1, "b": 2},
        "intensity": {"preset": "ct", "window_hu": [-100, 250]},
        "spacing_mm": [3.0, 3.0, 3.0],
        "orientation": "RAS",
        "patch_size": [16, 16, 16],
        "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
        "augment": {"flip_axes": [1], "rotate_deg": 10, "scale_range": 0.1, "noise_std": 0.01},
        "optimizer": {"schedule": "constant"},
        "train": {"max_epochs": 3, "batch_size": 2, "samples_per_image": 2, "val_every": 2},
    }
    return validate_config({**base, **changes})


def _case(rng: np.random.Generator, shape=(24, 22, 12)) -> tuple[np.ndarray, np.ndarray]:
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    lab = np.zeros(shape, np.uint8)
    lab[np.linalg.norm((g - [7 + rng.integers(-1, 2), 11, 6]) * [1, 1, 1.5], axis=-1) < 5] = 1
    lab[np.linalg.norm((g - [17 + rng.integers(-1, 2), 11, 6]) * [1, 1, 1.5], axis=-1) < 4] = 2
    img = np.choose(lab, [-50.0, 80.0, 200.0]) + rng.normal(0, 15, shape)
    return img.astype(np.int16), lab


def _dataset(root: Path, n: int = 3, *, labels_json: dict | None = None, mutate=None) -> Path:
    """Write ``n`` phantom cases as NIfTI and an MSD dataset.json; ``mutate(i, image, label)`` may spoil one."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        img, lab = _case(rng)
        image = Image(img, spacing=SPACING, origin=(10.0, -5.0, 30.0), modality="CT", intensity_unit="HU")
        label = image.with_array(lab)
        if mutate is not None:
            image, label = mutate(i, image, label)
        medseg.save(image, root / "imagesTr" / f"case_{i:03d}.nii.gz")
        medseg.save(label, root / "labelsTr" / f"case_{i:03d}.nii.gz")
        entries.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    desc = {"name": "toy", "labels": labels_json or {"0": "background", "1": "a", "2": "b"}, "training": entries}
    (root / "dataset.json").write_text(json.dumps(desc))
    return root / "dataset.json"


def test_invalid_cases_are_all_reported_with_their_files(tmp_path: Path) -> None:
    def spoil(i: int, image: Image, label: Image):
        if i == 0:
            return image, label.with_array(np.where(label.array == 2, 7, label.array).astype(np.uint8))
        if i == 1:
            return image, label.with_array(np.zeros_like(label.array))
        if i == 2:
            return image, Image(label.array, spacing=label.spacing, origin=(12.5, -5.0, 30.0))
        return image, label

    ds = _dataset(tmp_path, n=4, mutate=spoil)
    with pytest.raises(LabelError) as info:
        train(_config(), ds, tmp_path / "run", progress=False)
    msg = str(info.value)
    assert "3 of 4 case(s) invalid" in msg
    assert "case_000.nii.gz: label values [7] not in the config's labels 0..2" in msg
    assert "case_001.nii.gz: label map is empty" in msg
    assert "case_002.nii.gz: label grid does not match the image grid" in msg
    assert "case_003" not in msg
    assert not (tmp_path / "run").exists()  # nothing written before the data are valid


def test_label_stored_flipped_is_accepted_and_aligned(tmp_path: Path) -> None:
    """A label file storing the same voxels in another order (as converters do) is resampled exactly."""
    flipped = {}

    def flip(i: int, image: Image, label: Image):
        far = label.index_to_world(np.asarray(label.shape) - 1)
        stored = Image(
            label.array[::-1].copy(),
            spacing=label.spacing,
            origin=(far[0], *label.origin[1:]),
            direction=np.diag([-1.0, 1, 1]),
        )
        flipped[i] = label.array
        return image, stored

    ds = _dataset(tmp_path, n=2, mutate=flip)
    from medseg.train.dataset import load_cases

    split = read_dataset(ds, _config())
    cases = load_cases(split.train, _config(), ds)
    for case in cases:
        assert case.label.same_grid(case.image)
        assert np.array_equal(case.label.array, flipped[int(case.case_id[-3:])])


def test_dataset_description_errors(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, n=2, labels_json={"0": "background", "1": "liver", "2": "b"})
    with pytest.raises(ConfigError, match=r"dataset labels .* differ from the config's labels"):
        read_dataset(ds, _config())
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": []}')
    with pytest.raises(ConfigError, match="non-empty 'training' list"):
        read_dataset(bad, _config())
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_dataset(bad, _config())


def test_validation_split_sources(tmp_path: Path) -> None:
    from medseg.train.dataset import MIN_CASES_TO_HOLD_OUT

    n = MIN_CASES_TO_HOLD_OUT
    ds = _dataset(tmp_path, n=n)
    desc = json.loads(ds.read_text())
    split = read_dataset(ds, _config())
    n_val = round(0.2 * n)
    assert len(split.val) == n_val and len(split.train) == n - n_val and not set(split.val) & set(split.train)
    assert read_dataset(ds, _config(), seed=0).val == split.val  # seeded

    for i, e in enumerate(desc["training"]):
        e["fold"] = i % 2
    ds.write_text(json.dumps(desc))
    split = read_dataset(ds, _config(train={"fold": 1}))
    assert [p[0].name for p in split.val] == [f"case_{i:03d}.nii.gz" for i in range(1, n, 2)]
    with pytest.raises(ConfigError, match="fold 4 leaves no validation"):
        read_dataset(ds, _config(train={"fold": 4}))

    desc["validation"] = [desc["training"].pop()]
    ds.write_text(json.dumps(desc))
    split = read_dataset(ds, _config())
    assert [p[0].name for p in split.val] == [f"case_{n - 1:03d}.nii.gz"] and len(split.train) == n - 1


def test_small_datasets_validate_on_their_training_cases(tmp_path: Path) -> None:
    from medseg.train.dataset import MIN_CASES_TO_HOLD_OUT

    ds = _dataset(tmp_path, n=MIN_CASES_TO_HOLD_OUT - 1)
    split = read_dataset(ds, _config())
    assert split.val == split.train and len(split.train) == MIN_CASES_TO_HOLD_OUT - 1
    assert "training case(s) themselves" in split.how


def test_pixel_size_per_entry_or_per_file_for_raster_data(tmp_path: Path) -> None:
    """dataset.json states the pixel size of PNGs that carry none: per entry, else for the whole file."""
    from PIL import Image as PILImage

    from medseg.train.dataset import load_cases

    rng = np.random.default_rng(3)
    entries = []
    for i in range(3):
        pixels = rng.integers(0, 255, (40, 30), dtype=np.uint8)
        PILImage.fromarray(pixels).save(tmp_path / f"img{i}.png")
        PILImage.fromarray((pixels > 128).astype(np.uint8)).save(tmp_path / f"lab{i}.png")
        entries.append({"image": f"img{i}.png", "label": f"lab{i}.png"})
    entries[2]["spacing_mm"] = [0.25, 0.25]
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"spacing_mm": [0.5, 0.5], "training": entries}))
    config = validate_config({"name": "px", "dims": 2, "labels": {"background": 0, "fg": 1}, "patch_size": [16, 16],
                              "intensity": {"preset": "xray"}, "spacing_mm": [0.5, 0.5],
                              "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}}})
    split = read_dataset(ds, config)
    cases = {c.case_id: c for c in load_cases(split.train, config, ds, split.spacing_mm)}
    assert [cases[f"img{i}"].image.spacing for i in range(3)] == [(0.5, 0.5), (0.5, 0.5), (0.25, 0.25)]
    assert all(c.label.spacing == c.image.spacing and c.image.spacing_known for c in cases.values())
    entries[0]["spacing_mm"] = [0.5]
    ds.write_text(json.dumps({"training": entries}))
    with pytest.raises(ConfigError, match=r"training\[0\]\.spacing_mm' must be a list of 2 positive numbers"):
        read_dataset(ds, config)


def test_instance_targets_match_skimage_boundaries() -> None:
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(2)
    inst = np.zeros((40, 40), np.uint16)
    for k in range(1, 8):
        r, c = rng.integers(4, 36, 2)
        inst[max(r - 4, 0) : r + 4, max(c - 4, 0) : c + 4] = k  # overlapping squares: touching objects
    targets = training_targets(inst, "instances")
    boundary = find_boundaries(inst, mode="inner") & (inst > 0)
    assert np.array_equal(targets == 2, boundary)
    assert np.array_equal(targets > 0, inst > 0)
    assert np.array_equal(training_targets(inst * 255, "binary"), (inst > 0).astype(np.uint8))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint_last.pt", weights_only=True)["network"]


def test_seeded_runs_are_identical_and_resume_continues_exactly(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", n=2)
    cfg = _config(train={"max_epochs": 2, "batch_size": 2, "samples_per_image": 2, "val_every": 2})
    train(cfg, ds, tmp_path / "a", seed=3, progress=False, device="cpu")
    train(cfg, ds, tmp_path / "b", seed=3, progress=False, device="cpu")
    train(cfg, ds, tmp_path / "c", seed=3, progress=False, device="cpu", max_epochs=1)
    train(cfg, ds, tmp_path / "c", seed=3, progress=False, device="cpu", resume=True)
    wa, wb, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    train(cfg, ds, tmp_path / "d", seed=4, progress=False, device="cpu", max_epochs=1)
    assert not all(torch.equal(wa[k], _weights(tmp_path / "d")[k]) for k in wa)


def test_outputs_model_dir_card_and_log(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", n=3)
    out = train(_config(), ds, tmp_path / "run", seed=0, progress=False)
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["train_data"]["n_cases"] == 3  # too few to hold one out: validated on themselves
    assert card["training"]["validation_cases"] == card["training"]["train_data"]["cases"]
    assert card["training"]["epochs_run"] == 3 and card["training"]["stopped"].startswith("max_epochs")
    assert set(card["validation"]["dice"]) == {"a", "b"} and 0 <= card["validation"]["dice_mean"] <= 1
    assert card["spacing_mm"] == [3.0, 3.0, 3.0] and card["labels"] == {"background": 0, "a": 1, "b": 2}
    with open(out / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"loss", "dice_a", "dice_b", "dice_mean", "epoch_s"} <= set(rows[0])
    assert rows[0]["dice_a"] == "" and rows[1]["dice_a"] != ""  # validated every 2 epochs and at the end
    best = max(rows, key=lambda r: float(r["dice_mean"] or -1))
    assert card["validation"]["epoch"] == int(best["epoch"])
    # model.safetensors holds the best epoch's weights, loadable as a medseg model
    model = medseg.load_model(out)
    assert set(load_file(str(out / "model.safetensors"))) == set(model.network.state_dict())
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(_config(), ds, out, progress=False)


def test_early_stopping_and_time_budget(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", n=2)
    out = train(
        _config(
            train={"max_epochs": 50, "val_every": 1, "early_stop_patience": 1, "batch_size": 2, "samples_per_image": 1},
            optimizer={"lr": 1e-9},
        ),
        ds,
        tmp_path / "es",
        progress=False,
    )
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["stopped"].startswith("early stopping") and card["training"]["epochs_run"] < 50
    out = train(
        _config(train={"max_epochs": 500, "val_every": 50}), ds, tmp_path / "budget", max_minutes=0.05, progress=False
    )
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["stopped"].startswith("time budget") and card["training"]["seconds"] < 3 * 60 * 0.05 + 10


def test_train_command(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from medseg.cli import app

    ds = _dataset(tmp_path / "data", n=2)
    cfg_path = tmp_path / "toy.yaml"
    cfg_path.write_text(yaml.safe_dump(_config().model_dump(mode="json")))
    result = CliRunner().invoke(
        app, ["train", str(cfg_path), "--data", str(ds), "--out", str(tmp_path / "run"), "--max-epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "validation Dice" in result.output
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["training"]["command"].startswith(f"medseg train {cfg_path} --data {ds}")


def test_deterministic_transforms_are_cached_on_the_model_grid_and_never_mutated(tmp_path: Path) -> None:
    from monai.transforms import Compose, Lambdad

    from medseg.preprocess import Preprocessor
    from medseg.train.dataset import load_cases
    from medseg.train.loop import _Data

    ds = _dataset(tmp_path, n=2)
    cfg = _config(patch_size=[8, 8, 8])  # smaller than the model grid: no padding, the grid is the resampled one
    split = read_dataset(ds, cfg)
    cases = load_cases(split.train + split.val, cfg, ds)
    data = _Data(cfg, cases, cases[:1], torch.device("cpu"))
    assert len(data.cache._cache) == len(cases)
    for case, item in zip(cases, data.cache._cache, strict=True):
        expected = Preprocessor(cfg)(case.image)  # the inference path's model-grid input
        assert isinstance(item["image"], torch.Tensor) and isinstance(item["label"], torch.Tensor)
        assert item["image"].shape == expected.shape == item["label"].shape
        assert torch.allclose(item["image"], expected.as_tensor(), atol=1e-5)
        label = item["label"].numpy().ravel()
        assert len(item["label_cls_indices"]) == cfg.n_labels
        for k, indices in enumerate(item["label_cls_indices"]):
            assert np.array_equal(np.asarray(indices), np.flatnonzero(label == k))
    before = [{k: v.clone() for k, v in it.items() if isinstance(v, torch.Tensor)} for it in data.cache._cache]
    # a random step that changes its patch in place must still leave the cached cases alone
    data.randoms = Compose([*data.randoms.transforms, Lambdad(["image", "label"], lambda x: x.mul_(0))])
    for epoch in range(2):
        data.reseed(epoch)
        patches = [b["image"] for b in data.batches()]
        assert patches and all(p.shape[2:] == (8, 8, 8) for p in patches)
    for snapshot, item in zip(before, data.cache._cache, strict=True):
        assert all(torch.equal(v, item[k]) for k, v in snapshot.items())


@pytest.mark.parametrize(("n_cases", "samples", "batch"), [(2, 50, 4), (3, 2, 4), (5, 3, 2), (1, 1, 8)])
def test_a_batch_is_batch_size_patches_and_an_epoch_draws_samples_per_image_from_every_case(
    tmp_path: Path, n_cases: int, samples: int, batch: int
) -> None:
    """One optimiser step per ``batch_size`` patches: ceil(n_cases * samples_per_image / batch_size) steps an epoch."""
    from monai.transforms import Lambdad

    from medseg.train.dataset import load_cases
    from medseg.train.loop import _Data

    ds = _dataset(tmp_path, n=n_cases)
    cfg = _config(patch_size=[8, 8, 8], train={"batch_size": batch, "samples_per_image": samples})
    cases = load_cases(read_dataset(ds, cfg).train, cfg, ds)
    data = _Data(cfg, cases, cases[:1], torch.device("cpu"))
    for i, item in enumerate(data.cache._cache):  # mark each case's voxels with its index
        item["image"] = torch.full_like(item["image"], float(i))
    data.randoms.transforms = [t for t in data.randoms.transforms if isinstance(t, Lambdad)] + \
        [t for t in data.randoms.transforms if type(t).__name__ == "RandCropByLabelClassesd"]
    data.reseed(0)
    sizes, owners = [], []
    for b in data.batches():
        sizes.append(b["image"].shape[0])
        owners.extend(int(v) for v in b["image"].flatten(1)[:, 0].tolist())
    n = len(cases)  # 5 cases: one is held out for validation
    assert len(sizes) == math.ceil(n * samples / batch) and all(s == batch for s in sizes[:-1])
    assert np.bincount(owners, minlength=n).tolist() == [samples] * n


def test_dicom_series_folder_is_a_training_image(tmp_path: Path) -> None:
    from medseg.io.dicom_write import save_dicom_series
    from medseg.train.dataset import load_cases

    rng = np.random.default_rng(5)
    entries, arrays = [], {}
    for name in ("ct_a", "ct_b"):
        img, lab = _case(rng)
        image = Image(img, spacing=SPACING, origin=(10.0, -5.0, 30.0), modality="CT", intensity_unit="HU")
        save_dicom_series(image, tmp_path / "imagesTr" / name, modality="CT")
        medseg.save(image.with_array(lab), tmp_path / "labelsTr" / f"{name}.nii.gz")
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}.nii.gz"})
        arrays[name] = img, lab
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"labels": {"0": "background", "1": "a", "2": "b"}, "training": entries}))
    split = read_dataset(ds, _config())
    cases = load_cases(list(dict.fromkeys(split.train + split.val)), _config(), ds)
    assert sorted(c.case_id for c in cases) == ["ct_a", "ct_b"]
    for case in cases:
        img, lab = arrays[case.case_id]
        assert case.image_path.is_dir() and case.label.same_grid(case.image)
        assert np.array_equal(case.image.array, img) and np.array_equal(case.label.array, lab)
    cfg = _config(train={"max_epochs": 1, "batch_size": 1, "samples_per_image": 1, "val_every": 1})
    out = train(cfg, ds, tmp_path / "run", progress=False, device="cpu")
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["epochs_run"] == 1
    assert sorted({*card["training"]["train_data"]["cases"], *card["training"]["validation_cases"]}) == ["ct_a", "ct_b"]


def test_model_directory_keeps_the_best_epoch_not_the_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # validation Dice scripted per epoch (the real one is tested above): best at epoch 2 of 4, whatever the CPU
    scripted = [0.30, 0.60, 0.45, 0.20]

    def scripted_validation(network, items, config, device) -> dict[str, float]:
        dice = scripted[scripted_validation.calls]
        scripted_validation.calls += 1
        return {"a": dice, "b": dice / 2}

    monkeypatch.setattr(loop, "_validate", scripted_validation)
    ds = _dataset(tmp_path / "data", n=2)
    cfg = _config(
        train={"max_epochs": 4, "batch_size": 2, "samples_per_image": 1, "val_every": 1},
        optimizer={"lr": 0.01, "schedule": "constant"},
    )
    scripted_validation.calls = 0
    out = train(cfg, ds, tmp_path / "full", seed=2, progress=False, device="cpu")
    with open(out / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["dice_a"]) for r in rows] == scripted
    card = json.loads((out / "model_card.json").read_text())
    assert card["validation"]["epoch"] == 2 and card["validation"]["dice"] == {"a": 0.60, "b": 0.30}
    # a same-seed run stopped at the best epoch ends with exactly the kept weights
    scripted_validation.calls = 0
    stopped = train(cfg, ds, tmp_path / "stopped", seed=2, progress=False, device="cpu", max_epochs=2)
    kept, at_best, last = load_file(str(out / "model.safetensors")), _weights(stopped), _weights(out)
    assert set(kept) == set(at_best) and all(torch.equal(kept[k], at_best[k]) for k in kept)
    assert not all(torch.equal(kept[k], last[k]) for k in kept)


def test_progress_bar_on_stderr_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = _dataset(tmp_path / "data", n=2)
    cfg = _config(train={"max_epochs": 2, "batch_size": 2, "samples_per_image": 1, "val_every": 2})
    train(cfg, ds, tmp_path / "shown", progress=True, device="cpu")
    shown = capsys.readouterr()
    assert "training" in shown.err and "2/2" in shown.err and "dice" in shown.err
    assert shown.out == ""
    train(cfg, ds, tmp_path / "quiet", progress=False, device="cpu")
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == ""


# ---- learning-rate schedule ---------------------------------------------------------
@pytest.mark.parametrize("schedule", ["poly", "cosine", "constant"])
def test_factor_follows_the_schedule_after_warmup(schedule: str) -> None:
    cfg = _config(optimizer={"schedule": schedule, "warmup_epochs": 2})
    expected = {
        "poly": lambda t: (1 - t) ** 0.9,
        "cosine": lambda t: (1 + math.cos(math.pi * t)) / 2,
        "constant": lambda t: 1.0,
    }
    assert [_lr_factor(cfg, e, 0.0) for e in (0, 1)] == pytest.approx([1 / 3, 2 / 3])
    for t in (0.0, 0.25, 0.5, 0.9, 1.0, 1.7):
        assert _lr_factor(cfg, 5, t) == pytest.approx(expected[schedule](min(t, 1.0)))


def test_progress_counts_epochs_or_the_larger_share_of_the_budget() -> None:
    by_epochs = _config(optimizer={"warmup_epochs": 2})
    by_budget = _config(optimizer={"warmup_epochs": 2, "anneal_over": "budget"})
    # epoch 12 of 102 after 2 warm-up epochs: 10 % of the annealing epochs
    assert _progress_share(by_epochs, 12, 102, session_s=300.0, budget_s=600.0) == pytest.approx(0.1)
    assert _progress_share(by_budget, 12, 102, session_s=300.0, budget_s=600.0) == pytest.approx(0.5)
    assert _progress_share(by_budget, 92, 102, session_s=300.0, budget_s=600.0) == pytest.approx(0.9)
    assert _progress_share(by_budget, 12, 102, session_s=300.0, budget_s=math.inf) == pytest.approx(0.1)


def _logged_lrs(run: Path) -> list[float]:
    with open(run / "train_log.csv", newline="") as fh:
        return [float(row["lr"]) for row in csv.DictReader(fh)]


def test_budget_cut_run_anneals_only_when_annealing_over_the_budget(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", n=2)
    lr, minutes = 0.01, 0.1
    train_cfg = {"max_epochs": 100_000, "val_every": 100_000, "batch_size": 2, "samples_per_image": 1}
    runs = {}
    for anneal_over in ("epochs", "budget"):
        cfg = _config(train=train_cfg, optimizer={"lr": lr, "schedule": "poly", "anneal_over": anneal_over})
        runs[anneal_over] = _logged_lrs(train(cfg, ds, tmp_path / anneal_over, max_minutes=minutes, progress=False))
    # by epochs, a run cut after a few of its 100 000 epochs keeps nearly the full rate
    n = len(runs["epochs"])
    assert runs["epochs"][-1] == pytest.approx(lr * (1 - (n - 1) / 100_000) ** 0.9, rel=1e-3)
    # over the budget, the rate decreases every epoch and ends near zero
    decay = runs["budget"]
    assert all(b <= a for a, b in itertools.pairwise(decay))
    assert decay[0] == pytest.approx(lr, rel=0.05) and decay[-1] < 0.5 * lr


def test_an_annotation_file_is_a_training_label(sample_data: Path, tmp_path: Path) -> None:
    from medseg.annotations import write_annotations
    from medseg.config import load_config
    from medseg.train.dataset import load_cases

    config = load_config(Path(__file__).parent / "data" / "nuclei_2d_config.yaml")
    image = sample_data / "nuclei" / "imagesTr" / "case_000.tif"
    instances = medseg.load_labels(sample_data / "nuclei" / "labelsTr" / "case_000.tif")
    coco = write_annotations(instances, tmp_path / "case_000.json", format="coco", class_names="nucleus")
    from_coco, from_tif = (load_cases([(image, label)], config, tmp_path)[0] for label in (coco, Path(instances.source)))
    assert from_coco.label.same_grid(from_tif.label)
    assert np.array_equal(from_coco.label.array, from_tif.label.array)  # the same interior/boundary targets
