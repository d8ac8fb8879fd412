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

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensity,
    NormalizeIntensityd,
    Orientation,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
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

from medseg.config import CTIntensity, PercentileIntensity, WorkflowConfig
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
    return torch.device(device)


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
    data = torch.as_tensor(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)
    return MetaTensor(data, affine=torch.as_tensor(ras_affine(image), dtype=torch.float64))


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
    return [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_mm)]


def _linear(ndim: int) -> str:
    return "bilinear" if ndim == 2 else "trilinear"


def intensity_transform(config: WorkflowConfig) -> Transform:
    """The modality preset as one MONAI array transform."""
    preset = config.intensity
    if isinstance(preset, CTIntensity):
        lo, hi = preset.window_hu
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    if isinstance(preset, PercentileIntensity):
        lo, hi = preset.percentiles
        return ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)
    return NormalizeIntensity(channel_wise=True)


def _intensity_transform_d(config: WorkflowConfig, key: str) -> MapTransform:
    preset = config.intensity
    if isinstance(preset, CTIntensity):
        lo, hi = preset.window_hu
        return ScaleIntensityRanged(key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    if isinstance(preset, PercentileIntensity):
        lo, hi = preset.percentiles
        return ScaleIntensityRangePercentilesd(
            key, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
        )
    return NormalizeIntensityd(key, channel_wise=True)


class Preprocessor:
    """Prepare an image as network input and map predictions back to its grid.

    Reorientation (``Orientation``) and resampling to the model spacing
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
        x = image_to_tensor(image, device=device)
        steps: list[Transform] = []
        if config.orientation:
            steps.append(Orientation(axcodes=config.orientation, labels=_RAS_LABELS))
            x = steps[-1](x)
        if config.spacing_mm and config.resample == "spacing":
            steps.append(
                Spacing(pixdim=config.spacing_mm, mode=_linear(image.ndim), padding_mode="border", dtype=torch.float32)
            )
            x = steps[-1](x)
        elif config.spacing_mm:
            shape = resampled_shape(tuple(x.shape[1:]), tuple(x.pixdim[: image.ndim].tolist()), config.spacing_mm)
            steps.append(Resize(shape, mode=_linear(image.ndim), dtype=torch.float32))
            x = steps[-1](x)
        self.spatial = Compose(steps)
        return self.intensity(x)

    def invert(self, data: torch.Tensor, like: MetaTensor) -> torch.Tensor:
        """Map channel-first ``data`` on the grid of ``like`` (the latest output of this preprocessor) to the input grid.

        Interpolation follows the forward resampling (linear), so pass class
        probabilities or logits rather than label indices.
        """
        if not self.spatial.transforms:  # the model works on the input's own grid
            return torch.as_tensor(data)
        tracked = MetaTensor(data, meta=like.meta, applied_operations=list(like.applied_operations))
        with torch.no_grad():
            return torch.as_tensor(self.spatial.inverse(tracked))


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
        for key, mode in zip(self.keys, self.modes):
            d[key] = Resize(shape, mode=mode, dtype=torch.float32)(d[key])
        return d


class ImageToTensord(MapTransform):
    """Dictionary transform: medseg :class:`Image` values -> channel-first ``MetaTensor`` (float32)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = image_to_tensor(d[key])
        return d


def cached_transforms(config: WorkflowConfig) -> Compose:
    """Deterministic training/validation transforms, run once per case and cached.

    ``{"image": Image, "label": Image}`` -> tensors on the workflow's grid,
    intensity-normalised, padded to at least the patch size, with per-class
    voxel indices for class-balanced patch sampling.
    """
    keys = ["image", "label"]
    steps: list[Transform] = [ImageToTensord(keys)]
    if config.orientation:
        steps.append(Orientationd(keys, axcodes=config.orientation, labels=_RAS_LABELS))
    if config.spacing_mm and config.resample == "spacing":
        steps.append(
            Spacingd(keys, pixdim=config.spacing_mm, mode=(_linear(config.dims), "nearest"), padding_mode="border")
        )
    elif config.spacing_mm:
        steps.append(ResampleToSpacingd(keys, config.spacing_mm, modes=[_linear(config.dims), "nearest-exact"]))
    steps += [
        _intensity_transform_d(config, "image"),
        SpatialPadd(keys, spatial_size=config.patch_size),
        EnsureTyped(keys, track_meta=False),
        ClassesToIndicesd("label", num_classes=config.n_labels, indices_postfix="_cls_indices"),
    ]
    return Compose(steps)


def random_transforms(config: WorkflowConfig, device: torch.device | str = "cpu") -> Compose:
    """Random patch sampling and augmentation, run every epoch on ``device``.

    Tensors are moved to ``device`` first, so on a CUDA machine the crops and
    augmentations run on the GPU. Patches are drawn class-balanced: a share
    ``train.pos_fraction`` centred on foreground, spread evenly over the labels.
    """
    keys = ["image", "label"]
    aug, tr, nd = config.augment, config.train, config.dims
    n_fg = config.n_labels - 1
    ratios = [1.0 - tr.pos_fraction] + [tr.pos_fraction / n_fg] * n_fg
    steps: list[Transform] = [
        ToDeviced(keys, device=torch.device(device)),
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
    if aug.rotate90:
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
    if aug.intensity_scale > 0:
        steps.append(RandScaleIntensityd("image", factors=aug.intensity_scale, prob=aug.prob))
    if aug.intensity_shift > 0:
        steps.append(RandShiftIntensityd("image", offsets=aug.intensity_shift, prob=aug.prob))
    if aug.noise_std > 0:
        steps.append(RandGaussianNoised("image", std=aug.noise_std, prob=aug.prob))
    if aug.gamma is not None:
        steps.append(RandAdjustContrastd("image", gamma=aug.gamma, prob=aug.prob))
    return Compose(steps)
