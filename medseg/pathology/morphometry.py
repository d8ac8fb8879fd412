"""Per-cell morphometry of an instance map, vectorised over all cells at once.

One pass over the label runs (:func:`medseg.labelmap.label_runs`) gives each
cell's pixel count, centroid, bounding box and second moments; eight shifted
comparisons of the whole array give the Crofton perimeter of every cell (the
estimate :func:`medseg.measurement.crofton_perimeter` makes for one mask); the
convex hulls of the cells' run corners are computed by GEOS in one call; and
per-pixel stain amounts are summed per cell with ``bincount``. No Python loop
runs over the cells.

Definitions (lengths in um with a pixel size, else ``px``):

* ``area``: pixel count x pixel area; ``equivalent_diameter``: of the disc with that area;
* ``perimeter``: Crofton estimate on 4 directions; ``circularity`` = 4 pi area / perimeter^2;
* ``solidity``: area / area of the convex hull of the cell's pixel squares (<= 1);
* ``major_axis``, ``minor_axis``: 4 sqrt of the eigenvalues of the covariance of the pixel
  centres (as scikit-image's ``axis_major_length``); ``eccentricity`` = sqrt(1 - minor^2 / major^2);
* ``centroid_x``, ``centroid_y``: mean pixel centre in slide coordinates (level-0 pixel
  ``(i, j)`` is centred on ``((i + 0.5) mpp, (j + 0.5) mpp)`` um);
* ``mean_/std_haematoxylin_od``, ``mean_/std_eosin_od``: stain amounts
  (:mod:`medseg.pathology.stain`) over the cell's pixels, for RGB images; ``mean_/std_intensity``
  for one channel.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medseg.labelmap import LabelRuns, label_runs, region_stats
from medseg.pathology.stain import RUIFROK_HED, StainMatrix


def _dense(instances: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The array with each instance value replaced by its position in ``key`` plus 1 (0 stays 0), in the smallest type."""
    top = int(key[-1]) if key.size else 0
    dtype = np.min_scalar_type(key.size)  # small values: the shifted comparisons below read less memory
    if top < max(1 << 16, 4 * instances.size):
        lut = np.zeros(top + 1, dtype)
        lut[key] = np.arange(1, key.size + 1)
        return lut[instances]
    return np.where(instances > 0, np.searchsorted(key, instances) + 1, 0).astype(dtype)


def crofton_perimeters(dense: np.ndarray, n: int, spacing: tuple[float, float]) -> np.ndarray:
    """Crofton perimeter of every region of a dense ``[x, y]`` label array (values 1..n), in ``spacing``'s unit.

    Each of the four neighbour directions is one comparison of the array with its shifted self: a pixel
    pair that differs is an open side for the region on either end (outside the array is background).
    The array is padded with one background pixel on every side and compared flat, shifted by the
    direction's offset: a pair that wraps from one row's end to the next row's start joins two padding
    pixels, which never differ.
    """
    h = dense.shape[1]
    flat = np.pad(dense, 1).reshape(-1)
    sides = {}
    for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
        k = di * (h + 2) + dj
        first, second = flat[:-k], flat[k:]
        at = np.flatnonzero(first != second)
        sides[di, dj] = (np.bincount(first[at], minlength=n + 1)[1:] + np.bincount(second[at], minlength=n + 1)[1:])
    along_i, along_j = sides[1, 0], sides[0, 1]
    diagonal = sides[1, 1] + sides[1, -1]
    si, sj = spacing
    total = sj * along_i / 2 + si * along_j / 2 + si * sj / math.hypot(si, sj) * diagonal / 2
    return math.pi / 4 * total


def hull_areas(runs: LabelRuns, group: np.ndarray, n: int) -> np.ndarray:
    """Area (px^2) of the convex hull of each region's pixel squares, from the corners of its runs.

    A run's four corners lie on two grid lines across the runs (its row's two edges); on each line only a
    region's outermost two corners can be hull vertices, so only those go to GEOS (one call for all regions).
    """
    import shapely

    if group.size == 0:
        return np.zeros(n)
    a = runs.axis
    lo, hi, row = runs.first[a], runs.first[a] + runs.length, runs.first[1 - a]
    stride = int(row.max(initial=0)) + 2
    key = np.concatenate([group * stride + row, group * stride + row + 1])  # (region, grid line) of both edges
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    left = np.minimum.reduceat(np.concatenate([lo, lo])[order], starts)
    right = np.maximum.reduceat(np.concatenate([hi, hi])[order], starts)
    coords = np.empty((2 * starts.size, 2))
    coords[0::2, a], coords[1::2, a] = left, right
    coords[0::2, 1 - a] = coords[1::2, 1 - a] = key[starts] % stride
    offsets = np.concatenate([[0], np.cumsum(2 * np.bincount(key[starts] // stride, minlength=n))])
    # a line through the corners (no point objects are made): its convex hull is that of the corners
    lines = shapely.from_ragged_array(shapely.GeometryType.LINESTRING, coords, (offsets,))
    return shapely.area(shapely.convex_hull(lines))


def _grouped_moments(values: np.ndarray, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-region mean and standard deviation of ``values`` ``(m, k)`` whose rows belong to regions ``group``."""
    count = np.maximum(np.bincount(group, minlength=n), 1).astype(np.float64)[:, None]
    vals = values.astype(np.float64, copy=False)
    total = np.stack([np.bincount(group, weights=v, minlength=n) for v in vals.T], axis=1)
    squares = np.stack([np.bincount(group, weights=v * v, minlength=n) for v in vals.T], axis=1)
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def morphometry(
    instances: np.ndarray,
    *,
    mpp: tuple[float, float] | None = None,
    offset: tuple[int, int] = (0, 0),
    image: np.ndarray | None = None,
    stains: StainMatrix = RUIFROK_HED,
) -> pd.DataFrame:
    """One row per instance of a 2D ``[x, y]`` instance map with the features of the module docstring.

    Parameters
    ----------
    instances : ndarray
        Unsigned instance ids, 0 background.
    mpp : (float, float), optional
        Microns per pixel along x and y; lengths in ``um`` (areas ``um2``), else in ``px``.
    offset : (int, int)
        Level-0 pixel position of ``instances[0, 0]`` (tiles of a slide), for centroids and bounding boxes.
    image : ndarray, optional
        The pixels (``[x, y, 3]`` 8-bit RGB for stain amounts, or ``[x, y]`` one channel).
    stains : StainMatrix
        Stain vectors for the H and E amounts (e.g. a slide's :func:`~medseg.pathology.stain.macenko` fit).

    Returns
    -------
    pandas.DataFrame
        ``instance``, ``area_um2``, ``perimeter_um``, ``circularity``, ``solidity``,
        ``eccentricity``, ``major_axis_um``, ``minor_axis_um``, ``equivalent_diameter_um``,
        ``centroid_x_um``, ``centroid_y_um``, ``bbox_x0/y0/x1/y1`` (level-0 px, end exclusive),
        then the stain or intensity columns.
    """
    runs = label_runs(instances)
    stats = region_stats(runs, moments=True)
    key, n = stats.key, stats.key.size
    unit = "um" if mpp else "px"
    sx, sy = mpp or (1.0, 1.0)
    area = stats.count * (sx * sy)
    lam = np.clip(np.linalg.eigvalsh(stats.world_covariance(np.diag([sx, sy])))[:, ::-1], 0.0, None)
    dense = _dense(instances, key)
    perimeter = crofton_perimeters(dense, n, (sx, sy))
    group = np.searchsorted(key, runs.value)
    hull_px = hull_areas(runs, group, n)
    centroid = stats.centroid_index + 0.5 + np.asarray(offset, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "instance": key.astype(np.int64),
            f"area_{unit}2": area,
            f"perimeter_{unit}": perimeter,
            "circularity": np.where(perimeter > 0, 4 * math.pi * area / perimeter**2, np.nan),
            "solidity": np.where(hull_px > 0, stats.count / hull_px, np.nan),
            "eccentricity": np.where(lam[:, 0] > 0, np.sqrt(1.0 - lam[:, 1] / lam[:, 0]), 0.0),
            f"major_axis_{unit}": 4 * np.sqrt(lam[:, 0]),
            f"minor_axis_{unit}": 4 * np.sqrt(lam[:, 1]),
            f"equivalent_diameter_{unit}": np.sqrt(4 * area / math.pi),
            f"centroid_x_{unit}": centroid[:, 0] * sx,
            f"centroid_y_{unit}": centroid[:, 1] * sy,
            "bbox_x0": stats.bbox_min[:, 0] + offset[0],
            "bbox_y0": stats.bbox_min[:, 1] + offset[1],
            "bbox_x1": stats.bbox_max[:, 0] + 1 + offset[0],
            "bbox_y1": stats.bbox_max[:, 1] + 1 + offset[1],
        }
    if image is not None:
        rgb = image.ndim == 3 and image.shape[-1] == 3
        flat = dense.reshape(-1)
        inside = np.flatnonzero(flat)
        pixels = image.reshape(flat.size, -1)[inside]
        values = stains.concentrations(pixels)[:, :2] if rgb else pixels
        mean, std = _grouped_moments(values, flat[inside] - 1, n)
        for c, name in enumerate(("haematoxylin_od", "eosin_od") if rgb else ("intensity",)):
            columns[f"mean_{name}"], columns[f"std_{name}"] = mean[:, c], std[:, c]
    return pd.DataFrame(columns)


__all__ = ["crofton_perimeters", "hull_areas", "morphometry"]
