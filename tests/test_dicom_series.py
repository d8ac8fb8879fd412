"""Series assembly edge cases, built with save_dicom_series and edited with pydicom."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import medseg.io.dicom
from medseg.errors import NotAnImageError, ReadError, SeriesError
from medseg.io.dicom import find_series, load_dicom, save_dicom_series
from medseg.io.image import Image

AXIAL = np.eye(3)
SAGITTAL = np.array(
    [[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
)  # rows along P, columns along I, slices along R


def phantom(shape=(6, 5, 8), direction=AXIAL, seed=0) -> Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    return Image(array, spacing=(0.8, 0.9, 2.0), origin=(-50.0, -60.0, 100.0), direction=direction, modality="CT")


def write(image: Image, folder: Path, **kwargs) -> list[Path]:
    return save_dicom_series(image, folder, seed=f"{folder}-{kwargs.get('series_description', '')}", **kwargs)


def edit(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_slices_sorted_by_position_not_instance_number_or_name(tmp_path):
    image = phantom()
    files = write(image, tmp_path)
    for k, path in enumerate(files):  # reverse InstanceNumber and shuffle names
        edit(path, InstanceNumber=len(files) - k)
        path.rename(tmp_path / f"x{(k * 5) % len(files)}_{k}.dcm")
    np.testing.assert_array_equal(load_dicom(tmp_path).array, image.array)


def test_per_slice_rescale_gives_the_same_hu(tmp_path):
    image = phantom()
    files = write(image, tmp_path)
    ds = pydicom.dcmread(files[3])
    hu = ds.pixel_array.astype(np.int32)  # written with slope 1, intercept 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "2"
    new_stored = (hu + 1024) // 2
    ds.PixelData = new_stored.astype(np.int16).tobytes()
    ds.save_as(files[3])
    loaded = load_dicom(tmp_path)
    expected = image.array.copy()
    expected[:, :, 3] = (new_stored * 2 - 1024).T
    np.testing.assert_array_equal(loaded.array, expected)
    assert loaded.meta["rescale_per_slice"] is True and loaded.array.dtype == np.int16

    edit(files[5], RescaleSlope="0.5")  # a fractional slope: float voxels
    loaded = load_dicom(tmp_path)
    assert loaded.array.dtype == np.float32
    np.testing.assert_allclose(loaded.array[:, :, 5], image.array[:, :, 5] * 0.5)


def test_missing_slice_warns_with_the_deviation_and_strict_raises(tmp_path):
    files = write(phantom(), tmp_path)
    files[2].unlink()
    image = load_dicom(tmp_path)
    assert image.shape == (6, 5, 7)
    [warning] = [w for w in image.warnings if "non-uniform" in w]
    # slices at 0, 2, 6, 8 ... 14 mm; the grid through the ends steps 14/6 mm, slice 2 is 6 - 28/6 mm off
    assert (
        "2.000-4.000 mm" in warning and f"{14 / 6:.3f} mm" in warning and f"slice 2 lies {6 - 28 / 6:.3f} mm" in warning
    )
    with pytest.raises(SeriesError, match="non-uniform"):
        load_dicom(tmp_path, strict=True)


def test_duplicate_position_raises_but_an_identical_copy_is_ignored(tmp_path):
    image = phantom()
    files = write(image, tmp_path)
    shutil.copy(files[4], tmp_path / "copy_of_slice_4.dcm")
    loaded = load_dicom(tmp_path)
    np.testing.assert_array_equal(loaded.array, image.array)
    assert any("duplicate files" in w for w in loaded.warnings)

    other = tmp_path / "second_echo.dcm"
    shutil.copy(files[4], other)
    edit(other, SOPInstanceUID=generate_uid(entropy_srcs=["echo2"]))
    with pytest.raises(SeriesError, match="share slice positions"):
        load_dicom(tmp_path)


def test_gantry_tilt_keeps_voxels_with_an_exact_sheared_affine(tmp_path):
    tilt = np.radians(15.0)
    direction = AXIAL.copy()
    direction[:, 2] = [0.0, np.sin(tilt), np.cos(tilt)]  # slices step along y as well as z
    image = phantom(direction=direction)
    write(image, tmp_path)
    loaded = load_dicom(tmp_path)
    np.testing.assert_array_equal(loaded.array, image.array)
    np.testing.assert_allclose(loaded.affine, image.affine, atol=1e-6)
    assert any("gantry tilt 15.00 deg" in w for w in loaded.warnings)
    # SimpleITK keeps an orthogonal grid, so its slice k lies off the slice's ImagePositionPatient
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    ref = reader.Execute()
    last = pydicom.dcmread(max(tmp_path.iterdir()))
    ipp = np.array([float(v) for v in last.ImagePositionPatient])
    np.testing.assert_allclose(loaded.index_to_world([0, 0, 7]), ipp, atol=1e-4)
    assert np.linalg.norm(np.array(ref.TransformIndexToPhysicalPoint((0, 0, 7))) - ipp) > 1.0
    with pytest.raises(SeriesError, match="gantry tilt"):
        load_dicom(tmp_path, strict=True)


def test_mixed_orientations_in_one_series_are_split_never_stacked(tmp_path):
    axial = write(phantom(), tmp_path / "a")
    sagittal = write(phantom(shape=(5, 6, 4), direction=SAGITTAL, seed=1), tmp_path / "s")
    uid = pydicom.dcmread(axial[0]).SeriesInstanceUID
    for path in sagittal:
        edit(path, SeriesInstanceUID=uid)
    infos = find_series(tmp_path)
    assert sorted(i.shape for i in infos) == [(5, 6, 4), (6, 5, 8)]
    assert all(i.uid == uid and any("split into 2" in w for w in i.warnings) for i in infos)
    with pytest.raises(SeriesError, match="2 image series found"):
        load_dicom(tmp_path)
    with pytest.raises(SeriesError, match="choose by index"):
        load_dicom(tmp_path, series=uid)
    loaded = [load_dicom(tmp_path, series=i.index) for i in infos]
    assert {img.orientation for img in loaded} == {"LPS", "PIR"}


def test_left_handed_grid_reads_back_flipped_along_the_slice_normal(tmp_path):
    # the slice axis points against row x column: the reader stacks along the normal instead,
    # so the same voxels come back in reverse slice order at the same world positions
    left_handed = SAGITTAL * np.array([1.0, 1.0, -1.0])
    image = phantom(direction=left_handed)
    write(image, tmp_path)
    loaded = load_dicom(tmp_path)
    np.testing.assert_array_equal(loaded.array, image.array[:, :, ::-1])
    np.testing.assert_allclose(
        loaded.index_to_world([[0, 0, 0], [5, 4, 7]]), image.index_to_world([[0, 0, 7], [5, 4, 0]])
    )


def test_mixed_sizes_are_split(tmp_path):
    big = write(phantom(), tmp_path / "big")
    small = write(phantom(shape=(4, 4, 8), seed=2), tmp_path / "small")
    uid = pydicom.dcmread(big[0]).SeriesInstanceUID
    for path in small:
        edit(path, SeriesInstanceUID=uid)
    assert sorted(i.shape for i in find_series(tmp_path)) == [(4, 4, 8), (6, 5, 8)]


def test_localizers_are_excluded(tmp_path):
    image = phantom()
    files = write(image, tmp_path / "ct")
    scouts = write(phantom(shape=(5, 6, 2), direction=SAGITTAL, seed=3), tmp_path / "scout")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    edit(scouts[0], SeriesInstanceUID=uid, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    edit(scouts[1], SeriesInstanceUID=uid)  # no LOCALIZER flag: excluded by its orientation
    [info] = find_series(tmp_path)
    assert info.n_images == 8 and len(info.files) == 8
    loaded = load_dicom(tmp_path, strict=True)  # exclusions are expected, not strict-mode errors
    np.testing.assert_array_equal(loaded.array, image.array)
    assert sum("excluded" in w for w in loaded.warnings) == 2


def test_several_series_listed_and_selected_by_uid_or_index(tmp_path):
    ct = phantom()
    study = generate_uid(entropy_srcs=["study"])
    write(ct, tmp_path / "one", series_description="arterial", study_uid=study)
    write(phantom(seed=5), tmp_path / "two", series_description="venous", series_number=2, study_uid=study)
    infos = find_series(tmp_path)
    assert [i.description for i in infos] == ["arterial", "venous"] and [i.index for i in infos] == [0, 1]
    with pytest.raises(SeriesError, match=r"arterial.*venous"):
        load_dicom(tmp_path)
    by_uid = load_dicom(tmp_path, series=infos[0].uid)
    np.testing.assert_array_equal(by_uid.array, ct.array)
    assert load_dicom(tmp_path, series=1).meta["SeriesDescription"] == "venous"
    assert load_dicom(tmp_path, series="1").meta["SeriesDescription"] == "venous"  # as typed on a command line
    with pytest.raises(SeriesError, match="no series with UID"):
        load_dicom(tmp_path, series="1.2.3")
    with pytest.raises(SeriesError, match="out of range"):
        load_dicom(tmp_path, series=7)


def test_non_image_objects_are_listed_not_loaded(tmp_path):
    write(phantom(), tmp_path / "ct")
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "report.dcm")
    (tmp_path / "notes.txt").write_text("not dicom")
    infos = find_series(tmp_path)
    assert [i.is_image for i in infos] == [True, False, False]
    assert {i.modality for i in infos[1:]} == {"RTSTRUCT", "SR"}
    assert load_dicom(tmp_path).shape == (6, 5, 8)  # the one image series
    with pytest.raises(NotAnImageError, match="RTSTRUCT"):
        load_dicom(tmp_path, series=[i.modality for i in infos].index("RTSTRUCT"))
    shutil.rmtree(tmp_path / "ct")
    with pytest.raises(NotAnImageError, match="no image series"):
        load_dicom(tmp_path)
    with pytest.raises(NotAnImageError, match="no pixel data"):
        load_dicom(tmp_path / "report.dcm")


def test_bad_folders_and_files(tmp_path):
    with pytest.raises(ReadError, match="empty folder"):
        load_dicom(tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ReadError, match="no DICOM files"):
        find_series(tmp_path)
    with pytest.raises(ReadError, match="not a DICOM file"):
        load_dicom(tmp_path / "a.txt")
    with pytest.raises(ReadError, match="no such file"):
        load_dicom(tmp_path / "missing")


def test_truncated_slice_is_reported_with_its_file(tmp_path):
    files = write(phantom(), tmp_path)
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 20])
    with pytest.raises(ReadError, match=r"IM0003\.dcm") as info:
        load_dicom(tmp_path)
    assert "\n" not in str(info.value)


def test_unreadable_file_is_skipped_with_a_warning_and_strict_raises(tmp_path):
    write(phantom(), tmp_path)
    header = pydicom.dcmread(tmp_path / "IM0001.dcm")
    broken = tmp_path / "broken.dcm"
    raw = (tmp_path / "IM0001.dcm").read_bytes()
    broken.write_bytes(raw[:400])  # cut inside the header
    assert header.Modality == "CT"
    image = load_dicom(tmp_path)
    assert image.shape == (6, 5, 8) and any("broken.dcm" in w for w in image.warnings)
    with pytest.raises(SeriesError, match=r"broken\.dcm"):
        load_dicom(tmp_path, strict=True)


def test_patient_identity_only_on_request(tmp_path):
    write(phantom(), tmp_path)
    assert "PatientName" not in load_dicom(tmp_path).meta
    assert load_dicom(tmp_path, include_patient_identity=True).meta["PatientName"] == "ANONYMOUS^PHANTOM"


def test_series_info_to_dict_is_json_ready(tmp_path):
    import json

    write(phantom(), tmp_path)
    [info] = find_series(tmp_path)
    d = json.loads(json.dumps(info.to_dict()))
    assert d["shape"] == [6, 5, 8] and d["spacing_mm"] == [0.8, 0.9, 2.0] and len(d["files"]) == 8


@pytest.mark.parametrize("signed", [False, True])
def test_uncompressed_slices_read_from_disk_equal_pydicom(tmp_path, monkeypatch, signed):
    # 12 of 16 bits stored; the spare high bits hold junk (unsigned, to be masked) or are left
    # zero in negative values (signed 12-bit two's complement, to be sign-extended)
    image = Image(np.random.default_rng(6).integers(-1000, 1000, (128, 96, 4)).astype(np.int16), modality="CT")
    for path in write(image, tmp_path):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.int32)
        raw = (hu & 0x0FFF) if signed else ((hu + 1024) | 0xA000)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = int(signed), 12, 11
        ds.RescaleIntercept = "0" if signed else "-1024"
        ds.PixelData = raw.astype(np.uint16).tobytes()
        ds.save_as(path)
    direct_reads = []
    real_read = medseg.io.dicom.read_native
    monkeypatch.setattr(medseg.io.dicom, "read_native", lambda *a: direct_reads.append(a[0]) or real_read(*a))
    loaded = load_dicom(tmp_path)
    assert len(direct_reads) == 4 and loaded.array.dtype == np.int16
    np.testing.assert_array_equal(loaded.array, image.array)
    monkeypatch.setattr(medseg.io.dicom, "native_layout", lambda ds, plane: None)  # pydicom's decoder instead
    np.testing.assert_array_equal(load_dicom(tmp_path).array, image.array)
