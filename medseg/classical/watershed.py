"""Watersheds: distance-transform (touching objects) and gradient-based with markers."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from pydantic import Field

from medseg.classical.base import (
    ClassicalSegmenter,
    Points,
    from_sitk_array,
    register,
    scalar_voxels,
    to_sitk_scalar,
    voxel_indices,
)
from medseg.classical.threshold import Otsu, Side
from medseg.io.image import Image
from medseg.labelmap import CONNECTIVITY, fill_holes, label_components
from medseg.postprocess import Length, Size, length_voxels, size_mm, split_touching


def typical_separation(components: np.ndarray, n: int, image: Image, fraction: float) -> str:
    """``fraction`` of the median object's equivalent radius (circle or sphere of its size), as a length.

    In mm (px when the spacing is unknown): objects set their own scale, so
    one default serves nuclei at any magnification.
    """
    sizes = np.bincount(components.ravel(order="K"), minlength=n + 1)[1:] * image.voxel_volume_mm3
    median = float(np.median(sizes)) if n else image.voxel_volume_mm3
    radius = math.sqrt(median / math.pi) if image.ndim == 2 else (3 * median / (4 * math.pi)) ** (1 / 3)
    return f"{fraction * radius:.4g} {'mm' if image.spacing_known else 'px'}"


class SplitObjects(ClassicalSegmenter):
    """A foreground mask split into touching objects by :func:`medseg.postprocess.split_touching`: an instance map.

    Seeds are distance peaks at least ``min_separation`` apart (``"4 um"``,
    ``"5 px"``); by default ``separation`` times the median object's
    equivalent radius. Subclasses say how the mask is found.
    """

    label_names: ClassVar[dict[int, str]] = {}
    min_separation: Length | None = None
    separation: float = Field(0.7, gt=0)

    def foreground_mask(self, image: Image) -> np.ndarray:
        """The objects before splitting (boolean, on the image's grid)."""
        raise NotImplementedError

    def _labels(self, image: Image) -> np.ndarray:
        import fastremap

        mask = self.foreground_mask(image)
        components, n = label_components(mask, CONNECTIVITY[image.ndim][-1])
        separation = self.min_separation or typical_separation(components, n, image, self.separation)
        objects, _ = fastremap.renumber(split_touching(mask, image, separation, components=components), preserve_zero=True)
        return objects


@register
class DistanceWatershed(SplitObjects):
    """Touching objects split by a watershed of the distance to the background: an instance map (one value per object).

    The foreground is ``threshold`` (image units) on the ``foreground`` side,
    or Otsu's threshold when none is given (SimpleITK); holes are filled and
    objects below ``min_size`` dropped (cc3d components). The split is
    :func:`medseg.postprocess.split_touching` (``edt`` distance, scikit-image
    ``watershed``; see :class:`SplitObjects` for the seeds).
    """

    method: ClassVar[str] = "distance_watershed"
    threshold: float | None = None
    foreground: Side = "bright"
    min_size: Size | None = None
    fill_holes: bool = True

    def foreground_mask(self, image: Image) -> np.ndarray:
        """The objects before splitting: thresholded, holes filled, small ones dropped."""
        if self.threshold is None:
            mask = Otsu(foreground=self.foreground).segment(image).array.astype(bool)
        else:
            mask = image.array > self.threshold if self.foreground == "bright" else image.array < self.threshold
        if self.fill_holes:
            mask = fill_holes(mask)
        if self.min_size is not None:
            components, n = label_components(mask, CONNECTIVITY[image.ndim][-1])
            sizes = np.bincount(components.ravel(order="K"), minlength=n + 1) * image.voxel_volume_mm3
            mask = (sizes >= size_mm(self.min_size, image))[components] & mask
        return mask


@register
class GradientWatershed(ClassicalSegmenter):
    """Watershed of the gradient magnitude, flooded from markers: one region per marker.

    The gradient is SimpleITK's ``GradientMagnitudeRecursiveGaussian`` (a
    Gaussian derivative in physical units, ``sigma`` a length); the flooding
    is scikit-image's ``watershed``. Markers are the ``seeds`` (world mm, one
    region each, labelled in the order given), or else the gradient's
    regional minima deeper than ``depth`` (image units per mm; default a
    tenth of the gradient's 99th percentile), via scikit-image ``h_minima``.
    """

    method: ClassVar[str] = "gradient_watershed"
    seeds: Points | None = None
    sigma: Length = "1 px"
    depth: float | None = Field(None, gt=0)
    compactness: float = Field(0.0, ge=0)

    @property
    def label_names(self) -> dict[int, str]:  # type: ignore[override]
        """``seed_1`` ... for seeded markers; none (an instance-style region map) for automatic ones."""
        return {k: f"seed_{k}" for k in range(1, len(self.seeds) + 1)} if self.seeds else {}

    def gradient(self, image: Image) -> np.ndarray:
        """Gradient magnitude (image units per mm) at scale ``sigma``."""
        import SimpleITK as sitk

        sigma_mm = float(np.mean(length_voxels(self.sigma, image) * np.array(image.spacing)))
        source = to_sitk_scalar(image, scalar_voxels(image))
        return from_sitk_array(sitk.GradientMagnitudeRecursiveGaussian(source, sigma_mm))

    def _labels(self, image: Image) -> np.ndarray:
        from skimage.morphology import h_minima
        from skimage.segmentation import watershed

        gradient = self.gradient(image)
        if self.seeds:
            markers = np.zeros(image.shape, np.int32)
            markers[tuple(voxel_indices(image, self.seeds).T)] = np.arange(1, len(self.seeds) + 1)
        else:
            depth = self.depth or 0.1 * float(np.percentile(gradient, 99))
            markers, _ = label_components(h_minima(gradient, depth).astype(bool), CONNECTIVITY[image.ndim][-1])
        return watershed(gradient, markers, compactness=self.compactness).astype(np.uint32)
