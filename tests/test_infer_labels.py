"""Label maps from class probabilities: the fused inverse resampling + argmax equals doing both in full."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import medseg
from medseg import preprocess
from medseg.io.image import Image
from medseg.models.model import SegmentationModel
from medseg.models.store import ModelCard
from medseg.preprocess import (
    Preprocessor,
    _first_argmax_torch,
    first_argmax,
    linear_resize_weights,
    resized_argmax,
)


def _smooth_probabilities(n_labels: int, shape: tuple[int, ...], seed: int, blobs: int = 3) -> torch.Tensor:
    """Softmax of smooth random fields (about ``blobs`` regions per axis): most voxels lie away from label boundaries."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, n_labels, *[min(s, blobs) for s in shape], generator=gen)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    logits = F.interpolate(coarse, size=shape, mode=mode, align_corners=False)[0] * 6.0
    return torch.softmax(logits, 0)


def _reference_labels(probabilities: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    mode = "bilinear" if len(size) == 2 else "trilinear"
    resized = F.interpolate(probabilities[None], size=size, mode=mode, align_corners=False)[0]
    return resized.argmax(0).numpy()


@pytest.mark.parametrize("route", ["numpy (CPU tensors)", "torch (other devices)"])
def test_first_argmax_is_torch_argmax_with_ties_going_to_the_first_channel(route: str) -> None:
    scores = torch.rand(6, 9, 8, 7)
    scores[:, :3] = 0.25  # every channel tied: channel 0
    scores[2:5, 3:5] = 2.0  # channels 2, 3, 4 tied: channel 2
    labels = first_argmax(scores) if route.startswith("numpy") else _first_argmax_torch(scores)
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), scores.argmax(0))
    assert int(labels[0, 0, 0]) == 0 and int(labels[3, 0, 0]) == 2


def test_first_argmax_beyond_uint8_channels_is_torch_argmax() -> None:
    scores = torch.rand(300, 20)
    assert torch.equal(first_argmax(scores).long(), scores.argmax(0))


@pytest.mark.parametrize(("n_in", "n_out"), [(92, 122), (122, 92), (5, 17), (17, 5), (1, 4), (30, 30)])
def test_linear_resize_weights_reproduce_torch_interpolate(n_in: int, n_out: int) -> None:
    signal = torch.rand(n_in)  # float32: torch computes the coordinates in the tensor's precision
    i0, i1, w0, w1 = linear_resize_weights(n_in, n_out)
    assert i0.min() >= 0 and i1.max() <= n_in - 1 and np.all(i1 - i0 <= 1)
    assert np.allclose(w0 + w1, 1.0) and w0.min() >= 0 and w1.min() >= 0
    mine = w0 * signal.numpy()[i0] + w1 * signal.numpy()[i1]
    ref = F.interpolate(signal[None, None], size=n_out, mode="linear", align_corners=False)[0, 0].numpy()
    assert np.allclose(mine, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((46, 38, 42), (61, 50, 56)),  # upsampling, as after a coarser model grid
        ((40, 30, 20), (23, 31, 44)),  # down, about equal, up
        ((33, 1, 12), (41, 3, 12)),  # a single-voxel axis and an unchanged one
        ((50, 44), (73, 31)),  # 2D
    ],
)
@pytest.mark.parametrize("n_labels", [2, 7])
def test_resized_argmax_equals_full_interpolation_then_argmax(shape, size, n_labels) -> None:
    probs = _smooth_probabilities(n_labels, shape, seed=len(shape) * 10 + n_labels)
    labels = resized_argmax(probs, size)
    assert labels.dtype == np.uint8 and labels.shape == size
    assert np.array_equal(labels, _reference_labels(probs, size))


def test_resized_argmax_on_noisy_labels_and_exact_ties() -> None:
    noisy = torch.softmax(torch.randn(5, 30, 24, 18, generator=torch.Generator().manual_seed(3)), 0)
    assert np.array_equal(resized_argmax(noisy, (41, 29, 25)), _reference_labels(noisy, (41, 29, 25)))
    tied = _smooth_probabilities(4, (30, 24, 18), seed=4)
    tied[:, 10:20] = 0.25  # a slab where every class is equally likely: the first one wins
    assert np.array_equal(resized_argmax(tied, (41, 29, 25)), _reference_labels(tied, (41, 29, 25)))


def test_resized_argmax_to_the_same_size_is_plain_argmax() -> None:
    probs = _smooth_probabilities(3, (20, 16, 12), seed=5)
    assert np.array_equal(resized_argmax(probs, (20, 16, 12)), probs.argmax(0).numpy())


def _oblique() -> np.ndarray:
    a, b = np.deg2rad(25.0), np.deg2rad(-30.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _card(**changes) -> ModelCard:
    base = {
        "name": "four_classes",
        "dims": 3,
        "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
        "intensity": {"preset": "ct", "window_hu": [0.0, 200.0]},
        "patch_size": [24, 24, 24],
        "network": {"name": "UNet", "params": {"channels": [4, 8], "strides": [2]}},
        "medseg_version": medseg.__version__,
        "orientation": "RAS",
    }
    return ModelCard.model_validate({**base, **changes})


@pytest.mark.parametrize(
    "direction", [np.eye(3), np.diag([-1.0, 1.0, -1.0]), np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]), _oblique()]
)
@pytest.mark.parametrize("resample", ["extent", "spacing"])
def test_invert_labels_equals_argmax_of_inverted_probabilities(direction: np.ndarray, resample: str) -> None:
    image = Image(np.zeros((37, 29, 17), np.float32), spacing=(0.9, 1.2, 2.5), direction=direction, modality="CT")
    cfg = _card(spacing_mm=[1.7, 1.7, 1.7], resample=resample).config
    prep = Preprocessor(cfg)
    x = prep(image)
    probs = _smooth_probabilities(4, tuple(x.shape[1:]), seed=6, blobs=2)
    labels = prep.invert_labels(probs, like=x)
    assert tuple(labels.shape) == image.shape and labels.dtype == torch.uint8
    assert torch.equal(labels.long(), prep.invert(probs, like=x).argmax(0))


class _Blobs(torch.nn.Module):
    """Smooth, input-independent logits: several compact classes, the output of a well-trained model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(7)
        coarse = torch.randn(x.shape[0], 4, 2, 2, 2, generator=gen)
        return 6 * F.interpolate(coarse, size=x.shape[2:], mode="trilinear", align_corners=False)


def test_predicted_labels_are_the_argmax_of_the_predicted_probabilities() -> None:
    image = Image(np.zeros((40, 34, 18), np.float32), spacing=(0.9, 1.2, 2.5), direction=_oblique(), modality="CT")
    model = SegmentationModel(_Blobs(), _card(spacing_mm=[2.0, 2.0, 2.0]), device="cpu")
    pred = model.predict(image)
    assert len(np.unique(pred.labels.array)) == 4
    assert np.array_equal(pred.labels.array, np.argmax(pred.probabilities.array, -1))


def test_resized_argmax_split_over_threads_equals_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    probs = _smooth_probabilities(5, (46, 38, 42), seed=11)
    one = resized_argmax(probs, (61, 50, 56))
    monkeypatch.setattr(preprocess, "MIN_VOXELS_PER_THREAD", 100)  # a few thousand boundary voxels: three parts
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        split = resized_argmax(probs, (61, 50, 56))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(split, one) and np.array_equal(split, _reference_labels(probs, (61, 50, 56)))
