"""``medseg segment`` / ``medseg batch`` on a whole-slide image: tissue, tiled nuclei, morphometry, QuPath GeoJSON.

:func:`segment_slide` runs the whole chain for one slide (or any 2D image too
large to segment in one piece) and writes, into one folder:

``cells.csv``
    one row per cell: ``cell`` (1..N, the value in ``labels.tif``), ``id`` (UUID, as in the GeoJSON),
    ``class``, morphometry (:mod:`medseg.pathology.morphometry`), centroid in slide micrometres;
``detections.geojson``
    a QuPath FeatureCollection of the cells (``objectType`` ``detection`` or ``cell``, classification,
    measurements, level-0 pixel coordinates, valid closed rings);
``summary.json``
    the slide (levels, pixel size, objective), tissue area (mm^2), cell count and density per mm^2 of
    tissue, mean and standard deviation of every feature, tiles processed and failed, timings;
``tissue.png``
    the tissue mask at the overview's resolution;
``labels.tif`` (with ``label_tiff=True``)
    a pyramidal uint32 TIFF of the cells (tiffslide/QuPath read it), with the pixel size;
``failed_tiles.csv``
    only when tiles could not be read: which, and why (the rest of the slide is processed).

The tiles live in ``.tiles/`` while the run goes on; a run interrupted and
started again with the same settings resumes at the first unfinished block.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.errors import ConfigError, GeometryError
from medseg.io.image import Image
from medseg.io.slide import Slide, open_slide
from medseg.segmenters.base import Segmenter

WORK_DIR = ".tiles"
_NOT_MEASURED = ("row", "tile", "status", "in_core", "oversized", "instance", "geometry")


@dataclass
class SlideResult:
    """What :func:`segment_slide` wrote and found."""

    out_dir: Path
    outputs: dict[str, Path]
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _class_name(segmenter: Segmenter) -> Any:
    names = dict(segmenter.label_names)
    if {"interior", "boundary"} <= set(names.values()):
        return lambda value: "nucleus"
    return lambda value: names.get(value, str(value))


def _as_slide(source: Slide | Image | str | os.PathLike[str], mpp: float | None) -> Slide:
    if isinstance(source, Slide):
        if mpp is not None:
            source.set_mpp(mpp)
        return source
    if isinstance(source, Image):
        return Slide.from_image(source, mpp)
    return open_slide(source, mpp=mpp)


def _fingerprint(parts: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def segment_slide(
    segmenter: Segmenter,
    source: Slide | Image | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    units: str = "um",
    tile: int | None = None,
    overlap: int | None = None,
    max_nucleus_um: float = 20.0,
    tissue: bool = True,
    normalise_stains: bool = False,
    label_tiff: bool = False,
    object_type: str = "detection",
    rules: Mapping[str, Any] | None = None,
    block_tiles: int = 4,
    overview_max_side: int = 4096,
    progress: bool = False,
) -> SlideResult:
    """Segment every nucleus of a slide tile by tile and write the per-slide outputs (see the module docstring).

    Parameters
    ----------
    segmenter : Segmenter
        2D, taking the slide's channels (``he:...`` for H&E, a fluorescence model for one channel).
    source : Slide, Image or path-like
        A slide file (:func:`medseg.io.open_slide`), an open slide, or any 2D image in memory.
    mpp : float, optional
        Microns per pixel, for a slide that states none (or to override it).
    units : {"um", "px"}
        Report lengths in micrometres (needs a pixel size) or in level-0 pixels.
    tile, overlap : int, optional
        Tile core and context margin per side, level-0 px (default: from the model's patch and
        ``max_nucleus_um``, see :func:`medseg.pathology.tiling.plan_tiles`).
    max_nucleus_um : float
        Diameter of the largest expected nucleus (48 px without a pixel size).
    tissue : bool
        Detect tissue on the overview and process only tiles with tissue (else: the whole image).
    normalise_stains : bool
        Macenko-normalise every tile to the reference H&E appearance, with the slide's own stain
        statistics (from its overview, the same for every tile).
    label_tiff : bool
        Also write ``labels.tif``, a pyramidal uint32 label TIFF of the cells.
    object_type : {"detection", "cell", "annotation"}
        QuPath object type of the features.
    rules : mapping, optional
        Post-processing rules keyed by label name (default: the segmenter's own).
    block_tiles : int
        Side of a block in tiles: the unit that is written at once and resumed.
    progress : bool
        Show a progress bar with tiles/s.

    Raises
    ------
    medseg.errors.GeometryError
        ``units="um"`` for a slide without a pixel size (and no ``mpp``), or an image that is not 2D.
    medseg.errors.ConfigError
        A segmenter that does not fit the slide (dimensions, channels), or bad options.
    """
    from medseg.annotations.geojson import check_object_type
    from medseg.pathology.segmenters import with_reference
    from medseg.pathology.stain import RUIFROK_HED, StainNormalizer, macenko
    from medseg.pathology.tiling import TileContext, TiledRun, plan_tiles, sliding_window
    from medseg.pathology.tissue import TissueMask, detect_tissue
    from medseg.postprocess import PostprocessConfig
    from medseg.workflows.case import postprocess_rules

    started = time.perf_counter()
    out = Path(out_dir)
    check_object_type(object_type, out)
    if units not in ("um", "px"):
        raise ConfigError(f"units must be 'um' or 'px', got {units!r}")
    slide = _as_slide(source, mpp)
    slide_mpp = slide.require_mpp("results in micrometres (areas in um2, densities per mm2)") if units == "um" else None
    if segmenter.spatial_dims not in (None, 2):
        raise ConfigError(f"segmenter {segmenter.name!r} is {segmenter.spatial_dims}D; a slide is 2D", slide.path)
    overview = slide.overview(overview_max_side)
    if segmenter.in_channels not in (None, overview.n_channels):
        raise ConfigError(f"segmenter {segmenter.name!r} takes {segmenter.in_channels} channel(s), the slide has "
                          f"{overview.n_channels}", slide.path)
    found = detect_tissue(overview) if tissue else TissueMask.everything(slide.dimensions, slide.mpp)
    mask = found.on_grid(overview.shape, overview.meta["downsample"]) if tissue else None
    rgb = overview.n_channels == 3
    stains, normalise = RUIFROK_HED, None
    if rgb:
        try:
            fitted = macenko(overview, mask=mask)
            stains = fitted.matrix
            normalise = StainNormalizer(fitted) if normalise_stains else None
        except GeometryError:
            if normalise_stains:
                raise
    if normalise is not None:
        overview = overview.with_array(normalise(overview.array), channel_axis=True)
    prepared = with_reference(segmenter, overview, mask)
    names = {n: v for v, n in prepared.label_names.items()}
    rule_cfg = (PostprocessConfig.from_label_names(rules, {"background": 0, **names}) if rules is not None
                else postprocess_rules(prepared))
    max_px = max_nucleus_um / min(slide.mpp) if slide.mpp else 48.0
    window = sliding_window(segmenter)
    grid = plan_tiles(slide.dimensions, patch_px=max(window.roi) if window else 256, max_object_px=max_px, tile=tile,
                      margin=overlap, window=window)
    tiles = [(c, r) for r in range(grid.n_rows) for c in range(grid.n_cols) if found.covers(*grid.core(c, r))]

    work = out / WORK_DIR
    settings = {
        "slide": str(slide.path), "dimensions": slide.dimensions, "mpp": slide_mpp, "units": units,
        "segmenter": prepared.fingerprint(), "rules": rule_cfg.model_dump(mode="json"), "grid": grid.__dict__,
        "tiles": len(tiles), "normalise_stains": normalise_stains, "stains": np.round(stains.vectors, 6).tolist(),
    }
    fp = _fingerprint(settings)
    plan = work / "plan.json"
    if plan.exists() and json.loads(plan.read_text()).get("fingerprint") != fp:
        shutil.rmtree(work)  # other settings: the finished blocks do not belong to this run
    work.mkdir(parents=True, exist_ok=True)
    from medseg.atomic import write_text_atomic

    write_text_atomic(plan, json.dumps({"fingerprint": fp, **settings}, default=str))
    ctx = TileContext(slide, grid, prepared, rule_cfg, _class_name(prepared), slide_mpp, stains, normalise)
    run = TiledRun(ctx, work, tiles, block_tiles)
    run.run(progress)
    result = _write_outputs(run, slide, found, out, units, object_type, label_tiff)
    result.summary.update(
        tiles={"total": grid.n_cols * grid.n_rows, "with_tissue": len(tiles), "failed": len(run.failed_tiles()),
               "core_px": grid.tile, "overlap_px": grid.margin, "processed_this_session": run.tiles_done},
        sliding_windows={"run": run.windows.computed, "reused": run.windows.reused},
        timings_s={**{k: round(v, 3) for k, v in ctx.timings.items()}, "total": round(time.perf_counter() - started, 3)},
    )
    result.summary["tiles_per_s"] = (run.tiles_done / result.summary["timings_s"]["total"]) if run.tiles_done else None
    write_text_atomic(result.outputs["summary"], json.dumps(result.summary, indent=2, default=float))
    shutil.rmtree(work)
    return result


def _summary_moments(sums: dict[str, list[float]], count: int) -> dict[str, dict[str, float]]:
    return {
        name: {"mean": s / count, "std": math.sqrt(max(q / count - (s / count) ** 2, 0.0))}
        for name, (s, q) in sums.items()
    } if count else {}


def _write_outputs(run: Any, slide: Slide, found: Any, out: Path, units: str, object_type: str,
                   label_tiff: bool) -> SlideResult:
    """Stream the kept cells of every block into the cell table, the GeoJSON and the summary."""
    import shapely

    from medseg._gc import collector_paused
    from medseg.annotations.geojson import FeatureWriter, feature, geometries
    from medseg.annotations.objects import PALETTE
    from medseg.atomic import atomic_path, write_text_atomic
    from medseg.io import save

    out.mkdir(parents=True, exist_ok=True)
    paths = {"cells": out / "cells.csv", "detections": out / "detections.geojson", "summary": out / "summary.json",
             "tissue": out / "tissue.png"}
    keep = run.kept(units)
    name = Path(slide.path).name
    count, classes, sums, oversized = 0, {}, {}, 0
    colours: dict[str, tuple[int, int, int]] = {}
    invalid = 0
    with atomic_path(paths["cells"]) as csv_tmp, open(csv_tmp, "w") as csv, FeatureWriter(paths["detections"]) as gj:
        for table in run.cells(keep, name):
            geoms = shapely.from_wkb(table.geometry.to_numpy())
            bad = ~shapely.is_valid(geoms)
            if bad.any():  # pixel-edge outlines are valid; guard all the same
                invalid += int(bad.sum())
                geoms[bad] = shapely.make_valid(geoms[bad])
            oversized += int(table.oversized.sum())
            measured = table.drop(columns=[c for c in _NOT_MEASURED if c in table.columns])
            measured.to_csv(csv, index=False, header=count == 0)
            values = measured.drop(columns=["cell", "id", "class", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]).select_dtypes("number")
            for col in values.columns:
                v = values[col].to_numpy(float)
                s = sums.setdefault(col, [0.0, 0.0])
                s[0] += float(np.nansum(v))
                s[1] += float(np.nansum(v * v))
            shapes = geometries([g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon(  # make_valid's output
                [p for p in getattr(g, "geoms", [g]) if p.geom_type == "Polygon"]) for g in geoms])
            with collector_paused():  # a dict per cell
                records = values.astype(float).round(4).to_dict("records")
                for k, (fid, label) in enumerate(zip(table.id, table["class"], strict=True)):
                    colour = colours.setdefault(label, PALETTE[len(colours) % len(PALETTE)])
                    gj.add(feature(shapes[k], fid, object_type, label, colour,
                                   {m: x for m, x in records[k].items() if math.isfinite(x)}))
                    classes[label] = classes.get(label, 0) + 1
            count += len(table)
    tissue_mm2 = found.area_mm2
    save(Image(found.mask.astype(np.uint8) * 255, spacing_known=False), paths["tissue"])
    failed = run.failed_tiles()
    if failed:
        paths["failed_tiles"] = out / "failed_tiles.csv"
        buf = io.StringIO()
        pd.DataFrame(failed).to_csv(buf, index=False)
        write_text_atomic(paths["failed_tiles"], buf.getvalue())
    if label_tiff:
        from medseg.pathology.labels import write_label_tiff

        paths["labels"] = write_label_tiff(out / "labels.tif", run, keep)
    summary = {
        "slide": slide.describe() | {"path": str(slide.path)},
        "units": units,
        "n_cells": count,
        "cells_by_class": classes,
        "tissue_area_mm2": tissue_mm2,
        "tissue_area_px": found.area_px,
        "density_per_mm2": count / tissue_mm2 if tissue_mm2 else None,
        "density_per_px2": count / found.area_px if found.area_px else None,
        "features": _summary_moments(sums, count),
        "invalid_polygons_repaired": invalid,
        "cells_cut_by_their_window": oversized,
        "outputs": {k: p.name for k, p in paths.items()},
    }
    warnings = [f"{len(failed)} tiles could not be read (see failed_tiles.csv)"] if failed else []
    if oversized:
        warnings.append(f"{oversized} cells reach beyond their tile's context: raise the overlap (or max_nucleus_um)")
    return SlideResult(out, paths, summary, warnings)


__all__ = ["SlideResult", "segment_slide"]
