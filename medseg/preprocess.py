"""Modality presets and geometry normalisation, built from MONAI transforms.

Every model sees its inputs the same way at training and at inference time:

1. the :class:`~medseg.io.image.Image` becomes a channel-first MONAI
   ``MetaTensor`` whose affine is the image's RAS affine (MONAI's convention);
2. spatial normalisation (invertible, recorded in ``applied_operations``):
   reorientation to the workflow's axis codes (3D) and resampling to its
   target spacing (the grid covering the same extent, as nnU-Net does);
3. the intensity preset of the modality (CT HU window, percentile
   normalisation for radiographs and fluorescence, per-channel z-score for RGB).

At inference, :meth:`Preprocessor.invert` puts predictions back on the
input's exact grid. Tensors are moved to the compute device *before* the
transforms, so on a CUDA machine resampling and augmentation run on the GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    EnsureTyped,
    Lambdad,
    MapTransform,
    NormalizeIntensity,
    NormalizeIntensityd,
    Orientation,
    Orientationd,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resize,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentiles,
    ScaleIntensityRangePercentilesd,
    Spacing,
    Spacingd,
    SpatialPadd,
    ToDeviced,
    Transform,
)
from nibabel.orientations import aff2axcodes

from medseg.config import CTIntensity, PercentileIntensity, WindowIntensity, WorkflowConfig
from medseg.errors import GeometryError
from medseg.io.image import Image

_LPS_TO_RAS_2D = np.diag([-1.0, -1.0, 1.0])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA raises ``ConfigError``."""
    from medseg.errors import ConfigError

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N", "--device") from exc


def ras_affine(image: Image) -> np.ndarray:
    """The voxel -> RAS mm affine MONAI expects, as 4x4 (2D images embedded with a unit third axis)."""
    if image.ndim == 3:
        return image.affine_ras
    a2 = _LPS_TO_RAS_2D @ image.affine
    a = np.eye(4)
    a[:2, :2], a[:2, 3] = a2[:2, :2], a2[:2, 2]
    return a


def image_to_tensor(
    image: Image, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> MetaTensor:
    """Channel-first ``MetaTensor`` of ``image`` with its RAS affine, on ``device``."""
    arr = np.moveaxis(image.array, -1, 0) if image.channel_axis else image.array[None]
    # one pass to C order and float32 (NIfTI arrays come Fortran-ordered), then to the device
    data = torch.from_numpy(arr.astype(np.float32, order="C", copy=False)).to(device=device, dtype=dtype)
    return MetaTensor(data, affine=torch.as_tensor(ras_affine(image), dtype=torch.float64))


def in_pixel_units(image: Image) -> Image:
    """``image`` with 1-unit pixels (same voxels, origin and axes): how ``spacing_px`` workflows see every image."""
    import dataclasses

    return dataclasses.replace(image, spacing=(1.0,) * image.ndim)


def check_spacing(image: Image, config: WorkflowConfig) -> None:
    """Refuse to resample an image whose spacing is unknown to a physical target spacing."""
    if config.spacing_mm is not None and not image.spacing_known:
        raise GeometryError(
            f"the image's pixel spacing is unknown but the model works at {config.spacing_mm} mm; "
            "pass the spacing when loading (spacing=...)",
            image.source,
        )


_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # MONAI's axis-code convention, passed explicitly


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target_mm: list[float]) -> list[int]:
    """Grid size covering the same extent at about ``target_mm`` spacing (nnU-Net's rule: round(n * s / t))."""
    return [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_mm, strict=True)]


def _linear(ndim: int) -> str:
    return "bilinear" if ndim == 2 else "trilinear"


class ChannelWindow(Transform):
    """``(x - low) / (high - low)`` per channel (channel-first tensors), clipped to [0, 1] when ``clip``."""

    def __init__(self, low: list[float], high: list[float], clip: bool) -> None:
        self.low, self.high, self.clip = low, high, clip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.ndim - 1)
        low = torch.as_tensor(self.low, dtype=torch.float32, device=x.device).reshape(shape)
        width = torch.as_tensor(self.high, dtype=torch.float32, device=x.device).reshape(shape) - low
        out = (x.float() - low) / width
        return out.clamp(0.0, 1.0) if self.clip else out


class ClippedZScore(Transform):
    """``(clip(x, low, high) - mean) / std``: nnU-Net's CT normalisation with the dataset's foreground statistics."""

    def __init__(self, low: float, high: float, mean: float, std: float) -> None:
        self.low, self.high, self.mean, self.std = low, high, mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().clamp(self.low, self.high) - self.mean) / self.std


class ChannelWindowd(MapTransform):
    """:class:`ChannelWindow` on the items of ``keys``."""

    def __init__(self, keys: str, low: list[float], high: list[float], clip: bool) -> None:
        super().__init__(keys)
        self.window = ChannelWindow(low, high, clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


class HEDJitterd(MapTransform, Randomizable):
    """H&E stain jitter of 8-bit RGB channel-first images, with probability ``prob`` (see
    :func:`medseg.pathology.stain.jitter_stains`): each stain's amount scaled by ``U(1 - sigma, 1 + sigma)``
    and shifted by ``U(-sigma, sigma)`` OD."""

    def __init__(self, keys: str, sigma: float, prob: float) -> None:
        super().__init__(keys)
        self.sigma, self.prob = sigma, prob

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from medseg.pathology.stain import jitter_stains

        d = dict(data)
        if self.R.random_sample() >= self.prob:
            return d
        alpha, beta = self.R.uniform(1 - self.sigma, 1 + self.sigma, 3), self.R.uniform(-self.sigma, self.sigma, 3)
        for key in self.key_iterator(d):
            x = d[key]
            rgb = jitter_stains(np.moveaxis(x.detach().cpu().numpy(), 0, -1), alpha, beta)
            d[key] = torch.as_tensor(np.moveaxis(rgb, -1, 0), dtype=x.dtype, device=x.device)
        return d


ENHANCING_HU = (-50.0, 30.0)
"""Contrast enhancement's weight ramps from 0 at the first HU (fat, air) to 1 at the second (soft tissue)."""


class RandContrastEnhancementd(MapTransform, Randomizable):
    """Another contrast phase of a CT patch, with probability ``prob``: soft tissue brightened by ``U(-e, e)`` HU.

    Iodine enhances organs (native, arterial and portal-venous liver differ by 40-100 HU) but not fat or air,
    so a global shift would move the wrong voxels. Each voxel gains the offset weighted by a ramp over
    :data:`ENHANCING_HU` of its own HU, and the result stays in the clip window. Works on the normalised
    patch: ``hu = x * scale_hu + offset_hu``.
    """

    def __init__(self, keys: str, enhance_hu: float, window_hu: tuple[float, float], offset_hu: float,
                 scale_hu: float, prob: float) -> None:
        super().__init__(keys)
        self.enhance_hu, self.window_hu, self.prob = enhance_hu, window_hu, prob
        self.offset_hu, self.scale_hu = offset_hu, scale_hu

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.R.random_sample() >= self.prob:
            return d
        delta = float(self.R.uniform(-self.enhance_hu, self.enhance_hu))
        fat, tissue = ENHANCING_HU
        for key in self.key_iterator(d):
            hu = d[key] * self.scale_hu + self.offset_hu
            weight = ((hu - fat) / (tissue - fat)).clamp(0.0, 1.0)
            d[key] = ((hu + delta * weight).clamp(*self.window_hu) - self.offset_hu) / self.scale_hu
        return d


def contrast_enhancement(config: WorkflowConfig) -> RandContrastEnhancementd:
    """:class:`RandContrastEnhancementd` of a CT workflow's ``augment.enhance_hu`` on its normalised patches."""
    preset, aug = config.intensity, config.augment
    assert isinstance(preset, CTIntensity)  # WorkflowConfig refuses enhance_hu without the ct preset
    lo, hi = preset.window_hu
    offset, scale = (preset.mean_hu, preset.std_hu) if preset.mean_hu is not None else (lo, hi - lo)
    return RandContrastEnhancementd("image", aug.enhance_hu, (lo, hi), offset, scale, aug.prob)


def intensity_transform(config: WorkflowConfig) -> Transform:
    """The modality preset as one MONAI array transform."""
    preset = config.intensity
    if isinstance(preset, WindowIntensity):
        return ChannelWindow(preset.low, preset.high, preset.clip)
    if isinstance(preset, CTIntensity):
        lo, hi = preset.window_hu
        if preset.mean_hu is not None:
            return ClippedZScore(lo, hi, preset.mean_hu, preset.std_hu)
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    if isinstance(preset, PercentileIntensity):
        lo, hi = preset.percentiles
        return ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)
    return NormalizeIntensity(channel_wise=True, nonzero=preset.nonzero)


def _intensity_transform_d(config: WorkflowConfig, key: str) -> MapTransform:
    preset = config.intensity
    if isinstance(preset, WindowIntensity):
        return ChannelWindowd(key, preset.low, preset.high, preset.clip)
    if isinstance(preset, CTIntensity):
        if preset.mean_hu is not None:
            return Lambdad(key, intensity_transform(config))
        lo, hi = preset.window_hu
        return ScaleIntensityRanged(key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    if isinstance(preset, PercentileIntensity):
        lo, hi = preset.percentiles
        return ScaleIntensityRangePercentilesd(
            key, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
        )
    return NormalizeIntensityd(key, channel_wise=True, nonzero=preset.nonzero)


class Preprocessor:
    """Prepare an image as network input and map predictions back to its grid.

    Reorientation (``Orientation``, skipped for images already in the
    workflow's orientation) and resampling to the model spacing
    (``Resize`` to the grid covering the same extent, or ``Spacing`` when the
    workflow says ``resample: spacing``; linear interpolation) are MONAI
    invertible transforms; :meth:`invert` undoes them through the
    operations recorded on the tensor. An instance remembers the grid of the
    image it prepared last; use one instance per image at a time.

    Examples
    --------
    >>> prep = Preprocessor(config)                   # doctest: +SKIP
    >>> x = prep(image, device="cuda")                # on the GPU, model grid, normalised
    >>> native = prep.invert(probabilities, like=x)   # back on image's grid
    """

    def __init__(self, config: WorkflowConfig) -> None:
        self.config = config
        self.spatial = Compose([])
        self.intensity = intensity_transform(config)

    def __call__(self, image: Image, device: torch.device | str = "cpu") -> MetaTensor:
        """``image`` as a channel-first network input on ``device``: reoriented, resampled, normalised.

        The result records the spatial operations for :meth:`invert`.
        """
        config = self.config
        check_spacing(image, config)
        if image.n_channels != config.in_channels:
            raise GeometryError(
                f"the model expects {config.in_channels} channel(s), the image has {image.n_channels}", image.source
            )
        x = image_to_tensor(in_pixel_units(image) if config.spacing_px else image, device=device)
        steps: list[Transform] = []
        if config.orientation and aff2axcodes(x.affine.numpy(), labels=_RAS_LABELS) != tuple(config.orientation):
            steps.append(Orientation(axcodes=config.orientation, labels=_RAS_LABELS))
            x = steps[-1](x)
        target = config.target_spacing
        if target and config.resample == "spacing":
            steps.append(Spacing(pixdim=target, mode=_linear(image.ndim), padding_mode="border", dtype=torch.float32))
            x = steps[-1](x)
        elif target:
            shape = resampled_shape(tuple(x.shape[1:]), tuple(x.pixdim[: image.ndim].tolist()), target)
            steps.append(Resize(shape, mode=_linear(image.ndim), dtype=torch.float32))
            x = steps[-1](x)
        self.spatial = Compose(steps)
        return self.intensity(x)

    def invert(self, data: torch.Tensor, like: MetaTensor) -> torch.Tensor:
        """Map channel-first ``data`` on the grid of ``like`` (the latest output of this preprocessor) to the input grid.

        Interpolation follows the forward resampling (linear), so pass class
        probabilities or logits rather than label indices.
        """
        return self._undo(self.spatial.transforms, data, like.meta, list(like.applied_operations))

    def invert_labels(self, probabilities: torch.Tensor, like: MetaTensor) -> torch.Tensor:
        """:func:`first_argmax` of ``invert(probabilities, like)``, without inverting every channel.

        On the CPU the extent resampling (``Resize``) is undone by
        :func:`resized_argmax` (the same labels, several times cheaper) and the
        reorientation on the label map (an exact permutation). On a GPU, where
        interpolating every channel is cheap, and for ``resample: spacing`` the
        probabilities are inverted, then reduced.

        Returns
        -------
        torch.Tensor
            Label indices (``uint8``) on the input grid, without a channel axis.
        """
        steps, ops = self.spatial.transforms, list(like.applied_operations)
        fast = probabilities.device.type == "cpu" and probabilities.shape[0] <= _MAX_FAST_LABELS
        if fast and steps and isinstance(steps[-1], Resize):
            size = tuple(int(n) for n in ops[-1]["orig_size"])
            labels = torch.from_numpy(resized_argmax(probabilities, size))[None]
            return self._undo(steps[:-1], labels, like.meta, ops[:-1])[0]
        return first_argmax(self._undo(steps, probabilities, like.meta, ops))

    @staticmethod
    def _undo(steps: Sequence[Transform], data: torch.Tensor, meta: dict, ops: list[dict]) -> torch.Tensor:
        """Apply the inverse of ``steps`` (recorded as ``ops``) to channel-first ``data``."""
        if not steps:
            return torch.as_tensor(data)
        tracked = MetaTensor(data, meta=meta, applied_operations=ops)
        with torch.no_grad():
            return torch.as_tensor(Compose(list(steps)).inverse(tracked))


_MAX_FAST_LABELS = 254  # resized_argmax marks undecided cells with the uint8 value 255
# above this share of mixed cells resized_argmax interpolates everything
# (an undecided voxel costs ~3x an interpolated one)
_MAX_MIXED_FRACTION = 0.25


def first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Index of the largest channel of ``scores`` ``(C, *spatial)``, the first one on ties.

    Equal to ``scores.argmax(0)``, as ``uint8`` and several times faster
    (torch reduces over a leading axis slowly) up to 255 channels.
    """
    if scores.shape[0] > 255:
        return scores.argmax(0)
    if scores.device.type == "cpu":  # numpy's broadcast comparison is ~4x faster than torch's on one thread
        return torch.from_numpy(_first_argmax_numpy(scores.detach().numpy()))
    return _first_argmax_torch(scores)


def _first_argmax_numpy(scores: np.ndarray) -> np.ndarray:
    n = scores.shape[0]
    rank = np.arange(n, 0, -1, dtype=np.uint8).reshape(n, *([1] * (scores.ndim - 1)))
    best = np.equal(scores, scores.max(0)).view(np.uint8)
    best *= rank
    return np.subtract(np.uint8(n), best.max(0))  # n - (n - first index of the maximum)


def _first_argmax_torch(scores: torch.Tensor) -> torch.Tensor:
    n = scores.shape[0]
    rank = torch.arange(n, 0, -1, dtype=torch.uint8, device=scores.device).view(n, *([1] * (scores.ndim - 1)))
    best = (scores == scores.amax(0)).view(torch.uint8).mul_(rank).amax(0)  # n - first index of the maximum
    return best.neg_().add_(n)


def linear_resize_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of ``torch.nn.functional.interpolate`` (linear, ``align_corners=False``) on one axis.

    Output voxel ``j`` is ``w0[j] * x[i0[j]] + w1[j] * x[i1[j]]``; the source
    coordinate is ``(j + 0.5) * n_in / n_out - 0.5``, clamped at 0 and rounded
    once to float32, as torch's CPU kernel computes it.

    Returns
    -------
    tuple of numpy.ndarray
        ``i0, i1`` (int64) and ``w0, w1`` (float32), each of length ``n_out``.
    """
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = np.maximum((scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32), np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, np.float32(1.0) - w1, w1


def resized_argmax(probabilities: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    """``first_argmax`` of CPU ``probabilities`` ``(C <= 254, *spatial)`` after linear resizing to ``size``.

    The labels of ``first_argmax(interpolate(probabilities, size))`` without
    interpolating every channel everywhere: an interpolated vector is a convex
    combination of the 2**d source vectors around it (its cell), so where one
    label is the argmax at every corner it is the argmax of the combination
    too (rounding is monotone, ties go to the first label as in argmax). Only
    output voxels in cells whose corners disagree (label boundaries, typically
    a few percent) are interpolated, with torch's indices, weights and order of
    operations (:func:`linear_resize_weights`); torch's kernel may fuse a
    multiply-add where numpy rounds twice, so such a voxel can differ only
    where two classes agree to float32 precision (~1e-7). When more than a
    quarter of the cells are mixed (noisy labels) every channel is interpolated.
    The boundary voxels are shared among ``torch.get_num_threads()`` threads.

    Returns
    -------
    numpy.ndarray
        ``uint8`` labels of shape ``size``.
    """
    n, *shape = probabilities.shape
    labels = first_argmax(probabilities).numpy()
    if tuple(shape) == tuple(size):  # MONAI's Resize does not interpolate to the same shape
        return labels
    # cell i spans source voxels i and i + 1 on every axis (i alone at the far edge): its label, or 255 when mixed
    hi, lo = labels, labels
    for axis, m in enumerate(shape):
        if m > 1:
            hi, lo = _pair_reduce(np.maximum, hi, axis), _pair_reduce(np.minimum, lo, axis)
    mixed = hi != lo
    if np.count_nonzero(mixed) > _MAX_MIXED_FRACTION * mixed.size:  # noisy labels: interpolating everything is cheaper
        resized = torch.nn.functional.interpolate(probabilities[None], size=size, mode=_linear(len(size)))
        return first_argmax(resized[0]).numpy()
    cells = np.where(mixed, np.uint8(255), hi)
    axes = [linear_resize_weights(m, s) for m, s in zip(shape, size, strict=True)]
    out = cells
    for axis, (i0, *_) in enumerate(axes):
        out = out.take(i0, axis=axis)
    undecided = np.flatnonzero(out == 255)
    planes = probabilities.reshape(n, -1).numpy()
    # numpy releases the GIL: split the boundary voxels over torch's intra-op threads
    parts = np.array_split(undecided, max(1, min(torch.get_num_threads(), undecided.size // MIN_VOXELS_PER_THREAD)))
    with ThreadPoolExecutor(len(parts)) if len(parts) > 1 else contextlib.nullcontext() as pool:
        part_labels = (pool.map if pool else map)(lambda part: _boundary_labels(planes, part, axes, shape, size), parts)
        for part, labels_of_part in zip(parts, part_labels, strict=True):
            out.ravel()[part] = labels_of_part
    return out


MIN_VOXELS_PER_THREAD = 32768  # below this a thread's start-up outweighs its share of the interpolation


def _boundary_labels(
    planes: np.ndarray,
    voxels: np.ndarray,
    axes: list[tuple[np.ndarray, ...]],
    shape: Sequence[int],
    size: tuple[int, ...],
) -> np.ndarray:
    """``first_argmax`` of the linearly interpolated ``planes`` at flat output indices ``voxels``.

    ``planes`` is ``(C, prod(shape))`` on the source grid ``shape``, ``axes``
    holds :func:`linear_resize_weights` of each axis and ``size`` is the output shape.
    """
    if not voxels.size:
        return np.empty(0, np.uint8)
    strides = np.cumprod([1, *shape[:0:-1]])[::-1]
    picks = [  # per axis: flat source offsets of both neighbours and their weights, for each voxel
        [t.take(i) for t in (i0 * stride, i1 * stride, w0, w1)]
        for (i0, i1, w0, w1), stride, i in zip(axes, strides, np.unravel_index(voxels, size), strict=True)
    ]
    corners = [0]  # flat source index of each corner, the first axis varying slowest
    for o0, o1, _, _ in picks:
        corners = [c + o for c in corners for o in (o0, o1)]
    return _first_argmax_numpy(np.stack([_interpolate(plane, corners, picks) for plane in planes]))


def _interpolate(plane: np.ndarray, corners: list[np.ndarray], picks: list[list[np.ndarray]]) -> np.ndarray:
    """Linear interpolation of one channel from its 2**d corner values, in torch's order of operations.

    Torch nests the axes (the first outermost) and computes ``t0 * w0 + t1 * w1``
    at each level; one channel at a time keeps its values in cache, and the
    gathered corner arrays are reused in place.
    """
    level = [plane.take(c) for c in corners]
    for _, _, w0, w1 in reversed(picks):
        for t0, t1 in zip(level[0::2], level[1::2], strict=True):
            t0 *= w0
            t1 *= w1
            t0 += t1
        level = level[0::2]
    return level[0]


def _pair_reduce(op: np.ufunc, x: np.ndarray, axis: int) -> np.ndarray:
    """``op(x[i], x[i + 1])`` along ``axis``, the last position kept as it is."""
    m = x.shape[axis]
    out = x.copy()
    head, tail = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    head[axis], tail[axis] = slice(0, m - 1), slice(1, m)
    op(x[tuple(head)], x[tuple(tail)], out=out[tuple(head)])
    return out


class ResampleToSpacingd(MapTransform):
    """Dictionary transform: resample every key to the grid :class:`Preprocessor` uses (same shape rule).

    ``modes`` gives the interpolation per key (linear for images, ``nearest-exact`` for labels).
    """

    def __init__(self, keys: list[str], spacing_mm: list[float], modes: list[str]) -> None:
        super().__init__(keys)
        self.spacing_mm, self.modes = spacing_mm, modes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.keys[0]]
        nd = ref.ndim - 1
        shape = resampled_shape(tuple(ref.shape[1:]), tuple(ref.pixdim[:nd].tolist()), self.spacing_mm)
        for key, mode in zip(self.keys, self.modes, strict=True):
            d[key] = Resize(shape, mode=mode, dtype=torch.float32)(d[key])
        return d


class ImageToTensord(MapTransform):
    """Dictionary transform: medseg :class:`Image` values -> channel-first ``MetaTensor`` (float32)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = image_to_tensor(d[key])
        return d


def cached_transforms(config: WorkflowConfig, *, intensity: bool = True) -> Compose:
    """Deterministic training/validation transforms, run once per case and cached.

    ``{"image": Image, "label": Image}`` -> tensors on the workflow's grid,
    intensity-normalised (unless ``intensity`` is False: training cases of a
    workflow with ``augment.hed_jitter``, whose stains are jittered on the raw
    RGB first), padded to at least the patch size, with per-class voxel
    indices for class-balanced patch sampling.
    """
    keys = ["image", "label"]
    steps: list[Transform] = [ImageToTensord(keys)]
    if config.orientation:
        steps.append(Orientationd(keys, axcodes=config.orientation, labels=_RAS_LABELS))
    if config.target_spacing and config.resample == "spacing":
        steps.append(
            Spacingd(keys, pixdim=config.target_spacing, mode=(_linear(config.dims), "nearest"), padding_mode="border")
        )
    elif config.target_spacing:
        steps.append(ResampleToSpacingd(keys, config.target_spacing, modes=[_linear(config.dims), "nearest-exact"]))
    steps += [
        *([_intensity_transform_d(config, "image")] if intensity else []),
        SpatialPadd(keys, spatial_size=config.patch_size),
        EnsureTyped(keys, track_meta=False),
        ClassesToIndicesd("label", num_classes=config.n_labels, indices_postfix="_cls_indices"),
    ]
    return Compose(steps)


def turns_patches(config: WorkflowConfig) -> bool:
    """Whether training turns its patches by 90 degrees in the plane of axes 0 and 1: ``augment.rotate90`` and a
    square patch (a non-square patch turned 90 degrees would not stack with the others of its batch)."""
    return bool(config.augment.rotate90 and config.patch_size[0] == config.patch_size[1])


def random_transforms(config: WorkflowConfig, device: torch.device | str = "cpu") -> Compose:
    """Random patch sampling and augmentation, run every epoch on ``device``.

    Tensors are moved to ``device`` first, so on a CUDA machine the crops and
    augmentations run on the GPU. Patches are drawn class-balanced: a share
    ``train.pos_fraction`` centred on foreground, spread evenly over the labels.
    With ``augment.hed_jitter`` the whole cached case (raw RGB) is stain-jittered
    and then intensity-normalised before the crop.
    """
    keys = ["image", "label"]
    aug, tr, nd = config.augment, config.train, config.dims
    n_fg = config.n_labels - 1
    ratios = [1.0 - tr.pos_fraction] + [tr.pos_fraction / n_fg] * n_fg
    steps: list[Transform] = [ToDeviced(keys, device=torch.device(device))]
    if aug.hed_jitter > 0:
        steps += [HEDJitterd("image", aug.hed_jitter, aug.prob), _intensity_transform_d(config, "image")]
    steps += [
        RandCropByLabelClassesd(
            keys,
            label_key="label",
            spatial_size=config.patch_size,
            ratios=ratios,
            num_classes=config.n_labels,
            num_samples=tr.samples_per_image,
            indices_key="label_cls_indices",
            warn=False,
        ),
    ]
    steps += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in aug.flip_axes]
    if turns_patches(config):
        steps.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    if aug.rotate_deg > 0 or aug.scale_range > 0:
        rad = float(np.deg2rad(aug.rotate_deg))
        steps.append(
            RandAffined(
                keys,
                prob=aug.prob,
                rotate_range=(rad,) if nd == 2 else (rad, rad, rad),
                scale_range=(aug.scale_range,) * nd,
                mode=("bilinear", "nearest"),
                padding_mode="border",
                device=torch.device(device),
            )
        )
    if aug.elastic > 0:
        control_px = [max(2.0, p / 4) for p in config.patch_size]
        steps.append(
            Rand2DElasticd(
                keys,
                spacing=control_px,
                magnitude_range=(aug.elastic * min(control_px),) * 2,
                prob=aug.prob,
                mode=("bilinear", "nearest"),
                padding_mode="border",
                device=torch.device(device),
            )
        )
    if aug.enhance_hu > 0:
        steps.append(contrast_enhancement(config))
    if aug.intensity_scale > 0:
        steps.append(RandScaleIntensityd("image", factors=aug.intensity_scale, prob=aug.prob))
    if aug.intensity_shift > 0:
        steps.append(RandShiftIntensityd("image", offsets=aug.intensity_shift, prob=aug.prob))
    if aug.noise_std > 0:
        steps.append(RandGaussianNoised("image", std=aug.noise_std, prob=aug.prob))
    if aug.gamma is not None:
        steps.append(RandAdjustContrastd("image", gamma=aug.gamma, prob=aug.prob))
    return Compose(steps)
