"""Real nnU-Net v2 results folders made with nnU-Net's own tools, for the tests and the benchmark.

    python tests/nnunet_build.py [WORK_DIR [SHARED_DATA]]

needs ``nnunetv2`` (a test-only dependency). In ``WORK_DIR`` (default
``/tmp/medseg_nnunet_build``) it writes nnU-Net's raw and preprocessed
datasets, plans and preprocesses them with nnU-Net (fingerprint, the default
``ExperimentPlanner``, a copy of the plans ``nnUNetPlans_tiny`` with
``features_per_stage`` shrunk so a model is ~0.7 MB), and trains with a
subclass of nnU-Net's ``nnUNetTrainer`` on the CPU (same class name, so
``nnUNetv2_predict`` predicts the folders with nnU-Net's own class; one epoch
of 250 iterations per CT fold, 60 for the X-ray model). The results folders
(``dataset.json``, ``plans.json``, ``fold_*/checkpoint_final.pth``, fold 0's
``checkpoint_best.pth`` of the CT model, the training logs) are copied into
``tests/data/nnunet/`` and committed (about 3 MB):

* ``Dataset501_CTTiny/nnUNetTrainer__nnUNetPlans_tiny__3d_fullres``, folds 0 and 1:
  the real CTs of ``shared/data`` (the 3 mm CT, the DICOM series, a flipped and
  a cropped copy) with 4 organs of their reference labels, CTNormalization;
* ``Dataset502_XrayTiny/nnUNetTrainer__nnUNetPlans_tiny__2d``, fold 0: the 14 JSRT
  radiographs at 256 px as PNG (NaturalImage2DIO), 3 labels, ZScoreNormalization.

The test fixture (``tests/test_nnunet.py``) uses :func:`make_inputs` (cases to
predict) and :func:`make_variants`: further folders made from the CT one with
nnU-Net's own network factory and nnU-Net's checkpoint layout (He-initialised
weights): a cascade (``3d_lowres`` + ``3d_cascade_fullres``), region-based
labels, an ignore label, ``NibabelIOWithReorient`` with masked ZScore,
``ResidualEncoderUNet`` with RescaleTo01, the pre-2.3 plans format with
NoNormalization and two folds, a ``2d`` configuration of the CT dataset.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else "/tmp/medseg_nnunet_build").resolve()
SHARED = (Path(sys.argv[2]) if __name__ == "__main__" and len(sys.argv) > 2
          else Path(__file__).resolve().parents[2] / "shared" / "data").resolve()  # fmt: skip
CT_LABELS = {"spleen": 1, "liver": 5, "stomach": 6, "aorta": 52}  # TotalSegmentator v2 "total" values
CT_ITERATIONS = 250  # one epoch of nnU-Net's default length
XRAY_ITERATIONS = 60
VAL_ITERATIONS = 2


def _env() -> None:
    os.environ["nnUNet_raw"] = str(OUT / "raw")
    os.environ["nnUNet_preprocessed"] = str(OUT / "preprocessed")
    os.environ["nnUNet_results"] = str(OUT / "results")
    os.environ["nnUNet_n_proc_DA"] = "0"
    os.environ["nnUNet_compile"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "2")


def _log(msg: str) -> None:
    print(f"[nnunet_build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- raw datasets ---------------------------------------------------------------------------------------------------
def _ct_labels(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(labels.shape, np.uint8)
    for i, value in enumerate(CT_LABELS.values(), start=1):
        out[labels == value] = i
    return out


def make_ct_raw() -> Path:
    import medseg

    raw = OUT / "raw" / "Dataset501_CTTiny"
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    ct3 = medseg.load(SHARED / "ct_3mm.nii.gz")
    lab3 = medseg.load(SHARED / "ct_3mm_reference_labels.nii.gz")
    dicom = medseg.load(SHARED / "ct_abdomen_dicom")
    lab_d = medseg.resample_to(medseg.load(SHARED / "ct_abdomen_dicom_reference_labels.nii.gz"), dicom)
    cases = {
        "ct000": (ct3, _ct_labels(lab3.array)),
        "ct001": (dicom, _ct_labels(lab_d.array)),
        "ct002": (ct3.with_array(ct3.array[::-1].copy()), _ct_labels(lab3.array[::-1])),
        "ct003": (ct3.with_array(ct3.array[:, :, 4:26].copy()), _ct_labels(lab3.array[:, :, 4:26])),
    }
    for case, (image, labels) in cases.items():
        medseg.save(image, raw / "imagesTr" / f"{case}_0000.nii.gz")
        medseg.save(image.with_labels(labels), raw / "labelsTr" / f"{case}.nii.gz")
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(CT_LABELS)}},
               "numTraining": len(cases), "file_ending": ".nii.gz", "name": "CTTiny"}  # fmt: skip
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return raw


def make_inputs(out: Path, shared: Path = SHARED) -> dict[str, Path]:
    """The cases to predict, named as nnU-Net wants, from ``shared/data``: ``{"ct": folder, "xray": folder}``.

    CT: the DICOM series' NIfTI conversion (another spacing than the model's),
    an anisotropic volume (3 x 3 x 12 mm: nnU-Net resamples its z axis on its
    own), the 3 mm CT with a zero border (cropped to the nonzero region).
    X-ray: two JSRT radiographs at 256 px and the two chest radiographs (JPEG,
    here as PNG copies of the decoded pixels for nnU-Net).
    """
    import medseg
    from PIL import Image as PILImage

    ct_dir, xray_dir = out / "ct", out / "xray"
    ct_dir.mkdir(parents=True, exist_ok=True)
    xray_dir.mkdir(parents=True, exist_ok=True)
    medseg.save(medseg.load(shared / "ct_abdomen_dicom"), ct_dir / "abdomen_0000.nii.gz")
    long = medseg.load(shared / "ct_3mm_long.nii.gz")
    aniso = medseg.Image(long.array[10:110, 5:95, 40:88:4].copy(), spacing=(3.0, 3.0, 12.0), origin=long.origin,
                         direction=long.direction)  # fmt: skip
    medseg.save(aniso, ct_dir / "aniso_0000.nii.gz")
    ct3 = medseg.load(shared / "ct_3mm.nii.gz")
    border = ct3.array.copy()
    border[:12] = 0
    border[-7:] = 0
    medseg.save(ct3.with_array(border), ct_dir / "border_0000.nii.gz")
    jsrt = shared / "xray_jsrt" / "images"
    for name in ("JPCLN001", "JPCNN002"):
        PILImage.open(jsrt / f"{name}.png").convert("L").resize((256, 256), PILImage.BILINEAR).save(
            xray_dir / f"{name}_0000.png")
    for i in (1, 2):
        PILImage.open(shared / "xray_chest" / f"{i}.jpg").convert("L").save(xray_dir / f"chest{i}_0000.png")
    return {"ct": ct_dir, "xray": xray_dir}


def make_xray_raw() -> Path:
    from PIL import Image as PILImage

    raw = OUT / "raw" / "Dataset502_XrayTiny"
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    jsrt = SHARED / "xray_jsrt"
    names = sorted(p.stem for p in (jsrt / "images").glob("*.png"))
    for name in names:
        img = PILImage.open(jsrt / "images" / f"{name}.png").convert("L").resize((256, 256), PILImage.BILINEAR)
        lab = PILImage.open(jsrt / "labels" / f"{name}.png").resize((256, 256), PILImage.NEAREST)
        img.save(raw / "imagesTr" / f"{name}_0000.png")
        lab.save(raw / "labelsTr" / f"{name}.png")
    dataset = {"channel_names": {"0": "xray"}, "labels": {"background": 0, "right_lung": 1, "left_lung": 2,
                                                          "heart": 3},
               "numTraining": len(names), "file_ending": ".png", "name": "XrayTiny"}  # fmt: skip
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return raw


# ---- plans ----------------------------------------------------------------------------------------------------------
def _tiny_arch(arch: dict, dim: int, n_stages: int, features: list[int]) -> dict:
    arch = copy.deepcopy(arch)
    kw = arch["arch_kwargs"]
    kw["n_stages"] = n_stages
    kw["features_per_stage"] = features
    kw["kernel_sizes"] = [[3] * dim] * n_stages
    kw["strides"] = [[1] * dim] + [[2] * dim] * (n_stages - 1)
    key = "n_conv_per_stage" if "n_conv_per_stage" in kw else "n_blocks_per_stage"
    kw[key] = [2] * n_stages
    kw["n_conv_per_stage_decoder"] = [1] * (n_stages - 1)
    return arch


def make_tiny_plans(dataset: str, configs: dict[str, dict]) -> dict:
    pre = OUT / "preprocessed" / dataset
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = "nnUNetPlans_tiny"
    for name, change in configs.items():
        base = plans["configurations"].get(change.pop("base", name))
        conf = copy.deepcopy(base) if base is not None else {}
        arch = change.pop("arch")
        conf.update(change)
        if arch is not None:
            conf["architecture"] = _tiny_arch(conf["architecture"], len(conf["patch_size"]), *arch)
        plans["configurations"][name] = conf
    (pre / "nnUNetPlans_tiny.json").write_text(json.dumps(plans, indent=2))
    return plans


def plan(dataset_id: int, dataset: str, configs: dict[str, dict], preprocess_configs: tuple[str, ...]) -> dict:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner sets torch's threads to it (0 fails there)
    extract_fingerprints([dataset_id], num_processes=2, check_dataset_integrity=True, show_progress_bar=False)
    plan_experiments([dataset_id])
    plans = make_tiny_plans(dataset, configs)
    preprocess([dataset_id], plans_identifier="nnUNetPlans_tiny", configurations=preprocess_configs,
               num_processes=[2] * len(preprocess_configs), show_progress_bar=False)
    return plans


# ---- training -------------------------------------------------------------------------------------------------------
def _trainer_class():
    import torch
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as base

    class nnUNetTrainer(base.nnUNetTrainer):  # noqa: N801 -- nnU-Net's class name
        """nnU-Net's trainer cut to one short epoch: the same network, so ``nnUNetv2_predict`` predicts it with
        nnU-Net's own ``nnUNetTrainer`` class (found without importing the trainer variants, some of which need
        torchvision)."""

        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):  # noqa: B008
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 1
            self.num_val_iterations_per_epoch = VAL_ITERATIONS
            self.oversample_foreground_percent = 0.66

    return nnUNetTrainer


def train(dataset: str, configuration: str, fold: int, iterations: int) -> Path:
    import torch

    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in this process
    torch.manual_seed(fold)
    pre = OUT / "preprocessed" / dataset
    plans = json.loads((pre / "nnUNetPlans_tiny.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = False  # what nnU-Net's run_training adds (the trainer pops it)
    trainer = _trainer_class()(plans, configuration, fold, dataset_json, torch.device("cpu"))
    trainer.num_iterations_per_epoch = iterations
    trainer.run_training()
    return Path(trainer.output_folder).parent


def write_splits(dataset: str, cases: list[str], folds: int) -> None:
    splits = []
    for f in range(folds):
        val = [cases[(len(cases) - 1 - f) % len(cases)]]
        splits.append({"train": [c for c in cases if c not in val], "val": val})
    (OUT / "preprocessed" / dataset / "splits_final.json").write_text(json.dumps(splits, indent=2))


# ---- variants (nnU-Net's network factory, nnU-Net's checkpoint layout) ----------------------------------------------
def _save_variant(folder: Path, plans: dict, dataset_json: dict, configuration: str, in_channels: int,
                  trainer: str = "nnUNetTrainer", seed: int = 0, folds: tuple[str, ...] = ("0",)) -> Path:
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    cm = PlansManager(plans).get_configuration(configuration)
    heads = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order")).num_segmentation_heads
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, in_channels, heads, allow_init=True,
                                     deep_supervision=True)
        dim = len(cm.patch_size)
        checkpoint = {
            "network_weights": net.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.1)], "ema_fg_dice": [np.float64(0.1)]},
            "_best_ema": np.float64(0.1), "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": configuration, "fold": int(fold) if fold.isdigit() else fold,
                          "dataset_json": dataset_json, "device": torch.device("cpu")},
            "trainer_name": trainer, "inference_allowed_mirroring_axes": (0, 1) if dim == 2 else (0, 1, 2),
        }  # fmt: skip
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def make_variants(root: Path, ct_folder: Path) -> dict[str, str]:
    """The variant folders under ``root`` (see the module docstring): ``{name: folder}``."""
    base_plans = json.loads((ct_folder / "plans.json").read_text())
    base_ds = json.loads((ct_folder / "dataset.json").read_text())
    out = {}
    full = base_plans["configurations"]["3d_fullres"]

    # the cascade: 3d_lowres feeding 3d_cascade_fullres, in one dataset folder
    plans = copy.deepcopy(base_plans)
    plans["configurations"]["3d_lowres"] = {**copy.deepcopy(full), "spacing": [6.0, 6.0, 6.0],
                                            "patch_size": [16, 32, 32], "next_stage": ["3d_cascade_fullres"],
                                            "data_identifier": "nnUNetPlans_3d_lowres"}  # fmt: skip
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    dataset_dir = root / "Dataset601_Cascade"
    _save_variant(dataset_dir / "nnUNetTrainer__nnUNetPlans_tiny__3d_lowres", plans, base_ds, "3d_lowres", 1, seed=1)
    out["cascade"] = str(_save_variant(dataset_dir / "nnUNetTrainer__nnUNetPlans_tiny__3d_cascade_fullres", plans,
                                       base_ds, "3d_cascade_fullres", 1 + 4, seed=2))  # fmt: skip
    out["lowres"] = str(dataset_dir / "nnUNetTrainer__nnUNetPlans_tiny__3d_lowres")

    # region-based labels with an ignore label
    ds = copy.deepcopy(base_ds)
    ds["labels"] = {"background": 0, "organs": [1, 2, 3, 4], "liver_or_stomach": [2, 3], "stomach": 3, "ignore": 5}
    ds["regions_class_order"] = [1, 2, 3]
    out["regions"] = str(_save_variant(root / "Dataset602_Regions" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres",
                                       base_plans, ds, "3d_fullres", 1, seed=3))  # fmt: skip
    # labels with an ignore label (not region-based)
    ds = copy.deepcopy(base_ds)
    ds["labels"]["ignore"] = 5
    out["ignore"] = str(_save_variant(root / "Dataset603_Ignore" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres",
                                      base_plans, ds, "3d_fullres", 1, seed=4))  # fmt: skip

    # NibabelIOWithReorient, and a ZScore scheme with use_mask_for_norm
    plans = copy.deepcopy(base_plans)
    plans["image_reader_writer"] = "NibabelIOWithReorient"
    conf = plans["configurations"]["3d_fullres"]
    conf["normalization_schemes"], conf["use_mask_for_norm"] = ["ZScoreNormalization"], [True]
    out["reorient"] = str(_save_variant(root / "Dataset604_Reorient" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres",
                                        plans, base_ds, "3d_fullres", 1, seed=5))  # fmt: skip

    # ResidualEncoderUNet, RescaleTo01
    plans = copy.deepcopy(base_plans)
    conf = plans["configurations"]["3d_fullres"]
    kw = conf["architecture"]["arch_kwargs"]
    conf["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    kw["n_blocks_per_stage"] = kw.pop("n_conv_per_stage")
    conf["normalization_schemes"] = ["RescaleTo01Normalization"]
    out["resenc"] = str(_save_variant(root / "Dataset605_ResEnc" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres",
                                      plans, base_ds, "3d_fullres", 1, seed=6))  # fmt: skip

    # the pre-2.3 plans format (UNet_class_name ...), NoNormalization, two folds
    plans = copy.deepcopy(base_plans)
    conf = plans["configurations"]["3d_fullres"]
    kw = conf.pop("architecture")["arch_kwargs"]
    conf.update({"UNet_class_name": "PlainConvUNet", "UNet_base_num_features": kw["features_per_stage"][0],
                 "unet_max_num_features": kw["features_per_stage"][-1],
                 "n_conv_per_stage_encoder": kw["n_conv_per_stage"],
                 "n_conv_per_stage_decoder": kw["n_conv_per_stage_decoder"],
                 "num_pool_per_axis": [len(kw["strides"]) - 1] * 3, "pool_op_kernel_sizes": kw["strides"],
                 "conv_kernel_sizes": kw["kernel_sizes"], "normalization_schemes": ["NoNormalization"]})  # fmt: skip
    out["oldplans"] = str(_save_variant(root / "Dataset606_OldPlans" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres",
                                        plans, base_ds, "3d_fullres", 1, seed=7, folds=("0", "1")))  # fmt: skip

    # a 2d configuration of the CT dataset (slice by slice, in-plane resampling)
    plans = copy.deepcopy(base_plans)
    conf2d = plans["configurations"].get("2d")
    if conf2d is not None:
        conf2d["patch_size"] = [48, 64]
        conf2d["architecture"] = _tiny_arch(conf2d["architecture"], 2, 4, [4, 8, 16, 32])
        out["ct2d"] = str(_save_variant(root / "Dataset607_CT2d" / "nnUNetTrainer__nnUNetPlans_tiny__2d", plans,
                                        base_ds, "2d", 1, seed=8))  # fmt: skip
    return out


# ---- main -----------------------------------------------------------------------------------------------------------
MODELS = Path(__file__).resolve().parent / "data" / "nnunet"
KEEP = ("dataset.json", "plans.json")


def _copy_results(folder: Path, best_folds: tuple[str, ...] = ()) -> Path:
    """``folder`` into ``tests/data/nnunet/<dataset>/<name>``: the json files, the final checkpoints, the logs."""
    dest = MODELS / folder.parent.name / folder.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEEP:
        shutil.copy(folder / name, dest / name)
    for fold in sorted(folder.glob("fold_*")):
        (dest / fold.name).mkdir()
        shutil.copy(fold / "checkpoint_final.pth", dest / fold.name / "checkpoint_final.pth")
        if fold.name.removeprefix("fold_") in best_folds:
            shutil.copy(fold / "checkpoint_best.pth", dest / fold.name / "checkpoint_best.pth")
        for log in fold.glob("training_log_*.txt"):
            shutil.copy(log, dest / fold.name / "training_log.txt")
    return dest


def main() -> None:
    """Plan, preprocess and train in ``OUT`` (a scratch folder), then copy the results folders into tests/data/nnunet."""
    _env()
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    make_ct_raw()
    make_xray_raw()
    _log(f"raw datasets ({time.time() - t0:.0f} s)")
    plan(501, "Dataset501_CTTiny", {"3d_fullres": {"patch_size": [32, 48, 64], "batch_size": 2,
                                                   "arch": (4, [4, 8, 16, 32])}}, ("3d_fullres",))  # fmt: skip
    write_splits("Dataset501_CTTiny", ["ct000", "ct001", "ct002", "ct003"], 2)
    plan(502, "Dataset502_XrayTiny", {"2d": {"patch_size": [128, 128], "batch_size": 4,
                                             "arch": (5, [4, 8, 16, 32, 32])}}, ("2d",))  # fmt: skip
    names = sorted(p.name.removesuffix("_0000.png") for p in (OUT / "raw" / "Dataset502_XrayTiny" / "imagesTr").iterdir())
    write_splits("Dataset502_XrayTiny", names, 1)
    _log(f"planned and preprocessed ({time.time() - t0:.0f} s)")
    for fold in (0, 1):
        train("Dataset501_CTTiny", "3d_fullres", fold, CT_ITERATIONS)
        _log(f"CT fold {fold} trained ({time.time() - t0:.0f} s)")
    train("Dataset502_XrayTiny", "2d", 0, XRAY_ITERATIONS)
    _log(f"X-ray fold 0 trained ({time.time() - t0:.0f} s)")
    results = OUT / "results"
    ct = _copy_results(results / "Dataset501_CTTiny" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres", ("0",))
    xray = _copy_results(results / "Dataset502_XrayTiny" / "nnUNetTrainer__nnUNetPlans_tiny__2d")
    _log(f"done in {time.time() - t0:.0f} s: {ct}, {xray}")


if __name__ == "__main__":
    main()
