"""medseg.classical: SimpleITK equality on real CT, the CT lung recipe's Dice, methods, specs, CLI, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import medseg
from medseg.classical import (
    SLIC,
    Canny,
    ConfidenceConnected,
    CTLungs,
    DistanceWatershed,
    FluoNuclei,
    GaussianMixture,
    GradientWatershed,
    KMeans,
    LocalThreshold,
    MultiOtsu,
    Otsu,
    RegionGrowing,
    Sobel,
    Threshold,
)
from medseg.errors import ConfigError, GeometryError
from medseg.io.image import Image
from medseg.io.sitk import to_sitk
from medseg.labelmap import fill_holes
from medseg.postprocess import _footprint_maxima, ellipsoid_offsets
from medseg.segmenters import Segmenter, load_segmenter

MEDSEG = Path(sys.executable).with_name("medseg")
LUNG_LOBES = (10, 11, 12, 13, 14)  # reference_label_names.json: lung_upper_lobe_left ... lung_lower_lobe_right
LIVER = 5


def _sitk_array(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


@pytest.fixture(scope="module")
def dicom_ct(shared_data: Path) -> tuple[Image, np.ndarray]:
    """The abdominal DICOM series and the world position (mm) of a voxel deep in its liver (middle slice)."""
    from medseg.io.resample import resample_to

    ct = medseg.load(shared_data / "ct_abdomen_dicom")
    ref = resample_to(medseg.load(shared_data / "ct_abdomen_dicom_reference_labels.nii.gz"), ct, "nearest")
    middle = ct.shape[2] // 2
    liver = ref.array[:, :, middle] == LIVER
    i, j = np.unravel_index(np.argmax(ndimage.distance_transform_edt(liver)), liver.shape)
    return ct, ct.index_to_world(np.array([i, j, middle], float))


# ---- acceptance: SimpleITK's own filters, voxel for voxel ------------------------------------------------


@pytest.mark.parametrize("connectivity", [6, 26])
def test_region_growing_from_a_liver_seed_equals_simpleitk(dicom_ct, connectivity: int) -> None:
    ct, seed = dicom_ct
    index = [int(i) for i in np.rint(ct.world_to_index(seed))]
    ours = RegionGrowing(seeds=[tuple(seed)], lower=60, upper=200, connectivity=connectivity).segment(ct)
    face = sitk.ConnectedThresholdImageFilter
    theirs = sitk.ConnectedThreshold(to_sitk(ct), seedList=[index], lower=60, upper=200,
                                     connectivity=face.FaceConnectivity if connectivity == 6 else face.FullConnectivity)
    assert ours.same_grid(ct) and ours.array.dtype == np.uint8
    assert np.count_nonzero(ours.array) > 10_000
    assert np.array_equal(ours.array, _sitk_array(theirs))


def test_confidence_connected_equals_simpleitk(dicom_ct) -> None:
    ct, seed = dicom_ct
    index = [int(i) for i in np.rint(ct.world_to_index(seed))]
    ours = ConfidenceConnected(seeds=[tuple(seed)], multiplier=2.5, iterations=4, radius="1 px").segment(ct)
    theirs = sitk.ConfidenceConnected(to_sitk(ct), seedList=[index], numberOfIterations=4, multiplier=2.5,
                                      initialNeighborhoodRadius=1, replaceValue=1)
    assert np.count_nonzero(ours.array) > 10_000
    assert np.array_equal(ours.array, _sitk_array(theirs))
    full = ConfidenceConnected(seeds=[tuple(seed)], connectivity=26).segment(ct).array
    assert np.count_nonzero(full) >= np.count_nonzero(ours.array)  # more neighbours, at least as much grows


@pytest.mark.parametrize("name", ["ct_3mm.nii.gz", "ct_abdomen_dicom"])
def test_otsu_and_multi_otsu_equal_simpleitk(shared_data: Path, name: str) -> None:
    ct = medseg.load(shared_data / name)
    source = to_sitk(ct)
    assert np.array_equal(Otsu().segment(ct).array, _sitk_array(sitk.OtsuThreshold(source, 0, 1, 128)))
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(source)
    assert Otsu().threshold(ct) == otsu.GetThreshold()
    body = ct.array > -500
    masked = sitk.OtsuThresholdImageFilter()
    masked.SetMaskValue(1)
    masked.Execute(source, to_sitk(ct.with_array(body.astype(np.uint8))))
    assert Otsu().threshold(ct, mask=body) == masked.GetThreshold() != otsu.GetThreshold()
    assert np.array_equal(Otsu(bins=64, foreground="dark").segment(ct).array, _sitk_array(sitk.OtsuThreshold(source, 1, 0, 64)))
    for classes in (3, 4):
        theirs = sitk.OtsuMultipleThresholds(source, classes - 1, 0, 128)
        assert np.array_equal(MultiOtsu(classes=classes).segment(ct).array, _sitk_array(theirs))
    assert MultiOtsu(classes=4).label_names == {1: "class_1", 2: "class_2", 3: "class_3"}


# ---- acceptance: the CT lung recipe -------------------------------------------------------------------


def test_ct_lung_recipe_dice_on_the_reference_lungs(shared_data: Path) -> None:
    """ct_3mm shows the lung bases (lobe labels 10-14); the DICOM series shows none, and none is found there."""
    ct = medseg.load(shared_data / "ct_3mm.nii.gz")
    reference = np.isin(medseg.load(shared_data / "ct_3mm_reference_labels.nii.gz").array, LUNG_LOBES)
    lungs = load_segmenter("classical:ct_lungs").segment(ct)
    assert lungs.label_names == {1: "lungs"} and lungs.same_grid(ct)
    assert _dice(lungs.array > 0, reference) >= 0.95
    abdomen = medseg.load(shared_data / "ct_abdomen_dicom")
    assert np.count_nonzero(CTLungs().segment(abdomen).array) * abdomen.voxel_volume_mm3 < 1000  # < 1 mL of bowel gas


def test_ct_lung_recipe_removes_the_trachea() -> None:
    """A phantom: body, two lungs (-850 HU) and a trachea of pure air entering from the top, joined to one lung."""
    shape = (60, 50, 40)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volume = np.full(shape, -1000, np.int16)
    body = ((ii - 30) / 28) ** 2 + ((jj - 25) / 23) ** 2 <= 1
    volume[body] = 40
    left = ((ii - 17) / 9) ** 2 + ((jj - 25) / 12) ** 2 + ((kk - 20) / 16) ** 2 <= 1
    right = ((ii - 43) / 9) ** 2 + ((jj - 25) / 12) ** 2 + ((kk - 20) / 16) ** 2 <= 1
    volume[left | right] = -850
    trachea = ((ii - 30) ** 2 + (jj - 25) ** 2 <= 4) & (kk >= 28)
    bronchus = (np.abs(jj - 25) <= 1) & (np.abs(kk - 28) <= 1) & (ii >= 20) & (ii <= 30)
    volume[trachea | bronchus] = -1000
    image = Image(volume, spacing=(2.0, 2.0, 2.0))
    lungs = CTLungs(min_volume="1 ml").segment(image).array > 0
    assert _dice(lungs, left | right) >= 0.95
    assert not lungs[trachea].any()


# ---- the other methods ---------------------------------------------------------------------------


def test_fill_holes_and_footprint_maxima_equal_scipy() -> None:
    rng = np.random.default_rng(3)
    for shape, radius in (((50, 40), (3.2, 2.5)), ((30, 25, 20), (2.5, 3.1, 1.2)), ((30, 25, 20), (0.8, 0.8, 0.5))):
        mask = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        assert np.array_equal(fill_holes(np.asfortranarray(mask)), ndimage.binary_fill_holes(mask))
        distance = ndimage.distance_transform_edt(mask).astype(np.float32)
        offsets = ellipsoid_offsets(np.array(radius))
        half = np.abs(offsets).max(axis=0)
        footprint = np.zeros(tuple(2 * half + 1), bool)
        footprint[tuple((offsets + half).T)] = True
        expected = mask & (distance == ndimage.maximum_filter(distance, footprint=footprint, mode="constant"))
        assert np.array_equal(_footprint_maxima(distance, mask, offsets), expected)


def _two_discs(ndim: int) -> tuple[Image, np.ndarray]:
    """Two touching bright discs (2D) or balls (3D) at 0.5 mm, with noise; returns the image and the truth (1, 2)."""
    shape = (64, 48) if ndim == 2 else (60, 36, 30)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centres = [(20, 18, 15), (38, 18, 15)] if ndim == 3 else [(22, 24), (42, 24)]
    truth = np.zeros(shape, np.uint8)
    for value, centre in enumerate(centres, start=1):
        truth[sum((g - c) ** 2 for g, c in zip(grids, centre, strict=False)) <= 10.5**2] = value
    rng = np.random.default_rng(ndim)
    voxels = np.where(truth > 0, 200.0, 20.0) + rng.normal(0, 8, shape)
    return Image(voxels.astype(np.float32), spacing=(0.5,) * ndim), truth


@pytest.mark.parametrize("ndim", [2, 3])
def test_thresholds_watersheds_edges_and_clusters_find_the_discs(ndim: int) -> None:
    image, truth = _two_discs(ndim)
    objects = truth > 0
    for seg in (Threshold(lower=110), Otsu(), LocalThreshold(block="30 mm", offset=-30), KMeans(classes=2), GaussianMixture(classes=2)):
        assert _dice(seg.segment(image).array == 1, objects) >= 0.95, seg.name
    for seg in (Sobel(sigma="0.5 mm", closing="1 mm"), Canny(sigma="0.5 mm", closing="1 mm")):
        assert _dice(seg.segment(image).array == 1, objects) >= 0.8, seg.name  # the edge band widens the region
    split = DistanceWatershed(min_separation="4 mm").segment(image).array
    assert len(np.unique(split[objects])) == 2 and _dice(split > 0, objects) >= 0.95
    assert len(np.unique(DistanceWatershed().segment(image).array)) == 3  # the separation follows the objects
    centres = [tuple(image.index_to_world(np.argwhere(truth == v).mean(axis=0))) for v in (1, 2)]
    regions = GradientWatershed(seeds=[*centres, tuple(image.index_to_world(np.zeros(ndim)))]).segment(image)
    assert regions.label_names == {1: "seed_1", 2: "seed_2", 3: "seed_3"}
    assert _dice(regions.array < 3, objects) >= 0.9  # no edge between the touching discs: the background is what splits
    automatic = GradientWatershed().segment(image).array  # markers: the gradient's deep minima
    assert _dice(automatic == automatic[tuple(np.argwhere(truth == 1)[0])], objects) >= 0.9


def test_cluster_labels_are_sorted_by_intensity_and_stable() -> None:
    rng = np.random.default_rng(0)
    voxels = np.concatenate([rng.normal(m, 5, 3000) for m in (300, 0, 150)]).reshape(90, 100).astype(np.float32)
    image = Image(voxels)
    for seg in (KMeans(classes=3, sample=2000), GaussianMixture(classes=3, sample=2000)):
        labels = seg.segment(image).array.reshape(-1)
        assert [int(np.median(labels[k * 3000:(k + 1) * 3000])) for k in range(3)] == [2, 0, 1], seg.name
        other_seed = type(seg)(classes=3, sample=2000, seed=7).segment(image).array.reshape(-1)
        assert np.mean(labels == other_seed) > 0.99


def test_slic_superpixels_follow_the_spacing() -> None:
    image = Image(np.random.default_rng(1).normal(size=(40, 40, 10)).astype(np.float32), spacing=(1.0, 1.0, 4.0))
    labels = SLIC(size="10 mm").segment(image).array
    assert labels.min() >= 1 and 20 <= labels.max() <= 200  # 40x40x40 mm in 10 mm superpixels: about 64
    extents = ndimage.find_objects(labels)
    sides = np.array([[(s.stop - s.start) * sp for s, sp in zip(box, image.spacing, strict=True)] for box in extents if box])
    assert 0.5 < np.median(sides[:, 2]) / np.median(sides[:, 0]) < 2.0  # compact in mm, not in voxels


def test_nuclei_recipe_on_cells_fluo(shared_data: Path) -> None:
    from medseg.metrics import match_instances

    image = medseg.load(shared_data / "cells_fluo" / "nuclei.tif")
    reference = medseg.load(shared_data / "cells_fluo" / "nuclei_labels.tif").array
    objects = FluoNuclei().segment(image)
    assert objects.label_names == {} and objects.same_grid(image)
    assert match_instances(objects.array, reference).f1 >= 0.7  # docs/RESULTS.md records the figure


# ---- specs, names, fingerprints, errors ------------------------------------------------------------------


def test_spec_round_trips_and_fingerprints_cover_the_parameters() -> None:
    seg = load_segmenter("classical:region_growing:seeds=1.5/-2/3;4/5/6,lower=-100,upper=200,connectivity=26")
    assert isinstance(seg, Segmenter) and isinstance(seg, RegionGrowing)
    assert seg.seeds == [(1.5, -2.0, 3.0), (4.0, 5.0, 6.0)] and seg.connectivity == 26
    assert seg.name == "classical:region_growing:seeds=1.5/-2/3;4/5/6,lower=-100,upper=200,connectivity=26"
    again = load_segmenter(seg.name)
    assert again == seg and again.fingerprint() == seg.fingerprint()
    assert load_segmenter("classical:otsu").name == "classical:otsu" == Otsu(bins=128).name
    fingerprints = {load_segmenter(s).fingerprint() for s in ("classical:otsu", "classical:otsu:bins=64",
                                                               "classical:otsu:foreground=dark", "classical:multi_otsu")}
    assert len(fingerprints) == 4
    assert load_segmenter("classical:distance_watershed:min_separation=4um").min_separation == "4um"


@pytest.mark.parametrize(("spec", "names"), [
    ("classical:nosuch", "unknown method"),
    ("classical:otsu:binz=3", "unknown parameter 'binz'"),
    ("classical:otsu:bins=many", "parameter 'bins'"),
    ("classical:otsu:bins", "expected key=value"),
    ("classical:otsu:bins=3,bins=4", "given twice"),
    ("classical:region_growing:lower=0,upper=1", "missing parameter 'seeds'"),
    ("classical:region_growing:seeds=1/2/x,lower=0,upper=1", "parameter 'seeds'"),
    ("classical:region_growing:seeds=1/2/3;4/5,lower=0,upper=1", "same 2 or 3 coordinates"),
    ("classical:confidence_connected:seeds=", "at least one point"),
    ("classical:threshold:lower=5,upper=1", "above upper"),
    ("classical:local:block=15", "parameter 'block'"),
    ("classical:ct_lungs:min_volume=10mm", "parameter 'min_volume'"),
])
def test_bad_specs_are_config_errors_naming_the_key(spec: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_segmenter(spec)


def test_bad_seeds_and_images_name_the_file(shared_data: Path, dicom_ct) -> None:
    ct = medseg.load(shared_data / "ct_3mm.nii.gz")
    with pytest.raises(ConfigError, match=r"ct_3mm.nii.gz: seed at \(0, 0, 0\) mm lies outside the image"):
        RegionGrowing(seeds=[(0, 0, 0)], lower=0, upper=100).segment(ct)
    with pytest.raises(ConfigError, match="need 3 coordinates"):
        RegionGrowing(seeds=[(0, 0)], lower=0, upper=100).segment(ct)
    dicom, seed = dicom_ct
    with pytest.raises(ConfigError, match=r"ct_abdomen_dicom: seed at .* outside the thresholds \[500, 900\]"):
        RegionGrowing(seeds=[tuple(seed)], lower=500, upper=900).segment(dicom)
    with pytest.raises(GeometryError, match="3D images"):
        CTLungs().segment(medseg.load(shared_data / "cells_fluo" / "nuclei.tif"))
    with pytest.raises(GeometryError, match="channel"):
        Otsu().segment(medseg.load(shared_data / "cells_he" / "he_tile.jpg"))
    with pytest.raises(ConfigError, match="px"):  # a physical length on a picture without a pixel size
        LocalThreshold(block="2 mm").segment(medseg.load(shared_data / "cells_fluo" / "nuclei.tif"))


# ---- through the command line ---------------------------------------------------------------------------


def _medseg(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDSEG), *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_segment_batch_and_bad_spec(shared_data: Path, sample_data: Path, tmp_path: Path) -> None:
    ct = shared_data / "ct_3mm.nii.gz"
    run = _medseg("segment", "classical:ct_body", ct, "--out", tmp_path / "seg")
    assert run.returncode == 0, run.stderr
    written = medseg.load(tmp_path / "seg" / "ct_3mm.nii.gz")
    assert written.same_grid(medseg.load(ct))
    assert np.array_equal(written.array, load_segmenter("classical:ct_body").segment(medseg.load(ct)).array)

    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("case_006", "case_007"):
        (scans / f"{name}.nii.gz").write_bytes((sample_data / "ct_organs" / "imagesTs" / f"{name}.nii.gz").read_bytes())
    batch = _medseg("batch", "classical:otsu:bins=64", scans, tmp_path / "batch", "--readable-ids")
    assert batch.returncode == 0, batch.stderr
    assert "2 processed" in batch.stderr
    labels = medseg.load(tmp_path / "batch" / "cases" / "case_006" / "labels.nii.gz")
    assert np.array_equal(labels.array, Otsu(bins=64).segment(medseg.load(scans / "case_006.nii.gz")).array)
    again = _medseg("batch", "classical:otsu:bins=64", scans, tmp_path / "batch", "--readable-ids")
    assert "0 processed, 2 up to date" in again.stderr

    bad = _medseg("segment", "classical:otsu:bins=x", ct, "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "medseg error: classical:otsu: parameter 'bins'" in bad.stderr
    outside = _medseg("segment", "classical:region_growing:seeds=0/0/0,lower=0,upper=1", ct, "--out", tmp_path / "bad")
    assert outside.returncode == 2 and "ct_3mm.nii.gz: seed at (0, 0, 0) mm lies outside the image" in outside.stderr
