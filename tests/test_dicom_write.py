"""save_dicom_series: valid, deterministic, anonymous CT/MR series that read back exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from medseg.errors import WriteError
from medseg.io.dicom import load_dicom, save_dicom_series
from medseg.io.image import Image


def _phantom(direction: np.ndarray | None = None, dtype: type = np.int16) -> Image:
    rng = np.random.default_rng(7)
    array = rng.integers(-1024, 2500, size=(9, 6, 5)).astype(dtype)
    return Image(array, spacing=(0.75, 0.9, 2.5), origin=(-120.5, 33.25, -410.0), direction=direction, modality="CT")


OBLIQUE = Rotation.from_euler("xyz", [12, -25, 40], degrees=True).as_matrix()


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("direction", [None, OBLIQUE], ids=["axial", "oblique"])
def test_round_trip_identical_hu_and_geometry(tmp_path, direction):
    image = _phantom(direction)
    files = save_dicom_series(image, tmp_path, series_description="phantom", seed="t1")
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(1, 6)]

    back = load_dicom(tmp_path)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.modality == "CT" and back.intensity_unit == "HU" and back.warnings == []
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)

    # an independent reader (SimpleITK/GDCM) sees the same voxels and geometry
    ref = _sitk_series(tmp_path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref).transpose(2, 1, 0), image.array)
    np.testing.assert_allclose(ref.GetSpacing(), image.spacing, atol=1e-6)
    np.testing.assert_allclose(ref.GetOrigin(), image.origin, atol=1e-6)
    np.testing.assert_allclose(np.reshape(ref.GetDirection(), (3, 3)), image.direction, atol=1e-6)


def test_headers_are_valid_and_anonymous(tmp_path):
    files = save_dicom_series(_phantom(), tmp_path, series_description="phantom", seed="t2", modality="MR")
    ds = pydicom.dcmread(files[1])
    assert ds.PatientName == "ANONYMOUS^PHANTOM" and ds.PatientID == "" and ds.PatientBirthDate == ""
    assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.pixel_array.dtype == np.int16 and (ds.Rows, ds.Columns) == (6, 9)
    assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.75] and float(ds.SliceThickness) == 2.5
    assert [float(v) for v in ds.ImagePositionPatient] == [-120.5, 33.25, -407.5]
    assert ds.InstanceNumber == 2


def test_uids_are_deterministic_per_seed(tmp_path):
    image = _phantom()
    a = save_dicom_series(image, tmp_path / "a", seed="same")
    b = save_dicom_series(image, tmp_path / "b", seed="same")
    c = save_dicom_series(image, tmp_path / "c", seed="other")
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    uids = [{str(pydicom.dcmread(f).SOPInstanceUID) for f in files} for files in (a, c)]
    assert len(uids[0]) == 5 and not uids[0] & uids[1]
    series = {str(pydicom.dcmread(files[0]).SeriesInstanceUID) for files in (a, b, c)}
    assert len(series) == 2


def test_float_data_is_quantised_within_half_a_step(tmp_path):
    rng = np.random.default_rng(3)
    image = Image(rng.normal(0, 300, (8, 7, 3)), spacing=(1.0, 1.0, 3.0), modality="MR")
    save_dicom_series(image, tmp_path, seed="f")
    back = load_dicom(tmp_path)
    step = float(pydicom.dcmread(tmp_path / "IM0001.dcm").RescaleSlope)
    assert back.array.dtype == np.float32
    assert np.abs(back.array - image.array).max() <= step / 2 + 1e-3


def test_wide_integer_range_is_stored_exactly_with_an_intercept(tmp_path):
    # 20000..66000 does not fit int16 but spans fewer than 65536 values
    image = Image(np.arange(20000, 68000, 2000, dtype=np.int32).reshape(2, 3, 4), modality="CT")
    save_dicom_series(image, tmp_path, seed="w")
    np.testing.assert_array_equal(load_dicom(tmp_path).array, image.array)


def test_refuses_bad_input(tmp_path):
    with pytest.raises(WriteError, match="3D scalar"):
        save_dicom_series(Image(np.zeros((4, 4))), tmp_path / "2d")
    with pytest.raises(WriteError, match="modality"):
        save_dicom_series(_phantom(), tmp_path / "us", modality="US")
    sheared = np.eye(3)
    sheared[:, 1] = [0.6, 0.8, 0.0]
    with pytest.raises(WriteError, match="orthonormal"):
        save_dicom_series(_phantom(sheared), tmp_path / "shear")
    save_dicom_series(_phantom(), tmp_path / "twice", seed="x")
    with pytest.raises(WriteError, match="exists"):
        save_dicom_series(_phantom(), tmp_path / "twice", seed="x")
    save_dicom_series(_phantom(), tmp_path / "twice", seed="x", overwrite=True)
