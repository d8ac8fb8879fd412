"""The cells of a tiled run as a pyramidal uint32 label TIFF, written strip by strip.

Level 0 is rasterised from the cells' polygons (pixel-centre rule of
:mod:`medseg.annotations.polygons`, so it equals the segmented instances)
one strip of 256 rows at a time, reading from the block files only the cells
whose bounding box meets the strip; where two cells overlap, the higher cell
number wins. Each coarser level takes every second pixel of the one above,
read back from a temporary single-level file, so no level is ever in memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.pyramid import level_sizes, write_pyramid

_STRIP = 256


def _cell_numbers(keep: dict[Path, np.ndarray]) -> dict[Path, np.ndarray]:
    """Per block file, the cell number of each row (0 for rows not kept), numbered as the cell table is."""
    out, next_id = {}, 1
    for path, flags in keep.items():
        ids = np.zeros(len(flags), np.uint32)
        ids[flags] = np.arange(next_id, next_id + int(flags.sum()), dtype=np.uint32)
        next_id += int(flags.sum())
        out[path] = ids
    return out


class _Strips:
    """Level-0 label pixels served tile by tile from one rasterised strip of rows at a time."""

    def __init__(self, run: Any, keep: dict[Path, np.ndarray]) -> None:
        grid = run.ctx.grid
        self.width, self.height = grid.width, grid.height
        self.ids = _cell_numbers(keep)
        span = run.block_tiles * grid.tile
        self.y_range = {p: (key[0] * span - grid.margin, (key[0] + 1) * span + grid.margin)
                        for key, p in zip(sorted(run.blocks), run.block_files(), strict=True)}
        self.top, self.strip = -1, np.zeros((0, 0), np.uint32)

    def _rasterise(self, y0: int) -> None:
        import pyarrow.parquet as pq
        import shapely

        from medseg.annotations.polygons import polygons_to_mask

        y1 = min(y0 + _STRIP, self.height)
        strip = np.zeros((self.width, y1 - y0), np.uint32)
        cols = ["row", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "geometry"]
        for path, (lo, hi) in self.y_range.items():
            if hi <= y0 or lo >= y1 or not self.ids[path].any():
                continue
            t = pq.read_table(path, columns=cols, filters=[("bbox_y0", "<", y1), ("bbox_y1", ">", y0)]).to_pandas()
            t["cell"] = self.ids[path][t.row.to_numpy()]
            t = t[t.cell > 0].sort_values("cell")
            for geom, cell, bx0, by0, bx1, by1 in zip(shapely.from_wkb(t.geometry.to_numpy()), t.cell, t.bbox_x0,
                                                      t.bbox_y0, t.bbox_x1, t.bbox_y1, strict=True):
                top, bottom = max(int(by0), y0), min(int(by1), y1)
                mask = polygons_to_mask(geom, (int(bx1 - bx0), bottom - top), (int(bx0), top))
                strip[int(bx0) : int(bx1), top - y0 : bottom - y0][mask] = cell
        self.top, self.strip = y0, strip

    def __call__(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if y != self.top:
            self._rasterise(y)
        return self.strip[x : x + w, :h]


def write_label_tiff(path: Path, run: Any, keep: dict[Path, np.ndarray], tile: int = _STRIP) -> Path:
    """Write the kept cells of ``run`` (:class:`~medseg.pathology.tiling.TiledRun`) as ``path``, a label pyramid."""
    from medseg.io.slide import open_slide

    grid, mpp = run.ctx.grid, run.ctx.mpp
    size = (grid.width, grid.height)
    n_levels = len(level_sizes(*size, tile))
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".labels-") as tmp:
        levels = [Path(tmp) / f"level{k}.tif" for k in range(n_levels)]
        write_pyramid(levels[0], _Strips(run, keep), size, np.uint32, tile=tile, levels=1)
        for k in range(1, n_levels):
            with open_slide(levels[k - 1]) as above:

                def halve(_level: int, x: int, y: int, w: int, h: int, above: Any = above) -> np.ndarray:
                    aw, ah = above.dimensions
                    region = above.read_region((2 * x, 2 * y), (min(2 * w, aw - 2 * x), min(2 * h, ah - 2 * y)))
                    return region.array[::2, ::2][:w, :h]

                write_pyramid(levels[k], halve, level_sizes(*size, tile)[k], np.uint32, tile=tile, levels=1)
        sources = [open_slide(p) for p in levels]
        try:
            def read(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
                return sources[level].read_region((x, y), (w, h)).array

            write_pyramid(path, read, size, np.uint32, mpp=mpp, tile=tile)
        finally:
            for s in sources:
                s.close()
    return path


__all__ = ["write_label_tiff"]
