"""Workflow configs: every error names the bad key and the allowed values (the shipped task YAMLs: test_plan)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medseg.config import WorkflowConfig, load_config, validate_config
from medseg.errors import ConfigError
from medseg.io.image import Image
from medseg.models import build_network
from medseg.preprocess import Preprocessor, intensity_transform


def _base() -> dict:
    return {
        "name": "t",
        "dims": 3,
        "labels": {"background": 0, "liver": 1},
        "intensity": {"preset": "ct", "window_hu": [-100, 200]},
        "patch_size": [32, 32, 16],
        "network": {"name": "UNet", "params": {"channels": [8, 16], "strides": [2]}},
    }


def test_postprocess_rules_by_label_name_are_accepted() -> None:
    cfg = validate_config(
        {**_base(), "postprocess": {"default": {"min_size": "100 mm3"}, "liver": {"keep_largest": True}}}
    )
    assert cfg.postprocess["liver"] == {"keep_largest": True}


def test_defaults_are_dice_ce_and_auto_device() -> None:
    cfg = validate_config(_base())
    assert cfg.loss.name == "dice_ce" and cfg.device == "auto" and cfg.amp
    assert cfg.n_labels == 2 and cfg.label_names == ["background", "liver"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"network": {"name": "Unet"}},
            ["network.name", "'UNet', 'BasicUNet', 'SegResNet' or 'DynUNet'", "got 'Unet'"],
        ),
        ({"intensity": {"preset": "mri"}}, ["intensity", "'ct', 'xray', 'fluorescence', 'rgb'"]),
        ({"device": "tpu"}, ["device", "'auto', 'cpu' or 'cuda'"]),
        ({"train": {"max_epoch": 3}}, ["train.max_epoch: unknown key", "allowed: max_epochs"]),
        ({"colour": 1}, ["colour: unknown key", "allowed: name, dims, labels"]),
        ({"network": {"name": "UNet", "params": {"chanels": [8]}}}, ["params.chanels", "allowed: channels, strides"]),
        ({"network": {"name": "UNet", "params": {"in_channels": 2}}}, ["params.in_channels is set by medseg"]),
        ({"intensity": {"preset": "ct", "window_hu": [300, -100]}}, ["intensity.window_hu", "low < high"]),
        ({"labels": {"background": 0, "liver": 2}}, ["labels", "0..N-1 without gaps"]),
        ({"labels": {"bg": 0, "liver": 1}}, ["labels", "named 'background'"]),
        ({"patch_size": [32, 32]}, ["patch_size needs 3"]),
        ({"orientation": "RAX"}, ["orientation", "L/R, A/P, S/I"]),
        ({"dims": 2, "patch_size": [32, 32], "orientation": "RAS"}, ["orientation applies to 3D"]),
        ({"inference": {"tta": True}}, ["inference.tta", "augment.flip_axes"]),
        ({"augment": {"flip_axes": [3]}}, ["flip_axes must be spatial axes 0..2"]),
        ({"label_source": "instances"}, ["label_source 'instances'", "interior"]),
        ({"postprocess": {"spleen": {"keep_largest": True}}}, ["postprocess", "unknown labels ['spleen']"]),
        ({"postprocess": {"liver": {"min_size": "5 parsecs"}}}, ["postprocess", "liver.min_size"]),
    ],
)
def test_errors_name_key_and_allowed_values(change: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({**_base(), **change}, "my.yaml")
    msg = str(info.value)
    assert msg.startswith("my.yaml: invalid config")
    assert "\n" not in msg
    for part in expected:
        assert part in msg, msg


def test_missing_required_keys_are_listed() -> None:
    with pytest.raises(
        ConfigError, match=r"network: Field required.*patch_size: Field required|patch_size: Field required.*network"
    ):
        validate_config({k: v for k, v in _base().items() if k not in ("network", "patch_size")})


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


NETWORK_FAMILIES = {
    "UNet": {"channels": [4, 8], "strides": [2]},
    "BasicUNet": {"features": [4, 4, 8, 8, 16, 4]},
    "SegResNet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    "DynUNet": {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2], "filters": [4, 8, 16]},
}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(NETWORK_FAMILIES))
def test_every_network_family_builds_and_maps_input_to_label_channels(name: str, dims: int) -> None:
    labels = {"background": 0, "liver": 1, "spleen": 2}
    cfg = validate_config(
        {
            **_base(),
            "dims": dims,
            "patch_size": [32] * dims,
            "in_channels": 2,
            "labels": labels,
            "network": {"name": name, "params": NETWORK_FAMILIES[name]},
        }
    )
    network = build_network(cfg).eval()
    x = torch.rand(1, 2, *[32] * dims)  # BasicUNet halves 4 times; instance norm needs > 1 voxel at the bottom
    with torch.no_grad():
        y = network(x)
    assert type(network).__name__ == name
    assert tuple(y.shape) == (1, len(labels), *x.shape[2:])


@pytest.mark.parametrize(
    ("network", "reason"),
    [
        ({"name": "SegResNet", "params": {"init_filters": 4}}, "divisible by num_groups"),
        (
            {"name": "DynUNet", "params": {"kernel_size": [3, 3], "strides": [1, 2], "upsample_kernel_size": [2]}},
            "length of kernel_size and strides",
        ),
        ({"name": "UNet", "params": {"channels": [8, 16, 32], "strides": [2]}}, "strides"),
    ],
)
def test_network_params_monai_rejects_fail_on_load_naming_the_network(
    tmp_path: Path, network: dict, reason: str
) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump({**_base(), "network": network}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: invalid config: network.params")
    assert f"monai {network['name']}" in msg and reason in msg, msg


def _preprocessed(cfg: WorkflowConfig, image: Image) -> np.ndarray:
    """The preset applied two ways (MONAI array transform, Preprocessor); both must agree; channel-first."""
    direct = intensity_transform(cfg)(
        torch.from_numpy(np.moveaxis(image.array, -1, 0) if image.channel_axis else image.array[None])
    )
    via_preprocessor = Preprocessor(cfg)(image)  # no spacing/orientation: the image is already on the model grid
    np.testing.assert_allclose(np.asarray(via_preprocessor), np.asarray(direct), rtol=1e-5, atol=1e-5)
    return np.asarray(via_preprocessor)


def test_ct_preset_clips_to_the_window_and_scales_linearly() -> None:
    hu = np.random.default_rng(0).uniform(-600, 900, (12, 10, 6)).astype(np.float32)
    cfg = validate_config({**_base(), "intensity": {"preset": "ct", "window_hu": [-150, 250]}})
    expected = (np.clip(hu, -150, 250) + 150) / 400
    np.testing.assert_allclose(_preprocessed(cfg, Image(hu))[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["xray", "fluorescence"])
def test_percentile_preset_matches_numpy_percentiles_clipped_to_unit_range(preset: str) -> None:
    rng = np.random.default_rng(1)
    arr = rng.gamma(2.0, 300.0, (40, 30)).astype(np.float32)
    arr[:2, :2] = 1e5  # outliers the percentiles ignore
    cfg = validate_config(
        {**_base(), "dims": 2, "patch_size": [16, 16], "intensity": {"preset": preset, "percentiles": [2, 97]}}
    )
    lo, hi = np.percentile(arr, [2, 97])
    expected = np.clip((arr - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(_preprocessed(cfg, Image(arr))[0], expected, rtol=1e-4, atol=1e-5)


def test_rgb_preset_is_a_per_channel_z_score() -> None:
    rng = np.random.default_rng(2)
    rgb = rng.uniform(0, 255, (20, 24, 3)).astype(np.float32) * np.array([1.0, 0.2, 0.05], np.float32) + [0, 50, 200]
    cfg = validate_config(
        {**_base(), "dims": 2, "patch_size": [16, 16], "in_channels": 3, "intensity": {"preset": "rgb"}}
    )
    out = _preprocessed(cfg, Image(rgb, channel_axis=True))
    expected = (rgb - rgb.mean(axis=(0, 1))) / rgb.std(axis=(0, 1))
    np.testing.assert_allclose(np.moveaxis(out, 0, -1), expected, rtol=1e-4, atol=1e-4)


def test_augmentation_settings_reach_the_monai_transforms() -> None:
    from monai.transforms import (
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    from medseg.preprocess import random_transforms

    augment = {
        "prob": 0.3,
        "flip_axes": [0, 2],
        "rotate_deg": 15.0,
        "scale_range": 0.1,
        "intensity_scale": 0.2,
        "intensity_shift": 0.05,
        "noise_std": 0.03,
        "gamma": [0.7, 1.5],
    }
    steps = random_transforms(validate_config({**_base(), "augment": augment})).transforms
    by_type = {cls: [t for t in steps if isinstance(t, cls)] for cls in (RandFlipd, RandAffined)}
    assert [t.flipper.spatial_axis for t in by_type[RandFlipd]] == [0, 2]
    (affine,) = by_type[RandAffined]
    grid = affine.rand_affine.rand_affine_grid
    assert affine.prob == 0.3 and grid.rotate_range == pytest.approx((np.deg2rad(15.0),) * 3)
    assert grid.scale_range == pytest.approx((0.1,) * 3)
    (scale,) = [t for t in steps if isinstance(t, RandScaleIntensityd)]
    (shift,) = [t for t in steps if isinstance(t, RandShiftIntensityd)]
    (noise,) = [t for t in steps if isinstance(t, RandGaussianNoised)]
    (gamma,) = [t for t in steps if isinstance(t, RandAdjustContrastd)]
    assert scale.scaler.factors == pytest.approx((-0.2, 0.2)) and shift.shifter.offsets == pytest.approx((-0.05, 0.05))
    assert noise.rand_gaussian_noise.std == 0.03 and gamma.adjuster.gamma == pytest.approx((0.7, 1.5))
    assert all(t.prob == 0.3 for t in (scale, shift, noise, gamma))
    plain = random_transforms(validate_config({**_base(), "augment": {"intensity_scale": 0, "intensity_shift": 0}}))
    assert not any(
        isinstance(t, (RandFlipd, RandAffined, RandScaleIntensityd, RandShiftIntensityd)) for t in plain.transforms
    )


def test_elastic_deformation_moves_image_and_label_together_and_is_2d_only() -> None:
    """A disc deformed by ``augment.elastic``: its label still lies on its pixels, its outline moved."""
    from medseg.preprocess import cached_transforms, random_transforms

    yy, xx = np.mgrid[:96, :96]
    disc = ((yy - 48) ** 2 + (xx - 48) ** 2 < 30**2).astype(np.float32)
    augment = {"prob": 1.0, "elastic": 0.2, "intensity_scale": 0, "intensity_shift": 0}
    cfg = validate_config({**_base(), "dims": 2, "patch_size": [96, 96], "intensity": {"preset": "zscore"},
                           "augment": augment, "train": {"samples_per_image": 4, "pos_fraction": 1.0}})
    item = cached_transforms(cfg)({"image": Image(disc), "label": Image(disc.astype(np.uint8))})
    for patch in random_transforms(cfg)(item):
        image, label = patch["image"][0].numpy(), patch["label"][0].numpy()
        inside = image > (image.min() + image.max()) / 2
        assert np.mean(inside != (label > 0)) < 0.01  # label and image warped by the same field
        assert np.mean((label > 0) != (disc > 0)) > 0.005  # and the field moved the outline
    with pytest.raises(ConfigError, match=r"augment\.elastic deforms 2D patches only"):
        validate_config({**_base(), "augment": {"elastic": 0.2}})


@pytest.mark.parametrize("zscore", [True, False])
def test_contrast_enhancement_brightens_soft_tissue_only_and_stays_in_the_window(zscore: bool) -> None:
    """``augment.enhance_hu``: one offset per patch for soft tissue, none for fat, half at the ramp's middle."""
    import torch

    from medseg.preprocess import ENHANCING_HU, intensity_transform, random_transforms

    intensity = {"preset": "ct", "window_hu": [-160, 240], **({"mean_hu": 40.0, "std_hu": 25.0} if zscore else {})}
    cfg = validate_config({**_base(), "intensity": intensity, "augment": {
        "prob": 1.0, "enhance_hu": 60.0, "intensity_scale": 0, "intensity_shift": 0}})
    (enhance,) = [t for t in random_transforms(cfg).transforms if type(t).__name__ == "RandContrastEnhancementd"]
    enhance.set_random_state(3)
    fat, tissue = ENHANCING_HU
    hu = torch.tensor([-1000.0, fat - 20, (fat + tissue) / 2, 60.0, 150.0, 235.0]).reshape(1, 6, 1, 1)
    normalise = intensity_transform(cfg)
    deltas = []
    for _ in range(20):
        out = enhance({"image": normalise(hu)})["image"]
        back = (out * 25.0 + 40.0) if zscore else (out * 400.0 - 160.0)
        gained = (back - hu.clamp(-160, 240)).flatten()
        delta = float(gained[3])
        assert gained[:2].abs().max() < 1e-3  # air and fat do not enhance
        assert float(gained[2]) == pytest.approx(delta / 2, abs=1e-3)  # half-way up the ramp: half the offset
        assert float(gained[4]) == pytest.approx(delta, abs=1e-3)
        assert float(back.max()) <= 240 + 1e-3  # still inside the clip window
        deltas.append(delta)
    assert max(deltas) <= 60 and min(deltas) >= -60 and min(deltas) < -10 and max(deltas) > 10
    with pytest.raises(ConfigError, match=r"enhance_hu changes CT contrast"):
        validate_config({**_base(), "intensity": {"preset": "zscore"}, "augment": {"enhance_hu": 60.0}})


@pytest.mark.parametrize(
    ("loss", "weights"),
    [
        ({"name": "dice_ce", "lambda_dice": 0.3, "lambda_ce": 2.0}, (0.3, 2.0)),
        ({"name": "ce", "lambda_ce": 1.5}, (0.0, 1.5)),
        ({"name": "dice"}, (1.0, 0.0)),
    ],
)
def test_loss_weights_dice_and_cross_entropy_as_configured(loss: dict, weights: tuple[float, float]) -> None:
    from monai.losses import DiceLoss

    from medseg.train.loop import _loss

    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, 4)
    target = torch.randint(0, 2, (2, 1, 8, 8, 4))
    dice = DiceLoss(to_onehot_y=True, softmax=True)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    expected = weights[0] * dice + weights[1] * ce
    got = _loss(validate_config({**_base(), "loss": loss}))(logits, target)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_sliding_window_settings_reach_monai(monkeypatch: pytest.MonkeyPatch) -> None:
    import medseg.infer
    from medseg.infer import sliding_window_probabilities

    calls: list[dict] = []
    real = medseg.infer.sliding_window_inference

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(medseg.infer, "sliding_window_inference", spy)
    cfg = validate_config(
        {
            **_base(),
            "augment": {"flip_axes": [0, 2]},
            "inference": {"overlap": 0.25, "sw_batch_size": 3, "blend": "constant"},
        }
    )
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    probs = sliding_window_probabilities(network, torch.rand(1, 1, 40, 36, 20), cfg, mirror_axes=[0, 2])
    assert probs.shape == (1, 2, 40, 36, 20)
    assert len(calls) == 4  # no flip, axis 0, axis 2, both
    for kwargs in calls:
        assert kwargs["roi_size"] == [32, 32, 16] and kwargs["overlap"] == 0.25
        assert kwargs["sw_batch_size"] == 3 and kwargs["mode"] == "constant"
