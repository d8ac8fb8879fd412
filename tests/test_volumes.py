"""NIfTI / NRRD / MHA reading and writing, checked against nibabel and SimpleITK."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import ReadError, WriteError
from medseg.io import load, save
from medseg.io.image import Image
from medseg.io.sitk import from_sitk, to_sitk
from medseg.io.volumes import load_volume, save_volume, smallest_unsigned_dtype

SHARED_NIFTI = [
    "ct_3mm.nii.gz",
    "mr_3mm.nii.gz",
    "ct_3mm_reference_labels.nii.gz",
    "ct_abdomen_dicom_reference_labels.nii.gz",
]
EXTENSIONS = [".nii", ".nii.gz", ".nrrd", ".mha"]


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _images() -> dict[str, Image]:
    rng = np.random.default_rng(7)
    flip = np.diag([-1.0, 1.0, 1.0])  # improper (left-handed) direction, as many NIfTI files have
    rot2 = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    return {
        "ct_oblique": Image(
            rng.integers(-1024, 3000, (9, 7, 5)).astype(np.int16),
            spacing=(0.7, 0.977, 2.5),
            origin=(-120.25, 33.1, -804.5),
            direction=_rotation(20, -35),
            modality="CT",
            intensity_unit="HU",
        ),
        "float_flipped": Image(rng.normal(size=(6, 5, 4)).astype(np.float32), spacing=(3, 3, 4), direction=flip),
        "mask_2d": Image(rng.integers(0, 2, (11, 8)).astype(bool), spacing=(0.14, 0.14), origin=(5.0, -2.0)),
        "float_2d_rotated": Image(rng.normal(size=(6, 9)), spacing=(0.5, 0.25), direction=rot2),
        "rgb_2d": Image(rng.integers(0, 256, (10, 6, 3)).astype(np.uint8), spacing=(0.25, 0.25), channel_axis=True),
        "time_4d": Image(rng.integers(0, 900, (5, 4, 3, 2)).astype(np.int16), spacing=(2, 2, 3), channel_axis=True),
    }


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("name", list(_images()))
def test_round_trip_voxels_exact_and_geometry(tmp_path: Path, name: str, ext: str) -> None:
    img = _images()[name]
    out = save(img, tmp_path / f"img{ext}")
    back = load(out)
    assert back.shape == img.shape and back.channel_axis == img.channel_axis
    assert np.array_equal(back.array, img.array)
    # NIfTI keeps its affine in float32; NRRD/MHA in decimal double
    atol = 1e-4 if ext.startswith(".nii") else 1e-9
    assert np.allclose(back.spacing, img.spacing, rtol=1e-6, atol=atol)
    assert np.allclose(back.origin, img.origin, atol=atol)
    assert np.allclose(back.direction, img.direction, atol=atol)
    assert (back.modality, back.intensity_unit) == (img.modality, img.intensity_unit)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img{ext}"]  # atomic: no temp file left


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_written_files_read_the_same_in_simpleitk(tmp_path: Path, ext: str) -> None:
    img = _images()["ct_oblique"]
    ref = sitk.ReadImage(str(save_volume(img, tmp_path / f"ct{ext}")))
    assert np.array_equal(sitk.GetArrayFromImage(ref).transpose(2, 1, 0), img.array)
    assert np.allclose(ref.GetOrigin(), img.origin, atol=1e-4)
    assert np.allclose(ref.GetSpacing(), img.spacing, atol=1e-5)
    assert np.allclose(np.reshape(ref.GetDirection(), (3, 3)), img.direction, atol=1e-5)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([0, 1, 5], np.int64), ([0, 255], np.int32), ([0, 256], np.int64), ([3, 70000], np.int64), ([0, 1], np.uint64)],
)
def test_label_maps_stored_in_smallest_unsigned_type(tmp_path: Path, values: list[int], dtype: type) -> None:
    arr = np.array(values * 4, dtype=dtype).reshape(2, 2, -1)
    expected = np.min_scalar_type(int(arr.max()))
    assert smallest_unsigned_dtype(arr) == expected
    back = load_volume(save_volume(Image(arr), tmp_path / "lab.nii.gz"))
    assert back.array.dtype == expected and np.array_equal(back.array, arr)
    assert nib.load(tmp_path / "lab.nii.gz").get_data_dtype() == expected


def test_signed_and_float_images_keep_their_type(tmp_path: Path) -> None:
    ct = Image(np.array([[[-1000, 40]]], np.int16))
    assert load_volume(save_volume(ct, tmp_path / "ct.nrrd")).array.dtype == np.int16
    half = Image(np.array([[[0.5, 1.5]]], np.float16))
    back = load_volume(save_volume(half, tmp_path / "half.nii"))
    assert back.array.dtype == np.float32 and np.array_equal(back.array, half.array.astype(np.float32))


@pytest.mark.parametrize("name", SHARED_NIFTI)
def test_shared_nifti_geometry_equals_simpleitk(shared_data: Path, name: str) -> None:
    path = shared_data / name
    img = load(path)
    ref = from_sitk(sitk.ReadImage(str(path)))
    assert img.shape == ref.shape
    assert np.array_equal(img.array, ref.array)
    assert np.allclose(img.spacing, ref.spacing, atol=1e-6)
    assert np.allclose(img.origin, ref.origin, atol=1e-4)
    assert np.allclose(img.direction, ref.direction, atol=1e-6)
    assert img.orientation == sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        ref.direction.ravel().tolist()
    )


@pytest.mark.parametrize(("name", "code"), [("mr_3mm.nii.gz", "LPS"), ("ct_3mm.nii.gz", "RAS")])
def test_shared_orientation_codes(shared_data: Path, name: str, code: str) -> None:
    path = shared_data / name
    assert "".join(nib.aff2axcodes(nib.load(path).affine)) == code  # what nibabel says about the file
    assert load(path).orientation == code


def _nifti(tmp_path: Path, name: str, data: np.ndarray, **fields: object) -> Path:
    nii = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    for key, value in fields.items():
        nii.header[key] = value
    path = tmp_path / name
    nib.save(nii, path)
    return path


def test_scaling_applied_like_nibabel_and_simpleitk(tmp_path: Path) -> None:
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "scaled.nii"
    nii = nib.Nifti1Image(raw, np.eye(4))
    nii.header.set_slope_inter(2.5, -1024.0)
    nib.save(nii, path)
    img = load_volume(path)
    assert np.allclose(img.array, raw * 2.5 - 1024.0)
    assert np.allclose(img.array, from_sitk(sitk.ReadImage(str(path))).array)


def test_sform_qform_precedence_follows_nibabel(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3), np.int16)
    sform = np.array([[2.0, 0, 0, -10], [0, 2, 0, 20], [0, 0, 3, 5], [0, 0, 0, 1]])
    qform = np.array([[-1.0, 0, 0, 7], [0, -1, 0, 8], [0, 0, 1, 9], [0, 0, 0, 1]])
    for sform_code, qform_code in [(1, 1), (0, 1), (2, 0), (0, 0)]:
        nii = nib.Nifti1Image(data, None)
        nii.set_sform(sform, code=sform_code)
        nii.set_qform(qform, code=qform_code)
        path = tmp_path / f"s{sform_code}q{qform_code}.nii"
        nib.save(nii, path)
        img = load_volume(path)
        assert np.allclose(img.affine_ras, nib.load(path).affine, atol=1e-5)
        assert img.meta["affine_source"] == ("sform" if sform_code else "qform" if qform_code else "none")
        assert bool(img.warnings) == (sform_code == qform_code == 0)


def test_nifti_spatial_units_converted_to_mm(tmp_path: Path) -> None:
    nii = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.diag([0.002, 0.002, 0.005, 1.0]))
    nii.header.set_xyzt_units("meter")
    nib.save(nii, tmp_path / "m.nii")
    assert np.allclose(load_volume(tmp_path / "m.nii").spacing, (2.0, 2.0, 5.0))


def test_modality_option_and_unknown_spacing_round_trip(tmp_path: Path) -> None:
    path = _nifti(tmp_path, "plain.nii.gz", np.zeros((2, 2, 2), np.int16))
    assert load_volume(path).modality == ""
    ct = load(path, modality="ct")
    assert (ct.modality, ct.intensity_unit) == ("CT", "HU")
    xray = Image(np.zeros((4, 4), np.uint8), modality="DX", spacing_known=False)
    for ext in (".nii", ".mha"):
        back = load_volume(save_volume(xray, tmp_path / f"xray{ext}"))
        assert back.modality == "DX" and not back.spacing_known and back.warnings


def test_corrupt_and_truncated_files_raise_read_error(tmp_path: Path) -> None:
    good = _nifti(tmp_path, "good.nii", np.arange(4000, dtype=np.int16).reshape(20, 20, 10))
    raw = good.read_bytes()
    cases = {
        "garbage.nii": b"this is not a nifti header" * 20,
        "truncated.nii": raw[: len(raw) // 2],
        "header_only.nii": raw[:200],
        "truncated.nii.gz": gzip.compress(raw)[:-400],
        "empty.nii.gz": b"",
        "corrupt.mha": b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
        b"ElementDataFile = LOCAL\nxx",
        "missing_raw.mhd": b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
        b"ElementDataFile = nowhere.raw\n",
        "garbage.nrrd": b"NRRD0004\nnonsense\n",
    }
    zero_voxel = bytearray(raw)  # no sform/qform and pixdim[1] = 0: a voxel of zero width
    zero_voxel[80:84] = np.float32(0).tobytes()
    zero_voxel[252:256] = np.zeros(2, np.int16).tobytes()
    cases["zero_voxel.nii"] = bytes(zero_voxel)
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    for name in cases:
        with pytest.raises(ReadError) as info:
            load(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ReadError, match="no such file"):
        load_volume(tmp_path / "absent.nii.gz")


def test_save_rejects_unknown_extension_and_unwritable_path(tmp_path: Path) -> None:
    img = Image(np.zeros((2, 2, 2), np.uint8))
    for name in ("x.png", "x.mhd", "x.nhdr"):
        with pytest.raises(WriteError, match="format"):
            save_volume(img, tmp_path / name)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteError):
        save_volume(img, blocker / "sub" / "x.nii.gz")


def test_sitk_helpers_vector_and_4d() -> None:
    rgb = _images()["rgb_2d"]
    s = to_sitk(rgb)
    assert s.GetSize() == (10, 6) and s.GetNumberOfComponentsPerPixel() == 3
    assert s.GetPixel(7, 2) == tuple(int(v) for v in rgb.array[7, 2])
    volumes = np.arange(120, dtype=np.int16).reshape(2, 3, 4, 5)  # [t, z, y, x]
    four = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in volumes])
    assert four.GetDimension() == 4
    img = from_sitk(four)
    assert img.shape == (5, 4, 3) and img.n_channels == 2 and img.array[4, 3, 2, 1] == four[4, 3, 2, 1]


def test_colour_and_vector_nifti_from_other_writers(tmp_path: Path) -> None:
    rgb = np.zeros((4, 3, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"], rgb["B"] = 7, np.arange(24).reshape(4, 3, 2)
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb24.nii")
    img = load_volume(tmp_path / "rgb24.nii")
    assert img.channel_axis and img.shape == (4, 3, 2) and np.array_equal(img.array[..., 2], rgb["B"])
    pixels = np.random.default_rng(0).integers(0, 255, (6, 5, 3)).astype(np.uint8)  # rows, columns, RGB
    sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=True), str(tmp_path / "itk_rgb.nii.gz"))
    img = load_volume(tmp_path / "itk_rgb.nii.gz")
    assert img.ndim == 2 and img.n_channels == 3 and np.array_equal(img.array, pixels.swapaxes(0, 1))


def test_nifti_gz_holds_the_nibabel_bytes_as_standard_gzip_and_is_reproducible(tmp_path: Path) -> None:
    labels = Image((np.indices((30, 20, 10)).sum(0) % 7).astype(np.uint8), spacing=(0.8, 0.8, 2.0), modality="CT")
    first = save_volume(labels, tmp_path / "a.nii.gz").read_bytes()
    second = save_volume(labels, tmp_path / "b.nii.gz").read_bytes()
    assert first == second and first[4:8] == bytes(4)  # no time stamp in the gzip header
    save_volume(labels, tmp_path / "plain.nii")
    plain = (tmp_path / "plain.nii").read_bytes()
    assert gzip.decompress(first) == plain and len(first) < len(plain) // 4  # Python's zlib reads ISA-L's stream
    reference = nib.load(tmp_path / "a.nii.gz")
    assert np.array_equal(np.asanyarray(reference.dataobj), labels.array)
    assert np.allclose(reference.header.get_zooms(), labels.spacing)


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_gzipped_nifti_1_and_2_in_either_byte_order_read_as_nibabel_reads_them(
    tmp_path: Path, klass: type, byte_order: str
) -> None:
    voxels = np.random.default_rng(1).integers(-1000, 3000, (9, 8, 7)).astype(np.int16)
    affine = np.diag([0.7, -0.8, 2.5, 1.0])
    nii = klass(voxels, affine, klass.header_class(endianness=byte_order))
    nii.header.set_slope_inter(0.5, -10.0)
    nii.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"medseg test extension"))  # comment, shifts the data
    path = tmp_path / f"{klass.__name__}{byte_order == '>'}.nii.gz"
    nib.save(nii, path)
    with gzip.open(path) as stream:
        assert stream.read(4) == np.array(nii.header.sizeof_hdr, byte_order + "i4").tobytes()
    reference = nib.load(path)
    img = load_volume(path)
    assert np.array_equal(img.array, np.asanyarray(reference.dataobj))
    assert np.allclose(img.spacing, (0.7, 0.8, 2.5)) and img.direction[1, 1] == 1.0  # RAS -y is LPS +y
