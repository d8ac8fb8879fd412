"""Tiled inference with instance stitching: grid, ownership, seams, resumption, bad tiles, outputs over real slides."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
import tifffile
from shapely.geometry import box

import medseg
from benchmarks.bench_pathology import mosaic, seam_report, untiled_instances
from medseg.annotations.polygons import polygons_to_mask
from medseg.io.image import Image
from medseg.io.pyramid import save_pyramid
from medseg.io.slide import open_slide
from medseg.metrics import match_instances
from medseg.pathology.segmenters import OtsuNucleiSegmenter
from medseg.pathology.tiling import SlidingWindow, TileGrid, plan_tiles, resolve_seams, sliding_window
from medseg.workflows.slide import segment_slide

REPO = Path(__file__).resolve().parents[1]


def test_cores_partition_the_image_and_tiles_read_whole_windows_of_the_image_wide_grids() -> None:
    forward = plan_tiles((1000, 700), tile=256, margin=64, window=SlidingWindow((128, 128), (96, 96), (False, False)))
    mirrored = plan_tiles((1000, 700), tile=256, margin=64, window=SlidingWindow((128, 128), (96, 96), (True, False)))
    covered = np.zeros((1000, 700), int)
    for r in range(forward.n_rows):
        for c in range(forward.n_cols):
            x0, y0, x1, y1 = forward.core(c, r)
            covered[x0:x1, y0:y1] += 1
            assert forward.window(c, r) == (max(x0 - 64, 0), max(y0 - 64, 0), min(x1 + 64, 1000), min(y1 + 64, 700))
            wx0, wy0, wx1, wy1 = forward.window(c, r)
            rx0, ry0, rx1, ry1 = forward.read_window(c, r)
            assert rx0 <= wx0 and ry0 <= wy0 and rx1 >= wx1 and ry1 >= wy1
            for lo, hi, size in ((rx0, rx1, 1000), (ry0, ry1, 700)):  # forward windows start at multiples of 96
                assert lo % 96 == 0 and (hi == size or (hi - lo - 128) % 96 == 0)
            mx0, my0, mx1, my1 = mirrored.read_window(c, r)  # the mirrored grid along x ends at the image's end
            assert mx0 <= rx0 and mx1 >= rx1 and (my0, my1) == (ry0, ry1)
            assert (c, r) in forward.tiles_touching(((wx0, wx0 + 1), (wy0, wy0 + 1)))
            assert (c, r) not in forward.tiles_touching(((wx1, wx1 + 5), (wy0, wy1)))
    assert (covered == 1).all()
    assert forward.tile_of(np.array([255.9, 256.0]), np.array([0.0, 699.0])).tolist() == [0, 2 * forward.n_cols + 1]
    assert plan_tiles((100, 700), tile=256, margin=64, window=SlidingWindow((128, 128), (96, 96), (False, False))).roi is None
    derived = plan_tiles((50000, 40000), patch_px=128, max_object_px=40)
    assert derived.margin == 80 and derived.tile == 2048 - 160
    model = medseg.load_segmenter(REPO / "sample_data" / "models" / "nuclei_2d", device="cpu")
    assert sliding_window(model) == SlidingWindow((128, 128), (96, 96), (False, False))
    assert sliding_window(OtsuNucleiSegmenter()) is None


def _band_row(tile: int, poly: shapely.Polygon, in_core: bool) -> dict[str, object]:
    c = poly.centroid
    return {"tile": tile, "in_core": in_core, "centroid_x_px": c.x, "centroid_y_px": c.y,
            "geometry": shapely.to_wkb(poly)}


def test_seam_candidates_keep_exactly_one_copy_of_each_nucleus() -> None:
    grid = TileGrid(512, 256, 256, 32)
    rows = [
        _band_row(0, box(250, 100, 259, 110), False),  # one nucleus, centroid 254.5 (left) ...
        _band_row(1, box(251, 100, 260, 110), True),  # ... 255.5 in the right tile's segmentation: both unowned
        _band_row(0, box(240, 10, 254, 20), True),  # another, seen only by the left tile: kept
        _band_row(1, box(258, 40, 262, 44), False),  # a fragment outside its core, matched with nothing: dropped
    ]
    keep = resolve_seams(pd.DataFrame(rows), grid, "px", None)
    assert keep.tolist() == [True, False, True, False]  # the group's mean centroid (255) lies in tile 0's core


@pytest.fixture(scope="module")
def fluo(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    image = medseg.load(shared_data / "cells_fluo" / "nuclei.tif").array[:256, :256]
    labels = medseg.load(shared_data / "cells_fluo" / "nuclei_labels.tif").array[:256, :256].astype(np.uint32)
    return image, labels


@pytest.mark.slow
@pytest.mark.parametrize("tta", [False, True])
def test_fluorescence_mosaic_tiled_equals_untiled_without_split_or_duplicate_nuclei(
    tmp_path: Path, fluo: tuple[np.ndarray, np.ndarray], tta: bool
) -> None:
    big, reference = mosaic(fluo[0], 2, fluo[1])
    image = Image(big, spacing=(0.0005, 0.0005), modality="SM")
    path = save_pyramid(image, tmp_path / "mosaic.tif")
    model = copy.copy(medseg.load_segmenter(REPO / "sample_data" / "models" / "nuclei_2d", device="cpu"))
    model.config = model.config.model_copy(update={"inference": model.config.inference.model_copy(update={"tta": tta})})
    result = segment_slide(model, path, tmp_path / "out", tile=256, overlap=64, tissue=False, label_tiff=True)
    tiled = open_slide(result.outputs["labels"]).read_region((0, 0), (512, 512)).array
    report = seam_report(tiled, untiled_instances(model, image), reference, 256)
    assert report["f1"] == 1.0 and report["split_by_tiling"] == 0 and report["duplicates"] == 0, report
    # the image-wide grid: 5 x 5 windows of 128 px every 96 px, once per test-time view (with TTA the four mirrorings,
    # each also turned: the model was trained with 90-degree turns of its square patches); each runs once
    assert result.summary["sliding_windows"]["run"] == 25 * (8 if tta else 1)
    assert result.summary["sliding_windows"]["reused"] > 0
    cells = pd.read_csv(result.outputs["cells"])
    assert len(cells) == tiled.max() and cells.id.is_unique and result.summary["tiles"]["total"] == 4


@pytest.fixture(scope="module")
def he_tile(shared_data: Path) -> np.ndarray:
    return medseg.load(shared_data / "he_nuclei" / "cpm15_06.png").array[:300, :300]


def test_he_mosaic_through_openslide_tiled_equals_untiled(tmp_path: Path, he_tile: np.ndarray) -> None:
    big, _ = mosaic(he_tile, 2)
    image = Image(big, spacing=(0.0005, 0.0005), channel_axis=True, modality="SM")
    path = save_pyramid(image, tmp_path / "he.tif")
    assert open_slide(path).backend == "openslide"
    seg = medseg.load_segmenter("he:otsu")
    result = segment_slide(seg, path, tmp_path / "out", tile=160, overlap=40, tissue=False, label_tiff=True)
    tiled = open_slide(result.outputs["labels"]).read_region((0, 0), (600, 600)).array
    untiled = untiled_instances(seg, image)
    match = match_instances(tiled, untiled)
    assert match.f1 >= 0.99, (match.tp, match.fp, match.fn)
    assert "mean_haematoxylin_od" in pd.read_csv(result.outputs["cells"]).columns


class _Interrupted(Exception):
    pass


class _Flaky(OtsuNucleiSegmenter):
    """Raises on its ``fail_at``-th tile (an interrupted run)."""

    calls = 0
    fail_at = 0

    def with_reference(self, reference: Image, mask: np.ndarray | None = None) -> _Flaky:
        frozen = super().with_reference(reference, mask)
        out = _Flaky(frozen.threshold, frozen.stains)
        return out

    def segment(self, image: Image):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        if type(self).calls == type(self).fail_at:
            raise _Interrupted
        return super().segment(image)


def test_an_interrupted_run_resumes_at_its_first_unfinished_block(tmp_path: Path, he_tile: np.ndarray) -> None:
    big, _ = mosaic(he_tile, 2)
    image = Image(big, spacing=(0.0005, 0.0005), channel_axis=True)
    options = {"tile": 100, "overlap": 40, "tissue": False, "block_tiles": 2}
    whole = segment_slide(OtsuNucleiSegmenter(), image, tmp_path / "whole", **options)
    _Flaky.calls, _Flaky.fail_at = 0, 10  # 36 tiles in 9 blocks of 4: two blocks done, then the crash
    with pytest.raises(_Interrupted):
        segment_slide(_Flaky(), image, tmp_path / "resumed", **options)
    assert len(list((tmp_path / "resumed" / ".tiles").glob("block_*.parquet"))) == 2
    _Flaky.calls, _Flaky.fail_at = 0, 0
    resumed = segment_slide(_Flaky(), image, tmp_path / "resumed", **options)
    assert resumed.summary["tiles"]["processed_this_session"] == 36 - 8
    a, b = (pd.read_csv(r.outputs["cells"]).drop(columns="id") for r in (whole, resumed))
    pd.testing.assert_frame_equal(a, b)


def test_a_corrupt_tile_is_recorded_and_the_rest_of_the_slide_goes_on(tmp_path: Path, he_tile: np.ndarray) -> None:
    big, _ = mosaic(he_tile, 2)
    path = tmp_path / "broken.tif"
    rows = np.moveaxis(big, 0, 1)
    tifffile.imwrite(path, rows, tile=(128, 128), photometric="rgb", compression="jpeg",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    tifffile.imwrite(path, rows[::2, ::2], tile=(128, 128), photometric="rgb", compression="jpeg", append=True,
                     subfiletype=1)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[7], tif.pages[0].databytecounts[7]
    with open(path, "r+b") as fh:
        fh.seek(offset + 8)
        fh.write(b"\xff\x00" * ((count - 16) // 2))
    result = segment_slide(OtsuNucleiSegmenter(), path, tmp_path / "out", tile=200, overlap=40, tissue=False)
    failed = pd.read_csv(result.outputs["failed_tiles"])
    assert 1 <= len(failed) < 9 and failed.error.str.contains("region at").all()
    assert result.summary["tiles"]["failed"] == len(failed) and result.summary["n_cells"] > 100
    assert any("could not be read" in w for w in result.warnings)


@pytest.mark.slow
def test_tiled_run_over_the_real_svs_writes_valid_geojson_that_rasterises_back(tmp_path: Path,
                                                                              shared_data: Path) -> None:
    result = segment_slide(medseg.load_segmenter("he:otsu"), shared_data / "wsi" / "CMU-1-Small-Region.svs",
                           tmp_path / "cmu", tile=1024, label_tiff=True)
    summary = json.loads(result.outputs["summary"].read_text())
    assert summary["slide"]["mpp_um"] == pytest.approx([0.499, 0.499]) and 0.3 < summary["tissue_area_mm2"] < 1.6
    assert summary["density_per_mm2"] == pytest.approx(summary["n_cells"] / summary["tissue_area_mm2"])
    assert summary["tiles"]["with_tissue"] <= summary["tiles"]["total"]
    collection = json.loads(result.outputs["detections"].read_text())
    features = collection["features"]
    assert len(features) == summary["n_cells"] > 1000
    props = features[0]["properties"]
    assert props["objectType"] == "detection" and props["classification"]["name"] == "nucleus"
    assert {"area_um2", "solidity", "mean_haematoxylin_od"} <= set(props["measurements"])
    geoms = [shapely.geometry.shape(f["geometry"]) for f in features]
    assert all(g.is_valid for g in geoms)
    rings = [p.exterior for g in geoms for p in getattr(g, "geoms", [g])]
    assert all(len(r.coords) >= 4 and r.coords[0] == r.coords[-1] for r in rings)
    labels = open_slide(result.outputs["labels"])
    assert labels.mpp == pytest.approx((0.499, 0.499))
    full = labels.read_region((0, 0), labels.dimensions).array
    ious = []
    for k, g in enumerate(geoms, start=1):
        x0, y0, x1, y1 = (int(v) for v in g.bounds)
        drawn = polygons_to_mask(g, (x1 - x0, y1 - y0), (x0, y0))
        stored = full[x0:x1, y0:y1] == k
        ious.append(np.count_nonzero(drawn & stored) / np.count_nonzero(drawn | stored))
    assert np.median(ious) >= 0.95


def test_segment_and_batch_commands_take_slides(tmp_path: Path, shared_data: Path, he_tile: np.ndarray) -> None:
    from typer.testing import CliRunner

    from medseg.batch import run_batch
    from medseg.cli import app

    runner = CliRunner()
    svs = shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    refused = runner.invoke(app, ["segment", "he:otsu", str(svs), "--out", str(tmp_path / "a")])
    assert refused.exit_code != 0 and "--mpp" in str(refused.exception)
    (tmp_path / "in").mkdir()
    path = save_pyramid(Image(mosaic(he_tile, 2)[0], spacing=(0.0005, 0.0005), channel_axis=True),
                        tmp_path / "in" / "he.tif")
    ok = runner.invoke(app, ["segment", "he:otsu", str(path), "--out", str(tmp_path / "a"), "--tile", "300"])
    assert ok.exit_code == 0, ok.output
    folder = tmp_path / "a" / "he"
    assert {"cells.csv", "detections.geojson", "summary.json", "tissue.png"} <= {p.name for p in folder.iterdir()}
    run_batch("he:otsu", tmp_path / "in", tmp_path / "batch")
    cohort = pd.read_csv(tmp_path / "batch" / "measurements.csv")
    assert len(cohort) == 1 and cohort.n_cells[0] > 100 and cohort.density_per_mm2[0] > 0


def test_seam_report_counts_a_nucleus_cut_at_a_seam_but_not_the_models_own_split() -> None:
    reference = np.zeros((512, 64), np.uint32)
    reference[240:272, 10:30] = 1  # crosses the seam at x = 256
    untiled = reference.copy()
    cut = reference.copy()
    cut[256:272, 10:30] = 2  # the tiling cut it in two
    assert seam_report(cut, untiled, reference, 256)["split_by_tiling"] == 1
    # the model splits it itself in both runs; a few boundary pixels put the small piece above 20 % of the
    # nucleus in the tiled run only: both pieces have untiled twins, so the tiling split nothing
    own_untiled = reference.copy()
    own_untiled[266:272, 10:30] = 2  # 120 of 640 px: under 20 %
    own_tiled = reference.copy()
    own_tiled[265:272, 10:30] = 2  # 140 px: over 20 %, IoU 0.86 with its untiled twin
    assert seam_report(own_tiled, own_untiled, reference, 256)["split_by_tiling"] == 0
    assert seam_report(untiled, untiled, reference, 256) == {"f1": 1.0, "split_by_tiling": 0, "duplicates": 0}


def test_a_tiled_run_with_a_classical_segmenter_imports_no_network_stack(tmp_path: Path) -> None:
    """he:otsu over an image whose stained pixels have one colour (no stain fit: the default vectors are used);
    torch and MONAI stay unimported (they cost a classical run hundreds of MB)."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, medseg\n"
        "from medseg.io.image import Image\n"
        "from medseg.io.slide import Slide\n"
        "from medseg.workflows.slide import segment_slide\n"
        "rgb = np.full((300, 300, 3), 230, np.uint8); rgb[100:120, 100:120] = (60, 40, 120)\n"
        "image = Image(rgb, spacing=(0.0005, 0.0005), channel_axis=True)\n"
        f"result = segment_slide(medseg.load_segmenter('he:otsu'), Slide.from_image(image), {str(tmp_path)!r}, "
        "tissue=False)\n"
        "print(result.summary['n_cells'], 'torch' in sys.modules, 'monai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False", "False"]
