"""The real abdominal CT series (../shared/data/ct_abdomen_dicom) against SimpleITK."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import medseg
from medseg.io.dicom import find_series, load_dicom
from medseg.io.resample import resample_to

LIVER, SPLEEN = 5, 1


@pytest.fixture(scope="module")
def ct_folder(shared_data):
    return shared_data / "ct_abdomen_dicom"


@pytest.fixture(scope="module")
def ct(ct_folder):
    return load_dicom(ct_folder)


@pytest.fixture(scope="module")
def sitk_ct(ct_folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ct_folder)))
    return reader.Execute()


def test_geometry_matches_the_headers(ct, ct_folder):
    headers = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in ct_folder.iterdir()),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    row_mm, col_mm = (float(v) for v in headers[0].PixelSpacing)
    z = [float(ds.ImagePositionPatient[2]) for ds in headers]
    assert ct.shape == (int(headers[0].Columns), int(headers[0].Rows), len(headers)) == (512, 512, 20)
    assert ct.spacing == pytest.approx((col_mm, row_mm, (z[-1] - z[0]) / (len(z) - 1)))
    assert ct.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert ct.origin == pytest.approx(tuple(float(v) for v in headers[0].ImagePositionPatient))
    np.testing.assert_allclose(ct.direction, np.eye(3))
    assert ct.modality == "CT" and ct.intensity_unit == "HU" and ct.meta["units"] == "HU"
    assert ct.meta["spacing_source"] == "PixelSpacing"
    assert ct.meta["transfer_syntax"] == headers[0].file_meta.TransferSyntaxUID.name
    assert "PatientName" not in ct.meta and "PatientID" not in ct.meta
    assert not ct.warnings or all("no SeriesInstanceUID" in w for w in ct.warnings)  # a note, not a doubt
    np.testing.assert_array_equal(load_dicom(ct_folder, strict=True).array, ct.array)
    # HU: the stored 12-bit values shifted by the intercept
    intercept = float(headers[0].RescaleIntercept)
    assert ct.array.min() >= intercept and ct.array.dtype == np.int16


def test_voxels_and_geometry_equal_simpleitk(ct, sitk_ct):
    np.testing.assert_array_equal(ct.array, sitk.GetArrayViewFromImage(sitk_ct).transpose(2, 1, 0))
    np.testing.assert_allclose(ct.spacing, sitk_ct.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(ct.origin, sitk_ct.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(ct.direction.ravel(), sitk_ct.GetDirection(), atol=1e-9)


def test_find_series_lists_one_ct_series(ct_folder):
    [info] = find_series(ct_folder)
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in info.files]
    assert z == sorted(z)  # files listed in slice order
    assert info.is_image and info.modality == "CT" and info.n_images == 20
    assert info.shape == (512, 512, 20) and info.orientation == "LPS"
    assert info.to_dict()["spacing_mm"] == pytest.approx([0.976562, 0.976562, 2.0])


def test_mean_hu_in_organs_matches_simpleitk_world_space_resampling(ct, sitk_ct, shared_data):
    label_path = shared_data / "ct_abdomen_dicom_reference_labels.nii.gz"
    labels = resample_to(medseg.load(label_path), ct, interpolation="nearest")

    ref_labels = sitk.Resample(
        sitk.ReadImage(str(label_path)), sitk_ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    ref_hu = sitk.GetArrayViewFromImage(sitk_ct)
    ref_lab = sitk.GetArrayViewFromImage(ref_labels)
    for organ in (LIVER, SPLEEN):
        ours = float(ct.array[labels.array == organ].mean())
        theirs = float(ref_hu[ref_lab == organ].mean())
        assert (labels.array == organ).sum() > 1000
        assert ours == pytest.approx(theirs, abs=0.01)
        assert 30 < ours < 250  # contrast-enhanced soft tissue, HU
