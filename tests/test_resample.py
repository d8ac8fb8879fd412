"""World-space resampling, checked against SimpleITK's ResampleImageFilter and scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import medseg.io.resample as resample_module
from medseg.errors import GeometryError
from medseg.io import load
from medseg.io.image import Image
from medseg.io.resample import resample_to
from medseg.io.sitk import from_sitk, to_sitk


def _sitk_reference(image: Image, reference: Image, interpolator: int, fill: float = 0.0) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(to_sitk(reference))
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(fill)
    if interpolator == sitk.sitkLinear:
        f.SetOutputPixelType(sitk.sitkFloat32)
    return from_sitk(f.Execute(to_sitk(image))).array


def _volume(shape: tuple[int, ...] = (12, 10, 8), dtype: type = np.int16) -> Image:
    rng = np.random.default_rng(3)
    return Image(
        rng.integers(0, 500, shape).astype(dtype),
        spacing=(0.8, 1.1, 2.5),
        origin=(-30.0, 12.5, 100.0),
        modality="CT",
        intensity_unit="HU",
        source="moving.nii.gz",
    )


def _regrid(img: Image, perm: tuple[int, ...], flips: tuple[bool, ...], shift: tuple[int, ...] = (0, 0, 0)) -> Image:
    """A grid over the same voxels with axes permuted/flipped and shifted by whole voxels (an empty array)."""
    nd = img.ndim
    cols, spacing, start = [], [], np.array(shift, dtype=float)
    for a, src in enumerate(perm):
        col = img.direction[:, src] * (-1 if flips[a] else 1)
        cols.append(col)
        spacing.append(img.spacing[src])
        if flips[a]:
            start[src] += img.shape[src] - 1 - 2 * shift[src]
    origin = img.index_to_world(start)
    shape = tuple(img.shape[s] for s in perm)
    return Image(
        np.zeros(shape, np.uint8), spacing=tuple(spacing), origin=tuple(origin), direction=np.stack(cols, 1)[:nd]
    )


@pytest.mark.parametrize(
    ("perm", "flips", "shift"),
    [
        ((0, 1, 2), (False, False, False), (0, 0, 0)),
        ((0, 1, 2), (True, True, False), (0, 0, 0)),
        ((2, 0, 1), (False, True, True), (0, 0, 0)),
        ((1, 0, 2), (False, False, True), (3, -2, 1)),
    ],
)
def test_flips_permutations_shifts_are_exact_and_match_simpleitk(
    monkeypatch: pytest.MonkeyPatch, perm: tuple[int, ...], flips: tuple[bool, ...], shift: tuple[int, ...]
) -> None:
    img = _volume()
    grid = _regrid(img, perm, flips, shift)
    expected = _sitk_reference(img, grid, sitk.sitkNearestNeighbor, fill=-7)
    monkeypatch.setattr(resample_module, "_sitk_resample", None)  # the exact path must not interpolate
    out = resample_to(img, grid, "nearest", fill=-7)
    assert out.array.dtype == np.int16 and np.array_equal(out.array, expected)
    assert out.same_grid(grid) and out.modality == "CT" and out.intensity_unit == "HU"
    lin = resample_to(img, grid, "linear", fill=-7)
    assert lin.array.dtype == np.float32
    assert np.allclose(lin.array, _sitk_reference(img, grid, sitk.sitkLinear, fill=-7), atol=1e-3)


def test_float32_rounding_is_exact_but_a_sub_voxel_shift_interpolates(monkeypatch: pytest.MonkeyPatch) -> None:
    img = _volume(dtype=np.float32)
    shifted = Image(np.zeros(img.shape), spacing=img.spacing, origin=tuple(np.add(img.origin, (0.3 * 0.8, 0, 0))))
    lin = resample_to(img, shifted, "linear")
    assert np.allclose(lin.array, _sitk_reference(img, shifted, sitk.sitkLinear), atol=1e-3)
    assert np.allclose(lin.array[:-1], 0.7 * img.array[:-1] + 0.3 * img.array[1:], atol=1e-3)
    # a NIfTI copy of the same grid: spacing and origin rounded to float32
    f32 = Image(
        np.zeros(img.shape),
        spacing=tuple(np.float32(img.spacing)),
        origin=tuple(np.float32(np.add(img.origin, 1e-5))),
    )
    monkeypatch.setattr(resample_module, "_sitk_resample", None)
    assert np.array_equal(resample_to(img, f32, "linear").array, img.array)


def _oblique_grid(img: Image) -> Image:
    a = np.deg2rad(17)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return Image(
        np.zeros((14, 9, 7)), spacing=(0.9, 1.3, 2.2), origin=tuple(np.add(img.origin, (1.0, 2.0, 3.0))), direction=rot
    )


def test_oblique_grid_nearest_matches_simpleitk_and_linear_matches_scipy() -> None:
    img = _volume(dtype=np.float32)
    grid = _oblique_grid(img)
    near = resample_to(img, grid, "nearest")
    assert np.array_equal(near.array, _sitk_reference(img, grid, sitk.sitkNearestNeighbor))
    lin = resample_to(img, grid, "linear", fill=np.nan)
    # independent reference: scipy's trilinear interpolation at each output voxel's continuous source index
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    src = img.world_to_index(grid.index_to_world(idx))
    inside = np.all((src >= 0) & (src <= np.array(img.shape) - 1), axis=-1)
    expected = ndimage.map_coordinates(img.array, np.moveaxis(src, -1, 0), order=1, mode="nearest")
    assert inside.sum() > 100
    assert np.allclose(lin.array[inside], expected[inside], atol=1e-3)


def test_linear_on_integers_gives_float_and_fill_outside() -> None:
    img = _volume()
    grid = Image(np.zeros((6, 6, 6)), spacing=(2.0, 2.0, 2.0), origin=tuple(np.subtract(img.origin, 5.0)))
    out = resample_to(img, grid, "linear", fill=-1024)
    assert out.array.dtype == np.float32
    assert np.all(out.array[0, 0, 0] == -1024)  # 5 mm before the first voxel
    assert np.allclose(out.array, _sitk_reference(img, grid, sitk.sitkLinear, fill=-1024), atol=1e-3)


def test_two_d_and_channels() -> None:
    rgb = Image(
        np.random.default_rng(1).integers(0, 255, (9, 7, 3)).astype(np.uint8), spacing=(0.5, 0.5), channel_axis=True
    )
    flipped = Image(np.zeros((9, 7)), spacing=(0.5, 0.5), origin=(4.0, 0.0), direction=np.diag([-1.0, 1.0]))
    out = resample_to(rgb, flipped, "nearest")
    assert out.channel_axis and np.array_equal(out.array, rgb.array[::-1])
    zoom = Image(np.zeros((5, 4)), spacing=(1.0, 1.0), origin=(0.25, 0.25))
    assert np.array_equal(resample_to(rgb, zoom, "nearest").array, _sitk_reference(rgb, zoom, sitk.sitkNearestNeighbor))


def test_non_overlapping_and_mismatched_grids_raise() -> None:
    img = _volume()
    far = Image(np.zeros((4, 4, 4)), origin=(1000.0, 0.0, 0.0), source="far_away.nii.gz")
    with pytest.raises(GeometryError, match=r"moving\.nii\.gz.*far_away\.nii\.gz"):
        resample_to(img, far)
    with pytest.raises(GeometryError, match="2D"):
        resample_to(img, Image(np.zeros((4, 4))))
    with pytest.raises(ValueError, match="interpolation"):
        resample_to(img, img, "cubic")  # type: ignore[arg-type]


def test_shared_reference_labels_onto_lps_grid_match_simpleitk(shared_data: Path) -> None:
    labels = load(shared_data / "ct_abdomen_dicom_reference_labels.nii.gz")
    assert labels.orientation != "LPS"  # stored flipped relative to a DICOM reader's grid
    lps = Image(
        np.zeros(labels.shape, np.int16),
        spacing=labels.spacing,
        origin=tuple(labels.index_to_world(np.where(np.diag(labels.direction) < 0, np.array(labels.shape) - 1, 0))),
    )
    out = resample_to(labels, lps, "nearest")
    assert np.array_equal(out.array, _sitk_reference(labels, lps, sitk.sitkNearestNeighbor))
    assert np.array_equal(np.unique(out.array), np.unique(labels.array))
    assert np.bincount(out.array.ravel()).tolist() == np.bincount(labels.array.ravel()).tolist()
