"""Measurements of label maps in physical units: ``measure(labels, image)`` -> one row per label.

The per-label basics (voxel count, volume, centroid, bounding box) come from a
single vectorised pass over the voxels: the array is cut into runs of equal
values along its fastest memory axis (:func:`label_runs`) and the runs, far
fewer than the voxels, are reduced per label (:func:`region_stats`; :func:`label_stats`
reduces each chunk's runs in the thread that found them). Shape and
intensity features are then computed per region on its cropped bounding box
only.

Shape features follow the IBSI definitions pyradiomics implements (marching
cubes surface area and mesh volume, sphericity, maximum 3D diameter,
elongation, flatness); the 2D perimeter is the Crofton estimate SimpleITK's
``LabelShapeStatisticsImageFilter`` reports.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd

from medseg.errors import GeometryError
from medseg.io.image import Image
from medseg.io.resample import resample_to

if TYPE_CHECKING:
    from medseg.postprocess import PostprocessResult

# voxels per chunk of the run-finding pass: the comparison buffer stays in cache
_CHUNK_VOXELS = 1 << 22
_MAX_THREADS = 4
# a 2D image whose pixels are at most this size (mm) is taken as microscopy: lengths in um
_MICROSCOPY_MAX_SPACING_MM = 0.02
# tolerance (in voxels) for two grids to hold the same voxel centres
_GRID_TOL_VOXELS = 1e-3
_PERCENTILES = (5.0, 50.0, 95.0)
_Part = TypeVar("_Part")


@dataclass(frozen=True)
class LabelRuns:
    """Maximal runs of one non-zero value along the fastest memory axis of a label array.

    Runs never cross a row of that axis, so every run is a straight segment of
    voxels, connected under any connectivity.

    Attributes
    ----------
    value : ndarray
        ``(n_runs,)`` label value of each run.
    length : ndarray
        ``(n_runs,)`` number of voxels in each run (int64).
    first : ndarray
        ``(ndim, n_runs)`` index of each run's first voxel, one row per array axis (int64).
    axis : int
        The array axis the runs extend along.
    """

    value: np.ndarray
    length: np.ndarray
    first: np.ndarray
    axis: int

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Values of ``array`` (shaped like the runs' label array) at each run's first voxel."""
        if array.flags.c_contiguous or array.flags.f_contiguous:  # one flat gather instead of ndim index arrays
            offset = (np.array(array.strides) // array.itemsize) @ self.first
            return array.reshape(-1, order="A")[offset]
        return array[tuple(self.first)]


@dataclass(frozen=True)
class RegionStats:
    """Voxel count, centroid and bounding box of each region, in voxel index space.

    Attributes
    ----------
    key : ndarray
        ``(n,)`` region identifiers (label values or instance ids), ascending.
    count : ndarray
        ``(n,)`` voxels per region (int64).
    index_sum : ndarray
        ``(n, ndim)`` sum of the voxel indices per region (float64, exact below 2**53).
    bbox_min, bbox_max : ndarray
        ``(n, ndim)`` inclusive first and last voxel index per axis (int64).
    index_outer_sum : ndarray or None
        ``(n, ndim, ndim)`` sum of the outer products of the voxel indices
        (second moments, float64), when requested.
    """

    key: np.ndarray
    count: np.ndarray
    index_sum: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    index_outer_sum: np.ndarray | None = None

    @property
    def centroid_index(self) -> np.ndarray:
        """``(n, ndim)`` mean voxel index of each region."""
        return self.index_sum / self.count[:, None]

    def world_covariance(self, linear: np.ndarray) -> np.ndarray:
        """``(n, ndim, ndim)`` covariance of each region's voxel centres in world space (mm^2).

        ``linear`` maps index steps to world mm (direction times spacing).
        Needs ``index_outer_sum``.
        """
        mean = self.centroid_index
        cov_index = self.index_outer_sum / self.count[:, None, None] - mean[:, :, None] * mean[:, None, :]
        return linear @ cov_index @ linear.T


def label_runs(array: np.ndarray) -> LabelRuns:
    """Cut a label array into runs of equal non-zero values (one pass over the voxels).

    Parameters
    ----------
    array : ndarray
        Integer label array, 2D or 3D, any memory order (C or Fortran order
        are used in place; other layouts are copied once).

    Returns
    -------
    LabelRuns

    Examples
    --------
    >>> runs = label_runs(np.array([[0, 2, 2], [1, 1, 0]]))
    >>> runs.value.tolist(), runs.length.tolist(), runs.first.T.tolist()
    ([2, 1], [2, 2], [[0, 1], [1, 0]])
    """
    parts = _scan_runs(array, lambda runs: runs)
    if len(parts) == 1:
        return parts[0]
    return LabelRuns(
        np.concatenate([p.value for p in parts]),
        np.concatenate([p.length for p in parts]),
        np.concatenate([p.first for p in parts], axis=1),
        parts[0].axis,
    )


def label_stats(array: np.ndarray, *, moments: bool = False) -> RegionStats:
    """Per-value voxel counts, index sums and bounding boxes of a label array, in one threaded pass.

    Equal to ``region_stats(label_runs(array), moments=moments)``, but each
    chunk's runs are reduced in the thread that found them while they are in
    cache, and only the small per-chunk tables are merged.
    """
    return _merge_stats(_scan_runs(array, lambda runs: region_stats(runs, moments=moments)))


def _scan_runs(array: np.ndarray, reduce: Callable[[LabelRuns], _Part]) -> list[_Part]:
    """``reduce`` applied to the runs of each chunk of ``array`` (memory order), chunks scanned in parallel."""
    ndim = array.ndim
    if array.flags.c_contiguous:
        memory, axes = array, list(range(ndim))
    elif array.flags.f_contiguous:
        memory, axes = array.T, list(range(ndim))[::-1]
    else:
        memory, axes = np.ascontiguousarray(array), list(range(ndim))
    if memory.size == 0:
        empty = LabelRuns(memory.reshape(-1)[:0], np.zeros(0, np.int64), np.zeros((ndim, 0), np.int64), axes[-1])
        return [reduce(empty)]
    flat = memory.reshape(-1)
    step = max(1, _CHUNK_VOXELS // memory.shape[-1]) * memory.shape[-1]  # chunks end at row ends
    bounds = [(begin, min(begin + step, flat.size)) for begin in range(0, flat.size, step)]

    buffers = threading.local()  # one comparison buffer per thread, reused across chunks

    def scan(bound: tuple[int, int]) -> _Part:
        if not hasattr(buffers, "is_start"):
            buffers.is_start = np.empty(min(step, flat.size), bool)
        value, length, first = _chunk_runs(flat, *bound, memory.shape, axes, buffers.is_start)
        return reduce(LabelRuns(value, length, first, axes[-1]))

    if len(bounds) < 4:
        return [scan(b) for b in bounds]
    with ThreadPoolExecutor(min(_MAX_THREADS, os.cpu_count() or 1)) as pool:  # numpy releases the GIL
        return list(pool.map(scan, bounds))


def _chunk_runs(
    flat: np.ndarray, begin: int, end: int, shape: tuple[int, ...], axes: list[int], buffer: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, length and first index (array axis order) of the non-zero runs in ``flat[begin:end]``.

    ``flat`` is a C-order array of ``shape`` whose axis ``m`` is array axis
    ``axes[m]``; ``begin`` and ``end`` lie on row boundaries; ``buffer`` is
    scratch space of at least ``end - begin`` booleans.
    """
    chunk = flat[begin:end]
    row = shape[-1]
    is_start = buffer[: chunk.size]
    is_start[0] = True
    np.not_equal(chunk[1:], chunk[:-1], out=is_start[1:])
    start = np.flatnonzero(is_start)
    length = np.diff(start, append=chunk.size)
    value = chunk[start]
    keep = np.flatnonzero(value)
    start, length, value = start[keep] + begin, length[keep], value[keep]
    row_index, fast = np.divmod(start, row)
    if (fast + length > row).any():  # some runs go on into the next row(s)
        start, length, value = _split_at_rows(start, length, value, row)
        row_index, fast = np.divmod(start, row)
    first_memory = (*np.unravel_index(row_index, shape[:-1]), fast)
    first = np.empty((len(shape), start.size), np.int64)
    for memory_axis, array_axis in enumerate(axes):
        first[array_axis] = first_memory[memory_axis]
    return value, length, first


def _split_at_rows(
    start: np.ndarray, length: np.ndarray, value: np.ndarray, row: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut runs that continue from the end of one row into the next one into one run per row.

    The pieces of cut runs are appended at the end (runs carry no order).
    """
    rows_touched = (start % row + length - 1) // row + 1
    cut = np.flatnonzero(rows_touched > 1)
    pieces = rows_touched[cut]
    run = np.repeat(cut, pieces)
    piece = np.arange(run.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    row_start = (start[run] // row + piece) * row
    piece_start = np.maximum(start[run], row_start)
    piece_end = np.minimum(row_start + row, start[run] + length[run])
    whole = np.flatnonzero(rows_touched == 1)
    return (
        np.concatenate([start[whole], piece_start]),
        np.concatenate([length[whole], piece_end - piece_start]),
        np.concatenate([value[whole], value[run]]),
    )


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and each element's position among them (like ``np.unique(return_inverse=True)``)."""
    if keys.size and keys.dtype.kind in "ui" and keys.min() >= 0 and keys.max() < max(1 << 16, 4 * keys.size):
        present = np.zeros(int(keys.max()) + 1, bool)
        present[keys] = True
        lookup = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(keys.dtype), lookup[keys]
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, inverse.reshape(-1)


def region_stats(runs: LabelRuns, keys: np.ndarray | None = None, *, moments: bool = False) -> RegionStats:
    """Reduce runs to per-region voxel counts, index sums and bounding boxes.

    Parameters
    ----------
    runs : LabelRuns
        From :func:`label_runs`.
    keys : ndarray, optional
        Region of each run (e.g. instance ids gathered at the runs' first
        voxels); the runs' label values by default. Every run must lie inside
        one region.
    moments : bool
        Also sum the outer products of the indices (for covariances and axis lengths).
    """
    keys = runs.value if keys is None else keys
    key, group = _group(keys)
    n, ndim = key.size, runs.first.shape[0]
    count = np.bincount(group, weights=runs.length, minlength=n).astype(np.int64)
    index_sum = np.empty((n, ndim))
    bbox_min = np.empty((n, ndim), np.int64)
    bbox_max = np.empty((n, ndim), np.int64)
    length = runs.length.astype(np.float64)
    last = runs.first[runs.axis] + runs.length - 1
    for axis in range(ndim):
        lo = runs.first[axis]
        hi = last if axis == runs.axis else lo
        # the indices lo..hi of a run sum to length * (lo + hi) / 2, an integer (exact in float64)
        weights = length * (lo + hi) * 0.5 if axis == runs.axis else length * lo
        index_sum[:, axis] = np.bincount(group, weights=weights, minlength=n)
        mins = np.full(n, np.iinfo(np.int64).max)
        maxs = np.full(n, -1, np.int64)
        np.minimum.at(mins, group, lo)
        np.maximum.at(maxs, group, hi)
        bbox_min[:, axis], bbox_max[:, axis] = mins, maxs
    outer = _outer_sums(runs, group, n, length, last) if moments else None
    return RegionStats(key, count, index_sum, bbox_min, bbox_max, outer)


def _merge_stats(parts: list[RegionStats]) -> RegionStats:
    """Combine the stats of disjoint parts of one array (e.g. chunks) into the stats of the whole."""
    if len(parts) == 1:
        return parts[0]
    key, group = _group(np.concatenate([p.key for p in parts]))
    n = key.size

    def reduced(field: str, ufunc: np.ufunc, start: float, dtype: type) -> np.ndarray:
        values = np.concatenate([getattr(p, field) for p in parts])
        out = np.full((n, *values.shape[1:]), start, dtype)
        ufunc.at(out, group, values)
        return out

    outer = None if parts[0].index_outer_sum is None else reduced("index_outer_sum", np.add, 0.0, np.float64)
    return RegionStats(
        key,
        reduced("count", np.add, 0, np.int64),
        reduced("index_sum", np.add, 0.0, np.float64),
        reduced("bbox_min", np.minimum, np.iinfo(np.int64).max, np.int64),
        reduced("bbox_max", np.maximum, -1, np.int64),
        outer,
    )


def _outer_sums(runs: LabelRuns, group: np.ndarray, n: int, length: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Per-region sums of ``index[a] * index[b]`` over the voxels, from the runs (exact integers in float64)."""
    ndim, fast = runs.first.shape[0], runs.axis
    lo = runs.first[fast].astype(np.float64)
    hi = last.astype(np.float64)
    fast_sum = length * (lo + hi) * 0.5  # sum of k over the run
    fast_sq = (hi * (hi + 1) * (2 * hi + 1) - (lo - 1) * lo * (2 * lo - 1)) / 6  # sum of k^2 over the run
    outer = np.empty((n, ndim, ndim))
    for a in range(ndim):
        for b in range(a, ndim):
            if a == b == fast:
                weights = fast_sq
            elif fast in (a, b):
                weights = fast_sum * runs.first[b if a == fast else a]
            else:
                weights = length * runs.first[a] * runs.first[b]
            outer[:, a, b] = outer[:, b, a] = np.bincount(group, weights=weights, minlength=n)
    return outer


# ---- geometry helpers ---------------------------------------------------------------------------


def length_unit(image: Image) -> str:
    """Unit of lengths reported for ``image``: ``"um"`` for microscopy, ``"px"`` without spacing, else ``"mm"``.

    A 2D image counts as microscopy when its modality is ``SM`` (slide
    microscopy) or its pixels are at most 20 um wide.
    """
    if not image.spacing_known:
        return "px"
    if image.ndim == 2 and (image.modality == "SM" or max(image.spacing) <= _MICROSCOPY_MAX_SPACING_MM):
        return "um"
    return "mm"


def _unit_scale(unit: str) -> float:
    """Factor from mm (or placeholder pixel spacing) to ``unit``."""
    return 1000.0 if unit == "um" else 1.0


def _describe(image: Image) -> str:
    return image.source or "an in-memory image"


def align_labels(labels: Image, image: Image) -> Image:
    """Return ``labels`` on ``image``'s grid when both hold the same voxel centres in world space.

    Two files of one scan may store their voxels in different orders (axis
    flips and permutations); the label map is then reordered exactly
    (nearest-neighbour :func:`medseg.io.resample.resample_to`, no value changes).

    Raises
    ------
    medseg.errors.GeometryError
        Naming both files, when the label map's voxels are not the image's
        voxels (different size, spacing, position or rotation).
    """
    if labels.same_grid(image):
        return labels
    mismatch = GeometryError(
        f"label map {_describe(labels)} ({'x'.join(map(str, labels.shape))}, spacing "
        f"{tuple(round(s, 4) for s in labels.spacing)} mm) does not lie on the voxel grid of image "
        f"{_describe(image)} ({'x'.join(map(str, image.shape))}, spacing "
        f"{tuple(round(s, 4) for s in image.spacing)} mm) in world space"
    )
    if labels.ndim != image.ndim:
        raise mismatch
    index_map = np.linalg.inv(image.affine) @ labels.affine  # label index -> image index
    rotation, shift = index_map[:-1, :-1], index_map[:-1, -1]
    permutation = np.round(rotation)
    is_signed_permutation = (
        np.abs(rotation - permutation).max() <= _GRID_TOL_VOXELS
        and np.array_equal(np.abs(permutation).sum(axis=0), np.ones(labels.ndim))
        and np.array_equal(np.abs(permutation).sum(axis=1), np.ones(labels.ndim))
    )
    if not is_signed_permutation or np.abs(shift - np.round(shift)).max() > _GRID_TOL_VOXELS:
        raise mismatch
    corners = np.array([np.zeros(labels.ndim), np.array(labels.shape) - 1.0])
    mapped = np.round(corners @ rotation.T + shift)
    if not (
        np.array_equal(mapped.min(axis=0), np.zeros(labels.ndim))
        and np.array_equal(mapped.max(axis=0), np.array(image.shape) - 1.0)
    ):
        raise mismatch
    return resample_to(labels, image, interpolation="nearest")


# ---- shape features -----------------------------------------------------------------------------


def _principal_variances(covariance: np.ndarray) -> np.ndarray:
    """Eigenvalues of stacked covariance matrices, descending along the last axis, clipped at 0."""
    return np.clip(np.linalg.eigvalsh(covariance)[..., ::-1], 0.0, None)


def _ratio_sqrt(num: float, den: float) -> float:
    return math.sqrt(num / den) if den > 0 else math.nan


def _max_pairwise_distance(points: np.ndarray) -> float:
    """Largest distance between any two points (on the convex hull when it exists)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(points) > points.shape[1] + 1:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat point sets have no hull: use all points
            pass
    best = 0.0
    for begin in range(0, len(points), 2048):
        block = points[begin : begin + 2048]
        d2 = ((block[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1)
        best = max(best, float(d2.max()))
    return math.sqrt(best)


def _shape_3d(mask: np.ndarray, linear: np.ndarray, lam: np.ndarray) -> dict[str, float]:
    """IBSI morphology of one region (mask cropped to its bounding box); lengths in mm.

    ``lam`` holds the principal variances of its voxel positions (mm^2, descending).
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(mask, 1).astype(np.uint8)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, allow_degenerate=False)
    verts = verts @ linear.T
    area = float(mesh_surface_area(verts, faces))
    tri = verts[faces]
    mesh_volume = abs(float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum())) / 6.0
    return {
        "surface_area_mm2": area,
        "mesh_volume_mm3": mesh_volume,
        "sphericity": (36 * math.pi * mesh_volume**2) ** (1 / 3) / area if area > 0 else math.nan,
        "max_diameter_mm": _max_pairwise_distance(verts),
        "major_axis_length_mm": 4 * math.sqrt(lam[0]),
        "minor_axis_length_mm": 4 * math.sqrt(lam[1]),
        "least_axis_length_mm": 4 * math.sqrt(lam[2]),
        "elongation": _ratio_sqrt(lam[1], lam[0]),
        "flatness": _ratio_sqrt(lam[2], lam[0]),
    }


def crofton_perimeter(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Perimeter of a 2D region by the Crofton formula on 4 directions (as ITK/SimpleITK estimate it).

    Counts, over the region's pixels, the background neighbours along each
    axis and along the diagonals (outside the array is background), and
    weighs them by the pixel size seen from each direction.

    Parameters
    ----------
    mask : ndarray of bool
        The region, ``[i, j]``.
    spacing : (float, float)
        Pixel size along i and j (mm or any unit; the result is in that unit).
    """
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1]

    def open_sides(di: int, dj: int) -> int:
        neighbour = m[1 + di : m.shape[0] - 1 + di, 1 + dj : m.shape[1] - 1 + dj]
        return int(np.count_nonzero(inner & ~neighbour))

    along_i = open_sides(1, 0) + open_sides(-1, 0)
    along_j = open_sides(0, 1) + open_sides(0, -1)
    diagonal = open_sides(1, 1) + open_sides(1, -1) + open_sides(-1, 1) + open_sides(-1, -1)
    di, dj = spacing
    total = dj * along_i / 2 + di * along_j / 2 + di * dj / math.hypot(di, dj) * diagonal / 2
    return math.pi / 4 * total


def _shape_2d(
    mask: np.ndarray, lam: np.ndarray, area: float, spacing: tuple[float, ...], scale: float, unit: str
) -> dict:
    """2D morphology of one region (mask cropped to its bounding box), lengths in ``unit``.

    ``lam``: principal variances of its pixel positions (mm^2, descending); ``area`` in ``unit``^2.
    """
    perimeter = crofton_perimeter(mask, (spacing[0], spacing[1])) * scale
    lam = lam * scale**2
    return {
        f"perimeter_{unit}": perimeter,
        "circularity": 4 * math.pi * area / perimeter**2 if perimeter > 0 else math.nan,
        f"major_axis_length_{unit}": 4 * math.sqrt(lam[0]),
        f"minor_axis_length_{unit}": 4 * math.sqrt(lam[1]),
        "elongation": _ratio_sqrt(lam[1], lam[0]),
    }


def _intensity(values: np.ndarray, suffix: str) -> dict[str, float]:
    values = values.astype(np.float64, copy=False)
    p5, median, p95 = np.percentile(values, _PERCENTILES)
    return {
        f"mean_{suffix}": float(values.mean()),
        f"std_{suffix}": float(values.std()),
        f"min_{suffix}": float(values.min()),
        f"max_{suffix}": float(values.max()),
        f"median_{suffix}": float(median),
        f"p5_{suffix}": float(p5),
        f"p95_{suffix}": float(p95),
    }


def _intensity_suffixes(image: Image) -> list[str]:
    unit = image.intensity_unit.lower() if image.intensity_unit else "intensity"
    if not image.channel_axis:
        return [unit]
    return [f"{unit}_c{c}" for c in range(image.n_channels)]


# ---- the table ----------------------------------------------------------------------------------


def _region_table(
    stats: RegionStats,
    label_of_region: np.ndarray,
    regions: np.ndarray,
    grid: Image,
    image: Image | None,
    shape: bool,
) -> pd.DataFrame:
    """One row per region: basics from ``stats``, then shape and intensity features on bounding-box crops."""
    unit = length_unit(grid)
    scale = _unit_scale(unit)
    nd = grid.ndim
    size_unit = f"{unit}3" if nd == 3 else f"{unit}2"
    size_col = f"volume_{size_unit}" if nd == 3 else f"area_{size_unit}"
    columns: dict[str, np.ndarray] = {"label": label_of_region, "voxel_count": stats.count}
    columns[size_col] = stats.count * (grid.voxel_volume_mm3 * scale**nd)
    if nd == 3 and unit == "mm":
        columns["volume_ml"] = columns[size_col] / 1000.0
    centroid = grid.index_to_world(stats.centroid_index) * scale
    for axis, name in enumerate("xyz"[:nd]):
        columns[f"centroid_{name}_{unit}"] = centroid[:, axis]
    for axis, name in enumerate("ijk"[:nd]):
        columns[f"bbox_{name}_min"] = stats.bbox_min[:, axis]
        columns[f"bbox_{name}_max"] = stats.bbox_max[:, axis]
    columns["touches_border"] = (stats.bbox_min == 0).any(axis=1) | (stats.bbox_max == np.array(grid.shape) - 1).any(
        axis=1
    )
    if nd == 3:
        columns[f"equivalent_diameter_{unit}"] = np.cbrt(6 * columns[size_col] / math.pi)
    else:
        columns[f"equivalent_diameter_{unit}"] = np.sqrt(4 * columns[size_col] / math.pi)
    table = pd.DataFrame(columns)

    if not (shape or image is not None) or len(table) == 0:
        return table
    linear = grid.direction @ np.diag(grid.spacing)
    variances = _principal_variances(stats.world_covariance(linear)) if shape else None
    suffixes = _intensity_suffixes(image) if image is not None else []
    extra = []
    for row in range(len(table)):
        crop = tuple(slice(lo, hi + 1) for lo, hi in zip(stats.bbox_min[row], stats.bbox_max[row], strict=True))
        mask = regions[crop] == stats.key[row]
        features: dict[str, float] = {}
        if shape and nd == 3:
            features |= _shape_3d(mask, linear, variances[row])
        elif shape:
            features |= _shape_2d(mask, variances[row], columns[size_col][row], grid.spacing, scale, unit)
        if image is not None:
            voxels = image.array[crop][mask]
            for c, suffix in enumerate(suffixes):
                features |= _intensity(voxels[:, c] if image.channel_axis else voxels, suffix)
        extra.append(features)
    return pd.concat([table, pd.DataFrame(extra, index=table.index)], axis=1)


def measure(
    labels: Image | PostprocessResult,
    image: Image | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    instances: bool = False,
    shape: bool = True,
    connectivity: int | None = None,
) -> pd.DataFrame:
    """Measure every label (and, on request, every instance) of a label map in physical units.

    Parameters
    ----------
    labels : Image or PostprocessResult
        Integer label map (0 = background); float maps are accepted when all
        values are whole numbers. A :class:`~medseg.postprocess.PostprocessResult`
        gives per-label rows from its semantic map and per-instance rows from
        its instance map.
    image : Image, optional
        Intensities for mean/std/min/max/median/p5/p95 per region (``*_hu`` for
        CT). It may store the scan differently (e.g. a DICOM series vs a
        NIfTI label map with flipped voxel order): the label map is matched to
        it in world space.
    label_names : mapping of int to str, optional
        Adds a ``name`` column.
    instances : bool
        Also one row per connected component (``level == "instance"``).
    shape : bool
        Compute the shape features (marching-cubes surface and mesh volume,
        diameters, axis lengths, sphericity in 3D; perimeter, circularity in 2D).
        ``False`` leaves only count, size, centroid, bounding box and intensities.
    connectivity : int, optional
        For ``instances``: 4/8 (2D) or 6/18/26 (3D); full connectivity by default.

    Returns
    -------
    pandas.DataFrame
        One row per label with ``label`` (the integer value), ``voxel_count``,
        ``volume_mm3`` and ``volume_ml`` (2D: ``area_mm2``, or ``area_um2`` for
        microscopy, ``*_px`` when the spacing is unknown), ``centroid_{x,y,z}_mm``
        (LPS world), ``bbox_{i,j,k}_{min,max}`` (inclusive voxel indices),
        ``touches_border`` (the region is cut by the image edge: its size is a
        lower bound), ``equivalent_diameter_mm`` and the shape and intensity
        columns. 2D tables add ``n_objects`` and ``density_per_mm2``.

    Raises
    ------
    medseg.errors.LabelError
        Non-integer or negative label values.
    medseg.errors.GeometryError
        When ``labels`` and ``image`` do not share their voxels in world space.

    Examples
    --------
    >>> import numpy as np
    >>> lab = Image(np.pad(np.ones((2, 2, 2), np.uint8), 1), spacing=(0.5, 0.5, 2.0))
    >>> measure(lab, shape=False)[["label", "voxel_count", "volume_mm3"]].to_dict("records")
    [{'label': 1, 'voxel_count': 8, 'volume_mm3': 4.0}]
    """
    # postprocess builds on this module's run kernel, so it is imported at call time
    from medseg.postprocess import PostprocessResult, as_label_image, connected_components

    if isinstance(labels, PostprocessResult):
        semantic, inst_image = labels.semantic, labels.instances
    else:
        semantic, inst_image = as_label_image(labels), None
    if image is not None:
        semantic = align_labels(semantic, image)
        inst_image = None if inst_image is None else align_labels(inst_image, image)
    if not semantic.spacing_known:
        warnings.warn(f"{_describe(semantic)}: pixel spacing unknown, sizes are in pixels", stacklevel=2)

    stats = label_stats(semantic.array, moments=shape)
    table = _region_table(stats, stats.key, semantic.array, semantic, image, shape)
    instance_rows = instances or inst_image is not None
    if (instance_rows or semantic.ndim == 2) and len(table):
        if inst_image is None:
            inst_image = connected_components(semantic, connectivity).instances
        inst_runs = label_runs(inst_image.array)
        inst_stats = region_stats(inst_runs, moments=shape)
        class_of = np.zeros(int(inst_stats.key.max()) + 1, semantic.array.dtype)
        class_of[inst_runs.value] = inst_runs.gather(semantic.array)
        inst_class = class_of[inst_stats.key]
        if semantic.ndim == 2:
            n_objects = np.bincount(np.searchsorted(stats.key, inst_class), minlength=len(stats.key))
            field_area = np.prod(semantic.shape) * semantic.voxel_volume_mm3
            at = table.columns.get_loc("touches_border") + 1
            table.insert(at, "n_objects", n_objects)
            table.insert(at + 1, f"density_per_{'px' if not semantic.spacing_known else 'mm'}2", n_objects / field_area)
        if instance_rows:
            rows = _region_table(inst_stats, inst_class, inst_image.array, semantic, image, shape)
            rows.insert(1, "instance", inst_stats.key.astype(np.int64))
            rows.insert(1, "level", "instance")
            table.insert(1, "instance", 0)
            table.insert(1, "level", "label")
            table = pd.concat([table, rows], ignore_index=True)
    if len(table) == 0:
        warnings.warn(f"{_describe(semantic)}: the label map has no labelled voxels; the table is empty", stacklevel=2)
    if label_names is not None:
        names = {int(k): str(v) for k, v in label_names.items()}
        table.insert(1, "name", [names.get(int(v), "") for v in table["label"]])
    return table
