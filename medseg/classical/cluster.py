"""Clustering of intensities (k-means, Gaussian mixture) and SLIC superpixels."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from medseg.classical.base import ClassicalSegmenter, register
from medseg.io.image import Image
from medseg.postprocess import Length, length_voxels

_PREDICT_CHUNK = 1 << 20  # voxels labelled per call: bounded memory for the mixture's per-class probabilities


class _IntensityClusters(ClassicalSegmenter):
    """Clusters of voxel intensities (all channels), fitted on a random subsample, labelled darkest first.

    Label 0 is the cluster of lowest mean intensity, ``classes - 1`` the
    brightest: the order is set by the clusters' means, not by the
    estimator's internal order, so it is stable across seeds and versions.
    ``sample`` voxels (drawn with ``seed``) are fitted; every voxel is then
    assigned by the fitted model.
    """

    in_channels: ClassVar[int | None] = None
    classes: int = Field(3, ge=2, le=16)
    sample: int = Field(100_000, ge=100)
    seed: int = 0

    @property
    def label_names(self) -> dict[int, str]:  # type: ignore[override]
        """``class_1`` ... ``class_{classes-1}``, brightest last (0, the darkest, is the background)."""
        return {k: f"class_{k}" for k in range(1, self.classes)}

    def _estimator(self) -> Any:
        raise NotImplementedError

    def _means(self, fitted: Any) -> np.ndarray:
        raise NotImplementedError

    def _labels(self, image: Image) -> np.ndarray:
        features = image.array.reshape(-1, image.n_channels).astype(np.float32, copy=False)
        rng = np.random.default_rng(self.seed)
        picked = features[rng.choice(len(features), size=min(self.sample, len(features)), replace=False)]
        fitted = self._estimator().fit(picked)
        rank = np.argsort(np.argsort(self._means(fitted).mean(axis=1), kind="stable"), kind="stable").astype(np.uint8)
        labels = np.empty(len(features), np.uint8)
        for start in range(0, len(features), _PREDICT_CHUNK):
            labels[start : start + _PREDICT_CHUNK] = rank[fitted.predict(features[start : start + _PREDICT_CHUNK])]
        return labels.reshape(image.shape)


@register
class KMeans(_IntensityClusters):
    """k-means of the intensities: scikit-learn's ``KMeans`` (k-means++ initialisation, Lloyd iterations, ``n_init`` restarts)."""

    method: ClassVar[str] = "kmeans"
    n_init: int = Field(4, ge=1)

    def _estimator(self) -> Any:
        from sklearn.cluster import KMeans as SkKMeans

        return SkKMeans(n_clusters=self.classes, n_init=self.n_init, random_state=self.seed)

    def _means(self, fitted: Any) -> np.ndarray:
        return fitted.cluster_centers_


@register
class GaussianMixture(_IntensityClusters):
    """Gaussian mixture of the intensities: scikit-learn's ``GaussianMixture`` (EM, k-means initialisation); voxels take their most probable class."""

    method: ClassVar[str] = "gmm"
    covariance: Literal["full", "diag", "spherical", "tied"] = "full"

    def _estimator(self) -> Any:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        return SkGaussianMixture(n_components=self.classes, covariance_type=self.covariance, random_state=self.seed)

    def _means(self, fitted: Any) -> np.ndarray:
        return fitted.means_


@register
class SLIC(ClassicalSegmenter):
    """SLIC superpixels of side about ``size`` (``"10 mm"``, ``"20 px"``), in physical space: one value per superpixel.

    scikit-image's ``slic`` with the voxel ``spacing`` (so superpixels are
    compact in mm, not in voxels), on intensities scaled to [0, 1] between
    their 1st and 99th percentiles so that ``compactness`` means the same for
    CT, microscopy and photographs; RGB images are clustered in CIELAB.
    """

    method: ClassVar[str] = "slic"
    label_names: ClassVar[dict[int, str]] = {}
    in_channels: ClassVar[int | None] = None
    size: Length = "20 px"
    compactness: float = Field(0.1, gt=0)
    iterations: int = Field(10, ge=1)

    def _labels(self, image: Image) -> np.ndarray:
        from skimage.segmentation import slic

        side = length_voxels(self.size, image)
        n_segments = max(1, round(float(np.prod(np.array(image.shape) / side))))
        voxels = image.array.astype(np.float32)
        rgb = image.channel_axis and image.n_channels == 3
        if not rgb:
            low, high = np.percentile(voxels, [1, 99])
            voxels = np.clip((voxels - low) / max(high - low, 1e-6), 0, 1)
            compactness = self.compactness
        else:
            voxels = voxels / 255.0 if image.array.dtype == np.uint8 else voxels
            compactness = self.compactness * 100  # CIELAB spans about 100 units
        spacing = np.array(image.spacing) / min(image.spacing)
        return slic(voxels, n_segments=n_segments, compactness=compactness, max_num_iter=self.iterations,
                    spacing=spacing, channel_axis=-1 if image.channel_axis else None, convert2lab=rgb,
                    start_label=1, enforce_connectivity=True).astype(np.uint32)
