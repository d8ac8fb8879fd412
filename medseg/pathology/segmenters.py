"""Nuclei segmenters for H&E without training, and segmenters with slide-wide statistics.

* ``he:SPEC`` -- :class:`HaematoxylinSegmenter`: the haematoxylin channel of
  colour deconvolution (:mod:`medseg.pathology.stain`) given to any one-channel
  segmenter ``SPEC`` (``he:sample_data/models/nuclei_2d``: the fluorescence
  nuclei model sees nuclei bright on dark, as in fluorescence);
* ``he:otsu`` -- :class:`OtsuNucleiSegmenter`: haematoxylin above an Otsu
  threshold, touching nuclei split by the distance-transform watershed of its
  post-processing rules (no torch, fast: the memory benchmark's segmenter).

:func:`with_reference` freezes the per-image statistics of a segmenter
(percentile or z-score normalisation, Otsu thresholds, stain vectors) at the
values of a reference image: the whole slide's overview, so that every tile
of a slide is processed alike and no seam appears between tiles.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medseg.io.image import Image, LabelMap
from medseg.pathology.stain import RUIFROK_HED, StainMatrix, deconvolve, macenko
from medseg.segmenters.base import Segmenter

_OTSU_RULES = {"nucleus": {"min_size": "10 um2", "fill_holes": True, "split_touching": True, "min_separation": "3 um"}}


def _haematoxylin(image: Image, stains: StainMatrix) -> Image:
    """The haematoxylin amount (OD, float32) of an RGB image, on its grid."""
    return image.with_array(deconvolve(image, stains)[..., 0].astype(np.float32), intensity_unit="od")


class HaematoxylinSegmenter:
    """Nuclei of an RGB H&E image: its haematoxylin channel segmented by a one-channel segmenter.

    Parameters
    ----------
    inner : Segmenter
        Takes a one-channel 2D image (nuclei bright), e.g. a fluorescence nuclei model.
    stains : StainMatrix
        Stain vectors for the deconvolution (Ruifrok & Johnston by default; :meth:`with_reference`
        fits the slide's own with Macenko's method).
    """

    spatial_dims = 2
    in_channels = 3

    def __init__(self, inner: Segmenter, stains: StainMatrix = RUIFROK_HED) -> None:
        self.inner, self.stains = inner, stains

    @property
    def name(self) -> str:
        """``he[<inner name>]``."""
        return f"he[{self.inner.name}]"

    @property
    def label_names(self) -> Mapping[int, str]:
        """The inner segmenter's labels."""
        return self.inner.label_names

    @property
    def postprocess(self) -> Mapping[str, Any] | None:
        """The inner segmenter's post-processing rules."""
        return self.inner.postprocess

    def fingerprint(self) -> str:
        """Hash of the inner segmenter's fingerprint and the stain vectors."""
        text = json.dumps([self.inner.fingerprint(), np.round(self.stains.vectors, 6).tolist()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def segment(self, image: Image, **options: Any) -> LabelMap:
        """The inner segmenter's labels of the haematoxylin channel, on ``image``'s grid (``options``, such as a
        tile's ``part``, go to the inner segmenter)."""
        return self.inner.segment(_haematoxylin(image, self.stains), **options)

    def with_reference(self, reference: Image, mask: np.ndarray | None = None) -> HaematoxylinSegmenter:
        """Stain vectors fitted to ``reference`` (Macenko; kept when it has too few stained pixels), inner frozen too."""
        from medseg.errors import GeometryError

        try:
            stains = macenko(reference, mask=mask).matrix
        except GeometryError:
            stains = self.stains
        return HaematoxylinSegmenter(with_reference(self.inner, _haematoxylin(reference, stains), mask), stains)


class OtsuNucleiSegmenter:
    """Nuclei of an RGB H&E image: haematoxylin above a threshold (Otsu's, or fixed from a reference).

    Labels ``{1: "nucleus"}``; its post-processing rules drop specks under
    10 um^2, fill holes and split touching nuclei at least 3 um apart.
    """

    name = "he_otsu"
    spatial_dims = 2
    in_channels = 3
    label_names: Mapping[int, str] = {1: "nucleus"}
    postprocess: Mapping[str, Any] | None = _OTSU_RULES

    def __init__(self, threshold: float | None = None, stains: StainMatrix = RUIFROK_HED) -> None:
        self.threshold, self.stains = threshold, stains

    def fingerprint(self) -> str:
        """Hash of the threshold, the stain vectors and the rules."""
        text = json.dumps([self.threshold, np.round(self.stains.vectors, 6).tolist(), _OTSU_RULES])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _cut(self, h: np.ndarray) -> float:
        from skimage.filters import threshold_otsu

        return self.threshold if self.threshold is not None else float(threshold_otsu(h))

    def segment(self, image: Image) -> LabelMap:
        """1 where the haematoxylin amount exceeds the threshold, on ``image``'s grid."""
        h = _haematoxylin(image, self.stains).array
        return image.with_labels((h > self._cut(h)).astype(np.uint8), dict(self.label_names))

    def with_reference(self, reference: Image, mask: np.ndarray | None = None) -> OtsuNucleiSegmenter:
        """The Otsu threshold of ``reference``'s haematoxylin (its tissue pixels with ``mask``), kept fixed."""
        h = _haematoxylin(reference, self.stains).array
        return OtsuNucleiSegmenter(self._cut(h[mask] if mask is not None and mask.any() else h), self.stains)


def channel_percentiles(values: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(values, q, axis=0)`` (linear interpolation) of ``(pixels, channels)`` values, shape
    ``(len(q), channels)``; integer values of a span up to 2^20 are counted instead of partitioned (exact, one pass:
    an 8- or 16-bit overview of millions of pixels in milliseconds)."""
    counted = values.size and values.dtype.kind in "ui"
    low, high = (int(values.min()), int(values.max())) if counted else (0, 1 << 20)
    if high - low >= 1 << 20:
        return np.percentile(values.astype(np.float64, copy=False), q, axis=0)
    offset = 0 if low >= 0 and high < 1 << 20 else low  # bincount counts non-negative values from 0
    rank = np.asarray(q, np.float64) / 100.0 * (len(values) - 1)  # positions in the sorted values
    below = np.floor(rank).astype(np.int64)
    wanted = np.concatenate([below, np.minimum(below + 1, len(values) - 1)])
    out = np.empty((len(rank), values.shape[1]))
    for c in range(values.shape[1]):
        channel = values[:, c] if offset == 0 else values[:, c].astype(np.int64) - offset
        at = np.searchsorted(np.cumsum(np.bincount(channel)), wanted, side="right") + offset
        out[:, c] = at[: len(rank)] + (rank - below) * (at[len(rank):] - at[: len(rank)])
    return out


def reference_window(preset: Any, reference: Image, mask: np.ndarray | None = None) -> Any:
    """A per-image intensity preset frozen at ``reference``'s statistics (a ``window`` preset), or None when fixed.

    Percentile presets take their percentiles of ``reference`` per channel, the
    RGB z-score its mean and standard deviation (``low`` = mean, ``high`` = mean + std, unclipped).
    """
    from medseg.config import PercentileIntensity, RGBIntensity, WindowIntensity

    arr = reference.array.reshape(-1, reference.n_channels)
    if mask is not None and mask.any():
        arr = arr[np.asarray(mask).reshape(-1)]
    if isinstance(preset, PercentileIntensity):
        lo, hi = channel_percentiles(arr, preset.percentiles)
        hi = np.maximum(hi, lo + 1e-6)
        return WindowIntensity(preset="window", low=lo.tolist(), high=hi.tolist(), clip=True)
    if isinstance(preset, RGBIntensity):
        mean, std = arr.mean(axis=0, dtype=np.float64), np.maximum(arr.std(axis=0, dtype=np.float64), 1e-8)
        return WindowIntensity(preset="window", low=mean.tolist(), high=(mean + std).tolist(), clip=False)
    return None


def with_reference(segmenter: Segmenter, reference: Image, mask: np.ndarray | None = None) -> Segmenter:
    """``segmenter`` with its per-image statistics taken once from ``reference`` (e.g. a slide's overview).

    A segmenter with its own ``with_reference(reference, mask)`` method uses it;
    a network model (a ``config`` with a per-image intensity preset) gets a
    copy whose preset is the fixed window :func:`reference_window` gives; any
    other segmenter is returned as it is (it has no per-image statistics medseg knows of).
    ``mask`` selects the reference's pixels to use (the tissue).
    """
    own = getattr(segmenter, "with_reference", None)
    if own is not None:
        return own(reference, mask)
    config = getattr(segmenter, "config", None)
    window = reference_window(config.intensity, reference, mask) if hasattr(config, "intensity") else None
    if window is None:
        return segmenter
    frozen = copy.copy(segmenter)
    frozen.config = config.model_copy(update={"intensity": window})
    return frozen


def load_he(spec: str, **options: Any) -> Segmenter:
    """The ``he:`` scheme: ``he:otsu``, or ``he:SPEC`` for the haematoxylin channel through segmenter ``SPEC``."""
    if spec == "otsu":
        return OtsuNucleiSegmenter()
    from medseg.segmenters.base import load_segmenter

    return HaematoxylinSegmenter(load_segmenter(spec, **options))


__all__ = ["HaematoxylinSegmenter", "OtsuNucleiSegmenter", "load_he", "reference_window", "with_reference"]
