"""Model directories (weights + card), refusal of unsafe or mismatched files, MONAI bundle import."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medseg
from medseg.config import validate_config
from medseg.errors import ModelError
from medseg.models import build_network, load_model, save_model_dir
from medseg.models.store import CARD_NAME, sha256_file


def _config(**changes):
    base = {
        "name": "tiny",
        "dims": 3,
        "labels": {"background": 0, "liver": 1, "spleen": 2},
        "intensity": {"preset": "ct", "window_hu": [-100, 200]},
        "spacing_mm": [2.0, 2.0, 3.0],
        "orientation": "RAS",
        "patch_size": [16, 16, 16],
        "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
    }
    return validate_config({**base, **changes})


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = _config()
    save_model_dir(tmp_path / "m", build_network(cfg).state_dict(), cfg, validation={"dice": {"liver": 0.5}})
    return tmp_path / "m"


def test_round_trip_weights_card_and_fingerprint(model_dir: Path) -> None:
    from safetensors.torch import load_file

    model = medseg.load_model(model_dir)
    saved = load_file(str(model_dir / "model.safetensors"))
    loaded = model.network.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)
    card = model.card
    assert card["labels"] == {"background": 0, "liver": 1, "spleen": 2}
    assert card["spacing_mm"] == [2.0, 2.0, 3.0] and card["orientation"] == "RAS" and card["patch_size"] == [16, 16, 16]
    assert card["intensity"] == {"preset": "ct", "window_hu": [-100.0, 200.0], "mean_hu": None, "std_hu": None}
    assert card["network"]["name"] == "UNet" and card["medseg_version"] == medseg.__version__
    assert card["validation"]["dice"] == {"liver": 0.5}
    assert card["weights_sha256"] == sha256_file(model_dir / "model.safetensors")
    assert card["n_parameters"] == sum(p.numel() for p in model.network.parameters())
    assert model.config.name == "tiny" and model.labels == card["labels"]
    assert len(model.fingerprint()) == 16
    assert medseg.load_model(model_dir / CARD_NAME).fingerprint() == model.fingerprint()  # stable across loads


def test_fingerprint_changes_with_weights(model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    cfg = _config()
    save_model_dir(tmp_path / "other", build_network(cfg).state_dict(), cfg, validation={"dice": {"liver": 0.5}})
    assert load_model(tmp_path / "other").fingerprint() != load_model(model_dir).fingerprint()


def test_plain_state_dict_pt_is_accepted(model_dir: Path) -> None:
    net = load_model(model_dir).network
    torch.save(net.state_dict(), model_dir / "model.pt")
    card = json.loads((model_dir / CARD_NAME).read_text())
    card.update(weights_file="model.pt", weights_sha256=sha256_file(model_dir / "model.pt"))
    (model_dir / CARD_NAME).write_text(json.dumps(card))
    (model_dir / "model.safetensors").unlink()
    assert load_model(model_dir).network.state_dict().keys() == net.state_dict().keys()


def test_pickled_module_is_refused(model_dir: Path) -> None:
    net = load_model(model_dir).network
    torch.save(net, model_dir / "model.pt")  # a whole pickled nn.Module: executing it could run any code
    card = json.loads((model_dir / CARD_NAME).read_text())
    card.update(weights_file="model.pt", weights_sha256=sha256_file(model_dir / "model.pt"))
    (model_dir / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="refusing to load a pickled object") as info:
        load_model(model_dir)
    assert "model.pt" in str(info.value)


def test_missing_invalid_or_mismatched_card_is_refused(model_dir: Path, tmp_path: Path) -> None:
    card_path = model_dir / CARD_NAME
    good = json.loads(card_path.read_text())

    card_path.unlink()
    with pytest.raises(ModelError, match=r"model_card\.json is missing"):
        load_model(model_dir)

    card_path.write_text("{not json")
    with pytest.raises(ModelError, match=r"model card is not valid JSON .* at line 1, column 2"):
        load_model(model_dir)

    card_path.write_text(json.dumps({**good, "network": {"name": "ResNet"}}))
    with pytest.raises(ModelError, match=r"invalid model card: network\.name"):
        load_model(model_dir)

    unbuildable = {"name": "UNet", "params": {"channels": [4, 8, 16], "strides": [2]}}  # one stride too few
    card_path.write_text(json.dumps({**good, "network": unbuildable}))
    with pytest.raises(ModelError, match=r"invalid model card: network\.params rejected by monai UNet"):
        load_model(model_dir)

    card_path.write_text(json.dumps({**good, "weights_sha256": "0" * 64}))
    with pytest.raises(ModelError, match="SHA-256 differs"):
        load_model(model_dir)

    # a card describing another network (more channels) than the weights hold
    other = {**good, "network": {"name": "UNet", "params": {"channels": [8, 16], "strides": [2]}}}
    card_path.write_text(json.dumps(other))
    with pytest.raises(ModelError, match=r"weights do not match the network.*shape mismatch"):
        load_model(model_dir)

    with pytest.raises(ModelError, match="no such model directory"):
        load_model(tmp_path / "nowhere")


def test_segment_refuses_wrong_dims_and_tta_without_mirroring(model_dir: Path) -> None:
    model = load_model(model_dir)
    with pytest.raises(ModelError, match="3D but the image is 2D"):
        model.segment(medseg.Image(np.zeros((20, 20), np.int16)))
    with pytest.raises(ModelError, match="without mirroring"):
        model.segment(medseg.Image(np.zeros((20, 20, 20), np.int16)), tta=True)


# ---- MONAI bundle import ------------------------------------------------------------------
def _write_bundle(
    root: Path, net: torch.nn.Module, *, preprocessing_extra: list | None = None, network_target: str = "UNet"
) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    inference = {
        "imports": ["$import torch"],
        "device": "$torch.device('cpu')",
        "roi": [16, 16, 16],
        "network_def": {
            "_target_": network_target,
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 3,
            "channels": [4, 8],
            "strides": [2],
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 3.0], "mode": "bilinear"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -100,
                    "a_max": 200,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
                *(preprocessing_extra or []),
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi", "sw_batch_size": 2, "overlap": 0.5},
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    meta = {
        "name": "toy bundle",
        "network_data_format": {"outputs": {"pred": {"channel_def": {"0": "background", "1": "Liver", "2": "spleen"}}}},
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def _ct_volume(path: Path) -> Path:
    rng = np.random.default_rng(3)
    shape = (30, 26, 14)
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    vol = np.where(np.linalg.norm((g - [12, 13, 7]) * [1.2, 1.2, 2.5], axis=-1) < 8, 120.0, -40.0) + rng.normal(
        0, 25, shape
    )
    affine = np.array(
        [[-1.1, 0, 0, 40.0], [0, 1.3, 0, -20.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]]
    )  # not RAS-ordered storage
    nib.save(nib.Nifti1Image(vol.astype(np.int16), affine), path)
    return path


def test_bundle_import_matches_plain_monai_pipeline(tmp_path: Path) -> None:
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        Invertd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    torch.manual_seed(0)
    cfg = _config()
    net = build_network(cfg).eval()
    bundle = _write_bundle(tmp_path / "bundle", net)
    scan = _ct_volume(tmp_path / "scan.nii.gz")

    model = load_model(bundle)
    assert model.labels == {"background": 0, "liver": 1, "spleen": 2}
    assert model.card["training"]["how"] == "imported from a MONAI bundle"
    image = medseg.load(scan)
    ours = model.segment(image)
    assert ours.same_grid(image)

    # the same bundle run the plain MONAI way: LoadImaged ... sliding window ... Invertd
    pre = Compose(
        [
            LoadImaged("image", image_only=False),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=[2.0, 2.0, 3.0], mode="bilinear"),
            ScaleIntensityRanged("image", a_min=-100, a_max=200, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped("image"),
        ]
    )
    data = pre({"image": str(scan)})
    with torch.no_grad():
        logits = SlidingWindowInferer(roi_size=[16, 16, 16], sw_batch_size=2, overlap=0.5)(data["image"][None], net)
    data["pred"] = torch.softmax(logits, 1)[0]
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(data)
    reference = torch.argmax(torch.as_tensor(inv["pred"]), 0).numpy()
    # MONAI's array is in the NIfTI's storage order, as is medseg's after loading this file
    assert reference.shape == ours.array.shape
    agreement = float(np.mean(reference == ours.array))
    assert agreement > 0.999, agreement


def test_bundle_with_code_or_unknown_steps_is_refused(tmp_path: Path) -> None:
    net = build_network(_config())
    b1 = _write_bundle(
        tmp_path / "b1",
        net,
        preprocessing_extra=[{"_target_": "CropForegroundd", "keys": "image", "source_key": "image"}],
    )
    with pytest.raises(ModelError, match=r"CropForegroundd.*cannot be reproduced"):
        load_model(b1)
    b2 = _write_bundle(tmp_path / "b2", net, network_target="monai.networks.nets.SwinUNETR")
    with pytest.raises(ModelError, match="'SwinUNETR' is not one of UNet"):
        load_model(b2)
    b3 = _write_bundle(
        tmp_path / "b3", net, preprocessing_extra=[{"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x"}]
    )
    with pytest.raises(ModelError, match="never evaluates bundle code"):
        load_model(b3)
