"""medseg.measure against brute-force numpy, SimpleITK, scikit-image and analytic shapes."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation
from skimage.measure import regionprops

import medseg
from medseg import labelmap
from medseg.errors import GeometryError, LabelError
from medseg.io.image import Image
from medseg.labelmap import label_runs, label_stats, region_stats
from medseg.measurement import align_labels, crofton_perimeter, measure


def _random_labels(rng: np.random.Generator, shape: tuple[int, ...], n_labels: int = 5) -> np.ndarray:
    """Blocky random labels (runs of several voxels, like real label maps) with some background."""
    coarse = rng.integers(0, n_labels + 1, size=tuple(max(1, s // 3) for s in shape))
    index = np.ix_(*[np.minimum(np.arange(s) // 3, c - 1) for s, c in zip(shape, coarse.shape, strict=True)])
    return coarse[index].astype(np.uint16)


def _sitk_image(array: np.ndarray, spacing, origin=None, direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    img.SetSpacing([float(s) for s in spacing])
    if origin is not None:
        img.SetOrigin([float(o) for o in origin])
    if direction is not None:
        img.SetDirection(np.asarray(direction, float).ravel().tolist())
    return img


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("shape", [(23, 17, 11), (40, 31), (5, 1, 300), (1, 1, 1)])
def test_region_stats_match_brute_force(layout: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    arr = _random_labels(rng, shape)
    arr[..., -1] = 2  # runs that end a row and continue on the next one
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "strided":
        arr = np.repeat(arr, 2, axis=0)[::2]
        assert arr.size == 1 or not (arr.flags.c_contiguous or arr.flags.f_contiguous)
    stats = region_stats(label_runs(arr))
    assert stats.key.tolist() == [v for v in np.unique(arr).tolist() if v != 0]
    for key, count, index_sum, lo, hi in zip(
        stats.key, stats.count, stats.index_sum, stats.bbox_min, stats.bbox_max, strict=True
    ):
        idx = np.argwhere(arr == key)
        assert count == len(idx)
        assert np.array_equal(index_sum, idx.sum(axis=0))
        assert np.array_equal(lo, idx.min(axis=0)) and np.array_equal(hi, idx.max(axis=0))


@pytest.mark.parametrize("layout", ["C", "F"])
def test_chunked_label_stats_equal_the_stats_of_all_runs(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    arr = _random_labels(rng, (37, 29, 23), n_labels=9)
    arr[..., -1] = 3  # runs continuing over row ends, cut at chunk ends too
    if layout == "F":
        arr = np.asfortranarray(arr)
    expected = region_stats(label_runs(arr), moments=True)
    monkeypatch.setattr(labelmap, "_CHUNK_VOXELS", 200)  # ~100 chunks, scanned by the thread pool
    chunked = label_stats(arr, moments=True)
    assert np.array_equal(chunked.key, expected.key)
    for field in ("count", "index_sum", "bbox_min", "bbox_max", "index_outer_sum"):
        assert np.array_equal(getattr(chunked, field), getattr(expected, field)), field


def test_volume_is_voxel_count_times_voxel_volume_exactly() -> None:
    rng = np.random.default_rng(1)
    arr = _random_labels(rng, (30, 24, 13), n_labels=7)
    direction = Rotation.from_euler("xyz", [10, -25, 40], degrees=True).as_matrix()
    spacing = (0.7, 1.3, 2.9)
    table = measure(Image(arr, spacing=spacing, direction=direction), shape=False)
    for row in table.itertuples():
        count = int(np.count_nonzero(arr == row.label))
        assert row.voxel_count == count
        assert row.volume_mm3 == count * (0.7 * 1.3 * 2.9)
        assert row.volume_ml == row.volume_mm3 / 1000


def _compare_with_sitk(labels: medseg.Image, path) -> None:
    table = measure(labels, shape=False).set_index("label")
    ref = sitk.LabelShapeStatisticsImageFilter()
    ref.Execute(sitk.ReadImage(str(path)))
    assert sorted(ref.GetLabels()) == table.index.tolist()
    for value in ref.GetLabels():
        row = table.loc[value]
        np.testing.assert_allclose(row.volume_mm3, ref.GetPhysicalSize(value), rtol=1e-6)
        np.testing.assert_allclose(row.voxel_count, ref.GetNumberOfPixels(value), rtol=0)
        np.testing.assert_allclose(
            [row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm], ref.GetCentroid(value), rtol=1e-6, atol=1e-6
        )
        start_size = ref.GetBoundingBox(value)
        assert [row.bbox_i_min, row.bbox_j_min, row.bbox_k_min] == list(start_size[:3])
        assert [
            row.bbox_i_max - row.bbox_i_min + 1,
            row.bbox_j_max - row.bbox_j_min + 1,
            row.bbox_k_max - row.bbox_k_min + 1,
        ] == list(start_size[3:])
        np.testing.assert_allclose(row.equivalent_diameter_mm, 2 * ref.GetEquivalentSphericalRadius(value), rtol=1e-6)


@pytest.mark.parametrize("name", ["ct_3mm_reference_labels.nii.gz", "ct_abdomen_dicom_reference_labels.nii.gz"])
def test_basics_agree_with_simpleitk_on_real_labels(shared_data, name: str) -> None:
    _compare_with_sitk(medseg.load(shared_data / name), shared_data / name)


def test_shape_agrees_with_simpleitk_principal_moments(shared_data) -> None:
    path = shared_data / "ct_3mm_reference_labels.nii.gz"
    table = measure(medseg.load(path)).set_index("label")
    ref = sitk.LabelShapeStatisticsImageFilter()
    ref.Execute(sitk.ReadImage(str(path)))
    for value in ref.GetLabels():
        moments = sorted(ref.GetPrincipalMoments(value))  # covariance eigenvalues of the world positions, mm^2
        row = table.loc[value]
        np.testing.assert_allclose(row.major_axis_length_mm, 4 * math.sqrt(moments[2]), rtol=1e-6)
        np.testing.assert_allclose(row.least_axis_length_mm, 4 * math.sqrt(moments[0]), rtol=1e-6, atol=1e-6)
        if moments[1] > 0:
            np.testing.assert_allclose(row.elongation, 1 / ref.GetElongation(value), rtol=1e-6)
        assert 0 < row.sphericity <= 1.0
        assert row.max_diameter_mm >= row.major_axis_length_mm / 2


def test_2d_perimeter_area_centroid_agree_with_simpleitk(shared_data) -> None:
    import tifffile

    arr = tifffile.imread(shared_data / "cells_fluo" / "nuclei_labels.tif").T.astype(np.uint16)  # [column, row]
    spacing = (0.00065, 0.0008)  # mm: anisotropic microscope pixels, so lengths come out in um
    origin = (1.5, -2.0)
    table = measure(Image(arr, spacing=spacing, origin=origin)).set_index("label")
    ref = sitk.LabelShapeStatisticsImageFilter()
    ref.SetComputePerimeter(True)
    ref.Execute(_sitk_image(arr, spacing, origin))
    assert sorted(ref.GetLabels()) == table.index.tolist()
    for value in ref.GetLabels():
        row = table.loc[value]
        np.testing.assert_allclose(row.area_um2, ref.GetPhysicalSize(value) * 1e6, rtol=1e-6)
        np.testing.assert_allclose(row.perimeter_um, ref.GetPerimeter(value) * 1e3, rtol=1e-6)
        np.testing.assert_allclose(
            [row.centroid_x_um, row.centroid_y_um], np.array(ref.GetCentroid(value)) * 1e3, rtol=1e-6
        )
        np.testing.assert_allclose(row.equivalent_diameter_um, 2e3 * ref.GetEquivalentSphericalRadius(value), rtol=1e-6)
    assert (table.n_objects == 1).all()
    field_mm2 = arr.size * spacing[0] * spacing[1]
    np.testing.assert_allclose(table.density_per_mm2, 1 / field_mm2)


def test_2d_axes_agree_with_skimage_regionprops() -> None:
    yy, xx = np.mgrid[:80, :60]
    arr = (((xx - 30) / 25.0) ** 2 + ((yy - 40) / 12.0) ** 2 <= 1).astype(np.uint8)
    arr[5:12, 5:30] = 2
    table = measure(Image(arr, spacing=(0.5, 0.5))).set_index("label")
    for region in regionprops(arr, spacing=(0.5, 0.5)):
        row = table.loc[region.label]
        np.testing.assert_allclose(row.major_axis_length_mm, region.axis_major_length, rtol=1e-9)
        np.testing.assert_allclose(row.minor_axis_length_mm, region.axis_minor_length, rtol=1e-9)
        np.testing.assert_allclose(row.area_mm2, region.area, rtol=1e-12)
        np.testing.assert_allclose(row.equivalent_diameter_mm, region.equivalent_diameter_area, rtol=1e-9)


def test_3d_shape_of_a_sphere_and_an_ellipsoid_is_close_to_analytic() -> None:
    spacing = (0.5, 0.5, 1.0)
    grid = np.stack(
        np.meshgrid(*[np.arange(n) * s for n, s in zip((100, 100, 50), spacing, strict=True)], indexing="ij")
    )
    centre = np.array([25.0, 25.0, 25.0])[:, None, None, None]
    r = 20.0
    semi = np.array([10.0, 5.0, 20.0])[:, None, None, None]
    ellipsoid = ((((grid - centre) / semi) ** 2).sum(axis=0) <= 1).astype(np.uint8)
    sphere = ((((grid - centre) ** 2).sum(axis=0)) <= r**2).astype(np.uint8)
    s = measure(Image(sphere, spacing=spacing)).iloc[0]
    np.testing.assert_allclose(s.mesh_volume_mm3, 4 / 3 * math.pi * r**3, rtol=0.01)
    # a marching-cubes mesh of a voxelised sphere is ~10% larger than the smooth sphere (IBSI reports the same)
    assert 1.0 < s.surface_area_mm2 / (4 * math.pi * r**2) < 1.15
    np.testing.assert_allclose(s.sphericity, (36 * math.pi * s.mesh_volume_mm3**2) ** (1 / 3) / s.surface_area_mm2)
    # the mesh passes half-way between voxel centres: the diameter gains up to one voxel
    assert 2 * r < s.max_diameter_mm <= 2 * r + max(spacing)
    assert s.elongation > 0.98 and s.flatness > 0.97
    e = measure(Image(ellipsoid, spacing=spacing)).iloc[0]
    # a solid ellipsoid's variance along a semi-axis a is a^2 / 5; axis length = 4 sqrt(variance)
    np.testing.assert_allclose(
        [e.major_axis_length_mm, e.minor_axis_length_mm, e.least_axis_length_mm],
        4 * np.sqrt([400 / 5, 100 / 5, 25 / 5]),
        rtol=0.02,
    )
    np.testing.assert_allclose([e.elongation, e.flatness], [0.5, 0.25], rtol=0.02)
    assert 40.0 < e.max_diameter_mm <= 40.0 + max(spacing)


def test_crofton_perimeter_of_a_disc_is_close_to_2_pi_r() -> None:
    yy, xx = np.mgrid[:201, :201]
    disc = (xx - 100) ** 2 + (yy - 100) ** 2 <= 80**2
    np.testing.assert_allclose(crofton_perimeter(disc, (0.1, 0.1)), 2 * math.pi * 8.0, rtol=0.01)
    row = measure(Image(disc.astype(np.uint8), spacing=(0.1, 0.1))).iloc[0]
    assert 0.97 < row.circularity < 1.03


def test_intensity_in_reference_liver_matches_numpy_after_world_alignment(shared_data) -> None:
    ct = medseg.load(shared_data / "ct_abdomen_dicom")
    labels_path = shared_data / "ct_abdomen_dicom_reference_labels.nii.gz"
    table = measure(medseg.load(labels_path), ct, shape=False).set_index("label")

    # independent alignment: every CT voxel centre -> nibabel's RAS affine -> nearest label voxel
    nii = nib.load(labels_path)
    lab = np.asarray(nii.dataobj)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = ct.index_to_world(index) * np.array([-1.0, -1.0, 1.0])
    lab_index = np.rint(ras @ np.linalg.inv(nii.affine)[:3, :3].T + np.linalg.inv(nii.affine)[:3, 3]).astype(int)
    liver = (lab[tuple(lab_index.T)] == 5).reshape(ct.shape)
    hu = ct.array[liver].astype(np.float64)
    row = table.loc[5]
    assert row.voxel_count == liver.sum() > 10000
    np.testing.assert_allclose(
        [row.mean_hu, row.std_hu, row.min_hu, row.max_hu, row.median_hu, row.p5_hu, row.p95_hu],
        [hu.mean(), hu.std(), hu.min(), hu.max(), np.median(hu), np.percentile(hu, 5), np.percentile(hu, 95)],
        rtol=1e-12,
    )
    assert 40 < row.mean_hu < 200  # contrast-enhanced liver parenchyma


def test_flipped_voxel_order_gives_the_same_measurements() -> None:
    rng = np.random.default_rng(3)
    arr = _random_labels(rng, (20, 16, 9))
    image = Image(rng.normal(size=arr.shape).astype(np.float32), spacing=(0.8, 0.8, 2.5), origin=(10.0, -5.0, 3.0))
    lab = image.with_array(arr)
    flipped = Image(
        arr[::-1, :, ::-1].copy(),
        spacing=image.spacing,
        origin=tuple(image.index_to_world([19, 0, 8])),
        direction=np.diag([-1.0, 1.0, -1.0]),
    )
    a = measure(lab, image)
    b = measure(flipped, image)
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9)
    c = measure(flipped, shape=False).set_index("label")  # measured on its own grid: same world centroids
    np.testing.assert_allclose(
        c[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]],
        a.set_index("label")[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]],
        rtol=1e-9,
    )


def test_grid_mismatch_names_both_files() -> None:
    image = Image(np.zeros((10, 10, 5), np.int16), spacing=(1.0, 1.0, 2.0), source="scan.nii.gz")
    shifted = Image(np.ones((10, 10, 5), np.uint8), spacing=(1.0, 1.0, 2.0), origin=(0.5, 0, 0), source="labels.nii.gz")
    with pytest.raises(GeometryError, match=r"labels\.nii\.gz.*scan\.nii\.gz"):
        measure(shifted, image)
    other_size = Image(np.ones((10, 10, 4), np.uint8), spacing=(1.0, 1.0, 2.0), source="labels.nii.gz")
    with pytest.raises(GeometryError, match=r"scan\.nii\.gz"):
        align_labels(other_size, image)


def test_label_values_are_checked() -> None:
    whole = measure(Image(np.array([[0.0, 2.0], [2.0, 7.0]])), shape=False)
    assert whole.label.tolist() == [2, 7] and whole.voxel_count.tolist() == [2, 1]
    with pytest.raises(LabelError, match="non-integer"):
        measure(Image(np.array([[0.0, 0.5], [1.0, 1.0]]), source="prob.nii.gz"))
    with pytest.raises(LabelError, match="negative"):
        measure(Image(np.array([[0, -1], [1, 1]], np.int16)))


def test_empty_label_map_gives_empty_table_with_warning() -> None:
    with pytest.warns(UserWarning, match="no labelled voxels"):
        table = measure(Image(np.zeros((6, 5, 4), np.uint8)), Image(np.zeros((6, 5, 4), np.int16)))
    assert len(table) == 0 and "volume_mm3" in table.columns


def test_instances_touches_border_and_names() -> None:
    arr = np.zeros((12, 10, 6), np.uint8)
    arr[1:3, 1:3, 1:3] = 1
    arr[6:9, 5:8, 2:4] = 1
    arr[0:2, 7:10, 0:6] = 4  # touches the edge
    table = measure(Image(arr, spacing=(1.0, 2.0, 3.0)), instances=True, label_names={1: "cyst", 4: "bone"})
    labels = table[table.level == "label"].set_index("label")
    inst = table[table.level == "instance"]
    assert labels.loc[1, "name"] == "cyst" and labels.loc[4, "name"] == "bone"
    assert sorted(inst.groupby("label").size().to_dict().items()) == [(1, 2), (4, 1)]
    assert sorted(inst[inst.label == 1].voxel_count) == [8, 18]
    assert inst.groupby("label").volume_mm3.sum().to_dict() == labels.volume_mm3.to_dict()
    assert labels.touches_border.to_dict() == {1: False, 4: True}
    assert (labels.instance == 0).all() and set(inst.instance) == {1, 2, 3}


def test_microscopy_spacing_reports_um_and_unknown_spacing_pixels() -> None:
    arr = np.zeros((100, 100), np.uint8)
    arr[10:20, 10:20] = 1
    arr[50:60, 50:55] = 1
    um = measure(Image(arr, spacing=(0.0005, 0.0005))).iloc[0]
    assert um.area_um2 == 150 * 0.25 and um.n_objects == 2
    np.testing.assert_allclose(um.density_per_mm2, 2 / (100 * 100 * 0.0005**2))
    with pytest.warns(UserWarning, match="spacing unknown"):
        px = measure(Image(arr, spacing_known=False))
    assert "area_px2" in px.columns and "perimeter_px" in px.columns


def test_label_names_file_and_lazy_export(shared_data) -> None:
    names = {int(k): v for k, v in json.loads((shared_data / "reference_label_names.json").read_text()).items()}
    table = medseg.measure(medseg.load(shared_data / "ct_3mm_reference_labels.nii.gz"), label_names=names, shape=False)
    assert table.set_index("label").loc[5, "name"] == "liver"
    assert set(medseg._LAZY) <= set(medseg.__all__)  # every lazily imported name is exported
