"""PNG/JPEG/BMP/TIFF reading: [column, row] order, channels, stacks and spacing, checked against SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image as PILImage

import medseg
from medseg.errors import GeometryError, ReadError
from medseg.io import load
from medseg.io.raster import load_raster
from medseg.io.sitk import from_sitk

RNG = np.random.default_rng(11)


def _sitk_array(path: Path) -> np.ndarray:
    return from_sitk(sitk.ReadImage(str(path))).array


@pytest.mark.parametrize(
    ("name", "rows_cols"),
    [
        ("gray.png", RNG.integers(0, 256, (7, 5)).astype(np.uint8)),
        ("deep.png", RNG.integers(0, 65536, (6, 9)).astype(np.uint16)),
        ("rgb.png", RNG.integers(0, 256, (4, 6, 3)).astype(np.uint8)),
        ("gray.bmp", RNG.integers(0, 256, (8, 3)).astype(np.uint8)),
        ("rgb.tif", RNG.integers(0, 256, (5, 4, 3)).astype(np.uint8)),
        ("deep.tiff", RNG.integers(0, 65536, (9, 7)).astype(np.uint16)),
    ],
)
def test_pixels_in_column_row_order_like_simpleitk(tmp_path: Path, name: str, rows_cols: np.ndarray) -> None:
    path = tmp_path / name
    if name.endswith((".tif", ".tiff")):
        tifffile.imwrite(path, rows_cols, photometric="rgb" if rows_cols.ndim == 3 else "minisblack")
    else:
        PILImage.fromarray(rows_cols).save(path)
    img = load(path)
    assert img.channel_axis == (rows_cols.ndim == 3) and img.ndim == 2
    assert img.array.dtype == rows_cols.dtype
    assert np.array_equal(img.array, np.swapaxes(rows_cols, 0, 1))
    ref = _sitk_array(path)
    if ref.ndim > img.array.ndim:  # SimpleITK expands 8-bit palette BMPs to RGB
        assert (ref == ref[..., :1]).all()
        ref = ref[..., 0]
    assert np.array_equal(img.array, ref)
    assert not img.spacing_known and img.meta["spacing_source"] == "none"
    assert any("spacing unknown" in w for w in img.warnings)  # never a silent 1 mm


def test_jpeg_decodes_close_to_the_source_and_keeps_colour(tmp_path: Path) -> None:
    smooth = np.clip(np.add.outer(np.arange(40), np.arange(30)) * 3, 0, 255).astype(np.uint8)
    rgb = np.stack([smooth, smooth[::-1], np.full_like(smooth, 128)], -1)
    PILImage.fromarray(rgb).save(tmp_path / "c.jpg", quality=98)
    img = load(tmp_path / "c.jpg")
    assert img.channel_axis and img.shape == (30, 40) and img.n_channels == 3
    assert np.abs(img.array.astype(int) - np.swapaxes(rgb, 0, 1)).mean() < 2


def test_palette_png_label_indices_and_grey_values(tmp_path: Path) -> None:
    labels = RNG.integers(0, 4, (6, 5)).astype(np.uint8)
    pil = PILImage.fromarray(labels, mode="P")
    pil.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    pil.save(tmp_path / "mask.png")
    img = load(tmp_path / "mask.png")
    assert not img.channel_axis and np.array_equal(img.array, labels.T)
    grey = PILImage.fromarray(labels, mode="P")
    grey.putpalette([0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255])
    grey.save(tmp_path / "grey.png")
    assert np.array_equal(load(tmp_path / "grey.png").array, np.array([0, 80, 160, 255], np.uint8)[labels.T])


@pytest.mark.parametrize(
    ("resolution", "unit", "expected_mm"),
    [((20000, 20000), "CENTIMETER", (0.0005, 0.0005)), ((300, 150), "INCH", (25.4 / 300, 25.4 / 150))],
)
def test_tiff_resolution_tags_give_spacing_in_mm(
    tmp_path: Path, resolution: tuple[float, float], unit: str, expected_mm: tuple[float, float]
) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, np.zeros((4, 6), np.uint16), resolution=resolution, resolutionunit=unit)
    img = load(path)
    assert img.spacing_known and img.meta["spacing_source"] == "tiff_resolution"
    assert np.allclose(img.spacing, expected_mm, rtol=1e-9)
    assert load(path, spacing=0.25).spacing == (0.25, 0.25)  # the caller wins


def test_screen_dpi_and_missing_tags_mean_unknown_spacing(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "screen.tif", np.zeros((4, 6), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    img = load(tmp_path / "screen.tif")
    assert not img.spacing_known and any("72 dpi" in w for w in img.warnings)
    for name in ("dpi.png", "dpi.jpg"):
        PILImage.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / name, dpi=(72, 72))
        img = load(tmp_path / name)
        assert not img.spacing_known and any("72 dpi is a software default" in w for w in img.warnings)


@pytest.mark.parametrize(
    ("name", "dpi", "expected_mm", "source"),
    [
        ("phys.png", (25.4 / 0.35, 25.4 / 0.35), (0.35, 0.35), "png_phys"),  # stored as 2857 px/m
        ("phys.png", (300, 150), (0.08467, 0.16932), "png_phys"),  # 11811 and 5906 px/m
        ("jfif.jpg", (200, 100), (0.127, 0.254), "jfif_density"),
    ],
)
def test_png_phys_and_jpeg_jfif_density_give_spacing_in_mm(
    tmp_path: Path, name: str, dpi: tuple[float, float], expected_mm: tuple[float, float], source: str
) -> None:
    PILImage.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / name, dpi=dpi)
    img = load(tmp_path / name)
    assert img.spacing_known and img.meta["spacing_source"] == source and not img.warnings
    assert img.spacing == pytest.approx(expected_mm, rel=1e-12)


def test_tiff_stacks_imagej_spacing_and_channels(tmp_path: Path) -> None:
    stack = RNG.integers(0, 4000, (5, 8, 6)).astype(np.uint16)  # z, y, x
    tifffile.imwrite(
        tmp_path / "ij.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.65, 1 / 0.65),
        metadata={"unit": "um", "spacing": 2.0, "axes": "ZYX"},
    )
    img = load(tmp_path / "ij.tif")
    assert img.shape == (6, 8, 5) and np.array_equal(img.array, stack.transpose(2, 1, 0))
    assert np.array_equal(img.array, _sitk_array(tmp_path / "ij.tif"))
    assert img.meta["spacing_source"] == "imagej" and np.allclose(img.spacing, (0.00065, 0.00065, 0.002))
    tifffile.imwrite(tmp_path / "pages.tif", stack)  # plain multi-page: no slice spacing
    plain = load(tmp_path / "pages.tif")
    assert plain.ndim == 3 and not plain.spacing_known
    assert load(tmp_path / "pages.tif", spacing=(0.5, 0.5, 2.0)).spacing == (0.5, 0.5, 2.0)
    channels = RNG.integers(0, 255, (2, 8, 6)).astype(np.uint8)  # c, y, x
    tifffile.imwrite(tmp_path / "cyx.tif", channels, imagej=True, metadata={"axes": "CYX"})
    multi = load(tmp_path / "cyx.tif")
    assert multi.channel_axis and multi.shape == (6, 8) and np.array_equal(multi.array, channels.transpose(2, 1, 0))
    tifffile.imwrite(
        tmp_path / "time.tif", RNG.integers(0, 9, (3, 4, 5)).astype(np.uint8), imagej=True, metadata={"axes": "TYX"}
    )
    with pytest.raises(ReadError, match="unsupported TIFF layout"):
        load(tmp_path / "time.tif")


def test_bad_spacing_argument(tmp_path: Path) -> None:
    PILImage.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "a.png")
    for bad in [(1.0, 2.0, 3.0), (0.0, 1.0), -1.0]:
        with pytest.raises(GeometryError, match="spacing"):
            load_raster(tmp_path / "a.png", spacing=bad)


def test_corrupt_files_raise_read_error(tmp_path: Path) -> None:
    PILImage.fromarray(RNG.integers(0, 256, (64, 64)).astype(np.uint8)).save(tmp_path / "ok.png")
    PILImage.fromarray(RNG.integers(0, 256, (64, 64)).astype(np.uint8)).save(tmp_path / "ok.jpg")
    tifffile.imwrite(tmp_path / "ok.tif", RNG.integers(0, 256, (64, 64)).astype(np.uint8))
    cases = {
        "truncated.png": (tmp_path / "ok.png").read_bytes()[:300],
        "truncated.jpg": (tmp_path / "ok.jpg").read_bytes()[:400],
        "truncated.tif": (tmp_path / "ok.tif").read_bytes()[:100],
        "text.png": b"hello, not an image",
        "empty.tif": b"",
        "garbage.bmp": b"BM" + bytes(range(60)),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ReadError) as info:
            load(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "shape", "channels"),
    [
        ("cells_fluo/nuclei.tif", (512, 512), 1),
        ("cells_he/he_tile.jpg", (500, 300), 3),
        ("xray_chest/1.jpg", (512, 512), 1),
    ],
)
def test_shared_raster_files(shared_data: Path, name: str, shape: tuple[int, int], channels: int) -> None:
    img = load(shared_data / name)
    assert img.shape == shape and img.n_channels == channels
    diff = np.abs(img.array.astype(int) - _sitk_array(shared_data / name))
    # PNG/TIFF decode identically; JPEG decoders may differ by a grey level in colour upsampling
    assert diff.max() == 0 if name.endswith(".tif") else diff.mean() < 1


def test_shared_3d_tiff_stack(shared_data: Path) -> None:
    path = shared_data / "cells_3d_synthetic" / "nuclei3d_labels.tif"
    img = load(path)
    assert img.ndim == 3 and np.array_equal(img.array, tifffile.imread(path).transpose(2, 1, 0))


def test_label_maps_round_trip_through_png_in_8_and_16_bits(tmp_path: Path) -> None:
    """Instance maps above 255 are written as 16-bit grey PNG; values and pixel size come back exactly."""
    from medseg.io.image import LabelMap

    for high in (200, 40000):
        labels = LabelMap(RNG.integers(0, high, (37, 23)).astype(np.uint32), spacing=(0.0005, 0.0005))
        path = medseg.save(labels, tmp_path / f"labels_{high}.png")
        back = medseg.load(path)
        assert back.array.dtype == (np.uint8 if high < 256 else np.uint16)
        assert np.array_equal(back.array, labels.array) and np.allclose(back.spacing, labels.spacing, rtol=1e-3)
