"""Single DICOM objects: compressed syntaxes, radiographs, colour, enhanced and legacy multi-frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import medseg.io.dicom
from medseg.errors import ReadError, SeriesError, UnsupportedTransferSyntaxError
from medseg.io import dicom_frames
from medseg.io.dicom import load_dicom, save_dicom_series
from medseg.io.dicom_frames import (
    decode_file,
    decode_with_imagecodecs,
    imagecodecs_decodable,
    planes_of,
)
from medseg.io.image import Image

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def new_dataset(sop_class: str, modality: str, pixels: np.ndarray, **attributes) -> Dataset:
    """A minimal valid dataset holding ``pixels`` (frames, rows, columns[, samples]) uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid(entropy_srcs=[modality, sop_class])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = modality
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", modality])
    ds.PatientName = "TEST^OBJECT"
    frames = pixels if pixels.ndim >= 3 and (pixels.ndim == 4 or "NumberOfFrames" in attributes) else pixels[None]
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.SamplesPerPixel = frames.shape[3] if frames.ndim == 4 else 1
    ds.PhotometricInterpretation = "MONOCHROME2" if ds.SamplesPerPixel == 1 else "RGB"
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# ---- compressed transfer syntaxes ----------------------------------------------------------


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_syntaxes_equal_the_uncompressed_file_and_simpleitk(name):
    reference = load_dicom(get_testdata_file("MR_small.dcm"))
    image = load_dicom(get_testdata_file(name))
    np.testing.assert_array_equal(image.array, reference.array)
    assert image.meta["transfer_syntax"] != reference.meta["transfer_syntax"]
    ref = sitk.ReadImage(get_testdata_file(name))
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(image.origin, ref.GetOrigin())
    np.testing.assert_allclose(image.direction.ravel(), ref.GetDirection(), atol=1e-9)


@pytest.mark.parametrize("decoder", ["parallel-threads", "pydicom"])
@pytest.mark.parametrize("syntax", [pydicom.uid.RLELossless, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless])
def test_series_compressed_by_pydicom_encoders_round_trips(tmp_path, monkeypatch, syntax, decoder):
    if decoder == "pydicom":
        monkeypatch.setattr(medseg.io.dicom, "PARALLEL_MIN_SLICES", 10**9)
    calls: dict[str, list[Path]] = {"decode_with_gdcm": [], "decode_with_imagecodecs": []}
    for name, seen in calls.items():
        real = getattr(medseg.io.dicom, name)
        monkeypatch.setattr(
            medseg.io.dicom, name, lambda p, plane, real=real, seen=seen: seen.append(p) or real(p, plane)
        )
    rng = np.random.default_rng(1)
    image = Image(rng.integers(-1024, 3000, (64, 48, 8)).astype(np.int16), spacing=(0.7, 0.7, 3.0), modality="CT")
    expected = image.array.astype(np.int32)
    for k, path in enumerate(save_dicom_series(image, tmp_path, seed="compressed")):
        ds = pydicom.dcmread(path)
        if k == 5:  # a different rescale on one slice: same stored values, HU shifted by 1000
            ds.RescaleIntercept = "1000"
            expected[:, :, k] += 1000
        ds.compress(syntax)
        ds.save_as(path)
    loaded = load_dicom(tmp_path)
    assert loaded.meta["transfer_syntax"] == syntax.name and loaded.array.dtype == np.int16
    np.testing.assert_array_equal(loaded.array, expected)
    parallel = 8 if decoder == "parallel-threads" else 0
    j2k = syntax == pydicom.uid.JPEG2000Lossless
    assert len(calls["decode_with_imagecodecs"]) == (parallel if j2k else 0)
    assert len(calls["decode_with_gdcm"]) == (0 if j2k else parallel)


def test_a_corrupt_slice_of_a_jpeg2000_series_is_named(tmp_path):
    image = Image(np.arange(64 * 48 * 8, dtype=np.int16).reshape(64, 48, 8), spacing=(0.7, 0.7, 3.0), modality="CT")
    paths = save_dicom_series(image, tmp_path, seed="corrupt")
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.compress(pydicom.uid.JPEG2000Lossless)
        if k == 3:  # keep the DICOM structure, cut the codestream short
            codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
            ds.PixelData = encapsulate([codestream[: len(codestream) // 3]])
        ds.save_as(path)
    with pytest.raises(ReadError, match="cannot decode pixel data") as caught:
        load_dicom(tmp_path)
    assert paths[3].name in str(caught.value)


def test_imagecodecs_jpeg2000_frames_equal_pydicom_or_defer_to_it():
    """Every JPEG 2000 lossless file of pydicom's corpus: the GIL-free decoder gives pydicom's values or declines."""
    checked = 0
    declined = []
    for path in map(Path, get_testdata_files("*J2K*.dcm") + get_testdata_files("*jp2k*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID != pydicom.uid.JPEG2000Lossless or not imagecodecs_decodable(
            planes := planes_of(ds, path)
        ):
            continue
        frames = decode_with_imagecodecs(path, planes[0])
        if frames is None:
            declined.append(path.name)
        else:
            np.testing.assert_array_equal(frames, decode_file(ds, path), err_msg=path.name)
            checked += 1
    assert checked >= 3
    assert declined == ["J2K_pixelrep_mismatch.dcm"]  # the header says signed, the codestream unsigned


def test_a_syntax_without_decoder_is_named(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video: no pydicom decoder
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    path = save(ds, tmp_path / "mpeg2.dcm")
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"MPEG2 Main Profile.*1\.2\.840\.10008\.1\.2\.4\.100"):
        load_dicom(path)


def test_a_syntax_whose_decoder_is_not_installed_names_the_package(tmp_path, monkeypatch):
    class MissingPlugins:
        is_available = False
        missing_dependencies = ("pylibjpeg - requires pylibjpeg and pylibjpeg-openjpeg", "gdcm - requires gdcm")

    monkeypatch.setattr(dicom_frames, "get_decoder", lambda uid: MissingPlugins())
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"install one of: pylibjpeg.*pylibjpeg-openjpeg"):
        load_dicom(get_testdata_file("MR_small_jp2klossless.dcm"))


# ---- radiographs -----------------------------------------------------------------------------


def radiograph(tmp_path: Path, photometric: str = "MONOCHROME2", **spacing) -> tuple[Path, np.ndarray]:
    stored = np.random.default_rng(2).integers(0, 4096, (12, 16)).astype(np.uint16)  # rows x columns
    ds = new_dataset(DX_STORAGE, "DX", stored, BitsStored=12, HighBit=11, **spacing)
    ds.PhotometricInterpretation = photometric
    return save(ds, tmp_path / f"dx_{photometric}.dcm"), stored


def test_monochrome1_is_inverted_so_bright_means_dense(tmp_path):
    path1, stored = radiograph(tmp_path, "MONOCHROME1", PixelSpacing=[0.2, 0.15])
    path2, _ = radiograph(tmp_path, "MONOCHROME2", PixelSpacing=[0.2, 0.15])
    inverted, plain = load_dicom(path1), load_dicom(path2)
    np.testing.assert_array_equal(plain.array, stored.T)
    np.testing.assert_array_equal(inverted.array, (4095 - stored).T)  # over the 12 stored bits
    assert inverted.meta["monochrome1_inverted"] is True and "monochrome1_inverted" not in plain.meta
    assert inverted.shape == (16, 12) and inverted.spacing == (0.15, 0.2)
    assert inverted.meta["spacing_source"] == "PixelSpacing"


@pytest.mark.parametrize(
    ("attributes", "spacing", "source"),
    [
        ({"PixelSpacing": [0.2, 0.15], "ImagerPixelSpacing": [0.3, 0.3]}, (0.15, 0.2), "PixelSpacing"),
        (
            {"ImagerPixelSpacing": [0.2, 0.25], "EstimatedRadiographicMagnificationFactor": 1.25},
            (0.25 / 1.25, 0.2 / 1.25),
            "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
        ),
        ({"ImagerPixelSpacing": [0.2, 0.25]}, (0.25, 0.2), "ImagerPixelSpacing"),
    ],
)
def test_radiograph_spacing_source_is_recorded(tmp_path, attributes, spacing, source):
    path, _ = radiograph(tmp_path, **attributes)
    image = load_dicom(path)
    assert image.spacing == pytest.approx(spacing) and image.spacing_known
    assert image.meta["spacing_source"] == source


def test_radiograph_without_spacing_says_so(tmp_path):
    path, _ = radiograph(tmp_path)
    image = load_dicom(path)
    assert not image.spacing_known and image.meta["spacing_source"] == "none"
    assert any("spacing unknown" in w for w in image.warnings)
    with pytest.raises(SeriesError, match="spacing unknown"):
        load_dicom(path, strict=True)


# ---- colour ----------------------------------------------------------------------------------


def test_rgb_and_ybr_keep_three_channels(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (10, 14, 3)).astype(np.uint8)
    rgb_path = save(new_dataset(SC_STORAGE, "OT", rgb[None]), tmp_path / "rgb.dcm")
    ybr = new_dataset(SC_STORAGE, "OT", convert_color_space(rgb, "RGB", "YBR_FULL")[None])
    ybr.PhotometricInterpretation = "YBR_FULL"
    ybr_path = save(ybr, tmp_path / "ybr.dcm")

    image = load_dicom(rgb_path)
    assert image.channel_axis and image.shape == (14, 10) and image.n_channels == 3
    np.testing.assert_array_equal(image.array, rgb.transpose(1, 0, 2))
    converted = load_dicom(ybr_path).array.astype(int)
    assert np.abs(converted - rgb.transpose(1, 0, 2)).max() <= 2  # 8-bit YBR round trip


def test_colour_cine_frames_match_pydicom(tmp_path):
    path = get_testdata_file("examples_ybr_color.dcm")
    image = load_dicom(path)
    reference = pydicom.dcmread(path).pixel_array  # frames, rows, columns, RGB
    assert image.channel_axis and image.shape == (*reference.shape[2:0:-1], reference.shape[0])
    np.testing.assert_array_equal(image.array, reference.transpose(2, 1, 0, 3))
    assert not image.spacing_known and any("no patient position" in w for w in image.warnings)


# ---- multi-frame -----------------------------------------------------------------------------


def enhanced_ct(tmp_path: Path, volume: np.ndarray, order: np.ndarray, intercepts: np.ndarray) -> Path:
    """An Enhanced CT file whose frames are stored in ``order`` with per-frame positions and rescale."""
    stored = np.stack([(volume[:, :, k].T - intercepts[k]).astype(np.int16) for k in order])
    ds = new_dataset(ENHANCED_CT_STORAGE, "CT", stored, NumberOfFrames=len(order))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.6, 0.5], 1.5
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal: rows along L, columns along I
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for k in order:
        group, position, transform = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [10.0, -20.0 + 1.5 * k, 30.0]  # normal L x I = +P
        transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = float(intercepts[k]), 1.0, "HU"
        group.PlanePositionSequence, group.PixelValueTransformationSequence = [position], [transform]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    return save(ds, tmp_path / "enhanced_ct.dcm")


def test_enhanced_ct_uses_per_frame_functional_groups(tmp_path):
    rng = np.random.default_rng(4)
    volume = rng.integers(-1000, 1000, (7, 5, 6)).astype(np.int16)  # x, y, z
    order = rng.permutation(6)
    intercepts = np.array([-1024, -1000, -1024, 0, -512, -1024])
    image = load_dicom(enhanced_ct(tmp_path, volume, order, intercepts))
    np.testing.assert_array_equal(image.array, volume)
    assert image.spacing == pytest.approx((0.5, 0.6, 1.5))
    assert image.origin == pytest.approx((10.0, -20.0, 30.0))
    np.testing.assert_allclose(image.direction, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    assert image.orientation == "LIP" and image.meta["rescale_per_slice"] is True
    assert image.meta["spacing_source"] == "PixelMeasuresSequence/PixelSpacing"


def test_rt_dose_frames_are_placed_by_grid_frame_offsets():
    path = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    image = load_dicom(path)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(image.index_to_world([0, 0, len(offsets) - 1]), ipp + np.array([0, 0, offsets[-1]]))
    np.testing.assert_allclose(image.array, ds.pixel_array.transpose(2, 1, 0) * float(ds.DoseGridScaling), rtol=1e-6)
    assert image.meta["units"] == str(ds.DoseUnits)


def test_single_ct_slice_matches_simpleitk():
    path = get_testdata_file("CT_small.dcm")
    image = load_dicom(path)
    ref = sitk.ReadImage(path)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(image.spacing[:2], ref.GetSpacing()[:2])
    np.testing.assert_allclose(image.origin, ref.GetOrigin())
    assert image.intensity_unit == "HU" and image.array.dtype == np.int16


def test_enhanced_frames_of_another_orientation_are_not_stacked(tmp_path):
    volume = np.zeros((4, 3, 5), np.int16)
    path = enhanced_ct(tmp_path, volume, np.arange(5), np.zeros(5))
    ds = pydicom.dcmread(path)
    other = Dataset()
    other.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.PerFrameFunctionalGroupsSequence[2].PlaneOrientationSequence = [other]
    ds.save_as(path)
    with pytest.raises(SeriesError, match="different orientations"):
        load_dicom(path)


def _as_floats(value: object) -> list[float] | None:
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def test_raw_number_parsing_agrees_with_pydicom_on_the_corpus() -> None:
    """The cached parse of DS/IS text gives what pydicom's conversion gives, on every corpus file."""
    from pydicom.data import get_testdata_files

    from medseg.io.dicom_frames import _number_text

    keywords = (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "RescaleSlope",
        "RescaleIntercept",
        "InstanceNumber",
        "NumberOfFrames",
    )
    compared = 0
    for path in get_testdata_files("*.dcm"):
        try:
            raw, converted = pydicom.dcmread(path), pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:  # files pydicom cannot parse: the reader's business, tested elsewhere
            continue
        for keyword in keywords:
            try:
                expected = converted.get(keyword)
            except (ValueError, OverflowError):  # text pydicom itself cannot convert (strict validation mode)
                continue
            if expected is None:
                assert _number_text(raw, keyword) is None, (path, keyword)
                continue
            assert _as_floats(_number_text(raw, keyword)) == _as_floats(expected), (path, keyword)
            compared += 1
    assert compared > 300
