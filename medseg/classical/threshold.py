"""Thresholds: fixed, Otsu, multi-Otsu and local (adaptive), on 2D and 3D images."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from medseg.classical.base import ClassicalSegmenter, from_sitk_array, register, scalar_voxels, to_sitk_scalar
from medseg.io.image import Image
from medseg.postprocess import Length, length_voxels

Side = Literal["bright", "dark"]


@register
class Threshold(ClassicalSegmenter):
    """Label 1 where ``lower <= value <= upper`` (image units: HU for CT); either bound may be left out.

    A numpy comparison: the vectorised compare is the whole operation (SimpleITK's
    ``BinaryThreshold`` gives the same voxels after two copies).
    """

    method: ClassVar[str] = "threshold"
    lower: float | None = None
    upper: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Threshold:
        if self.lower is None and self.upper is None:
            raise ValueError("give lower, upper or both")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower {self.lower:g} is above upper {self.upper:g}")
        return self

    def _labels(self, image: Image) -> np.ndarray:
        return within(image.array, self.lower, self.upper)


def within(array: np.ndarray, lower: float | None, upper: float | None) -> np.ndarray:
    """Boolean ``lower <= array <= upper`` (a missing bound is no bound)."""
    inside = np.ones(array.shape, bool) if lower is None else array >= lower
    if upper is not None:
        inside &= array <= upper
    return inside


@register
class Otsu(ClassicalSegmenter):
    """Otsu's threshold: label 1 on the ``bright`` side (above the threshold) or the ``dark`` side.

    SimpleITK's ``OtsuThresholdImageFilter`` (ITK's histogram of ``bins``
    bins, multi-threaded): the reference implementation, so results equal
    ``sitk.OtsuThreshold(image, 0, 1, bins)`` voxel for voxel.
    """

    method: ClassVar[str] = "otsu"
    bins: int = Field(128, ge=2)
    foreground: Side = "bright"

    def threshold(self, image: Image, mask: np.ndarray | None = None) -> float:
        """The Otsu threshold of ``image`` (inside ``mask`` when given), in image units."""
        return float(self._run(image, mask)[1])

    def _labels(self, image: Image) -> np.ndarray:
        return self._run(image, None)[0]

    def _run(self, image: Image, mask: np.ndarray | None) -> tuple[np.ndarray, float]:
        import SimpleITK as sitk

        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetNumberOfHistogramBins(self.bins)
        dark = self.foreground == "dark"
        otsu.SetInsideValue(int(dark))  # ITK's "inside" is at or below the threshold
        otsu.SetOutsideValue(int(not dark))
        source = to_sitk_scalar(image)
        if mask is None:
            out = otsu.Execute(source)
        else:
            otsu.SetMaskOutput(False)
            otsu.SetMaskValue(1)
            out = otsu.Execute(source, to_sitk_scalar(image, np.asarray(mask, np.uint8)))
        return from_sitk_array(out), otsu.GetThreshold()


@register
class MultiOtsu(ClassicalSegmenter):
    """Multi-level Otsu: ``classes`` intensity classes, label 0 the darkest, ``classes - 1`` the brightest.

    SimpleITK's ``OtsuMultipleThresholdsImageFilter`` (ITK's exhaustive search
    over a histogram of ``bins`` bins); results equal
    ``sitk.OtsuMultipleThresholds(image, classes - 1, 0, bins)`` voxel for voxel.
    """

    method: ClassVar[str] = "multi_otsu"
    classes: int = Field(3, ge=2, le=8)
    bins: int = Field(128, ge=4)
    valley_emphasis: bool = False

    @property
    def label_names(self) -> dict[int, str]:  # type: ignore[override]
        """``class_1`` ... ``class_{classes-1}``, brightest last."""
        return {k: f"class_{k}" for k in range(1, self.classes)}

    def _labels(self, image: Image) -> np.ndarray:
        import SimpleITK as sitk

        otsu = sitk.OtsuMultipleThresholdsImageFilter()
        otsu.SetNumberOfThresholds(self.classes - 1)
        otsu.SetNumberOfHistogramBins(self.bins)
        otsu.SetLabelOffset(0)
        otsu.SetValleyEmphasis(self.valley_emphasis)
        return from_sitk_array(otsu.Execute(to_sitk_scalar(image)))


@register
class LocalThreshold(ClassicalSegmenter):
    """Adaptive threshold: label 1 where the value exceeds its neighbourhood's mean (or median) by ``offset``.

    scikit-image's ``threshold_local`` (n-dimensional, one odd block size per
    axis): ``block`` is the neighbourhood's side (``"15 mm"``, ``"31 px"``),
    converted per axis through the spacing. ``offset`` is in image units.
    """

    method: ClassVar[str] = "local"
    block: Length = "31 px"
    offset: float = 0.0
    statistic: Literal["gaussian", "mean", "median"] = "gaussian"
    foreground: Side = "bright"

    def _labels(self, image: Image) -> np.ndarray:
        from skimage.filters import threshold_local

        voxels = scalar_voxels(image) * (1.0 if self.foreground == "bright" else -1.0)
        size = np.maximum(3, 2 * np.floor(length_voxels(self.block, image) / 2) + 1).astype(int)
        local: Any = threshold_local(voxels, block_size=tuple(size.tolist()), method=self.statistic, offset=self.offset)
        return voxels > local
