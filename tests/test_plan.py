"""The planner on synthetic fingerprints whose right answers can be reasoned out by hand (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import medseg
from medseg.config import validate_config
from medseg.errors import ConfigError
from medseg.io.image import Image
from medseg.plan import DatasetFingerprint, fingerprint_case, fingerprint_dataset, plan_workflow
from medseg.plan.planner import RADIOGRAPH_ELASTIC, pools_per_axis

REPO = Path(__file__).resolve().parents[1]
FAST_CPU = 2e6  # training voxels per second given to the planner, so plans do not depend on this machine's load


def _fingerprint(images: list[Image], labels: list[np.ndarray], root: Path = Path("dataset.json")) -> DatasetFingerprint:
    cases = [fingerprint_case(f"case_{i}", im, im.with_array(lab), seed=i)
             for i, (im, lab) in enumerate(zip(images, labels, strict=True))]
    return DatasetFingerprint(cases, root)


def _ct_case(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int) -> tuple[Image, np.ndarray]:
    rng = np.random.default_rng(seed)
    hu = rng.normal(40, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    c = [s // 2 for s in shape]
    label[c[0] - 20:c[0] + 20, c[1] - 15:c[1] + 15, c[2] - 4:c[2] + 4] = 1
    hu[label == 1] = rng.normal(100, 20, int(label.sum()))
    return Image(hu, spacing=spacing, modality="CT", intensity_unit="HU"), label


def _ct_dataset(root: Path, n: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[dict]:
    """``n`` phantom CT cases as NIfTI under ``root``, their dataset.json (``root/dataset.json``) and its entries."""
    entries = []
    for i in range(n):
        image, label = _ct_case(shape, spacing, i)
        medseg.save(image, root / f"img{i}.nii.gz")
        medseg.save(image.with_array(label), root / f"lab{i}.nii.gz")
        entries.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return entries


def test_anisotropic_ct_pools_z_only_once_in_plane_catches_up() -> None:
    """0.8 x 0.8 x 5 mm: z (6.25x coarser) keeps 5 mm; it pools only once in-plane reaches 3.2 mm (within 2x of 5)."""
    cases = [_ct_case((192, 192, 30), (0.8, 0.8, 5.0), i) for i in range(3)]
    fp = _fingerprint([c[0] for c in cases], [c[1] for c in cases])
    plan = plan_workflow(fp, {"modality": "CT"}, minutes=30, device="cpu", throughput=FAST_CPU)
    config = validate_config(plan.config)
    assert config.spacing_mm[2] == 5.0 and config.spacing_mm[0] == config.spacing_mm[1]
    strides = [s if isinstance(s, list | tuple) else [s] * 3 for s in config.network.params["strides"]]
    in_plane = config.spacing_mm[0]
    for level, stride in enumerate(strides):  # z never pools while it is more than 2x coarser than in-plane
        spacing_now = np.array([in_plane * 2**level] * 2 + [5.0 * np.prod([s[2] for s in strides[:level]])])
        assert stride[2] == 1 or spacing_now[2] <= 2 * spacing_now[:2].min() + 1e-9, (level, stride)
    assert [s[2] for s in strides][:3] == [1, 1, 2]  # not at 0.8 and 1.6 mm in-plane; at 3.2 mm (5 <= 6.4)
    total = np.prod(np.array(strides), axis=0)
    assert all(p % t == 0 for p, t in zip(config.patch_size, total, strict=True))  # divisible by construction
    bottleneck = np.array(config.patch_size) / total
    assert bottleneck.min() >= 4
    # CT intensities: clipped at the foreground percentiles, z-scored with the foreground statistics
    fg = np.concatenate([c[0].array[c[1] > 0] for c in cases])
    lo, hi = np.percentile(fg, [0.5, 99.5])
    assert config.intensity.window_hu == pytest.approx((min(lo, -160), max(hi, 240)), abs=2.0)  # soft tissue kept
    assert config.intensity.mean_hu == pytest.approx(np.clip(fg, lo, hi).mean(), abs=1.0)
    assert config.augment.enhance_hu == 60.0  # another contrast phase: soft tissue +-60 HU, fat unchanged
    # the box label is its own mirror image: left-right mirroring only, no test-time mirroring of 3D on the CPU
    assert config.augment.flip_axes == [0] and not config.inference.tta
    assert config.orientation == "RAS" and config.optimizer.anneal_over == "budget"
    # two 3D patches per CPU step: too few for batch statistics
    assert config.train.batch_size == 2 and config.network.params["norm"] == "instance"


def test_3d_radiology_patches_span_at_most_half_the_scan_along_the_body_axis() -> None:
    """A budget that affords the whole 96 x 80 x 40 scan: CT and MR patches keep the whole cross-section but
    only half the slices (20, rounded up to the z stride), so crops see organs cut off by the patch's ends;
    3D microscopy has no body axis and keeps the whole stack."""
    from medseg.plan.planner import AXIAL_SHARE

    cases = [_ct_case((96, 80, 40), (3.0, 3.0, 3.0), i) for i in range(2)]
    images, labels = [c[0] for c in cases], [c[1] for c in cases]
    for modality in ("CT", "MR", "fluorescence"):
        plan = plan_workflow(_fingerprint(images, labels), {"modality": modality}, minutes=60, throughput=FAST_CPU)
        config = validate_config(plan.config)
        strides = [s if isinstance(s, list | tuple) else [s] * 3 for s in config.network.params["strides"]]
        z_stride = int(np.prod([s[2] for s in strides]))
        reason = next(d.reason for d in plan.decisions if d.key == "patch_size")
        if modality == "fluorescence":
            assert config.patch_size[2] >= 40 and "body axis" not in reason
        else:
            assert config.patch_size[:2] == [96, 80], modality
            assert config.patch_size[2] == int(np.ceil(40 * AXIAL_SHARE / z_stride) * z_stride) < 40, modality
            assert "body axis" in reason and "20 slices" in reason


def test_rgb_2d_set_gets_per_channel_zscore_mirroring_and_stain_jitter() -> None:
    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(4):
        rgb = rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)
        lab = np.zeros((300, 280), np.uint8)
        for cx, cy in rng.integers(20, 260, (30, 2)):
            lab[cx - 5:cx + 5, cy - 5:cy + 5] = 1
        images.append(Image(rgb, spacing=(0.0005, 0.0005), channel_axis=True, modality="SM"))
        labels.append(lab)
    plan = plan_workflow(_fingerprint(images, labels), {"labels": {"background": 0, "nucleus": 1}}, minutes=8,
                         device="cpu", throughput=FAST_CPU)
    config = validate_config(plan.config)
    assert config.in_channels == 3 and config.intensity.preset == "rgb"
    assert config.train.batch_size == 4 and config.network.params["norm"] == "batch"  # 4 patches per 2D step
    assert config.augment.flip_axes == [0, 1] and config.augment.rotate90 and config.augment.hed_jitter > 0
    assert config.augment.elastic == 0  # microscopy: turns and mirror images, no deformation of the nuclei
    assert config.spacing_mm == [0.0005, 0.0005]  # 10 px nuclei: never coarsened below 8 px across
    assert dict(config.labels) == {"background": 0, "nucleus": 1}
    assert any(d.key == "labels" and d.source == "workflow" for d in plan.decisions)


def test_images_smaller_than_a_default_patch_give_a_patch_of_their_size() -> None:
    """40 x 50 px: three poolings (40 -> 5), so the patch is the image rounded up to multiples of 8."""
    rng = np.random.default_rng(1)
    images = [Image(rng.normal(size=(40, 50)).astype(np.float32), spacing=(0.5, 0.5), modality="DX") for _ in range(2)]
    labels = [np.pad(np.ones((20, 20), np.uint8), ((10, 10), (15, 15))) for _ in range(2)]
    plan = plan_workflow(_fingerprint(images, labels), minutes=5, device="cpu", throughput=FAST_CPU)
    config = validate_config(plan.config)
    assert config.patch_size == [40, 56] and config.network.params["strides"] == [2, 2, 2]
    assert config.spacing_mm == [0.5, 0.5] and config.intensity.preset == "xray"


def test_pooling_rule_by_hand() -> None:
    # z (4 mm) pools once in-plane is 2 mm; z stops at 4 slices, in-plane at 4 voxels
    assert pools_per_axis(np.array([64, 64, 16]), np.array([1.0, 1.0, 4.0]), 3) == [
        [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert pools_per_axis(np.array([8, 8]), np.array([1.0, 1.0]), 2) == [[2, 2]]
    # a 15-slice 3 mm stack pools once (7.5 slices; 3.75 would be too few): in-plane pools on past twice its 6 mm
    assert pools_per_axis(np.array([122, 101, 15]), np.array([3.0, 3.0, 3.0]), 3) == [
        [2, 2, 2], [2, 2, 1], [2, 2, 1], [2, 2, 1]]


def test_the_whole_median_image_is_the_patch_when_it_costs_little_more_than_the_budget() -> None:
    """A 256 x 256 median image at 1.2x the affordable voxels is taken whole (what inference sees); at 1.4x the
    patch shrinks."""
    from medseg.plan.planner import WHOLE_IMAGE_SLACK, fit_patch

    median, spacing = np.array([256, 256]), np.array([1.0, 1.0])
    patch, levels = fit_patch(median, spacing, 256 * 256 / 1.2, 2)
    assert patch.tolist() == [256, 256] and len(levels) == 6 and WHOLE_IMAGE_SLACK > 1.2
    patch, _ = fit_patch(median, spacing, 256 * 256 / 1.4, 2)
    assert np.prod(patch) < 256 * 256 and (patch <= 256).all()


def test_overrides_win_and_are_shown_as_the_users(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = [Image(rng.normal(size=(64, 64)).astype(np.float32), spacing=(1.0, 1.0)) for _ in range(2)]
    labels = [np.pad(np.ones((20, 20), np.uint8), 22) for _ in range(2)]
    plan = plan_workflow(_fingerprint(images, labels), {"patch_size": [32, 32], "train": {"batch_size": 8}},
                         minutes=5, device="cpu", throughput=FAST_CPU, user_keys=frozenset({"train"}))
    config = validate_config(plan.config)
    assert config.patch_size == [32, 32] and config.train.batch_size == 8
    assert config.train.max_minutes == 5  # the rest of the planned section stays
    sources = {d.key: d.source for d in plan.decisions}
    assert sources["patch_size"] == "workflow" and sources["train"] == "user" and sources["intensity"] == "planned"


def test_fingerprint_of_a_dataset_json_and_its_bad_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    entries = _ct_dataset(tmp_path, 3, (40, 40, 12), (1.0, 1.0, 2.5))
    ds = tmp_path / "dataset.json"
    fp = fingerprint_dataset(ds, labels={"background": 0, "liver": 1})
    assert fp.dims == 3 and len(fp.cases) == 3 and fp.median_spacing().tolist() == [1.0, 1.0, 2.5]
    assert fp.label_fractions()[1] == pytest.approx(40 * 30 * 8 / (40 * 40 * 12), rel=0.05)
    with pytest.raises(ConfigError, match=r"labels \['spleen'\] are absent from every training case"):
        fingerprint_dataset(ds, labels={"background": 0, "liver": 1, "spleen": 2})
    medseg.save(Image(rng.normal(size=(40, 40)).astype(np.float32)), tmp_path / "flat.nii.gz")
    medseg.save(Image(np.ones((40, 40), np.uint8)), tmp_path / "flat_lab.nii.gz")
    ds.write_text(json.dumps({"training": [*entries, {"image": "flat.nii.gz", "label": "flat_lab.nii.gz"}]}))
    with pytest.raises(ConfigError, match=r"cases disagree in dimensionality: most have 3, but flat has 2"):
        fingerprint_dataset(ds)


def test_plan_and_train_commands_plan_from_a_task_yaml(tmp_path: Path) -> None:
    """`medseg plan` writes a complete config; `medseg train --workflow` plans, keeps the plan and trains from it."""
    from typer.testing import CliRunner

    from medseg.cli import app
    from medseg.config import load_config

    _ct_dataset(tmp_path, 2, (48, 40, 16), (1.0, 1.0, 2.0))
    task = tmp_path / "task.yaml"
    task.write_text("name: toy_liver\nmodality: CT\nlabels: {background: 0, liver: 1}\n"
                    "postprocess: {liver: {keep_largest: true}}\n")
    runner = CliRunner()
    planned = runner.invoke(app, ["plan", str(tmp_path / "dataset.json"), "--workflow", str(task), "--minutes", "1",
                                  "--device", "cpu", "--out", str(tmp_path / "plan.yaml")])
    assert planned.exit_code == 0, planned.output
    config = load_config(tmp_path / "plan.yaml")
    assert config.name == "toy_liver" and config.postprocess == {"liver": {"keep_largest": True}}
    assert config.intensity.preset == "ct" and config.intensity.mean_hu is not None and config.train.max_minutes == 1
    trained = runner.invoke(app, ["train", "--workflow", str(task), "--data", str(tmp_path / "dataset.json"),
                                  "--out", str(tmp_path / "run"), "--max-epochs", "1", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    assert load_config(tmp_path / "run" / "plan.yaml").name == "toy_liver"
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["name"] == "toy_liver" and card["intensity"]["mean_hu"] == config.intensity.mean_hu
    task.write_text("name: x\nlabel_names: [a]\n")
    refused = runner.invoke(app, ["plan", str(tmp_path / "dataset.json"), "--workflow", str(task)])
    assert isinstance(refused.exception, ConfigError) and "unknown workflow keys ['label_names']" in str(refused.exception)


def test_impossible_folds_or_budget_are_refused_before_the_dataset_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import medseg.plan.fingerprint
    from medseg.cli import app

    _ct_dataset(tmp_path, 2, (48, 40, 16), (1.0, 1.0, 2.0))
    task = tmp_path / "task.yaml"
    task.write_text("name: toy_liver\nmodality: CT\nlabels: {background: 0, liver: 1}\n")

    def not_now(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was fingerprinted before the refusal")

    monkeypatch.setattr(medseg.plan.fingerprint, "fingerprint_dataset", not_now)
    common = ["train", str(task), "--data", str(tmp_path / "dataset.json"), "--out", str(tmp_path / "run")]
    for extra, message in [(["--folds", "3"], "3 folds need at least 3 training cases; the dataset has 2"),
                           (["--folds", "1"], "at least 2 folds"),
                           (["--minutes", "0"], "positive number of minutes, got 0")]:
        refused = CliRunner().invoke(app, [*common, *extra])
        assert isinstance(refused.exception, ConfigError) and message in str(refused.exception), refused.output
        assert not (tmp_path / "run").exists()


def test_pictures_without_a_pixel_size_are_planned_in_input_pixels() -> None:
    """512 x 512 radiographs of unknown pixel size: coarsened in input pixels (spacing_px) until a patch sees the
    image, and a model trained that way treats every image in pixels."""
    rng = np.random.default_rng(4)
    images = [Image(rng.normal(size=(512, 512)).astype(np.float32), spacing_known=False) for _ in range(2)]
    labels = [np.pad(np.ones((200, 150), np.uint8), ((156, 156), (50, 312))) for _ in range(2)]
    plan = plan_workflow(_fingerprint(images, labels), minutes=10, device="cpu", throughput=4e5)
    config = validate_config(plan.config)
    assert config.spacing_mm is None and config.spacing_px is not None and config.spacing_px[0] > 1
    assert np.prod(config.patch_size) >= 0.5 * np.prod(np.array([512, 512]) / np.array(config.spacing_px))
    assert any(d.key == "spacing_px" and "input pixels" in d.reason for d in plan.decisions)


def test_spacing_px_models_see_every_image_in_pixels() -> None:
    """The same pixels with and without a stated pixel size give the same network input under spacing_px."""
    from medseg.preprocess import Preprocessor

    config = validate_config({"name": "px", "dims": 2, "labels": {"background": 0, "lung": 1}, "patch_size": [32, 32],
                              "intensity": {"preset": "xray"}, "spacing_px": [2.0, 2.0],
                              "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}}})
    pixels = np.random.default_rng(5).normal(size=(64, 48)).astype(np.float32)
    unknown = Preprocessor(config)(Image(pixels, spacing_known=False))
    stated = Preprocessor(config)(Image(pixels, spacing=(0.35, 0.35)))
    assert tuple(unknown.shape[1:]) == (32, 24) and np.allclose(unknown.numpy(), stated.numpy())
    with pytest.raises(ConfigError, match="not both"):
        validate_config({**config.model_dump(mode="json"), "spacing_mm": [1.0, 1.0]})


PLANNED_KEYS = {"dims", "in_channels", "spacing_mm", "spacing_px", "orientation", "resample", "patch_size", "network",
                "intensity", "loss", "optimizer", "augment", "train", "inference", "device"}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_a_task_holding_no_setting_the_planner_derives(path: Path) -> None:
    from medseg.plan import read_workflow

    task, complete = read_workflow(path)
    assert not complete and {"name", "labels", "postprocess"} & set(task)
    assert PLANNED_KEYS.isdisjoint(task), sorted(PLANNED_KEYS & set(task))


def test_shipped_task_yaml_plans_to_a_valid_config() -> None:
    """configs/xray_lungs.yaml holds no data-dependent number; planned for radiographs it gives a valid config."""
    from medseg.plan import read_workflow

    task, complete = read_workflow(REPO / "configs" / "xray_lungs.yaml")
    assert not complete and {"patch_size", "network", "spacing_mm", "train", "augment"}.isdisjoint(task)
    rng = np.random.default_rng(6)
    images = [Image(rng.normal(size=(256, 256)).astype(np.float32), spacing_known=False, modality="DX")
              for _ in range(2)]
    labels = [np.pad(np.ones((120, 60), np.uint8), ((68, 68), (20, 176))) for _ in range(2)]
    config = validate_config(plan_workflow(_fingerprint(images, labels), task, minutes=5, throughput=FAST_CPU).config)
    assert config.name == "xray_lungs" and config.label_source == "binary"
    assert config.augment.flip_axes == [0] and config.inference.tta  # a label centred left-right: mirrored
    assert config.postprocess == {"lungs": {"keep_largest": 2, "fill_holes": True}}


def test_shipped_ct_task_takes_the_dataset_labels_and_their_rules_only(tmp_path: Path) -> None:
    """configs/ct_organs.yaml names no labels: dataset.json's are planned, and rules of absent organs dropped."""
    from medseg.plan import plan_dataset, read_workflow

    task, complete = read_workflow(REPO / "configs" / "ct_organs.yaml")
    assert not complete and "labels" not in task and {"patch_size", "spacing_mm", "intensity"}.isdisjoint(task)
    entries = _ct_dataset(tmp_path, 2, (64, 64, 20), (1.5, 1.5, 3.0))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"},
                                                       "training": entries}))
    plan = plan_dataset(tmp_path / "dataset.json", task, minutes=5, throughput=FAST_CPU)
    config = validate_config(plan.config)
    assert dict(config.labels) == {"background": 0, "liver": 1}
    assert set(config.postprocess) == {"default", "liver"}
    assert any("spleen" in w and "do not apply" in w for w in plan.warnings)
    assert next(d for d in plan.decisions if d.key == "labels").reason == "the labels of dataset.json"


def test_shipped_nuclei_task_plans_mirrored_instance_training() -> None:
    from medseg.plan import read_workflow

    task, complete = read_workflow(REPO / "configs" / "nuclei_2d.yaml")
    assert not complete and {"patch_size", "network", "intensity", "augment"}.isdisjoint(task)
    rng = np.random.default_rng(8)
    images = [Image(rng.normal(100, 5, (200, 200)).astype(np.float32), spacing=(0.0005, 0.0005)) for _ in range(2)]
    labels = [np.pad(np.ones((12, 12), np.uint8), 94) for _ in range(2)]
    config = validate_config(plan_workflow(_fingerprint(images, labels), task, minutes=5, throughput=FAST_CPU).config)
    assert config.label_source == "instances" and config.intensity.preset == "fluorescence"
    assert config.augment.flip_axes == [0, 1] and config.postprocess["boundary"] == {"merge_into": "interior"}


@pytest.mark.parametrize(("left", "right", "names", "mirrored"), [
    ((10, 40), (88, 118), {"lungs": 1}, True),  # both lungs as one label: its own mirror image
    ((10, 40), (88, 118), {"right_lung": 1}, False),  # a side in the name
    ((10, 40), None, {"liver": 1}, False),  # one structure on one side
])
def test_radiology_mirrors_left_right_only_for_labels_that_are_their_own_mirror_image(
    left: tuple[int, int], right: tuple[int, int] | None, names: dict[str, int], mirrored: bool
) -> None:
    rng = np.random.default_rng(9)
    images, labels = [], []
    for _ in range(2):
        lab = np.zeros((128, 128), np.uint8)
        lab[left[0]:left[1], 30:100] = 1
        if right:
            lab[right[0]:right[1], 30:100] = 1
        images.append(Image(rng.normal(size=(128, 128)).astype(np.float32), spacing=(0.5, 0.5), modality="DX"))
        labels.append(lab)
    fp = _fingerprint(images, labels)
    plan = plan_workflow(fp, {"labels": {"background": 0, **names}}, minutes=5, throughput=FAST_CPU)
    config = validate_config(plan.config)
    assert config.augment.flip_axes == ([0] if mirrored else []) and config.inference.tta == mirrored
    assert config.augment.elastic == RADIOGRAPH_ELASTIC  # radiographs: organs vary in shape between patients
    assert fp.mirror_symmetry() == pytest.approx(1.0 if right else 0.0)  # mirrored about the image's middle


def test_a_budget_too_short_for_one_epoch_is_a_warning_in_the_plan() -> None:
    rng = np.random.default_rng(7)
    images = [Image(rng.normal(size=(64, 64)).astype(np.float32), spacing=(1.0, 1.0)) for _ in range(2)]
    labels = [np.pad(np.ones((20, 20), np.uint8), 22) for _ in range(2)]
    plan = plan_workflow(_fingerprint(images, labels), minutes=1, device="cpu", throughput=10.0)
    assert any("more than the 1-minute budget" in w for w in plan.warnings)
    with pytest.raises(ConfigError, match="budget must be a positive number of minutes, got 0"):
        plan_workflow(_fingerprint(images, labels), minutes=0, device="cpu", throughput=10.0)


def test_microscopy_patches_are_square_and_turned_whatever_the_images_aspect() -> None:
    """A slide has no sides: 2D microscopy patches are square (at most the shorter side, 48 px, of a 48 x 96 image)
    so that training turns them by 90 degrees and test-time augmentation averages the eight turns."""
    from medseg.infer import turns_at_test_time

    rng = np.random.default_rng(10)
    for shape in ((48, 96), (96, 96)):
        images = [Image(rng.normal(size=shape).astype(np.float32), spacing=(0.0005, 0.0005)) for _ in range(2)]
        labels = [np.zeros(shape, np.uint8) for _ in range(2)]
        for lab in labels:
            lab[19:29, 20:30] = 1
        config = validate_config(plan_workflow(_fingerprint(images, labels), {"modality": "fluorescence"}, minutes=5,
                                               throughput=FAST_CPU).config)
        assert config.patch_size == [min(shape)] * 2 and config.augment.rotate90
        assert config.augment.flip_axes == [0, 1] and config.inference.tta and turns_at_test_time(config)
    # radiographs keep the image's aspect (no turns: a chest has an up and a down)
    dx = [Image(rng.normal(size=(48, 96)).astype(np.float32), spacing=(0.5, 0.5), modality="DX") for _ in range(2)]
    config = validate_config(plan_workflow(_fingerprint(dx, labels), minutes=5, throughput=FAST_CPU).config)
    assert config.patch_size == [48, 96] and not config.augment.rotate90


def test_throughput_probe_takes_the_median_step() -> None:
    """One optimiser step stalled by another process (ten times slower) does not change the measured step time."""
    from medseg.plan.planner import PROBE_STEPS, PROBE_WARMUP, median_step_seconds

    now, calls = [0.0], []

    def step() -> None:
        calls.append(1)
        now[0] += 1.0 if len(calls) == PROBE_WARMUP + 2 else 0.1  # the second timed step stalls

    assert median_step_seconds(step, clock=lambda: now[0]) == pytest.approx(0.1)
    assert len(calls) == PROBE_WARMUP + PROBE_STEPS
