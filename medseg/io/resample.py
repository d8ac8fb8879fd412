"""Put one image on another image's voxel grid, in world (mm) space.

Two correct files of the same scan may order their voxels differently (a
DICOM series read head-first and a NIfTI written feet-first, RAS vs LPS), so
images are compared after :func:`resample_to`, never by array index alone.

When the two grids differ only by axis flips, permutations and whole-voxel
shifts (the usual case for two files of one scan) the result is an exact
transpose/flip/crop of the array: no interpolation, no value changes.
Otherwise SimpleITK's resampler interpolates (nearest neighbour for labels,
linear for intensities).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from medseg.errors import GeometryError
from medseg.io.image import Image, LabelMap

Interpolation = Literal["nearest", "linear"]

# grids count as the same voxels when every reference voxel lands this close to an image voxel centre (voxels)
_INDEX_TOL = 1e-3


def resample_to(
    image: Image, reference: Image, interpolation: Interpolation | None = None, fill: float = 0
) -> Image:
    """Resample ``image`` onto ``reference``'s grid (shape, spacing, origin, direction).

    Parameters
    ----------
    image : Image
        The image to move; channels are resampled independently.
    reference : Image
        Supplies the target grid only; its voxels are not used.
    interpolation : {"nearest", "linear"}, optional
        ``"nearest"`` for label maps (keeps the dtype), ``"linear"`` for
        intensities (float32 output, float64 when the input is float64).
        By default chosen by type: nearest for a :class:`LabelMap`, linear
        for any other Image (a CT is never silently resampled nearest).
    fill : float
        Value of output voxels that fall outside ``image``.

    Returns
    -------
    Image
        On ``reference``'s grid, with ``image``'s modality, unit and metadata.

    Raises
    ------
    medseg.errors.GeometryError
        When the images have different numbers of spatial axes or do not
        overlap in world space.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.arange(6).reshape(3, 2), spacing=(1.0, 2.0))
    >>> flipped = Image(np.zeros((3, 2)), spacing=(1.0, 2.0), origin=(2.0, 0.0), direction=np.diag([-1.0, 1.0]))
    >>> resample_to(img, flipped, "nearest").array.tolist()
    [[4, 5], [2, 3], [0, 1]]
    """
    if interpolation is None:
        interpolation = "nearest" if isinstance(image, LabelMap) else "linear"
    if interpolation not in ("nearest", "linear"):
        raise ValueError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    if image.ndim != reference.ndim:
        raise GeometryError(
            f"cannot resample a {image.ndim}D image ({image.source or 'in memory'}) "
            f"onto a {reference.ndim}D grid ({reference.source or 'in memory'})"
        )
    index_map = np.linalg.inv(image.affine) @ reference.affine  # reference index -> image index
    _check_overlap(image, reference, index_map)
    out_dtype = image.array.dtype if interpolation == "nearest" else _float_dtype(image.array.dtype)
    array = _exact_index_map(image, reference, index_map, fill, out_dtype)
    if array is None:
        array = _sitk_resample(image, reference, interpolation, fill, out_dtype)
    return replace(
        image,
        array=array,
        spacing=reference.spacing,
        origin=reference.origin,
        direction=np.array(reference.direction),
        spacing_known=image.spacing_known and reference.spacing_known,
        meta=dict(image.meta),
        warnings=list(image.warnings),
    )


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _corners(shape: tuple[int, ...], margin: float = 0.0) -> np.ndarray:
    """``(ndim, 2**ndim)`` voxel indices of a grid's corners, pushed out by ``margin`` voxels."""
    bounds = [[-margin, n - 1 + margin] for n in shape]
    return np.array(np.meshgrid(*bounds, indexing="ij")).reshape(len(shape), -1)


def _apply(index_map: np.ndarray, indices: np.ndarray) -> np.ndarray:
    nd = indices.shape[0]
    return index_map[:nd, :nd] @ indices + index_map[:nd, nd : nd + 1]


def _check_overlap(image: Image, reference: Image, index_map: np.ndarray) -> None:
    """Raise GeometryError when the reference grid's bounding box misses the image's voxels entirely."""
    mapped = _apply(index_map, _corners(reference.shape, margin=0.5))
    lo, hi = mapped.min(axis=1), mapped.max(axis=1)
    if np.any(hi < -0.5) or np.any(lo > np.asarray(image.shape) - 0.5):
        raise GeometryError(
            f"images do not overlap in world space: {image.source or 'image in memory'} "
            f"and reference {reference.source or 'in memory'}"
        )


def _exact_index_map(
    image: Image, reference: Image, index_map: np.ndarray, fill: float, dtype: np.dtype
) -> np.ndarray | None:
    """The resampled array by transpose/flip/crop when ``index_map`` is a signed permutation plus integer shift.

    Returns None when it is not (rotation, scaling or sub-voxel shift), leaving the job to interpolation.
    """
    nd = image.ndim
    rounded = np.round(index_map)
    linear, shift = rounded[:nd, :nd], rounded[:nd, nd]
    if not np.array_equal(np.abs(linear).sum(axis=0), np.ones(nd)) or abs(round(np.linalg.det(linear))) != 1:
        return None
    corners = _corners(reference.shape)  # the largest deviation of an affine map is at a corner
    if np.abs(_apply(index_map, corners) - _apply(rounded, corners)).max() > _INDEX_TOL:
        return None
    src_axis = np.argmax(np.abs(linear), axis=0)  # image axis that reference axis a walks along
    sign = linear[src_axis, np.arange(nd)].astype(int)
    offset = shift.astype(int)[src_axis]  # image index = sign * i + offset
    # view the image in reference axis order, each axis walking the same way as the reference's
    view = image.array.transpose(tuple(src_axis) + tuple(range(nd, image.array.ndim)))
    slices = []
    for a in range(nd):
        if sign[a] < 0:
            view = np.flip(view, axis=a)
            offset[a] = view.shape[a] - 1 - offset[a]
        slices.append(offset[a])
    out = np.full(reference.shape + image.array.shape[nd:], fill, dtype=dtype)
    dst, src = [], []
    for a in range(nd):
        start = max(0, -slices[a])
        stop = min(reference.shape[a], view.shape[a] - slices[a])
        dst.append(slice(start, max(start, stop)))
        src.append(slice(start + slices[a], max(start, stop) + slices[a]))
    out[tuple(dst)] = view[tuple(src)]
    return out


def _sitk_resample(image: Image, reference: Image, interpolation: str, fill: float, dtype: np.dtype) -> np.ndarray:
    """Interpolate with SimpleITK's resampler (multi-threaded, ITK's world-space conventions)."""
    import SimpleITK as sitk

    from medseg.io.sitk import from_sitk, to_sitk

    moving = image if image.array.dtype == dtype else replace(image, array=image.array.astype(dtype))
    ref = sitk.Image([int(n) for n in reference.shape], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in reference.spacing])
    ref.SetOrigin([float(o) for o in reference.origin])
    ref.SetDirection(np.asarray(reference.direction, dtype=float).ravel().tolist())
    interp = sitk.sitkNearestNeighbor if interpolation == "nearest" else sitk.sitkLinear
    moved = sitk.Resample(to_sitk(moving), ref, sitk.Transform(), interp, float(fill))
    return from_sitk(moved).array.astype(dtype, copy=False)
