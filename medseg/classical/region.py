"""Region growing from seed points given in world mm: connected threshold and confidence connected."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, Field, model_validator

from medseg.classical.base import ClassicalSegmenter, Points, from_sitk_array, register, to_sitk_scalar, voxel_indices
from medseg.errors import ConfigError
from medseg.io.image import Image
from medseg.postprocess import Length, length_voxels


def _check_connectivity(value: int) -> int:
    if value not in (4, 8, 6, 26):
        raise ValueError(f"connectivity is 6 or 26 (4 or 8 in 2D), got {value}")
    return value


Connectivity = Annotated[int, AfterValidator(_check_connectivity)]


def _sitk_connectivity(connectivity: int, ndim: int, source: str | None) -> Any:
    """SimpleITK's face (4/6) or full (8/26) connectivity constant, checked against the image's dimensionality."""
    import SimpleITK as sitk

    face, full = {2: (4, 8), 3: (6, 26)}[ndim]
    if connectivity not in (face, full):
        raise ConfigError(f"connectivity {connectivity} is not {face} or {full} for a {ndim}D image", source)
    f = sitk.ConnectedThresholdImageFilter
    return f.FaceConnectivity if connectivity == face else f.FullConnectivity


def grow(image: Image, seeds: np.ndarray, lower: float, upper: float, connectivity: int) -> np.ndarray:
    """Voxels in ``[lower, upper]`` connected to the seed voxels: SimpleITK ``ConnectedThreshold`` (ITK's flood fill)."""
    import SimpleITK as sitk

    grower = sitk.ConnectedThresholdImageFilter()
    grower.SetSeedList([tuple(int(c) for c in s) for s in seeds])
    grower.SetLower(float(lower))
    grower.SetUpper(float(upper))
    grower.SetReplaceValue(1)
    grower.SetConnectivity(_sitk_connectivity(_dims_connectivity(connectivity, image.ndim), image.ndim, image.source))
    return from_sitk_array(grower.Execute(to_sitk_scalar(image)))


def _dims_connectivity(connectivity: int, ndim: int) -> int:
    """3D names (6/26) accepted for 2D images too, as their 2D counterparts (4/8)."""
    return {6: 4, 26: 8}.get(connectivity, connectivity) if ndim == 2 else connectivity


def _check_seed_values(image: Image, index: np.ndarray, points: list[tuple[float, ...]], lower: float, upper: float) -> None:
    values = image.array[tuple(index.T)]
    for point, value in zip(points, values, strict=True):
        if not lower <= value <= upper:
            raise ConfigError(
                f"seed at ({', '.join(f'{c:g}' for c in point)}) mm has value {value:g}, outside the "
                f"thresholds [{lower:g}, {upper:g}]: nothing would grow from it",
                image.source,
            )


@register
class RegionGrowing(ClassicalSegmenter):
    """Connected threshold: voxels within ``[lower, upper]`` (image units, HU for CT) connected to the seeds.

    SimpleITK's ``ConnectedThresholdImageFilter`` (ITK's flood-fill iterator,
    face or full connectivity), so results equal
    ``sitk.ConnectedThreshold(image, seeds, lower, upper)`` voxel for voxel.
    ``seeds`` are world points in mm (LPS), ``connectivity`` 6 or 26 (4 or 8 in 2D).
    """

    method: ClassVar[str] = "region_growing"
    seeds: Points
    lower: float
    upper: float
    connectivity: Connectivity = 6

    @model_validator(mode="after")
    def _bounds(self) -> RegionGrowing:
        if self.lower > self.upper:
            raise ValueError(f"lower {self.lower:g} is above upper {self.upper:g}")
        return self

    def _labels(self, image: Image) -> np.ndarray:
        index = voxel_indices(image, self.seeds)
        _check_seed_values(image, index, self.seeds, self.lower, self.upper)
        return grow(image, index, self.lower, self.upper, self.connectivity)


@register
class ConfidenceConnected(ClassicalSegmenter):
    """Confidence connected: grow within mean ± ``multiplier`` x standard deviation, re-estimated ``iterations`` times.

    ITK's ``ConfidenceConnectedImageFilter`` algorithm (statistics of a box of
    ``radius`` around each seed, then of the grown region), with each growth
    done by SimpleITK's ``ConnectedThreshold`` so that 26-connectivity is
    available too (ITK's own filter is face-connected only); with
    ``connectivity=6`` and a one-voxel radius it equals
    ``sitk.ConfidenceConnected`` voxel for voxel. ``radius`` is a length
    (``"2 mm"``, ``"1 px"``), rounded to whole voxels per axis.
    """

    method: ClassVar[str] = "confidence_connected"
    seeds: Points
    multiplier: float = Field(2.5, gt=0)
    iterations: int = Field(4, ge=0)
    radius: Length = "1 px"
    connectivity: Connectivity = 6

    def _labels(self, image: Image) -> np.ndarray:
        index = voxel_indices(image, self.seeds)
        voxels = image.array
        radius = np.rint(length_voxels(self.radius, image)).astype(int)
        # the seeds' boxes, edges replicated (ITK's zero-flux Neumann boundary)
        padded = np.pad(voxels, [(r, r) for r in radius], mode="edge")
        boxes = np.stack([padded[tuple(slice(i, i + 2 * r + 1) for i, r in zip(s, radius, strict=True))].astype(np.float64)
                          for s in index])
        n = boxes[0].size * len(index)
        mean = float(boxes.reshape(len(index), -1).mean(axis=1).mean())
        variance = (float((boxes**2).sum()) - mean * mean * n) / (n - 1.0)
        seed_values = voxels[tuple(index.T)].astype(np.float64)
        region = None
        for step in range(self.iterations + 1):
            if step:
                values = voxels[region.astype(bool)].astype(np.float64)
                if values.size < 2:
                    break
                mean = float(values.mean())
                variance = float((np.sum(values**2) - values.sum() ** 2 / values.size) / (values.size - 1.0))
                if np.isclose(variance, 0.0, rtol=0.0, atol=1e-12):
                    break
            lower, upper = self._interval(mean, variance, seed_values, voxels.dtype)
            region = grow(image, index, lower, upper, self.connectivity)
        return region

    def _interval(self, mean: float, variance: float, seeds: np.ndarray, dtype: np.dtype) -> tuple[float, float]:
        """ITK's interval: mean ± multiplier·sd, widened to hold every seed, clipped to and cast to the pixel type."""
        spread = self.multiplier * np.sqrt(max(variance, 0.0))
        lower, upper = min(mean - spread, seeds.min()), max(mean + spread, seeds.max())
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            lower, upper = max(lower, info.min), min(upper, info.max)
        # ITK casts the bounds to the pixel type: integers truncate toward zero
        return float(np.array(lower).astype(dtype)), float(np.array(upper).astype(dtype))
