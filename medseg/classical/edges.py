"""Edge-based segmentation: Sobel and Canny edges in 2D and 3D, closed and filled into regions."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from medseg.classical.base import ClassicalSegmenter, from_sitk_array, register, scalar_voxels, to_sitk_scalar
from medseg.io.image import Image
from medseg.labelmap import fill_holes
from medseg.postprocess import Length, length_voxels


class _EdgeRegions(ClassicalSegmenter):
    """Edges closed by a morphological closing of radius ``closing``, then filled: label 1 ``region``."""

    label_names: ClassVar[dict[int, str]] = {1: "region"}
    sigma: Length = "1 px"
    closing: Length = "2 px"

    def edges(self, image: Image) -> np.ndarray:
        """The boolean edge map."""
        raise NotImplementedError

    def _labels(self, image: Image) -> np.ndarray:
        import SimpleITK as sitk

        edges = self.edges(image)
        radius = [int(r) for r in np.rint(length_voxels(self.closing, image))]
        if any(radius):  # SimpleITK's closing: separable per-axis radius in voxels, ball kernel
            closed = sitk.BinaryMorphologicalClosing(to_sitk_scalar(image, edges.astype(np.uint8)), radius, sitk.sitkBall)
            edges = from_sitk_array(closed).astype(bool)
        return fill_holes(edges)

    def _sigma_mm(self, image: Image) -> float:
        return float(np.mean(length_voxels(self.sigma, image) * np.array(image.spacing)))


@register
class Sobel(_EdgeRegions):
    """Sobel edges: gradient magnitude (image units per mm) above ``threshold``, Otsu's of the magnitude by default.

    scikit-image's ``sobel`` along each axis (n-dimensional), divided by the
    spacing, after a Gaussian of ``sigma`` (scipy ``gaussian_filter``, per-axis
    voxels from the length); Otsu via scikit-image's ``threshold_otsu``.
    """

    method: ClassVar[str] = "sobel"
    threshold: float | None = Field(None, gt=0)

    def magnitude(self, image: Image) -> np.ndarray:
        """Sobel gradient magnitude in image units per mm."""
        from scipy.ndimage import gaussian_filter
        from skimage.filters import sobel

        smooth = gaussian_filter(scalar_voxels(image), sigma=length_voxels(self.sigma, image))
        squares = [(sobel(smooth, axis=a) / s) ** 2 for a, s in enumerate(image.spacing)]
        return np.sqrt(np.sum(squares, axis=0))

    def edges(self, image: Image) -> np.ndarray:
        from skimage.filters import threshold_otsu

        magnitude = self.magnitude(image)
        return magnitude > (self.threshold if self.threshold is not None else threshold_otsu(magnitude))


@register
class Canny(_EdgeRegions):
    """Canny edges in 2D and 3D: SimpleITK's ``CannyEdgeDetection`` (Gaussian variance in mm², non-maximum suppression, hysteresis).

    scikit-image's ``canny`` is 2D only; ITK's works in any dimension and in
    physical units. ``upper`` and ``lower`` are gradient magnitudes (image
    units per mm); by default Otsu's threshold of the smoothed gradient
    magnitude and half of it.
    """

    method: ClassVar[str] = "canny"
    lower: float | None = Field(None, ge=0)
    upper: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Canny:
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower {self.lower:g} is above upper {self.upper:g}")
        return self

    def edges(self, image: Image) -> np.ndarray:
        import SimpleITK as sitk
        from skimage.filters import threshold_otsu

        source = to_sitk_scalar(image, scalar_voxels(image))
        sigma = self._sigma_mm(image)
        upper = self.upper
        if upper is None:
            upper = float(threshold_otsu(from_sitk_array(sitk.GradientMagnitudeRecursiveGaussian(source, sigma))))
        lower = self.lower if self.lower is not None else upper / 2
        edges = sitk.CannyEdgeDetection(source, min(lower, upper), upper, [sigma**2] * image.ndim, [0.01] * image.ndim)
        return from_sitk_array(edges) > 0
