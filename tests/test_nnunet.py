"""nnU-Net v2 results folders as Segmenters: the same labels as ``nnUNetv2_predict``, safe loading, clear errors.

The models are real nnU-Net folders in ``tests/data/nnunet`` (planned,
preprocessed and trained by nnU-Net's own tools, see ``tests/nnunet_build.py``);
the session fixtures predict real scans of ``shared/data`` with
``nnUNetv2_predict`` (nnunetv2 is a test-only dependency) and with medseg, and
derive further folders (cascade, regions, readers, architectures, old plans)
with nnU-Net's own network factory, predicted in-process by nnU-Net's
``nnUNetPredictor``. Acceptance: per-label Dice >= 0.999 and >= 99.9 % of the
voxels identical for every case.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import medseg
from medseg.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "tests" / "data" / "nnunet"
CT_MODEL = MODELS / "Dataset501_CTTiny" / "nnUNetTrainer__nnUNetPlans_tiny__3d_fullres"
XRAY_MODEL = MODELS / "Dataset502_XrayTiny" / "nnUNetTrainer__nnUNetPlans_tiny__2d"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("nnunet")]


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, dict[int, float]]:
    """Fraction of identical voxels and per-label Dice (labels present in either)."""
    assert ours.shape == theirs.shape
    dice = {}
    for value in sorted(set(np.unique(ours)) | set(np.unique(theirs))):
        if value == 0:
            continue
        a, b = ours == value, theirs == value
        dice[int(value)] = float(2 * (a & b).sum() / (a.sum() + b.sum()))
    return float((ours == theirs).mean()), dice


def _assert_agrees(name: str, ours: np.ndarray, theirs: np.ndarray, report: dict | None = None) -> None:
    same, dice = _agreement(ours, theirs.astype(ours.dtype))
    if report is not None:
        report[name] = {"identical": same, "dice": dice, "labels": sorted(dice)}
    assert same >= 0.999, f"{name}: only {same:.5f} of the voxels identical"
    assert all(d >= 0.999 for d in dice.values()), f"{name}: Dice {dice}"


def _nnunet_env(results: Path) -> dict[str, str]:
    return {**os.environ, "nnUNet_results": str(results), "nnUNet_raw": str(results / "_raw"),
            "nnUNet_preprocessed": str(results / "_pre"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def nnunet_predict(model: Path, inputs: Path, out: Path, *extra: str) -> float:
    """``nnUNetv2_predict`` of ``inputs`` with the results folder ``model`` (sequential: no worker processes)."""
    dataset = model.parent.name
    trainer, plans, config = model.name.split("__")
    args = [str(BIN / "nnUNetv2_predict"), "-i", str(inputs), "-o", str(out), "-d", dataset, "-tr", trainer, "-p",
            plans, "-c", config, "-device", "cpu", "--disable_progress_bar", "-npp", "0", "-nps", "0", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=_nnunet_env(model.parents[1]), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return time.perf_counter() - t0


# ---- session fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def nnunetv2():
    return pytest.importorskip("nnunetv2", reason="nnunetv2 is a test-only dependency (pip install '.[test]')")


@pytest.fixture(scope="session")
def build_tools():
    sys.path.insert(0, str(REPO / "tests"))
    import nnunet_build

    return nnunet_build


@pytest.fixture(scope="session")
def nnunet_inputs(shared_data, build_tools, tmp_path_factory) -> dict[str, Path]:
    return build_tools.make_inputs(tmp_path_factory.mktemp("nnunet_inputs"), shared_data)


@pytest.fixture(scope="session")
def nnunet_runs(nnunetv2, nnunet_inputs, tmp_path_factory) -> dict[str, Path]:
    """``nnUNetv2_predict`` outputs: CT fold 0 mirrored, CT fold 0 unmirrored, CT folds 0+1, X-ray mirrored."""
    root = tmp_path_factory.mktemp("nnunet_runs")
    subsets = {"ct_mirror": ["border"], "ct_nomirror": ["abdomen", "aniso"], "ct_folds": ["border"]}
    runs = {}
    for run, cases in subsets.items():
        inp = root / f"in_{run}"
        inp.mkdir()
        for case in cases:
            shutil.copy(nnunet_inputs["ct"] / f"{case}_0000.nii.gz", inp)
        extra = {"ct_mirror": ["-f", "0"], "ct_nomirror": ["-f", "0", "--disable_tta"],
                 "ct_folds": ["-f", "0", "1", "--disable_tta"]}[run]  # fmt: skip
        nnunet_predict(CT_MODEL, inp, root / run, *extra)
        runs[run] = root / run
    nnunet_predict(XRAY_MODEL, nnunet_inputs["xray"], root / "xray", "-f", "0")
    runs["xray"] = root / "xray"
    return runs


@pytest.fixture(scope="session")
def variants(nnunetv2, build_tools, tmp_path_factory) -> dict[str, Path]:
    with redirect_stdout(io.StringIO()):
        made = build_tools.make_variants(tmp_path_factory.mktemp("nnunet_variants"), CT_MODEL)
    return {k: Path(v) for k, v in made.items()}


@pytest.fixture(scope="session")
def acceptance() -> dict:
    """Figures of the comparisons, printed at the end of the session (``-s`` shows them)."""
    report: dict = {}
    yield report
    if report:
        lines = [f"  {k}: identical {v['identical'] * 100:.4f} %, Dice {v['dice']}" for k, v in sorted(report.items())]
        print("\nnnU-Net agreement:\n" + "\n".join(lines))


# ---- the same labels as nnUNetv2_predict -------------------------------------------------------------------------
@pytest.mark.parametrize(("run", "folds", "mirroring", "cases"), [
    ("ct_mirror", "0", True, ["border"]),
    ("ct_nomirror", "0", False, ["abdomen", "aniso"]),
    ("ct_folds", "0 1", False, ["border"]),
])  # fmt: skip
def test_ct_3d_fullres_matches_nnunet(nnunet_runs, nnunet_inputs, acceptance, run, folds, mirroring, cases):
    seg = medseg.load_segmenter(CT_MODEL, folds=folds, mirroring=mirroring, device="cpu")
    assert seg.folds == folds.split()
    assert (seg.mirror_axes is not None) == mirroring
    for case in cases:
        image = medseg.load(nnunet_inputs["ct"] / f"{case}_0000.nii.gz")
        labels = seg.segment(image)
        theirs = medseg.load(nnunet_runs[run] / f"{case}.nii.gz")
        assert labels.same_grid(theirs) and labels.label_names == {1: "spleen", 2: "liver", 3: "stomach", 4: "aorta"}
        _assert_agrees(f"CT 3d_fullres {run} {case}", labels.array, theirs.array, acceptance)
        assert len(np.unique(labels.array)) > 1, "the model predicts background only: a weak test"


def test_xray_2d_matches_nnunet(nnunet_runs, nnunet_inputs, acceptance, shared_data):
    seg = medseg.load_segmenter(XRAY_MODEL, device="cpu")
    assert seg.spatial_dims == 2 and seg.in_channels == 1
    for file in sorted(nnunet_inputs["xray"].iterdir()):
        labels = seg.segment(medseg.load(file))
        theirs = medseg.load(nnunet_runs["xray"] / file.name.replace("_0000", ""))
        _assert_agrees(f"X-ray 2d {file.stem}", labels.array, theirs.array, acceptance)
    # the JPEG itself gives the labels nnU-Net gives its PNG copy
    jpeg = seg.segment(medseg.load(shared_data / "xray_chest" / "1.jpg"))
    assert np.array_equal(jpeg.array, medseg.load(nnunet_runs["xray"] / "chest1.png").array)


def test_dicom_series_equals_its_nifti_conversion(nnunet_runs, nnunet_inputs, shared_data):
    seg = medseg.load_segmenter(CT_MODEL, folds="0", mirroring=False, device="cpu")
    series = medseg.load(shared_data / "ct_abdomen_dicom")
    nifti = medseg.load(nnunet_inputs["ct"] / "abdomen_0000.nii.gz")
    from_series, from_nifti = seg.segment(series), seg.segment(nifti)
    assert from_series.same_grid(series) and from_series.same_grid(from_nifti)
    assert np.array_equal(from_series.array, from_nifti.array)
    theirs = medseg.load(nnunet_runs["ct_nomirror"] / "abdomen.nii.gz")
    assert np.mean(from_series.array == theirs.array) >= 0.999


# ---- variants, against nnU-Net's predictor in-process ----------------------------------------------------------------
def _nnunet_in_process(folder: Path, files: list[Path], out: Path, *, folds=("0",), prev: Path | None = None,
                       mirroring: bool = True) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    out.mkdir(parents=True, exist_ok=True)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=mirroring, device=torch.device("cpu"),
                                allow_tqdm=False)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        predictor.initialize_from_trained_model_folder(str(folder), folds, "checkpoint_final.pth")
        predictor.predict_from_files_sequential([[str(f)] for f in files], str(out), False, True,
                                                None if prev is None else str(prev))


@pytest.mark.parametrize("variant", ["regions", "ignore", "reorient", "resenc", "oldplans", "ct2d"])
def test_variants_match_nnunet(variants, nnunet_inputs, tmp_path, acceptance, variant):
    folder = variants[variant]
    folds = ("0", "1") if variant == "oldplans" else ("0",)
    case = nnunet_inputs["ct"] / "border_0000.nii.gz"
    _nnunet_in_process(folder, [case], tmp_path, folds=[int(f) for f in folds], mirroring=variant != "ct2d")
    theirs = medseg.load(tmp_path / "border.nii.gz")
    seg = medseg.load_segmenter(folder, mirroring=variant != "ct2d", device="cpu")
    assert seg.folds == list(folds)
    labels = seg.segment(medseg.load(case))
    assert labels.same_grid(theirs)
    _assert_agrees(f"variant {variant}", labels.array, theirs.array, acceptance)
    if variant == "regions":
        assert labels.label_names == {1: "organs", 2: "liver_or_stomach", 3: "stomach"}
    if variant == "ignore":
        assert 5 not in np.unique(labels.array) and 5 not in labels.label_names


def test_cascade_matches_nnunet(variants, nnunet_inputs, tmp_path, acceptance):
    case = nnunet_inputs["ct"] / "border_0000.nii.gz"
    _nnunet_in_process(variants["lowres"], [case], tmp_path / "lowres", mirroring=False)
    _nnunet_in_process(variants["cascade"], [case], tmp_path / "full", prev=tmp_path / "lowres", mirroring=False)
    seg = medseg.load_segmenter(variants["cascade"], mirroring=False, device="cpu")
    assert seg.previous is not None and seg.previous.configuration.name == "3d_lowres"
    image = medseg.load(case)
    low = seg.previous.segment(image)
    _assert_agrees("cascade 3d_lowres", low.array, medseg.load(tmp_path / "lowres" / "border.nii.gz").array,
                   acceptance)
    _assert_agrees("cascade 3d_cascade_fullres", seg.segment(image).array,
                   medseg.load(tmp_path / "full" / "border.nii.gz").array, acceptance)


# ---- pieces against nnU-Net's own functions ----------------------------------------------------------------------
def test_resampling_matches_nnunet(nnunetv2):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    from medseg.models.nnunet.resample import resample_to_shape

    rng = np.random.default_rng(0)
    cases = [((2, 9, 40, 33), (14, 23, 50), [3.0, 1.0, 1.0], [2.0, 1.7, 0.66], 3),  # no separate z
             ((1, 6, 30, 31), (20, 25, 31), [5.0, 1.0, 1.0], [1.5, 1.2, 1.0], 3),  # coarse z, separate
             ((3, 8, 20, 21), (8, 31, 9), [4.0, 0.8, 0.8], [4.0, 0.5, 1.9], 1),  # logits, in-plane only
             ((2, 12, 17, 19), (5, 40, 40), [1.0, 1.0, 1.0], [2.4, 0.4, 0.45], 1)]  # fmt: skip
    for shape, new, cur, tgt, order in cases:
        data = (rng.normal(size=shape) * 50).astype(np.float32)
        kwargs = {"is_seg": False, "order": order, "order_z": 0, "force_separate_z": None}
        theirs = resample_data_or_seg_to_shape(data, new, cur, tgt, **kwargs)
        ours = resample_to_shape(data, list(new), cur, tgt, "resample_data_or_seg_to_shape", kwargs)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    seg = rng.integers(-1, 4, size=(1, 7, 15, 16)).astype(np.float32)
    kwargs = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
    theirs = resample_data_or_seg_to_shape(seg, (7, 28, 9), [2.0, 1.0, 1.0], [2.0, 0.5, 1.8], **kwargs)
    ours = resample_to_shape(seg, [7, 28, 9], [2.0, 1.0, 1.0], [2.0, 0.5, 1.8], "resample_data_or_seg_to_shape", kwargs)
    assert np.mean(ours == theirs) >= 0.99


def test_sliding_window_pieces_match_nnunet(nnunetv2):
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    from medseg.models.nnunet.predict import gaussian_importance, pad_to_patch, sliding_window_steps

    for size, tile, step in [((110, 64, 200), (64, 64, 96), 0.5), ((32, 33), (32, 16), 0.25), ((7,), (5,), 1.0)]:
        assert sliding_window_steps(size, tile, step) == compute_steps_for_sliding_window(size, tile, step)
    for tile in [(32, 48, 64), (128, 128), (5, 7, 9)]:
        theirs = compute_gaussian(tile, 1 / 8, 10, device=torch.device("cpu"))
        assert torch.equal(gaussian_importance(tile, torch.device("cpu")), theirs)
    x = torch.rand(2, 5, 30, 41)
    theirs, sl = pad_nd_image(x, (8, 47, 40), "constant", {"value": 0}, True, None)
    ours, sl2 = pad_to_patch(x, (8, 47, 40))
    assert torch.equal(ours, theirs) and torch.equal(ours[sl2], x)


def test_reader_mappings_match_nnunet_readers(nnunetv2, nnunet_inputs, shared_data, tmp_path):
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO, NibabelIOWithReorient
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO, SimpleITKIOWithReorient

    from medseg.models.nnunet.reader import reader_mapping

    las = shared_data / "ct_abdomen_dicom_reference_labels.nii.gz"  # LAS: reorientation flips and keeps axes
    volumes = [nnunet_inputs["ct"] / "border_0000.nii.gz", las]
    for cls in (SimpleITKIO, NibabelIO, NibabelIOWithReorient, SimpleITKIOWithReorient):
        for file in volumes:
            with redirect_stdout(io.StringIO()):
                theirs, props = cls().read_images([str(file)])
            image = medseg.load(file)
            mapping = reader_mapping(cls.__name__, image)
            ours = mapping.forward(image.array, image.channel_axis)
            assert ours.shape == theirs.shape and np.array_equal(ours, theirs), (cls.__name__, file.name)
            np.testing.assert_allclose(mapping.spacing, props["spacing"], rtol=1e-5)
            assert np.array_equal(mapping.backward(ours[0]), image.array)
    png = nnunet_inputs["xray"] / "JPCLN001_0000.png"
    theirs, props = NaturalImage2DIO().read_images([str(png)])
    image = medseg.load(png)
    mapping = reader_mapping("NaturalImage2DIO", image)
    assert np.array_equal(mapping.forward(image.array, False), theirs) and mapping.spacing == (999.0, 1.0, 1.0)
    rgb = shared_data / "he_nuclei" / "cpm15_01.png"
    theirs, _ = NaturalImage2DIO().read_images([str(rgb)])
    image = medseg.load(rgb)
    assert np.array_equal(reader_mapping("NaturalImage2DIO", image).forward(image.array, image.channel_axis), theirs)
    theirs, props = SimpleITKIO().read_images([str(png)])
    mapping = reader_mapping("SimpleITKIO", image := medseg.load(png))
    assert np.array_equal(mapping.forward(image.array, False), theirs)
    np.testing.assert_allclose(mapping.spacing, props["spacing"])


# ---- safe loading -------------------------------------------------------------------------------------------------
class _WritesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def _copy_model(tmp_path: Path, model: Path = CT_MODEL) -> Path:
    dest = tmp_path / model.parent.name / model.name
    shutil.copytree(model, dest)
    return dest


def _load_ck(path: Path) -> dict:
    from medseg.models.nnunet.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    folder = _copy_model(tmp_path)
    marker = tmp_path / "pwned.txt"
    ck = _load_ck(folder / "fold_0" / "checkpoint_final.pth")
    ck["logging"] = {"trap": _WritesAFile(marker)}
    torch.save(ck, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: refusing to unpickle.*builtins\.exec"):
        medseg.load_segmenter(folder, folds="0")
    assert not marker.exists()
    from medseg.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(folder), str(REPO / "sample_data" / "ct_organs" / "imagesTs" / "case_006.nii.gz"),
              "--out", str(out), "--folds", "0"])
    assert exit_info.value.code == 2 and not marker.exists() and not out.exists()
    torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)  # what nnU-Net itself would do
    assert marker.read_text() == "pwned"  # ... the trap was real


# ---- bad input: a clear error naming the file, nothing written ---------------------------------------------------
def _segment_cli(tmp_path: Path, spec: Path, image: Path, *extra: str) -> tuple[int, str, Path]:
    from medseg.cli import main

    out = tmp_path / "out"
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(["segment", str(spec), str(image), "--out", str(out), *extra])
    return exit_info.value.code, " ".join(err.getvalue().split()), out


def _ct_case(shared_data: Path) -> Path:
    return shared_data / "ct_3mm.nii.gz"


def test_folder_without_plans_or_checkpoints(tmp_path, shared_data):
    folder = _copy_model(tmp_path)
    for fold in folder.glob("fold_*"):
        shutil.rmtree(fold)
    code, err, out = _segment_cli(tmp_path, folder, _ct_case(shared_data))
    assert code == 2 and "no checkpoint_final.pth in any fold folder" in err and str(folder.name) in err
    assert not out.exists()
    (folder / "plans.json").unlink()
    with pytest.raises(ModelError, match="not a model medseg can run.*nnU-Net v2 results folder"):
        medseg.load_segmenter(folder)
    from medseg.models.nnunet.plans import ResultsFolder

    with pytest.raises(ModelError, match="plans.json missing"):
        ResultsFolder.read(folder)


def test_unknown_architecture_names_the_plans(tmp_path):
    folder = _copy_model(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my_lab.nets.FancyUNet"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match=r"plans\.json: configuration '3d_fullres': unknown architecture "
                                         r"'my_lab\.nets\.FancyUNet'"):
        medseg.load_segmenter(folder, folds="0")


def test_an_arch_kwarg_outside_torch_nn_is_refused(tmp_path):
    folder = _copy_model(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match=r"plans\.json: arch_kwargs 'nonlin': 'os\.system' is not a torch\.nn layer"):
        medseg.load_segmenter(folder, folds="0")


def test_weights_of_a_trainer_with_its_own_architecture(tmp_path):
    folder = _copy_model(tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    ck = _load_ck(path)
    weights = ck["network_weights"]
    for key in [k for k in weights if k.endswith("norm.weight")]:  # batch norm, as nnUNetTrainerBN builds it
        weights[key.replace(".weight", ".running_mean")] = torch.zeros_like(weights[key])
    ck["trainer_name"] = "nnUNetTrainerBN"
    torch.save(ck, path)
    with pytest.raises(ModelError, match=r"fold_0/checkpoint_final\.pth: the weights do not fit the network plans"
                                         r"\.json describes \(trainer nnUNetTrainerBN.*unexpected: "):
        medseg.load_segmenter(folder, folds="0")


def test_trainer_variants_that_keep_the_network_simply_work(tmp_path):
    folder = _copy_model(tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    ck = _load_ck(path)
    for trainer, axes in (("nnUNetTrainer_5epochs", (0, 1, 2)), ("nnUNetTrainerNoMirroring", None)):
        ck["trainer_name"], ck["inference_allowed_mirroring_axes"] = trainer, axes
        torch.save(ck, path)
        seg = medseg.load_segmenter(folder, folds="0", device="cpu")
        assert seg.trainer == trainer and seg.mirror_axes == axes


def test_a_fold_that_does_not_exist(tmp_path, shared_data):
    code, err, out = _segment_cli(tmp_path, CT_MODEL, _ct_case(shared_data), "--folds", "0", "7")
    assert code == 2 and "fold_7: fold 7 does not exist (folds present: fold_0, fold_1)" in err
    assert not out.exists()


def test_wrong_channel_count(tmp_path, shared_data):
    rgb = shared_data / "cells_he" / "he_tile.jpg"
    code, err, out = _segment_cli(tmp_path, XRAY_MODEL, rgb)
    assert code == 2 and "he_tile.jpg: the model takes 1 channel(s) (dataset.json channel_names: xray); the " \
                         "image has 3" in err
    assert not out.exists() or not any(out.iterdir())


def test_checkpoints_in_a_newer_or_another_format(tmp_path):
    folder = _copy_model(tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    with zipfile.ZipFile(path) as zin:
        items = [(i, zin.read(i)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in items:
            zout.writestr(info, b"99\n" if info.filename.endswith("/version") else data)
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: the checkpoint is in a newer file format"):
        medseg.load_segmenter(folder, folds="0")
    torch.save({"state_dict": {}, "format_version": 3}, path)
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: not an nnU-Net v2 checkpoint \(or one in a newer "
                                         r"format\): no network_weights"):
        medseg.load_segmenter(folder, folds="0")
    path.write_bytes(b"\x80\x04 truncated")
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: unreadable checkpoint"):
        medseg.load_segmenter(folder, folds="0")


def test_nnunet_options_on_another_kind_of_segmenter(tmp_path):
    code, err, _ = _segment_cli(tmp_path, REPO / "sample_data" / "models" / "ct_organs",
                                REPO / "sample_data" / "ct_organs" / "imagesTs" / "case_006.nii.gz", "--folds", "0")
    assert code == 2 and "--folds does not apply to this segmenter" in err


def test_bad_loader_options():
    with pytest.raises(ModelError, match="step size must be in"):
        medseg.load_segmenter(CT_MODEL, step_size=1.5)
    with pytest.raises(ModelError, match="checkpoint must be final or best"):
        medseg.load_segmenter(CT_MODEL, checkpoint="last")
    with pytest.raises(ModelError, match="folds: 'x' is neither"):
        medseg.load_segmenter(CT_MODEL, folds="0,x")


# ---- the command line, batch, tasks, statistics ----------------------------------------------------------------
def test_cli_segment_with_nnunet_options(tmp_path, shared_data):
    from medseg.cli import main

    out = tmp_path / "out"
    main(["segment", str(CT_MODEL), str(shared_data / "ct_abdomen_dicom"), "--out", str(out), "--folds", "0",
          "--step-size", "1", "--no-mirroring", "--checkpoint", "best"])
    labels = medseg.load(out / "ct_abdomen_dicom.nii.gz")
    seg = medseg.load_segmenter(CT_MODEL, folds="0", step_size=1.0, mirroring=False, checkpoint="best")
    assert seg._folds[0].checkpoint.name == "checkpoint_best.pth"
    assert np.array_equal(labels.array, seg.segment(medseg.load(shared_data / "ct_abdomen_dicom")).array)


def test_batch_with_an_nnunet_folder(tmp_path, nnunet_inputs):
    from medseg.batch import run_batch

    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in sorted(nnunet_inputs["xray"].glob("JPC*.png")):
        shutil.copy(f, inputs / f.name)
    result = run_batch(str(XRAY_MODEL), inputs, tmp_path / "out", quiet=True)
    assert result.exit_code == 0 and len(result.done) == 2


def test_task_merges_parts_and_totalsegmentator_statistics(tmp_path, variants, shared_data):
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: abdomen\n"
        "labels: {1: spleen, 2: liver, 3: stomach, 4: aorta, 5: organ_region}\n"
        "parts:\n"
        f"  - model: {os.path.relpath(CT_MODEL, tmp_path)}\n"
        "    folds: [0]\n"
        "    mirroring: false\n"
        f"  - model: {variants['regions']}\n"
        "    labels: {3: stomach, 2: organ_region}\n"
        "    mirroring: false\n"
    )
    seg = medseg.load_segmenter(task)
    assert seg.label_names == {1: "spleen", 2: "liver", 3: "stomach", 4: "aorta", 5: "organ_region"}
    image = medseg.load(shared_data / "ct_3mm.nii.gz")
    merged = seg.segment(image)
    first = medseg.load_segmenter(CT_MODEL, folds="0", mirroring=False).segment(image).array
    second = medseg.load_segmenter(variants["regions"], mirroring=False).segment(image).array
    expected = first.copy()
    expected[second == 3] = 3
    expected[second == 2] = 5
    assert np.array_equal(merged.array, expected)
    from medseg.cli import main

    out = tmp_path / "seg"
    main(["segment", str(task), str(shared_data / "ct_3mm.nii.gz"), "--out", str(out)])
    assert np.array_equal(medseg.load(out / "ct_3mm.nii.gz").array, expected)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({str(k): v for k, v in seg.label_names.items()}))
    stats_file = tmp_path / "statistics.json"
    main(["measure", str(out / "ct_3mm.nii.gz"), "--image", str(shared_data / "ct_3mm.nii.gz"), "--labels",
          str(names), "--format", "totalsegmentator", "--out", str(stats_file)])
    stats = json.loads(stats_file.read_text())
    assert list(stats) == ["spleen", "liver", "stomach", "aorta", "organ_region"]
    for value, name in seg.label_names.items():
        mask = expected == value
        entry = stats[name]
        assert set(entry) == {"volume", "intensity", "touches_border"}
        assert entry["volume"] == pytest.approx(mask.sum() * 27.0)
        if mask.any():
            assert entry["intensity"] == pytest.approx(image.array[mask].mean(), abs=1e-4)
        else:
            assert entry == {"volume": 0.0, "intensity": 0.0, "touches_border": False}


def test_task_file_errors(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(f"labels: {{1: spleen}}\nparts:\n  - model: {CT_MODEL}\n    folds: [0]\n")
    with pytest.raises(ModelError, match=r"t\.yaml: parts\[0\]: label 2 \(liver\) .* is not one of the task's labels"):
        medseg.load_segmenter(bad)
    bad.write_text("labels: {1: spleen}\nparts: []\n")
    assert medseg.segmenters.base.registered_kinds()  # a task file without parts is not a task
    with pytest.raises(ModelError, match="not a model medseg can run"):
        medseg.load_segmenter(bad)


def test_fingerprint_changes_with_settings():
    a = medseg.load_segmenter(CT_MODEL, folds="0")
    b = medseg.load_segmenter(CT_MODEL, folds="0", mirroring=False)
    c = medseg.load_segmenter(CT_MODEL, folds="0 1")
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3
    assert a.fingerprint() == medseg.load_segmenter(CT_MODEL, folds=[0]).fingerprint()


def test_committed_models_are_small():
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 5 * 2**20, f"tests/data/nnunet holds {total / 2**20:.1f} MB"


def test_no_nnunetv2_import_at_run_time(tmp_path, shared_data):
    code = ("import sys, medseg; seg = medseg.load_segmenter(sys.argv[1], folds='0', mirroring=False);"
            "seg.segment(medseg.load(sys.argv[2]));"
            "bad = [m for m in sys.modules if m.startswith(('nnunetv2', 'timm', 'monai', 'batchgenerators'))];"
            "assert not bad, bad")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, str(XRAY_MODEL), str(shared_data / "xray_chest" / "1.jpg")],
                   check=True, cwd=REPO)


@pytest.mark.gpu
def test_gpu_labels_match_the_cpu(nnunet_inputs):
    cpu = medseg.load_segmenter(CT_MODEL, folds="0", device="cpu")
    gpu = medseg.load_segmenter(CT_MODEL, folds="0", device="cuda")
    image = medseg.load(nnunet_inputs["ct"] / "abdomen_0000.nii.gz")
    same, dice = _agreement(gpu.segment(image).array, cpu.segment(image).array)
    assert same >= 0.999 and all(d >= 0.99 for d in dice.values()), (same, dice)
