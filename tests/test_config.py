"""Workflow configs: the shipped YAMLs validate; every error names the bad key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.config import WorkflowConfig, config_to_dict, load_config, validate_config
from medseg.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENGINE_CONFIGS = ["ct_organs.yaml", "nuclei_2d.yaml", "xray_lungs.yaml"]


def _base() -> dict:
    return {
        "name": "t",
        "dims": 3,
        "labels": {"background": 0, "liver": 1},
        "intensity": {"preset": "ct", "window_hu": [-100, 200]},
        "patch_size": [32, 32, 16],
        "network": {"name": "UNet", "params": {"channels": [8, 16], "strides": [2]}},
    }


@pytest.mark.parametrize("name", ENGINE_CONFIGS)
def test_shipped_configs_validate_and_round_trip(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.dims == (3 if name == "ct_organs.yaml" else 2)
    assert cfg.label_names[0] == "background"
    again = validate_config(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg


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
        ConfigError, match="network: Field required.*patch_size: Field required|patch_size: Field required.*network"
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


def test_every_network_family_accepts_its_parameters() -> None:
    nets = {
        "UNet": {"channels": [8, 16], "strides": [2]},
        "BasicUNet": {"features": [8, 8, 16, 32, 64, 8]},
        "SegResNet": {"init_filters": 8},
        "DynUNet": {"kernel_size": [3, 3], "strides": [1, 2], "upsample_kernel_size": [2]},
    }
    for name, params in nets.items():
        cfg = validate_config({**_base(), "network": {"name": name, "params": params}})
        assert isinstance(cfg, WorkflowConfig) and cfg.network.name == name
