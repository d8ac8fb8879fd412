"""Whole-slide images: OpenSlide and tiffslide backends, pixel size, regions, overviews, pyramidal TIFF, ``medseg info``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.errors import GeometryError, ReadError
from medseg.io.formats import format_of
from medseg.io.image import Image
from medseg.io.pyramid import block_mean, save_pyramid
from medseg.io.slide import Slide, is_slide_file, open_slide


def _rgb(width: int = 700, height: int = 500, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture ``[x, y, 3]`` (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (width // 50 + 2, height // 50 + 2, 3)).astype(np.float64)
    x = np.linspace(0, small.shape[0] - 1.001, width)
    y = np.linspace(0, small.shape[1] - 1.001, height)
    return small[x.astype(int)][:, y.astype(int)].astype(np.uint8)


@pytest.fixture(scope="module")
def wsi(shared_data: Path) -> Path:
    return shared_data / "wsi"


def test_both_real_slides_open_with_their_levels_pixel_size_and_associated_images(wsi: Path) -> None:
    with open_slide(wsi / "CMU-1-Small-Region.svs") as cmu:
        assert cmu.backend == "openslide" and cmu.vendor == "aperio"
        assert cmu.dimensions == (2220, 2967) and len(cmu.levels) == 1
        assert cmu.mpp == pytest.approx((0.499, 0.499)) and cmu.mpp_source == "openslide.mpp-x"
        assert cmu.objective_power == 20
        assert set(cmu.associated_images) == {"label", "macro", "thumbnail"}
        thumb = cmu.associated_image("thumbnail")
        assert thumb.channel_axis and not thumb.spacing_known and thumb.shape == (574, 768)
        region = cmu.read_region((100, 200), (300, 100))
        assert region.shape == (300, 100) and region.spacing == pytest.approx((0.000499, 0.000499))
        # the first pixel centre in slide micrometres (mm in the Image)
        assert region.origin == pytest.approx((100.5 * 0.499e-3, 200.5 * 0.499e-3))
        um = cmu.read_region_um((100 * 0.499, 200 * 0.499), (300 * 0.499, 100 * 0.499))
        np.testing.assert_array_equal(um.array, region.array)
    with open_slide(wsi / "tcga-cr-7395-01a-01-ts1.svs") as tcga:
        assert [lv.dimensions for lv in tcga.levels] == [(4443, 3567), (2221, 1783)]
        assert tcga.mpp is None and not tcga.spacing_known  # never a silent 1 um
        with pytest.raises(GeometryError, match="--mpp"):
            tcga.read_region_um((0, 0), (10, 10))
        assert not tcga.read_region((0, 0), (8, 8)).spacing_known
    assert open_slide(wsi / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25).mpp == (0.25, 0.25)


def test_load_gives_an_overview_never_a_whole_level(wsi: Path) -> None:
    assert format_of("x.SVS").family == "slide" and format_of("x.ndpi").name == "slide"
    image = medseg.load(wsi / "tcga-cr-7395-01a-01-ts1.svs")
    assert max(image.shape) <= 4096 and image.meta["downsample"] > 1 and image.meta["level"] == 1
    assert any("overview" in w for w in image.warnings) and any("pixel size unknown" in w for w in image.warnings)


def test_info_shows_levels_pixel_size_objective_and_associated_images(wsi: Path) -> None:
    result = CliRunner().invoke(app, ["info", str(wsi / "CMU-1-Small-Region.svs"), "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    assert row["dimensions"] == [2220, 2967] and row["spacing_mm"] == pytest.approx([0.000499, 0.000499])
    assert row["slide"]["objective_power"] == 20 and "macro" in row["slide"]["associated_images"]
    table = CliRunner().invoke(app, ["info", str(wsi / "tcga-cr-7395-01a-01-ts1.svs")])
    assert table.exit_code == 0 and "2221x1783" in table.output and "unknown (give --mpp)" in table.output


def test_pyramidal_tiff_16_bit_reads_natively_with_its_pixel_size(tmp_path: Path) -> None:
    arr = (np.random.default_rng(1).random((600, 450)) * 4000).astype(np.uint16)
    path = save_pyramid(Image(arr, spacing=(0.0005, 0.0005)), tmp_path / "grey.tif")
    assert is_slide_file(path) and not is_slide_file(tmp_path / "nothing.tif")
    with open_slide(path) as slide:
        assert slide.backend == "tiffslide"  # OpenSlide would give 8-bit RGB
        assert [lv.dimensions for lv in slide.levels] == [(600, 450), (300, 225), (150, 113)]
        assert slide.mpp == pytest.approx((0.5, 0.5))
        region = slide.read_region((17, 33), (200, 150))
        np.testing.assert_array_equal(region.array, arr[17:217, 33:183])
        np.testing.assert_array_equal(slide.read_region((0, 0), (300, 225), level=1).array, block_mean(arr, 2))
        edge = slide.read_region((550, 400), (100, 100)).array  # partly outside: padded with 0
        np.testing.assert_array_equal(edge[:50, :50], arr[550:, 400:])
        assert not edge[50:].any()
        with pytest.raises(GeometryError, match="outside the slide"):
            slide.read_region((600, 0), (10, 10))


def test_rgb_pyramid_goes_through_openslide_and_the_overview_is_built_in_chunks(tmp_path: Path) -> None:
    arr = _rgb()
    path = save_pyramid(Image(arr, spacing=(0.00025, 0.00025), channel_axis=True), tmp_path / "rgb.tif")
    with open_slide(path) as slide:
        assert slide.backend == "openslide" and slide.vendor == "generic-tiff"
        assert slide.mpp == pytest.approx((0.25, 0.25))
        np.testing.assert_array_equal(slide.read_region((5, 7), (64, 32)).array, arr[5:69, 7:39])
        overview = slide.overview(max_side=200)
        assert max(overview.shape) <= 200 and overview.meta["downsample"] == 4
        np.testing.assert_allclose(overview.array, block_mean(arr, 4), atol=2)  # level 2 as OpenSlide stores it


def test_in_memory_image_as_a_slide() -> None:
    arr = _rgb(300, 200)
    slide = Slide.from_image(Image(arr, spacing=(0.0005, 0.0005), channel_axis=True))
    assert slide.mpp == pytest.approx((0.5, 0.5)) and slide.backend == "array"
    np.testing.assert_array_equal(slide.overview(100).array, block_mean(arr, 3))
    outside = slide.read_region((-10, 0), (20, 5)).array
    assert (outside[:10] == 255).all() and (outside[10:] == arr[:10, :5]).all()  # glass is white


def test_ome_tiff_with_subifd_pyramid_falls_back_to_tiffslide(tmp_path: Path) -> None:
    arr = np.moveaxis(_rgb(512, 384), 0, 1)  # rows first, as tifffile writes
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(arr, subifds=1, tile=(128, 128), photometric="rgb",
                 metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tw.write(arr[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb")
    with open_slide(path) as slide:
        assert slide.backend == "tiffslide"
        assert [lv.dimensions for lv in slide.levels] == [(512, 384), (256, 192)]
        assert slide.mpp == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(slide.read_region((10, 20), (30, 40)).array, np.moveaxis(arr, 0, 1)[10:40, 20:60])


def _corrupt_one_tile(path: Path, index: int) -> None:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as fh:
        fh.seek(offset + 8)
        fh.write(b"\xff\x00" * ((count - 16) // 2))


def test_a_corrupt_tile_is_an_error_of_that_region_only(tmp_path: Path) -> None:
    path = tmp_path / "broken.tif"
    arr = _rgb(512, 512)
    tifffile.imwrite(path, np.moveaxis(arr, 0, 1), tile=(256, 256), photometric="rgb", compression="jpeg")
    tifffile.imwrite(path, np.moveaxis(arr, 0, 1)[::2, ::2], tile=(256, 256), photometric="rgb", compression="jpeg",
                     append=True, subfiletype=1)
    _corrupt_one_tile(path, 3)
    with open_slide(path) as slide:
        with pytest.raises(ReadError, match=r"region at \(300, 300\)"):
            slide.read_region((300, 300), (100, 100))
        good = slide.read_region((0, 0), (100, 100))  # the handle was reopened: other regions still read
        assert np.abs(good.array.astype(int) - arr[:100, :100]).mean() < 8


def test_not_a_slide_and_missing_file_are_read_errors(tmp_path: Path) -> None:
    (tmp_path / "fake.svs").write_bytes(b"not a slide")
    with pytest.raises(ReadError, match="not a slide"):
        open_slide(tmp_path / "fake.svs")
    with pytest.raises(ReadError, match="no such file"):
        open_slide(tmp_path / "missing.svs")
    with pytest.raises(GeometryError, match="mpp"):
        Slide.from_image(Image(np.zeros((4, 4), np.uint8)), mpp=-1)
