"""Tissue detection on a slide's low-resolution overview, so that only tiles with tissue are processed.

Brightfield (RGB): tissue is coloured and glass is grey-white, so the HSV
saturation ``(max - min) / max`` is thresholded by Otsu's method; a single
channel (fluorescence) is thresholded on its intensity (tissue bright). The
mask is then closed (gaps narrower than ``closing_um``), its holes filled and
pieces smaller than ``min_area_mm2`` removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.io.image import Image


@dataclass(frozen=True)
class TissueMask:
    """Tissue pixels of an overview and how they map to level-0 pixels.

    Attributes
    ----------
    mask : ndarray of bool
        ``[x, y]`` at the overview's resolution.
    downsample : float
        Level-0 pixels per overview pixel.
    pixel_area_mm2 : float or None
        Area of one overview pixel, None when the pixel size is unknown.
    """

    mask: np.ndarray
    downsample: float
    pixel_area_mm2: float | None

    @property
    def area_mm2(self) -> float | None:
        """Area of the detected tissue, mm^2 (None without a pixel size)."""
        return None if self.pixel_area_mm2 is None else float(self.mask.sum()) * self.pixel_area_mm2

    @property
    def area_px(self) -> float:
        """Area of the detected tissue in level-0 pixels."""
        return float(self.mask.sum()) * self.downsample**2

    def covers(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """True when the level-0 rectangle ``[x0, x1) x [y0, y1)`` holds any tissue."""
        d = self.downsample
        i0, j0 = max(int(x0 // d), 0), max(int(y0 // d), 0)
        i1, j1 = math.ceil(x1 / d), math.ceil(y1 / d)
        return bool(self.mask[i0:i1, j0:j1].any())

    def on_grid(self, shape: tuple[int, int], downsample: float) -> np.ndarray:
        """The mask (nearest neighbour) on a ``shape`` grid whose pixels are ``downsample`` level-0 px wide."""
        ix = np.minimum((np.arange(shape[0]) * downsample / self.downsample).astype(int), self.mask.shape[0] - 1)
        iy = np.minimum((np.arange(shape[1]) * downsample / self.downsample).astype(int), self.mask.shape[1] - 1)
        return self.mask[np.ix_(ix, iy)]

    @classmethod
    def everything(cls, dimensions: tuple[int, int], mpp: tuple[float, float] | None) -> TissueMask:
        """A mask that calls the whole slide tissue (tissue detection off)."""
        ds = float(max(dimensions))
        shape = (math.ceil(dimensions[0] / ds), math.ceil(dimensions[1] / ds))
        area = None if mpp is None else dimensions[0] * dimensions[1] * mpp[0] * mpp[1] * 1e-6
        return cls(np.ones(shape, bool), ds, area)


def detect_tissue(
    overview: Image,
    *,
    min_area_mm2: float = 0.01,
    closing_um: float = 50.0,
    min_area_px: float = 64.0,
    max_side: int = 1024,
) -> TissueMask:
    """Tissue of a slide overview (:meth:`medseg.io.slide.Slide.overview`), found at most ``max_side`` px wide.

    Parameters
    ----------
    overview : Image
        RGB (brightfield) or one channel (fluorescence); ``meta["downsample"]``
        from level 0 (1 when absent).
    min_area_mm2 : float
        Pieces of tissue smaller than this are dropped (needs a known pixel size).
    closing_um : float
        Gaps narrower than this are closed (needs a known pixel size; else 2 px).
    min_area_px : float
        Without a pixel size: the smallest piece, in mask pixels.
    max_side : int
        The overview is averaged down to at most this many pixels per side first (tissue is coarse).
    """
    import edt
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from medseg.io.pyramid import block_mean
    from medseg.labelmap import label_components

    factor = max(1, math.ceil(max(overview.shape) / max_side))
    arr = block_mean(overview.array, factor).astype(np.float32)
    if overview.channel_axis:
        rgb = arr[..., :3]
        hi = rgb.max(axis=-1)
        signal = np.where(hi > 0, (hi - rgb.min(axis=-1)) / np.maximum(hi, 1e-6), 0.0)
    else:
        signal = arr
    mask = signal > threshold_otsu(signal) if np.ptp(signal) > 0 else np.zeros(signal.shape, bool)
    px_mm = overview.spacing[0] * factor if overview.spacing_known else None
    radius = max(1.0, closing_um / 1000.0 / 2 / px_mm) if px_mm else 2.0
    # closing by a disc through distance maps: dilate (near the mask), then erode (far from the outside)
    grown = edt.edt(~np.pad(mask, int(radius) + 1)) <= radius
    mask = (edt.edt(grown, black_border=False) > radius)[int(radius) + 1 : -int(radius) - 1, int(radius) + 1 : -int(radius) - 1]
    mask = ndimage.binary_fill_holes(mask)
    pixel_area = overview.voxel_volume_mm3 * factor**2 if overview.spacing_known else None
    smallest = min_area_mm2 / pixel_area if pixel_area else min_area_px
    pieces, n = label_components(mask, 8)
    big = np.bincount(pieces.ravel(), minlength=n + 1) >= smallest
    big[0] = False
    mask = big[pieces]
    return TissueMask(mask, float(overview.meta.get("downsample", 1.0)) * factor, pixel_area)


__all__ = ["TissueMask", "detect_tissue"]
