"""Label maps as data: conversion, runs of equal values, per-label statistics, components, units.

The leaf that post-processing, measurement and metrics import downward (it
imports only :mod:`medseg.io.image` and :mod:`medseg.errors`):

* :func:`as_label_map` / :func:`label_values`: the one place an Image or an
  array becomes a label map (booleans, whole-number floats and signed integers
  are converted; channels, fractions and negative values are refused);
  :func:`drawn_on`: a mask without pixel size placed on the picture it was drawn on;
* :func:`label_runs`, :func:`label_stats`, :func:`region_stats`: the array cut
  into runs of equal values along its fastest memory axis, reduced per label
  (voxel count, index sums, bounding box) in one threaded pass;
* :func:`label_components`: connected components (cc3d); :func:`fill_holes`: enclosed background filled;
* :func:`interior_boundary_classes`: an instance map as background / interior / boundary classes;
* :func:`length_unit`, :func:`unit_scale`: the unit lengths are reported in (mm, um, px).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from medseg.errors import ConfigError, LabelError
from medseg.io.image import Image, LabelMap

# voxels per chunk of the run-finding pass: the comparison buffer stays in cache
_CHUNK_VOXELS = 1 << 22
_MAX_THREADS = 4
# a 2D image whose pixels are at most this size (mm) is taken as microscopy: lengths in um
_MICROSCOPY_MAX_SPACING_MM = 0.02
CONNECTIVITY = {2: (4, 8), 3: (6, 18, 26)}
"""Neighbourhoods per dimensionality, sparsest first (faces; faces, edges and corners)."""
_Part = TypeVar("_Part")


def label_values(array: np.ndarray, source: str | None = None, what: str = "label map") -> np.ndarray:
    """The voxels of a label map as an unsigned integer array (the input itself when already unsigned).

    Booleans become uint8; whole-number floats and non-negative signed
    integers become the smallest unsigned type holding them.

    Raises
    ------
    medseg.errors.LabelError
        Non-finite or fractional values (a probability map or an intensity
        image?), negative labels, or a non-numeric type; naming ``source``.
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype.kind == "u":
        return arr
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise LabelError(f"{what} holds non-integer values (a probability map or an intensity image?)", source)
    elif arr.dtype.kind != "i":
        raise LabelError(f"{what} has unsupported value type {arr.dtype}", source)
    low = arr.min() if arr.size else 0
    if low < 0:
        raise LabelError(f"{what} holds negative values (minimum {low:g})", source)
    return arr.astype(np.min_scalar_type(int(arr.max()) if arr.size else 0))


def as_label_map(
    labels: Image | np.ndarray, *, like: Image | None = None, label_names: Mapping[int, str] | None = None
) -> LabelMap:
    """``labels`` as a :class:`LabelMap` (checked and converted by :func:`label_values`).

    Parameters
    ----------
    labels : Image or ndarray
        A label image, or an array placed on ``like``'s grid.
    like : Image, optional
        The grid of an array (required for arrays).
    label_names : mapping int -> str, optional
        Foreground label names; default: those ``labels`` already carries.

    Raises
    ------
    medseg.errors.LabelError
        For channels, fractional or negative values, naming the source file.
    """
    if isinstance(labels, Image):
        if labels.channel_axis:
            raise LabelError(
                f"a label map has one value per voxel, this one has {labels.n_channels} channels", labels.source
            )
        values = label_values(labels.array, labels.source)
        if isinstance(labels, LabelMap) and values is labels.array and label_names is None:
            return labels
        names = dict(label_names) if label_names is not None else None
        return labels.with_labels(values, names, warnings=list(labels.warnings))
    if like is None:
        raise LabelError("an array needs the grid it lies on (like=Image) to become a label map")
    values = label_values(labels, like.source)
    if values.shape != like.shape:
        raise LabelError(f"label array of shape {values.shape} does not fit the grid {like.shape}", like.source)
    return like.with_labels(values, dict(label_names or {}))


def drawn_on(labels: Image, image: Image) -> LabelMap | None:
    """``labels`` placed on ``image``'s grid when it is a mask drawn on that picture, else None.

    A mask without a pixel size (a plain PNG, a TIFF without resolution tags)
    with exactly the image's pixel dimensions holds no geometry to compare in
    world space: it is taken as drawn on the image, pixel for pixel.
    """
    if labels.spacing_known or labels.shape != image.shape:
        return None
    return as_label_map(labels.array, like=image, label_names=getattr(labels, "label_names", None))


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


def unit_scale(unit: str) -> float:
    """Factor from mm (or placeholder pixel spacing) to ``unit``."""
    return 1000.0 if unit == "um" else 1.0


def connectivity_for(value: int | None, ndim: int, source: str | None) -> int:
    """``value`` checked against the connectivities of a ``ndim``-D grid; the fullest one when None."""
    options = CONNECTIVITY[ndim]
    if value is None:
        return options[-1]
    if value not in options:
        raise ConfigError(f"connectivity {value} is not one of {options} for a {ndim}D image", source)
    return value


def label_components(array: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """cc3d connected components numbered 1..N (uint32), and N.

    2D arrays are labelled as one-slice volumes (4 -> 6, 8 -> 26 neighbours),
    which is the same neighbourhood: cc3d 4.1's own 2D 8-connected labelling
    splits some components (about one random blob image in eight, checked
    against scipy.ndimage.label in the tests).
    """
    import cc3d

    if not array.flags.writeable:  # cc3d takes writable buffers only (it never writes to its input)
        array = array.copy()
    if array.ndim == 2:
        volume = array[..., np.newaxis]
        components, n = cc3d.connected_components(
            volume, connectivity={4: 6, 8: 26}[connectivity], return_N=True, out_dtype=np.uint32
        )
        return components[..., 0], int(n)
    components, n = cc3d.connected_components(array, connectivity=connectivity, return_N=True, out_dtype=np.uint32)
    return components, int(n)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` (boolean) with every background region that does not reach the array's border filled.

    Background is face-connected (4 in 2D, 6 in 3D), as in
    ``scipy.ndimage.binary_fill_holes`` and SimpleITK's ``BinaryFillhole``,
    whose results it equals. The background is labelled once by cc3d inside a
    one-voxel frame of background, so everything that reaches the border is the
    frame's component and no per-voxel table lookup is needed (about 5x faster
    than SimpleITK on a 512x512x300 CT). The result keeps ``mask``'s memory order.
    """
    mask = np.asarray(mask, bool)
    fortran = mask.flags.f_contiguous and not mask.flags.c_contiguous
    along_memory = mask.T if fortran else mask  # the frame is allocated in C order: fill it along memory
    framed = np.ones(tuple(n + 2 for n in along_memory.shape), bool)
    inner = (slice(1, -1),) * mask.ndim
    np.logical_not(along_memory, out=framed[inner])
    background, _ = label_components(framed, CONNECTIVITY[mask.ndim][0])
    filled = background[inner] != background[(0,) * mask.ndim]
    return filled.T if fortran else filled


def face_neighbour_slices(ndim: int) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Per axis, the slices ``(lo, hi)`` that pair every array element with its face neighbour one step further
    along that axis: ``a[lo]`` and ``a[hi]`` are the two sides of every face."""
    return [((slice(None),) * axis + (slice(None, -1),), (slice(None),) * axis + (slice(1, None),))
            for axis in range(ndim)]


def interior_boundary_classes(instances: np.ndarray) -> np.ndarray:
    """``uint8`` classes of an instance map: 0 background, 1 object interior, 2 object boundary.

    The boundary is each object's own outermost pixels: those with a face neighbour (4 in 2D, 6 in 3D) inside
    the array that holds another value, so touching objects stay apart by a ring each. Equals
    ``skimage.segmentation.find_boundaries(instances, connectivity=1, mode="inner")`` on the objects.
    """
    instances = np.asarray(instances)
    classes = (instances > 0).astype(np.uint8)
    edge = np.zeros(instances.shape, bool)
    for lo, hi in face_neighbour_slices(instances.ndim):
        differs = instances[lo] != instances[hi]
        edge[lo] |= differs
        edge[hi] |= differs
    classes[edge & (instances > 0)] = 2
    return classes
