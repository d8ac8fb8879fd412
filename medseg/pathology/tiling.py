"""Tiled inference with instance stitching, for slides and any 2D image too large to segment in one piece.

The image is cut into **cores** of ``tile`` x ``tile`` level-0 pixels that
cover it without overlap; each core is segmented inside a **window** that adds
``margin`` pixels on every side (clipped at the image edge). The margin is at
least the largest expected object plus a quarter of the model's patch, so an
object that belongs to a core lies whole inside its window.

For a network that works on the slide's own pixels (no resampling), the
window is predicted with the *whole image's* sliding windows
(:class:`medseg.windows.ImagePart`): the tile reads every sliding window that
overlaps its window, and a window shared by neighbouring tiles runs once, its
output kept in a :class:`medseg.windows.WindowCache` until the last tile that
needs it is done. The probabilities, and so the labels, are those of
segmenting the image in one piece, and the network does no more work than
that would. Tiles are visited column by column within each row of blocks, so
what the cache holds is bounded by a block's height, not the slide's size (and
by the cache's own limit). Other segmenters see the window with its margin as
context.

**Ownership**: an instance belongs to the tile whose core contains its
centroid (level-0 pixels; cores are half-open, so exactly one does). Instances
that touch their window's edge (not the image's) are cut, and dropped: the
tile that owns them sees them whole. Two tiles segment the pixels near a seam
from different context, so one nucleus's centroid may fall on either side of
the seam in the two tiles; therefore every instance whose centroid lies within
``band`` pixels of a seam is a *seam candidate*, and :func:`resolve_seams`
matches the candidates of neighbouring tiles (IoU >= 0.5 of their polygons):
each matched group keeps exactly one member (the one of the tile whose core
holds the group's mean centroid), an unmatched candidate is kept when its
centroid lies in its own core. No nucleus is cut in two at a seam or counted
twice.

:class:`TiledRun` processes the tiles block by block (``block_tiles`` x
``block_tiles`` tiles), writing each finished block to disk (Parquet) so that
an interrupted run resumes at the first missing block; the final outputs
(cell table, GeoJSON, optional pyramidal label TIFF) are streamed from the
block files, so memory stays bounded by a tile and a strip of the image, never
the image.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.errors import ReadError
from medseg.io.image import Image
from medseg.io.slide import Slide
from medseg.pathology.morphometry import morphometry
from medseg.pathology.stain import RUIFROK_HED, StainMatrix
from medseg.postprocess import PostprocessConfig, postprocess
from medseg.windows import Box, ImagePart, WindowCache, part_extent, window_step

DEFAULT_WINDOW = 2048  # px: window of a tile by default (core + 2 margins), memory ~ 100 MB for RGB and probabilities
SEAM_BAND_PX = 8.0
_UUID_NAMESPACE = uuid.UUID("0f3c8e52-6a59-4e0e-8d53-7b1f2c9e4a21")


def _round16(value: float) -> int:
    return int(16 * math.ceil(value / 16))


@dataclass(frozen=True)
class TileGrid:
    """Cores of ``tile`` px covering a ``width`` x ``height`` image, each segmented in a window ``margin`` px wider.

    ``roi`` and ``step`` (per axis, px) describe the segmenter's sliding window, and ``mirrored`` the axes along
    which its test-time augmentation mirrors, when it predicts the image's own pixels and the image is longer
    than one sliding window along both axes: each tile then reads every window of the image-wide window grids
    that overlaps its window (:meth:`read_window`), so that it gets the probabilities segmenting the whole
    image in one piece would give.
    """

    width: int
    height: int
    tile: int
    margin: int
    roi: tuple[int, int] | None = None
    step: tuple[int, int] | None = None
    mirrored: tuple[bool, bool] = (False, False)

    @property
    def n_cols(self) -> int:
        """Tiles per row."""
        return math.ceil(self.width / self.tile)

    @property
    def n_rows(self) -> int:
        """Rows of tiles."""
        return math.ceil(self.height / self.tile)

    def core(self, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of a tile's core (end exclusive), level-0 px."""
        x0, y0 = col * self.tile, row * self.tile
        return x0, y0, min(x0 + self.tile, self.width), min(y0 + self.tile, self.height)

    def window(self, col: int, row: int) -> tuple[int, int, int, int]:
        """The core with ``margin`` px on every side, clipped to the image: the pixels a tile segments."""
        x0, y0, x1, y1 = self.core(col, row)
        m = self.margin
        return max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, self.width), min(y1 + m, self.height)

    def read_window(self, col: int, row: int) -> tuple[int, int, int, int]:
        """The pixels a tile reads: its window, widened to whole sliding windows of the image-wide grids."""
        x0, y0, x1, y1 = self.window(col, row)
        if self.roi is None or self.step is None:
            return x0, y0, x1, y1
        (rx0, rx1), (ry0, ry1) = part_extent((self.width, self.height), self.roi, self.step, ((x0, x1), (y0, y1)),
                                             self.mirrored)
        return rx0, ry0, rx1, ry1

    def part(self, col: int, row: int, cache: WindowCache | None = None,
             needed_later: Callable[[Box], bool] | None = None) -> ImagePart | None:
        """What a sliding-window segmenter needs to predict a tile's window from its read window (None without)."""
        if self.roi is None:
            return None
        x0, y0, x1, y1 = self.window(col, row)
        rx0, ry0, _, _ = self.read_window(col, row)
        return ImagePart((self.width, self.height), (rx0, ry0), ((x0, x1), (y0, y1)), cache, needed_later)

    def tiles_touching(self, box: Box) -> list[tuple[int, int]]:
        """``(col, row)`` of the tiles whose windows overlap ``box`` (``((x0, x1), (y0, y1))``, level-0 px)."""
        (bx0, bx1), (by0, by1) = box
        m, t = self.margin, self.tile
        cols = range(max(0, (bx0 - m) // t - 1), min(self.n_cols, (bx1 + m) // t + 2))
        rows = range(max(0, (by0 - m) // t - 1), min(self.n_rows, (by1 + m) // t + 2))
        out = []
        for col in cols:
            for row in rows:
                x0, y0, x1, y1 = self.window(col, row)
                if x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1:
                    out.append((col, row))
        return out

    def tile_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index ``row * n_cols + col`` of the tile whose core holds each point (level-0 px)."""
        col = np.clip(np.floor(np.asarray(x) / self.tile), 0, self.n_cols - 1).astype(np.int64)
        row = np.clip(np.floor(np.asarray(y) / self.tile), 0, self.n_rows - 1).astype(np.int64)
        return row * self.n_cols + col


@dataclass(frozen=True)
class SlidingWindow:
    """A network segmenter's sliding window at the input's resolution: ``roi`` and ``step`` px per axis, and the
    axes its test-time augmentation mirrors."""

    roi: tuple[int, int]
    step: tuple[int, int]
    mirrored: tuple[bool, bool]


def sliding_window(segmenter: Any) -> SlidingWindow | None:
    """The sliding window of a network segmenter (or of the one it wraps), as MONAI places it; None for
    segmenters without one or that resample or reorient the input."""
    while segmenter is not None:
        config = getattr(segmenter, "config", None)
        if config is not None and hasattr(config, "patch_size"):
            if config.target_spacing is not None or config.dims != 2 or config.orientation:
                return None
            roi = (int(config.patch_size[0]), int(config.patch_size[1]))
            mirror = set(config.augment.flip_axes) if config.inference.tta else set()
            return SlidingWindow(roi, (window_step(config, roi[0]), window_step(config, roi[1])),
                                 (0 in mirror, 1 in mirror))
        segmenter = getattr(segmenter, "inner", None)
    return None


def plan_tiles(
    dimensions: tuple[int, int],
    *,
    patch_px: int = 256,
    max_object_px: float = 48.0,
    tile: int | None = None,
    margin: int | None = None,
    window: SlidingWindow | None = None,
) -> TileGrid:
    """The tile grid of an image: ``margin`` and ``tile`` derived from the model's patch and the largest object.

    Parameters
    ----------
    dimensions : (int, int)
        Level-0 (width, height), px.
    patch_px : int
        The network's patch side (its sliding window), px.
    max_object_px : float
        Diameter of the largest expected object (nucleus), px.
    tile, margin : int, optional
        Core side and context per side, px. Defaults: margin = the largest object plus a quarter patch
        (rounded up to 16 px); tile = what makes the window 2048 px (at least two patches).
    window : SlidingWindow, optional
        The segmenter's sliding window (:func:`sliding_window`): tiles then predict with the image-wide windows,
        when the image is longer than one window along both axes.
    """
    m = margin if margin is not None else _round16(max_object_px + patch_px / 4)
    t = tile if tile is not None else max(_round16(2 * patch_px), DEFAULT_WINDOW - 2 * m)
    if t < 1 or m < 0:
        from medseg.errors import ConfigError

        raise ConfigError(f"tile must be positive and overlap not negative, got tile {t}, overlap {m}")
    width, height = int(dimensions[0]), int(dimensions[1])
    if window is None or width <= window.roi[0] or height <= window.roi[1]:
        return TileGrid(width, height, int(t), int(m))
    return TileGrid(width, height, int(t), int(m), window.roi, window.step, window.mirrored)


# ---- one tile ------------------------------------------------------------------------------------------------


@dataclass
class TileContext:
    """What every tile of one run needs."""

    slide: Slide
    grid: TileGrid
    segmenter: Any
    rules: PostprocessConfig
    class_name: Callable[[int], str]
    mpp: tuple[float, float] | None
    stains: StainMatrix = RUIFROK_HED
    normalise: Callable[[np.ndarray], np.ndarray] | None = None
    band: float = SEAM_BAND_PX
    timings: dict[str, float] = field(default_factory=dict)

    def _clock(self, stage: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + t1 - t0
        return t1


def _seam_distance(cx: np.ndarray, cy: np.ndarray, core: tuple[int, int, int, int], grid: TileGrid) -> np.ndarray:
    """Distance (px) from each centroid to the part of a core's outline that is a seam (image edges are none).

    Inside the core: to the nearest seam side; outside: to the core rectangle.
    """
    x0, y0, x1, y1 = core
    outside = np.hypot(np.maximum.reduce([x0 - cx, cx - x1, np.zeros_like(cx)]),
                       np.maximum.reduce([y0 - cy, cy - y1, np.zeros_like(cy)]))
    sides = [np.full(cx.shape, np.inf)]
    for seam, distance in ((x0 > 0, cx - x0), (y0 > 0, cy - y0), (x1 < grid.width, x1 - cx), (y1 < grid.height, y1 - cy)):
        if seam:
            sides.append(distance)
    return np.where(outside > 0, outside, np.min(sides, axis=0))


def process_tile(ctx: TileContext, col: int, row: int, image: Image, part: ImagePart | None = None) -> pd.DataFrame:
    """The kept instances of one tile: morphometry, ``status`` (``core`` or ``band``), polygon WKB, tile key.

    ``image`` is what the tile reads (level 0, :meth:`TileGrid.read_window`); with ``part``
    (:meth:`TileGrid.part`) the segmenter predicts the tile's window from it with the image-wide sliding windows.
    """
    import shapely

    from medseg.annotations.polygons import labels_to_polygons

    grid = ctx.grid
    wx0, wy0, wx1, wy1 = grid.window(col, row)
    rx0, ry0, _, _ = grid.read_window(col, row)
    t0 = time.perf_counter()
    if ctx.normalise is not None:
        image = image.with_array(ctx.normalise(image.array), channel_axis=True)
    labels = ctx.segmenter.segment(image, part=part) if part is not None else ctx.segmenter.segment(image)
    image = image.crop((wx0 - rx0, wy0 - ry0), (wx1 - rx0, wy1 - ry0))
    t0 = ctx._clock("segment", t0)
    instances = postprocess(labels, ctx.rules).instances.array
    t0 = ctx._clock("instances", t0)
    table = morphometry(instances, mpp=ctx.mpp, offset=(wx0, wy0), image=image.array, stains=ctx.stains)
    t0 = ctx._clock("measure", t0)
    if table.empty:
        return table
    unit = "um" if ctx.mpp else "px"
    sx, sy = ctx.mpp or (1.0, 1.0)
    cx, cy = table[f"centroid_x_{unit}"].to_numpy() / sx, table[f"centroid_y_{unit}"].to_numpy() / sy
    core = grid.core(col, row)
    in_core = (cx >= core[0]) & (cx < core[2]) & (cy >= core[1]) & (cy < core[3])
    cut = ((table.bbox_x0.to_numpy() <= wx0) & (wx0 > 0)) | ((table.bbox_y0.to_numpy() <= wy0) & (wy0 > 0)) | (
        (table.bbox_x1.to_numpy() >= wx1) & (wx1 < grid.width)) | ((table.bbox_y1.to_numpy() >= wy1) & (wy1 < grid.height))
    near = _seam_distance(cx, cy, core, grid) < ctx.band
    keep = (in_core | near) & (~cut | in_core)
    table = table[keep].reset_index(drop=True)
    local = table.instance.to_numpy()
    kept = np.zeros(int(instances.max()) + 1, bool)
    kept[local] = True
    kept_map = np.where(kept[instances], instances, 0)
    polygons = labels_to_polygons(kept_map, offset=(wx0, wy0))
    classes = _instance_classes(labels.array, instances, local)
    table.insert(0, "tile", row * grid.n_cols + col)
    table.insert(1, "status", np.where(near[keep], "band", "core"))
    table.insert(2, "in_core", in_core[keep])
    table.insert(3, "oversized", cut[keep])
    table.insert(4, "class", [ctx.class_name(int(c)) for c in classes])
    table["geometry"] = shapely.to_wkb([polygons[int(v)] for v in local])
    ctx._clock("polygons", t0)
    return table


def _instance_classes(labels: np.ndarray, instances: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The most frequent label value under each instance of ``ids``."""
    inside = instances > 0
    inst, lab = instances[inside].astype(np.int64), labels[inside].astype(np.int64)
    n_lab = int(lab.max(initial=0)) + 1
    counts = np.bincount(inst * n_lab + lab, minlength=(int(inst.max(initial=0)) + 1) * n_lab)
    return counts.reshape(-1, n_lab)[ids].argmax(axis=1)


# ---- seams ----------------------------------------------------------------------------------------------------


def resolve_seams(band: pd.DataFrame, grid: TileGrid, unit: str, mpp: tuple[float, float] | None) -> np.ndarray:
    """Which seam candidates to keep (a boolean per row of ``band``): one per nucleus seen by several tiles.

    Candidates of different tiles whose polygons overlap with IoU >= 0.5 are
    one nucleus; a group keeps the member of the tile whose core holds the
    group's mean centroid, or, when that tile has none, the member nearest to
    that centroid among those whose own core holds their centroid (none when
    no member does). A candidate matched with none is kept when its centroid
    lies in its own core.
    """
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(band)
    keep = band.in_core.to_numpy().copy()
    if n < 2:
        return keep
    geoms = shapely.from_wkb(band.geometry.to_numpy())
    tiles = band.tile.to_numpy()
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = (i < j) & (tiles[i] != tiles[j])
    i, j = i[pairs], j[pairs]
    inter = shapely.area(shapely.intersection(geoms[i], geoms[j]))
    union = shapely.area(geoms[i]) + shapely.area(geoms[j]) - inter
    match = inter >= 0.5 * union
    i, j = i[match], j[match]
    n_groups, group = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    sizes = np.bincount(group, minlength=n_groups)
    sx, sy = mpp or (1.0, 1.0)
    cx, cy = band[f"centroid_x_{unit}"].to_numpy() / sx, band[f"centroid_y_{unit}"].to_numpy() / sy
    mean_x = np.bincount(group, weights=cx, minlength=n_groups) / sizes
    mean_y = np.bincount(group, weights=cy, minlength=n_groups) / sizes
    owner = grid.tile_of(mean_x, mean_y)
    shared = sizes[group] > 1
    rank = np.where(tiles == owner[group], 0, np.where(keep, 1, 2))  # the owner's member, then in-core members
    distance = np.hypot(cx - mean_x[group], cy - mean_y[group])
    order = np.lexsort((distance, rank, group))
    first = np.ones(n, bool)
    first[1:] = group[order][1:] != group[order][:-1]
    best = np.full(n_groups, -1)
    chosen = order[first]
    best[group[chosen]] = np.where(rank[chosen] < 2, chosen, -1)
    keep[shared] = best[group[shared]] == np.flatnonzero(shared)
    return keep


# ---- a run over a slide ----------------------------------------------------------------------------------------


def tile_progress(total: int, enabled: bool) -> Any:
    """A rich progress bar counting tiles with their rate (tiles/s); a no-op when not ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:.2f} tiles/s" if task.speed else "- tiles/s")

    return Progress(TextColumn("[bold]tiles"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


class TiledRun:
    """Tiles of one slide processed block by block into ``work_dir`` (resumable), then merged.

    Parameters
    ----------
    ctx : TileContext
    work_dir : Path
        Block files (``block_<row>_<col>.parquet``) and failed tiles land here.
    tiles : list of (int, int)
        ``(col, row)`` of the tiles to process (those with tissue).
    block_tiles : int
        Side of a block in tiles: the unit of resumption.
    """

    def __init__(self, ctx: TileContext, work_dir: Path, tiles: list[tuple[int, int]], block_tiles: int = 4) -> None:
        self.ctx, self.work_dir, self.block_tiles = ctx, work_dir, block_tiles
        self.blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for col, row in tiles:
            self.blocks.setdefault((row // block_tiles, col // block_tiles), []).append((col, row))
        self.failed: list[dict[str, Any]] = []
        self.tiles_done = 0
        self.windows = WindowCache()
        self._remaining: set[tuple[int, int]] = set()

    def block_path(self, key: tuple[int, int]) -> Path:
        """The Parquet file of a block."""
        return self.work_dir / f"block_{key[0]:05d}_{key[1]:05d}.parquet"

    def _read(self, col: int, row: int) -> Image | ReadError:
        x0, y0, x1, y1 = self.ctx.grid.read_window(col, row)
        try:
            return self.ctx.slide.read_region((x0, y0), (x1 - x0, y1 - y0))
        except ReadError as exc:
            return exc

    def _needed_later(self, box: Box) -> bool:
        """Whether a tile still to be processed overlaps a sliding window's box."""
        return any(t in self._remaining for t in self.ctx.grid.tiles_touching(box))

    def run(self, progress: bool = False) -> None:
        """Process every block without a block file; a tile that fails to read is recorded and skipped.

        Tiles go column by column through each row of blocks; a block is written as soon as its last tile is done.
        """
        todo = {k: v for k, v in sorted(self.blocks.items()) if not self.block_path(k).exists()}
        order = sorted((t for tiles in todo.values() for t in tiles),
                       key=lambda t: (t[1] // self.block_tiles, t[0], t[1]))
        self._remaining = set(order)
        left = {key: len(tiles) for key, tiles in todo.items()}
        frames: dict[tuple[int, int], list[pd.DataFrame]] = {key: [] for key in todo}
        failed: dict[tuple[int, int], list[dict[str, Any]]] = {key: [] for key in todo}
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tile_progress(len(order), progress) as bar, ThreadPoolExecutor(1) as reader:
            task = bar.add_task("tiles", total=len(order))
            ahead = reader.submit(self._read, *order[0]) if order else None
            for k, (col, row) in enumerate(order):
                t0 = time.perf_counter()
                image = ahead.result()
                self.ctx._clock("read", t0)
                ahead = reader.submit(self._read, *order[k + 1]) if k + 1 < len(order) else None
                self._remaining.discard((col, row))
                key = (row // self.block_tiles, col // self.block_tiles)
                if isinstance(image, ReadError):
                    failed[key].append({"col": col, "row": row, "window": list(self.ctx.grid.read_window(col, row)),
                                        "error": str(image)})
                else:
                    part = self.ctx.grid.part(col, row, self.windows, self._needed_later)
                    frames[key].append(process_tile(self.ctx, col, row, image, part))
                bar.advance(task)
                left[key] -= 1
                if not left[key]:
                    self._write_block(key, frames.pop(key), failed.pop(key))
                    self.tiles_done += len(todo[key])

    def _write_block(self, key: tuple[int, int], frames: list[pd.DataFrame], failed: list[dict[str, Any]]) -> None:
        """One block's cells (rows ordered by their top edge) and failed tiles, written atomically as Parquet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from medseg.atomic import atomic_path

        t0 = time.perf_counter()
        frames = [f for f in frames if len(f)]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(table):
            table = table.sort_values("bbox_y0", kind="stable").reset_index(drop=True)
            table.insert(0, "row", np.arange(len(table)))  # position in the file, for filtered reads
        meta = {b"failed_tiles": pd.Series(failed, dtype=object).to_json().encode()}
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta})
        with atomic_path(self.block_path(key)) as tmp:
            pq.write_table(arrow, tmp, row_group_size=2048)
        self.ctx._clock("write", t0)

    # ---- merging -------------------------------------------------------------------------------------------
    def block_files(self) -> list[Path]:
        """The block files of this run, in block order."""
        return [self.block_path(k) for k in sorted(self.blocks)]

    def failed_tiles(self) -> list[dict[str, Any]]:
        """Tiles that could not be read, over all blocks (also those of earlier, resumed sessions)."""
        import json

        import pyarrow.parquet as pq

        out = []
        for path in self.block_files():
            meta = pq.read_schema(path).metadata or {}
            out += list(json.loads(meta.get(b"failed_tiles", b"{}")).values())
        return out

    def kept(self, unit: str) -> dict[Path, np.ndarray]:
        """Per block file, which of its rows are kept after seam resolution (boolean arrays)."""
        import pyarrow.parquet as pq

        cols = ["tile", "status", "in_core", f"centroid_x_{unit}", f"centroid_y_{unit}", "geometry"]
        keep, parts = {}, []
        for path in self.block_files():
            if not pq.read_schema(path).names:  # a block without cells
                keep[path] = np.zeros(0, bool)
                continue
            t = pq.read_table(path, columns=cols).to_pandas()
            keep[path] = t.in_core.to_numpy().copy()  # every kept non-candidate lies in its core
            t["path"], t["row"] = str(path), np.arange(len(t))
            parts.append(t[t.status == "band"])
        if parts:
            band = pd.concat(parts, ignore_index=True)
            decided = resolve_seams(band, self.ctx.grid, unit, self.ctx.mpp)
            for path, row, flag in zip(band.path, band.row, decided, strict=True):
                keep[Path(path)][row] = flag
        return keep

    def cells(self, keep: dict[Path, np.ndarray], slide_name: str) -> Iterator[pd.DataFrame]:
        """The kept cells of each block in turn, numbered 1.. (``cell``) with a stable UUID (``id``)."""
        import pyarrow.parquet as pq

        next_id = 1
        for path, flags in keep.items():
            if not flags.any():
                continue
            table = pq.read_table(path).to_pandas()[flags].reset_index(drop=True)
            table.insert(0, "cell", np.arange(next_id, next_id + len(table)))
            keys = table.tile.astype(np.int64).to_numpy() * (1 << 32) + table.instance.to_numpy()
            table.insert(1, "id", [str(uuid.uuid5(_UUID_NAMESPACE, f"{slide_name}/{k}")) for k in keys])
            next_id += len(table)
            yield table


__all__ = [
    "SlidingWindow",
    "TileContext",
    "TileGrid",
    "TiledRun",
    "plan_tiles",
    "process_tile",
    "resolve_seams",
    "sliding_window",
    "tile_progress",
]
