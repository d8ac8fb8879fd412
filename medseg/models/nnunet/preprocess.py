"""nnU-Net's preprocessing of one case: transpose, crop to the nonzero region, normalise, resample.

The order and the arithmetic are those of nnU-Net's ``DefaultPreprocessor``:

1. ``transpose_forward`` of the axes (and of the spacing);
2. crop to the bounding box of the nonzero mask (any channel != 0, holes
   filled); the mask becomes the "segmentation" (0 inside, -1 outside) that
   ``use_mask_for_norm`` uses (a previous stage's segmentation, cascade, keeps
   its labels inside and gets -1 where it is 0 outside the mask);
3. per channel normalisation before resampling (``CTNormalization``: clip to
   the plans' foreground 0.5/99.5 percentiles, minus mean, over std;
   ``ZScoreNormalization``; ``RescaleTo01Normalization``;
   ``RGBTo01Normalization``; ``NoNormalization``), in float32 with numpy like
   nnU-Net (the same sums in the same order);
4. resampling to the configuration's spacing (2D configurations keep the
   spacing of the first axis), to ``round(old_spacing / new_spacing * shape)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
from scipy.ndimage import binary_fill_holes

from medseg.errors import ModelError
from medseg.models.nnunet.plans import Configuration, Plans
from medseg.models.nnunet.resample import compute_new_shape, resample_to_shape

NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")  # fmt: skip


@dataclass
class CaseProperties:
    """What export needs to undo the preprocessing (nnU-Net's ``properties`` dict)."""

    spacing: list[float]
    shape_before_cropping: tuple[int, ...] = ()
    bbox: list[list[int]] = field(default_factory=list)
    shape_after_cropping: tuple[int, ...] = ()
    shape_after_resampling: tuple[int, ...] = ()


def nonzero_bbox(data: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """The nonzero mask (any channel, holes filled) and its half-open bounding box (whole image when empty)."""
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    mask = binary_fill_holes(mask)
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        bbox.append([int(hit[0]), int(hit[-1]) + 1] if hit.size else [0, mask.shape[axis]])
    return mask, bbox


def _slicer(bbox: list[list[int]]) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in bbox)


def normalize_channel(image: np.ndarray, scheme: str, use_mask: bool, mask: np.ndarray,
                      intensity: dict[str, float] | None, where: str) -> np.ndarray:
    """One channel normalised as nnU-Net's scheme ``scheme`` (``mask``: seg >= 0). Writes into ``image`` (float32)."""
    image = image.astype(np.float32, copy=False)
    if scheme == "ZScoreNormalization":
        if use_mask:
            values = image[mask]
            mean, std = values.mean(), values.std()
            image[mask] = (image[mask] - mean) / (max(std, 1e-8))
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, 1e-8)
        return image
    if scheme == "CTNormalization":
        if not intensity or not all(k in intensity for k in ("mean", "std", "percentile_00_5", "percentile_99_5")):
            raise ModelError("CTNormalization needs foreground_intensity_properties_per_channel (mean, std, "
                             "percentile_00_5, percentile_99_5)", where)
        np.clip(image, intensity["percentile_00_5"], intensity["percentile_99_5"], out=image)
        image -= intensity["mean"]
        image /= max(intensity["std"], 1e-8)
        return image
    if scheme == "NoNormalization":
        return image
    if scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=1e-8, a_max=None)
        return image
    if scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise ModelError("RGBTo01Normalization expects 8-bit RGB values (0..255); the image has "
                             f"{image.min():g}..{image.max():g}", where)
        image /= 255.0
        return image
    raise ModelError(f"normalization scheme {scheme!r} is not supported ({', '.join(NORMALIZATIONS)})", where)


def preprocess(data: np.ndarray, spacing: list[float], plans: Plans, config: Configuration,
               prev_seg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """nnU-Net's ``run_case_npy`` for prediction.

    Parameters
    ----------
    data : ndarray
        ``(channels, a0, a1, a2)`` float32 as the reader gives it (C-contiguous).
    spacing : list of float
        The reader's spacing.
    prev_seg : ndarray, optional
        ``(1, a0, a1, a2)`` segmentation of the previous stage (cascade).

    Returns
    -------
    data, seg, properties
        The preprocessed float32 data (``(c, *shape_after_resampling)``), the
        resampled previous-stage segmentation (or None) and the properties.
    """
    tf = plans.transpose_forward
    data = data.transpose([0, *[i + 1 for i in tf]])
    seg = None if prev_seg is None else np.copy(prev_seg).transpose([0, *[i + 1 for i in tf]])
    spacing_t = [float(spacing[i]) for i in tf]
    props = CaseProperties(spacing=[float(s) for s in spacing], shape_before_cropping=tuple(data.shape[1:]))
    mask, bbox = nonzero_bbox(data)
    sl = _slicer(bbox)
    data = data[(slice(None), *sl)]
    mask = mask[sl][None]
    if seg is not None:
        seg = seg[(slice(None), *sl)]
        seg[(seg == 0) & (~mask)] = -1
        norm_mask = seg[0] >= 0
    else:
        norm_mask = mask[0]
    props.bbox = bbox
    props.shape_after_cropping = tuple(data.shape[1:])
    target = list(config.spacing)
    if len(target) < data.ndim - 1:
        target = [spacing_t[0], *target]
    new_shape = compute_new_shape(data.shape[1:], spacing_t, target)
    n_channels = data.shape[0]
    schemes, masks = config.normalization_schemes, config.use_mask_for_norm
    if len(schemes) < n_channels or len(masks) < n_channels:
        raise ModelError(f"configuration {config.name!r} normalises {len(schemes)} channel(s); the data has "
                         f"{n_channels}", plans.path)
    for c in range(n_channels):
        data[c] = normalize_channel(data[c], schemes[c], masks[c], norm_mask, plans.intensity_properties(c),
                                    str(plans.path))
    fn, kwargs = config.resampling("data")
    data = resample_to_shape(data, new_shape, spacing_t, target, fn, kwargs)
    if seg is not None:
        fn_seg, kwargs_seg = config.resampling("seg")
        seg = resample_to_shape(seg.astype(np.float32), new_shape, spacing_t, target, fn_seg,
                                {**kwargs_seg, "is_seg": True})
    props.shape_after_resampling = tuple(data.shape[1:])
    return data, seg, props


def target_spacing_for_export(plans: Plans, config: Configuration, props: CaseProperties) -> tuple[list[float], list[float]]:
    """``(current spacing, target spacing)`` of the export resampling (nnU-Net axis order, transposed)."""
    spacing_t = [props.spacing[i] for i in plans.transpose_forward]
    current = list(config.spacing) if len(config.spacing) == len(props.shape_after_cropping) else [
        spacing_t[0], *config.spacing]
    return current, spacing_t


def check_resampling(config: Configuration) -> None:
    """A :class:`ModelError` for a resampling function medseg does not reproduce."""
    from medseg.models.nnunet.resample import SUPPORTED_RESAMPLING

    for which in ("data", "probabilities", "seg"):
        if f"resampling_fn_{which}" not in config.data and which == "seg":
            continue
        name, _ = config.resampling(which)
        if name not in SUPPORTED_RESAMPLING:
            raise ModelError(f"configuration {config.name!r}: resampling_fn_{which} {name!r} is not supported "
                             f"({', '.join(SUPPORTED_RESAMPLING)})", config.path)


def check_normalization(config: Configuration) -> None:
    """A :class:`ModelError` for a normalisation scheme medseg does not reproduce."""
    for scheme in config.normalization_schemes:
        if scheme not in NORMALIZATIONS:
            raise ModelError(f"configuration {config.name!r}: normalization scheme {scheme!r} is not supported "
                             f"({', '.join(NORMALIZATIONS)})", config.path)
