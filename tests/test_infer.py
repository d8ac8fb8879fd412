"""Inference: predictions land on the input's exact grid, whatever its orientation, obliquity or spacing."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Orientation
from nibabel.orientations import aff2axcodes
from typer.testing import CliRunner

import medseg
from medseg.config import validate_config
from medseg.io.image import Image
from medseg.io.resample import resample_to
from medseg.models import build_network, load_model, save_model_dir
from medseg.models.model import SegmentationModel
from medseg.models.store import ModelCard
from medseg.preprocess import Preprocessor


class ThresholdNet(torch.nn.Module):
    """A 'network' whose answer is known: class 1 where the normalised intensity exceeds ``t``."""

    def __init__(self, t: float = 0.5, sharpness: float = 40.0) -> None:
        super().__init__()
        self.t, self.k = t, sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), self.k * (x[:, :1] - self.t)], dim=1)


def _card(dims: int = 3, **changes) -> ModelCard:
    base = {
        "name": "threshold",
        "dims": dims,
        "labels": {"background": 0, "bright": 1},
        "intensity": {"preset": "ct", "window_hu": [0.0, 200.0]},
        "patch_size": [24] * dims,
        "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
        "medseg_version": medseg.__version__,
        "augment": {"flip_axes": list(range(dims))},
    }
    return ModelCard.model_validate({**base, **changes})


def _oblique(deg_z: float = 25.0, deg_x: float = -30.0) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _blob_volume(shape=(40, 34, 18), spacing=(0.9, 1.2, 2.5), direction=None, origin=(5.0, -12.0, 30.0)) -> Image:
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) * np.asarray(spacing)
    centre = np.asarray(shape) * np.asarray(spacing) / 2
    r = np.linalg.norm(g - centre * [0.8, 1.0, 1.0], axis=-1)
    vol = np.where(r < 12, 160.0, 20.0) + np.random.default_rng(0).normal(0, 4, shape)
    return Image(
        vol.astype(np.float32), spacing=spacing, origin=origin, direction=direction, modality="CT", intensity_unit="HU"
    )


GRIDS = {
    "identity": {},
    "flipped": {"direction": np.diag([-1.0, 1.0, -1.0])},
    "permuted": {"direction": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])},
    "oblique": {"direction": _oblique()},
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("resample", [None, "extent", "spacing"])
def test_labels_on_input_grid_and_equal_to_direct_answer(grid: str, resample: str | None) -> None:
    image = _blob_volume(**GRIDS[grid])
    changes = {"orientation": "RAS"} | ({"spacing_mm": [1.7, 1.7, 1.7], "resample": resample} if resample else {})
    model = SegmentationModel(ThresholdNet(), _card(**changes), device="cpu")
    labels = model.segment(image)
    assert labels.same_grid(image) and labels.shape == image.shape
    assert labels.array.dtype == np.uint8
    truth = (image.array > 100).astype(np.uint8)  # ThresholdNet's answer computed on the native grid
    agreement = float(np.mean(labels.array == truth))
    if resample:  # probabilities interpolated back: only voxels at the blob's edge may differ
        assert agreement > 0.97, agreement
    else:  # reorientation alone is an exact permutation: identical answer
        assert agreement == 1.0


def test_probabilities_sum_to_one_and_argmax_is_the_label_map() -> None:
    image = _blob_volume(direction=_oblique())
    model = SegmentationModel(ThresholdNet(), _card(orientation="RAS", spacing_mm=[2.0, 2.0, 2.0]), device="cpu")
    probs = model.segment(image, probabilities=True)
    labels = model.segment(image)
    assert probs.channel_axis and probs.array.shape == (*image.shape, 2) and probs.array.dtype == np.float32
    assert np.allclose(probs.array.sum(-1), 1.0, atol=1e-5)
    assert np.array_equal(np.argmax(probs.array, -1), labels.array)


def test_mirroring_tta_on_a_mirror_symmetric_model_changes_nothing() -> None:
    image = _blob_volume()
    model = SegmentationModel(ThresholdNet(), _card(orientation="RAS"), device="cpu")
    assert np.array_equal(model.segment(image, tta=True).array, model.segment(image, tta=False).array)


def test_2d_anisotropic_raster_on_input_grid() -> None:
    rng = np.random.default_rng(1)
    arr = np.where(np.hypot(*np.meshgrid(np.arange(70) - 30, np.arange(45) - 20, indexing="ij")) < 12, 150.0, 10.0)
    image = Image((arr + rng.normal(0, 3, arr.shape)).astype(np.float32), spacing=(0.4, 0.9))
    model = SegmentationModel(ThresholdNet(), _card(dims=2, spacing_mm=[0.6, 0.6]), device="cpu")
    labels = model.segment(image)
    assert labels.same_grid(image)
    assert np.mean(labels.array == (image.array > 100)) > 0.97


def test_flipped_copy_is_segmented_identically_by_a_unet(tmp_path: Path) -> None:
    """A real (random-weight) U-Net: the same scan stored flipped gives the same labels in world space."""
    torch.manual_seed(0)
    cfg = validate_config(
        {
            **_card().config.model_dump(),
            "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
            "orientation": "RAS",
            "spacing_mm": [1.5, 1.5, 2.0],
        }
    )
    save_model_dir(tmp_path / "m", build_network(cfg).state_dict(), cfg)
    model = load_model(tmp_path / "m", device="cpu")
    image = _blob_volume()
    flip = np.diag([-1.0, 1.0, -1.0])
    far_corner = image.index_to_world(np.asarray(image.shape) - 1)
    flipped = Image(
        image.array[::-1, :, ::-1].copy(),
        spacing=image.spacing,
        origin=(far_corner[0], image.origin[1], far_corner[2]),
        direction=image.direction @ flip,
    )
    a, b = model.segment(image), model.segment(flipped)
    assert b.same_grid(flipped)
    assert np.array_equal(resample_to(b, a, "nearest").array, a.array)


def test_preprocessor_records_its_inverse() -> None:
    image = _blob_volume(direction=_oblique())
    cfg = _card(orientation="RAS", spacing_mm=[2.0, 2.0, 2.0]).config
    prep = Preprocessor(cfg)
    x = prep(image)
    assert x.shape[0] == 1 and tuple(x.shape[1:]) != image.shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # the CT window maps to [0, 1]
    back = prep.invert(x.clone(), like=x)
    assert tuple(back.shape[1:]) == image.shape


@pytest.mark.parametrize(("direction", "reoriented"), [(np.diag([-1.0, -1.0, 1.0]), False), (np.eye(3), True)])
def test_reorientation_only_for_images_not_in_the_workflow_orientation(direction: np.ndarray, reoriented: bool) -> None:
    image = _blob_volume(direction=direction)  # LPS world: diag(-1, -1, 1) is RAS, the identity LPS
    prep = Preprocessor(_card(orientation="RAS").config)
    x = prep(image)
    assert aff2axcodes(x.affine.numpy()) == ("R", "A", "S")
    assert any(isinstance(step, Orientation) for step in prep.spatial.transforms) == reoriented
    assert tuple(prep.invert(x.clone(), like=x).shape[1:]) == image.shape


def test_segment_command_writes_label_maps_on_input_grid(tmp_path: Path) -> None:
    from medseg.cli import app

    cfg = _card(orientation="RAS", spacing_mm=[2.0, 2.0, 2.0]).config
    save_model_dir(tmp_path / "model", build_network(cfg).state_dict(), cfg)
    image = _blob_volume(direction=_oblique())
    scan = medseg.save(image, tmp_path / "scan.nii.gz")
    result = CliRunner().invoke(
        app, ["segment", str(tmp_path / "model"), str(scan), "--out", str(tmp_path / "out"), "--probabilities"]
    )
    assert result.exit_code == 0, result.output
    labels = medseg.load(tmp_path / "out" / "scan.nii.gz")
    assert labels.same_grid(medseg.load(scan))
    prob = medseg.load(tmp_path / "out" / "scan_prob_bright.nii.gz")
    assert prob.same_grid(labels) and float(prob.array.max()) <= 1.0


@pytest.mark.gpu
def test_preprocessing_and_augmentation_tensors_live_on_the_gpu() -> None:
    from medseg.preprocess import cached_transforms, random_transforms

    image = _blob_volume(direction=_oblique())
    cfg = _card(
        orientation="RAS", spacing_mm=[2.0, 2.0, 2.0], augment={"flip_axes": [1], "rotate_deg": 10, "scale_range": 0.1}
    ).config
    x = Preprocessor(cfg)(image, device="cuda")
    assert x.device.type == "cuda"
    item = cached_transforms(cfg)({"image": image, "label": image.with_array((image.array > 100).astype(np.uint8))})
    patches = random_transforms(cfg, "cuda")(item)
    assert all(p["image"].device.type == "cuda" and p["label"].device.type == "cuda" for p in patches)
    model = SegmentationModel(ThresholdNet(), _card(orientation="RAS", spacing_mm=[2.0, 2.0, 2.0]), device="cuda")
    assert model.segment(image).same_grid(image)


def test_mirroring_tta_averages_softmax_over_every_configured_flip_of_a_non_symmetric_network() -> None:
    """A random 3x3x3 convolution is not mirror symmetric: TTA must really flip the input and flip back."""
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1)
    inference = {"overlap": 0.25, "sw_batch_size": 2}
    card = _card(patch_size=[16, 16, 16], augment={"flip_axes": [0, 2]}, inference=inference)
    image = _blob_volume(shape=(22, 19, 17))  # no spacing_mm/orientation: already on the model grid
    model = SegmentationModel(network, card, device="cpu")
    with_tta = model.segment(image, probabilities=True, tta=True).array
    without = model.segment(image, probabilities=True, tta=False).array

    x = torch.from_numpy(np.clip(image.array / 200.0, 0.0, 1.0)).float()[None, None]  # the card's CT window [0, 200]
    flips = [(), (2,), (4,), (2, 4)]  # every subset of flip_axes [0, 2], as tensor dims
    total = torch.zeros(1, 2, *image.shape)
    with torch.no_grad():
        for dims in flips:
            xin = torch.flip(x, dims) if dims else x
            logits = sliding_window_inference(xin, [16, 16, 16], 2, network, overlap=0.25, mode="gaussian")
            probs = torch.softmax(logits, dim=1)
            total += torch.flip(probs, dims) if dims else probs
    expected = np.moveaxis((total / len(flips))[0].numpy(), 0, -1)
    np.testing.assert_allclose(with_tta, expected, atol=1e-5)
    assert np.abs(with_tta - without).max() > 1e-3


def _conv_output_dtypes(tmp_path: Path, device: str, amp: bool) -> dict[str, set[torch.dtype]]:
    """dtypes of every convolution's output under ``segment`` and under one training epoch (train-mode calls)."""
    from medseg.train import train

    cfg = validate_config(
        {
            **_card(patch_size=[16, 16, 16]).config.model_dump(),
            "amp": amp,
            "train": {"max_epochs": 1, "batch_size": 2, "samples_per_image": 2, "val_every": 1},
        }
    )
    entries = []
    for i in range(3):
        image = _blob_volume()
        medseg.save(image, tmp_path / "imagesTr" / f"c{i}.nii.gz")
        medseg.save(image.with_array((image.array > 100).astype(np.uint8)), tmp_path / "labelsTr" / f"c{i}.nii.gz")
        entries.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"0": "background", "1": "bright"}, "training": entries}))

    seen: dict[str, set[torch.dtype]] = {"segment": set(), "train": set()}
    phase = "segment"

    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.modules.conv._ConvNd) and (phase == "segment" or module.training):
            seen[phase].add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        model = SegmentationModel(build_network(cfg), ModelCard(**cfg.model_dump(), medseg_version="0"), device=device)
        model.segment(_blob_volume())
        phase = "train"
        train(cfg, dataset, tmp_path / "run", device=device, progress=False)
    finally:
        handle.remove()
    return seen


def test_amp_on_the_cpu_leaves_every_activation_float32(tmp_path: Path) -> None:
    seen = _conv_output_dtypes(tmp_path, "cpu", amp=True)
    assert seen == {"segment": {torch.float32}, "train": {torch.float32}}


@pytest.mark.gpu
@pytest.mark.parametrize(("amp", "dtype"), [(True, torch.float16), (False, torch.float32)])
def test_amp_on_cuda_runs_convolutions_in_float16(tmp_path: Path, amp: bool, dtype: torch.dtype) -> None:
    seen = _conv_output_dtypes(tmp_path, "cuda", amp=amp)
    assert seen == {"segment": {dtype}, "train": {dtype}}


def test_object_first_scores_call_objects_where_background_is_below_half() -> None:
    import torch

    from medseg.infer import object_first_scores
    from medseg.preprocess import first_argmax

    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.dirichlet([1.0, 1.0, 1.0], size=(50, 40)).astype(np.float32)).permute(2, 0, 1)
    labels = first_argmax(object_first_scores(probs)).numpy()
    p = probs.numpy()
    expected = np.where(p[0] >= 0.5, 0, np.where(p[1] >= p[2], 1, 2))
    assert np.array_equal(labels, expected)
    assert (labels > 0).sum() > (first_argmax(probs).numpy() > 0).sum()  # plain argmax shrinks objects


def test_instance_scores_join_an_interior_in_pieces_and_keep_touching_objects_apart() -> None:
    import torch
    from scipy import ndimage

    from medseg.infer import instance_scores
    from medseg.labelmap import interior_boundary_classes
    from medseg.postprocess import postprocess
    from medseg.preprocess import first_argmax

    yy, xx = np.mgrid[:40, :70]
    left, right = np.hypot(yy - 20, xx - 18) < 12, np.hypot(yy - 20, xx - 40) < 12
    truth = np.where(left, 1, np.where(right, 2, 0))
    left, right = truth == 1, truth == 2
    classes = interior_boundary_classes(truth)
    pale = left & (np.abs(xx - 18) < 8) & (xx % 4 == 0)  # a pale nucleus: the network calls some chromatin edges
    classes[pale] = 2
    probs = np.stack([classes == k for k in range(3)]).astype(np.float32) * 0.9 + 0.1 / 3
    probs = ndimage.gaussian_filter(probs, (0, 0.7, 0.7))
    scores = torch.from_numpy(probs / probs.sum(0))
    def objects(dynamics: float | None) -> np.ndarray:
        labels = first_argmax(instance_scores(scores, dynamics)).numpy()
        return postprocess(Image(labels, spacing_known=False), {
            "labels": {1: {"min_size": "10 px", "fill_holes": True, "connectivity": 4}, 2: {"merge_into": 1}}}).instances.array

    joined, pieces = objects(0.3), objects(None)
    inner = ndimage.binary_erosion(left, iterations=2), ndimage.binary_erosion(right, iterations=2)
    assert [len(np.unique(joined[part])) for part in inner] == [1, 1]  # a ring pixel may go to either neighbour
    assert joined[inner[0]].min() > 0 and joined[inner[0]][0] != joined[inner[1]][0]
    assert len(np.unique(pieces[inner[0] & (pieces > 0)])) > 1  # 4-connected interiors: the pale nucleus in pieces


def test_window_shrinks_to_a_thin_image_rounded_to_what_the_network_divides() -> None:
    from medseg.infer import sliding_window_probabilities, window_size
    from medseg.models.networks import size_divisor

    config = validate_config({**_card().model_dump(include={"name", "dims", "labels", "intensity"}),
                              "patch_size": [32, 32, 32],
                              "network": {"name": "UNet", "params": {"channels": [4, 8, 16], "strides": [2, [2, 2, 1]]}}})
    assert size_divisor(config) == [4, 4, 2]
    assert window_size(config, (64, 20, 13)) == [32, 20, 14]  # 13 slices -> 14, not the 32-slice patch
    shapes: list[tuple[int, ...]] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape[2:]))
        return torch.zeros((x.shape[0], 2, *x.shape[2:]))

    sliding_window_probabilities(probe, torch.zeros(1, 1, 64, 20, 13), config)
    assert shapes and all(s == (32, 20, 14) for s in shapes)
    real = build_network(config).eval()
    out = sliding_window_probabilities(real, torch.randn(1, 1, 40, 20, 13), config)
    assert out.shape == (1, 2, 40, 20, 13) and torch.allclose(out.sum(1), torch.ones(1, 40, 20, 13))


def test_segment_command_applies_the_workflow_rules_unless_told_not_to(sample_data: Path, tmp_path: Path) -> None:
    from medseg.cli import app
    from medseg.postprocess import postprocess
    from medseg.workflows.case import postprocess_rules

    model_dir = sample_data / "models" / "ct_organs"
    scan = sample_data / "ct_organs" / "imagesTs" / "case_007.nii.gz"
    for flag in ("--postprocess", "--no-postprocess"):
        result = CliRunner().invoke(app, ["segment", str(model_dir), str(scan), "--out", str(tmp_path / flag), flag,
                                          "--device", "cpu"])
        assert result.exit_code == 0, result.output
    cleaned, raw = (medseg.load(tmp_path / flag / "case_007.nii.gz").array for flag in ("--postprocess", "--no-postprocess"))
    model = load_model(model_dir, device="cpu")
    direct = model.segment(medseg.load(scan))
    np.testing.assert_array_equal(raw, direct.array)
    np.testing.assert_array_equal(cleaned, postprocess(direct, postprocess_rules(model)).semantic.array)
    assert model.postprocess and (cleaned != raw).any()  # the committed model's rules change its map here


def test_turned_test_time_views_average_the_eight_turns_and_tiles_reproduce_them() -> None:
    """A model trained with 90-degree turns of square patches averages its predictions over the eight turns and
    mirror images of the plane: the same as predicting the four mirrorings of the image and of its transpose
    (turned back); tiles predicted from the image-wide windows give the same probabilities."""
    from medseg.infer import part_probabilities, sliding_window_probabilities, turns_at_test_time
    from medseg.windows import ImagePart, WindowCache, part_extent, window_step

    config = validate_config({"name": "t", "dims": 2, "labels": {"background": 0, "a": 1}, "patch_size": [32, 32],
                              "intensity": {"preset": "zscore"}, "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
                              "augment": {"flip_axes": [0, 1], "rotate90": True}, "inference": {"overlap": 0.3, "tta": True}})
    assert turns_at_test_time(config)
    assert not turns_at_test_time(config.model_copy(update={"augment": config.augment.model_copy(update={"rotate90": False})}))
    torch.manual_seed(1)
    net = build_network(config).eval()
    x = torch.randn(1, 1, 70, 45)
    turned = sliding_window_probabilities(net, x, config, mirror_axes=[0, 1], turns=True)
    plain = sliding_window_probabilities(net, x, config, mirror_axes=[0, 1])
    of_transpose = sliding_window_probabilities(net, x.transpose(2, 3), config, mirror_axes=[0, 1]).transpose(2, 3)
    assert torch.allclose(turned, (plain + of_transpose) / 2, atol=1e-6)
    assert not torch.allclose(turned, plain, atol=1e-3)  # the untrained network is not turn-invariant
    steps = [window_step(config, 32, n) for n in (70, 45)]
    for region in (((0, 30), (0, 45)), ((30, 70), (0, 20)), ((30, 70), (20, 45))):
        (rx0, rx1), (ry0, ry1) = part_extent((70, 45), (32, 32), steps, region, (True, True))
        part = ImagePart((70, 45), (rx0, ry0), region, WindowCache(), None)
        got = part_probabilities(net, x[..., rx0:rx1, ry0:ry1], config, part, mirror_axes=[0, 1], turns=True)
        (x0, x1), (y0, y1) = region
        assert torch.allclose(got, turned[..., x0:x1, y0:y1], atol=1e-5), region


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_parts_predicted_with_the_whole_images_windows_equal_the_whole_image_and_run_each_window_once(
    blend: str,
) -> None:
    """Tiles of a 2D image, each predicted from the image-wide sliding windows (mirrored grids and a two-network
    ensemble included), give the whole image's probabilities; with a shared cache every window runs once."""
    from medseg.infer import part_probabilities, sliding_window_probabilities
    from medseg.windows import ImagePart, WindowCache, part_extent, window_starts, window_step

    config = validate_config({"name": "t", "dims": 2, "labels": {"background": 0, "a": 1, "b": 2}, "patch_size": [32, 48],
                              "intensity": {"preset": "zscore"}, "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
                              "augment": {"flip_axes": [0, 1]}, "inference": {"overlap": 0.3, "blend": blend,
                                                                             "sw_batch_size": 3}})
    torch.manual_seed(0)
    nets = [build_network(config).eval() for _ in range(2)]
    shape = (101, 130)
    x = torch.randn(1, 1, *shape)
    whole = sliding_window_probabilities(nets, x, config, mirror_axes=[0, 1])
    steps = [window_step(config, r, n) for r, n in zip((32, 48), shape, strict=True)]
    assert steps == [22, 33]
    assert window_starts(101, 32, 22) == [0, 22, 44, 66, 69]
    assert window_starts(101, 32, 22, mirrored=True) == [69, 47, 25, 3, 0]
    cache = WindowCache()
    cuts = ([0, 40, 77, 101], [0, 64, 130])
    regions = [((x0, x1), (y0, y1))
               for x0, x1 in itertools.pairwise(cuts[0]) for y0, y1 in itertools.pairwise(cuts[1])]
    todo = list(regions)
    for region in regions:
        todo.remove(region)
        (rx0, rx1), (ry0, ry1) = part_extent(shape, (32, 48), steps, region, (True, True))

        def later(box, rest=tuple(todo)):  # any region still to come overlaps the window
            return any(lo < b1 and b0 < hi and lo2 < c1 and c0 < hi2
                       for ((lo, hi), (lo2, hi2)) in rest for (b0, b1), (c0, c1) in [box])

        part = ImagePart(shape, (rx0, ry0), region, cache, later)
        got = part_probabilities(nets, x[..., rx0:rx1, ry0:ry1], config, part, mirror_axes=[0, 1])
        (x0, x1), (y0, y1) = region
        assert torch.allclose(got, whole[..., x0:x1, y0:y1], atol=1e-5), region
    n_windows = sum(len(window_starts(101, 32, 22, m)) * len(window_starts(130, 48, 33, n))
                    for m in (False, True) for n in (False, True))
    assert cache.computed == 2 * n_windows and cache.reused > 0
    assert not cache.entries and cache.nbytes == 0  # nothing kept once the last part is done

