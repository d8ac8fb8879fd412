"""The committed sample_data/ is exactly what the generator writes, and its ground truth looks like what it claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medseg.io import load
from medseg.io.sitk import from_sitk
from medseg.sample_data import CT_LABELS, NUCLEI_PIXEL_UM, XRAY_SPACING_MM, ct_phantom, generate

DATASETS = ("ct_organs", "xray_lungs", "nuclei")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample_data")
    generate(out, seed=0)
    return out


def _cases(root: Path, name: str) -> list[tuple[Path, Path]]:
    doc = json.loads((root / name / "dataset.json").read_text())
    return [(root / name / c["image"], root / name / c["label"]) for c in doc["training"] + doc["test"]]


def _files(root: Path) -> list[str]:
    """Generated files below ``root``; ``models/`` holds trained demo models, made by ``medseg train``, not the generator."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "models")


def _assert_same_image(a: Path, b: Path) -> None:
    x, y = load(a), load(b)
    assert x.array.dtype == y.array.dtype and np.array_equal(x.array, y.array), a
    assert x.spacing == y.spacing and x.origin == y.origin and np.array_equal(x.direction, y.direction), a
    assert (x.modality, x.intensity_unit, x.spacing_known) == (y.modality, y.intensity_unit, y.spacing_known), a


def test_committed_sample_data_equals_regenerated(sample_data: Path, regenerated: Path) -> None:
    assert _files(sample_data) == _files(regenerated)
    assert (sample_data / "README.md").read_text() == (regenerated / "README.md").read_text()
    for name in DATASETS:
        assert (sample_data / name / "dataset.json").read_text() == (regenerated / name / "dataset.json").read_text()
        for (image, label), (image2, label2) in zip(_cases(sample_data, name), _cases(regenerated, name), strict=True):
            _assert_same_image(image, image2)
            _assert_same_image(label, label2)
    _assert_same_image(sample_data / "ct_organs_dicom", regenerated / "ct_organs_dicom")


def test_sample_data_is_small(sample_data: Path) -> None:
    total = sum(p.stat().st_size for p in sample_data.rglob("*") if p.is_file())
    assert total < 10 * 2**20


def test_ct_phantoms_have_every_organ_with_plausible_hu(sample_data: Path) -> None:
    doc = json.loads((sample_data / "ct_organs" / "dataset.json").read_text())
    assert doc["labels"] == {str(v): k for k, v in CT_LABELS.items()}
    assert (doc["numTraining"], doc["numTest"]) == (len(doc["training"]), len(doc["test"]))
    expected_hu = {"liver": (60, 110), "spleen": (35, 70), "lungs": (-900, -750), "spine": (200, 1000)}
    volumes = []
    for image_path, label_path in _cases(sample_data, "ct_organs"):
        ct, labels = load(image_path), load(label_path)
        assert ct.modality == "CT" and ct.intensity_unit == "HU" and ct.array.dtype == np.int16
        assert len(set(ct.spacing)) > 1 and labels.same_grid(ct)
        assert set(np.unique(labels.array)) == set(CT_LABELS.values())
        for organ, (lo, hi) in expected_hu.items():
            assert lo <= np.median(ct.array[labels.array == CT_LABELS[organ]]) <= hi, (image_path.name, organ)
        outside = ct.array[0, 0, :]
        assert np.median(outside) < -950  # air around the body
        kidney = ct.array[labels.array == CT_LABELS["kidney_left"]]
        assert np.percentile(kidney, 90) > 120  # enhancing cortex
        volumes.append(np.bincount(labels.array.ravel(), minlength=7))
    assert len({tuple(v) for v in volumes}) == len(volumes)  # every case differs


def test_dicom_series_is_the_first_test_phantom(sample_data: Path) -> None:
    doc = json.loads((sample_data / "ct_organs" / "dataset.json").read_text())
    nifti = load(sample_data / "ct_organs" / doc["test"][0]["image"])
    series = load(sample_data / "ct_organs_dicom")
    assert series.same_grid(nifti) and np.array_equal(series.array, nifti.array)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(sample_data / "ct_organs_dicom")))
    ref = from_sitk(reader.Execute())
    assert np.array_equal(ref.array, nifti.array) and np.allclose(ref.origin, nifti.origin)


def test_xray_masks_and_spacing(sample_data: Path) -> None:
    doc = json.loads((sample_data / "xray_lungs" / "dataset.json").read_text())
    assert tuple(doc["spacing_mm"]) == XRAY_SPACING_MM
    for image_path, label_path in _cases(sample_data, "xray_lungs"):
        img, mask = load(image_path, spacing=doc["spacing_mm"]), load(label_path)
        assert img.array.dtype == np.uint8 and img.shape == mask.shape and img.spacing == XRAY_SPACING_MM
        assert set(np.unique(mask.array)) == {0, 1}
        assert ndimage.label(mask.array)[1] == 2  # two lung fields
        assert img.array[mask.array == 1].mean() < img.array[mask.array == 0].mean()  # lungs are dark


def test_nuclei_are_instances_some_touching_with_pixel_size(sample_data: Path) -> None:
    for image_path, label_path in _cases(sample_data, "nuclei"):
        img, labels = load(image_path), load(label_path)
        assert img.array.dtype == np.uint16 and img.meta["spacing_source"] == "tiff_resolution"
        assert np.allclose(img.spacing, (NUCLEI_PIXEL_UM / 1000,) * 2) and labels.spacing == img.spacing
        ids = np.unique(labels.array)
        assert ids.tolist() == list(range(int(ids.max()) + 1))  # 0 and 1..N, no gaps
        a, b = labels.array[1:], labels.array[:-1]
        touching = {(int(p), int(q)) for p, q in zip(a.ravel(), b.ravel(), strict=True) if p and q and p != q}
        assert len(touching) >= 3
        assert img.array[labels.array > 0].mean() > 3 * img.array[labels.array == 0].mean()


def test_seed_changes_the_phantom() -> None:
    a, _ = ct_phantom(np.random.default_rng([0, 1]))
    b, _ = ct_phantom(np.random.default_rng([1, 1]))
    c, _ = ct_phantom(np.random.default_rng([0, 1]))
    assert not np.array_equal(a.array, b.array) and np.array_equal(a.array, c.array)
